"""``sdar teacher-check``: can the teacher use its privileged context? Measure it before training.

SDAR's distillation term only helps when the teacher (the policy reading privileged context) scores
good actions higher than the student does. Whether it does depends on the model, the environment,
the context (``teacher.context``) and where the context sits in the prompt (``teacher.layout``).
This check answers that in minutes, without training:

1. The environment's scripted expert (``expert`` or ``oracle``) plays ``episodes`` validation
   tasks to the end. At every
   state, the candidates are the expert's action and up to ``alternatives`` other actions (other
   admissible actions where the environment lists them, else the ``random`` policy's responses),
   each written in the run's response format.
2. Every candidate is scored twice by the same model: after the student prompt, and after the
   teacher prompt (context laid out by ``teacher.layout``).
3. Reported per candidate kind (expert / non-expert): the mean per-token gap
   ``log pi(y | context + prompt) - log pi(y | prompt)`` (the gap SDAR's gate reads), and how often
   the expert action is ranked first by total log-prob among the state's candidates, by the
   teacher and by the student; and the gap per action verb (the action's first word, ``by_verb``).

A teacher that can use its context shows a positive expert gap, a lower non-expert gap and a
teacher top-1 rate above the student's. With ``teacher.context: sibling`` the context is the
expert episode's own actions (a successful trajectory of the same task).

``probes``: fixed actions scored at every state besides the candidates, each written into the
expert's response in place of its action (``<action>probe</action>``; environments with an action
tag only), admissible or not and not at a state where the expert's action is the same text,
reported apart from the candidates: their gap, and how often teacher and student score them above
the expert's response. A probe with a higher gap than the expert's is a
string the gate would weigh up wherever the policy samples it (for example the action a prompt
shows as its format example).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import re
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from sdar.envs.base import AgentEnv, EnvState
from sdar.envs.play import scripted_play
from sdar.errors import UserError
from sdar.models.loading import autocast_context, autocast_dtype, cast_frozen_weights, load_policy
from sdar.models.scoring import score_responses
from sdar.rollout.prompts import PromptBuilder
from sdar.skills import SkillLibrary, SkillSelection
from sdar.trainer.teacher import teacher_contexts

logger = logging.getLogger(__name__)

_THINK = re.compile(r"<think>.*?</think>\s*", re.DOTALL)
_ACTION = re.compile(r"<action>(.*?)</action>", re.DOTALL)
_VERB = re.compile(r"[a-z]+")


def verb(action: str | None) -> str:
    """An action's verb: its first run of lower-case letters (``go`` for ``go to desk 1``, ``click``
    for ``click[buy now]``, ``search`` for Search-QA's ``search:...``), else its first word;
    ``(none)`` without an action."""
    text = (action or "").strip().lower()
    if not text:
        return "(none)"
    match = _VERB.match(text)
    return match.group(0) if match else text.split()[0]


@dataclass
class Candidate:
    """One scored response at one state."""

    state_index: int
    expert: bool
    student_log_prob: float
    """Total log-prob of the response after the student prompt."""
    teacher_log_prob: float
    tokens: int
    probe: str | None = None
    """The probe action this candidate is (None: the expert's or an alternative)."""
    action: str | None = None
    """The response's action as the environment parses it (None without one)."""


def _response(text: str, think: bool) -> str:
    return text if think else _THINK.sub("", text).strip()


def _with_action(expert: str, action: str) -> str:
    """The expert's response ``expert`` with ``action`` in place of its own (its ``<action>`` tag)."""
    match = _ACTION.search(expert)
    return expert.replace(match.group(0), f"<action>{action}</action>")


def _alternatives(env: AgentEnv, index: int, state: EnvState, expert: str, count: int, think: bool,
                  rng: random.Random) -> list[str]:
    """Up to ``count`` responses other than the expert's, in the expert's response format."""
    action_match = _ACTION.search(expert)
    if state.admissible_actions and action_match:
        expert_action = action_match.group(1).strip()
        others = [a for a in state.admissible_actions if a.strip() != expert_action]
        picked = rng.sample(others, min(count, len(others)))
        return [_with_action(expert, a) for a in picked]
    out: list[str] = []
    for _ in range(4 * count):  # the random policy may repeat itself or the expert
        text = _response(env.scripted_action(index, "random", rng), think)
        if text != expert and text not in out:
            out.append(text)
        if len(out) == count:
            break
    return out


def expert_policy(env: AgentEnv) -> str:
    """The environment's scripted expert: ``expert`` (ALFWorld, toy envs) or ``oracle`` (WebShop,
    Search-QA)."""
    for name in ("expert", "oracle"):
        if name in env.policies:
            return name
    raise UserError(f"teacher-check plays the environment's scripted expert, and {env.name!r} has none "
                    f"(its policies: {', '.join(env.policies) or 'none'})")


def collect_states(env: AgentEnv, seeds: list[int], history_length: int, max_states: int):
    """Play the expert on ``seeds`` (one episode each); returns ``(index, state, history, expert
    response, episode actions)`` per visited state, at most ``max_states``."""
    states = env.reset(seeds, 1)
    actions: list[list[str]] = [[] for _ in states]
    visited = []
    for turns, _ in scripted_play(env, expert_policy(env), states, random.Random(0), history_length=history_length):
        for t in turns:
            visited.append((t.index, t.state, t.history, t.response))
            actions[t.index].append(t.action)
        if len(visited) >= max_states:
            break
    return [(i, s, h, r, actions[i]) for i, s, h, r in visited[:max_states]]


def teacher_check(config, episodes: int = 8, alternatives: int = 3, max_states: int = 64,
                  split: str | None = None, probes: tuple[str, ...] = ()) -> dict:
    """Run the check for ``config`` (model, env, ``teacher.context``, ``teacher.layout``, prompt
    mode, budgets, ``init_checkpoint``), with ``probes`` (actions) scored at every state besides;
    returns the result as a JSON-ready dict."""
    from sdar.trainer.checkpoint import apply_warm_start
    from sdar.trainer.trainer import make_run_env

    for flag, value in (("--episodes", episodes), ("--alternatives", alternatives), ("--max-states", max_states)):
        if value < 1:
            raise UserError(f"{flag} must be >= 1, got {value}")
    probes = tuple(p.strip() for p in probes)
    if any(not p for p in probes) or len(set(probes)) < len(probes):
        raise UserError(f"--probe: probes must be distinct, non-empty actions, got {list(probes)}")
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    model, tokenizer = load_policy(config.model)
    if config.init_checkpoint:
        model, _ = apply_warm_start(model, config.model.lora, config.init_checkpoint)
    cast_frozen_weights(model, config.model)
    model.eval()
    think = config.env.prompt_mode == "think"
    split = split or config.env.val_split
    with make_run_env(config.env, split) as env:
        skills = SkillLibrary(config.env.name, config.teacher.skills_dir) if config.teacher.context == "skills" else None
        builder = PromptBuilder(env, tokenizer, skills, think, config.teacher.layout, routing=config.teacher.routing,
                                chat_template_kwargs=config.model.chat_template_kwargs)
        history_length = config.env.history_length if config.env.history_length is not None else env.history_length
        seeds = list(range(config.eval.seed, config.eval.seed + episodes))
        visited = collect_states(env, seeds, history_length, max_states)
        rng = random.Random(config.seed)
        rows = []  # (state index, expert?, response text, state, history, context, probe)
        for k, (i, state, history, expert, episode_actions) in enumerate(visited):
            expert_text = _response(expert, think)
            if config.teacher.context == "sibling":
                lines = [f"{n}. {a}" for n, a in enumerate(episode_actions, start=1)]
                context = SkillSelection(files=("sibling",), text="A successful attempt at this task took "
                                         "these actions:\n" + "\n".join(lines))
            else:
                fake = _StateOnly(state, history)
                context = teacher_contexts(config.teacher.context, builder, [fake])[0]
            rows.append((k, True, expert_text, state, history, context, None))
            for alt in _alternatives(env, i, state, expert_text, alternatives, think, rng):
                rows.append((k, False, alt, state, history, context, None))
            if probes:
                match = _ACTION.search(expert_text)
                if match is None:
                    raise UserError(f"--probe needs an environment whose responses carry an <action> tag; "
                                    f"{env.name!r} answers {expert_text[:80]!r}: leave --probe out there")
                rows += [(k, False, _with_action(expert_text, p), state, history, context, p)
                         for p in probes if p != match.group(1).strip()]
        actions = [env.parse_action(text).action or None for _, _, text, *_ in rows]  # as a rollout reads them
    budget = config.rollout.max_prompt_tokens
    student = [builder.build(s, h, budget).ids for _, _, _, s, h, _, _ in rows]
    teacher = [builder.build(s, h, config.teacher.max_prompt_tokens, with_skills=True, on_overflow=config.teacher.on_overflow,
                             context=c).ids for _, _, _, s, h, c, _ in rows]
    responses = [tokenizer(text, add_special_tokens=False)["input_ids"] for _, _, text, *_ in rows]
    device = next(model.parameters()).device
    with torch.no_grad(), autocast_context(config.model, device):
        s_lp = score_responses(model, student, responses, pad_id=tokenizer.pad_token_id,
                               micro_batch_size=config.optim.micro_batch_size).log_probs.float().cpu()
        t_lp = score_responses(model, teacher, responses, pad_id=tokenizer.pad_token_id,
                               micro_batch_size=config.optim.micro_batch_size).log_probs.float().cpu()
    candidates = [Candidate(k, expert, float(s_lp[j, : len(r)].sum()), float(t_lp[j, : len(r)].sum()), len(r),
                            probe, action)
                  for j, ((k, expert, *_, probe), r, action) in enumerate(zip(rows, responses, actions))]
    result = summarise(candidates)
    for probe in result["probes"]:  # the response scored for it at its first state
        probe["scored_as"] = next(text for _, _, text, _, _, _, p in rows if p == probe["action"])
    result.update({
        "env": config.env.name, "split": split, "model": config.model.name,
        "init_checkpoint": config.init_checkpoint, "teacher_context": config.teacher.context,
        "teacher_layout": config.teacher.layout, "prompt_mode": config.env.prompt_mode,
        "autocast": config.model.autocast,
        "autocast_ran": "bf16" if autocast_dtype(config.model, device) is not None else "none",  # `auto` resolved
        "episodes": episodes, "alternatives": alternatives,
        "seconds": round(time.perf_counter() - started, 1),
        "example_teacher_prompt": tokenizer.decode(teacher[0]) if teacher else None,
    })
    return result


class _StateOnly:
    """The attributes :func:`teacher_contexts` reads for the skills and hint contexts."""

    def __init__(self, state: EnvState, history: list[tuple[str, str]]):
        self.state = state
        self.history = history


def summarise(candidates: list[Candidate]) -> dict:
    """Mean per-token gaps of expert and non-expert candidates and top-1 rates of the expert; the
    candidates' gaps per action verb (``by_verb``: expert and non-expert together, most frequent
    verb first), so a teacher that raises one kind of action whatever the state (walking over
    placing, say) shows; per probe action (``probes``, in order of appearance) its gap and the
    shares of its states where the teacher and the student score it above the expert's action.

    A state counts for the top-1 rates only when it has at least one non-expert candidate; probes
    count for none of these."""
    probed = [c for c in candidates if c.probe is not None]
    candidates = [c for c in candidates if c.probe is None]
    def gap_stats(items: list[Candidate]) -> dict:
        tokens = sum(c.tokens for c in items)
        gap = sum(c.teacher_log_prob - c.student_log_prob for c in items)
        return {"count": len(items), "gap_per_token": gap / tokens if tokens else None,
                "student_log_prob_mean": sum(c.student_log_prob for c in items) / len(items) if items else None,
                "teacher_log_prob_mean": sum(c.teacher_log_prob for c in items) / len(items) if items else None}

    by_state: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_state.setdefault(c.state_index, []).append(c)
    ranked = [cs for cs in by_state.values() if any(c.expert for c in cs) and any(not c.expert for c in cs)]

    def top1(attr: str) -> float | None:
        if not ranked:
            return None
        wins = sum(max(cs, key=lambda c: getattr(c, attr)).expert for cs in ranked)
        return wins / len(ranked)

    expert = gap_stats([c for c in candidates if c.expert])
    other = gap_stats([c for c in candidates if not c.expert])
    separation = (expert["gap_per_token"] - other["gap_per_token"]
                  if expert["gap_per_token"] is not None and other["gap_per_token"] is not None else None)
    experts = {c.state_index: c for c in candidates if c.expert}

    def probe_stats(action: str) -> dict:
        items = [c for c in probed if c.probe == action]
        rivals = [(c, experts[c.state_index]) for c in items if c.state_index in experts]

        def above(attr: str) -> float | None:
            return sum(getattr(c, attr) > getattr(e, attr) for c, e in rivals) / len(rivals) if rivals else None

        return {"action": action, **gap_stats(items), "teacher_above_expert": above("teacher_log_prob"),
                "student_above_expert": above("student_log_prob")}

    verbs: dict[str, list[Candidate]] = {}
    for c in candidates:
        verbs.setdefault(verb(c.action), []).append(c)
    by_verb = {name: {**gap_stats(items), "expert": sum(c.expert for c in items)}
               for name, items in sorted(verbs.items(), key=lambda kv: -len(kv[1]))}
    return {"states": len(by_state), "ranked_states": len(ranked), "expert": expert, "non_expert": other,
            "gap_separation": separation, "by_verb": by_verb, "teacher_top1": top1("teacher_log_prob"),
            "student_top1": top1("student_log_prob"),
            "probes": [probe_stats(a) for a in dict.fromkeys(c.probe for c in probed)]}


def register(subparsers) -> None:
    check = subparsers.add_parser(
        "teacher-check", help="can the teacher use its privileged context? (gaps on expert and other actions)",
        description="Score the scripted expert's actions and alternatives with and without the teacher's "
                    "context; report the mean gap on each and how often the teacher ranks the expert first.")
    check.add_argument("--config", help="YAML config (model, env, teacher.context, teacher.layout, ...)")
    check.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    check.add_argument("--episodes", type=int, default=8, help="expert episodes on the validation panel")
    check.add_argument("--alternatives", type=int, default=3, help="non-expert candidates per state")
    check.add_argument("--max-states", type=int, default=64, help="score at most this many states")
    check.add_argument("--split", help="split to play (default: the config's env.val_split)")
    check.add_argument("--probe", action="append", default=[], metavar="ACTION",
                       help="an action to score at every state besides the candidates (admissible or not), "
                            "reported apart; repeat for several")
    check.add_argument("--output", help="write the result JSON here")
    check.set_defaults(func=run_teacher_check)


def run_teacher_check(args: argparse.Namespace) -> int:
    from sdar.trainer.config import load_config

    config = load_config(args.config, args.overrides)
    result = teacher_check(config, args.episodes, args.alternatives, args.max_states, args.split,
                           tuple(args.probe))
    shown = {k: result[k] for k in ("env", "model", "teacher_context", "teacher_layout", "states",
                                    "gap_separation", "teacher_top1", "student_top1")}
    shown["expert_gap"] = result["expert"]["gap_per_token"]
    shown["non_expert_gap"] = result["non_expert"]["gap_per_token"]
    shown["gap_by_verb"] = {name: v["gap_per_token"] for name, v in result["by_verb"].items()}
    for probe in result["probes"]:
        shown[f"probe {probe['action']!r}"] = {k: probe[k] for k in ("gap_per_token", "teacher_above_expert",
                                                                      "student_above_expert")}
    print(json.dumps(shown, indent=2))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"written: {out}")
    return 0
