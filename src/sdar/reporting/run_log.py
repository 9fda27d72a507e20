"""The run directory's logs: ``metrics.jsonl``, ``samples.jsonl`` and TensorBoard event files.

File formats are the contract in ``docs/outputs.md``. In short:

* ``metrics.jsonl``: one JSON object per line, ``{"iteration": int, "time": float, "<group/name>":
  float, ...}``. Validation before training is iteration 0, training iterations start at 1.
  Non-finite values are written as ``null`` (strict JSON) and read back as ``nan``.
* ``samples.jsonl``: a few agent turns per iteration, token by token, with the student's and the
  teacher's log-probs and, for a method with one, the gate of its loss (see
  :func:`validate_sample`).
* ``gate_actions.jsonl``: per iteration of a method with a gate, where the gate pushes: the actions
  whose tokens it weighs most above and below its mean (see :meth:`RunLogger.log_gate_actions`).
* ``tensorboard/``: the same scalars, one TensorBoard tag per metric key.

Every write is flushed at once, so a crash loses nothing already logged. A resumed run calls
:meth:`RunLogger.truncate_after` with the checkpoint's iteration so the files never hold duplicate
or out-of-order iterations.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
SKILLS_FILE = "skills_used.jsonl"
"""Written by the trainer (the teacher's skill files per iteration); trimmed on resume like the others."""
GATE_ACTIONS_FILE = "gate_actions.jsonl"
TENSORBOARD_DIR = "tensorboard"

SAMPLE_REQUIRED_KEYS = ("task_id", "step", "tokens", "log_probs")
"""Keys a sample must carry; the others of the contract default to ``None`` / empty."""


class RunLogger:
    """Writes one run's metrics and samples, flushing after every call.

    Args:
        run_dir: the run directory (created if missing).
        tensorboard: also write TensorBoard event files to ``run_dir/tensorboard`` (through
            ``torch.utils.tensorboard.SummaryWriter``).
        resume: append to existing logs. Without it, a run directory that already holds metrics or
            samples is refused, so a new run never mixes its lines into an old run's files. A
            resumed run should call :meth:`truncate_after` with the checkpoint's iteration before
            logging anything.

    Iterations must not decrease: logging iteration 3 after iteration 5 raises (that is what a
    resumed run without :meth:`truncate_after` would do). Logging the same iteration twice is
    allowed (e.g. training metrics, then validation metrics); :func:`read_metrics` merges them.
    """

    def __init__(self, run_dir: str | Path, tensorboard: bool = True, resume: bool = False):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.samples_path = self.run_dir / SAMPLES_FILE
        self.tensorboard = tensorboard
        self.resume = resume
        if not resume:
            used = [p.name for p in (self.metrics_path, self.samples_path) if _has_content(p)]
            if used:
                raise FileExistsError(
                    f"{self.run_dir} already holds {', '.join(used)} from an earlier run; pass "
                    "resume=True to continue that run, or choose a new run directory (or delete "
                    "those files if that run is not wanted)"
                )
        self._last_iteration = _last_iteration(self.metrics_path) if resume else None
        self._purge_step: int | None = None
        self._writer = None
        self._metrics_file = None
        self._samples_file = None

    # -- writing ------------------------------------------------------------------------------
    def log_metrics(self, iteration: int, metrics: Mapping[str, Any]) -> None:
        """Append one line ``{"iteration", "time", **metrics}`` and the TensorBoard scalars.

        ``metrics`` maps ``"group/name"`` keys to numbers (Python, NumPy or one-element torch
        values); nested mappings are flattened with ``/`` (``{"val": {"success": 1}}`` ->
        ``"val/success"``). Non-finite values are written as ``null`` with a warning.
        """
        iteration = _check_iteration(iteration)
        if self._last_iteration is not None and iteration < self._last_iteration:
            raise ValueError(
                f"iteration {iteration} logged after iteration {self._last_iteration}: metrics "
                "must not go back in time. A resumed run must call "
                "truncate_after(<checkpoint iteration>) "
                "before logging"
            )
        flat = flatten_metrics(metrics)
        now = time.time()
        record: dict[str, Any] = {"iteration": iteration, "time": now}
        for key, value in flat.items():
            if key in record:
                raise ValueError(f"metric key {key!r} is reserved for the line's own field")
            if not math.isfinite(value):
                log.warning(
                    "metric %s is %s at iteration %d (written as null)", key, value, iteration
                )
                record[key] = None
            else:
                record[key] = value
        if self._metrics_file is None:
            self._metrics_file = self.metrics_path.open("a", encoding="utf-8")
        self._metrics_file.write(json.dumps(record, allow_nan=False) + "\n")
        self._metrics_file.flush()
        self._last_iteration = iteration

        if self.tensorboard:
            writer = self._tensorboard_writer()
            for key, value in flat.items():
                if math.isfinite(value):
                    writer.add_scalar(key, value, global_step=iteration, walltime=now)
            writer.flush()

    def log_samples(self, iteration: int, samples: Sequence[Mapping[str, Any]]) -> None:
        """Append the given step samples to ``samples.jsonl``, one line each.

        Each sample follows the contract in ``docs/outputs.md``; list-like fields may be tensors
        or arrays. ``iteration`` is written into every line. A sample whose per-token lists do not
        have one entry per token is refused (see :func:`validate_sample`).
        """
        iteration = _check_iteration(iteration)
        lines = []
        for index, sample in enumerate(samples):
            record = validate_sample({**sample, "iteration": iteration}, where=f"sample {index}")
            for key in ("log_probs", "teacher_log_probs", "gate"):
                if record.get(key) is not None:  # strict JSON: non-finite numbers become null
                    record[key] = [v if math.isfinite(v) else None for v in record[key]]
            if record["advantage"] is not None and not math.isfinite(record["advantage"]):
                record["advantage"] = None
            lines.append(json.dumps(record, ensure_ascii=False, allow_nan=False))
        if not lines:
            return
        if self._samples_file is None:
            self._samples_file = self.samples_path.open("a", encoding="utf-8")
        self._samples_file.write("\n".join(lines) + "\n")
        self._samples_file.flush()

    def log_gate_actions(self, iteration: int, record: Mapping[str, Any]) -> None:
        """Append one iteration's record of where the gate pushes to ``gate_actions.jsonl``
        (``record``: :func:`sdar.trainer.trainer.gate_actions_record`'s, written as one line with
        ``iteration`` first)."""
        iteration = _check_iteration(iteration)
        line = json.dumps({"iteration": iteration, **record}, ensure_ascii=False, allow_nan=False)
        with (self.run_dir / GATE_ACTIONS_FILE).open("a", encoding="utf-8") as f:
            f.write(line + "\n")

    # -- resuming -----------------------------------------------------------------------------
    def truncate_after(self, iteration: int) -> None:
        """Drop every metrics, samples, ``skills_used.jsonl`` and ``gate_actions.jsonl`` line with
        ``iteration`` greater than the given one.

        Called when resuming from the checkpoint of ``iteration``: the lines the crashed run wrote
        after that checkpoint are replaced by the resumed run's. TensorBoard events from later
        steps are purged too (``SummaryWriter(purge_step=iteration + 1)``).
        """
        iteration = _check_iteration(iteration)
        self._close_files()
        dropped = 0
        for path in (self.metrics_path, self.samples_path, self.run_dir / SKILLS_FILE,
                     self.run_dir / GATE_ACTIONS_FILE):
            dropped += _truncate_jsonl(path, iteration)
        if dropped:
            log.info("resume: dropped %d log lines after iteration %d", dropped, iteration)
        self._last_iteration = _last_iteration(self.metrics_path)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._purge_step = iteration + 1

    # -- closing ------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush and close all files (safe to call twice)."""
        self._close_files()
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _close_files(self) -> None:
        for name in ("_metrics_file", "_samples_file"):
            handle = getattr(self, name)
            if handle is not None:
                handle.close()
                setattr(self, name, None)

    def _tensorboard_writer(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when used

            self._writer = SummaryWriter(
                log_dir=str(self.run_dir / TENSORBOARD_DIR), purge_step=self._purge_step
            )
            self._purge_step = None  # purge once, when the resumed run's first writer opens
        return self._writer


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------
def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """All metric lines of a run, in iteration order, lines of the same iteration merged.

    ``null`` values come back as ``nan``. A malformed *last* line (a crash in mid-write) is skipped
    with a warning; a malformed line anywhere else raises ``ValueError`` naming its line number.
    """
    path = _run_file(run_dir, METRICS_FILE)
    merged: dict[int, dict[str, Any]] = {}
    for number, record in _read_jsonl(path):
        if not isinstance(record.get("iteration"), int):
            raise ValueError(f"{path}:{number}: line has no integer 'iteration'")
        line = {k: (math.nan if v is None else v) for k, v in record.items()}
        merged.setdefault(line["iteration"], {}).update(line)
    return [merged[i] for i in sorted(merged)]


def read_samples(run_dir: str | Path) -> list[dict[str, Any]]:
    """All sample lines of a run (an empty list when the run logged none)."""
    path = Path(run_dir) / SAMPLES_FILE
    if not path.is_file():
        return []
    return [validate_sample(record, where=f"{path}:{n}") for n, record in _read_jsonl(path)]


def read_gate_actions(run_dir: str | Path) -> list[dict[str, Any]]:
    """All ``gate_actions.jsonl`` lines of a run in iteration order (an empty list when the run
    wrote none). A malformed last line is skipped with a warning, as for the metrics."""
    path = Path(run_dir) / GATE_ACTIONS_FILE
    if not path.is_file():
        return []
    return sorted((record for _, record in _read_jsonl(path)), key=lambda record: record["iteration"])


def metric_series(metrics: Iterable[Mapping[str, Any]], key: str) -> tuple[list[int], list[float]]:
    """(iterations, values) of one key over the lines that have a finite value for it."""
    iterations, values = [], []
    for line in metrics:
        value = line.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            iterations.append(int(line["iteration"]))
            values.append(float(value))
    return iterations, values


# ---------------------------------------------------------------------------------------------
# Console summary
# ---------------------------------------------------------------------------------------------
DEFAULT_SUMMARY_KEYS = (
    "train/success",
    "train/reward_mean",
    "train/episode_length",
    "train/invalid_action_rate",
    "sdar/gate_mean",
    "sdar/gate_active_ratio",
    "sdar/teacher_gap_mean",
    "sdar/loss",
    "actor/pg_loss",
    "actor/kl",
    "val/success",
    "timing/rollout_s",
    "timing/update_s",
)

_SHORT_NAMES = {
    "train/success": "success",
    "train/reward_mean": "reward",
    "train/episode_length": "len",
    "train/invalid_action_rate": "invalid",
    "sdar/gate_mean": "gate",
    "sdar/gate_active_ratio": "active",
    "sdar/teacher_gap_mean": "gap",
    "sdar/loss": "sdar_loss",
    "actor/pg_loss": "pg_loss",
    "actor/kl": "kl",
    "val/success": "VAL",
    "timing/rollout_s": "rollout",
    "timing/update_s": "update",
}


def format_summary(metrics: Mapping[str, Any], keys: Sequence[str] = DEFAULT_SUMMARY_KEYS) -> str:
    """One short console line for one iteration's metrics, e.g.
    ``it 12 | success 0.625 | reward 6.25 | gate 0.613 | rollout 52.1s``.

    Keys missing from ``metrics`` are left out; ``iteration`` is taken from ``metrics`` if present.
    Keys ending in ``_s`` are seconds.
    """
    parts = []
    if "iteration" in metrics:
        parts.append(f"it {int(metrics['iteration'])}")
    for key in keys:
        if key not in metrics:
            continue
        value = _to_float(metrics[key], key)
        name = _SHORT_NAMES.get(key, key)
        if key.endswith("_s") and math.isfinite(value):
            parts.append(f"{name} {value:.1f}s")
        else:
            parts.append(f"{name} {value:.4g}")
    return " | ".join(parts)


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------
def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """Flatten nested mappings to ``"a/b"`` keys and convert every value to ``float``."""
    if not isinstance(metrics, Mapping):
        raise TypeError(
            "metrics must be a mapping of 'group/name' keys to numbers, "
            f"got {type(metrics).__name__}"
        )
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if not isinstance(key, str) or not key:
            raise TypeError(f"metric keys must be non-empty strings, got {key!r}")
        full = f"{prefix}/{key}" if prefix else key
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, full))
        else:
            flat[full] = _to_float(value, full)
    return flat


def validate_sample(sample: Mapping[str, Any], where: str = "sample") -> dict[str, Any]:
    """Check one sample against the ``samples.jsonl`` contract and return it as plain JSON data.

    ``tokens`` is a list of strings; ``log_probs`` and, when not ``None``, ``teacher_log_probs``
    and ``gate`` have one number per token. Missing optional fields get ``None`` (``skill_files``:
    ``[]``), except ``gate``: a method without a gate has no ``gate`` field, and a ``None`` gate
    is dropped. Raises ``ValueError`` naming the sample and the field otherwise.
    """
    missing = [k for k in SAMPLE_REQUIRED_KEYS if k not in sample]
    if missing:
        raise ValueError(f"{where}: missing required field(s) {missing}; see docs/outputs.md")
    record = {k: _plain(v) for k, v in sample.items()}
    for key in (
        "iteration",
        "task_type",
        "won",
        "action",
        "valid_action",
        "advantage",
        "prompt",
        "teacher_log_probs",
    ):
        record.setdefault(key, None)
    record.setdefault("skill_files", [])
    if record.get("gate") is None:  # no gate (also an older run's explicit null)
        record.pop("gate", None)
    tokens = record["tokens"]
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"{where}: 'tokens' must be a list of decoded token strings")
    for key in ("log_probs", "teacher_log_probs", "gate"):
        values = record.get(key)
        if values is None and key != "log_probs":
            continue
        if not isinstance(values, list) or len(values) != len(tokens):
            size = len(values) if isinstance(values, list) else type(values).__name__
            raise ValueError(
                f"{where} (task {record['task_id']!r}, step {record['step']}): '{key}' must have "
                "one "
                f"number per token ({len(tokens)} tokens), got {size}"
            )
        record[key] = [_to_float(v, key) for v in values]
    if record["advantage"] is not None:
        record["advantage"] = _to_float(record["advantage"], "advantage")
    return record


def _plain(value: Any) -> Any:
    """Tensors and arrays to lists / Python scalars so that ``json`` can write them."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    return value


def _to_float(value: Any, key: str) -> float:
    if hasattr(value, "item"):
        try:
            value = value.item()
        except (ValueError, RuntimeError) as err:
            raise TypeError(
                f"metric {key!r} must be a single number, got a tensor/array: {err}"
            ) from None
    if value is None:
        return math.nan
    if isinstance(value, (bool, int, float)):
        return float(value)
    raise TypeError(f"metric {key!r} must be a number, got {type(value).__name__}: {value!r}")


def _check_iteration(iteration: Any) -> int:
    if (
        isinstance(iteration, bool)
        or not isinstance(iteration, int)
        and not hasattr(iteration, "__index__")
    ):
        raise TypeError(f"iteration must be an int, got {type(iteration).__name__}")
    iteration = int(iteration)
    if iteration < 0:
        raise ValueError(
            f"iteration must be >= 0 (0 is validation before training), got {iteration}"
        )
    return iteration


def _has_content(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 0


def _run_file(run_dir: str | Path, name: str) -> Path:
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    path = run_dir / name
    if not path.is_file():
        raise FileNotFoundError(
            f"no {name} in {run_dir}: is this a run directory written by `sdar train`?"
        )
    return path


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    records = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            if number == len(lines):  # the run died in the middle of writing this line
                log.warning("%s:%d: skipping an incomplete last line (%s)", path, number, err)
                continue
            raise ValueError(f"{path}:{number}: not valid JSON ({err})") from None
        if not isinstance(record, dict):
            raise ValueError(
                f"{path}:{number}: expected a JSON object, got {type(record).__name__}"
            )
        records.append((number, record))
    return records


def _truncate_jsonl(path: Path, iteration: int) -> int:
    """Rewrite ``path`` without lines of iterations after ``iteration``; return how many went."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for _, record in _read_jsonl(path):
        if int(record.get("iteration", 0)) > iteration:
            dropped += 1
        else:
            kept.append(json.dumps(record, ensure_ascii=False))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    tmp.replace(path)  # atomic: a crash here leaves either the old or the new file
    return dropped


def _last_iteration(path: Path) -> int | None:
    if not path.is_file():
        return None
    iterations = [int(r["iteration"]) for _, r in _read_jsonl(path) if "iteration" in r]
    return max(iterations) if iterations else None
