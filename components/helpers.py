"""Small helpers that KFP copies into the components that use them.

A lightweight KFP component is shipped as source text, so these functions are handed to
``dsl.component(additional_funcs=...)`` (see :func:`components.make_component`) and their
source is pasted into the component's program. That is why each one imports what it needs
inside its own body, annotates only with builtins, and calls no other module-level name but
the other helpers here. Nothing in this file imports kfp; the helpers are unit-testable as
plain functions.

The report charts are inline SVG written by hand: a report needs a couple of line charts,
and adding matplotlib (tens of MB, a font cache on first use) to the images for that is
not worth it.
"""


def run_stage(stage, *args, **kwargs):
    """Call a library stage; a ScratchBertError ends the task with its one sentence, no traceback."""
    import sys

    from scratchbert.errors import ScratchBertError

    try:
        return stage(*args, **kwargs)
    except ScratchBertError as e:
        print(f"scratchbert error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def log_numbers(metrics, values: dict) -> int:
    """Log every finite number of ``values`` into a KFP ``Metrics`` artifact; return how many."""
    import math

    logged = 0
    for key in sorted(values):
        value = values[key]
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, (int, float)) and math.isfinite(value):
            metrics.log_metric(key, value)
            logged += 1
    return logged


def logging_interval(max_steps: int) -> int:
    """Log about 20 points of the loss curve on short runs, every 50 steps on long ones."""
    return max(1, min(50, max_steps // 20)) if max_steps > 0 else 50


def read_log_history(path: str) -> list:
    """A Trainer log history from ``log_history.json`` (a list, or ``{"log_history": [...]}``); [] if absent."""
    import json
    import os

    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    return data.get("log_history", []) if isinstance(data, dict) else data


def history_series(history: list, key: str) -> list:
    """``[(step, value), ...]`` of one logged quantity (entries without it are skipped)."""
    return [(entry["step"], float(entry[key])) for entry in history
            if key in entry and "step" in entry and isinstance(entry[key], (int, float))]


def format_number(value) -> str:
    """Numbers for reports: 4 significant digits for floats, ints as they are."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def html_table(rows: list, header: tuple = ("metric", "value")) -> str:
    """An HTML table of ``rows`` (tuples of cells); cells are escaped, numbers formatted."""
    import html

    def cell(value, tag):
        return f"<{tag}>{html.escape(format_number(value))}</{tag}>"

    head = "".join(cell(h, "th") for h in header)
    body = "".join("<tr>" + "".join(cell(c, "td") for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def svg_line_chart(series: dict, title: str, x_label: str = "step", y_label: str = "",
                   width: int = 640, height: int = 300) -> str:
    """An inline SVG line chart of ``{name: [(x, y), ...]}``, with axes, 5 y ticks and a legend."""
    import html

    points = [p for s in series.values() for p in s]
    if not points:
        return f"<p><em>{html.escape(title)}: nothing was logged.</em></p>"
    left, right, top, bottom = 64, 16, 28, 44
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    x1 = x1 if x1 > x0 else x0 + 1
    pad = (y1 - y0) * 0.05 or abs(y0) * 0.05 or 1.0
    y0, y1 = y0 - pad, y1 + pad

    def sx(x):
        return left + (x - x0) / (x1 - x0) * (width - left - right)

    def sy(y):
        return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
           f'<line x1="{left}" y1="{height - bottom}" x2="{width - right}" y2="{height - bottom}" stroke="#444"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#444"/>']
    for i in range(5):
        y = y0 + (y1 - y0) * i / 4
        out.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{width - right}" y2="{sy(y):.1f}" stroke="#eee"/>'
                   f'<text x="{left - 4}" y="{sy(y) + 4:.1f}" text-anchor="end">{y:.3g}</text>')
    for x in sorted({x0, (x0 + x1) / 2, x1}):
        out.append(f'<text x="{sx(x):.1f}" y="{height - bottom + 14}" text-anchor="middle">{x:.4g}</text>')
    out.append(f'<text x="{(left + width - right) / 2:.0f}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    if y_label:
        out.append(f'<text x="12" y="{(top + height - bottom) / 2:.0f}" text-anchor="middle" '
                   f'transform="rotate(-90 12 {(top + height - bottom) / 2:.0f})">{html.escape(y_label)}</text>')
    colors = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e")
    for i, (name, pts) in enumerate(series.items()):
        color = colors[i % len(colors)]
        if len(pts) == 1:
            out.append(f'<circle cx="{sx(pts[0][0]):.1f}" cy="{sy(pts[0][1]):.1f}" r="3" fill="{color}"/>')
        elif pts:
            coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{coords}"/>')
        out.append(f'<text x="{width - right - 4}" y="{top + 14 * (i + 1)}" text-anchor="end" fill="{color}">'
                   f'{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def html_page(title: str, sections: list) -> str:
    """A self-contained HTML page: a title and ``(heading, html_body)`` sections."""
    import html

    style = ("body{font-family:sans-serif;margin:1.5em;max-width:60em}"
             "table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f4f4f4}")
    body = "".join(f"<h2>{html.escape(heading)}</h2>{content}" for heading, content in sections)
    return (f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>\n")
