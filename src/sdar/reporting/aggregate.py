"""Tables over iterations and over runs: one run's success table, and mean +- std across seeds.

``success_table`` answers "how much did this run improve": validation success, overall and per task
type, at the start, at the best validation and at the last one. ``aggregate_runs`` answers "does it
hold across seeds": the final (and best) value of a metric per method, as mean and sample standard
deviation (n - 1) over the runs of each method.
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from sdar.reporting.run_log import metric_series, read_metrics

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
RUN_SEED_KEY = "seed"
IGNORED_CONFIG_KEYS = ("seed", "output_dir", "resume", "run_name")
"""Config keys (dotted paths) that differ between seeds of one experiment: never a group."""
IGNORED_CONFIG_SECTIONS = ("sft",)
"""Config sections that ``sdar train`` does not read (the warm start's settings, which run folders
written before the section existed lack): never a group."""


def _ignored(key: str) -> bool:
    return key in IGNORED_CONFIG_KEYS or key.split(".")[0] in IGNORED_CONFIG_SECTIONS


# ---------------------------------------------------------------------------------------------
# One run: success at start / best / last
# ---------------------------------------------------------------------------------------------
@dataclass
class SuccessTable:
    """Validation success of one run at three validation iterations.

    ``rows`` maps a row name (``"overall"`` first, then task types) to its values at ``start``,
    ``best`` and ``last`` (``nan`` where that validation did not report the type). ``best`` is the
    validation iteration with the highest overall success, the earliest on ties; per-type values
    are read at that same iteration (the best checkpoint's breakdown, not each type's own maximum).
    """

    key: str
    start: int
    best: int
    last: int
    rows: dict[str, tuple[float, float, float]]


def success_table(
    metrics: Sequence[Mapping[str, Any]], key: str = "val/success"
) -> SuccessTable | None:
    """The table from metric lines (``read_metrics``); ``None`` if ``key`` was never logged."""
    iterations, values = metric_series(metrics, key)
    if not iterations:
        return None
    best_index = max(range(len(values)), key=lambda i: (values[i], -iterations[i]))
    chosen = (iterations[0], iterations[best_index], iterations[-1])
    by_iteration = {int(line["iteration"]): line for line in metrics}
    types = sorted({k[len(key) + 1 :] for line in metrics for k in line if k.startswith(key + "/")})
    rows: dict[str, tuple[float, float, float]] = {}
    for name, full_key in [("overall", key)] + [(t, f"{key}/{t}") for t in types]:
        rows[name] = tuple(_number(by_iteration[i].get(full_key)) for i in chosen)  # type: ignore[assignment]
    return SuccessTable(key=key, start=chosen[0], best=chosen[1], last=chosen[2], rows=rows)


def format_success_table(table: SuccessTable) -> str:
    """The table as Markdown, values in percent with one decimal."""
    header = (
        f"| {table.key} (%) | start (it {table.start}) | best (it {table.best}) "
        f"| last (it {table.last}) | last - start |"
    )
    lines = [header, "| --- | ---: | ---: | ---: | ---: |"]
    for name, (start, best, last) in table.rows.items():
        cells = [format_percent(v) for v in (start, best, last)]
        cells.append(format_percent(last - start, sign=True))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Several runs: mean and std over seeds, per method
# ---------------------------------------------------------------------------------------------
def load_run_config(run_dir: str | Path) -> dict[str, Any] | None:
    """The run's resolved ``config.yaml`` as a dict, or ``None`` if the run has none."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return None
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level")
    return data or {}


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"loss": {"method": "sdar"}}`` -> ``{"loss.method": "sdar"}``; lists become tuples."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten_config(value, full))
        else:
            flat[full] = tuple(value) if isinstance(value, list) else value
    return flat


def group_runs(
    run_dirs: Sequence[str | Path], group_by: Sequence[str] | None = None
) -> dict[str, list[Path]]:
    """Split runs into groups of seeds of the same experiment, keyed by a readable label.

    With ``group_by`` (dotted config keys, e.g. ``["loss.method"]``) the runs are grouped by those
    keys' values. Otherwise by every config key that differs between the runs, except the seed and
    output paths (``IGNORED_CONFIG_KEYS``) and the ``sft`` section, which ``sdar train`` does not
    read: when a ``...method`` key differs, the label is the method, and only keys that still differ between runs of one method are added to it (a method's
    preset switches, such as the SDAR weight, are not repeated). Runs without ``config.yaml`` all
    fall in one group unless ``group_by`` is given, which then fails for them.
    """
    run_dirs = [Path(d) for d in run_dirs]
    configs = [load_run_config(d) for d in run_dirs]
    flats = [flatten_config(c) if c is not None else None for c in configs]
    if group_by:
        keys = list(group_by)
        for run, flat in zip(run_dirs, flats):
            missing = [k for k in keys if flat is None or k not in flat]
            if missing:
                raise KeyError(
                    f"run {run} has no config key(s) {missing} to group by "
                    f"(config.yaml {'missing' if flat is None else 'lacks them'})"
                )
        labels = [", ".join(f"{k}={flat[k]}" for k in keys) for flat in flats]  # type: ignore[index]
    else:
        labels = _auto_labels([f or {} for f in flats])
    groups: dict[str, list[Path]] = {}
    for label, run in zip(labels, run_dirs):
        groups.setdefault(label, []).append(run)
    return groups


def aggregate_runs(
    run_dirs: Sequence[str | Path],
    key: str = "val/success",
    group_by: Sequence[str] | None = None,
    mode: str = "max",
) -> dict[str, Any]:
    """Mean and sample standard deviation over seeds of the final and the best value of ``key``.

    Args:
        run_dirs: run directories (each with ``metrics.jsonl``; ``config.yaml`` for grouping).
        key: the metric to aggregate.
        group_by: config keys defining the groups (default: automatic, see :func:`group_runs`).
        mode: ``"max"`` if larger is better (success), ``"min"`` if smaller is (a loss).

    Returns:
        ``{"key", "mode", "groups": {label: {"runs": [str], "seeds": [int | None], "n": int,
        "final": stats, "best": stats, "start": stats}}}`` where ``stats`` is ``{"values": [float],
        "mean": float, "std": float | None}`` (``std`` is ``None`` for a single run). ``final`` is
        the last logged value of each run, ``best`` its maximum (``mode="min"``: minimum), ``start``
        its first (iteration 0 for validation before training).
    """
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
    if not run_dirs:
        raise ValueError("aggregate_runs needs at least one run directory")
    groups = group_runs(run_dirs, group_by)
    result: dict[str, Any] = {"key": key, "mode": mode, "groups": {}}
    pick = max if mode == "max" else min
    for label, runs in groups.items():
        finals, bests, starts, seeds = [], [], [], []
        for run in runs:
            _, values = metric_series(read_metrics(run), key)
            if not values:
                raise ValueError(
                    f"run {run} never logged {key!r}; leave it out or choose another key"
                )
            finals.append(values[-1])
            bests.append(pick(values))
            starts.append(values[0])
            config = load_run_config(run) or {}
            seeds.append(config.get(RUN_SEED_KEY))
        result["groups"][label] = {
            "runs": [str(r) for r in runs],
            "seeds": seeds,
            "n": len(runs),
            "final": _stats(finals),
            "best": _stats(bests),
            "start": _stats(starts),
        }
    return result


def format_aggregate_table(result: Mapping[str, Any]) -> str:
    """Markdown table of an :func:`aggregate_runs` result: mean +- std per group.

    Success rates (keys with a ``success`` segment) are shown in percent.
    """
    key = result["key"]
    percent = "success" in key.split("/")
    unit = " (%)" if percent else ""
    lines = [
        f"| group | runs | seeds | start {key}{unit} | final {key}{unit} | best {key}{unit} |",
        "| --- | ---: | --- | ---: | ---: | ---: |",
    ]
    for label, group in result["groups"].items():
        seeds = ", ".join("?" if s is None else str(s) for s in group["seeds"])
        cells = [_mean_std(group[part], percent) for part in ("start", "final", "best")]
        lines.append(f"| {label} | {group['n']} | {seeds} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        "mean +- sample standard deviation (n - 1) over runs; final = last logged value, "
        f"best = {'highest' if result['mode'] == 'max' else 'lowest'} logged value of each run."
    )
    return "\n".join(lines)


def mean_std_curves(
    run_dirs: Sequence[str | Path], key: str, group_by: Sequence[str] | None = None
) -> dict[str, tuple[list[int], list[float], list[float]]]:
    """Per group: (iterations, mean, sample std) of ``key`` over the group's runs.

    Only iterations that every run of the group logged are used (a run that stopped early shortens
    its group's curve); std is ``nan`` for a group of one run.
    """
    curves = {}
    for label, runs in group_runs(run_dirs, group_by).items():
        series = [dict(zip(*metric_series(read_metrics(run), key))) for run in runs]
        common = sorted(set.intersection(*(set(s) for s in series)))
        if not common:
            log.warning(
                "group %s: no iteration where all runs logged %s; curve left out", label, key
            )
            continue
        stats = [_stats([s[i] for s in series]) for i in common]
        curves[label] = (
            common,
            [s["mean"] for s in stats],
            [math.nan if s["std"] is None else s["std"] for s in stats],
        )
    return curves


def _auto_labels(flats: list[dict[str, Any]]) -> list[str]:
    all_keys = sorted(set().union(*flats)) if flats else []
    differing = [
        k
        for k in all_keys
        if not _ignored(k) and len({repr(f.get(k)) for f in flats}) > 1
    ]
    method_keys = [k for k in differing if k.split(".")[-1] == "method"]
    if not differing:
        return ["all runs"] * len(flats)
    if not method_keys:
        return [", ".join(f"{k}={f.get(k)}" for k in differing) for f in flats]
    methods = [" / ".join(str(f.get(k)) for k in method_keys) for f in flats]
    # Keys that vary within one method are real extra dimensions (an ablation); the rest are the
    # method's own presets.
    extra = [
        k
        for k in differing
        if k not in method_keys
        and any(
            len({repr(f.get(k)) for f, m in zip(flats, methods) if m == method}) > 1
            for method in set(methods)
        )
    ]
    labels = []
    for flat, method in zip(flats, methods):
        detail = ", ".join(f"{k}={flat.get(k)}" for k in extra)
        labels.append(f"{method} ({detail})" if detail else method)
    return labels


def _stats(values: list[float]) -> dict[str, Any]:
    return {
        "values": values,
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,
    }


def _mean_std(stats: Mapping[str, Any], percent: bool) -> str:
    scale = 100.0 if percent else 1.0
    digits = 1 if percent else 3
    text = f"{stats['mean'] * scale:.{digits}f}"
    if stats["std"] is not None:
        text += f" +- {stats['std'] * scale:.{digits}f}"
    return text


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def format_percent(value: float, sign: bool = False) -> str:
    """A rate in [0, 1] as percent with one decimal (``-`` for nan)."""
    if not math.isfinite(value):
        return "-"
    return f"{value * 100:+.1f}" if sign else f"{value * 100:.1f}"
