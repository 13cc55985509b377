"""Per-layer curves: linear-probe accuracy against its shuffled control, logit-lens accuracy."""

from __future__ import annotations

import plotly.graph_objects as go

from analysis.figures.style import base_layout
from analysis.lens_accuracy import LensAccuracyResult
from analysis.linear_probes import LinearProbeResult


def linear_probe_figure(result: LinearProbeResult, title: str | None = None) -> go.Figure:
    """Held-out probe accuracy by layer (band: spread over folds), the shuffled-label control and
    the majority-class baseline."""
    x = result.layer_labels
    fig = go.Figure()
    for name, mean, std, colour in (
        ("probe (held out)", result.accuracy, result.accuracy_std, "#1f77b4"),
        ("shuffled-label control", result.control_accuracy, result.control_std, "#7f7f7f"),
    ):
        fig.add_trace(
            go.Scatter(
                x=x,
                y=mean.tolist(),
                name=name,
                mode="lines+markers",
                line=dict(color=colour),
                error_y=dict(type="data", array=std.tolist(), visible=True, thickness=1),
            )
        )
    fig.add_trace(
        go.Scatter(
            x=x,
            y=result.train_accuracy.tolist(),
            name="probe (train)",
            mode="lines",
            line=dict(color="#1f77b4", dash="dot"),
        )
    )
    fig.add_hline(
        y=result.majority_baseline,
        line=dict(color="#d62728", dash="dash", width=1),
        annotation_text="majority class",
        annotation_position="bottom right",
    )
    fig.update_xaxes(title="residual stream read at", type="category", tickangle=-45)
    fig.update_yaxes(title="accuracy", range=[0, 1.02])
    heading = title or f"linear probe · {result.model_name} · {result.n_examples} examples"
    return base_layout(fig, heading, 420)


def lens_accuracy_figure(result: LensAccuracyResult) -> go.Figure:
    """Logit-lens top-1 accuracy against the target and agreement with the model's own top-1,
    by layer."""
    x = result.layer_labels
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=x, y=result.accuracy.tolist(), name="accuracy (target)",
                             mode="lines+markers"))  # fmt: skip
    fig.add_trace(go.Scatter(x=x, y=result.agreement.tolist(), name="agreement (model top-1)",
                             mode="lines+markers"))  # fmt: skip
    fig.add_trace(go.Scatter(x=x, y=result.target_prob.tolist(), name="mean p(target)",
                             mode="lines", line=dict(dash="dot")))  # fmt: skip
    fig.update_xaxes(title="layer", type="category", tickangle=-45)
    fig.update_yaxes(title="fraction of positions", range=[0, 1.02])
    title = f"logit-lens accuracy · {result.model_name} · {result.n_positions} positions"
    return base_layout(fig, title, 420)
