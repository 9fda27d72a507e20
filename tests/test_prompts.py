"""Student and teacher prompts: the released prefix layout, budgets, and skills never cut."""

import pytest

from sdar.envs import make_env
from sdar.rollout import PromptBuilder, PromptTooLongError
from sdar.rollout.prompts import SKILL_HEADER
from sdar.skills import SkillLibrary


@pytest.fixture()
def setup(tokenizer):
    env = make_env("toy")
    state = env.reset([2])[0]  # target 3: routes to general + high
    history = [("The counter shows 0.", "increment"), ("The counter shows 1.", "increment")]
    return env, state, history, PromptBuilder(env, tokenizer, SkillLibrary("toy"), think=True)


def test_student_prompt_is_the_chat_rendered_user_message(setup, tokenizer):
    env, state, history, builder = setup
    p = builder.build(state, history, budget=1024)
    message = env.render_prompt(state, history, think=True)
    expected = tokenizer.apply_chat_template([{"role": "user", "content": message}], add_generation_prompt=True,
                                             tokenize=False)
    assert p.prefix_ids == [] and tokenizer.decode(p.ids) == expected
    assert p.history_used == 2 and not p.truncated


def test_teacher_prefix_layout_as_released(setup, tokenizer):
    env, state, history, builder = setup
    student = builder.build(state, history, budget=1024)
    teacher = builder.build(state, history, budget=1024, with_skills=True, on_overflow="drop_history")
    skills = SkillLibrary("toy").select(state.task)
    assert teacher.skill_files == ("toy/general.md", "toy/high.md") == skills.files
    assert tokenizer.decode(teacher.prefix_ids) == SKILL_HEADER + skills.text + "\n\n"
    # the part after the skills is exactly the student's prompt
    assert teacher.rest_ids == student.ids
    # the prefix ids depend only on the skill text (shareable key/value cache)
    other = builder.build(make_env("toy").reset([3])[0], [], budget=1024, with_skills=True)
    assert other.prefix_ids == teacher.prefix_ids


def test_system_layout_puts_skills_in_a_system_message(setup, tokenizer):
    env, state, history, _ = setup
    builder = PromptBuilder(env, tokenizer, SkillLibrary("toy"), think=True, layout="system")
    p = builder.build(state, history, budget=2048, with_skills=True)
    text = tokenizer.decode(p.ids)
    message = env.render_prompt(state, history, think=True)
    skills = SkillLibrary("toy").select(state.task).text
    assert text.index(skills) < text.index(message)
    prefix_text = tokenizer.decode(p.prefix_ids)
    assert skills in prefix_text and message not in prefix_text
    assert tokenizer.decode(p.rest_ids).startswith(message)


def test_over_budget_drops_history_first_and_never_cuts_skills(setup):
    env, state, history, builder = setup
    full = builder.build(state, history, budget=4096, with_skills=True)
    no_history = builder.build(state, [], budget=4096, with_skills=True)
    # a budget that fits only without history: history goes, skills stay
    p = builder.build(state, history, budget=len(no_history.ids), with_skills=True, on_overflow="drop_history")
    assert p.history_used == 0 and p.history_dropped == 2 and p.prefix_ids == full.prefix_ids
    # a budget that cannot hold even the skills plus the bare prompt: a clear error
    with pytest.raises(PromptTooLongError, match="skills are never cut"):
        builder.build(state, history, budget=len(no_history.ids) - 1, with_skills=True, on_overflow="drop_history")
    with pytest.raises(PromptTooLongError):
        builder.build(state, history, budget=len(full.ids) - 1, with_skills=True, on_overflow="error")


def test_student_over_budget_is_left_truncated_and_flagged(setup):
    env, state, history, builder = setup
    bare = builder.build(state, [], budget=4096)
    p = builder.build(state, history, budget=len(bare.ids) - 3)
    assert p.truncated and p.history_used == 0 and len(p.ids) == len(bare.ids) - 3
    assert p.ids == bare.ids[3:]


def test_user_layout_opens_the_user_message_with_the_context(setup, tokenizer):
    env, state, history, _ = setup
    builder = PromptBuilder(env, tokenizer, SkillLibrary("toy"), think=True, layout="user")
    p = builder.build(state, history, budget=2048, with_skills=True)
    message = env.render_prompt(state, history, think=True)
    skills = SkillLibrary("toy").select(state.task).text
    # the whole teacher prompt is the chat template around one user message: header, skills, task
    expected = tokenizer.apply_chat_template(
        [{"role": "user", "content": SKILL_HEADER + skills + "\n\n" + message}], add_generation_prompt=True,
        tokenize=False)
    assert tokenizer.decode(p.ids) == expected
    # the shareable prefix ends with the skills; the rest starts with the task
    assert tokenizer.decode(p.prefix_ids).endswith(skills + "\n\n")
    assert tokenizer.decode(p.rest_ids).startswith(message)


def test_a_given_context_replaces_the_skills_and_an_empty_one_gives_the_student_prompt(setup, tokenizer):
    from sdar.skills import SkillSelection

    env, state, history, _ = setup
    builder = PromptBuilder(env, tokenizer, SkillLibrary("toy"), think=True, layout="user")
    hint = SkillSelection(files=("hint",), text="The target is 3.")
    p = builder.build(state, history, budget=2048, with_skills=True, context=hint)
    text = tokenizer.decode(p.ids)
    assert SKILL_HEADER + "The target is 3.\n\n" in text and "Counter skills" not in text
    assert p.skill_files == ("hint",)
    empty = builder.build(state, history, budget=2048, with_skills=True, context=SkillSelection((), ""))
    assert empty.ids == builder.build(state, history, budget=2048).ids and empty.prefix_ids == []


def test_unknown_layout_is_refused(setup, tokenizer):
    env, *_ = setup
    with pytest.raises(ValueError, match="prefix, system, user"):
        PromptBuilder(env, tokenizer, None, layout="middle")
