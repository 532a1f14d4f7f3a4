"""Quality against KV-cache bytes per token, as geometry for an inline SVG, with the Pareto front.

This module only computes numbers and label strings; the template draws the SVG elements, so every
label from a result file goes through Jinja's autoescaping like the rest of the page.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

LONG_KEY = "kv_bytes_at_32k"  # a row's declared cache bytes at model.LONG_CONTEXT tokens
WIDTH, HEIGHT = 440, 270
LEFT, RIGHT, TOP, BOTTOM = 60, 18, 14, 42


def pareto_front(points: Sequence[tuple[float, float]], higher_is_better: bool) -> list[int]:
    """Indices of the points no other point beats on both axes (fewer bytes, better quality).

    Args:
        points: (bytes per token, quality) pairs.
        higher_is_better: The quality's direction.

    Returns:
        Indices on the front, ordered by bytes then quality (best first).
    """
    sign = 1.0 if higher_is_better else -1.0

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        no_worse = a[0] <= b[0] and sign * a[1] >= sign * b[1]
        return no_worse and (a[0] < b[0] or sign * a[1] > sign * b[1])

    front = [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda i: (points[i][0], -sign * points[i][1], i))


def _nice_step(span: float, count: int) -> float:
    raw = span / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    return next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)


def _linear_ticks(low: float, high: float, count: int = 5) -> list[float]:
    step = _nice_step(high - low, count)
    start = math.ceil(low / step) * step
    ticks, value = [], start
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _bytes_label(value: float) -> str:
    if value >= 1 << 20:
        return f"{value / (1 << 20):g} MiB"
    if value >= 1 << 10:
        return f"{value / (1 << 10):g} KiB"
    return f"{value:g}"


def _x_axis(xs: list[float], span: float) -> tuple[Any, list[tuple[float, str]], bool]:
    """A log2 axis when all bytes are positive (cache sizes come in powers of two), else linear."""
    low, high = min(xs), max(xs)
    if low > 0:
        lo, hi = math.floor(math.log2(low)) - 0.5, math.ceil(math.log2(high)) + 0.5
        if hi - lo < 2:
            lo, hi = lo - 0.5, hi + 0.5
        every = max(1, math.ceil((hi - lo) / 7))
        ticks = [float(2**k) for k in range(math.ceil(lo), math.floor(hi) + 1) if k % every == 0]
        return (lambda v: LEFT + (math.log2(v) - lo) / (hi - lo) * span), [(t, _bytes_label(t)) for t in ticks], True
    pad = (high - low) * 0.1 or 1.0
    lo_l, hi_l = low - pad, high + pad
    ticks_l = _linear_ticks(lo_l, hi_l)
    return (lambda v: LEFT + (v - lo_l) / (hi_l - lo_l) * span), [(t, _bytes_label(t)) for t in ticks_l], False


def _y_axis(lows: list[float], highs: list[float], span: float) -> tuple[Any, list[tuple[float, str]]]:
    low, high = min(lows), max(highs)
    pad = (high - low) * 0.08 or max(abs(high) * 0.05, 0.01)
    lo, hi = low - pad, high + pad
    ticks = [t for t in _linear_ticks(lo, hi) if lo <= t <= hi]
    return (lambda v: TOP + (hi - v) / (hi - lo) * span), [(t, f"{t:.4g}") for t in ticks]


def _short(name: str, limit: int = 18) -> str:
    """A point label that stays inside the plot; the full name is in the point's tooltip."""
    return name if len(name) <= limit else name[: limit - 1] + "…"


CHAR_W, LABEL_H = 5.8, 11.0  # a 10px system-ui label: width per character (generous), line height
Box = tuple[float, float, float, float]  # x0, y0, x1, y1


def _overlaps(a: Box, b: Box) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def place_labels(
    points: Sequence[tuple[float, float]], labels: Sequence[str], bounds: Box
) -> list[dict[str, Any] | None]:
    """A spot for each label beside its point where it overlaps no other label, no point and stays in `bounds`.

    Points come in priority order (the first gets the first choice). Candidates: right of the point,
    then left, each level, above and below, then further up and down. A label with no free spot is
    None: its point keeps its tooltip, and the caller lists it under the plot.

    Returns:
        Per label {"x", "y", "anchor"} (SVG text position, baseline) or None.
    """
    taken: list[Box] = [(x - 5, y - 5, x + 5, y + 5) for x, y in points]  # every point's marker
    out: list[dict[str, Any] | None] = []
    for (x, y), label in zip(points, labels, strict=True):
        width = len(label) * CHAR_W
        spot = None
        for dy in (-5, 4, 14, -14, 24, -24, 34, -34):
            for side in (1, -1):
                x0 = x + 7 if side > 0 else x - 7 - width
                box = (x0, y + dy - LABEL_H + 2, x0 + width, y + dy + 2)  # baseline at y + dy
                inside = bounds[0] <= box[0] and box[2] <= bounds[2] and bounds[1] <= box[1] and box[3] <= bounds[3]
                if inside and not any(_overlaps(box, t) for t in taken):
                    spot = {"x": round(x0, 2), "y": round(y + dy, 2), "anchor": "start"}
                    taken.append(box)
                    break
            if spot:
                break
        out.append(spot)
    return out


def _at_heads(rows: Sequence[Mapping[str, Any]]) -> str:
    """The suffix ", at H=8" when all these cache figures were computed at one head count; else empty."""
    heads = {r.get("n_heads") for r in rows}
    return f", at H={heads.pop()}" if len(heads) == 1 and None not in heads else ""


def cache_axis(rows: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
    """(row key, axis words) of the cache figure fronts and plots use: the declared bytes at the long
    context, where bounded and shared caches show their worth, when every row has it; else per token."""
    if rows and all(r.get(LONG_KEY) is not None for r in rows):
        return LONG_KEY, f"KV-cache bytes at {LONG_KEY.removeprefix('kv_bytes_at_')} tokens"
    return "kv_bytes_per_token", "KV-cache bytes per token"


def scatter(group: Mapping[str, Any]) -> dict[str, Any]:
    """SVG geometry for one task group: fresh ok rows with a cache size, CI bars, front marked.

    Args:
        group: A group from `model.make_groups`.

    Returns:
        A dict with the canvas size, axis ticks, points and the front's path; `points` is empty when
        no row has both a result and a cache size, and no point is on the front when the group's
        learning gate did not pass.
    """
    rows = [r for r in group["rows"] if r["state"] == "ok" and not r.get("ablates")]
    rows = [r for r in rows if r.get("kv_bytes_per_token") is not None]
    key, words = cache_axis(rows)
    base: dict[str, Any] = {"width": WIDTH, "height": HEIGHT, "left": LEFT, "top": TOP, "right": WIDTH - RIGHT}
    base.update(bottom=HEIGHT - BOTTOM, y_label=f"{group['metric']} ({group['direction']})")
    if not rows:
        return {**base, "points": [], "x_ticks": [], "y_ticks": [], "front_path": "", "x_label": "", "unlabelled": []}
    pts = [(float(r[key]), float(r["mean"])) for r in rows]
    # a task whose QKV does not beat the trivial baseline has no meaningful front: points only
    front = pareto_front(pts, group["higher_is_better"]) if group["gate"]["learns"] else []
    x_of, x_ticks, log = _x_axis([p[0] for p in pts], WIDTH - LEFT - RIGHT)
    y_of, y_ticks = _y_axis([r["ci95_low"] for r in rows], [r["ci95_high"] for r in rows], HEIGHT - TOP - BOTTOM)
    points = [
        {
            "cx": round(x_of(x), 2),
            "cy": round(y_of(y), 2),
            "y_lo": round(y_of(r["ci95_low"]), 2),
            "y_hi": round(y_of(r["ci95_high"]), 2),
            "label": _short(r["display_name"]),
            "title": f"{r['display_name']} ({r['variant']}): {y:.4g} at {x:g} B ({words}){_at_heads([r])}",
            "front": i in front,
        }
        for i, (r, (x, y)) in enumerate(zip(rows, pts, strict=True))
    ]
    # labels: the front first, then best quality first, so the points a reader looks for get the room
    sign = 1 if group["higher_is_better"] else -1
    order = sorted(range(len(points)), key=lambda i: (not points[i]["front"], -sign * pts[i][1], i))
    bounds = (LEFT + 1, TOP, WIDTH - 2, HEIGHT - BOTTOM - 1)
    spots = place_labels(
        [(points[i]["cx"], points[i]["cy"]) for i in order], [points[i]["label"] for i in order], bounds
    )
    unlabelled = []
    for i, spot in zip(order, spots, strict=True):
        points[i]["label_at"] = spot
        if spot is None:
            unlabelled.append(rows[i]["display_name"])
    path = " ".join(f"{'M' if k == 0 else 'L'}{points[i]['cx']},{points[i]['cy']}" for k, i in enumerate(front))
    return {
        **base,
        "points": points,
        "x_ticks": [{"pos": round(x_of(v), 2), "label": s} for v, s in x_ticks],
        "y_ticks": [{"pos": round(y_of(v), 2), "label": s} for v, s in y_ticks],
        "front_path": path,
        "unlabelled": unlabelled,
        "x_label": f"{words} (fp16{_at_heads(rows)}{', log scale' if log else ''})",
    }


def relative_scatter(points: Sequence[Mapping[str, Any]], y_label: str) -> dict[str, Any]:
    """SVG geometry for the cards' plot: KV cache as a fraction of QKV's (x, log scale) against a change in
    percent (y), each point with a bar over `low`-`high`; the same shape `scatter` gives a task group.

    Args:
        points: Each {x, y, low, high, name, variant, tasks}.
        y_label: The y axis' words.
    """
    base: dict[str, Any] = {"width": WIDTH, "height": HEIGHT, "left": LEFT, "top": TOP, "right": WIDTH - RIGHT}
    base.update(bottom=HEIGHT - BOTTOM, y_label=y_label, front_path="", x_label="KV cache / QKV's (log scale)")
    if not points:
        return {**base, "points": [], "x_ticks": [], "y_ticks": [], "unlabelled": []}
    x_of, x_ticks, _ = _x_axis([p["x"] for p in points], WIDTH - LEFT - RIGHT)
    y_of, y_ticks = _y_axis([p["low"] for p in points], [p["high"] for p in points], HEIGHT - TOP - BOTTOM)
    out = [
        {
            "cx": round(x_of(p["x"]), 2), "cy": round(y_of(p["y"]), 2),
            "y_lo": round(y_of(p["low"]), 2), "y_hi": round(y_of(p["high"]), 2),
            "label": _short(p["name"]), "front": False,
            "title": f"{p['name']} ({p['variant']}): median {p['y']:+.1f}% over {p['tasks']} task(s), "
                     f"range {p['low']:+.1f}% to {p['high']:+.1f}%; cache {p['x']:.3g} of QKV's",
        }
        for p in points
    ]  # fmt: skip
    order = sorted(range(len(out)), key=lambda i: (-points[i]["y"], i))
    bounds = (LEFT + 1, TOP, WIDTH - 2, HEIGHT - BOTTOM - 1)
    spots = place_labels([(out[i]["cx"], out[i]["cy"]) for i in order], [out[i]["label"] for i in order], bounds)
    unlabelled = []
    for i, spot in zip(order, spots, strict=True):
        out[i]["label_at"] = spot
        if spot is None:
            unlabelled.append(points[i]["name"])
    return {
        **base,
        "points": out,
        "x_ticks": [{"pos": round(x_of(v), 2), "label": f"{v:g}x"} for v, _ in x_ticks],
        "y_ticks": [{"pos": round(y_of(v), 2), "label": s} for v, s in y_ticks],
        "unlabelled": unlabelled,
    }
