"""The dashboard shell, driven through Streamlit's ``AppTest``: real models, real numbers.

The task model is loaded from the default cache (trained there on first use), so it trains at
most once across test runs; ``st.cache_resource`` then shares it between the app runs below.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from models import LoadedModel, load_model

MAIN = Path(__file__).resolve().parents[1] / "app" / "main.py"
SORT = "task:sort"
PREDICT_KEY = f"home.predict.{SORT}"
#: Loading torch, TransformerLens and the model (or training it) on a busy 2-core machine.
FIRST_RUN_TIMEOUT = 300


@pytest.fixture(scope="module")
def sort_model() -> LoadedModel:
    return load_model(SORT)


@pytest.fixture
def app(monkeypatch: pytest.MonkeyPatch, sort_model: LoadedModel) -> AppTest:
    monkeypatch.setenv("MECHSCOPE_DEFAULT_MODEL", SORT)
    at = AppTest.from_file(str(MAIN), default_timeout=FIRST_RUN_TIMEOUT).run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def _sample_input(model: LoadedModel, length: int) -> list:
    """A deterministic unsorted input drawn from the model's vocabulary, with a repeat."""
    values = list(model.codec.input_values)
    picks = [values[(7 * i + 3) % len(values)] for i in range(length - 1)]
    return [*picks, picks[0]]


def test_home_shows_the_task_model_card(app: AppTest, sort_model: LoadedModel) -> None:
    cfg = sort_model.cfg
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Layers"] == str(cfg.n_layers)
    assert metrics["Heads"] == str(cfg.n_heads)
    assert metrics["d_model"] == str(cfg.d_model)
    assert metrics["d_head"] == str(cfg.d_head)
    expected_mlp = "none" if getattr(cfg, "attn_only", False) else str(cfg.d_mlp)
    assert metrics["d_mlp"] == expected_mlp
    assert metrics["Context"] == str(cfg.n_ctx)
    assert metrics["Vocab"].split(" → ")[0] == str(cfg.d_vocab)
    n_params = sum(p.numel() for p in sort_model.model.parameters())
    helps = {m.label: m.help for m in app.metric}
    assert f"{n_params:,}" in helps["Parameters"]
    assert any(SORT in s.value for s in app.subheader)
    assert [t.value for t in app.title] == ["mechscope"]
    assert not _errors(app)


def test_prediction_box_sorts_the_input(app: AppTest, sort_model: LoadedModel) -> None:
    values = _sample_input(sort_model, min(6, sort_model.codec.max_len))
    app.text_input(key=PREDICT_KEY).input(" ".join(map(str, values))).run()
    assert not app.exception
    assert not _errors(app)
    table = app.table[0].value
    assert list(table.loc["input"]) == [str(v) for v in values]
    assert list(table.loc["output"]) == [str(v) for v in sorted(values)]


def test_unknown_token_shows_an_error_naming_it(app: AppTest) -> None:
    app.text_input(key=PREDICT_KEY).input("3 banana 1").run()
    assert not app.exception
    errors = _errors(app)
    assert len(errors) == 1
    assert "'banana'" in errors[0] and "vocabulary" in errors[0]
    assert len(app.table) == 0


def test_empty_and_too_long_inputs_show_errors(app: AppTest, sort_model: LoadedModel) -> None:
    app.text_input(key=PREDICT_KEY).input("   ").run()
    assert not app.exception
    assert any("empty" in e for e in _errors(app))

    max_len = sort_model.codec.max_len
    token = str(sort_model.codec.input_values[0])
    app.text_input(key=PREDICT_KEY).input(" ".join([token] * (max_len + 1))).run()
    assert not app.exception
    errors = _errors(app)
    assert len(errors) == 1 and f"at most {max_len}" in errors[0]


def test_unknown_model_in_the_path_field_lists_the_valid_forms(app: AppTest) -> None:
    app.sidebar.text_input(key="mechscope.custom").input("gpt9").run()
    assert not app.exception
    errors = _errors(app)
    assert len(errors) == 1
    assert "'gpt9'" in errors[0]
    assert "task:sort" in errors[0] and "Hugging Face folder" in errors[0]
    assert not app.metric  # no stale card of the previous model

    app.sidebar.text_input(key="mechscope.custom").input("").run()
    assert not _errors(app)
    assert {m.label: m.value for m in app.metric}["Layers"]


def test_default_model_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MECHSCOPE_DEFAULT_MODEL", "/no/such/model-folder")
    at = AppTest.from_file(str(MAIN), default_timeout=FIRST_RUN_TIMEOUT).run()
    assert not at.exception
    assert at.sidebar.text_input(key="mechscope.custom").value == "/no/such/model-folder"
    errors = _errors(at)
    assert len(errors) == 1 and "no such file or folder '/no/such/model-folder'" in errors[0]


def _boundary_script() -> None:
    import streamlit as st

    from app.errors import error_boundary
    from models import InputError

    with error_boundary("doing a known thing"):
        raise InputError("token 'x' is not in the vocabulary; valid: 1, 2")
    with error_boundary("doing an unknown thing"):
        raise ZeroDivisionError("division by zero")
    st.markdown("after the errors")


def test_error_boundary_shows_known_and_unknown_errors_without_a_traceback() -> None:
    at = AppTest.from_function(_boundary_script, default_timeout=60).run()
    assert not at.exception
    errors = _errors(at)
    assert errors[0] == "token 'x' is not in the vocabulary; valid: 1, 2"
    assert errors[1].startswith("Something went wrong while doing an unknown thing")
    assert "ZeroDivisionError: division by zero" in errors[1]
    assert "Traceback" not in errors[1]
    assert [e.label for e in at.expander] == ["Details for a bug report"]
    assert "ZeroDivisionError" in at.expander[0].code[0].value
    assert at.markdown[-1].value == "after the errors"


@pytest.mark.parametrize("backend", ["bridge", "hooked"])
def test_a_local_folder_loads_with_its_backend_and_generates(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, backend: str
) -> None:
    from tests.hf_fixtures import save_tiny_llama

    folder = save_tiny_llama(tmp_path / "tiny-llama")
    monkeypatch.setenv("MECHSCOPE_DEFAULT_MODEL", str(folder))
    at = AppTest.from_file(str(MAIN), default_timeout=FIRST_RUN_TIMEOUT).run()
    at.sidebar.radio(key="mechscope.backend").set_value(backend).run()
    assert not at.exception
    assert not _errors(at)
    metrics = {m.label: m.value for m in at.metric}
    assert (metrics["Layers"], metrics["Heads"], metrics["d_model"]) == ("2", "4", "48")

    prompt = "w1 w2 w3"
    at.text_area[0].input(prompt)
    at.slider[0].set_value(4)
    at.button[0].click().run()
    assert not at.exception
    assert not _errors(at)
    expected = load_model(str(folder), backend=backend).generate(prompt, 4)
    shown = at.markdown[-1].value.replace("\\", "")
    assert shown == f"{prompt}**{expected}**"
