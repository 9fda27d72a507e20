"""The report page: one self-contained HTML file (inline CSS and images, no scripts).

Its centre is the token-level view of sampled agent turns: every response token is a span coloured
by the gate the method's loss applied, as logged by the trainer (by default the SDAR gap gate
``g = sigmoid(beta * (teacher lp - student lp))``; red = rejected, white = neutral, green =
endorsed), with a tooltip giving the student's and the teacher's log-prob, their gap and the gate.
A CSS-only switch (radio buttons) recolours the same tokens by the raw gap on a linear scale, which
still shows how strongly the teacher disagrees where the gate has saturated. Samples of a method
without a gate (no ``gate`` field) open on the gap view.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sdar.reporting.aggregate import SuccessTable
from sdar.reporting.aggregate import format_percent as _pct

REJECTED_RGB = (235, 100, 90)
NEUTRAL_RGB = (255, 255, 255)
ENDORSED_RGB = (80, 185, 100)
GAP_SCALE = 2.0
"""|teacher lp - student lp| (nats) at which the gap colouring saturates."""
MIN_TOKEN_COUNT = 3
"""A token string must occur this often to enter the most endorsed / rejected tables."""


# ---------------------------------------------------------------------------------------------
# Colours
# ---------------------------------------------------------------------------------------------
def diverging_colour(t: float) -> str:
    """``#rrggbb`` on the red -> white -> green scale for ``t`` in [-1, 1] (clipped).

    Each channel is the linear interpolation between white and the end colour, rounded half up.
    """
    t = max(-1.0, min(1.0, t))
    end = ENDORSED_RGB if t >= 0 else REJECTED_RGB
    weight = abs(t)
    channels = (int(w + (e - w) * weight + 0.5) for w, e in zip(NEUTRAL_RGB, end))
    return "#" + "".join(f"{c:02x}" for c in channels)


def gate_colour(gate: float) -> str:
    """Colour of a gate value: 0 red, 0.5 white, 1 green (linear in between)."""
    return diverging_colour(2.0 * gate - 1.0)


def gap_colour(gap: float, scale: float = GAP_SCALE) -> str:
    """Colour of a teacher-student gap: ``-scale`` red, 0 white, ``+scale`` green."""
    return diverging_colour(gap / scale)


# ---------------------------------------------------------------------------------------------
# Token view
# ---------------------------------------------------------------------------------------------
def token_gaps(sample: Mapping[str, Any]) -> list[float] | None:
    """Teacher lp - student lp per token (``nan`` where one is missing); ``None`` if no teacher."""
    teacher = sample.get("teacher_log_probs")
    if teacher is None:
        return None
    return [_f(t) - _f(s) for t, s in zip(teacher, sample["log_probs"])]


def render_tokens(sample: Mapping[str, Any]) -> str:
    """The response as a sequence of ``<span class="tok">`` elements, one per token.

    A token's style carries ``--g`` (gate colour) and ``--d`` (gap colour) when known; its ``title``
    tooltip gives the student lp, teacher lp, gap and gate. All text is HTML-escaped.
    """
    tokens = sample["tokens"]
    student = sample["log_probs"]
    teacher = sample.get("teacher_log_probs")
    gate = sample.get("gate")  # absent for a method without a gate
    gaps = token_gaps(sample)
    spans = []
    for i, token in enumerate(tokens):
        style = []
        tip = [f"student lp {_num(student[i])}"]
        if teacher is not None:
            tip.append(f"teacher lp {_num(teacher[i])}")
            tip.append(f"gap {_num(gaps[i], sign=True)}")
            if math.isfinite(gaps[i]):
                style.append(f"--d:{gap_colour(gaps[i])}")
        if gate is not None:
            tip.append(f"gate {_num(gate[i])}")
            if math.isfinite(_f(gate[i])):
                style.append(f"--g:{gate_colour(_f(gate[i]))}")
        attrs = f' style="{";".join(style)}"' if style else ""
        cls = "tok" if token else "tok empty"
        title = html.escape(" | ".join(tip), quote=True)
        spans.append(f'<span class="{cls}"{attrs} title="{title}">{html.escape(token)}</span>')
    return "".join(spans)


def render_sample(sample: Mapping[str, Any]) -> str:
    """One agent turn: a header line, the collapsible prompt, the coloured response."""
    won = sample.get("won")
    valid = sample.get("valid_action")
    facts = [
        f"iteration {sample.get('iteration')}",
        f"task {sample.get('task_id')}"
        + (f" ({sample['task_type']})" if sample.get("task_type") else ""),
        f"step {sample.get('step')}",
        "episode " + ("won" if won else "lost" if won is not None else "?"),
        "action " + ("valid" if valid else "INVALID" if valid is not None else "?"),
    ]
    if sample.get("advantage") is not None:
        facts.append(f"advantage {_num(sample['advantage'], sign=True)}")
    skills = sample.get("skill_files") or []
    facts.append("skills: " + (", ".join(skills) if skills else "none"))

    stats = [f"{len(sample['tokens'])} tokens"]
    gate = [_f(g) for g in sample.get("gate") or [] if math.isfinite(_f(g))]
    gaps = [g for g in token_gaps(sample) or [] if math.isfinite(g)]
    if gate:
        stats.append(f"gate mean {sum(gate) / len(gate):.3f}")
        stats.append(f"endorsed {sum(g > 0.5 for g in gate) / len(gate):.0%}")
    if gaps:
        stats.append(f"gap mean {sum(gaps) / len(gaps):+.3f}")

    if sample.get("teacher_log_probs") is None and sample.get("gate") is None:
        note = (
            '<p class="note">No teacher for this method: tokens are shown without colour '
            "(the tooltip still gives the student's log-prob).</p>"
        )
    elif sample.get("gate") is None:
        note = (
            '<p class="note">This method has no gate: only the teacher - student gap view is '
            "coloured.</p>"
        )
    else:
        note = ""
    prompt = sample.get("prompt") or ""
    status = "won" if won else "lost"
    return (
        f'<section class="sample {status}">\n'
        f'<div class="facts">{" &middot; ".join(html.escape(str(f)) for f in facts)}</div>\n'
        f'<div class="stats">{html.escape(" · ".join(stats))}</div>\n'
        f"<details><summary>prompt ({len(prompt)} characters)</summary>"
        f'<pre class="prompt">{html.escape(prompt)}</pre></details>\n'
        f"{note}"
        f'<div class="response">{render_tokens(sample)}</div>\n'
        "</section>"
    )


def select_samples(
    samples: Sequence[Mapping[str, Any]], max_samples: int
) -> list[Mapping[str, Any]]:
    """At most ``max_samples`` samples spread evenly over the run (first and last always kept)."""
    if max_samples < 1:
        raise ValueError(f"max_samples must be >= 1, got {max_samples}")
    ordered = sorted(samples, key=lambda s: s.get("iteration") or 0)
    if len(ordered) <= max_samples:
        return list(ordered)
    if max_samples == 1:
        return [ordered[-1]]
    picks = sorted({round(i * (len(ordered) - 1) / (max_samples - 1)) for i in range(max_samples)})
    return [ordered[i] for i in picks]


def token_endorsement(samples: Sequence[Mapping[str, Any]], top: int = 12) -> tuple[list, list]:
    """The token strings the teacher endorses and rejects most, over all samples with a teacher.

    Returns ``(endorsed, rejected)``, each a list of ``(token, count, mean gap, mean gate or nan)``
    of tokens seen at least ``MIN_TOKEN_COUNT`` times: endorsed are those with a positive mean gap,
    highest first; rejected those with a negative one, lowest first.
    """
    totals: dict[str, list[float]] = {}
    for sample in samples:
        gaps = token_gaps(sample)
        if gaps is None:
            continue
        gate = sample.get("gate")
        for i, (token, gap) in enumerate(zip(sample["tokens"], gaps)):
            if not math.isfinite(gap):
                continue
            entry = totals.setdefault(token, [0, 0.0, 0.0, 0])
            entry[0] += 1
            entry[1] += gap
            if gate is not None and math.isfinite(_f(gate[i])):
                entry[2] += _f(gate[i])
                entry[3] += 1
    rows = [
        (tok, int(n), s / n, g / m if m else math.nan)
        for tok, (n, s, g, m) in totals.items()
        if n >= MIN_TOKEN_COUNT
    ]
    rows.sort(key=lambda r: r[2])
    endorsed = [r for r in reversed(rows) if r[2] > 0][:top]
    rejected = [r for r in rows if r[2] < 0][:top]
    return endorsed, rejected


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------
CSS = """
body { font-family: system-ui, sans-serif; margin: 0; color: #222; background: #fafafa; }
header, main { max-width: 1200px; margin: 0 auto; padding: 0 1.2em; }
h1 { margin: .6em 0 .2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; background: #fff; }
th, td { border: 1px solid #ccc; padding: .25em .6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
img.curve { max-width: 100%; border: 1px solid #ddd; background: #fff; margin: .4em 0; }
pre { white-space: pre-wrap; word-break: break-word; background: #f3f3f3; padding: .6em;
      font-size: .85em; max-height: 32em; overflow: auto; }
.radio { position: absolute; opacity: 0; pointer-events: none; }
.toolbar { position: sticky; top: 0; background: #fafafa; padding: .5em 0; z-index: 1;
           border-bottom: 1px solid #ddd; }
.toolbar label { border: 1px solid #888; border-radius: 4px; padding: .15em .6em; cursor: pointer;
                 margin-right: .3em; }
#view-gate:checked ~ main label[for=view-gate], #view-gap:checked ~ main label[for=view-gap]
  { background: #333; color: #fff; }
.legend { display: flex; align-items: center; gap: .8em; margin: .5em 0; flex-wrap: wrap; }
.tables { display: flex; align-items: flex-start; gap: 1.2em; flex-wrap: wrap; }
.scale { width: 260px; height: 14px; border: 1px solid #999;
         background: linear-gradient(to right, @RED@, #ffffff, @GREEN@); }
.sample { background: #fff; border: 1px solid #ddd; border-left: 5px solid #bbb; margin: .8em 0;
          padding: .5em .8em; }
.sample.won { border-left-color: @GREEN@; } .sample.lost { border-left-color: @RED@; }
.facts { font-weight: 600; font-size: .9em; } .stats { color: #555; font-size: .85em; }
.note { color: #7a5a00; font-size: .85em; margin: .3em 0; }
.response { font-family: ui-monospace, monospace; font-size: .9em; white-space: pre-wrap;
            word-break: break-word; line-height: 1.7; margin-top: .4em; }
.tok { background: var(--g, transparent); border-radius: 2px;
       box-shadow: inset -1px 0 0 rgba(0,0,0,.12); }
#view-gap:checked ~ main .tok { background: var(--d, transparent); }
.tok:hover { outline: 1px solid #000; }
.tok.empty::after { content: "\\2205"; color: #999; }
code.t { white-space: pre; background: #eee; padding: 0 .2em; }
""".replace("@RED@", diverging_colour(-1.0)).replace("@GREEN@", diverging_colour(1.0))


def render_page(
    *,
    title: str,
    table: SuccessTable | None,
    summary_rows: Sequence[tuple[str, str]],
    evals: Sequence[Mapping[str, Any]],
    figures: Sequence[Path],
    samples: Sequence[Mapping[str, Any]],
    max_samples: int = 200,
    config_text: str | None = None,
) -> str:
    """The whole report page as one string.

    Args:
        title: page heading (the run's name).
        table: the validation success table, or ``None`` when the run never validated.
        summary_rows: (metric, value) pairs of the last training iteration, already formatted.
        evals: ``eval/*.json`` results (each with ``"file"`` added), or error entries
            ``{"file", "error"}``.
        figures: PNG files to embed (inlined as base64).
        samples: all samples of the run; at most ``max_samples`` are shown.
        config_text: the run's ``config.yaml`` text, shown collapsed.
    """
    e = html.escape
    # Samples of a method without a gate carry no "gate" field: open on the gap view then.
    gated = any(s.get("gate") is not None for s in samples)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{e(title)} - SDAR report</title>",
        f"<style>{CSS}</style></head><body>",
        # The radio buttons precede <main> so that CSS sibling selectors can switch the colouring.
        f'<input type="radio" class="radio" name="view" id="view-gate"{" checked" if gated else ""}>',
        f'<input type="radio" class="radio" name="view" id="view-gap"{"" if gated else " checked"}>',
        f"<main><h1>{e(title)}</h1>",
    ]
    if config_text is not None:
        parts.append(
            f"<details><summary>resolved config</summary><pre>{e(config_text)}</pre></details>"
        )

    parts.append("<h2>Validation success</h2>")
    parts.append(
        _success_html(table) if table else "<p>No validation success was logged in this run.</p>"
    )
    if summary_rows:
        parts.append(
            "<h2>Last training iteration</h2><table><tr><th>metric</th><th>value</th></tr>"
        )
        parts += [f"<tr><td>{e(k)}</td><td>{e(v)}</td></tr>" for k, v in summary_rows]
        parts.append("</table>")
    if evals:
        parts.append("<h2>Evaluations</h2>" + _evals_html(evals))

    parts.append("<h2>Training curves</h2>")
    for path in figures:
        data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
        parts.append(
            f'<div><img class="curve" alt="{e(Path(path).stem)}" '
            f'src="data:image/png;base64,{data}"></div>'
        )

    parts.append(_samples_html(samples, max_samples))
    parts.append("</main></body></html>")
    return "\n".join(parts)


def _samples_html(samples: Sequence[Mapping[str, Any]], max_samples: int) -> str:
    e = html.escape
    red, green = gate_colour(0.0), gate_colour(1.0)
    out = [
        "<h2>Agent turns, token by token</h2>",
        '<div class="toolbar">colour by: <label for="view-gate">SDAR gate</label>'
        '<label for="view-gap">teacher - student gap</label></div>',
        '<div class="legend"><span>rejected</span><span class="scale"></span>'
        "<span>endorsed</span></div>",
        "<p>Each token of a sampled response is re-scored by the teacher: the same model with "
        "the privileged skills in its prompt. The <b>gap</b> is teacher log-prob minus student "
        "log-prob of the sampled token, and the <b>gate</b> is the weight the method's loss "
        "gave it at training time: sigmoid(beta &times; gap) for the default gap gate (methods "
        "without a gate log none). "
        f'<span style="background:{green}">Endorsed</span> tokens (gate &gt; 0.5, positive gap) '
        "are ones the teacher finds more likely than the student did: the SDAR term reinforces "
        f'them with a weight near 1. <span style="background:{red}">Rejected</span> tokens '
        "(gate &lt; 0.5, negative gap) are ones the teacher finds less likely: they are simply "
        "not reinforced (weight near 0), never pushed down. White is neutral (gate 0.5, gap 0). "
        "The gate view uses the gate logged at training time; the gap view is linear in the gap "
        f"and saturates at &plusmn;{GAP_SCALE:g} nats. "
        "Hover over a token for its numbers.</p>",
    ]
    if not samples:
        out.append("<p>No samples were logged (samples.jsonl is missing or empty).</p>")
        return "\n".join(out)
    endorsed, rejected = token_endorsement(samples)
    if endorsed or rejected:
        out.append(
            f"<h3>Tokens the teacher endorses and rejects most (seen at least {MIN_TOKEN_COUNT} "
            "times, all logged samples)</h3>"
        )
        out.append('<div class="tables">')
        for heading, rows in (("most endorsed", endorsed), ("most rejected", rejected)):
            out.append(
                f"<table><tr><th>{heading}</th><th>count</th><th>mean gap</th>"
                "<th>mean gate</th></tr>"
            )
            for token, count, gap, gate in rows:
                out.append(
                    f'<tr><td><code class="t" style="background:{gap_colour(gap)}">{e(repr(token))}'
                    f"</code></td><td>{count}</td><td>{gap:+.3f}</td><td>{_num(gate)}</td></tr>"
                )
            out.append("</table>")
        out.append("</div>")
    shown = select_samples(samples, max_samples)
    if len(shown) < len(samples):
        out.append(
            f"<p>Showing {len(shown)} of {len(samples)} logged samples, spread evenly over the run "
            "(<code>sdar report --max-samples</code> shows more).</p>"
        )
    out += [render_sample(s) for s in shown]
    return "\n".join(out)


def _success_html(table: SuccessTable) -> str:
    e = html.escape
    rows = [
        f"<table><tr><th>{e(table.key)} (%)</th><th>start (it {table.start})</th>"
        f"<th>best (it {table.best})</th><th>last (it {table.last})</th><th>last - start</th></tr>"
    ]
    for name, (start, best, last) in table.rows.items():
        cells = [_pct(start), _pct(best), _pct(last), _pct(last - start, sign=True)]
        rows.append(f"<tr><td>{e(name)}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    rows.append(
        "</table><p>best = the validation with the highest overall success (earliest on ties); "
        "the per-type values are read at that same iteration.</p>"
    )
    return "\n".join(rows)


def _evals_html(evals: Sequence[Mapping[str, Any]]) -> str:
    e = html.escape
    types = sorted({t for ev in evals for t in (ev.get("per_task_type") or {})})
    head = "".join(f"<th>{e(t)}</th>" for t in types)
    rows = [
        f"<table><tr><th>file</th><th>checkpoint</th><th>split</th><th>success (%)</th>{head}</tr>"
    ]
    for ev in evals:
        if "error" in ev:
            rows.append(
                f"<tr><td>{e(ev['file'])}</td><td colspan='{3 + len(types)}'>unreadable: "
                f"{e(ev['error'])}</td></tr>"
            )
            continue
        per_type = ev.get("per_task_type") or {}
        cells = [
            str(ev.get("checkpoint", "")),
            str(ev.get("split", "")),
            _pct(_f(ev.get("success"))),
        ]
        cells += [_pct(_type_success(per_type.get(t))) for t in types]
        rows.append(
            f"<tr><td>{e(ev['file'])}</td>" + "".join(f"<td>{e(c)}</td>" for c in cells) + "</tr>"
        )
    rows.append("</table>")
    return "\n".join(rows)


def _f(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def _num(value: Any, sign: bool = False) -> str:
    value = _f(value)
    if not math.isfinite(value):
        return "n/a"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def _type_success(value: Any) -> float:
    """A per-task-type entry is a success rate or a mapping holding one under ``"success"``."""
    if isinstance(value, Mapping):
        value = value.get("success")
    return _f(value)
