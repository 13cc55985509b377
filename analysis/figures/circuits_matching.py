"""Figure of a head matching: the head x head similarity with the matched pairs marked."""

from __future__ import annotations

import plotly.graph_objects as go

from analysis.errors import OptionError
from analysis.figures.style import DIVERGING, SEQUENTIAL, base_layout
from analysis.head_matching import HeadMatching

#: Marker of a matched pair: filled when confident, hollow when not.
_PAIR_COLOUR = "#111111"


def matching_figure(result: HeadMatching, which: str | None = None) -> go.Figure:
    """Heatmap of the similarity of every head of A (rows) to every head of B (columns).

    Matched pairs carry a circle, filled when the pair is confident, hollow otherwise;
    hovering a circle shows the pair's similarity, margin and permutation-null z and p.
    Attention similarity (``1 - JS distance``, in [0, 1]) uses the sequential scale; effect
    correlations and the combined score the diverging one centred on 0.

    Args:
        result: a ``match_heads`` result.
        which: the matrix drawn: ``None`` (the one the assignment maximised) or one of
            ``result.similarities`` (``attention``, ``effect``); the pairs are always the
            assignment's.

    Returns:
        A plotly figure.

    Raises:
        OptionError: for a matrix the result does not hold.

    Example:
        >>> matching_figure(match_heads(rasp_sort, task_sort, seqs)).show()   # doctest: +SKIP
    """
    if which is None:
        matrix, name = result.similarity, result.kind
    elif which in result.similarities:
        matrix, name = result.similarities[which], which
    else:
        valid = ", ".join(["None", *result.similarities])
        raise OptionError(f"the matching holds no {which!r} similarity; valid: {valid}")
    scale = (
        dict(colorscale=SEQUENTIAL, zmin=0, zmax=1)
        if name == "attention"
        else dict(colorscale=DIVERGING, zmid=0, zmin=-1, zmax=1)
    )
    fig = go.Figure(
        go.Heatmap(
            z=matrix.tolist(),
            x=list(result.heads_b),
            y=list(result.heads_a),
            colorbar=dict(title=name),
            xgap=1,
            ygap=1,
            hovertemplate=f"A %{{y}} · B %{{x}}<br>{name} %{{z:.3f}}<extra></extra>",
            **scale,
        )
    )
    for confident in (True, False):
        pairs = [p for p in result.pairs if p.confident == confident]
        if not pairs:
            continue
        fig.add_trace(
            go.Scatter(
                x=[p.head_b for p in pairs],
                y=[p.head_a for p in pairs],
                mode="markers",
                name="confident match" if confident else "match (not confident)",
                marker=dict(
                    symbol="circle" if confident else "circle-open",
                    size=12,
                    color=_PAIR_COLOUR,
                    line=dict(color="#ffffff" if confident else _PAIR_COLOUR, width=2),
                ),
                customdata=[[p.similarity, p.margin, p.null_z, p.null_p] for p in pairs],
                hovertemplate="<b>A %{y} ↔ B %{x}</b><br>similarity %{customdata[0]:.3f}<br>"
                "margin %{customdata[1]:+.3f}<br>null z %{customdata[2]:.1f}, "
                "p %{customdata[3]:.3f}<extra></extra>",
            )
        )
    fig.update_xaxes(title=f"head of {result.model_b}", type="category", tickangle=-45)
    fig.update_yaxes(title=f"head of {result.model_a}", type="category", autorange="reversed")
    fig.update_layout(legend=dict(orientation="h", y=-0.25))
    n_conf = sum(p.confident for p in result.pairs)
    title = (
        f"{name} similarity · {result.model_a} vs {result.model_b} "
        f"({n_conf}/{len(result.pairs)} matches confident)"
    )
    height = max(320, min(900, 140 + 28 * len(result.heads_a)))
    return base_layout(fig, title, height)
