"""Lens page: what each layer would predict (logit lens, or a fitted tuned lens)."""

from __future__ import annotations

import streamlit as st

from analysis.errors import OptionError
from analysis.figures import lens_curve_figure, lens_grid_figure
from analysis.lens import LensResult, run_logit_lens
from app.views.inputs import model_key, prompt_input
from models import LoadedModel

COLOURS = {"top-1 probability": "top1_prob", "target probability": "target_prob",
           "entropy": "entropy", "KL to final": "kl_to_final"}  # fmt: skip


@st.cache_data(show_spinner="Running the logit lens…", max_entries=32)
def cached_logit_lens(
    _model: LoadedModel, key: str, inputs: str | tuple, target: str | None, k: int
) -> LensResult:
    return run_logit_lens(
        _model, inputs if isinstance(inputs, str) else list(inputs), target=target, k=k
    )


def render(model: LoadedModel) -> None:
    """Draw the lens page for ``model``."""
    st.header("Logit lens")
    st.caption(
        "Each row passes the residual stream entering a block through the model's final norm "
        "and unembedding; the last row ('final') is the model's own output."
    )
    key = model_key(model)
    inputs = prompt_input(model, key="lens.prompt")
    c1, c2, c3 = st.columns([2, 2, 1])
    default_target = " Paris" if model.codec is None else ""
    target = c1.text_input(
        "Target token (optional, one token)", value=default_target, key=f"lens.target.{model.name}"
    )
    colour_label = c2.selectbox(
        "Colour cells by", list(COLOURS), index=1 if target else 0, key="lens.colour"
    )
    k = int(c3.number_input("Top-k", 1, 50, value=10, key="lens.k"))
    frozen = inputs if isinstance(inputs, str) else tuple(inputs)
    try:
        result = cached_logit_lens(model, key, frozen, target or None, k)
    except OptionError as exc:
        if not target:
            raise
        st.error(f"{exc}; showing the lens without a target.")
        result = cached_logit_lens(model, key, frozen, None, k)
    colour = COLOURS[colour_label]
    if colour == "target_prob" and result.target is None:
        st.warning("Give a target token to colour by its probability; showing top-1 probability.")
        colour = "top1_prob"
    st.plotly_chart(lens_grid_figure(result, colour), width="stretch")
    position = st.slider("Position for the curves", 0, len(result.tokens) - 1, len(result.tokens) - 1,
                         key=f"lens.position.{key}")  # fmt: skip
    st.plotly_chart(lens_curve_figure({"logit lens": result}, position=position), width="stretch")
    if result.target is not None:
        entered = result.first_layer_in_top(result.target, 5, position)
        st.metric(
            f"First layer with {result.target!r} in the top 5 at position {position}",
            entered or "never",
        )
    with st.expander("Table"):
        st.dataframe(result.to_frame(), hide_index=True, width="stretch")
