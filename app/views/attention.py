"""Attention page: head-score heatmaps, click a head to see its pattern, or a layer's grid."""

from __future__ import annotations

import streamlit as st

from analysis.attention import AttentionResult, run_attention
from analysis.figures import attention_pattern_figure, head_scores_figure, layer_grid_figure
from analysis.head_scores import SCORE_NAMES, HeadScoreOptions, HeadScoresResult, run_head_scores
from app.views.inputs import clicked_cell, freeze, model_key, prompt_input, unfreeze
from models import LoadedModel


@st.cache_data(show_spinner="Scoring every head on repeated random sequences…", max_entries=16)
def cached_head_scores(
    _model: LoadedModel, key: str, n_sequences: int, seed: int
) -> HeadScoresResult:
    return run_head_scores(_model, HeadScoreOptions(n_sequences=n_sequences, seed=seed))


@st.cache_data(show_spinner="Running the model…", max_entries=32)
def cached_attention(
    _model: LoadedModel, key: str, inputs: str | tuple, layer: int
) -> AttentionResult:
    return run_attention(_model, unfreeze(inputs), layers=[layer])


def _apply_click(event, layer_key: str, head_key: str) -> None:
    """A click on the heatmap chooses that head (once per new click; the inputs stay editable)."""
    clicked = clicked_cell(event)
    if clicked is None:
        return
    if st.session_state.get("attn.last_click") != clicked:
        st.session_state["attn.last_click"] = clicked
        st.session_state[layer_key], st.session_state[head_key] = clicked


def render(model: LoadedModel) -> None:
    """Draw the attention page for ``model``."""
    cfg = model.cfg
    st.header("Attention")
    st.caption(
        "Head scores are mean attention on the expected key over repeated random sequences "
        "[BOS, x, x]: previous token, duplicate token (earlier copy), induction (token after the "
        "earlier copy), sink (first token, where no-op heads park attention)."
    )
    key = model_key(model)
    left, right = st.columns([2, 3], gap="large")
    with left:
        score = st.selectbox(
            "Score", SCORE_NAMES, index=SCORE_NAMES.index("induction"), key="attn.score"
        )
        scores = cached_head_scores(model, key, 8, 0)
        event = st.plotly_chart(
            head_scores_figure(scores, score),
            on_select="rerun",
            selection_mode="points",
            key=f"attn.heatmap.{key}.{score}",
            width="stretch",
        )
        top = ", ".join(f"{label} ({value:.2f})" for label, value in scores.top(score, 5))
        st.caption(f"Top heads: {top}")
    layer_key, head_key = f"attn.layer.{key}", f"attn.head.{key}"
    _apply_click(event, layer_key, head_key)
    with right:
        inputs = prompt_input(model, key="attn.prompt")
        c1, c2, c3 = st.columns(3)
        layer = c1.number_input("Layer", 0, cfg.n_layers - 1, key=layer_key)
        head = c2.number_input("Head", 0, cfg.n_heads - 1, key=head_key)
        view = c3.radio("View", ["One head", "Whole layer"], horizontal=True, key="attn.view")
        frozen = freeze(inputs)
        result = cached_attention(model, key, frozen, int(layer))
        if view == "One head":
            n = len(result.tokens)
            window = None
            if n > 256:
                start, end = st.slider(
                    "Window (positions drawn)", 0, n, (max(0, n - 256), n), key="attn.window"
                )
                window = (start, end) if end > start else None
            st.plotly_chart(attention_pattern_figure(result, int(layer), int(head), window=window),
                            width="stretch")  # fmt: skip
            role = (model.head_roles or {}).get(f"L{layer}H{head}")
            if role:
                st.info(f"Compiled role of L{layer}H{head}: {role}", icon=":material/construction:")
        else:
            st.plotly_chart(layer_grid_figure(result, int(layer)), width="stretch")
        st.dataframe(result.to_frame(), hide_index=True, width="stretch")
