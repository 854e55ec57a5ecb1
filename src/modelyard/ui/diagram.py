"""Server-side SVG diagrams of small DAGs (inference graphs, traffic splits, lineage): a
layered layout (each node one column right of the deepest node it depends on), drawn as
boxes and arrows with text labels, so no script is needed to see them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape

from modelyard.domain.graph import GraphSpec, parse, ref_node

BOX_W, BOX_H, GAP_X, GAP_Y, PAD = 170, 46, 60, 22, 12
MAX_NODES = 200  # beyond this a diagram stops being readable; the page lists them instead


@dataclass(frozen=True)
class Box:
    id: str
    label: str
    detail: str = ""
    kind: str = "node"  # node, io, current (the CSS class; shape carries meaning too)


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str = ""
    dashed: bool = False  # taken on demand only (a branch), or a lineage link


def _layers(boxes: Sequence[Box], edges: Sequence[Edge]) -> dict[str, int]:
    depth = {b.id: 0 for b in boxes}
    incoming: dict[str, list[str]] = {b.id: [] for b in boxes}
    for e in edges:
        if e.source in depth and e.target in depth:
            incoming[e.target].append(e.source)
    # Longest path by relaxation; bounded by the node count, so a cycle cannot loop forever.
    for _ in range(len(boxes)):
        changed = False
        for target, sources in incoming.items():
            for source in sources:
                if depth[source] + 1 > depth[target] and depth[source] + 1 < len(boxes):
                    depth[target] = depth[source] + 1
                    changed = True
        if not changed:
            break
    return depth


def svg(boxes: Sequence[Box], edges: Sequence[Edge], title: str) -> Markup:
    """An accessible SVG (role img, a title, every label as text)."""
    boxes = list(boxes)[:MAX_NODES]
    depth = _layers(boxes, edges)
    columns: dict[int, list[Box]] = {}
    for box in boxes:
        columns.setdefault(depth[box.id], []).append(box)
    at: dict[str, tuple[int, int]] = {}
    for column, members in columns.items():
        for row, box in enumerate(members):
            at[box.id] = (PAD + column * (BOX_W + GAP_X), PAD + row * (BOX_H + GAP_Y))
    width = PAD * 2 + (max(columns, default=0) + 1) * (BOX_W + GAP_X) - GAP_X
    height = PAD * 2 + max((len(m) for m in columns.values()), default=1) * (BOX_H + GAP_Y) \
        - GAP_Y
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="diagram" role="img" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}">'
             f"<title>{escape(title)}</title>"
             '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto-start-reverse"><path d="M0 0L10 5L0 10z" '
             'class="arrowhead"/></marker></defs>']
    for e in edges:
        if e.source not in at or e.target not in at:
            continue
        (x1, y1), (x2, y2) = at[e.source], at[e.target]
        sx, sy, tx, ty = x1 + BOX_W, y1 + BOX_H // 2, x2, y2 + BOX_H // 2
        if x2 <= x1:  # same or earlier column: go around below
            sx, sy, tx, ty = x1 + BOX_W // 2, y1 + BOX_H, x2 + BOX_W // 2, y2 + BOX_H
        mid = (sx + tx) // 2
        dash = ' stroke-dasharray="5 4"' if e.dashed else ""
        parts.append(f'<path class="edge" d="M{sx} {sy} C{mid} {sy} {mid} {ty} {tx} {ty}" '
                     f'fill="none" marker-end="url(#arrow)"{dash}/>')
        if e.label:
            parts.append(f'<text class="edge-label" x="{mid}" y="{(sy + ty) // 2 - 4}" '
                         f'text-anchor="middle">{escape(e.label)}</text>')
    for box in boxes:
        x, y = at[box.id]
        rx = 22 if box.kind == "io" else 6
        parts.append(f'<g class="box {escape(box.kind)}"><rect x="{x}" y="{y}" '
                     f'width="{BOX_W}" height="{BOX_H}" rx="{rx}"/>'
                     f'<text x="{x + 10}" y="{y + 19}" class="box-label">'
                     f"{escape(_fit(box.label, 24))}</text>")
        if box.detail:
            parts.append(f'<text x="{x + 10}" y="{y + 36}" class="box-detail">'
                         f"{escape(_fit(box.detail, 28))}</text>")
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _fit(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def graph_diagram(document: Mapping[str, Any]) -> Markup:
    """An inference graph: its inputs, nodes (kind and model), outputs; branch edges dashed."""
    spec: GraphSpec = parse(document)
    boxes = [Box("inputs", "inputs", ", ".join(s.name for s in spec.inputs), "io")]
    edges: list[Edge] = []
    for node in spec.nodes.values():
        boxes.append(Box(node.name, node.name, f"{node.kind}"
                         f"{': ' + node.model if node.model else ''}"))
        for ref in node.reads():
            source = ref_node(ref)
            if source:
                edges.append(Edge(source, node.name))
        for member in node.members:
            edges.append(Edge(member, node.name))
        for branch in node.chooses():
            edges.append(Edge(node.name, branch, "branch", dashed=True))
    boxes.append(Box("outputs", "outputs", ", ".join(spec.outputs), "io"))
    for ref in spec.outputs.values():
        source = ref_node(ref)
        if source:
            edges.append(Edge(source, "outputs"))
    unique = list({(e.source, e.target, e.label): e for e in edges}.values())
    return svg(boxes, unique, f"inference graph {spec.name}")


def split_diagram(endpoint: str, split: Sequence[tuple[str, float]],
                  shadows: Sequence[tuple[str, float]] = ()) -> Markup:
    """Where an endpoint's requests go: each version with its weight; shadows dashed."""
    boxes = [Box("request", endpoint, "requests", "io")]
    edges = []
    for ref, weight in split:
        boxes.append(Box(ref, ref, f"{weight:g}% of traffic"))
        edges.append(Edge("request", ref, f"{weight:g}%"))
    for ref, sample in shadows:
        boxes.append(Box("shadow:" + ref, ref, f"shadow, {sample * 100:g}% mirrored"))
        edges.append(Edge("request", "shadow:" + ref, "mirror", dashed=True))
    return svg(boxes, edges, f"traffic of endpoint {endpoint}")


def lineage_diagram(model: str, versions: Sequence[Mapping[str, Any]],
                    current: int | None = None) -> Markup:
    """Versions on a page and their parents (``lineage.parent``, e.g. ``churn:2``)."""
    boxes, edges, known = [], [], set()
    for v in versions:
        ref = f"{model}:{v['version']}"
        known.add(ref)
        detail = v.get("flavor", "")
        if v.get("aliases"):
            detail += " @" + ",".join(v["aliases"])
        boxes.append(Box(ref, ref, detail, "current" if v["version"] == current else "node"))
    for v in versions:
        parent = (v.get("lineage") or {}).get("parent")
        if parent:
            if parent not in known:
                boxes.insert(0, Box(parent, parent, "parent", "io"))
                known.add(parent)
            edges.append(Edge(parent, f"{model}:{v['version']}", "parent of", dashed=True))
    return svg(boxes, edges, f"lineage of {model}")


def line_chart(series: Mapping[str, Sequence[tuple[float, float | None]]], title: str,
               y_label: str, *, step: bool = False, width: int = 640,
               height: int = 200) -> Markup:
    """A small server-drawn chart (weights of a rollout over time, drift per window):
    one polyline per named series, dashed alternately, with a text legend and axis values.
    ``series``: name -> (unix time, value) points."""
    points = [(t, v) for s in series.values() for t, v in s if v is not None]
    if not points:
        return Markup("")
    left, right, top, bottom = 52, 12, 12, 40 + 16 * ((len(series) + 1) // 2)
    t0, t1 = min(p[0] for p in points), max(p[0] for p in points)
    v0, v1 = min(0.0, min(p[1] for p in points)), max(p[1] for p in points)
    t1, v1 = (t1 if t1 > t0 else t0 + 1), (v1 if v1 > v0 else v0 + 1)
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return top + plot_h - (v - v0) / (v1 - v0) * plot_h

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" class="linechart" role="img" '
             f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet">'
             f"<title>{escape(title)}</title>",
             f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
             'stroke="#8c959f"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#8c959f"/>']
    for value in (v0, (v0 + v1) / 2, v1):
        parts.append(f'<text x="{left - 6}" y="{y(value) + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{value:.3g}</text>')
    parts.append(f'<text x="{left}" y="{top + plot_h + 14}" font-size="11">'
                 f"{escape(_clock(t0))}</text>"
                 f'<text x="{left + plot_w}" y="{top + plot_h + 14}" font-size="11" '
                 f'text-anchor="end">{escape(_clock(t1))}</text>'
                 f'<text x="{left + 6}" y="{top + 10}" font-size="11">{escape(y_label)}'
                 "</text>")
    # Seven colours and three dash patterns: 21 series before a style repeats, and
    # neighbours differ in both (the legend names each one as well).
    colours = ("#1f6feb", "#d9480f", "#2b8a3e", "#862e9c", "#c2255c", "#495057", "#0b7285")
    dashes = ("", ' stroke-dasharray="6 4"', ' stroke-dasharray="2 3"')
    for i, (name, data) in enumerate(series.items()):
        coords: list[str] = []
        last: tuple[float, float] | None = None
        for t, v in data:
            if v is None:
                continue
            if step and last is not None:
                coords.append(f"{x(t):.1f},{y(last[1]):.1f}")
            coords.append(f"{x(t):.1f},{y(v):.1f}")
            last = (t, v)
        colour, dash = colours[i % len(colours)], dashes[i % len(dashes)]
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} '
                     f'points="{" ".join(coords)}"/>')
        for t, v in data:  # a marker per point: a single window still shows
            if v is not None:
                parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" '
                             f'fill="{colour}"/>')
        lx = left + (i % 2) * (plot_w // 2)
        ly = top + plot_h + 30 + 16 * (i // 2)
        parts.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 22}" y2="{ly - 4}" '
                     f'stroke="{colour}" stroke-width="2"{dash}/>'
                     f'<text x="{lx + 28}" y="{ly}" font-size="11">{escape(_fit(name, 40))}'
                     "</text>")
    parts.append("</svg>")
    return Markup("".join(parts))


def _clock(t: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(t, UTC).strftime("%m-%d %H:%M:%S")
