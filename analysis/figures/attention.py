"""Figures of attention patterns and head scores."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.attention import AttentionResult
from analysis.errors import OptionError
from analysis.figures.style import SEQUENTIAL, base_layout, pool_for_drawing, position_labels
from analysis.head_scores import HeadScoresResult
from analysis.hooks import head_label


def head_scores_figure(result: HeadScoresResult, score: str) -> go.Figure:
    """A layer x head heatmap of one score; hover shows the head label and value.

    Example:
        >>> head_scores_figure(run_head_scores(model), "induction").show()   # doctest: +SKIP
    """
    if score not in result.scores:
        raise OptionError(f"unknown score {score!r}; valid: {', '.join(result.scores)}")
    values = result.scores[score]
    n_layers, n_heads = values.shape
    labels = [[head_label(layer, head) for head in range(n_heads)] for layer in range(n_layers)]
    fig = go.Figure(
        go.Heatmap(
            z=values.tolist(),
            x=list(range(n_heads)),
            y=list(range(n_layers)),
            customdata=labels,
            colorscale=SEQUENTIAL,
            zmin=0,
            zmax=1,
            hovertemplate="%{customdata}: %{z:.3f}<extra></extra>",
            colorbar=dict(title=score.replace("_", " ")),
        )
    )
    fig.update_xaxes(title="head", dtick=1)
    fig.update_yaxes(title="layer", dtick=1, autorange="reversed")
    height = max(300, min(900, 40 + 22 * n_layers))
    return base_layout(fig, f"{score.replace('_', ' ')} score · {result.model_name}", height)


def attention_pattern_figure(
    result: AttentionResult, layer: int, head: int, *, window: tuple[int, int] | None = None
) -> go.Figure:
    """One head's ``[query, key]`` pattern with token labels and weights on hover.

    Long prompts stay responsive: ``window`` restricts the drawn query/key range, and what is
    still longer than 256 positions is max-pooled into blocks for drawing (the data is intact
    in ``result``).
    """
    pattern = result.pattern(layer, head)
    labels = position_labels(result.tokens)
    if window is not None:
        start, end = window
        if not 0 <= start < end <= len(labels):
            raise OptionError(f"window {window} must lie within 0..{len(labels)}")
        pattern, labels = pattern[start:end, start:end], labels[start:end]
    drawn, rows, cols, factors = pool_for_drawing(pattern, labels, labels)
    fig = go.Figure(
        go.Heatmap(
            z=drawn.tolist(),
            x=cols,
            y=rows,
            colorscale=SEQUENTIAL,
            zmin=0,
            zmax=1,
            hovertemplate="query %{y}<br>key %{x}<br>weight %{z:.3f}<extra></extra>",
        )
    )
    fig.update_xaxes(title="key", type="category", tickangle=-45)
    fig.update_yaxes(title="query", type="category", autorange="reversed")
    note = "" if factors == (1, 1) else f" (drawn max-pooled ×{factors[0]})"
    return base_layout(fig, f"{head_label(layer, head)} attention{note}", 560)


def layer_grid_figure(result: AttentionResult, layer: int, *, columns: int = 4) -> go.Figure:
    """Small multiples: every held head of one layer."""
    heads = result.heads
    rows = (len(heads) + columns - 1) // columns
    fig = make_subplots(rows=rows, cols=columns, subplot_titles=[head_label(layer, h) for h in heads],
                        horizontal_spacing=0.03, vertical_spacing=0.08)  # fmt: skip
    labels = position_labels(result.tokens)
    for index, head in enumerate(heads):
        drawn, qs, ks, _ = pool_for_drawing(result.pattern(layer, head), labels, labels)
        fig.add_trace(
            go.Heatmap(
                z=drawn.tolist(),
                x=ks,
                y=qs,
                colorscale=SEQUENTIAL,
                zmin=0,
                zmax=1,
                showscale=index == 0,
                hovertemplate=f"{head_label(layer, head)}<br>q %{{y}}<br>k %{{x}}<br>%{{z:.3f}}<extra></extra>",
            ),
            row=index // columns + 1,
            col=index % columns + 1,
        )
    fig.update_xaxes(showticklabels=False, type="category")
    fig.update_yaxes(showticklabels=False, type="category", autorange="reversed")
    return base_layout(fig, f"layer {layer}: all heads", 220 * rows + 60)
