"""RASP page: pick or type a program, compare interpreter and compiled model, see its residual."""

from __future__ import annotations

import streamlit as st

from analysis.attention import run_attention
from analysis.figures import layer_grid_figure, residual_figure
from analysis.residual import run_residual
from models import LoadedModel
from models.compiled import load_compiled
from rasp import LIBRARY, PROGRAM_EXAMPLES, evaluate, parse_program

TYPED = "(type a program)"


def program_of(source: str):
    """The library program named ``source``, or the typed program text parsed safely."""
    return LIBRARY[source].build() if source in LIBRARY else parse_program(source)


@st.cache_resource(show_spinner="Compiling…", max_entries=16)
def compiled_model(source: str, vocab: tuple, max_seq_len: int) -> LoadedModel:
    """Compile a library program (``source`` = its name) or typed program text (cached)."""
    program = program_of(source)
    name = source if source in LIBRARY else "typed"
    return load_compiled(program, list(vocab), max_seq_len, name=name)


def _parse_vocab(text: str) -> tuple:
    values = []
    for item in text.replace(",", " ").split():
        values.append(int(item) if item.lstrip("-").isdigit() else item)
    return tuple(values)


def render(model: LoadedModel) -> None:
    """Draw the RASP page (it compiles its own program; the sidebar model is not used)."""
    st.header("RASP programs, compiled")
    st.caption(
        "Programs run in the reference interpreter and as a compiled TransformerLens model; "
        "the two must agree. Typed programs are parsed safely (no eval): only RASP constructors, "
        "library functions and simple lambdas are accepted."
    )
    names = [*LIBRARY, TYPED]
    choice = st.selectbox("Program", names, index=names.index("reverse"), key="rasp.choice")
    if choice == TYPED:
        example = st.selectbox("Start from example", list(PROGRAM_EXAMPLES), key="rasp.example")
        source = st.text_area(
            "Program", value=PROGRAM_EXAMPLES[example], height=180, key=f"rasp.text.{example}"
        )
        c1, c2 = st.columns(2)
        vocab = _parse_vocab(
            c1.text_input("Vocabulary (space separated)", "1 2 3", key="rasp.vocab")
        )
        max_len = int(c2.number_input("Max length", 1, 16, value=5, key="rasp.maxlen"))
    else:
        entry = LIBRARY[choice]
        st.markdown(f"**{choice}**: {entry.description}")
        source, vocab, max_len = choice, entry.vocab, entry.max_seq_len
    program_model = compiled_model(source, tuple(vocab), max_len)
    program = program_of(source)

    default = (
        " ".join(map(str, LIBRARY[choice].example[0]))
        if choice in LIBRARY
        else " ".join(map(str, vocab[:3]))
    )
    text = st.text_input("Input", value=default, key=f"rasp.input.{source}")
    sequence = [program_model.codec.parse_value(t) for t in text.split()]
    expected = evaluate(program, sequence)
    got = program_model.predict(sequence)
    agree = all(_same(a, b) for a, b in zip(expected, got))
    st.dataframe({"input": [str(v) for v in sequence], "interpreter": [str(v) for v in expected],
                  "compiled model": [_fmt(v) for v in got]}, width="stretch")  # fmt: skip
    (st.success if agree else st.error)("compiled model agrees with the interpreter" if agree
                                        else "compiled model DISAGREES with the interpreter")  # fmt: skip

    card = program_model.card()
    cols = st.columns(5)
    for col, (label, value) in zip(cols, [("layers", card.n_layers), ("heads", card.n_heads),
                                          ("d_model", card.d_model), ("d_mlp", card.d_mlp),
                                          ("parameters", f"{card.n_params:,}")]):  # fmt: skip
        col.metric(label, value)
    st.subheader("Head roles (by construction)")
    st.dataframe([{"component": k, "computes": v} for k, v in (program_model.head_roles or {}).items()],
                 hide_index=True, width="stretch")  # fmt: skip
    tab_resid, tab_attn = st.tabs(["Residual stream", "Attention"])
    with tab_resid:
        residual = run_residual(program_model, sequence)
        layer = st.select_slider("Layer", options=list(range(len(residual.layer_labels))),
                                 format_func=lambda i: residual.layer_labels[i], value=len(residual.layer_labels) - 1,
                                 key=f"rasp.layer.{source}")  # fmt: skip
        st.plotly_chart(residual_figure(residual, layer), width="stretch")
    with tab_attn:
        attn_layer = st.number_input(
            "Attention layer", 0, card.n_layers - 1, value=0, key=f"rasp.attn.{source}"
        )
        attention = run_attention(program_model, sequence, layers=[int(attn_layer)])
        st.plotly_chart(layer_grid_figure(attention, int(attn_layer)), width="stretch")
        if choice in LIBRARY:
            st.caption(
                f"Open `rasp:{choice}` from the sidebar to use every other page on this model."
            )


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-4
    return a == b


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)
