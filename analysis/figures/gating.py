"""Figures of causal head gating: class and score maps, loss curves, the ablation check."""

from __future__ import annotations

import plotly.graph_objects as go

from analysis.contrastive_gating import ContrastiveGatingResult
from analysis.errors import OptionError
from analysis.figures.style import SEQUENTIAL, base_layout
from analysis.gating_ablation import AblationCheck
from analysis.head_gating import HEAD_CLASSES, STAGES, HeadGatingResult
from analysis.hooks import head_label

#: One colour per class, everywhere: blue helps, red hurts, grey does not matter.
CLASS_COLOURS = {"facilitating": "#2166ac", "interfering": "#b2182b", "irrelevant": "#d9d9d9"}
MAP_SCORES = ("class", "facilitation", "interference", "irrelevance")
_STAGE_NAMES = {"none": "λ = 0", "g_plus": "G+ (retain)", "g_minus": "G− (remove)"}
_STAGE_COLOURS = {"none": "#4d4d4d", "g_plus": "#2166ac", "g_minus": "#b2182b"}


def _map_height(n_layers: int) -> int:
    return max(300, min(900, 60 + 26 * n_layers))


def _stepped_scale() -> list[list]:
    """A discrete colourscale: class ``i`` fills ``[i/3, (i+1)/3]`` of the bar."""
    scale: list[list] = []
    n = len(HEAD_CLASSES)
    for i, cls in enumerate(HEAD_CLASSES):
        scale += [[i / n, CLASS_COLOURS[cls]], [(i + 1) / n, CLASS_COLOURS[cls]]]
    return scale


def gating_map_figure(result: HeadGatingResult, score: str = "class") -> go.Figure:
    """A layer x head map of head classes (discrete colours) or of one CHG score.

    Hover shows the head label, its class, the three scores with their spread across valid
    seeds. Clicking a cell in the app selects ``(layer=y, head=x)``.

    Args:
        result: a ``fit_head_gates`` result.
        score: ``class`` or one of ``facilitation``, ``interference``, ``irrelevance``.

    Raises:
        OptionError: for an unknown score.

    Example:
        >>> gating_map_figure(fit_head_gates(lm, data), "class").show()   # doctest: +SKIP
    """
    if score not in MAP_SCORES:
        raise OptionError(f"unknown score {score!r}; valid: {', '.join(MAP_SCORES)}")
    n_layers = len(result.classes)
    n_heads = len(result.classes[0])
    names = ("facilitation", "interference", "irrelevance")
    custom = [
        [
            [head_label(layer, head), result.classes[layer][head]]
            + [f"{float(result.scores[s][layer, head]):.3f}" for s in names]
            + [f"{float(result.score_std[s][layer, head]):.3f}" for s in names]
            for head in range(n_heads)
        ]
        for layer in range(n_layers)
    ]
    hover = (
        "<b>%{customdata[0]}</b> · %{customdata[1]}<br>"
        "facilitation %{customdata[2]} ± %{customdata[5]}<br>"
        "interference %{customdata[3]} ± %{customdata[6]}<br>"
        "irrelevance %{customdata[4]} ± %{customdata[7]}<extra></extra>"
    )
    common = dict(x=list(range(n_heads)), y=list(range(n_layers)), customdata=custom,
                  hovertemplate=hover, xgap=1, ygap=1)  # fmt: skip
    if score == "class":
        n = len(HEAD_CLASSES)
        z = [[HEAD_CLASSES.index(c) for c in row] for row in result.classes]
        trace = go.Heatmap(
            z=z,
            zmin=-0.5,
            zmax=n - 0.5,
            colorscale=_stepped_scale(),
            colorbar=dict(title="class", tickvals=list(range(n)), ticktext=list(HEAD_CLASSES)),
            **common,
        )
        counts = ", ".join(f"{k} {v}" for k, v in result.class_counts().items())
        title = f"head classes ({counts}) · {result.model_name}"
    else:
        trace = go.Heatmap(
            z=result.scores[score].tolist(),
            zmin=0,
            zmax=1,
            colorscale=SEQUENTIAL,
            colorbar=dict(title=score),
            **common,
        )
        title = f"{score} score · {result.model_name}"
    fig = go.Figure(trace)
    fig.update_xaxes(title="head", dtick=1)
    fig.update_yaxes(title="layer", dtick=1, autorange="reversed")
    return base_layout(fig, title, _map_height(n_layers))


def gating_loss_figure(result: HeadGatingResult) -> go.Figure:
    """Training loss per update of each stage (mean over seeds, every seed faint).

    G+ and G- both start from the lambda = 0 fit, so their curves are drawn after it on a
    shared step axis; the dashed line is the ungated model's loss.

    Example:
        >>> gating_loss_figure(result).show()   # doctest: +SKIP
    """
    fig = go.Figure()
    offset = 0
    for stage in STAGES:
        curve = result.loss_curves[stage]
        steps = list(range(offset, offset + curve.shape[0]))
        for seed in range(curve.shape[1]):
            fig.add_trace(
                go.Scatter(
                    x=steps,
                    y=curve[:, seed].tolist(),
                    mode="lines",
                    line=dict(color=_STAGE_COLOURS[stage], width=1),
                    opacity=0.3,
                    legendgroup=stage,
                    showlegend=False,
                    hovertemplate=f"{_STAGE_NAMES[stage]} · seed {seed}<br>"
                    "step %{x}<br>loss %{y:.4f}<extra></extra>",
                )
            )
        fig.add_trace(
            go.Scatter(
                x=steps,
                y=curve.mean(dim=1).tolist(),
                mode="lines",
                name=_STAGE_NAMES[stage],
                line=dict(color=_STAGE_COLOURS[stage], width=2.5),
                legendgroup=stage,
                hovertemplate=f"{_STAGE_NAMES[stage]} (mean)<br>step %{{x}}<br>"
                "loss %{y:.4f}<extra></extra>",
            )
        )
        if stage == "none":
            offset += curve.shape[0]
    fig.add_hline(y=result.ungated_loss, line=dict(dash="dash", color="#888888"),
                  annotation_text="ungated", annotation_position="top left")  # fmt: skip
    fig.update_xaxes(title="update (G+ and G− both continue from λ = 0)")
    fig.update_yaxes(title="loss on the batch")
    return base_layout(fig, f"gate fitting loss · {result.data_name}", 380)


def ablation_figure(check: AblationCheck) -> go.Figure:
    """Bars: loss change when every head of a class is zero-ablated together.

    Expected: facilitating > 0, irrelevant about 0, interfering < 0 (an empty class is 0).

    Example:
        >>> ablation_figure(ablation_check(lm, data, result)).show()   # doctest: +SKIP
    """
    classes = [r["class"] for r in check.rows]
    deltas = [r["delta_loss"] for r in check.rows]
    custom = [
        [r["n_heads"], ", ".join(r["heads"][:12]) + (" …" if len(r["heads"]) > 12 else ""),
         r["loss"], r["delta_accuracy"]]
        for r in check.rows
    ]  # fmt: skip
    fig = go.Figure(
        go.Bar(
            x=classes,
            y=deltas,
            marker=dict(
                color=[CLASS_COLOURS.get(c, "#888888") for c in classes],
                line=dict(color="#333333", width=1),
            ),
            text=[
                f"{d:+.3f} ({r['n_heads']} heads)" for d, r in zip(deltas, check.rows, strict=True)
            ],
            textposition="outside",
            customdata=custom,
            hovertemplate="<b>%{x}</b>: %{customdata[0]} heads<br>%{customdata[1]}<br>"
            "loss %{customdata[2]:.4f} (Δ %{y:+.4f})<br>Δ accuracy %{customdata[3]:+.3f}"
            "<extra></extra>",
        )
    )
    fig.add_hline(y=0, line=dict(color="#333333", width=1))
    fig.update_xaxes(title="class ablated")
    fig.update_yaxes(title="Δ loss vs ungated", zeroline=True)
    title = (
        f"ablation check (ungated loss {check.base_loss:.4f}, accuracy {check.base_accuracy:.3f})"
    )
    return base_layout(fig, title, 380)


def contrastive_map_figure(result: ContrastiveGatingResult) -> go.Figure:
    """A layer x head map of contrastive gates: low = needed for forget data, not for keep.

    Example:
        >>> contrastive_map_figure(fit_contrastive_head_gates(lm, a, b)).show()  # doctest: +SKIP
    """
    mean = result.mean_gates
    n_layers, n_heads = mean.shape
    std = result.gates.std(dim=0) if result.gates.shape[0] > 1 else mean * 0
    custom = [[[head_label(layer, head), float(std[layer, head])] for head in range(n_heads)]
              for layer in range(n_layers)]  # fmt: skip
    fig = go.Figure(
        go.Heatmap(
            z=mean.tolist(),
            x=list(range(n_heads)),
            y=list(range(n_layers)),
            customdata=custom,
            zmin=0,
            zmax=1,
            colorscale=SEQUENTIAL,
            xgap=1,
            ygap=1,
            colorbar=dict(title="gate"),
            hovertemplate="<b>%{customdata[0]}</b><br>gate %{z:.3f} ± %{customdata[1]:.3f}"
            "<extra></extra>",
        )
    )
    fig.update_xaxes(title="head", dtick=1)
    fig.update_yaxes(title="layer", dtick=1, autorange="reversed")
    title = f"keep {result.keep_name} · forget {result.forget_name} (low gate: forget head)"
    return base_layout(fig, title, _map_height(n_layers))
