"""The gate study: does SDAR's gate keep the benefit of good hints and soften bad ones?

Controlled setting (``configs/bench/gate_study.yaml``): the ``toy_panels`` environment, where the
right word of every panel is the fruit, a wrong word ends the episode, and the reward (10) comes
only when all 3 panels are right, so a uniform guesser wins 1.6% of its episodes and GRPO sees few
groups with any signal. The teacher's privileged context is the environment's per-state hint
(``teacher.context: hint``, inside the user turn: ``teacher.layout: user``), which names the right
word: ``sdar teacher-check`` on this setting ranks the right word first at about 96% of the states
with the hint against 17% without. With ``hint_corruption`` p, a share p of the tasks get hints
that name a wrong word of the panel instead (0.5: half the tasks, 1.0: all of them).

1. **Warm start, shared by every run**: the ``random`` policy plays ``--demo-episodes`` training
   episodes; its turns (valid format, words chosen at random, so no knowledge of the rule) are
   demonstrations of ``sdar sft``, each with a twin whose prompt opens with a hint (the teacher's
   layout) naming the word that turn chose. So the warm start writes valid actions, guesses
   without a hint, and copies the hinted word with one; it never saw the rule. (A warm start on
   the plain turns alone made the 135M teacher nearly ignore the hint: ``sdar teacher-check``
   ranked the hinted word first at far fewer states, benchmarks/results/teacher_check/.)
   Its validation (``start_eval.json``, with the config and checkpoint it evaluated) is iteration 0.
2. **Runs** (``RUNS`` below), each for every seed: GRPO; SDAR at lambda 0.01 / 0.1 / 1; the
   released naive GRPO+OPSD (beta 0, whose gradient does not read the teacher, so it runs once per
   seed) at the released lambda 0.01 and at lambda 1 (SDAR lambda 1 without its gate); textbook
   OPSD (``opsd_sampled``, coefficient 0.1, and at 1.25, SDAR lambda 1's weight for small gaps:
   ``opsd_sampled-k1.25``, with correct and all-corrupted hints only); each other distillation
   method with correct hints and with
   half and all of them corrupted. The core comparisons (``CORE``) run first, seed
   by seed, so that one seed of each finishes before the next seed starts. Resumable: finished runs
   are skipped, interrupted ones resumed; on a new machine the warm start is remade, checked against
   the committed one (weights digest, or its validation record), and the committed runs count.
3. **Aggregate** into ``--out``: ``summary.json`` / ``summary.md`` (validation success before and
   after, mean +- std over seeds; the gate and gap on tokens with positive / negative advantage),
   ``curves.png``, and each run's record under ``runs/`` (:data:`RECORD_FILES`).

    python benchmarks/gate_study.py --jobs 2          # the whole grid (hours on 2 CPU cores)
    python benchmarks/gate_study.py --aggregate-only  # tables from the runs finished so far
    python benchmarks/gate_study.py --float32 --jobs 2  # the same study in float32, its own warm start
                                                      # and tables (a CPU without native bfloat16)
    python benchmarks/gate_study.py --smoke           # tiny random model, plumbing only
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "src"))

from _results import check_not_in_use, lane_threads, run_lanes, run_logged
from _results import code_commit as _commit  # benchmarks/_results.py

CONFIG = ROOT / "configs" / "bench" / "gate_study.yaml"
SEEDS = (0, 1, 2)
# (run name, overrides), most telling first; the name of every run whose gradient reads the teacher
# ends in -c<corruption>; GRPO and GRPO+OPSD (beta 0) do not read it and run once per seed.
RUNS: list[tuple[str, list[str]]] = [
    ("grpo", ["method=grpo"]),
    ("sdar-l1-c0", ["method=sdar", "loss.sdar_lambda=1.0"]),
    # SDAR lambda 1 with the gate held at 0.5 (beta 0): the same weight on the same sampled tokens,
    # but the teacher no longer enters the gradient, so it isolates what the gate's reading of the
    # teacher does at the weight where SDAR learned
    ("grpo_opsd-l1", ["method=grpo_opsd", "loss.sdar_lambda=1.0"]),
    ("opsd_sampled-c0", ["method=opsd_sampled", "loss.opsd_coef=0.1"]),
    ("sdar-l1-c1", ["method=sdar", "loss.sdar_lambda=1.0", "env.options.hint_corruption=1.0"]),
    ("opsd_sampled-c1", ["method=opsd_sampled", "loss.opsd_coef=0.1", "env.options.hint_corruption=1.0"]),
    ("sdar-l0.1-c0", ["method=sdar", "loss.sdar_lambda=0.1"]),
    ("grpo_opsd", ["method=grpo_opsd"]),
    ("sdar-l0.1-c1", ["method=sdar", "loss.sdar_lambda=0.1", "env.options.hint_corruption=1.0"]),
    ("sdar-l1-c0.5", ["method=sdar", "loss.sdar_lambda=1.0", "env.options.hint_corruption=0.5"]),
    ("opsd_sampled-c0.5", ["method=opsd_sampled", "loss.opsd_coef=0.1", "env.options.hint_corruption=0.5"]),
    ("sdar-l0.01-c0", ["method=sdar", "loss.sdar_lambda=0.01"]),
    ("sdar-l0.1-c0.5", ["method=sdar", "loss.sdar_lambda=0.1", "env.options.hint_corruption=0.5"]),
    ("sdar-l0.01-c1", ["method=sdar", "loss.sdar_lambda=0.01", "env.options.hint_corruption=1.0"]),
    ("sdar-l0.01-c0.5", ["method=sdar", "loss.sdar_lambda=0.01", "env.options.hint_corruption=0.5"]),
    # textbook OPSD at SDAR lambda 1's weight for small gaps (lambda * beta / 4 = 1.25: on the first
    # mini-batch the two expected gradients agree to first order in the gap, docs/algorithm.md "What the
    # gate is, to first order"). They differ in SDAR's cap on large gaps, its zero-mean noise of weight
    # lambda / 2 and its pull back to the sampling policy on later mini-batches; grpo_opsd-l1 (the noise
    # and the pull-back without the teacher) is the third point. Correct and corrupted hints only (added
    # after the rest of the grid)
    ("opsd_sampled-k1.25-c0", ["method=opsd_sampled", "loss.opsd_coef=1.25"]),
    ("opsd_sampled-k1.25-c1", ["method=opsd_sampled", "loss.opsd_coef=1.25", "env.options.hint_corruption=1.0"]),
]
# the comparisons the study is about: GRPO, gated (SDAR lambda 1) and ungated (textbook OPSD)
# distillation with correct and with corrupted hints, and SDAR lambda 1 without its gate
CORE = ("grpo", "sdar-l1-c0", "grpo_opsd-l1", "opsd_sampled-c0", "sdar-l1-c1", "opsd_sampled-c1")
SMOKE = ["model={name: tiny-random, lora: null, autocast: none}", "iterations=1", "rollout.tasks_per_iteration=2",
         "rollout.group_size=2", "eval.every=1", "eval.num_tasks=2", "optim.mini_batch_size=4"]
GATE_KEYS = ("teacher/gate_pos_adv", "teacher/gate_neg_adv", "teacher/gap_pos_adv", "teacher/gap_neg_adv",
             "teacher/gate_disagree_pos_adv", "teacher/gate_disagree_neg_adv", "teacher/disagree_pos_adv",
             "teacher/disagree_neg_adv",
             "train/groups_with_signal", "actor/kl", "actor/pg_clipfrac", "actor/entropy")


def sdar(*args: str) -> list[str]:
    return [sys.executable, "-m", "sdar.cli", *args]


def run(cmd: list[str], log: Path) -> None:
    """Run ``cmd`` with its output appended to ``log``; a failure raises ``RuntimeError`` (the grid
    goes on with its other runs)."""
    run_logged(cmd, log, ROOT)


def read_metrics(run_dir: Path) -> list[dict]:
    from sdar.reporting.run_log import read_metrics as read

    return read(run_dir) if (run_dir / "metrics.jsonl").is_file() else []


def finished(run_dir: Path, iterations: int) -> bool:
    return any(row.get("iteration") == iterations for row in read_metrics(run_dir))


def tagged_action(response: str) -> str:
    """The action inside a demonstration's ``<action>...</action>`` response."""
    return response.split("<action>")[1].split("</action>")[0]


def hint_copying_demos(rows: list[dict]) -> list[dict]:
    """For every random-policy turn, its twin with a hint in the teacher's layout (``user``: header
    and hint open the user message) that names the word the turn chose. The hinted word is the
    random choice, not the right one, so the twins teach reading the hint, never the rule."""
    from sdar.envs.toy import panel_hint
    from sdar.rollout.prompts import SKILL_HEADER

    twins = []
    for r in rows:
        word = tagged_action(r["response"])
        twins.append({**r, "prompt": SKILL_HEADER + panel_hint(word) + "\n\n" + r["prompt"], "hinted": True})
    return twins


def warm_start(runs_dir: Path, overrides: list[str], episodes: int, config_path: Path = CONFIG,
               hint_copying: bool = False) -> tuple[Path, dict]:
    """The shared warm start (random-policy format demonstrations, with ``hint_copying`` also their
    hinted twins, then ``sdar sft``) and its validation (``start_eval.json``); made once, reused."""
    from sdar.envs.play import play_episodes
    from sdar.trainer.checkpoint import list_checkpoints
    from sdar.trainer.config import load_config
    from sdar.trainer.trainer import make_run_env

    sft_dir = runs_dir / "warm"
    start_path = runs_dir / "start_eval.json"
    config = load_config(config_path, overrides)
    if not list_checkpoints(sft_dir):  # none yet, or an `sdar sft` stopped before its checkpoint was complete
        check_not_in_use(sft_dir, SystemExit)  # an earlier grid's `sdar sft`, still going
        demos = runs_dir / "demos.jsonl"
        with make_run_env(config.env, config.env.train_split) as env:
            play_episodes(env, "random", episodes, seed=0, demos_path=str(demos), think=False)
        # Format demonstrations: every turn counts, won or lost (random play rarely wins).
        rows = [{**json.loads(line), "won": True}
                for line in demos.read_text(encoding="utf-8").splitlines() if line.strip()]
        if hint_copying:
            rows += hint_copying_demos(rows)
        demos.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        if sft_dir.exists():
            shutil.rmtree(sft_dir)
        run(sdar("sft", "--config", str(config_path), *overrides, "--demos", str(demos), "--output-dir", str(sft_dir),
                 "--epochs", "2", "--lr", "1e-4"), runs_dir / "warm.log")
    if not start_path.is_file():
        run(sdar("eval", "--config", str(config_path), *overrides, f"init_checkpoint={sft_dir}", "--output",
                 str(start_path)), runs_dir / "warm.log")
    start = json.loads(start_path.read_text(encoding="utf-8"))
    start["env_name"] = config.env.name
    start["env_options"] = config.env.options
    start["warm_start_sha256"] = weights_sha256(sft_dir)
    return sft_dir, start


def weights_sha256(sft_dir: Path) -> str:
    """A digest of the warm start's weights (every tensor of its last checkpoint, in name order):
    the identity of the warm start, stable across machines where the same weights come out. It
    digests the tensors, not the file (``sdar.models.packaged.file_sha256``, which the trainer
    records to check that a resume reads the same weights file): the file's bytes also hold
    serialisation details that need not match where the weights do."""
    import hashlib

    import torch

    last = max((sft_dir / "checkpoints").glob("iter_*"))
    state = torch.load(last / "model.pt", map_location="cpu", weights_only=True)
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name]
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# what must agree between a fresh warm start and the one the committed runs started from
START_IDENTITY = ("warm_start_sha256", "success", "metrics", "env_name", "env_options", "eval_config")


def without_new_metrics(fresh: dict, committed: dict | set[str]) -> dict:
    """``fresh`` metrics without the names ``committed`` (a record, or the set of names an earlier
    record logged) lacks: metrics the trainer began logging after the committed record was made."""
    return {k: v for k, v in fresh.items() if k in committed}


def check_same_start(start: dict, committed: dict) -> None:
    """Refuse to continue a grid whose committed runs came from another warm start. A record from
    before the digest was kept is matched on its validation (every metric of 32 sampled episodes).
    A validation metric of the fresh record that the committed one lacks is one the trainer began
    logging since (:func:`without_new_metrics`) and is left out; one the fresh record lacks differs."""
    fresh = dict(start)
    if isinstance(start.get("metrics"), dict) and isinstance(committed.get("metrics"), dict):
        fresh["metrics"] = without_new_metrics(start["metrics"], committed["metrics"])
    differ = [k for k in START_IDENTITY if k in committed and fresh.get(k) != committed[k]]
    if differ:
        raise SystemExit(f"the warm start here differs from the one the committed runs started from ({', '.join(differ)});"
                         f" continue with another --out, or delete the committed runs to start over")


def finished_run(name: str, seed: int, runs_dir: Path, out: Path, iterations: int) -> Path | None:
    """Where the finished run ``name``/``seed`` is: its run folder, else its committed record under
    ``out/runs`` (a grid continued on another machine keeps the runs committed before); None if neither."""
    for where in (runs_dir / f"{name}-seed{seed}", out / "runs" / f"{name}-seed{seed}"):
        if finished(where, iterations):
            return where
    return None


def resumable_after(run_dir: Path) -> int | None:
    """The iteration a run folder resumes after (its last complete checkpoint, beside the run's
    ``config.yaml``), or None where :func:`train_one` would start it anew."""
    from learning import last_checkpoint_iteration

    return last_checkpoint_iteration(run_dir) if (run_dir / "config.yaml").is_file() else None


def train_one(name: str, run_overrides: list[str], seed: int, runs_dir: Path, sft_dir: Path,
              overrides: list[str], iterations: int, out: Path, config: Path = CONFIG) -> str:
    """Train run ``name``/``seed`` from ``sft_dir`` into ``runs_dir``: skipped when it finished
    (here or committed under ``out/runs``), resumed from its last checkpoint, else started anew.
    A folder that another process trains in (an earlier grid's run, still going) raises
    ``RuntimeError`` naming that process, before anything there is written or deleted (two grids
    started at the same instant can still both pass that check; the trainer's own lock then refuses
    one). Prints a line when the run starts, naming the log that shows its progress."""
    run_dir = runs_dir / f"{name}-seed{seed}"
    log = runs_dir / "logs" / f"{name}-seed{seed}.log"
    if finished_run(name, seed, runs_dir, out, iterations):
        return f"{run_dir.name}: finished earlier"
    check_not_in_use(run_dir)
    started = time.perf_counter()
    done = resumable_after(run_dir)
    resumable = done is not None
    where = f"resuming after iteration {done}" if resumable else "starting"
    print(f"{run_dir.name}: {where} (progress: {log})", flush=True)
    if resumable:
        with (run_dir / "commit.txt").open("a", encoding="utf-8") as f:  # the code of each part
            f.write(f"{_commit()} (resumed)\n")
        record_machine(run_dir, "resumed")
        run(sdar("train", "--resume", str(run_dir), "--no-report"), log)
        what = "resumed"
    else:
        if run_dir.exists():
            shutil.rmtree(run_dir)  # stopped before its first checkpoint: nothing to resume
        run_dir.mkdir(parents=True)
        (run_dir / "commit.txt").write_text(_commit() + "\n", encoding="utf-8")  # the code that trains it
        record_machine(run_dir, "trained")
        run(sdar("train", "--config", str(config), *overrides, *run_overrides, f"seed={seed}",
                 f"init_checkpoint={sft_dir}", "--output-dir", str(run_dir), "--no-report"), log)
        what = "trained"
    return f"{run_dir.name}: {what} in {time.perf_counter() - started:.0f} s"


def record_machine(run_dir: Path, part: str) -> None:
    """Append the machine that trains this part of a run (``trained`` or ``resumed``) to its
    ``machine.jsonl``: the run's own record of where it ran, kept when tables are drawn elsewhere."""
    from _results import machine_info

    line = {"part": part, "started": time.strftime("%Y-%m-%d %H:%M:%S"), **machine_info()}
    with (run_dir / "machine.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(line) + "\n")


def run_machines(run_dir: Path) -> list[str]:
    """Where each part of a run trained (:func:`record_machine`), one short line per part; empty for
    runs trained before machines were recorded (the summary's ``machine`` then names only the
    machine that drew the tables)."""
    path = run_dir / "machine.jsonl"
    parts = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.is_file() else []
    return [f"{m['part']} {m['started']}: {m['cpu']} ({m['cpu_capability']}, bfloat16 "
            f"{'native' if m['cpu_native_bf16'] else 'emulated'}{', ' + m['gpu'] if 'gpu' in m else ''}), "
            f"{m['torch_threads']} thread(s)" for m in parts]


def mean_std(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values) if values else None,
            "std": statistics.stdev(values) if len(values) > 1 else 0.0 if values else None, "n": len(values)}


def aggregate(runs_dir: Path, out: Path, start: dict, iterations: int, seeds: list[int], state: str,
              overrides: list[str] | None = None) -> dict:
    from _results import machine_info

    out.mkdir(parents=True, exist_ok=True)
    rows = []
    curves: dict[str, dict[int, list[float]]] = {}
    commits: dict[str, str] = {}  # run -> the commit(s) whose code trained it
    machines: dict[str, list[str]] = {}  # run -> where each part of it trained
    for name, run_overrides in RUNS:
        finals, mids, signals = [], [], {k: [] for k in GATE_KEYS}
        done_seeds = []
        for seed in seeds:
            run_dir = finished_run(name, seed, runs_dir, out, iterations)
            if run_dir is None:
                continue
            metrics = read_metrics(run_dir)
            config_text = repo_relative((run_dir / "config.yaml").read_text(encoding="utf-8"))
            if repo_relative(str(start.get("init_checkpoint"))) not in config_text:
                raise SystemExit(f"{run_dir}: its init_checkpoint is not the warm start that start_eval.json "
                                 f"evaluated ({start.get('init_checkpoint')}); refusing to mix them")
            done_seeds.append(seed)
            val = {m["iteration"]: m["val/success"] for m in metrics if "val/success" in m}
            finals.append(val[iterations])
            curve = curves.setdefault(name, {0: []})
            curve[0].append(start["success"])
            for it, v in val.items():
                curve.setdefault(it, []).append(v)
            train_rows = [m for m in metrics if m.get("iteration", 0) >= 1]
            for key in GATE_KEYS:
                vals = [m[key] for m in train_rows if key in m]
                if vals:
                    signals[key].append(statistics.fmean(vals))
            commits[run_dir.name] = keep_run_record(run_dir, out / "runs" / run_dir.name)
            machines[run_dir.name] = run_machines(run_dir)
            train_success = [m["train/success"] for m in train_rows if "train/success" in m]
            mids.append(statistics.fmean(train_success) if train_success else float("nan"))
        curve = curves.get(name, {})
        rows.append({"run": name, "overrides": run_overrides, "seeds": done_seeds,
                     "validation_curve_mean": {it: statistics.fmean(v) for it, v in sorted(curve.items())},
                     "final_val_success": mean_std(finals), "per_seed_final": finals,
                     "train_success_mean": mean_std(mids),
                     "signals": {k: (statistics.fmean(v) if v else None) for k, v in signals.items()}})
    summary = {
        "state": state, "before_rl": start, "iterations": iterations, "seeds": seeds,
        "config": str(CONFIG.relative_to(ROOT)), "overrides": list(overrides or []), "rows": rows,
        "machine": machine_info(), "run_machines": machines,
        "run_commits": commits, "commit": _commit(), "written": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    (out / "summary.json").write_text(repo_relative(json.dumps(summary, indent=1)) + "\n", encoding="utf-8")
    (out / "summary.md").write_text(summary_markdown(summary), encoding="utf-8")
    plot(curves, out / "curves.png")
    return summary


# a run's committed record: its config, metrics, code and machine, and the logged step samples and gate
# pushes (docs/outputs.md) that the tables' prose quotes; a run that logged none has none
RECORD_FILES = ("config.yaml", "metrics.jsonl", "commit.txt", "machine.jsonl", "samples.jsonl", "gate_actions.jsonl")


def keep_run_record(run_dir: Path, dest: Path) -> str:
    """Copy a run's record (:data:`RECORD_FILES`) into ``dest`` with this checkout's paths made
    repository-relative (nothing to copy when ``dest`` is ``run_dir``); return the commit(s) whose
    code trained it, one per resumed part, or "not recorded"."""
    if dest.resolve() != run_dir.resolve():
        dest.mkdir(parents=True, exist_ok=True)
        for f in RECORD_FILES:
            if (run_dir / f).is_file():  # commit.txt, machine.jsonl: runs trained before they were recorded have none
                (dest / f).write_text(repo_relative((run_dir / f).read_text(encoding="utf-8")), encoding="utf-8")
    commit_file = run_dir / "commit.txt"
    parts = commit_file.read_text(encoding="utf-8").splitlines() if commit_file.is_file() else []
    return "; ".join(p.strip() for p in parts if p.strip()) or "not recorded"


def repo_relative(text: str) -> str:
    """``text`` with this checkout's absolute paths written relative to the repository root (the
    committed records must not name one machine's folders)."""
    return text.replace(str(ROOT) + "/", "")


def _fmt(stats: dict) -> str:
    if not stats["n"]:
        return "-"
    if stats["n"] == 1:  # one seed: no spread to show
        return f"{100 * stats['mean']:.1f}"
    return f"{100 * stats['mean']:.1f} +- {100 * stats['std']:.1f}"


def _num(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def summary_markdown(summary: dict) -> str:
    lines = [f"State: {summary['state']}", "",
             (f"Validation success in % on {summary['before_rl']['num_tasks']} test tasks "
              f"(before RL: {100 * summary['before_rl']['success']:.1f}), mean +- std over the seeds that "
              f"finished (one seed: its value); validation curve: iteration: mean success; train success: mean "
              f"over iterations; gate / gap: mean over iterations of the token mean on step samples with "
              f"positive (+) and negative (-) advantage; on disagreement: the same on the tokens where teacher "
              f"and student log-probs differ by 1 nat or more (runs trained before this was logged: -)."), "",
             *([(f"Every run, the warm start included, with these overrides of {summary['config']}: "
                 f"`{' '.join(summary['overrides'])}`."), ""] if summary.get("overrides") else []),
             ("| run | seeds | final success | per seed | validation curve (mean) | train success | gate + | gate - "
              "| gate + on disagreement | gate - on disagreement | gap + | gap - | groups with signal |"),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary["rows"]:
        s = r["signals"]
        per_seed = " / ".join(f"{100 * v:.1f}" for v in r["per_seed_final"]) or "-"
        curve = " / ".join(f"{it}: {100 * v:.0f}" for it, v in r["validation_curve_mean"].items()) or "-"
        lines.append(f"| {r['run']} | {len(r['seeds'])} | {_fmt(r['final_val_success'])} | {per_seed} | {curve} | "
                     f"{_fmt(r['train_success_mean'])} | {_num(s['teacher/gate_pos_adv'])} | "
                     f"{_num(s['teacher/gate_neg_adv'])} | {_num(s['teacher/gate_disagree_pos_adv'])} | "
                     f"{_num(s['teacher/gate_disagree_neg_adv'])} | {_num(s['teacher/gap_pos_adv'])} | "
                     f"{_num(s['teacher/gap_neg_adv'])} | {_num(s['train/groups_with_signal'])} |")
    return "\n".join(lines) + "\n"


def plot(curves: dict[str, dict[int, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not curves:
        return
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), sharey=True)
    for ax, corruption in zip(axes, ("c0", "c0.5", "c1")):
        for name, curve in curves.items():
            if not (name.endswith(corruption) or "-c" not in name):  # runs blind to the hints: every panel
                continue
            its = sorted(curve)
            means = [100 * statistics.fmean(curve[i]) for i in its]
            ax.plot(its, means, marker="o", label=name)
        if ax.lines:
            ax.legend(fontsize=7)
        ax.set_title({"c0": "correct hints", "c0.5": "half the hints corrupted", "c1": "all hints corrupted"}[corruption])
        ax.set_xlabel("iteration")
    axes[0].set_ylabel("validation success (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs-dir", help="where runs and the warm start go (default: runs/gate_study, "
                                           "with --float32 runs/gate_study_fp32)")
    parser.add_argument("--out", help="where the tables go (default: benchmarks/results/gate_study, with --float32 "
                                      "benchmarks/results/gate_study_fp32)")
    parser.add_argument("--float32", action="store_true",
                        help="the whole study in float32 (model.autocast=none, the warm start included): its own "
                             "runs and tables, never mixed with the bfloat16 ones; for a CPU that emulates bfloat16")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                        help="seeds to train (default 0 1 2); the tables always cover every seed of the grid")
    parser.add_argument("--only", nargs="+", help="run names of RUNS to train (default: all)")
    parser.add_argument("--jobs", type=int, default=1, help="runs at the same time (one thread each on CPU)")
    parser.add_argument("--demo-episodes", type=int, default=192, help="scripted episodes of the warm start")
    parser.add_argument("--aggregate-only", action="store_true",
                        help="train nothing: write the tables from the runs so far (unfinished runs: their iterations so far)")
    parser.add_argument("--smoke", action="store_true", help="tiny random model, 1 iteration (plumbing only)")
    args = parser.parse_args(argv)
    overrides = [*(SMOKE if args.smoke else []), *(["model.autocast=none"] if args.float32 else [])]
    suffix = "_fp32" if args.float32 else ""
    runs_dir = ROOT / (args.runs_dir or f"runs/gate_study{suffix}")
    out = ROOT / (args.out or (f"runs/gate_study_smoke_out{suffix}" if args.smoke
                               else f"benchmarks/results/gate_study{suffix}"))
    from sdar.trainer.config import load_config

    iterations = load_config(CONFIG, overrides).iterations
    runs_dir.mkdir(parents=True, exist_ok=True)
    lane_threads()  # one thread per run unless OMP_NUM_THREADS says otherwise
    committed = out / "summary.json"
    has_committed = committed.is_file() and any((out / "runs").glob("*/metrics.jsonl"))
    if args.aggregate_only and has_committed and not (runs_dir / "warm" / "checkpoints").is_dir():
        # tables only, on a machine without the warm start: the committed record of it is enough
        start = json.loads(committed.read_text(encoding="utf-8"))["before_rl"]
        print("no warm start here: tabulating the committed runs against the committed start record", flush=True)
    else:
        sft_dir, start = warm_start(runs_dir, overrides, 8 if args.smoke else args.demo_episodes, hint_copying=True)
        print(f"warm start {sft_dir}: validation success {start['success']}", flush=True)
        if has_committed:
            check_same_start(start, json.loads(committed.read_text(encoding="utf-8"))["before_rl"])
    # seed-major within the core runs, so that one seed of every core comparison finishes first
    chosen = [(name, ro) for name, ro in RUNS if not args.only or name in args.only]
    core = [r for r in chosen if r[0] in CORE]
    rest = [r for r in chosen if r[0] not in CORE]
    planned = [(name, ro, seed) for part in (core, rest) for seed in args.seeds for name, ro in part]
    failures = []
    if not args.aggregate_only:

        def one(item):
            name, ro, seed = item
            try:
                msg = train_one(name, ro, seed, runs_dir, sft_dir, overrides, iterations, out)
            except RuntimeError as err:
                failures.append(f"{name}-seed{seed}: {err}")
                msg = f"{name}-seed{seed}: FAILED"
            print(msg, flush=True)

        run_lanes(one, planned, args.jobs)
    # the tables cover the whole grid (every seed of SEEDS), whichever part this call trained
    seeds = sorted(set(SEEDS) | set(args.seeds))
    total = len(RUNS) * len(seeds)
    finished = {(n, s) for n, _ in RUNS for s in seeds if finished_run(n, s, runs_dir, out, iterations) is not None}
    done = len(finished)
    state = f"{done} of {total} runs finished" + (" (complete)" if done == total else " (partial: rerun to continue)")
    if done < total:  # a study run with --only CORE is complete for what it set out to compare
        core_done = sum((n, s) in finished for n in CORE for s in seeds)
        state += f"; core comparisons (CORE): {core_done} of {len(CORE) * len(seeds)}"
    aggregate(runs_dir, out, start, iterations, seeds, state, overrides)
    print(f"{state}; tables in {out}", flush=True)
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
