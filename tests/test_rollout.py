"""Step-wise collector: groups, trajectory ids, masking of finished episodes, scores, history window.

The policy here is a scripted generate function (a real tokenizer encodes scripted responses), so
that grouping and scoring can be checked against hand computation; the trainer's end-to-end tests
run the same collector with a real model.
"""

import pytest

from sdar.envs import make_env
from sdar.models.loading import ModelConfig, load_policy
from sdar.rollout import PromptBuilder, collect_rollout, rollout_metrics
from sdar.skills import SkillLibrary


def scripted(tokenizer, env, plans, calls):
    """A generate function playing fixed action lists per episode (in reset order)."""
    counters = {}

    def run(prompt_ids):
        calls.append(len(prompt_ids))
        live = [i for i, s in enumerate(env.states) if not s.done]
        assert len(live) == len(prompt_ids)  # finished episodes are masked out of generation
        out = []
        for i in live:
            k = counters.get(i, 0)
            counters[i] = k + 1
            out.append(tokenizer(plans[i][k], add_special_tokens=False)["input_ids"])
        return out

    return run


def test_groups_scores_and_masking(tokenizer):
    env = make_env("toy")
    builder = PromptBuilder(env, tokenizer, None, think=False)
    # seeds 0 -> target 1, 1 -> target 2; group size 2
    plans = [
        ["<action>increment</action>", "<action>submit</action>"],                 # wins in 2
        ["oops", "<action>submit</action>"],                                        # invalid, then loses
        ["<action>increment</action>", "<action>increment</action>", "<action>submit</action>"],  # wins in 3
        ["<action>submit</action>"],                                                # loses in 1
    ]
    calls = []
    rollout = collect_rollout(env, builder, scripted(tokenizer, env, plans, calls), tokenizer, [0, 1], 2,
                              history_length=2, max_prompt_tokens=512, invalid_action_penalty=0.1,
                              progress=False)
    assert calls == [4, 3, 1]  # all live episodes per step in one batch, finished ones dropped
    by_traj = {}
    for s in rollout.samples:
        by_traj.setdefault(s.traj_id, []).append(s)
    assert [len(by_traj[t]) for t in range(4)] == [2, 2, 3, 1]
    assert [s.group_id for s in rollout.samples if s.traj_id in (0, 1)] == [0, 0, 0, 0]
    assert {s.group_id for s in by_traj[2] + by_traj[3]} == {1}
    assert [s.step for s in by_traj[2]] == [0, 1, 2]
    # scores: S = R(episode) - 0.1 * [invalid]
    assert [s.score for s in by_traj[0]] == [10.0, 10.0]
    assert [s.score for s in by_traj[1]] == pytest.approx([-0.1, 0.0])
    assert [s.valid_action for s in by_traj[1]] == [False, True]
    assert [s.score for s in by_traj[3]] == [0.0]
    # responses are the sampled ids themselves
    assert by_traj[0][1].response_ids == tokenizer("<action>submit</action>", add_special_tokens=False)["input_ids"]
    m = rollout_metrics(rollout, "train")
    assert m["train/success"] == 0.5
    assert m["train/success/low"] == 0.5 and "train/success/high" not in m
    assert m["train/invalid_action_rate"] == pytest.approx(1 / 8)
    assert m["train/episode_length"] == 2.0


def test_history_window_and_flat_prompts(tokenizer):
    env = make_env("toy", max_steps=6)
    builder = PromptBuilder(env, tokenizer, None, think=False)
    plans = [["<action>decrement</action>"] * 6]
    rollout = collect_rollout(env, builder, scripted(tokenizer, env, plans, []), tokenizer, [3], 1,
                              history_length=2, max_prompt_tokens=512, invalid_action_penalty=0.1,
                              progress=False)
    assert [len(s.history) for s in rollout.samples] == [0, 1, 2, 2, 2, 2]
    assert rollout.samples[5].history[0][0] == "The counter shows -3."
    # bounded history: prompt length stays flat once the window is full
    lengths = [len(s.prompt_ids) for s in rollout.samples]
    assert max(lengths[2:]) - min(lengths[2:]) <= 2


def test_history_dropped_to_fit_the_student_budget_is_not_shown_to_the_teacher(tokenizer):
    from sdar.trainer.teacher import teacher_prompts

    env = make_env("toy", max_steps=6)
    builder = PromptBuilder(env, tokenizer, None, think=False)
    plans = [["<action>decrement</action>"] * 6]

    def play(budget):
        return collect_rollout(env, builder, scripted(tokenizer, env, plans, []), tokenizer, [3], 1,
                               history_length=2, max_prompt_tokens=budget, invalid_action_penalty=0.1,
                               progress=False)

    roomy_rollout = play(512)
    roomy = roomy_rollout.samples
    # a budget one token short of the full window's prompt: the student drops its oldest pair
    tight_rollout = play(len(roomy[5].prompt_ids) - 1)
    tight = tight_rollout.samples
    assert [len(s.history) for s in tight][2:] == [1, 1, 1, 1]
    assert tight[5].history == roomy[5].history[1:]
    # each drop is counted, per step sample and in the rollout metrics
    assert [s.history_dropped for s in tight] == [0, 0, 1, 1, 1, 1]
    assert rollout_metrics(tight_rollout, "train")["train/history_dropped"] == 4.0
    assert rollout_metrics(roomy_rollout, "train")["train/history_dropped"] == 0.0
    assert not any(s.prompt_truncated for s in tight)
    # no context (a sibling group without a winner): the teacher prompt is the student's own
    teacher = teacher_prompts(builder, tight, "sibling", max_prompt_tokens=4096, on_overflow="drop_history")
    assert all(t.ids == s.prompt_ids for t, s in zip(teacher, tight))


def test_student_with_skills_sees_the_routed_files(tokenizer):
    env = make_env("toy")
    builder = PromptBuilder(env, tokenizer, SkillLibrary("toy"), think=False)
    plans = [["<action>submit</action>"], ["<action>submit</action>"]]
    rollout = collect_rollout(env, builder, scripted(tokenizer, env, plans, []), tokenizer, [0, 2], 1,
                              history_length=2, max_prompt_tokens=1024, invalid_action_penalty=0.1,
                              with_skills=True, progress=False)
    assert rollout.samples[0].skill_files == ("toy/general.md", "toy/low.md")
    assert rollout.samples[1].skill_files == ("toy/general.md", "toy/high.md")
    text = tokenizer.decode(rollout.samples[1].prompt_ids)
    assert text.startswith("[Privileged Skill Information]\n") and "Large targets" in text


def test_teacher_scores_exactly_the_student_response_tokens(tokenizer):
    """Teacher and student score the same sampled ids: the teacher's log-probs are those of the
    student's response ids placed after the skill prefix + the student prompt, with or without the
    shared prefix cache."""
    import torch

    from sdar.models.scoring import score_responses
    from sdar.trainer.teacher import teacher_log_probs

    model, tok = load_policy(ModelConfig(name="tiny-random"))
    env = make_env("toy")
    builder = PromptBuilder(env, tok, SkillLibrary("toy"), think=False)
    plans = [["<action>increment</action>", "<action>submit</action>"], ["<action>submit</action>"]]
    rollout = collect_rollout(env, builder, scripted(tok, env, plans, []), tok, [0, 2], 1, history_length=2,
                              max_prompt_tokens=512, invalid_action_penalty=0.1, progress=False)
    samples = rollout.samples
    for use_cache in (True, False):
        scores = teacher_log_probs(model, builder, samples, 2048, "drop_history", tok.pad_token_id,
                                   use_cache=use_cache)
        for sample, teacher_lp, files in zip(samples, scores.log_probs, scores.skill_files):
            assert teacher_lp.shape == (len(sample.response_ids),)
            full = builder.build(sample.state, sample.history, 2048, with_skills=True)
            assert full.rest_ids == sample.prompt_ids  # the student's own prompt, after the skills
            direct = score_responses(model, [full.ids], [sample.response_ids], pad_id=tok.pad_token_id)
            torch.testing.assert_close(teacher_lp, direct.log_probs[0, : len(sample.response_ids)].float(),
                                       rtol=1e-5, atol=1e-5)
            assert files[0] == "toy/general.md"


def test_episode_rows_give_each_step_of_each_episode_as_played(tokenizer):
    from sdar.trainer.evaluation import episode_rows

    env = make_env("toy")
    builder = PromptBuilder(env, tokenizer, None, think=False)
    plans = [  # seeds 0 -> target 1, 1 -> target 2; group size 2, as above
        ["<action>increment</action>", "<action>submit</action>"],
        ["oops", "<action>submit</action>"],
        ["<action>increment</action>", "<action>increment</action>", "<action>submit</action>"],
        ["<action>submit</action>"],
    ]
    rollout = collect_rollout(env, builder, scripted(tokenizer, env, plans, []), tokenizer, [0, 1], 2,
                              history_length=2, max_prompt_tokens=512, invalid_action_penalty=0.1,
                              progress=False)
    rows = episode_rows(rollout, panel_pass=2)
    assert [(r["episode"], r["step"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 0), (2, 1), (2, 2),
                                                         (3, 0)]
    assert {r["pass"] for r in rows} == {2}
    assert [r["response"] for r in rows] == [a for plan in plans for a in plan]
    assert [r["action"] for r in rows][:4] == ["increment", "submit", "", "submit"]
    assert [r["valid_action"] for r in rows] == [True, True, False, True, True, True, True, True]
    assert [r["won"] for r in rows] == [True, True, False, False, True, True, True, False]
    assert [r["reward"] for r in rows] == [0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 10.0, 0.0]
    assert rows[0]["observation"] == "The counter shows 0." and rows[1]["observation"] == "The counter shows 1."
    assert rows[0]["admissible_actions"] == env.reset([0])[0].admissible_actions
    assert {r["task_id"] for r in rows[:4]} != {r["task_id"] for r in rows[4:]}
    # after a gather of several ranks the step samples travel without their state: rows say None
    import dataclasses

    from sdar.rollout import Rollout

    light = Rollout([dataclasses.replace(s, state=None, history=[]) for s in rollout.samples], rollout.episodes)
    gathered = episode_rows(light)
    assert all(r["observation"] is None and r["admissible_actions"] is None for r in gathered)
    assert [{k: v for k, v in r.items() if k not in ("observation", "admissible_actions", "pass")} for r in gathered] == [
        {k: v for k, v in r.items() if k not in ("observation", "admissible_actions", "pass")} for r in rows]
