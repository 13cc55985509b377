"""Figures of concept tracing: counts and overlaps per layer and uncertainty level."""

from __future__ import annotations

import plotly.graph_objects as go

from analysis.concepts import ConceptTraceResult
from analysis.errors import OptionError
from analysis.figures.style import SEQUENTIAL, base_layout


def concept_curves_figure(trace: ConceptTraceResult, value: str = "count") -> go.Figure:
    """One line per layer: mean active concepts (or overlap with intact) vs uncertainty level.

    Args:
        trace: a ``run_concept_trace`` result.
        value: ``count`` or ``overlap``.

    Raises:
        OptionError: an unknown value.
    """
    if value not in ("count", "overlap"):
        raise OptionError(f"unknown value {value!r}; valid: count, overlap")
    data = trace.counts if value == "count" else trace.overlap
    n = len(trace.layers)
    fig = go.Figure()
    for i, layer in enumerate(trace.layers):
        shade = 0.25 + 0.75 * (i / max(1, n - 1))
        fig.add_trace(go.Scatter(
            x=trace.level_labels, y=data[i].tolist(), mode="lines+markers", name=f"L{layer}",
            line=dict(color=f"rgba(33,102,172,{shade:.2f})", width=1.5),
            hovertemplate=f"L{layer} %{{x}}: %{{y:.3f}}<extra></extra>",
        ))  # fmt: skip
    title = ("Active concepts per input" if value == "count"
             else "Overlap with the intact input's concepts (Jaccard)")  # fmt: skip
    fig.update_xaxes(title_text="uncertainty (intact → pure noise)")
    fig.update_yaxes(title_text="mean over inputs")
    return base_layout(fig, f"{title}, per layer", 460)


def concept_grid_figure(trace: ConceptTraceResult, value: str = "growth") -> go.Figure:
    """A layer x level heatmap of counts relative to the intact input (``growth``), raw
    ``count`` or ``overlap``; middle layers growing most shows as a bright band."""
    if value not in ("growth", "count", "overlap"):
        raise OptionError(f"unknown value {value!r}; valid: growth, count, overlap")
    if value == "growth":
        data = trace.counts / trace.counts[:, :1].clamp_min(1e-9)
    else:
        data = trace.counts if value == "count" else trace.overlap
    fig = go.Figure(go.Heatmap(
        z=data.tolist(), x=trace.level_labels, y=[f"L{layer}" for layer in trace.layers],
        colorscale=SEQUENTIAL, hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>",
        colorbar=dict(title={"growth": "× intact", "count": "count", "overlap": "Jaccard"}[value]),
    ))  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    names = {"growth": "Concept count relative to intact", "count": "Active concepts",
             "overlap": "Overlap with intact concepts"}  # fmt: skip
    return base_layout(
        fig, f"{names[value]} (layer x level)", max(320, 60 + 18 * len(trace.layers))
    )


def concept_level_figure(trace: ConceptTraceResult, level: int) -> go.Figure:
    """Bars per layer at one level (with the intact count as a line), error bars = std."""
    if not 0 <= level < len(trace.level_labels):
        raise OptionError(f"level {level} is out of range 0..{len(trace.level_labels) - 1}")
    x = [f"L{layer}" for layer in trace.layers]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=x, y=trace.counts[:, level].tolist(), name=trace.level_labels[level],
                         error_y=dict(array=trace.count_std[:, level].tolist(), visible=True),
                         marker_color="#2166ac"))  # fmt: skip
    fig.add_trace(go.Scatter(x=x, y=trace.counts[:, 0].tolist(), name="intact", mode="lines",
                             line=dict(color="#4d4d4d", dash="dash")))  # fmt: skip
    fig.update_yaxes(title_text="active concepts per input")
    return base_layout(fig, f"Active concepts per layer at '{trace.level_labels[level]}'", 380)
