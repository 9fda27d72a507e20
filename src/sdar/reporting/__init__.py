"""Run logging and reports: what a user reads after (and during) training.

* :class:`RunLogger` writes ``metrics.jsonl``, ``samples.jsonl`` and TensorBoard events of a run.
* :func:`write_report` turns one run directory into ``report/``: PNG training curves, a
  ``summary.md`` with the validation success table, and ``index.html`` with the token-level view of
  sampled agent turns coloured by the SDAR gate.
* :func:`aggregate_runs` / :func:`write_aggregate_report` summarise several seeds per method as mean
  and standard deviation, with learning curves.

The run-directory layout and file formats are documented in ``docs/outputs.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sdar.reporting.aggregate import (
    aggregate_runs,
    format_aggregate_table,
    format_success_table,
    load_run_config,
    mean_std_curves,
    success_table,
)
from sdar.reporting.run_log import (
    DEFAULT_SUMMARY_KEYS,
    RunLogger,
    format_summary,
    read_metrics,
    read_samples,
)

log = logging.getLogger(__name__)

REPORT_DIR = "report"
EVAL_DIR = "eval"
DEFAULT_MAX_SAMPLES = 200
DEFAULT_AGGREGATE_KEYS = ("val/success", "train/success")


def write_report(run_dir: str | Path, max_samples: int = DEFAULT_MAX_SAMPLES) -> Path:
    """Write ``run_dir/report/`` and return the path of its ``index.html``.

    The folder receives one PNG per metric group (see :mod:`sdar.reporting.plots`), ``summary.md``
    (validation success overall and per task type at start / best / last validation, the last
    training iteration's main metrics, ``eval/*.json`` results) and ``index.html``, a single
    self-contained page with all of that plus up to ``max_samples`` logged agent turns shown token
    by token. Needs ``metrics.jsonl``; ``samples.jsonl``, ``config.yaml``, ``eval/`` are optional.
    """
    from sdar.reporting.html import render_page
    from sdar.reporting.plots import plot_run_metrics

    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    out_dir = run_dir / REPORT_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = plot_run_metrics(metrics, out_dir)
    table = success_table(metrics)
    rows = last_iteration_rows(metrics)
    evals = read_evals(run_dir)
    config_path = run_dir / "config.yaml"
    config_text = config_path.read_text(encoding="utf-8") if config_path.is_file() else None
    title = run_dir.resolve().name

    md = [f"# Run summary: {title}", ""]
    md += [
        "## Validation success",
        "",
        format_success_table(table) if table else "No validation logged.",
        "",
    ]
    if table:
        md += [
            "best = the validation with the highest overall success (earliest on ties); the "
            "per-type "
            "values are read at that same iteration.",
            "",
        ]
    if rows:
        last = _last_training_line(metrics)
        md += [
            f"## Last training iteration ({last['iteration']})",
            "",
            "| metric | value |",
            "| --- | ---: |",
        ]
        md += [f"| {k} | {v} |" for k, v in rows] + [""]
    if evals:
        md += [
            "## Evaluations (eval/*.json)",
            "",
            "| file | checkpoint | split | success |",
            "| --- | --- | --- | ---: |",
        ]
        for ev in evals:
            if "error" in ev:
                md.append(f"| {ev['file']} | unreadable: {ev['error']} | | |")
            else:
                success = ev.get("success")
                shown = f"{100 * success:.1f} %" if isinstance(success, (int, float)) else "-"
                md.append(
                    f"| {ev['file']} | {ev.get('checkpoint')} | {ev.get('split')} | {shown} |"
                )
        md.append("")
    md += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    (out_dir / "summary.md").write_text("\n".join(md), encoding="utf-8")

    page = render_page(
        title=title,
        table=table,
        summary_rows=rows,
        evals=evals,
        figures=figures,
        samples=read_samples(run_dir),
        max_samples=max_samples,
        config_text=config_text,
    )
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def write_aggregate_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    keys: Sequence[str] = DEFAULT_AGGREGATE_KEYS,
    group_by: Sequence[str] | None = None,
) -> Path:
    """Summarise several runs (seeds, methods) in ``out_dir``; return the path of ``aggregate.md``.

    For each key: a Markdown table of mean +- std over seeds per group (see :func:`aggregate_runs`)
    and ``curves_<key>.png`` with the mean learning curve and a +- one std band per group. The raw
    numbers go to ``aggregate.json``. A key some run never logged is reported as not aggregated.
    """
    from sdar.reporting.plots import plot_mean_std

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = ["# Aggregate over runs", "", "Runs:", ""] + [f"- {Path(d)}" for d in run_dirs] + [""]
    results: dict[str, Any] = {}
    for key in keys:
        md.append(f"## {key}")
        md.append("")
        try:
            result = aggregate_runs(run_dirs, key=key, group_by=group_by)
        except ValueError as err:
            log.warning("not aggregating %s: %s", key, err)
            md += [f"Not aggregated: {err}", ""]
            continue
        results[key] = result
        md += [format_aggregate_table(result), ""]
        curves = mean_std_curves(run_dirs, key, group_by)
        if curves:
            png = out_dir / f"curves_{key.replace('/', '_')}.png"
            plot_mean_std(curves, f"{key}: mean +- std over seeds", key.split("/")[-1], png)
            md += [f"![{key}]({png.name})", ""]
    (out_dir / "aggregate.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    path = out_dir / "aggregate.md"
    path.write_text("\n".join(md), encoding="utf-8")
    return path


def read_evals(run_dir: str | Path) -> list[dict[str, Any]]:
    """The run's ``eval/*.json`` results, by file name, each with ``"file"`` added.

    A file that is not a JSON object gives ``{"file", "error"}`` instead (the report shows it).
    """
    results = []
    for path in sorted((Path(run_dir) / EVAL_DIR).glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError(f"expected a JSON object, got {type(data).__name__}")
        except ValueError as err:
            results.append({"file": path.name, "error": str(err)})
            continue
        results.append({**data, "file": path.name})
    return results


def last_iteration_rows(metrics: Sequence[dict[str, Any]]) -> list[tuple[str, str]]:
    """(key, formatted value) of the main metrics at the last training iteration."""
    last = _last_training_line(metrics)
    if last is None:
        return []
    keys = list(DEFAULT_SUMMARY_KEYS) + sorted(
        k for k in last if k.startswith("sdar/") and k not in DEFAULT_SUMMARY_KEYS
    )
    return [(k, f"{last[k]:.4g}") for k in keys if isinstance(last.get(k), (int, float))]


def _last_training_line(metrics: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    training = [m for m in metrics if m["iteration"] >= 1]
    return training[-1] if training else None


# ---------------------------------------------------------------------------------------------
# `sdar report`
# ---------------------------------------------------------------------------------------------
def add_report_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``sdar report``: one run, or several runs to aggregate as well."""
    parser.add_argument(
        "run_dirs",
        nargs="+",
        metavar="RUN_DIR",
        help="run directory; give several (seeds, methods) to also aggregate them",
    )
    parser.add_argument(
        "--max-samples",
        type=int,
        default=DEFAULT_MAX_SAMPLES,
        help="agent turns shown token by token in each index.html (default %(default)s)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder of the across-runs summary (several runs only; default: "
        "<common parent of the runs>/aggregate)",
    )
    parser.add_argument(
        "--key",
        action="append",
        default=None,
        help="metric to aggregate across runs, repeatable (default: val/success, train/success)",
    )
    parser.add_argument(
        "--group-by",
        action="append",
        default=None,
        metavar="CONFIG_KEY",
        help="config key defining groups of runs, e.g. loss.method (default: the keys "
        "that differ between the runs' config.yaml, seed excluded)",
    )


def report_command(args: argparse.Namespace) -> int:
    """Run ``sdar report`` with arguments from :func:`add_report_arguments`."""
    for run_dir in args.run_dirs:
        print(f"report: {write_report(run_dir, max_samples=args.max_samples)}")
    if len(args.run_dirs) > 1:
        out = (
            args.out
            or Path(os.path.commonpath([str(Path(d).resolve()) for d in args.run_dirs]))
            / "aggregate"
        )
        path = write_aggregate_report(
            args.run_dirs, out, keys=args.key or DEFAULT_AGGREGATE_KEYS, group_by=args.group_by
        )
        print(f"aggregate: {path}")
        print(path.read_text(encoding="utf-8"))
    return 0


__all__ = [
    "RunLogger",
    "add_report_arguments",
    "aggregate_runs",
    "format_aggregate_table",
    "format_success_table",
    "format_summary",
    "load_run_config",
    "mean_std_curves",
    "read_evals",
    "read_metrics",
    "read_samples",
    "report_command",
    "success_table",
    "write_aggregate_report",
    "write_report",
]
