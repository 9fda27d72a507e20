"""ALFWorld with headroom: does GRPO raise validation success, and does SDAR add to it?

Setting: offline ALFWorld ``easy`` games (pick-and-place, 3 receptacles), SmolLM2-135M with LoRA in
bfloat16 autocast, the action tag only, a fixed panel of the first 48 ``valid_seen`` games. Four
regimes (``--regime``), each with its config, its search, its runs and its tables:

- ``short`` (``configs/bench/alfworld_headroom.yaml``, ``SEARCH_SHORT``): 6 steps, 4 tasks x group 4,
  invalid-action penalty 0.1; searched over learning rate, KL and the penalty/regularisers.
- ``long`` (``configs/bench/alfworld_headroom_long.yaml``, ``SEARCH_LONG``): made after the short
  regime's runs showed what limits GRPO there (few wins per group): 10 steps, 2 tasks x group 8,
  only wins make returns differ (no penalty, no entropy bonus, no KL); searched over dynamic sampling
  (``rollout.filter_groups``) at lr 1e-4.
- ``reader`` (the long regime's config, ``SEARCH_READER``, folders ``alfworld_headroom_reader``):
  made after ``sdar teacher-check`` found that the long regime's warm start does not read a
  successful sibling's actions in front of its prompt (the SDAR arm's teacher). Its warm start also
  imitates every expert turn with that sibling context in the teacher's user layout (the turn's
  own episode's actions, :func:`sibling_reading_twins`), as the gate study's warm start learns to
  read its hint; student prompts and everything else as in the long regime.
- ``plain`` (the reader regime with ``env.options.answer_example=false``, folders
  ``alfworld_headroom_plain``): made after SDAR's runs of the reader regime fell to the prompt's
  example action (``go to countertop 1``, which the self-teacher scores above its student wherever
  it is sampled: results/teacher_probe/, results/alfworld_panel_actions/). Its prompts end without
  an example answer, as the released template's do; its own warm start (the reader recipe on those
  prompts), and SDAR's seed trains before GRPO's (``lead``).

1. **Warm start with headroom, shared by every run**: the scripted expert plays ``--demo-episodes``
   episodes of ANOTHER generated game set (``DEMO_OPTIONS``: offline seed 1), its turns (and in the
   ``reader`` regime their sibling-reading twins) are the demonstrations of ``sdar sft`` (2 epochs,
   lr 1e-4). So the warm start learned the format and a
   little of the task from few demonstrations, and RL plays games it never imitated (offline
   seed 0). Its validation on the panel (``start_eval.json``) is every run's iteration 0.
2. **Search** (the regime's list): GRPO seed 0 at each setting listed. The grid
   takes the setting whose training success, averaged over the last third of the iterations, is
   highest (ties: the first listed); the validation panel plays no part in the choice. The
   choice is written to ``choice.json`` in ``--out`` once and kept (delete it to choose again);
   ``--setting NAME`` imposes a setting for this call instead (not recorded as the choice) and
   trains only that setting's search run (with ``--search-only``: nothing else).
3. **Runs at the chosen setting** (the regime's ``arms``): GRPO seeds 1 and 2 (seed 0 is the search
   run) and, in the short, reader and plain regimes, SDAR with the teacher reading a successful sibling
   trajectory inside the user turn at lambda 1 (the only weight that learned on every seed of the
   gate study), seeds 0, 1, 2. The long regime has no SDAR arm: ``sdar teacher-check`` found its
   warm start not reading that context (benchmarks/results/teacher_check/). A search of one
   setting chooses it at once, and its run and the arms train together, seed by seed (each seed:
   the regime's ``lead`` arm if it has one, the search run, the other arms), with the regime's
   ``controls`` (each control's first seed after the arms' first, its later seeds after all of the
   arms'; runs begun in ``--runs-dir`` come first, so a restarted grid finishes them before it
   starts new ones): in the reader regime the
   SDAR arm with its gate held at 0.5 (``grpo_opsd`` at lambda 1, :data:`GATE_HALF_ARM`), which
   tells a teacher that reads nothing from the distillation term's noise alone, and the SDAR arm
   that leaves the step samples of groups without a winner out of the term
   (``teacher.no_winner: skip``, :data:`SKIP_ARM`).
4. **Final passes**: each finished run's last checkpoint and the warm start play the panel
   :data:`PASSES` times (``sdar eval --passes``; ``final_eval.json`` in the run folder with every
   step in ``final_episodes.jsonl``, ``start_eval_passes.json``), in the lane that trained the run (the warm start: the first free
   lane). Their difference is the second measure of the gain, beside the last validation's.
5. **Aggregate** into ``--out``: ``summary.json`` / ``summary.md`` (validation success before RL and
   at every validation, the gain per seed by both measures, mean +- std, whether the target holds:
   every seed +15 points or more and a mean gain above twice its standard deviation; the signal per run:
   groups with advantage spread, clip fraction, KL to the warm start, entropy, optimizer steps per
   iteration), ``curves.png`` and each run's record under ``runs/`` (``RECORD_FILES``).

Stopped cleanly by Ctrl-C or SIGTERM (``_results.run_lanes``: each running run saves a checkpoint,
no new run starts). Resumable like the gate study (``gate_study.train_one``): finished runs are skipped, interrupted
ones resumed from their last checkpoint; on another machine the warm start is remade and compared
with the committed one (weights digest) before the committed runs count, and its committed passes
are kept. An unfinished run whose checkpoints stayed on another machine starts again from scratch;
its committed partial record stays in the tables until the restart holds more iterations, the two
are compared iteration by iteration (every logged value but timings; the table says whether the
restart is identical so far or from which iteration it differs), and a committed record that the
restart did not reproduce is moved to ``runs/<run>/earlier/`` before the restart's replaces it,
also where the restart finished before the tables were drawn again.

    python benchmarks/alfworld_headroom.py --jobs 2          # the short regime (many hours on 2 CPU cores)
    python benchmarks/alfworld_headroom.py --regime long --jobs 2  # the long regime
    python benchmarks/alfworld_headroom.py --regime reader --jobs 2  # the long regime, a context-reading warm start
    python benchmarks/alfworld_headroom.py --regime plain --jobs 2   # the reader regime, no example action in prompts
    python benchmarks/alfworld_headroom.py --aggregate-only  # tables now (runs still training: curves so far;
                                                             # no warm start here: the committed records alone)
    python benchmarks/alfworld_headroom.py --regime reader --status  # where the grid stands (reads only)
    python benchmarks/alfworld_headroom.py --smoke           # tiny random model, plumbing only
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from _results import check_not_in_use, lane_threads, run_lanes
from gate_study import (
    RECORD_FILES,
    _commit,
    check_same_start,
    finished_run,
    keep_run_record,
    mean_std,
    read_metrics,
    repo_relative,
    resumable_after,
    run,
    run_machines,
    sdar,
    tagged_action,
    train_one,
    weights_sha256,
    without_new_metrics,
)

SEEDS = (0, 1, 2)
# where the demonstrations come from: another generated game set than the one RL and validation use
DEMO_OPTIONS = ["env.options.offline_seed=1", "env.options.offline_games=40"]
# (setting name, overrides) of the first regime's search, GRPO seed 0 each
SEARCH_SHORT: list[tuple[str, list[str]]] = [
    ("lr1e-4-kl0.01", ["optim.lr=1e-4", "loss.c_kl=0.01"]),
    ("lr3e-4-kl0.01", ["optim.lr=3e-4", "loss.c_kl=0.01"]),
    # added after both runs above had validated once (iteration 10): their training advantages came
    # mostly from the invalid-action penalty (few wins, many invalid steps), validation fell, and at
    # lr 3e-4 the entropy collapsed. Here only wins make returns differ, and no entropy bonus or KL
    # term moves the policy in iterations without a win (with them it drifted: results/archive/
    # alfworld_headroom_entropy_drift/)
    ("lr1e-4-nopenalty-noreg", ["optim.lr=1e-4", "loss.c_kl=0.0", "loss.c_ent=0.0",
                                "env.invalid_action_penalty=0.0"]),
]
# the second regime's search: its config already turns off the penalty and the entropy bonus (what the
# first regime's runs showed); no KL term either (it only held the policy near a warm start that
# rarely wins). lr 1e-4 (3e-4 collapsed the entropy in the short regime), with and without dynamic
# sampling (rollout.filter_groups: only groups with a win and a loss are trained on, up to 4 batches
# of 2 tasks x 8 per iteration). The second setting replaced lr 3e-4 after 7 iterations, 5 of them
# without a single win (results/archive/alfworld_headroom_long_lr3e-4/)
SEARCH_LONG: list[tuple[str, list[str]]] = [
    ("lr1e-4", ["optim.lr=1e-4", "loss.c_kl=0.0"]),
    ("lr1e-4-dynamic", ["optim.lr=1e-4", "loss.c_kl=0.0", "rollout.filter_groups=true",
                        "rollout.max_rollout_batches=4"]),
]


# the reader regime trains at the long regime's first setting (lr 1e-4, no KL, no dynamic sampling,
# about 5 min per iteration against 8 with it), chosen before the long regime's search had finished
SEARCH_READER: list[tuple[str, list[str]]] = SEARCH_LONG[:1]


# (arm, overrides, seeds) trained at the chosen setting; GRPO's seed 0 is the search run
Arm = tuple[str, list[str], tuple[int, ...]]
GRPO_ARM: Arm = ("grpo", ["method=grpo"], (1, 2))
SDAR_ARM: Arm = ("sdar-sibling-l1", ["method=sdar", "loss.sdar_lambda=1.0"], SEEDS)
# the SDAR arm with its gate held at 0.5 (the released GRPO+OPSD, beta 0) at the same weight: the term's
# expected gradient is then zero on the policy's own samples, whatever the teacher says
# (docs/algorithm.md, "When the teacher adds nothing"); it tells a teacher that reads nothing from the
# term's noise alone, added after both reader-regime SDAR seeds fell where GRPO's rose
GATE_HALF_ARM: Arm = ("grpo_opsd-sibling-l1", ["method=grpo_opsd", "loss.sdar_lambda=1.0"], SEEDS)
# the SDAR arm without the step samples of groups that no copy won (gate 0 there, as SDPO masks them):
# those are scored on their own prompt, so the term is pure noise on them (teacher.no_winner)
SKIP_ARM: Arm = ("sdar-sibling-skip-l1", ["method=sdar", "loss.sdar_lambda=1.0", "teacher.no_winner=skip"], SEEDS)
# The controls first trained after all six runs of the comparison. Once SDAR had fallen on all three
# finished seeds over two warm starts (results/alfworld_pool/) while GRPO rose, the controls' seed 0
# said more per CPU-hour than the comparison's seed 2, so their seed 0 trains with the arms' seed 0;
# their later seeds train after the comparison's seed 2, so that the comparison reaches three seeds first


@dataclass(frozen=True)
class Regime:
    """One setting of the benchmark: its name (``--regime``), its config, its search, the folder name of
    its runs and tables (default: the config's file name), whether its warm start also imitates the
    sibling-reading twins of its demonstrations, the arms trained at the search's choice, the
    controls (arms that check a finding of ``arms``: seed 0 after the arms' seed 0, later seeds after all
    of the arms', :func:`queue`;
    and tabulated the same way), config overrides of all its commands, and the arm it trains first."""

    name: str
    config: Path
    search: list[tuple[str, list[str]]]
    folder: str | None = None
    sibling_twins: bool = False
    arms: tuple[Arm, ...] = (GRPO_ARM, SDAR_ARM)
    controls: tuple[Arm, ...] = ()
    overrides: tuple[str, ...] = ()
    """config overrides of every command of the regime, its warm start's included"""
    lead: str | None = None
    """the arm whose run trains first within each seed (:func:`queue`), before the search run where
    the search (of one setting, without ``--setting``) trains with the arms"""

    def __post_init__(self):
        if self.lead is not None and self.lead not in [arm for arm, _, _ in self.all_arms()]:
            raise ValueError(f"regime {self.name}: lead {self.lead!r} is none of its arms")

    def all_arms(self) -> tuple[Arm, ...]:
        return self.arms + self.controls

    def settings(self) -> list[str]:
        return [name for name, _ in self.search]

    def folder_name(self) -> str:
        return self.folder or self.config.stem


REGIMES = {regime.name: regime for regime in (
    # 6 steps, 4 tasks x group 4, invalid-action penalty 0.1 (results/alfworld_headroom/)
    Regime("short", ROOT / "configs" / "bench" / "alfworld_headroom.yaml", SEARCH_SHORT),
    # 10 steps, 2 tasks x group 8, only wins count (results/alfworld_headroom_long/)
    # no SDAR arm: its warm start does not read the sibling context (benchmarks/results/teacher_check/)
    Regime("long", ROOT / "configs" / "bench" / "alfworld_headroom_long.yaml", SEARCH_LONG, arms=(GRPO_ARM,)),
    # the long regime with a warm start that reads a successful sibling's actions (results/alfworld_headroom_reader/)
    Regime("reader", ROOT / "configs" / "bench" / "alfworld_headroom_long.yaml", SEARCH_READER,
           folder="alfworld_headroom_reader", sibling_twins=True, controls=(GATE_HALF_ARM, SKIP_ARM)),
    # the reader regime with prompts that name no example action, as the released template
    # (results/alfworld_headroom_plain/); SDAR first: the question is whether it still falls
    Regime("plain", ROOT / "configs" / "bench" / "alfworld_headroom_long.yaml", SEARCH_READER,
           folder="alfworld_headroom_plain", sibling_twins=True, overrides=("env.options.answer_example=false",),
           lead=SDAR_ARM[0]),
)}
TARGET_GAIN = 0.15
# the final figure of each run and of the warm start: the panel played PASSES times (`sdar eval --passes`,
# pass 1 samples as training's validation did). One pass of 48 games spreads by about 6 points at 20%
# success, and one run's validation swung from 2.1% to 31.2% within two iterations
# (results/alfworld_headroom_long/probe_temperature/); decided before any arm of the reader regime finished
PASSES = 3
SIGNAL_KEYS = ("train/success", "train/groups_with_signal", "actor/pg_clipfrac", "actor/kl", "actor/ppo_kl",
               "actor/entropy",
               "actor/optimizer_steps", "train/invalid_action_rate", "teacher/gate_pos_adv", "teacher/gate_neg_adv",
               "train/rollout_batches")
SMOKE = ["model={name: tiny-random, lora: null, autocast: none}", "iterations=2", "rollout.tasks_per_iteration=2",
         "rollout.group_size=2", "eval.every=1", "eval.num_tasks=2",
         "rollout.generation={max_new_tokens: 8, temperature: 1.0}", "env.options.offline_games=10"]
SMOKE_DEMO = ["env.options.offline_games=6"]


def sibling_reading_twins(rows: list[dict]) -> list[dict]:
    """For every expert turn, its twin whose user message opens with the teacher's ``sibling`` context
    in the ``user`` layout (``[Privileged Skill Information]``, the actions of a successful attempt, a
    blank line), naming the actions of the turn's own episode (the expert wins every one). Imitating
    them teaches the model to follow a successful attempt placed in front of the task, which the
    SDAR arm's teacher (the same model) must do to be of use."""
    from sdar.rollout.prompts import SKILL_HEADER
    from sdar.trainer.teacher import sibling_text

    episodes: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        episodes[r["task_id"]].append(r)
    twins = []
    for turns in episodes.values():
        turns = sorted(turns, key=lambda r: r["step"])
        if [r["step"] for r in turns] != list(range(len(turns))):
            raise ValueError(f"demonstrations of {turns[0]['task_id']}: steps {[r['step'] for r in turns]} "
                             "are not one episode's 0, 1, ...")
        context = SKILL_HEADER + sibling_text([tagged_action(r["response"]) for r in turns]) + "\n\n"
        twins += [{**r, "prompt": context + r["prompt"], "sibling_twin": True} for r in turns]
    return twins


def warm_start(runs_dir: Path, config_path: Path, overrides: list[str], episodes: int,
               sibling_twins: bool = False) -> tuple[Path, dict]:
    """The shared warm start (expert demonstrations of the other game set, with ``sibling_twins`` also
    their :func:`sibling_reading_twins`; ``sdar sft``) and its validation on the panel
    (``start_eval.json``); made once, reused."""
    from learning import write_demonstrations

    from sdar.trainer.checkpoint import list_checkpoints
    from sdar.trainer.config import load_config

    sft_dir = runs_dir / "warm"
    start_path = runs_dir / "start_eval.json"
    made_path = runs_dir / "warm_start.json"  # how the warm start here was made (not how this call asks)
    demo_options = [*DEMO_OPTIONS, *(SMOKE_DEMO if set(SMOKE) <= set(overrides) else [])]
    if not list_checkpoints(sft_dir):  # none yet, or an `sdar sft` stopped before its checkpoint was complete
        check_not_in_use(sft_dir, SystemExit)  # an earlier grid's `sdar sft`, still going
        start_path.unlink(missing_ok=True)  # it validated another warm start
        made_path.unlink(missing_ok=True)  # it described another warm start
        demos = runs_dir / "demos.jsonl"
        demo_config = load_config(config_path, [*overrides, *demo_options])
        summary = write_demonstrations("alfworld", demo_config, "expert", episodes, demos)
        print(f"warm start: {summary['episodes']} expert episodes (success {summary['success']:.2f}) of the "
              f"demonstration games", flush=True)
        if sibling_twins:
            rows = [json.loads(line) for line in demos.read_text(encoding="utf-8").splitlines() if line.strip()]
            rows += sibling_reading_twins(rows)
            demos.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        if sft_dir.exists():
            shutil.rmtree(sft_dir)
        run(sdar("sft", "--config", str(config_path), *overrides, "--demos", str(demos), "--output-dir", str(sft_dir),
                 "--epochs", "2", "--lr", "1e-4"), runs_dir / "warm.log")
    if not made_path.is_file():  # just made, or made before this record was kept (this call's recipe then)
        made = {"demo_options": demo_options, "demo_episodes": episodes}
        if sibling_twins:  # (not written for the earlier regimes' warm starts: their records stay as made)
            made["sibling_reading_twins"] = True
        made_path.write_text(json.dumps(made) + "\n", encoding="utf-8")
    if not start_path.is_file():
        run(sdar("eval", "--config", str(config_path), *overrides, f"init_checkpoint={sft_dir}", "--output",
                 str(start_path)), runs_dir / "warm.log")
    config = load_config(config_path, overrides)
    start = json.loads(start_path.read_text(encoding="utf-8"))
    start.update(env_name=config.env.name, env_options=config.env.options,
                 **json.loads(made_path.read_text(encoding="utf-8")), warm_start_sha256=weights_sha256(sft_dir))
    return sft_dir, start


def passes_eval(target: list[str], path: Path, log: Path, episodes: Path | None = None) -> dict:
    """``sdar eval TARGET --passes PASSES`` written to ``path``, made once and then read; with
    ``episodes``, every step of every pass written there too (``--episodes``)."""
    if not path.is_file():
        steps = ["--episodes", str(episodes)] if episodes is not None else []
        run(sdar("eval", *target, "--passes", str(PASSES), "--output", str(path), *steps), log)
    return json.loads(path.read_text(encoding="utf-8"))


def final_eval(run_dir: Path, log: Path) -> dict | None:
    """The finished run's last checkpoint on the panel, :data:`PASSES` times (``final_eval.json`` in the
    run folder, every step in ``final_episodes.jsonl`` beside it: ``benchmarks/panel_actions.py``
    reads pass 1 there instead of playing it again); ``None`` for a committed record whose
    checkpoints stayed on another machine."""
    from sdar.trainer.checkpoint import latest_checkpoint

    path = run_dir / "final_eval.json"
    if not path.is_file() and latest_checkpoint(run_dir) is None:
        return None
    return passes_eval([str(run_dir)], path, log, episodes=run_dir / "final_episodes.jsonl")


def start_passes_eval(runs_dir: Path, config_path: Path, overrides: list[str], sft_dir: Path) -> dict:
    """The warm start on the panel, :data:`PASSES` times (``start_eval_passes.json``)."""
    return passes_eval(["--config", str(config_path), *overrides, f"init_checkpoint={sft_dir}"],
                       runs_dir / "start_eval_passes.json", runs_dir / "warm.log")


def passes_record(result: dict | None) -> dict | None:
    """What the tables keep of a :func:`passes_eval` result: the mean success and each pass's."""
    return None if result is None else {"success": result["success"], "per_pass": result["success_per_pass"]}


def choose(runs: dict[str, list[dict]], iterations: int, search: list[tuple[str, list[str]]]) -> dict:
    """The search's choice: highest mean training success over the last third of the iterations."""
    scores = {}
    for name, metrics in runs.items():
        tail = [m["train/success"] for m in metrics
                if "train/success" in m and m["iteration"] > iterations - max(1, iterations // 3)]
        scores[name] = statistics.fmean(tail) if tail else float("-inf")
    listed = [name for name, _ in search]
    best = max(scores, key=lambda n: (scores[n], -listed.index(n)))
    return {"setting": best, "overrides": dict(search)[best], "train_success_last_third": scores,
            "rule": "highest mean train/success over the last third of the iterations (ties: first listed)"}


def queue(regime: Regime, search_runs: list[tuple[str, list[str], int]], choice: dict,
          runs_dir: Path | None = None) -> list[tuple[str, list[str], int]]:
    """The runs to train at the search's ``choice``, in order, each as (name, overrides, seed):
    ``search_runs`` and the arms seed by seed (every arm grows evenly; within a seed the regime's
    ``lead`` arm, the search run, then the other arms), each control's first seed right after the
    arms' first seed, and the controls' later seeds after all of the arms' (the comparison's seeds
    come before a control's repeats). With
    ``runs_dir``, runs begun there (resumable:
    :func:`gate_study.resumable_after`) come first, in that order: a restarted grid finishes what
    it started before it starts anything new."""
    def items(arms: tuple[Arm, ...]) -> list[tuple[str, list[str], int]]:
        return [(f"{arm}-{choice['setting']}", [*ro, *choice["overrides"]], seed)
                for arm, ro, seeds in arms for seed in seeds]

    def begun(item: tuple[str, list[str], int]) -> bool:
        return runs_dir is not None and resumable_after(runs_dir / f"{item[0]}-seed{item[2]}") is not None

    def led(item: tuple[str, list[str], int]) -> bool:
        return regime.lead is not None and item[0] == f"{regime.lead}-{choice['setting']}"

    first_seed = {f"{arm}-{choice['setting']}": min(seeds) for arm, _, seeds in regime.controls}

    def repeat(item: tuple[str, list[str], int]) -> bool:  # a control's later seed
        return item[0] in first_seed and item[2] > first_seed[item[0]]

    by_seed = sorted([*search_runs, *items(regime.all_arms())],
                     key=lambda item: (repeat(item), item[2], not led(item)))
    return sorted(by_seed, key=lambda item: not begun(item))


def grid_runs(regime: Regime, choice: dict | None, runs_dir: Path | None = None) -> list[tuple[str, int]]:
    """Every run of the regime's grid as (name, seed), in the order the grid trains them: the search,
    then (once chosen) the arms and the controls at the choice (with ``runs_dir``: as :func:`queue`
    orders them there)."""
    search_runs = [(f"grpo-{s}", [], 0) for s, _ in regime.search]
    if choice is None:
        runs = search_runs
    elif len(regime.search) == 1:  # a search of one setting: its run and the arms together
        runs = queue(regime, search_runs, choice, runs_dir)
    else:
        runs = [*search_runs, *queue(regime, [], choice, runs_dir)]
    return [(name, seed) for name, _, seed in runs]


def grid_names(regime: Regime) -> list[str]:
    """Every run the regime's grid can train, named as its run folder (``<name>-seed<seed>``):
    :func:`grid_runs` at each setting of the search as if it were the choice, in that order."""
    names = [f"{name}-seed{seed}" for setting, overrides in regime.search
             for name, seed in grid_runs(regime, {"setting": setting, "overrides": overrides})]
    return list(dict.fromkeys(names))


def status_lines(regime: Regime, runs_dir: Path, out: Path, iterations: int) -> list[str]:
    """Where the grid stands, from what is on disk (run folders here, records committed in ``out``);
    writes nothing. The warm start's validation, then one line per run in training order: finished
    (here or committed), training (with the pid that holds its folder), stopped after an iteration
    (where the grid resumes it), or not started here; a committed record of an earlier start that
    holds more iterations is named beside it. With the validations so far of the record shown and,
    once played, its final passes."""
    from sdar.trainer.run_dir import lock_holder

    choice_path = out / "choice.json"
    choice = json.loads(choice_path.read_text(encoding="utf-8")) if choice_path.is_file() else None
    start = runs_dir / "start_eval.json"
    committed = out / "summary.json"
    before = (json.loads(start.read_text(encoding="utf-8"))["success"] if start.is_file() else
              json.loads(committed.read_text(encoding="utf-8"))["before_rl"]["success"] if committed.is_file() else None)
    start_passes = runs_dir / "start_eval_passes.json"
    passes = (f"; {PASSES} passes {_pct(json.loads(start_passes.read_text(encoding='utf-8'))['success'])}"
              if start_passes.is_file() else "")
    making = lock_holder(runs_dir / "warm")
    lines = [f"warm start: being made (pid {making})" if making is not None else
             f"warm start: {_pct(before)}% of the panel{passes}" if before is not None else "warm start: not made yet"]
    for name, seed in grid_runs(regime, choice, runs_dir):
        run = f"{name}-seed{seed}"
        here, kept = runs_dir / run, out / "runs" / run
        metrics_here, metrics_kept = read_metrics(here), read_metrics(kept)
        done_here, done_kept = trained_iterations(metrics_here), trained_iterations(metrics_kept)
        holder = lock_holder(here)
        if holder is None and max(done_here, done_kept) >= iterations:
            record, metrics = (here, metrics_here) if done_here >= iterations else (kept, metrics_kept)
            state = f"finished, {iterations} of {iterations}"
        else:
            record, metrics = (here, metrics_here) if done_here else (kept, metrics_kept)
            state = (f"training (pid {holder}), {done_here} of {iterations}" if holder is not None
                     else f"stopped after iteration {done_here} of {iterations}" if done_here else "not started here")
            if done_kept > done_here:  # its checkpoints stayed on another machine: this grid trains it anew
                state += f"; committed record of an earlier start: {done_kept} of {iterations}"
        vals = " / ".join(f"{m['iteration']}: {_pct(m['val/success'])}" for m in metrics
                          if "val/success" in m and m["iteration"] >= 1)
        final = record / "final_eval.json"
        passes = (f"; {PASSES} passes {_pct(json.loads(final.read_text(encoding='utf-8'))['success'])}"
                  if final.is_file() else "")
        lines.append(f"{run}: {state}" + (f"; validation (%) {vals}" if vals else "") + passes)
    return lines


def run_name(arm: str, setting: str, seed: int) -> str:
    return f"{arm}-{setting}-seed{seed}"


def val_curve(metrics: list[dict], start: float) -> dict[int, float]:
    curve = {0: start}
    curve.update({m["iteration"]: m["val/success"] for m in metrics if "val/success" in m})
    return curve


def aggregate(runs_dir: Path, out: Path, regime: Regime, start: dict, iterations: int, choice: dict | None,
              state: str) -> dict:
    from _results import machine_info

    out.mkdir(parents=True, exist_ok=True)
    planned = [("grpo", s, 0) for s in regime.settings()]
    if choice is not None:
        planned += [(arm, choice["setting"], seed) for arm, _, seeds in regime.all_arms() for seed in seeds]
    runs, commits, machines = [], {}, {}
    for arm, setting, seed in planned:
        name = run_name(arm, setting, seed)
        where = finished_run(name.rsplit("-seed", 1)[0], seed, runs_dir, out, iterations)
        done = where is not None
        earlier = None
        if not done:  # a run still training: its curve so far, marked as such, no gain
            where, earlier = partial_record(runs_dir / name, out / "runs" / name)
            if where is None:
                continue
        elif where == runs_dir / name:  # finished here: a committed record of another start is compared too
            earlier = partial_record(where, out / "runs" / name)[1]
        metrics = read_metrics(where)
        train = [m for m in metrics if m.get("iteration", 0) >= 1]
        curve = val_curve(metrics, start["success"])
        final = passes_record(json.loads((where / "final_eval.json").read_text(encoding="utf-8"))
                              if done and (where / "final_eval.json").is_file() else None)
        start_final = start.get("passes")
        runs.append({"run": name, "arm": arm, "setting": setting, "seed": seed, "finished": done,
                     "iterations_done": max((m["iteration"] for m in train), default=0),
                     "validation_curve": curve, "gain": curve[iterations] - start["success"] if done else None,
                     "final_passes": final, "earlier_record": earlier,
                     "gain_passes": (final["success"] - start_final["success"]
                                     if final is not None and start_final is not None else None),
                     "train_success_curve": {m["iteration"]: m["train/success"] for m in train if "train/success" in m},
                     "signals": {k: statistics.fmean(v) if (v := [m[k] for m in train if k in m]) else None
                                 for k in SIGNAL_KEYS}})
        if earlier is not None and earlier["first_difference"] is not None and where == runs_dir / name:
            keep_earlier_record(out / "runs" / name)  # the restart passed a record it did not reproduce
        commits[name] = keep_run_record(where, out / "runs" / name)
        machines[name] = run_machines(where)
        if (where / "final_eval.json").is_file() and where != out / "runs" / name:
            (out / "runs" / name / "final_eval.json").write_text(
                repo_relative((where / "final_eval.json").read_text(encoding="utf-8")), encoding="utf-8")
    arms = []
    if choice is not None:
        for arm, _, _ in regime.all_arms():
            mine = [r for r in runs if r["arm"] == arm and r["setting"] == choice["setting"] and r["finished"]]
            gains = [r["gain"] for r in mine]
            gains_passes = [r["gain_passes"] for r in mine if r["gain_passes"] is not None]
            arms.append({"arm": arm, "setting": choice["setting"], "gains": gains, "gain": mean_std(gains),
                         "target_met": target_met(gains), "gains_passes": gains_passes,
                         "gain_passes": mean_std(gains_passes), "target_met_passes": target_met(gains_passes)})
    summary = {"state": state, "before_rl": start, "iterations": iterations, "regime": regime.name,
               "config": str(regime.config.relative_to(ROOT)), "config_overrides": list(regime.overrides),
               "search": [{"setting": s, "overrides": o} for s, o in regime.search], "choice": choice,
               "target": f"every seed +{100 * TARGET_GAIN:.0f} points or more on the panel, mean gain > 2 std",
               "passes": PASSES,
               "runs": runs, "arms": arms, "run_commits": commits, "run_machines": machines,
               "machine": machine_info(), "commit": _commit(),
               "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    (out / "summary.json").write_text(repo_relative(json.dumps(summary, indent=1)) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    plot(runs, out / "curves.png")
    return summary


def trained_iterations(metrics: list[dict]) -> int:
    return max((m["iteration"] for m in metrics if m.get("iteration", 0) >= 1), default=0)


def same_iterations(earlier: list[dict], here: list[dict]) -> tuple[int, int | None]:
    """Compare a run's record with a later record of the same run (a restart from scratch): how many
    training iterations both hold, and the first of them where any logged value other than a timing
    differs (None: identical throughout). A metric that ``earlier`` never logs is one the trainer
    began logging between the two starts and is left out (some are logged only at iterations that
    have their tokens, e.g. ``teacher/disagree_pos_adv``); a metric that ``earlier`` logs at an
    iteration where ``here`` does not, or the reverse, is a difference."""
    def by_iteration(metrics: list[dict]) -> dict[int, dict]:
        return {m["iteration"]: {k: v for k, v in m.items() if k != "time" and not k.startswith("timing/")}
                for m in metrics if m.get("iteration", 0) >= 1}

    a, b = by_iteration(earlier), by_iteration(here)
    both = sorted(set(a) & set(b))
    logged_before = set().union(*a.values())
    return len(both), next((it for it in both if a[it] != without_new_metrics(b[it], logged_before)), None)


def first_logged(metrics: list[dict]) -> float | None:
    """When a run logged its first training iteration (wall clock): which start of a run a record is."""
    return next((m.get("time") for m in metrics if m.get("iteration", 0) >= 1), None)


def partial_record(here: Path, committed: Path) -> tuple[Path | None, dict | None]:
    """The record to show for an unfinished run: its run folder here, or its committed record when
    that holds more training iterations (the run stopped on another machine whose checkpoints are
    gone, and this machine restarted it from scratch: a shorter restart never hides the longer
    record). With records of two starts (their first iterations logged at different times), also how
    they compare (:func:`same_iterations`); :func:`aggregate` asks for that comparison of a run that
    finished here as well. ``(None, None)``: no record."""
    mine, theirs = read_metrics(here), read_metrics(committed)
    if not theirs or here.resolve() == committed.resolve():
        return (here if mine else None), None
    if not mine:
        return committed, None
    if first_logged(mine) == first_logged(theirs):  # one run: the committed record is a copy of this one's start
        return (committed if trained_iterations(theirs) > trained_iterations(mine) else here), None
    compared, first_difference = same_iterations(theirs, mine)
    comparison = {"iterations": trained_iterations(theirs), "iterations_here": trained_iterations(mine),
                  "compared": compared, "first_difference": first_difference}
    return (committed if comparison["iterations"] > comparison["iterations_here"] else here), comparison


def keep_earlier_record(record: Path) -> None:
    """Move a committed partial record into ``record/earlier/`` (once) before a restart of its run that
    did not reproduce it replaces it, so that what the earlier machine trained is not lost."""
    earlier = record / "earlier"
    if earlier.is_dir():
        return
    earlier.mkdir()
    for f in RECORD_FILES:
        if (record / f).is_file():
            (record / f).rename(earlier / f)


def target_met(gains: list[float]) -> bool:
    """Every seed at least :data:`TARGET_GAIN` and the mean gain above twice its standard deviation."""
    stats = mean_std(gains)
    return len(gains) == len(SEEDS) and min(gains) >= TARGET_GAIN and stats["mean"] > 2 * stats["std"]


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.3g}"


def _passes(record: dict | None) -> str:
    """A :func:`passes_record` as ``mean (pass 1 / pass 2 / ...)`` in %."""
    if record is None:
        return "-"
    return f"{_pct(record['success'])} ({' / '.join(_pct(v) for v in record['per_pass'])})"


def summary_markdown(summary: dict) -> str:
    start = summary["before_rl"]
    choice = summary["choice"]
    if choice is None:
        chose = "not made yet (search runs unfinished)"
    else:
        scores = ", ".join(f"{k} {_pct(v)}%" for k, v in choice["train_success_last_third"].items())
        chose = f"`{choice['setting']}` ({choice['rule']}{': ' + scores if scores else ''})"
    passes = summary.get("passes", PASSES)
    lines = [f"State: {summary['state']}", "",
             (f"Validation success in % on the panel of {start['num_tasks']} games; before RL (the shared warm "
              f"start): {_pct(start['success'])}; over {passes} passes: "
              f"{_passes(start['passes']) if start.get('passes') else 'not played yet'}. "
              f"Target: {summary['target']}."),
             f"Search choice: {chose}", "",
             *([f"Config: `{summary['config']}` with {', '.join(f'`{o}`' for o in summary['config_overrides'])}", ""]
               if summary.get("config_overrides") else []),
             ("| run | validation curve (iteration: %) | gain (points) | final, " + str(passes) + " passes (each) "
              "| gain, " + str(passes) + " passes | train success | groups with signal "
              "| clip fraction | KL to warm start | PPO KL | entropy | optimizer steps / iteration | invalid actions "
              "| gate + / - | rollout batches / iteration |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary["runs"]:
        s = r["signals"]
        curve = " / ".join(f"{it}: {_pct(v)}" for it, v in sorted(r["validation_curve"].items(), key=lambda x: int(x[0])))
        gate = ("-" if s["teacher/gate_pos_adv"] is None
                else f"{s['teacher/gate_pos_adv']:.2f} / {s['teacher/gate_neg_adv']:.2f}")
        run = r["run"] if r["finished"] else f"{r['run']} (training: {r['iterations_done']} of {summary['iterations']}"
        if r.get("earlier_record"):
            e = r["earlier_record"]
            same = ("identical so far" if e["first_difference"] is None
                    else f"differs from iteration {e['first_difference']}")
            if r["finished"]:
                run += f" (an earlier record of {e['iterations']}: {same})"
            else:
                run += (f"; restarted here from scratch: {e['iterations_here']} of {summary['iterations']}, {same}"
                        if e["iterations"] > e["iterations_here"] else f"; an earlier record of {e['iterations']}: {same}")
        run += "" if r["finished"] else ")"
        gain = "-" if r["gain"] is None else f"{100 * r['gain']:+.1f}"
        gain_passes = "-" if r.get("gain_passes") is None else f"{100 * r['gain_passes']:+.1f}"
        lines.append(f"| {run} | {curve} | {gain} | {_passes(r.get('final_passes'))} | {gain_passes} | "
                     f"{_pct(s['train/success'])} | "
                     f"{_num(s['train/groups_with_signal'])} | {_num(s['actor/pg_clipfrac'])} | {_num(s['actor/kl'])} | "
                     f"{_num(s['actor/ppo_kl'])} | "
                     f"{_num(s['actor/entropy'])} | {_num(s['actor/optimizer_steps'])} | "
                     f"{_num(s['train/invalid_action_rate'])} | {gate} | {_num(s['train/rollout_batches'])} |")
    if summary["arms"]:
        lines += ["", ("| arm | setting | measure | seeds | gain per seed (points) | mean +- std | target met |"),
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for a in summary["arms"]:
            measures = [("last validation", a["gains"], a["gain"], a["target_met"])]
            if "gains_passes" in a:
                measures.append((f"final, {passes} passes", a["gains_passes"], a["gain_passes"],
                                 a["target_met_passes"]))
            for measure, gains, g, met in measures:
                per_seed = " / ".join(f"{100 * v:+.1f}" for v in gains) or "-"
                mean = ("-" if g["mean"] is None else f"{100 * g['mean']:+.1f} (one seed)" if g["n"] == 1
                        else f"{100 * g['mean']:+.1f} +- {100 * g['std']:.1f}")
                lines.append(f"| {a['arm']} | {a['setting']} | {measure} | {g['n']} of {len(SEEDS)} | {per_seed} | "
                             f"{mean} | {'yes' if met else 'no'} |")
    lines += ["", (f"Final, {passes} passes: the run's last checkpoint plays the panel {passes} times (`sdar eval "
                   f"--passes {passes}`; pass 1 samples as the run's last validation did), the mean and each pass; "
                   f"gain, {passes} passes: that mean minus the warm start's, measured the same way. "
                   "Signals are means over the training iterations: groups with signal = share of GRPO groups "
                   "whose returns differ; KL to warm start = the k3 estimate (logged only with a KL term); PPO KL = "
                   "the token mean of old minus new log-prob in the update (how far each optimizer step moves "
                   "the policy); gate + / - = SDAR's gate on "
                   "tokens with positive / negative advantage; rollout batches = batches of tasks x group played "
                   "per iteration with dynamic sampling (rollout.filter_groups; train success then counts "
                   "every episode played).")]
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not runs:
        return
    fig, (val, train) = plt.subplots(1, 2, figsize=(13, 4), sharey=True)
    for r in runs:
        its = sorted(r["validation_curve"], key=int)
        val.plot(its, [100 * r["validation_curve"][i] for i in its], marker="o", label=r["run"])
        its = sorted(r["train_success_curve"], key=int)
        values = [r["train_success_curve"][i] for i in its]
        window = 5  # 16 episodes per iteration: single iterations move in 6-point steps
        smooth = [100 * statistics.fmean(values[max(0, k - window + 1):k + 1]) for k in range(len(values))]
        train.plot(its, smooth, label=r["run"])
    val.set_title("validation panel")
    train.set_title("training success (mean of the last 5 iterations)")
    for ax in (val, train):
        ax.set_xlabel("iteration")
    val.set_ylabel("success (%)")
    val.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--regime", choices=sorted(REGIMES), default="short",
                        help="short: configs/bench/alfworld_headroom.yaml; long: alfworld_headroom_long.yaml; "
                             "reader: the long regime's config with a sibling-reading warm start; "
                             "plain: the reader regime with prompts that name no example action")
    parser.add_argument("--runs-dir", help="where runs and the warm start go (default: runs/<config name>)")
    parser.add_argument("--out", help="where the tables go (default: benchmarks/results/<config name>)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (one thread each on CPU)")
    parser.add_argument("--demo-episodes", type=int, default=32, help="expert episodes of the warm start")
    parser.add_argument("--setting", choices=sorted({s for r in REGIMES.values() for s in r.settings()}),
                        help="train this setting's search run, then the arms at it, instead of waiting for the "
                             "search's choice (not recorded as the choice)")
    parser.add_argument("--search-only", action="store_true", help="train the search runs only")
    parser.add_argument("--only", nargs="+", metavar="RUN",
                        help="train these runs only, named as --status names them (for example "
                             "grpo-lr1e-4-seed2); the tables always cover the whole grid")
    parser.add_argument("--aggregate-only", action="store_true",
                        help="train nothing: write the tables from the runs so far (unfinished runs: their iterations so far)")
    parser.add_argument("--status", action="store_true",
                        help="print where the grid stands (each run: finished, training, stopped or not started, "
                             "its validations so far) and exit; reads only, also while the grid runs")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 2 iterations (plumbing only)")
    args = parser.parse_args(argv)
    regime = REGIMES[args.regime]
    if args.setting and args.setting not in regime.settings():
        parser.error(f"--setting {args.setting} is not in the {args.regime} regime's search: {regime.settings()}")
    search = regime.search
    if args.only:
        known = grid_names(regime)
        unknown = [name for name in args.only if name not in known]
        if unknown:
            parser.error(f"--only: {', '.join(unknown)} not in the {args.regime} regime's grid: {', '.join(known)}")
    overrides = [*regime.overrides, *(SMOKE if args.smoke else [])]
    folder = regime.folder_name()
    runs_dir = ROOT / (args.runs_dir or f"runs/{folder}")
    out = ROOT / (args.out or (f"runs/{folder}_smoke_out" if args.smoke else f"benchmarks/results/{folder}"))
    from sdar.trainer.config import load_config

    iterations = load_config(regime.config, overrides).iterations
    if args.status:
        print("\n".join(status_lines(regime, runs_dir, out, iterations)), flush=True)
        return 0
    runs_dir.mkdir(parents=True, exist_ok=True)
    lane_threads()  # one thread per run unless OMP_NUM_THREADS says otherwise
    committed = out / "summary.json"
    has_runs = committed.is_file() and any((out / "runs").glob("*/metrics.jsonl"))
    committed_start = json.loads(committed.read_text(encoding="utf-8"))["before_rl"] if has_runs else None
    if args.aggregate_only and committed_start is not None and not (runs_dir / "warm" / "checkpoints").is_dir():
        # tables from the committed records alone: nothing is trained, so no warm start is remade here
        sft_dir, start = None, {k: v for k, v in committed_start.items() if k != "passes"}
    else:
        sft_dir, start = warm_start(runs_dir, regime.config, overrides, 2 if args.smoke else args.demo_episodes,
                                    regime.sibling_twins)
        if committed_start is not None:
            check_same_start(start, committed_start)
    print(f"warm start {sft_dir or 'of the committed runs'}: validation success {start['success']}", flush=True)
    # the warm start's passes, played on the machine of the committed runs (the same warm start: checked)
    committed_passes = committed_start.get("passes") if committed_start is not None else None
    failures: list[str] = []

    def train(items: list[tuple[str, list[str], int]], start_passes: bool = False) -> None:
        """Train each item, then play its final passes, in ``--jobs`` lanes; with ``start_passes``
        also the warm start's passes, in the first free lane."""
        def one(item):
            if item is None:  # the warm start's passes
                try:
                    result = start_passes_eval(runs_dir, regime.config, overrides, sft_dir)
                    print(f"warm start, {PASSES} passes: {result['success_per_pass']}", flush=True)
                except RuntimeError as err:
                    failures.append(f"warm start passes: {err}")
                return
            name, run_overrides, seed = item
            try:
                msg = train_one(name, run_overrides, seed, runs_dir, sft_dir, overrides, iterations, out,
                                regime.config)
                where = finished_run(name, seed, runs_dir, out, iterations)
                final = final_eval(where, runs_dir / "logs" / f"{name}-seed{seed}-final.log") if where else None
                if final is not None:
                    msg += f"; final, {PASSES} passes: {final['success_per_pass']}"
            except RuntimeError as err:
                failures.append(f"{name}-seed{seed}: {err}")
                msg = f"{name}-seed{seed}: FAILED"
            print(msg, flush=True)

        if args.only:
            items = [item for item in items if f"{item[0]}-seed{item[2]}" in args.only]
        run_lanes(one, [None, *items] if start_passes else items, args.jobs)

    # the search (with --setting: only that setting's run, which is also GRPO's seed 0 there)
    search_runs = [(f"grpo-{s}", ["method=grpo", *o], 0) for s, o in search if args.setting in (None, s)]
    choice_path = out / "choice.json"

    only = len(search) == 1 and not args.setting  # a search of one setting: chosen at once
    if only and not choice_path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        choice_path.write_text(json.dumps(
            {"setting": search[0][0], "overrides": search[0][1], "train_success_last_third": {},
             "rule": "the only setting of this regime's search"}, indent=1) + "\n", encoding="utf-8")
    play_start = committed_passes is None  # the warm start's passes: played once, wherever that was
    if not args.aggregate_only:
        if only and not args.search_only:  # the search run and the arms together, seed by seed
            choice = json.loads(choice_path.read_text(encoding="utf-8"))
            train(queue(regime, search_runs, choice, runs_dir), start_passes=play_start)
        else:
            train(search_runs, start_passes=play_start)
    search_done = {s: finished_run(f"grpo-{s}", 0, runs_dir, out, iterations) for s, _ in search}
    choice = json.loads(choice_path.read_text(encoding="utf-8")) if choice_path.is_file() else None
    if args.setting and (choice is None or choice["setting"] != args.setting):
        choice = {"setting": args.setting, "overrides": dict(search)[args.setting], "train_success_last_third": {},
                  "rule": "imposed with --setting"}
    elif choice is None and all(search_done.values()):
        choice = choose({s: read_metrics(w) for s, w in search_done.items()}, iterations, search)
    if choice is not None and not args.setting:  # the search's choice, made once, then kept
        out.mkdir(parents=True, exist_ok=True)
        choice_path.write_text(json.dumps(choice, indent=1) + "\n", encoding="utf-8")
    if choice is not None and not args.aggregate_only and not args.search_only and not only:
        train(queue(regime, [], choice, runs_dir))
    arm_runs = [] if choice is None else [(f"{arm}-{choice['setting']}", seed) for arm, _, seeds in regime.all_arms()
                                          for seed in seeds]
    searched = [s for s, _ in search if args.setting in (None, s)]
    total = len(searched) + sum(len(seeds) for _, _, seeds in regime.all_arms())
    done = sum(search_done[s] is not None for s in searched) + sum(
        finished_run(n, s, runs_dir, out, iterations) is not None for n, s in arm_runs)
    state = f"{done} of {total} runs finished" + (" (complete)" if done == total else " (partial: rerun to continue)")
    start_passes = runs_dir / "start_eval_passes.json"
    start["passes"] = passes_record(json.loads(start_passes.read_text(encoding="utf-8"))
                                    if start_passes.is_file() else None)
    if start["passes"] is None:  # played with the committed runs (the same warm start: checked above)
        start["passes"] = committed_passes
    summary = aggregate(runs_dir, out, regime, start, iterations, choice, state)
    print(f"{state}; tables in {out}", flush=True)
    for arm in summary["arms"]:
        print(f"{arm['arm']}: gains {arm['gains']}, target {'met' if arm['target_met'] else 'not met'}", flush=True)
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
