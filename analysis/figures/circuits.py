"""Figures of circuits and their diffs: layer x component maps, a delta map, a graph.

Maps have one column per head plus one for the layer's MLP (when scored); members are
outlined. Clicking a cell in the app selects ``(layer=y, column=x)``; ``map_node`` turns that
back into a node id. In the graph, components sit at (head, layer) with ``embed`` below and
``logits`` above; edges are coloured by what the diff says happened to them.
"""

from __future__ import annotations

import math

import plotly.graph_objects as go
import torch

from analysis.circuit_diff import CircuitDiff
from analysis.circuits import EMBED, LOGITS, Circuit, parse_node, split_edge
from analysis.figures.style import DIVERGING, SEQUENTIAL, base_layout

#: Colours of change, everywhere: green gained, red lost, blue/orange moved, grey kept.
STATUS_COLOURS = {
    "added": "#1a9850",
    "removed": "#d73027",
    "strengthened": "#2166ac",
    "weakened": "#f46d43",
    "shared": "#7f7f7f",
    "absent": "#e0e0e0",
}


def _columns(n_heads: int, has_mlp: bool) -> list[str]:
    return [f"H{h}" for h in range(n_heads)] + (["MLP"] if has_mlp else [])


def _has_mlp(nodes) -> bool:
    return any(parse_node(n)[0] == "mlp" for n in nodes)


def map_node(layer: int, column: int, n_heads: int) -> str:
    """The node id of a clicked map cell (the last column is the MLP when drawn)."""
    return f"L{layer}.mlp" if column >= n_heads else f"L{layer}H{column}"


def _grid(values: dict[str, float], n_layers: int, n_heads: int, has_mlp: bool) -> torch.Tensor:
    grid = torch.full((n_layers, n_heads + int(has_mlp)), float("nan"))
    for node, value in values.items():
        kind, layer, head = parse_node(node)
        if kind == "head":
            grid[layer, head] = value
        elif kind == "mlp" and has_mlp:
            grid[layer, n_heads] = value
    return grid


def _outline(fig: go.Figure, nodes, n_heads: int, colour: str, name: str) -> None:
    xs, ys = [], []
    for node in nodes:
        kind, layer, head = parse_node(node)
        xs.append(n_heads if kind == "mlp" else head)
        ys.append(layer)
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers", name=name, hoverinfo="skip",
                             marker=dict(symbol="square-open", size=22, color=colour,
                                         line=dict(width=3))))  # fmt: skip


def _heatmap(grid: torch.Tensor, text: list[list[str]], scale, zmid, cols: list[str]) -> go.Heatmap:
    finite = grid[torch.isfinite(grid)]
    bound = float(finite.abs().max()) if len(finite) else 1.0
    return go.Heatmap(
        z=[[None if math.isnan(v) else v for v in row] for row in grid.tolist()],
        x=list(range(len(cols))), y=list(range(grid.shape[0])),
        customdata=text, hovertemplate="%{customdata}<extra></extra>",
        colorscale=scale, zmid=zmid, zmin=-bound if zmid == 0 else None,
        zmax=bound if zmid == 0 else None,
    )  # fmt: skip


def _axes(fig: go.Figure, n_layers: int, cols: list[str]) -> None:
    fig.update_xaxes(title="head", tickvals=list(range(len(cols))), ticktext=cols)
    fig.update_yaxes(title="layer", tickvals=list(range(n_layers)), autorange="reversed")


def circuit_map_figure(circuit: Circuit, title: str | None = None) -> go.Figure:
    """A layer x (heads, MLP) map of one circuit's node scores, members outlined.

    Example:
        >>> circuit_map_figure(model_circuit_from_roles(lm)).show()   # doctest: +SKIP
    """
    has_mlp = _has_mlp(circuit.nodes)
    cols = _columns(circuit.n_heads, has_mlp)
    scores = circuit.scores()
    grid = _grid(scores, circuit.n_layers, circuit.n_heads, has_mlp)
    text = [[f"L{layer} {c}" for c in cols] for layer in range(circuit.n_layers)]
    for node, value in scores.items():
        kind, layer, head = parse_node(node)
        col = circuit.n_heads if kind == "mlp" else head
        role = circuit.roles.get(node, "")
        text[layer][col] = (f"{node}<br>{circuit.score_name} {value:.4g}<br>"
                            f"{'member' if node in circuit.members else 'not a member'}"
                            + (f"<br>{role}" if role else ""))  # fmt: skip
    signed = bool((circuit.node_scores < 0).any())
    fig = go.Figure(_heatmap(grid, text, DIVERGING if signed else SEQUENTIAL,
                             0 if signed else None, cols))  # fmt: skip
    _outline(fig, circuit.member_nodes(), circuit.n_heads, "#000000", "member")
    _axes(fig, circuit.n_layers, cols)
    fig.update_layout(showlegend=False)
    name = title or f"{circuit.model_name} · {circuit.data_name} · {circuit.method}"
    return base_layout(fig, name, height=max(280, min(900, 80 + 34 * circuit.n_layers)))


def circuit_delta_figure(diff: CircuitDiff, n_layers: int, n_heads: int) -> go.Figure:
    """The change of each aligned node's score, relative to each circuit's largest magnitude
    (``score_b / max|b| - score_a / max|a|``), outlined by status (added green, removed red).

    Args:
        diff: a ``diff_circuits`` result.
        n_layers, n_heads: the shape of circuit a (the reference the rows are named after).
    """
    frame = diff.frame
    has_mlp = bool((frame["kind"] == "mlp").any()) if len(frame) else False
    cols = _columns(n_heads, has_mlp)
    scale_a = float(frame["score_a"].abs().max() or 1.0) if len(frame) else 1.0
    scale_b = float(frame["score_b"].abs().max() or 1.0) if len(frame) else 1.0
    values = {r.node: r.score_b / scale_b - r.score_a / scale_a for r in frame.itertuples()}
    grid = _grid(values, n_layers, n_heads, has_mlp)
    text = [[f"L{layer} {c}: not aligned" for c in cols] for layer in range(n_layers)]
    for r in frame.itertuples():
        col = n_heads if r.kind == "mlp" else int(r.head)
        partner = "" if r.node_b == r.node else f" (b: {r.node_b}, confidence {r.confidence:.2f})"
        text[int(r.layer)][col] = (f"{r.node}{partner}<br>{r.status}<br>a {r.score_a:.4g} → "
                                   f"b {r.score_b:.4g}")  # fmt: skip
    fig = go.Figure(_heatmap(grid, text, DIVERGING, 0, cols))
    for status in ("added", "removed"):
        nodes = frame.loc[frame["status"] == status, "node"].tolist() if len(frame) else []
        if nodes:
            _outline(fig, nodes, n_heads, STATUS_COLOURS[status], status)
    _axes(fig, n_layers, cols)
    fig.update_layout(legend=dict(orientation="h", y=-0.2))
    return base_layout(fig, "Change b − a (relative)",
                       height=max(280, min(900, 80 + 34 * n_layers)))  # fmt: skip


def _position(node: str, n_layers: int, n_heads: int) -> tuple[float, float]:
    kind, layer, head = parse_node(node)
    if node == EMBED:
        return (n_heads - 1) / 2, -1.0
    if node == LOGITS:
        return (n_heads - 1) / 2, float(n_layers)
    if kind == "mlp":
        return float(n_heads), layer + 0.35
    return float(head), float(layer)


def circuit_graph_figure(
    diff: CircuitDiff,
    n_layers: int,
    n_heads: int,
    *,
    max_edges: int = 150,
    max_labels: int = 48,
) -> go.Figure:
    """The two circuits as one graph: node colour = node status, edge colour = edge status
    (added green, removed red, strengthened blue, weakened orange, shared grey), width by the
    larger relative score. Edges in neither circuit are not drawn; at most ``max_edges`` of
    the largest changes are. Node-level diffs draw the nodes only. Past ``max_labels`` nodes,
    only nodes of either circuit are labelled and the others drawn small (all keep hovers).
    """
    fig = go.Figure()
    edges = diff.edge_frame
    if len(edges):
        edges = edges[edges["in_a"] | edges["in_b"]]
        sa = float(edges["score_a"].abs().max() or 1.0) if len(edges) else 1.0
        sb = float(edges["score_b"].abs().max() or 1.0) if len(edges) else 1.0
        weight = (edges["score_a"].abs() / sa).combine(edges["score_b"].abs() / sb, max)
        edges = edges.assign(weight=weight).nlargest(max_edges, "weight")
        for status, group in edges.groupby("status"):
            for r in group.itertuples():
                (x0, y0), (x1, y1) = (_position(n, n_layers, n_heads) for n in split_edge(r.edge))
                fig.add_trace(go.Scatter(
                    x=[x0, x1], y=[y0, y1], mode="lines", hoverinfo="text",
                    text=f"{r.edge}: {status}, a {r.score_a:.3g} → b {r.score_b:.3g}",
                    line=dict(color=STATUS_COLOURS[str(status)], width=1 + 5 * r.weight),
                    showlegend=False, opacity=0.8,
                ))  # fmt: skip
    frame = diff.frame
    nodes = [EMBED, LOGITS] if len(diff.edge_frame) else []
    crowded = len(frame) + len(nodes) > max_labels
    xs, ys, colours, labels, texts, sizes, where = [], [], [], [], [], [], []
    for node in nodes:
        x, y = _position(node, n_layers, n_heads)
        xs.append(x), ys.append(y), colours.append("#000000"), labels.append(node)
        texts.append(node), sizes.append(16), where.append("top center")
    for r in frame.itertuples():
        x, y = _position(r.node, n_layers, n_heads)
        xs.append(x), ys.append(y)
        colours.append(STATUS_COLOURS[r.status])
        labels.append(f"{r.node}: {r.status}<br>a {r.score_a:.3g} → b {r.score_b:.3g}")
        quiet = crowded and r.status == "absent"
        texts.append("" if quiet else r.node), sizes.append(7 if quiet else 16)
        # MLPs of consecutive layers share a column: labels beside them do not collide
        where.append("middle left" if r.node.endswith(".mlp") else "top center")
    fig.add_trace(go.Scatter(x=xs, y=ys, mode="markers+text", hoverinfo="text",
                             hovertext=labels, text=texts, textposition=where,
                             showlegend=False,
                             marker=dict(size=sizes, color=colours, line=dict(width=1, color="#333"))))  # fmt: skip
    for status, colour in STATUS_COLOURS.items():
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name=status,
                                 marker=dict(size=10, color=colour)))  # fmt: skip
    fig.update_xaxes(visible=False)
    fig.update_yaxes(title="layer", tickvals=list(range(-1, n_layers + 1)),
                     ticktext=["embed", *map(str, range(n_layers)), "logits"])  # fmt: skip
    fig.update_layout(legend=dict(orientation="h", y=-0.08))
    title = "Circuit graph: edges and nodes by change" if len(diff.edge_frame) else (
        "Circuit nodes by change (node-level circuits: no edges)")  # fmt: skip
    return base_layout(fig, title, height=max(360, min(1000, 120 + 60 * n_layers)))
