"""Widgets shared by analysis pages: the prompt box and cache keys."""

from __future__ import annotations

import streamlit as st
from streamlit.errors import StreamlitAPIException

from models import LoadedModel

DEFAULT_PROMPT = "The capital of France is"


def model_key(model: LoadedModel) -> str:
    """A string that identifies a loaded model for ``st.cache_data`` (models are unhashable)."""
    return f"{model.name}|{model.provenance.get('backend', '')}|{id(model.model)}"


def default_input(model: LoadedModel) -> str:
    """A sensible first input: a prompt for text models, a task example otherwise."""
    if model.codec is None:
        return DEFAULT_PROMPT
    values = list(model.codec.input_values)
    n = model.codec.max_len
    return " ".join(str(values[(5 * i + 2) % len(values)]) for i in range(n))


def prompt_input(model: LoadedModel, *, key: str) -> str | list:
    """A text box: a prompt for text models, space-separated tokens for task models.

    Returns the prompt string, or the parsed task sequence (which raises ``InputError``
    for an unknown token: the page's error boundary shows it).
    """
    label = "Prompt" if model.codec is None else "Input tokens (space separated)"
    help_text = (
        None
        if model.codec is None
        else f"valid tokens: {', '.join(map(str, model.codec.input_values))}; at most {model.codec.max_len}"
    )
    text = st.text_input(
        label, value=default_input(model), key=f"{key}.{model.name}", help=help_text
    )
    if model.codec is None:
        return text
    return [model.codec.parse_value(t) for t in text.split()]


def freeze(inputs: str | list) -> str | tuple:
    """A hashable form of page inputs, for ``st.cache_data`` keys."""
    return inputs if isinstance(inputs, str) else tuple(inputs)


def unfreeze(inputs: str | tuple) -> str | list:
    """Back from ``freeze``: what the analysis backends take."""
    return inputs if isinstance(inputs, str) else list(inputs)


def clicked_cell(event) -> tuple[int, int] | None:
    """``(row, column)`` (``(layer, head)`` on a layer x head map) of the first point a
    ``st.plotly_chart(on_select="rerun")`` event selected, or ``None``."""
    points = (event or {}).get("selection", {}).get("points", []) if event else []
    if not points:
        return None
    return int(points[0]["y"]), int(points[0]["x"])


def open_in_attention(model: LoadedModel, layer: int, head: int) -> None:
    """Preselect ``layer``/``head`` on the attention page and switch to it."""
    key = model_key(model)
    st.session_state[f"attn.layer.{key}"] = layer
    st.session_state[f"attn.head.{key}"] = head
    try:
        st.switch_page(st.Page(lambda: None, title="Attention", url_path="attention"))
    except StreamlitAPIException:
        st.info(f"Open the Attention page in the sidebar: L{layer}H{head} is preselected there.")
