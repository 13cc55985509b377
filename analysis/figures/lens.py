"""Figures of lens results: the layer x position grid and per-layer curves."""

from __future__ import annotations

from typing import Literal

import plotly.graph_objects as go
from plotly.subplots import make_subplots
from torch import Tensor

from analysis.errors import OptionError
from analysis.figures.style import DIVERGING, SEQUENTIAL, base_layout, position_labels
from analysis.lens import LensResult
from analysis.residual import ResidualResult

GridColour = Literal["target_prob", "top1_prob", "entropy", "kl_to_final"]


def lens_grid_figure(
    result: LensResult, colour: GridColour = "top1_prob", *, hover_k: int = 5
) -> go.Figure:
    """Layer x position grid: each cell shows the lens's top-1 token, coloured by ``colour``;
    hover lists the top ``hover_k`` tokens with probabilities.
    """
    values = {
        "top1_prob": result.top_probs[..., 0],
        "entropy": result.entropy,
        "kl_to_final": result.kl_to_final,
        "target_prob": result.target_prob,
    }
    if colour not in values:
        raise OptionError(f"unknown colour {colour!r}; valid: {', '.join(values)}")
    z = values[colour]
    if z is None:
        raise OptionError("colour 'target_prob' needs a lens result computed with a target")
    k = min(hover_k, result.top_probs.shape[-1])
    hover = [
        [
            "<br>".join(
                f"{result.top_tokens[i][p][j]!r} {float(result.top_probs[i, p, j]):.3f}"
                for j in range(k)
            )
            for p in range(len(result.tokens))
        ]
        for i in range(len(result.layer_labels))
    ]
    text = [[_short(result.top_tokens[i][p][0]) for p in range(len(result.tokens))]
            for i in range(len(result.layer_labels))]  # fmt: skip
    fig = go.Figure(
        go.Heatmap(
            z=z.tolist(),
            x=position_labels(result.tokens),
            y=result.layer_labels,
            text=text,
            texttemplate="%{text}" if z.numel() <= 1500 else None,
            customdata=hover,
            colorscale=SEQUENTIAL if colour != "entropy" else "Viridis",
            hovertemplate="%{y} · %{x}<br>%{customdata}<extra></extra>",
            colorbar=dict(title=colour.replace("_", " ")),
        )
    )
    fig.update_xaxes(title="position", type="category", tickangle=-45)
    fig.update_yaxes(title="layer", type="category")
    title = f"{result.method} lens · {result.model_name}" + (
        f" · target {result.target!r}" if result.target else ""
    )
    return base_layout(fig, title, max(360, 24 * len(result.layer_labels) + 120))


def lens_curve_figure(results: dict[str, LensResult], *, position: int = -1) -> go.Figure:
    """Per-layer curves at one position for one or more lenses (e.g. logit vs tuned): the
    target's probability (when tracked) and the KL divergence to the final output.
    """
    if not results:
        raise OptionError("no lens results to draw")
    with_target = all(r.target_prob is not None for r in results.values())
    fig = make_subplots(rows=1, cols=2 if with_target else 1,
                        subplot_titles=(["target probability"] if with_target else []) + ["KL to final (nats)"])  # fmt: skip
    for name, result in results.items():
        x = result.layer_labels
        if with_target and result.target_prob is not None:
            fig.add_trace(go.Scatter(x=x, y=result.target_prob[:, position].tolist(), name=f"{name}: p(target)",
                                     mode="lines+markers"), row=1, col=1)  # fmt: skip
        fig.add_trace(go.Scatter(x=x, y=result.kl_to_final[:, position].tolist(), name=f"{name}: KL",
                                 mode="lines+markers"), row=1, col=2 if with_target else 1)  # fmt: skip
    fig.update_xaxes(type="category", tickangle=-45)
    return base_layout(fig, f"by layer at position {position}", 420)


def kl_by_layer_figure(curves: dict[str, Tensor], layer_labels: list[str]) -> go.Figure:
    """Mean KL to the final output by layer, one line per lens (held-out evaluation)."""
    fig = go.Figure()
    for name, values in curves.items():
        fig.add_trace(
            go.Scatter(
                x=layer_labels[: len(values)], y=values.tolist(), name=name, mode="lines+markers"
            )
        )
    fig.update_xaxes(title="layer", type="category")
    fig.update_yaxes(title="mean KL to final (nats)", type="log")
    return base_layout(fig, "lens KL on held-out text", 420)


def _short(token: str, width: int = 6) -> str:
    token = token.replace("\n", "⏎")
    return token if len(token) <= width else token[: width - 1] + "…"


def residual_figure(result: ResidualResult, layer: int) -> go.Figure:
    """One layer's residual stream: dimensions (labelled) x positions, zero rows dropped."""
    values = result.resid[layer].T  # d_model x pos
    keep = values.abs().amax(-1) > 1e-6
    rows = [label for label, k in zip(result.dim_labels, keep.tolist()) if k] or result.dim_labels
    drawn = values[keep] if keep.any() else values
    fig = go.Figure(
        go.Heatmap(z=drawn.tolist(), x=position_labels(result.tokens), y=rows, colorscale=DIVERGING,
                   zmid=0, hovertemplate="%{y} at %{x}: %{z:.3f}<extra></extra>")
    )  # fmt: skip
    fig.update_xaxes(type="category", title="position")
    fig.update_yaxes(type="category", autorange="reversed")
    return base_layout(
        fig,
        f"residual stream entering {result.layer_labels[layer]}",
        max(320, 14 * len(rows) + 120),
    )
