"""Home page: the loaded model's card and a quick prediction box."""

from __future__ import annotations

import random

import pandas as pd
import streamlit as st

from app.errors import error_boundary
from app.state import describe
from models import LoadedModel, ModelCard

KIND_BADGES: dict[str, tuple[str, str]] = {
    "task": ("Task model", "blue"),
    "rasp": ("Compiled RASP", "violet"),
    "program": ("Transformer Program", "orange"),
    "pretrained": ("Pretrained LM", "green"),
}

#: Provenance keys shown first, in this order; the others follow alphabetically.
_PROVENANCE_FIRST = ("task", "program", "source", "checkpoint", "path", "file", "sha256")


def render(model: LoadedModel) -> None:
    """Draw the home page for ``model``."""
    st.title("mechscope", anchor=False)
    st.caption("An interactive workbench for mechanistic interpretability of transformers.")
    card = model.card()
    _model_header(card)
    _card_metrics(card)
    st.space("small")
    if model.codec is not None:
        _predict_box(model)
    else:
        _generate_box(model)
    st.space("small")
    _provenance(card, model.head_roles)


def format_count(n: int) -> str:
    """``1234567`` -> ``'1.23M'``: a parameter count for a metric tile."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g}{suffix}"
    return str(n)


def _model_header(card: ModelCard) -> None:
    label, color = KIND_BADGES.get(card.kind, (card.kind, "gray"))
    st.subheader(f"`{card.name}` :{color}-badge[{label}]", anchor=False)
    description = describe(card.name)
    if description:
        st.markdown(description)


def _card_metrics(card: ModelCard) -> None:
    vocab = str(card.d_vocab)
    if card.d_vocab_out != card.d_vocab:
        vocab = f"{card.d_vocab} → {card.d_vocab_out}"
    tiles = [
        ("Layers", str(card.n_layers), "n_layers: transformer blocks"),
        ("Heads", str(card.n_heads), "n_heads: attention heads per layer"),
        ("d_model", str(card.d_model), "width of the residual stream"),
        ("d_head", str(card.d_head), "width of each head's queries, keys and values"),
        ("d_mlp", "none" if card.d_mlp is None else str(card.d_mlp), "MLP hidden width"),
        ("Vocab", vocab, "input vocabulary size (→ output classes when they differ)"),
        ("Context", str(card.n_ctx), "n_ctx: longest sequence, BOS included"),
        ("Parameters", format_count(card.n_params), f"{card.n_params:,} parameters"),
    ]
    for row in (tiles[:4], tiles[4:]):
        for column, (label, value, help_text) in zip(st.columns(len(row)), row):
            column.metric(label, value, help=help_text, border=True)


def _provenance(card: ModelCard, head_roles: dict[str, str] | None) -> None:
    if card.provenance:
        keys = [k for k in _PROVENANCE_FIRST if k in card.provenance]
        keys += sorted(k for k in card.provenance if k not in keys)
        frame = pd.DataFrame(
            {"field": keys, "value": [str(card.provenance[k]) for k in keys]},
        )
        with st.expander("Provenance", expanded=True, icon=":material/history_edu:"):
            st.dataframe(frame, hide_index=True, width="stretch")
    if head_roles:
        roles = pd.DataFrame({"head": list(head_roles), "role": list(head_roles.values())})
        with st.expander("Head roles (known by construction)", icon=":material/hub:"):
            st.dataframe(roles, hide_index=True, width="stretch")


def example_input(model: LoadedModel, length: int = 5) -> str:
    """A deterministic example input for a task-vocabulary model, space separated."""
    assert model.codec is not None
    values = [str(v) for v in model.codec.input_values]
    rng = random.Random(0)
    return " ".join(rng.choice(values) for _ in range(min(length, model.codec.max_len)))


def _predict_box(model: LoadedModel) -> None:
    codec = model.codec
    assert codec is not None
    st.subheader("Try it", anchor=False)
    vocabulary = " ".join(str(v) for v in codec.input_values)
    left, right = st.columns([2, 3], gap="large")
    text = left.text_input(
        "Input tokens (space separated)",
        value=example_input(model),
        key=f"home.predict.{model.name}",
        help=f"Up to {codec.max_len} tokens from the vocabulary: {vocabulary}",
    )
    left.caption(f"Vocabulary: {vocabulary} · at most {codec.max_len} tokens · press Enter")
    with right, error_boundary("running the model"):
        values = [codec.parse_value(token) for token in text.split()]
        outputs = model.predict(values)
        table = pd.DataFrame(
            [[str(v) for v in values], [str(v) for v in outputs]],
            index=["input", "output"],
            columns=[str(i) for i in range(len(values))],
        )
        st.markdown("**Prediction** · one output per input position")
        st.table(table)


@st.cache_data(
    show_spinner=False,
    max_entries=64,
    hash_funcs={LoadedModel: lambda m: (m.name, tuple(sorted(m.provenance.items())))},
)
def _greedy_completion(model: LoadedModel, prompt: str, max_new_tokens: int) -> str:
    return model.generate(prompt, max_new_tokens)


def _generate_box(model: LoadedModel) -> None:
    st.subheader("Try it", anchor=False)
    with st.form(f"home.generate.{model.name}"):
        prompt = st.text_area("Prompt", value="The capital of France is", height=80)
        max_new = st.slider("New tokens", min_value=1, max_value=64, value=16)
        submitted = st.form_submit_button("Generate (greedy)", type="primary")
    if not submitted:
        return
    with error_boundary("generating"), st.spinner("Generating…"):
        completion = _greedy_completion(model, prompt, max_new)
        st.markdown("**Completion**")
        st.markdown(f"{_escape(prompt)}**{_escape(completion)}**")


def _escape(text: str) -> str:
    """Escape Markdown so a prompt is shown as typed."""
    special = "\\`*_{}[]()#+-.!|<>~$"
    return "".join("\\" + c if c in special else c for c in text).replace("\n", "  \n")
