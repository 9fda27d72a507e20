"""toy_panels: the gate study's controlled environment, played to a win and to a loss."""

import random

import pytest

from sdar.envs import make_env
from sdar.envs.toy import FRUITS


def _words(state):
    return state.admissible_actions


def test_expert_wins_every_panel_and_gets_the_reward():
    env = make_env("toy_panels", panels=3, options=4)
    states = env.reset([7], group_size=2)
    assert states[0].observation == states[1].observation  # a group shares its initial state
    rng = random.Random(0)
    for step in range(3):
        assert not states[0].done and states[0].observation.startswith(
            ("Panel", "Right. Panel")) and f"Panel {step + 1} of 3" in states[0].observation
        actions = [env.parse_action(env.scripted_action(i, "expert", rng)).action for i in range(2)]
        # the right word is the panel's one fruit
        assert all(a in FRUITS and a in _words(states[0]) for a in actions)
        assert sum(w in FRUITS for w in _words(states[0])) == 1
        states = env.step(actions)
    assert all(s.done and s.won and s.reward == 10.0 and s.metrics["panels_right"] == 3.0 for s in states)


def test_a_wrong_word_locks_out_and_an_unknown_word_is_invalid():
    env = make_env("toy_panels")
    s = env.reset([3], group_size=2)[0]
    wrong = next(w for w in _words(s) if w not in FRUITS)
    lost, unknown = env.step([wrong, "spaceship"])
    assert lost.done and not lost.won and lost.reward == 0.0 and lost.valid_action
    assert "locked out" in lost.observation
    assert unknown.done and not unknown.valid_action


def test_hints_name_the_right_word_and_corruption_names_a_wrong_one_per_task():
    clean = make_env("toy_panels", hint_corruption=0.0).reset(list(range(20)))
    bad = make_env("toy_panels", hint_corruption=1.0).reset(list(range(20)))
    half = make_env("toy_panels", hint_corruption=0.5).reset(list(range(200)))
    for c, b in zip(clean, bad):
        right = next(w for w in c.admissible_actions if w in FRUITS)
        assert c.observation == b.observation  # corruption changes the hint only
        assert f"<action>{right}</action>" in c.hint and right not in b.hint
        named = b.hint.split("<action>")[1].split("</action>")[0]
        assert named in b.admissible_actions
    misled = sum(next(w for w in s.admissible_actions if w in FRUITS) not in s.hint for s in half)
    assert 70 < misled < 130  # about half of the tasks, chosen by task seed
    # the same tasks are corrupted in every run
    again = make_env("toy_panels", hint_corruption=0.5).reset(list(range(200)))
    assert [s.hint for s in half] == [s.hint for s in again]


def test_random_guessing_rarely_wins():
    env = make_env("toy_panels")
    rng = random.Random(1)
    states = env.reset(list(range(400)))
    while not all(s.done for s in states):
        states = env.step([None if s.done else rng.choice(s.admissible_actions) for s in states])
    rate = sum(s.won for s in states) / len(states)
    assert rate < 0.05  # 1/64 expected


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="hint_corruption"):
        make_env("toy_panels", hint_corruption=1.5)
    with pytest.raises(ValueError, match="panels"):
        make_env("toy_panels", panels=0)


def test_scripted_play_yields_each_step_with_bounded_history():
    from sdar.envs.play import scripted_play

    env = make_env("toy_panels", panels=3, options=4)
    steps = list(scripted_play(env, "expert", env.reset([0, 1], group_size=1), random.Random(0),
                               history_length=1))
    assert len(steps) == 3  # the expert clears three panels, one per step
    for k, (turns, after) in enumerate(steps):
        assert [t.index for t in turns] == [0, 1] and all(t.state.step == k for t in turns)
        assert all(len(t.history) == min(k, 1) for t in turns)  # at most the last turn
        if k:  # the history holds the previous observation and the action taken there
            previous = steps[k - 1][0][0]
            assert turns[0].history == [(previous.state.observation, previous.action)]
    assert all(s.done and s.won for s in steps[-1][1])
