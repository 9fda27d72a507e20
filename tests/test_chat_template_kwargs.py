"""``model.chat_template_kwargs`` reach every chat-template rendering: student and teacher prompts
in all three layouts, the trainer's prompt builders, SFT demonstrations. The tokenizer here is
tiny-random's with a template that, like Qwen3's, writes an empty think block into the generation
prompt when ``enable_thinking`` is false."""

from __future__ import annotations

import copy

import pytest

from sdar.envs import make_env
from sdar.models.loading import ModelConfig, load_policy
from sdar.rollout import PromptBuilder
from sdar.skills import SkillLibrary
from sdar.trainer.config import ConfigError, load_config
from sdar.trainer.sft import encode_demonstration

EMPTY_THINK = "<think>\n\n</think>\n\n"
TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}" + EMPTY_THINK + "{% endif %}{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer():
    tok = copy.deepcopy(load_policy(ModelConfig(name="tiny-random"))[1])
    tok.chat_template = TEMPLATE
    return tok


@pytest.fixture(scope="module")
def env_and_state():
    env = make_env("toy")
    state = env.reset([0])[0]
    yield env, state
    env.close()


def decoded(tokenizer, ids) -> str:
    return tokenizer.decode(ids, skip_special_tokens=False)


def test_the_template_branches_on_the_variable(tokenizer):
    chat = [{"role": "user", "content": "hi"}]
    off = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False, enable_thinking=False)
    plain = tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    assert off == plain + EMPTY_THINK and not plain.endswith(EMPTY_THINK)


@pytest.mark.parametrize("layout", ["prefix", "system", "user"])
def test_student_and_teacher_prompts_get_the_kwargs(tokenizer, env_and_state, layout):
    env, state = env_and_state
    skills = SkillLibrary("toy")
    off = PromptBuilder(env, tokenizer, skills, think=False, layout=layout,
                        chat_template_kwargs={"enable_thinking": False})
    plain = PromptBuilder(env, tokenizer, skills, think=False, layout=layout)
    for with_skills in (False, True):
        with_kwargs = decoded(tokenizer, off.build(state, [], 4096, with_skills=with_skills).ids)
        without = decoded(tokenizer, plain.build(state, [], 4096, with_skills=with_skills).ids)
        assert with_kwargs.endswith("<|im_start|>assistant\n" + EMPTY_THINK), (layout, with_skills)
        assert without.endswith("<|im_start|>assistant\n"), (layout, with_skills)
        assert with_kwargs == without + EMPTY_THINK
    # the teacher prompt still is the skill prefix followed by the rest, with the kwargs in the rest
    teacher = off.build(state, [], 4096, with_skills=True)
    assert teacher.prefix_ids and decoded(tokenizer, teacher.rest_ids).endswith(EMPTY_THINK)


def test_sft_demonstrations_get_the_kwargs(tokenizer):
    prompt_ids, response_ids = encode_demonstration(tokenizer, "task", "<action>look</action>",
                                                    {"enable_thinking": False})
    assert decoded(tokenizer, prompt_ids).endswith("<|im_start|>assistant\n" + EMPTY_THINK)
    assert decoded(tokenizer, response_ids).startswith("<action>look</action>")
    plain_prompt, _ = encode_demonstration(tokenizer, "task", "<action>look</action>")
    assert not decoded(tokenizer, plain_prompt).endswith(EMPTY_THINK)


def test_config_key_reaches_the_trainers_prompt_builders(tmp_path):
    from sdar.trainer.trainer import Trainer

    config = load_config(None, [
        "method=grpo", "model.name=tiny-random", "env.name=toy", "env.prompt_mode=action_only",
        "model.chat_template_kwargs={enable_thinking: false}", "eval.num_tasks=1", "iterations=1"])
    assert config.model.chat_template_kwargs == {"enable_thinking": False}
    trainer = Trainer(config, tmp_path / "run")
    trainer.tokenizer.chat_template = TEMPLATE  # the builders hold this tokenizer
    for builder in (trainer.train_prompts, trainer.val_prompts):
        state = builder.env.reset([0])[0]
        assert decoded(trainer.tokenizer, builder.build(state, [], 512).ids).endswith(EMPTY_THINK)


def test_bad_values_fail_with_the_key_named():
    with pytest.raises(ConfigError, match="model.chat_template_kwargs must be a mapping"):
        load_config(None, ["model.chat_template_kwargs=false"])
