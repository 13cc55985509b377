"""Batch probe reports: config validation, store keys and reuse, failures, HTML and the diff.

Cheap models (task:sort, rasp:hist, rasp:reverse) and cheap suites keep this file near 1 min.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

import tests.probe_suites as toy
from app.cli import main
from probes import ConfigError, ResultStore, StoreError, parse_config, run_report
from probes.hashing import cell_key, fingerprint, weights_hash
from probes.report import diff_runs
from probes.suites.linear_probe import arithmetic_statements

FAST = """
title = "fast"
models = ["task:sort", "rasp:hist"]

[[suite]]
name = "toy"
options = { value = 3 }

[[suite]]
name = "head_scores"
options = { n_sequences = 2 }
"""


def _run(text: str, store: ResultStore, **kw):
    return run_report(parse_config(text, name=kw.pop("name", "fast")), store,
                      show_progress=False, **kw)  # fmt: skip


# -- config -----------------------------------------------------------------------------------
def test_config_lists_every_problem_before_any_work():
    bad = """
titel = "typo"
models = ["task:sortt", "gpt9", "rasp:reverse"]
device = "tpu"

[[suite]]
name = "head_scorez"

[[suite]]
name = "chg"
options = { steps = "many", bogus = 1 }

[[suite]]
name = "rasp_recovery"
models = ["task:sort"]

[[suite]]
name = "linear_probe"
options = { property = "sentiment", n_examples = 4 }

[[suite]]
name = "toy"
options = { seconds = -1.0 }

[[suite]]
name = "toy"
"""
    calls = dict(toy.CALLS)
    with pytest.raises(ConfigError) as info:
        parse_config(bad, "bad.toml")
    problems = info.value.problems
    expected = [
        r"unknown key 'titel'; valid: title, name, models, device, suite",
        r"unknown model 'task:sortt'; valid task models: .*task:sort",
        r"unknown model 'gpt9'; valid: task:<task>",
        r"device 'tpu' is not valid; valid: cpu, cuda",
        r"unknown suite 'head_scorez'; valid: .*head_scores",
        r"option steps = 'many' is not valid; expected int or unset",
        r"unknown option 'bogus' for suite 'chg'; valid: batch_size, grad_clip",
        r"cannot measure 'task:sort' \(task\); it measures rasp models only",
        r"option property = 'sentiment' is not valid; expected 'arithmetic_truth'",
        r"suite 5 \(toy\): seconds must be >= 0, got -1.0",
        r"suite 6 \(toy\): label 'toy' is used twice",
    ]
    for pattern in expected:
        assert any(re.search(pattern, p) for p in problems), (pattern, problems)
    assert len(problems) == len(expected), problems
    assert str(info.value).startswith(f"bad.toml has {len(expected)} problems:")
    assert calls == toy.CALLS  # nothing ran


def test_config_cells_skip_suites_a_model_kind_cannot_take():
    config = parse_config(FAST + '\n[[suite]]\nname = "rasp_recovery"\n', name="x")
    cells = [(c.model, c.label, c.skip_reason) for c in config.cells()]
    assert cells == [
        ("task:sort", "toy", None),
        ("task:sort", "head_scores", None),
        ("task:sort", "rasp_recovery", "rasp_recovery measures rasp models only"),
        ("rasp:hist", "toy", None),
        ("rasp:hist", "head_scores", None),
        ("rasp:hist", "rasp_recovery", None),
    ]
    assert config.entries[0].options == toy.ToyOptions(value=3)


def test_example_config_ships_and_validates():
    from probes import CONFIG_DIR, load_config

    config = load_config(CONFIG_DIR / "example.toml")
    assert len(config.cells()) == 10
    assert {e.suite for e in config.entries} == {"head_scores", "lens_accuracy", "chg",
                                                 "rasp_recovery", "linear_probe"}  # fmt: skip


# -- keys, store, reuse -------------------------------------------------------------------------
def test_keys_change_with_weights_options_inputs_and_version():
    from models import load_model

    model = load_model("task:sort")
    ident = {"spec": "task:sort", "backend": "HookedTransformer",
             "weights_sha256": weights_hash(model)}  # fmt: skip
    base = cell_key(ident, "toy", 1, "inputs", toy.ToyOptions())
    assert base == cell_key(dict(ident), "toy", 1, "inputs", toy.ToyOptions())
    assert base != cell_key(ident, "toy", 1, "inputs", toy.ToyOptions(value=2))
    assert base != cell_key(ident, "toy", 1, "other inputs", toy.ToyOptions())
    assert base != cell_key(ident, "toy", 2, "inputs", toy.ToyOptions())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("probes.hashing.mechscope_version", lambda: "9.9.9")
        assert base != cell_key(ident, "toy", 1, "inputs", toy.ToyOptions())
    before = weights_hash(model)
    with __import__("torch").no_grad():
        model.model.blocks[0].attn.W_Q[0, 0, 0] += 1e-3
    assert weights_hash(model) != before
    assert fingerprint([1, 2]) != fingerprint([2, 1])


def test_rerun_computes_zero_cells_and_returns_the_same_numbers(tmp_path):
    store = ResultStore(tmp_path)
    calls = toy.CALLS.get("toy", 0)
    first = _run(FAST, store)
    assert first["counts"] == {"computed": 4, "reused": 0, "failed": 0, "skipped": 0}
    assert toy.CALLS["toy"] == calls + 2
    assert len(store.cell_keys()) == 4
    second = _run(FAST, store)
    assert second["counts"] == {"computed": 0, "reused": 4, "failed": 0, "skipped": 0}
    assert toy.CALLS["toy"] == calls + 2  # not called again
    assert [c["key"] for c in second["cells"]] == [c["key"] for c in first["cells"]]
    assert [c["summary"] for c in second["cells"]] == [c["summary"] for c in first["cells"]]
    cell = store.get_cell(first["cells"][0]["key"])
    assert cell.summary["double"] == 6
    assert cell.table("top")["position"].tolist() == [0, 1, 2, 3]
    scores = store.get_cell(first["cells"][1]["key"]).table("scores")
    assert set(scores["score"]) == {"previous_token", "duplicate_token", "induction", "sink"}
    assert scores["value"].between(0, 1).all()
    # A changed option makes a new key for that suite only.
    third = _run(FAST.replace("value = 3", "value = 4"), store)
    assert third["counts"] == {"computed": 2, "reused": 2, "failed": 0, "skipped": 0}
    assert store.partial_entries() == []


def test_failed_cell_is_recorded_and_the_run_goes_on(tmp_path):
    store = ResultStore(tmp_path)
    text = FAST.replace("value = 3", 'value = 3, fail_on = "rasp:hist"')
    record = _run(text, store)
    assert record["counts"] == {"computed": 3, "reused": 0, "failed": 1, "skipped": 0}
    failed = [c for c in record["cells"] if c["status"] == "failed"]
    assert [(c["model"], c["label"]) for c in failed] == [("rasp:hist", "toy")]
    assert failed[0]["error"] == "RuntimeError: planted failure on rasp:hist"
    assert "planted failure" in failed[0]["traceback"]
    assert store.get_failure(failed[0]["key"])["error"].endswith("planted failure on rasp:hist")
    assert not store.has_cell(failed[0]["key"])
    html = Path(record["report"]).read_text(encoding="utf-8")
    assert "failed: RuntimeError: planted failure on rasp:hist" in html
    # The next run tries the failed cell again (and only it).
    again = _run(text, store)
    assert again["counts"] == {"computed": 0, "reused": 3, "failed": 1, "skipped": 0}


def test_a_model_that_cannot_load_fails_its_cells_only(tmp_path, monkeypatch):
    import probes.runner

    real = probes.runner.load_for_run

    def flaky(text, device):
        if text == "rasp:hist":
            raise OSError("disk on fire")
        return real(text, device)

    monkeypatch.setattr(probes.runner, "load_for_run", flaky)
    record = _run(FAST, ResultStore(tmp_path))
    statuses = [(c["model"], c["status"]) for c in record["cells"]]
    assert statuses == [("task:sort", "ok"), ("task:sort", "ok"),
                        ("rasp:hist", "failed"), ("rasp:hist", "failed")]  # fmt: skip
    assert record["cells"][2]["error"] == "loading rasp:hist failed: OSError: disk on fire"


# -- report -------------------------------------------------------------------------------------
def test_report_is_self_contained_with_tables_and_provenance(tmp_path):
    store = ResultStore(tmp_path)
    record = _run(FAST, store)
    html = Path(record["report"]).read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]+src=", html), "a script is loaded from elsewhere"
    assert not re.search(r"<link[^>]+href=['\"]?https?:", html)
    assert "Plotly.newPlot" in html and len(html) > 3_000_000  # plotly.js is inline
    assert html.count('class="plotly-graph-div"') == 2 + 2 * 3  # toy 1 + head scores 3, x2
    for text in ("task:sort", "rasp:hist", "Head scores", "Provenance", record["run_id"],
                 weights_hash(__import__("models").load_model("rasp:hist")), "value = 3"):  # fmt: skip
        assert text in html, text
    assert "No previous finished run" in html
    folder = store.run_dir(record["run_id"])
    summary = pd.read_csv(folder / "tables" / "summary.csv")
    assert summary["status"].tolist() == ["ok"] * 4
    assert summary["summary.double"].dropna().tolist() == [6, 6]
    scores = json.loads((folder / "tables" / "head_scores.scores.json").read_text())
    assert {r["model"] for r in scores} == {"task:sort", "rasp:hist"}


def test_diff_names_what_changed_since_the_previous_run(tmp_path):
    store = ResultStore(tmp_path)
    first = _run(FAST, store)
    same = _run(FAST, store)
    assert same["diff"] == {"previous_run": first["run_id"], "changed": 0, "added": 0,
                            "removed": 0}  # fmt: skip
    assert "No differences" in Path(same["report"]).read_text(encoding="utf-8")
    changed_text = FAST.replace("value = 3", "value = 5").replace(
        '"rasp:hist"]', '"rasp:hist", "rasp:reverse"]'
    )
    changed = _run(changed_text, store)
    diff = json.loads((store.run_dir(changed["run_id"]) / "diff.json").read_text())
    assert diff["previous_run"] == same["run_id"]
    assert diff["added"] == [{"model": "rasp:reverse", "label": "toy"},
                             {"model": "rasp:reverse", "label": "head_scores"}]  # fmt: skip
    toy_changes = [c for c in diff["changed"] if c["label"] == "toy"]
    assert len(toy_changes) == 2 and len(diff["changed"]) == 2  # head scores did not move
    assert toy_changes[0]["reasons"] == ["options changed: value 3 -> 5"]
    assert toy_changes[0]["metrics"] == [{"name": "double", "old": 6, "new": 10, "delta": 4}]
    html = Path(changed["report"]).read_text(encoding="utf-8")
    assert "options changed: value 3 -&gt; 5" in html and "+4" in html
    # An explicit run to compare with, and an unknown one (refused before any work).
    explicit = _run(FAST, store, diff_against=first["run_id"])
    assert explicit["diff"]["previous_run"] == first["run_id"]
    with pytest.raises(StoreError, match="no run 'nope'"):
        _run(FAST, store, diff_against="nope")
    # diff_runs on its own: a model whose weights changed.
    fake = json.loads(json.dumps(same))
    fake["models"]["task:sort"]["weights_sha256"] = "0" * 64
    fake["cells"][0]["key"] = "different"
    assert diff_runs(same, fake)["changed"][0]["reasons"][0].startswith(
        "model weights changed (000000000000 ->"
    )


# -- command line -------------------------------------------------------------------------------
def test_cli_run_list_open_and_bad_config(tmp_path, capsys):
    config = tmp_path / "fast.toml"
    config.write_text(
        FAST.replace(
            'name = "head_scores"\noptions = { n_sequences = 2 }', 'name = "toy"\nlabel = "toy2"'
        )
    )
    out = tmp_path / "store"
    assert main(["report", "run", str(config), "--out", str(out), "--no-progress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["computed"] == 4 and printed["failed"] == 0
    assert main(["report", "list", "--out", str(out), "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert [r["run_id"] for r in runs] == [printed["run_id"]] and runs[0]["status"] == "finished"
    assert main(["report", "open", "--out", str(out), "--print"]) == 0
    assert capsys.readouterr().out.strip() == printed["report"]
    assert main(["report", "open", "nope", "--out", str(out), "--print"]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    config.write_text('models = ["gpt9"]\n[[suite]]\nname = "nope"\n')
    assert main(["report", "run", str(config), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "has 2 problems" in err and "gpt9" in err and "unknown suite 'nope'" in err


def test_arithmetic_statements_are_balanced_and_correctly_labelled():
    texts, labels = arithmetic_statements(200, 0)
    assert sum(labels) == 100
    for text, label in zip(texts, labels):
        a, b, c = map(int, re.fullmatch(r"(\d+) \+ (\d+) = (\d+)\.", text).groups())
        assert (a + b == c) is label
        assert label or 1 <= abs(a + b - c) <= 9


def test_a_result_the_store_cannot_hold_fails_its_cell_only(tmp_path, monkeypatch):
    import probes.runner
    from probes.cells import CellPayload

    real = probes.runner.compute_cell

    def mixed(model, cell, prepared, progress=None):
        payload = real(model, cell, prepared, progress)
        if cell.suite == "toy":  # a column Parquet cannot hold (an int next to a list)
            return CellPayload(ok=True, tables={"bad": pd.DataFrame({"x": [1, [2]]})})
        return payload

    monkeypatch.setattr(probes.runner, "compute_cell", mixed)
    store = ResultStore(tmp_path)
    record = _run(FAST, store)
    assert [c["status"] for c in record["cells"]] == ["failed", "ok", "failed", "ok"]
    assert record["cells"][0]["error"].startswith("storing the result failed: ")
    assert len(store.cell_keys()) == 2 and store.partial_entries() == []


def test_capital_statements_pair_every_city_once_true_once_false():
    from probes.suites.linear_probe import CAPITALS, capital_statements

    texts, labels = capital_statements(1000, 0)
    assert len(texts) == 2 * len(CAPITALS) and sum(labels) == len(CAPITALS)
    cities = {True: [], False: []}
    for text, label in zip(texts, labels):
        country, city = re.fullmatch(r"The capital of (.+) is (.+)\.", text).groups()
        assert (CAPITALS[country] == city) is label
        cities[label].append(city)
    assert sorted(cities[True]) == sorted(cities[False]) == sorted(CAPITALS.values())
    assert capital_statements(10, 0) == (texts[:10], labels[:10])
