"""Training-curve PNGs: one figure per metric group, and mean +- std curves across seeds.

Figures are drawn on ``matplotlib.figure.Figure`` with the Agg canvas directly (no ``pyplot``), so
reporting never touches the caller's global matplotlib backend or state.

Grouping of metric keys (``"group/name[/sub]"``) into figures:

=================  ==========================================================================
``train.png``      ``train/*``: success (overall and per task type), reward, length, invalid rate
``validation.png`` ``val/*``: validation success (overall and per task type), env metrics
``sdar_gate.png``  ``sdar/*`` except the loss, ``teacher/*`` and the baselines' ``rlsd/*``,
                   ``skill_sd/*``, ``opsd/*``: gate mean, active ratio, gap, truncations
``losses.png``     ``actor/*`` and every key ending in ``loss``: policy loss, SDAR loss, KL, ...
``timings.png``    ``timing/*``
``other.png``      anything else
=================  ==========================================================================

Within a figure, one panel per ``group/name``; keys ``group/name/<sub>`` (per task type) are drawn
as thinner lines in their parent's panel.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from sdar.reporting.run_log import metric_series

FIGURES = (
    ("train", "Training rollouts: success, reward, episode length, invalid actions"),
    ("validation", "Validation panel"),
    ("sdar_gate", "SDAR gate, teacher and distillation terms"),
    ("losses", "Losses and optimisation"),
    ("timings", "Timings (seconds per iteration)"),
    ("other", "Other metrics"),
)
_PREFIX_FIGURE = {
    "train": "train",
    "val": "validation",
    "sdar": "sdar_gate",
    "teacher": "sdar_gate",
    "rlsd": "sdar_gate",
    "skill_sd": "sdar_gate",
    "opsd": "sdar_gate",
    "actor": "losses",
    "timing": "timings",
}
_NOT_METRICS = ("iteration", "time")
PANEL_ORDER = (
    "train/success",
    "train/reward_mean",
    "train/episode_length",
    "train/invalid_action_rate",
    "val/success",
    "sdar/gate_mean",
    "sdar/gate_active_ratio",
    "sdar/teacher_gap_mean",
    "actor/pg_loss",
    "sdar/loss",
    "actor/kl",
    "actor/entropy",
    "actor/grad_norm",
    "actor/lr",
    "timing/rollout_s",
    "timing/update_s",
)
"""Panels drawn first, in this order (the rest follow alphabetically)."""


def figure_of(key: str) -> str:
    """Name of the figure (PNG stem) a metric key is drawn in."""
    if key.endswith("loss"):
        return "losses"
    return _PREFIX_FIGURE.get(key.split("/", 1)[0], "other")


def panel_of(key: str) -> str:
    """The panel a key is drawn in: its first two path segments (``val/success/heat`` ->
    ``val/success``)."""
    return "/".join(key.split("/")[:2])


def plot_run_metrics(metrics: Sequence[Mapping[str, Any]], out_dir: str | Path) -> list[Path]:
    """Write one PNG per metric group present in ``metrics`` (lines of ``read_metrics``).

    Returns the written paths in the order of ``FIGURES``; groups without data get no file.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = sorted({k for line in metrics for k in line if k not in _NOT_METRICS})
    panels_by_figure: dict[str, dict[str, list[str]]] = {}
    for key in keys:
        if not metric_series(metrics, key)[0]:
            continue  # only nan/null values: nothing to draw
        panels = panels_by_figure.setdefault(figure_of(key), {})
        panels.setdefault(panel_of(key), []).append(key)
    written = []
    for name, title in FIGURES:
        if name in panels_by_figure:
            path = out_dir / f"{name}.png"
            panels = panels_by_figure[name]
            ordered = sorted(
                panels,
                key=lambda p: (PANEL_ORDER.index(p) if p in PANEL_ORDER else len(PANEL_ORDER), p),
            )
            _draw_panels(metrics, {p: panels[p] for p in ordered}, title, path)
            written.append(path)
    return written


def plot_mean_std(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]],
    title: str,
    ylabel: str,
    out_path: str | Path,
) -> Path:
    """One panel with a line per label and a shaded band of +- one standard deviation.

    Args:
        curves: label -> (iterations, means, stds); a std may be ``nan`` (one run: no band).

    Each line has its own dash pattern and a smaller marker than the one before, so groups with
    identical curves stay visible on top of each other.
    """
    fig = Figure(figsize=(7, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.92)
    styles = ("-", "--", ":", "-.")
    for index, (label, (xs, means, stds)) in enumerate(curves.items()):
        (line,) = ax.plot(
            xs,
            means,
            linestyle=styles[index % len(styles)],
            marker="o" if len(xs) < 40 else None,
            markersize=max(7 - 2 * index, 2),
            label=label,
        )
        lows = [m - s if math.isfinite(s) else m for m, s in zip(means, stds)]
        highs = [m + s if math.isfinite(s) else m for m, s in zip(means, stds)]
        ax.fill_between(xs, lows, highs, color=line.get_color(), alpha=0.2, linewidth=0)
    ax.set_title(title)
    ax.set_xlabel("iteration")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize="small")
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110)
    return out_path


def _draw_panels(metrics, panels: dict[str, list[str]], title: str, path: Path) -> None:
    count = len(panels)
    ncols = min(3, count)
    nrows = math.ceil(count / ncols)
    height = 3.4 * nrows + 0.7
    fig = Figure(figsize=(5.2 * ncols, height))
    FigureCanvasAgg(fig)
    # Fixed margins (in inches, converted to figure fractions) instead of constrained layout,
    # which draws every figure twice and doubles the report's run time.
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    fig.subplots_adjust(
        left=0.75 / (5.2 * ncols),
        right=1 - 0.2 / (5.2 * ncols),
        bottom=0.5 / height,
        top=1 - 0.7 / height,
        wspace=0.3,
        hspace=0.45,
    )
    for ax, (panel, keys) in zip(axes, panels.items()):
        for key in keys:
            xs, ys = metric_series(metrics, key)
            sparse = (
                len(xs) < len(metrics) / 2 or len(xs) < 30
            )  # e.g. validation every 5 iterations
            is_parent = key == panel
            label = "overall" if is_parent else key[len(panel) + 1 :]
            ax.plot(
                xs,
                ys,
                label=label,
                linewidth=2.0 if is_parent else 1.0,
                alpha=1.0 if is_parent else 0.75,
                marker="o" if sparse else None,
                markersize=3.5 if is_parent else 2.5,
                color="black" if is_parent and len(keys) > 1 else None,
            )
        ax.set_title(panel)
        if panel.split("/")[-1] == "success" and all(
            0 <= v <= 1 for k in keys for v in metric_series(metrics, k)[1]
        ):
            ax.set_ylim(-0.03, 1.03)  # a rate: the full range shows how far from solved the run is
        ax.set_xlabel("iteration")
        ax.set_ylabel(panel.split("/")[-1])
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize="x-small", ncol=2 if len(keys) > 4 else 1)
    for ax in axes[count:]:
        ax.set_visible(False)
    fig.suptitle(title)
    fig.savefig(path, dpi=100)
