"""Figures of the hallucination predictor, the CASAL direction and steering effects."""

from __future__ import annotations

import plotly.graph_objects as go

from analysis.figures.style import base_layout
from analysis.hallucination import HallucinationPredictorResult, KnownUnknownResult
from analysis.steering import SteeringEffect

_COLOURS = {"pls_concepts": "#2166ac", "logreg_concepts": "#67a9cf", "pls_raw": "#b2182b",
            "logreg_raw": "#ef8a62"}  # fmt: skip
_NAMES = {"pls_concepts": "PLS, SAE concepts", "logreg_concepts": "logistic, SAE concepts",
          "pls_raw": "PLS, raw residual", "logreg_raw": "logistic, raw residual"}  # fmt: skip


def roc_figure(result: HallucinationPredictorResult) -> go.Figure:
    """Cross-validated ROC curves of every predictor, AUROC in the legend."""
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line=dict(color="#bdbdbd", dash="dot")))  # fmt: skip
    for key, (fpr, tpr) in result.roc.items():
        fig.add_trace(go.Scatter(x=fpr, y=tpr, mode="lines", name=f"{_NAMES.get(key, key)} "
                                 f"(AUROC {result.auroc[key]:.3f})",
                                 line=dict(color=_COLOURS.get(key), width=2)))  # fmt: skip
    fig.update_xaxes(title_text="false positive rate", range=[0, 1])
    fig.update_yaxes(title_text="true positive rate (hallucinations caught)", range=[0, 1])
    title = (f"Predicting wrong answers from layer {result.layer} "
             f"({result.n_hallucinated}/{result.n} wrong, out-of-fold)")  # fmt: skip
    return base_layout(fig, title, 460)


def known_unknown_figure(result: KnownUnknownResult) -> go.Figure:
    """Per layer: silhouette of known / unknown residuals and the direction's held-out AUROC."""
    x = [f"L{layer}" for layer in result.layers]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=x, y=result.silhouette.tolist(), name="silhouette",
                         marker_color="#2166ac"))  # fmt: skip
    fig.add_trace(go.Scatter(x=x, y=result.projection_auroc.tolist(), name="projection AUROC",
                             mode="lines+markers", yaxis="y2", line=dict(color="#b2182b")))  # fmt: skip
    fig.update_layout(yaxis=dict(title="silhouette score"),
                      yaxis2=dict(title="AUROC (held out)", overlaying="y", side="right",
                                  range=[0, 1]))  # fmt: skip
    return base_layout(fig, f"Known vs unknown questions per layer ({result.n_known} right, "
                       f"{result.n_unknown} wrong)", 400)  # fmt: skip


def steering_sweep_figure(effects: list[tuple[float, SteeringEffect]]) -> go.Figure:
    """Mean change in target log-probability (with its spread) and KL, vs steering strength."""
    xs = [a for a, _ in effects]
    fig = go.Figure()
    fig.add_trace(go.Scatter(
        x=xs, y=[e.mean_delta for _, e in effects], name="Δ log p(target tokens)",
        error_y=dict(array=[float(e.delta_logprob.std()) if e.delta_logprob.numel() > 1 else 0
                            for _, e in effects]),
        mode="lines+markers", line=dict(color="#2166ac"),
    ))  # fmt: skip
    fig.add_trace(go.Scatter(x=xs, y=[float(e.kl.mean()) for _, e in effects], name="KL(clean‖steered)",
                             mode="lines+markers", line=dict(color="#b2182b", dash="dash")))  # fmt: skip
    fig.update_xaxes(title_text="steering strength")
    fig.update_yaxes(title_text="nats")
    return base_layout(fig, "Steering effect vs strength (mean over prompts)", 380)
