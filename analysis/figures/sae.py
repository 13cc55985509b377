"""Figures of SAEs: training curves and the feature dashboard (snippets, histogram, logits)."""

from __future__ import annotations

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from analysis.figures.style import SEQUENTIAL, base_layout
from analysis.sae_features import FeatureDashboard
from analysis.sae_training import SAETrainState

_CURVE_PANELS = (("mse", "Reconstruction MSE (scaled)"), ("fve", "Variance explained"),
                 ("l0", "L0 (active latents / token)"), ("dead_fraction", "Dead latents"))  # fmt: skip


def sae_training_figure(state: SAETrainState) -> go.Figure:
    """Per-step MSE, FVE, L0 and dead fraction of a training run (2 x 2 panels).

    Example:
        >>> sae_training_figure(train_sae(lm, tokens, resid_post(3))).show()   # doctest: +SKIP
    """
    fig = make_subplots(rows=2, cols=2, subplot_titles=[t for _, t in _CURVE_PANELS],
                        horizontal_spacing=0.1, vertical_spacing=0.18)  # fmt: skip
    steps = list(range(1, len(state.curves["loss"]) + 1))
    for i, (key, title) in enumerate(_CURVE_PANELS):
        fig.add_trace(go.Scatter(x=steps, y=state.curves[key], mode="lines", name=title,
                                 line=dict(color="#2166ac", width=1.5), showlegend=False),
                      row=i // 2 + 1, col=i % 2 + 1)  # fmt: skip
    fig.update_xaxes(title_text="step", row=2)
    name = state.sae.cfg.hook_name or "activations"
    arch = state.sae.cfg.architecture
    k = f", k={state.sae.cfg.k}" if arch == "topk" else ""
    return base_layout(fig, f"SAE training on {name} ({arch}{k}, d_sae={state.sae.cfg.d_sae})", 520)


def _visible(token: str) -> str:
    return token.replace("\n", "⏎").replace(" ", "·")


def feature_snippets_figure(dash: FeatureDashboard) -> go.Figure:
    """Top-activating snippets as rows of tokens coloured by the latent's activation.

    The peak token of each row sits in the same column, so what precedes and follows a peak
    lines up across snippets.
    """
    if not dash.top_snippets:
        fig = go.Figure()
        fig.add_annotation(text=f"latent {dash.latent} never fired on these tokens",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")  # fmt: skip
        return base_layout(fig, f"Latent {dash.latent}: top activations", 200)
    left = max(s.peak_index for s in dash.top_snippets)
    right = max(len(s.tokens) - s.peak_index for s in dash.top_snippets)
    width = left + right
    z, text = [], []
    for s in dash.top_snippets:
        pad = left - s.peak_index
        row = [None] * pad + s.activations + [None] * (width - pad - len(s.tokens))
        words = [""] * pad + [_visible(t) for t in s.tokens] + [""] * (width - pad - len(s.tokens))
        z.append(row)
        text.append(words)
    labels = [f"#{i + 1} ({s.peak:.2f})" for i, s in enumerate(dash.top_snippets)]
    fig = go.Figure(go.Heatmap(
        z=z, text=text, texttemplate="%{text}", textfont=dict(size=11), colorscale=SEQUENTIAL,
        zmin=0, zmax=max(dash.max_activation, 1e-9), y=labels, x=list(range(-left, right)),
        hovertemplate="%{text}<br>activation %{z:.3f}<extra></extra>", colorbar=dict(title="act"),
    ))  # fmt: skip
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text="position relative to the peak")
    height = 120 + 34 * len(dash.top_snippets)
    return base_layout(fig, f"Latent {dash.latent}: top-activating snippets", height)


def feature_histogram_figure(dash: FeatureDashboard) -> go.Figure:
    """Histogram of the latent's non-zero activations."""
    counts, edges = dash.histogram
    centres = ((edges[:-1] + edges[1:]) / 2).tolist()
    fig = go.Figure(go.Bar(x=centres, y=counts.tolist(), marker_color="#2166ac",
                           hovertemplate="activation %{x:.3f}: %{y} tokens<extra></extra>"))  # fmt: skip
    fig.update_xaxes(title_text="activation (when firing)")
    fig.update_yaxes(title_text="tokens")
    return base_layout(
        fig, f"Latent {dash.latent}: fires on {100 * dash.frequency:.2f}% of tokens", 320
    )


def feature_logits_figure(dash: FeatureDashboard) -> go.Figure:
    """Tokens the latent's decoder direction promotes (blue) and suppresses (red) via W_U."""
    tokens = [t for t, _ in reversed(dash.suppressed)] + [t for t, _ in reversed(dash.promoted)]
    values = [v for _, v in reversed(dash.suppressed)] + [v for _, v in reversed(dash.promoted)]
    fig = go.Figure(go.Bar(
        x=values, y=[f"{_visible(t)} " for t in tokens], orientation="h",
        marker_color=["#b2182b" if v < 0 else "#2166ac" for v in values],
        hovertemplate="%{y}: %{x:.3f}<extra></extra>",
    ))  # fmt: skip
    fig.update_xaxes(title_text="direct logit effect of the decoder direction")
    return base_layout(fig, f"Latent {dash.latent}: promoted and suppressed tokens",
                       120 + 18 * len(tokens))  # fmt: skip
