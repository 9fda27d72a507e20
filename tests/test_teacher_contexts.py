"""teacher.context (skills / hint / sibling), the teacher-check summary and bf16 autocast."""

import math
import re
from types import SimpleNamespace

import pytest
import torch

from sdar.envs import make_env
from sdar.errors import UserError
from sdar.models.loading import ModelConfig, autocast_context, load_policy
from sdar.models.scoring import score_responses
from sdar.rollout import PromptBuilder
from sdar.skills import SkillLibrary
from sdar.trainer.teacher import sibling_actions, sibling_context, teacher_contexts
from sdar.trainer.teacher_check import Candidate, summarise


def _sample(group, traj, step, action, won, state=None):
    return SimpleNamespace(group_id=group, traj_id=traj, step=step, action=action, won=won, state=state)


def test_sibling_context_is_another_winner_of_the_group_else_its_own_win_else_nothing():
    samples = [
        _sample(0, 0, 0, "apple", False), _sample(0, 1, 1, "pear", True), _sample(0, 1, 0, "plum", True),
        _sample(0, 2, 0, "lemon", True),
        _sample(1, 3, 0, "sofa", False),
    ]
    winners = sibling_actions(samples)
    assert winners == {0: [(1, ["plum", "pear"]), (2, ["lemon"])]}  # actions in step order
    # a loser of group 0 reads the first winner; winner 1 reads winner 2; nobody in group 1 won
    assert sibling_context(samples[0], winners).text.endswith("1. plum\n2. pear")
    assert sibling_context(samples[1], winners).files == ("sibling:2",)
    assert sibling_context(samples[4], winners).text == ""
    only = sibling_actions([_sample(5, 9, 0, "mango", True)])
    assert sibling_context(_sample(5, 9, 0, "mango", True), only).files == ("sibling:9",)


def test_hint_context_reads_the_state_hint_and_is_refused_without_one():
    _, tok = load_policy(ModelConfig(name="tiny-random"))
    panels = make_env("toy_panels")
    state = panels.reset([4])[0]
    builder = PromptBuilder(panels, tok, SkillLibrary("toy_panels"), think=False, layout="user")
    (ctx,) = teacher_contexts("hint", builder, [SimpleNamespace(state=state, history=[])])
    assert ctx.text == state.hint and ctx.files == ("hint",)
    (skills,) = teacher_contexts("skills", builder, [SimpleNamespace(state=state, history=[])])
    assert skills.files == ("toy_panels/general.md",)
    toy = make_env("toy")
    with pytest.raises(ValueError, match="gives no hints"):
        teacher_contexts("hint", PromptBuilder(toy, tok, None), [SimpleNamespace(state=toy.reset([1])[0])])
    with pytest.raises(ValueError, match="skills, hint, sibling"):
        teacher_contexts("oracle", builder, [])


def test_teacher_check_summary_by_hand():
    cands = [
        # state 0: expert 2 tokens, teacher raises it (gap +1 total) and ranks it first
        Candidate(0, True, -3.0, -2.0, 2), Candidate(0, False, -2.5, -4.0, 2),
        # state 1: expert loses to the alternative for both
        Candidate(1, True, -5.0, -5.0, 1), Candidate(1, False, -1.0, -1.5, 1),
        # state 2: no alternative, so it is not ranked
        Candidate(2, True, -1.0, -0.5, 1),
    ]
    out = summarise(cands)
    assert out["states"] == 3 and out["ranked_states"] == 2
    assert math.isclose(out["expert"]["gap_per_token"], (1.0 + 0.0 + 0.5) / 4)
    assert math.isclose(out["non_expert"]["gap_per_token"], (-1.5 - 0.5) / 3)
    assert math.isclose(out["gap_separation"], 1.5 / 4 + 2.0 / 3)
    assert out["teacher_top1"] == 0.5 and out["student_top1"] == 0.0
    assert out["probes"] == []
    assert out["by_verb"] == {"(none)": {"count": 5, "expert": 3, "gap_per_token": (1.0 + 0.0 + 0.5 - 1.5 - 0.5) / 7,
                                         "student_log_prob_mean": -12.5 / 5, "teacher_log_prob_mean": -13.0 / 5}}


def test_teacher_check_gaps_per_verb_by_hand():
    from sdar.trainer.teacher_check import verb

    assert verb("go to desk 1") == "go" and verb(" Click[buy now]") == "click" and verb("search[red]") == "search"
    assert verb("search: capital of peru") == "search" and verb("answer: lima") == "answer"
    assert verb(None) == "(none)" and verb(" ") == "(none)" and verb("42 go") == "42"  # no letters first: its first word
    cands = [
        Candidate(0, True, -3.0, -2.0, 2, action="go to desk 1"), Candidate(0, False, -2.5, -4.0, 2, action="take key 1"),
        Candidate(1, True, -1.0, -1.0, 1, action="move key 1 to desk 1"),
        Candidate(1, False, -2.0, -1.0, 4, action="go to shelf 1"),
        Candidate(1, False, -4.0, -1.0, 2, probe="go to countertop 1", action="go to countertop 1"),  # not counted
    ]
    by_verb = summarise(cands)["by_verb"]
    assert list(by_verb) == ["go", "take", "move"]  # most candidates first; ties in order of appearance
    assert by_verb["go"]["count"] == 2 and by_verb["go"]["expert"] == 1
    assert math.isclose(by_verb["go"]["gap_per_token"], (1.0 + 1.0) / 6)
    assert math.isclose(by_verb["take"]["gap_per_token"], -1.5 / 2) and by_verb["take"]["expert"] == 0
    assert by_verb["move"]["gap_per_token"] == 0.0


def test_teacher_check_probes_are_reported_apart_by_hand():
    cands = [
        Candidate(0, True, -3.0, -2.0, 2), Candidate(0, False, -2.5, -4.0, 2),
        Candidate(1, True, -1.0, -1.0, 1), Candidate(1, False, -2.0, -2.0, 1),
        # the probe "p": 2 tokens; above the expert for the teacher at state 0 only, for the student at neither
        Candidate(0, False, -4.0, -1.5, 2, probe="p"), Candidate(1, False, -3.0, -2.5, 2, probe="p"),
        # "q" at state 1 only (state 0's expert action was "q": not probed there)
        Candidate(1, False, -0.5, -0.9, 1, probe="q"),
    ]
    out = summarise(cands)
    # the candidates' numbers are those without the probes
    assert {k: v for k, v in out.items() if k != "probes"} == {
        k: v for k, v in summarise(cands[:4]).items() if k != "probes"}
    p, q = out["probes"]
    assert p["action"] == "p" and p["count"] == 2
    assert math.isclose(p["gap_per_token"], (2.5 + 0.5) / 4)
    assert p["teacher_above_expert"] == 0.5 and p["student_above_expert"] == 0.0
    assert q["action"] == "q" and q["count"] == 1 and math.isclose(q["gap_per_token"], -0.4)
    assert q["teacher_above_expert"] == 1.0 and q["student_above_expert"] == 1.0


def test_teacher_check_scores_probes_at_every_state_but_where_they_are_the_expert_action(monkeypatch):
    from sdar.trainer.config import load_config
    from sdar.trainer.teacher_check import collect_states, teacher_check
    from sdar.trainer.trainer import make_run_env

    config = load_config("configs/bench/gate_study.yaml", ["model.name=tiny-random", "model.autocast=none"])
    with make_run_env(config.env, config.env.val_split) as env:
        visited = collect_states(env, [config.eval.seed, config.eval.seed + 1], config.env.history_length or 0, 6)
    experts = [re.search(r"<action>(.*?)</action>", response).group(1).strip() for *_, response, _ in visited]
    plain = teacher_check(config, episodes=2, alternatives=1, max_states=6)
    # the plain action, as a user types it (padded: stripped)
    probed = teacher_check(config, episodes=2, alternatives=1, max_states=6, probes=("not a word", f" {experts[0]} "))
    assert [p["action"] for p in probed["probes"]] == ["not a word", experts[0]]
    other, expert = probed["probes"]
    # scored as the policy would write it: in the expert's response format, its action replaced
    assert other["scored_as"] == "<action>not a word</action>"
    assert expert["scored_as"] == f"<action>{experts[0]}</action>"
    assert other["count"] == probed["states"] == len(experts) and other["gap_per_token"] is not None
    assert expert["count"] == sum(e != experts[0] for e in experts) < len(experts)  # not where it is the expert's
    for key in ("states", "ranked_states", "teacher_top1", "student_top1"):
        assert probed[key] == plain[key]
    assert probed["expert"]["gap_per_token"] == pytest.approx(plain["expert"]["gap_per_token"], abs=1e-5)
    # every candidate (no probe) under its action's verb, the experts' own verbs among them
    by_verb = plain["by_verb"]
    assert sum(v["count"] for v in by_verb.values()) == plain["expert"]["count"] + plain["non_expert"]["count"]
    assert sum(v["expert"] for v in by_verb.values()) == plain["expert"]["count"] == len(experts)
    assert {e.split()[0].lower() for e in experts} <= set(by_verb)
    with pytest.raises(UserError, match="distinct, non-empty"):
        teacher_check(config, probes=("a", " a"))
    # an environment answering without an <action> tag has nothing to put a probe in
    search = load_config("configs/bench/search.yaml", ["model.name=tiny-random", "model.autocast=none"])
    with pytest.raises(UserError, match="needs an environment whose responses carry an <action> tag"):
        teacher_check(search, episodes=1, alternatives=1, max_states=1, probes=("x",))
    # counts below one name their flag, before any model is loaded
    import sdar.trainer.teacher_check as check_module

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded before the counts were checked")

    monkeypatch.setattr(check_module, "load_policy", no_model)
    for kwargs, message in (({"episodes": 0}, "--episodes must be >= 1, got 0"),
                            ({"alternatives": -1}, "--alternatives must be >= 1, got -1"),
                            ({"max_states": 0}, "--max-states must be >= 1, got 0")):
        with pytest.raises(UserError, match=f"^{message}$"):
            teacher_check(config, **kwargs)


def test_bf16_autocast_scores_close_to_float32_and_is_validated():
    model, tok = load_policy(ModelConfig(name="tiny-random"))
    prompts = [[5, 6, 7, 8, 9], [10, 11, 12]]
    responses = [[13, 14, 15], [16, 17]]
    with torch.no_grad():
        full = score_responses(model, prompts, responses, pad_id=tok.pad_token_id).log_probs
        with autocast_context(ModelConfig(name="tiny-random", autocast="bf16"), "cpu"):
            half = score_responses(model, prompts, responses, pad_id=tok.pad_token_id).log_probs
            inner = model(input_ids=torch.tensor([prompts[0]])).logits
    assert inner.dtype == torch.bfloat16  # the forward pass really ran in bfloat16
    assert half.dtype == torch.float32  # log-probs are computed in float32 from bfloat16 logits
    diff = (full - half).abs()
    assert 0 < float(diff.max()) < 0.1
    with autocast_context(ModelConfig(name="tiny-random"), "cpu"):
        assert model(input_ids=torch.tensor([prompts[0]])).logits.dtype == torch.float32
    with pytest.raises(ValueError, match="model.autocast must be one of none, bf16, auto"):
        ModelConfig(name="tiny-random", autocast="fp8")


def test_signal_metrics_split_gap_and_gate_by_advantage_sign_by_hand():
    from sdar.methods import LossConfig
    from sdar.trainer.config import TeacherConfig
    from sdar.trainer.distributed import SINGLE
    from sdar.trainer.trainer import RolloutLogProbs, Trainer

    fake = SimpleNamespace(config=SimpleNamespace(loss=LossConfig(method="sdar", beta=5.0), teacher=TeacherConfig()),
                           dist=SINGLE)
    samples = [SimpleNamespace(group_id=g, response_ids=[1] * n) for g, n in ((0, 2), (0, 1), (1, 1), (2, 1))]
    advantages = torch.tensor([1.0, -1.0, 0.0, 0.0])  # groups 1 and 2 carry no signal
    old = [torch.tensor([-1.0, -2.0]), torch.tensor([-1.0]), torch.tensor([-1.0]), torch.tensor([-1.0])]
    teacher = SimpleNamespace(log_probs=[torch.tensor([-0.5, -2.5]), torch.tensor([-1.2]), torch.tensor([0.0]),
                                         torch.tensor([0.0])], entropy=None)
    scores = RolloutLogProbs(old_log_probs=old, old_entropy=None, ref_log_probs=None, teacher=teacher)
    gates = Trainer.sample_gates(fake, samples, scores)  # the configured gate: sigmoid(beta * gap)
    out = Trainer.signal_metrics(fake, samples, advantages, scores, gates)
    assert math.isclose(out["train/groups_with_signal"], 1 / 3)
    assert math.isclose(out["teacher/gap_pos_adv"], 0.0, abs_tol=1e-7)  # (+0.5 - 0.5) / 2
    assert math.isclose(out["teacher/gap_neg_adv"], -0.2, rel_tol=1e-6)
    gate_pos = (torch.sigmoid(torch.tensor(2.5)) + torch.sigmoid(torch.tensor(-2.5))) / 2
    assert math.isclose(out["teacher/gate_pos_adv"], float(gate_pos), rel_tol=1e-6)
    assert math.isclose(out["teacher/gate_neg_adv"], float(torch.sigmoid(torch.tensor(-1.0))), rel_tol=1e-6)
    # teacher.no_winner=skip: a step sample whose teacher had no context gets gate 0, the others keep theirs
    fake.config.teacher = TeacherConfig(context="sibling", no_winner="skip")
    teacher.has_context = [True, False, True, True]
    skipped = Trainer.sample_gates(fake, samples, scores)
    assert torch.equal(skipped[1], torch.zeros(1)) and torch.equal(skipped[0], gates[0])
    assert Trainer.signal_metrics(fake, samples, advantages, scores, skipped)["teacher/gate_neg_adv"] == 0.0
    # a method without a gate logs gaps only; no teacher: the group share only
    fake.config.loss = LossConfig(method="opsd_sampled")
    assert Trainer.sample_gates(fake, samples, scores) is None
    assert "teacher/gate_pos_adv" not in Trainer.signal_metrics(fake, samples, advantages, scores, None)
    no_teacher = RolloutLogProbs(old_log_probs=old, old_entropy=None, ref_log_probs=None, teacher=None)
    assert set(Trainer.signal_metrics(fake, samples, advantages, no_teacher, None)) == {"train/groups_with_signal"}


def test_signal_metrics_on_disagreement_tokens_by_hand():
    """Tokens with |gap| >= 1 nat: their share of each advantage sign's tokens and the gate on them."""
    def sig(x: float) -> float:
        return float(torch.sigmoid(torch.tensor(x)))

    from sdar.methods import LossConfig
    from sdar.trainer.config import TeacherConfig
    from sdar.trainer.distributed import SINGLE
    from sdar.trainer.trainer import DISAGREEMENT_NATS, RolloutLogProbs, Trainer

    assert DISAGREEMENT_NATS == 1.0
    fake = SimpleNamespace(config=SimpleNamespace(loss=LossConfig(method="sdar", beta=5.0), teacher=TeacherConfig()),
                           dist=SINGLE)
    samples = [SimpleNamespace(group_id=0, response_ids=[1] * n) for n in (2, 3, 1)]
    advantages = torch.tensor([1.0, 1.0, -1.0])
    old = [torch.tensor([-1.0, -2.0]), torch.tensor([-2.0, -0.5, -0.1]), torch.tensor([-1.0])]
    # gaps: [+0.5, -0.5], [+1.5, 0.0, -3.0] (positive advantage); [-0.2] (negative)
    teacher = SimpleNamespace(log_probs=[torch.tensor([-0.5, -2.5]), torch.tensor([-0.5, -0.5, -3.1]),
                                         torch.tensor([-1.2])], entropy=None)
    scores = RolloutLogProbs(old_log_probs=old, old_entropy=None, ref_log_probs=None, teacher=teacher)
    out = Trainer.signal_metrics(fake, samples, advantages, scores, Trainer.sample_gates(fake, samples, scores))

    assert math.isclose(out["teacher/gap_pos_adv"], -1.5 / 5, rel_tol=1e-6)
    assert math.isclose(out["teacher/gate_pos_adv"], (sig(2.5) + sig(-2.5) + sig(7.5) + sig(0.0) + sig(-15.0)) / 5,
                        rel_tol=1e-6)
    assert math.isclose(out["teacher/disagree_pos_adv"], 2 / 5)  # the +1.5 and the -3.0
    assert math.isclose(out["teacher/gate_disagree_pos_adv"], (sig(7.5) + sig(-15.0)) / 2, rel_tol=1e-6)
    assert out["teacher/disagree_neg_adv"] == 0.0
    assert "teacher/gate_disagree_neg_adv" not in out  # no disagreement token on that side
    # a method without a gate: the share still, no gate on them
    fake.config.loss = LossConfig(method="opsd_sampled")
    no_gate = Trainer.signal_metrics(fake, samples, advantages, scores, None)
    assert math.isclose(no_gate["teacher/disagree_pos_adv"], 2 / 5)
    assert not any(k.startswith("teacher/gate") for k in no_gate)


@pytest.mark.parametrize("context", ["hint", "sibling"])
def test_training_with_a_hint_or_sibling_teacher_in_bf16(tmp_path, context):
    import json

    import yaml

    from sdar.trainer.config import load_config
    from sdar.trainer.trainer import Trainer

    data = {"method": "sdar", "model": {"name": "tiny-random", "autocast": "bf16", "lora": {"r": 4}},
            "env": {"name": "toy_panels", "prompt_mode": "action_only", "train_split": "train", "val_split": "test"},
            "rollout": {"tasks_per_iteration": 2, "group_size": 2, "max_prompt_tokens": 256,
                        "generation": {"max_new_tokens": 6}},
            "teacher": {"max_prompt_tokens": 512, "context": context, "layout": "user"},
            "optim": {"lr": 1.0e-3, "mini_batch_size": 4, "micro_batch_size": 2},
            "eval": {"every": 1, "num_tasks": 2, "before_training": False},
            "iterations": 1, "log_samples": 2, "tensorboard": False}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    trainer = Trainer(load_config(path), tmp_path / "run")
    trainer.train()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["iteration"] == 1 and 0.0 <= rows[-1]["train/groups_with_signal"] <= 1.0
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    expected = ["hint"] if context == "hint" else []  # the random model wins nothing: no sibling
    assert samples and all(s["skill_files"] == expected for s in samples)
    assert rows[-1]["teacher/context_share"] == (1.0 if context == "hint" else 0.0)


def test_sibling_teacher_without_a_winner_is_left_out_of_the_term_with_no_winner_skip(tmp_path):
    import json

    import yaml

    from sdar.trainer.config import ConfigError, load_config
    from sdar.trainer.trainer import Trainer

    data = {"method": "sdar", "model": {"name": "tiny-random", "lora": {"r": 4}},
            "env": {"name": "toy_panels", "prompt_mode": "action_only", "train_split": "train", "val_split": "test"},
            "rollout": {"tasks_per_iteration": 2, "group_size": 2, "max_prompt_tokens": 256,
                        "generation": {"max_new_tokens": 6}},
            "teacher": {"max_prompt_tokens": 512, "context": "sibling", "layout": "user", "no_winner": "skip"},
            "optim": {"lr": 1.0e-3, "mini_batch_size": 4, "micro_batch_size": 2},
            "eval": {"every": 0, "before_training": False},
            "iterations": 1, "log_samples": 4, "tensorboard": False}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    Trainer(load_config(path), tmp_path / "run").train()
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    # the random model wins nothing: no step sample has a sibling, so the term's gate is 0 everywhere
    assert row["teacher/context_share"] == 0.0
    assert row["sdar/gate_mean"] == 0.0 and row["sdar/loss"] == 0.0
    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    assert samples and all(g == 0.0 for s in samples for g in s["gate"])
    # the switch is refused where it means nothing
    with pytest.raises(ConfigError, match="applies to teacher.context=sibling"):
        load_config(path, ["teacher.context=hint"])
    with pytest.raises(ConfigError, match="'opsd_sampled' does not have"):
        load_config(path, ["method=opsd_sampled"])


def test_teacher_check_plays_each_environments_own_expert():
    from sdar.trainer.teacher_check import collect_states, expert_policy

    assert expert_policy(make_env("toy_panels")) == "expert"
    assert expert_policy(make_env("webshop")) == "oracle"
    # an environment with a random policy only (a user's own) has no expert to play
    from types import SimpleNamespace

    with pytest.raises(UserError, match=r"'mine' has none \(its policies: random\)$"):
        expert_policy(SimpleNamespace(name="mine", policies=("random",)))
    env = make_env("toy_panels", panels=2)
    visited = collect_states(env, [0, 1], history_length=2, max_states=10)
    # the expert wins both tasks: two panels each, and each state's history holds the panels before it
    assert len(visited) == 4 and all(env.states[i].won for i in range(2))
    assert [len(h) for _, _, h, _, _ in visited] == [0, 0, 1, 1]
    assert all(len(actions) == 2 for *_, actions in visited)


def test_cast_frozen_weights_stores_the_lora_base_in_bf16_and_trains_the_adapter_in_fp32():
    from sdar.models.loading import LoraSettings, cast_frozen_weights

    config = ModelConfig(name="tiny-random", autocast="bf16", lora=LoraSettings(r=4))
    model, tok = load_policy(config)
    prompts, responses = [[5, 6, 7, 8]], [[9, 10, 11]]
    with torch.no_grad(), autocast_context(config, "cpu"):
        before = score_responses(model, prompts, responses, pad_id=tok.pad_token_id).log_probs
    cast = cast_frozen_weights(model, config)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert cast == len(frozen) > 0 and all(p.dtype == torch.bfloat16 for p in frozen)
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    with autocast_context(config, "cpu"):
        after = score_responses(model, prompts, responses, pad_id=tok.pad_token_id).log_probs
    # under autocast the frozen weights were cast to bfloat16 anyway: the same numbers, up to rounding
    assert float((before - after).abs().max()) < 0.02
    after.sum().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in trainable)
    assert cast_frozen_weights(model, ModelConfig(name="tiny-random")) == 0  # autocast none: nothing


def test_full_fine_tuning_reference_scores_as_the_policy_under_autocast():
    # Full fine-tuning keeps a frozen reference copy. Cast whole, its embeddings and norms would put
    # its residual stream in bfloat16 while the trainable policy's stays in float32, and the KL term
    # would not start at 0. Cast as the trainer does (linear_only), the two score identically.
    from sdar.models.loading import cast_frozen_weights, load_reference

    config = ModelConfig(name="tiny-random", autocast="bf16")
    policy, tok = load_policy(config)
    prompts, responses = [[5, 6, 7, 8], [12, 13]], [[9, 10, 11], [14, 15, 16]]

    def scores(model):
        with torch.no_grad(), autocast_context(config, "cpu"):
            return score_responses(model, prompts, responses, pad_id=tok.pad_token_id).log_probs

    reference = load_reference(config, policy)
    cast = cast_frozen_weights(reference, config, linear_only=True)
    linear = {id(p) for m in reference.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters()}
    other = {id(p) for m in reference.modules() if not isinstance(m, torch.nn.Linear)
             for p in m.parameters(recurse=False)}
    assert cast == len(linear - other) > 0
    embedding = reference.get_input_embeddings().weight
    assert embedding.dtype == torch.float32  # tied to the head in tiny-random: kept in float32
    assert torch.equal(scores(policy), scores(reference))
    whole = load_reference(config, policy)
    assert cast_frozen_weights(whole, config) > cast
    assert not torch.equal(scores(policy), scores(whole))


def test_native_bf16_reads_torchs_cpu_probes():
    from sdar.models.loading import native_bf16

    expected = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    assert native_bf16("cpu") is expected and native_bf16(torch.device("cpu")) is expected
    assert native_bf16("meta") is False


@pytest.mark.parametrize("native", [True, False])
def test_autocast_auto_runs_bf16_only_where_the_cpu_computes_it_natively(monkeypatch, caplog, request, native):
    import logging

    from sdar.models import loading
    from sdar.models.loading import LoraSettings, autocast_dtype, cast_frozen_weights

    # the machine's bfloat16 support is a hardware fact: both answers of torch's probes are played here
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(loading, "_AUTOCAST_SEEN", set())
    loading._native_bf16.cache_clear()  # probed once per device: forget this machine's answer
    request.addfinalizer(loading._native_bf16.cache_clear)  # and the played one afterwards
    auto = ModelConfig(name="tiny-random", autocast="auto", lora=LoraSettings(r=4))
    with caplog.at_level(logging.INFO, logger="sdar.models.loading"):
        assert autocast_dtype(auto, "cpu") == (torch.bfloat16 if native else None)
        assert autocast_dtype(auto, "cpu") == (torch.bfloat16 if native else None)
    resolved = [r for r in caplog.records if "model.autocast auto on cpu" in r.getMessage()]
    assert len(resolved) == 1  # logged once per setting and device type
    assert ("bfloat16 (native)" if native else "none (no native bfloat16") in resolved[0].getMessage()
    model, tok = load_policy(auto)
    with torch.no_grad(), autocast_context(auto, "cpu"):
        logits = model(input_ids=torch.tensor([[5, 6, 7]])).logits
    assert logits.dtype == (torch.bfloat16 if native else torch.float32)
    frozen = [p for p in model.parameters() if not p.requires_grad]
    assert cast_frozen_weights(model, auto) == (len(frozen) if native else 0)
    assert all(p.dtype == (torch.bfloat16 if native else torch.float32) for p in frozen)
    # an explicit bf16 is kept either way; without native support it warns, once
    caplog.clear()
    explicit = ModelConfig(name="tiny-random", autocast="bf16")
    with caplog.at_level(logging.INFO, logger="sdar.models.loading"):
        assert autocast_dtype(explicit, "cpu") == torch.bfloat16
        assert autocast_dtype(explicit, "cpu") == torch.bfloat16
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == (0 if native else 1)
    if not native:
        assert "without native bfloat16" in warnings[0].getMessage()
        assert "model.autocast=auto or none" in warnings[0].getMessage()


def test_no_winner_skip_masks_each_row_of_a_micro_batch_by_its_own_step_sample(tmp_path):
    from test_distributed import scripted_samples
    from test_trainer import make_config

    from sdar.trainer.trainer import Trainer

    # opsd with no KL and no entropy bonus: the loss is the SDAR term alone, lambda * token_mean(g * (l_T - l))
    config, _ = make_config(tmp_path, ["method=opsd", "loss.sdar_lambda=1.0", "loss.c_kl=0", "loss.c_ent=0",
                                       "teacher.context=sibling"])
    trainer = Trainer(config, tmp_path / "run")
    samples = scripted_samples(trainer)  # trajectories 0 and 2 win: each group has a winner
    trainer._sibling_pool = samples
    rollout_lp = trainer._rollout_log_probs(1, samples, len(samples), {})
    assert all(rollout_lp.teacher.has_context)
    batch = trainer._update_batch(samples, trainer.compute_advantages(samples), rollout_lp)

    def loss(micro: list[int]) -> float:
        with torch.no_grad():
            return float(trainer._micro_batch_loss(1, batch, micro)[0])

    tokens = [len(s.response_ids) for s in samples]
    alone = {i: loss([i]) for i in (0, 5)}  # each row's term over its own tokens
    assert alone[0] != 0.0 and alone[5] != 0.0
    trainer.config.teacher.no_winner = "skip"
    rollout_lp.teacher.has_context = [i != 5 for i in range(len(samples))]
    # the micro-batch [5, 0], not in index order: row 5 is left out, row 0's sum is divided by both rows' tokens
    assert loss([5, 0]) == pytest.approx(alone[0] * tokens[0] / (tokens[0] + tokens[5]), rel=1e-5)
    rollout_lp.teacher.has_context = [i != 0 for i in range(len(samples))]
    assert loss([5, 0]) == pytest.approx(alone[5] * tokens[5] / (tokens[0] + tokens[5]), rel=1e-5)
