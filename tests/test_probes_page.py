"""The Reports page in Streamlit's AppTest: lists stored runs, opens one, bad folders -> st.error."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

import tests.probe_suites  # noqa: F401  (registers the toy suite)
from probes import ResultStore, parse_config, run_report

CONFIG = """
title = "page test"
models = ["rasp:hist"]

[[suite]]
name = "toy"
options = { value = VALUE }

[[suite]]
name = "head_scores"
options = { n_sequences = 2 }
"""


def page_script() -> None:
    """Runs inside AppTest: the Reports page inside the app's error boundary."""
    import streamlit as st

    from app.errors import error_boundary
    from app.views import reports

    @st.cache_resource
    def load():
        from models import load_model

        return load_model("rasp:hist")

    with error_boundary("drawing reports"):
        reports.render(load())


@pytest.fixture(scope="module")
def store_with_runs(tmp_path_factory):
    store = ResultStore(tmp_path_factory.mktemp("reports"))
    runs = [run_report(parse_config(CONFIG.replace("VALUE", v), name="page"), store,
                       show_progress=False) for v in ("1", "2")]  # fmt: skip
    return store, runs


def test_reports_page_lists_runs_and_opens_the_latest(store_with_runs, monkeypatch):
    store, runs = store_with_runs
    monkeypatch.setenv("MECHSCOPE_REPORTS", str(store.root))
    at = AppTest.from_function(page_script, default_timeout=300).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    listing = at.dataframe[0].value
    assert listing["run"].tolist() == [runs[1]["run_id"], runs[0]["run_id"]]
    assert listing["computed"].tolist() == [1, 2] and listing["reused"].tolist() == [1, 0]
    assert at.selectbox(key="reports.run").value == runs[1]["run_id"]
    summary = at.dataframe[1].value
    assert summary["summary.double"].dropna().tolist() == [4]
    assert len(at.get("plotly_chart")) == 1 + 3  # toy bar + three head-score maps
    changes = at.dataframe[-1].value
    assert changes[["value", "old", "new", "delta"]].values.tolist() == [["double", "2", "4", 2]]
    at.selectbox(key="reports.run").set_value(runs[0]["run_id"]).run()
    assert not at.exception and at.dataframe[1].value["summary.double"].dropna().tolist() == [2]
    assert any("No previous finished run" in i.value for i in at.info)
    at.toggle(key="reports.inline").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]


def test_reports_page_empty_store_and_bad_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("MECHSCOPE_REPORTS", str(tmp_path / "empty"))
    at = AppTest.from_function(page_script, default_timeout=300).run()
    assert not at.exception and not at.error
    assert any("No runs in" in i.value for i in at.info)
    afile = tmp_path / "file.txt"
    afile.write_text("x")
    at.text_input(key="reports.root").set_value(str(afile)).run()
    assert not at.exception
    assert [e.value for e in at.error] == [
        f"{str(afile)!r} is a file; give the folder of a report store"
    ]
