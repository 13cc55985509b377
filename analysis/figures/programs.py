"""Figures of Transformer Programs: where one head's predicate matched and which key it chose."""

from __future__ import annotations

import plotly.graph_objects as go

from analysis.figures.style import base_layout
from rasp.programs.trace import HeadTrace

#: Cell colours: no match, predicate matches, the key the head attends to.
_SCALE = [[0.0, "#f7f7f7"], [0.33, "#f7f7f7"], [0.34, "#9ecae1"], [0.66, "#9ecae1"],
          [0.67, "#08519c"], [1.0, "#08519c"]]  # fmt: skip


def head_trace_figure(trace: HeadTrace) -> go.Figure:
    """Query x key grid of one head on one input.

    Light cells are keys whose value satisfies the head's predicate for that query; dark
    cells are the key a categorical head attends to (the nearest match, BOS when none
    matches). A numerical head counts the light cells of each row (BOS excluded).

    Args:
        trace: one head of ``rasp.programs.trace.trace_program``.

    Returns:
        A plotly heatmap with the query and key values in the axis labels and hover.
    """
    n = len(trace.tokens)
    z = [[1.0 if trace.matched[i][j] else 0.0 for j in range(n)] for i in range(n)]
    if trace.selected is not None:
        for i, j in enumerate(trace.selected):
            z[i][j] = 2.0
    ys = [
        f"{i}: {t} | {trace.q_var}={q}" for i, (t, q) in enumerate(zip(trace.tokens, trace.queries))
    ]
    xs = [f"{j}: {t} | {trace.k_var}={k}" for j, (t, k) in enumerate(zip(trace.tokens, trace.keys))]
    hover = [
        [
            f"query {ys[i]}<br>key {xs[j]}<br>looks for {trace.k_var}="
            f"{trace.rule.get(trace.queries[i])}<br>"
            + ("attended" if z[i][j] == 2 else "matches" if z[i][j] == 1 else "no match")
            for j in range(n)
        ]
        for i in range(n)
    ]
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=xs,
            y=ys,
            zmin=0,
            zmax=2,
            colorscale=_SCALE,
            showscale=False,
            hovertext=hover,
            hoverinfo="text",
            xgap=1,
            ygap=1,
        )
    )
    what = f"copies {trace.v_var}" if trace.kind == "cat" else "counts matching keys (BOS excluded)"
    fig.update_yaxes(autorange="reversed", title="query")
    fig.update_xaxes(title="key", tickangle=-45)
    return base_layout(fig, f"{trace.name}: {what}", height=260 + 28 * n)
