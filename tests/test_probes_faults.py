"""Batch reports under faults and at scale: a SIGKILLed runner resumes with nothing lost,
recomputed or partial; the Dask backend on a real LocalCluster gives the local run's cells."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tests.probe_suites as toy
from probes import BackendError, ResultStore, parse_config, run_report

ROOT = Path(__file__).resolve().parents[1]

SLEEPY = """
title = "kill me"
models = ["task:sort", "rasp:hist", "rasp:reverse"]

[[suite]]
name = "sleepy"
label = "a"
options = { seconds = 0.8 }

[[suite]]
name = "sleepy"
label = "b"
options = { seconds = 0.8, value = 2 }
"""

RUNNER = """
import sys
import torch
torch.set_num_threads(1)
import tests.probe_suites
from probes import ResultStore, parse_config, run_report
text = open(sys.argv[1]).read()
run_report(parse_config(text, name="kill"), ResultStore(sys.argv[2]), show_progress=False)
"""


def _complete(store: ResultStore, key: str) -> bool:
    cell = store.get_cell(key)
    return cell.meta["tables"] == ["top"] and len(cell.table("top")) == 4 and cell.figures()


def test_sigkill_mid_run_then_rerun_loses_and_recomputes_nothing(tmp_path):
    config = tmp_path / "kill.toml"
    config.write_text(SLEEPY)
    store = ResultStore(tmp_path / "store")
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(config), str(store.root)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.monotonic() + 240
    try:
        while not store.cell_keys():
            assert proc.poll() is None, proc.communicate()[1].decode()[-2000:]
            assert time.monotonic() < deadline, "no cell was stored in time"
            time.sleep(0.05)
        time.sleep(0.9)  # land the kill while a later cell is being measured or written
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    finished = store.cell_keys()
    assert 1 <= len(finished) < 6, f"the run finished {len(finished)} of 6 cells before the kill"
    assert all(_complete(store, key) for key in finished)
    stamps = {k: (store.cell_dir(k) / "cell.json").stat().st_mtime_ns for k in finished}
    killed = store.list_runs()
    assert [r["status"] for r in killed] == ["interrupted"]
    assert sum(c["status"] == "ok" for c in killed[0]["cells"]) == len(finished)
    # A writer killed mid-rename leaves a temporary folder; plant one from a dead process.
    stray = store.root / "cells" / "ab" / ".tmp-999999999-x"
    stray.mkdir(parents=True)

    calls = toy.CALLS.get("sleepy", 0)
    rerun = run_report(parse_config(SLEEPY, name="kill"), store, show_progress=False)
    assert rerun["counts"] == {"computed": 6 - len(finished), "reused": len(finished),
                               "failed": 0, "skipped": 0}  # fmt: skip
    assert toy.CALLS["sleepy"] == calls + 6 - len(finished)  # only the missing cells ran
    reused = {c["key"] for c in rerun["cells"] if c["source"] == "reused"}
    assert reused == set(finished)
    assert {k: (store.cell_dir(k) / "cell.json").stat().st_mtime_ns for k in finished} == stamps
    keys = store.cell_keys()
    assert len(keys) == len(set(keys)) == 6
    assert all(_complete(store, key) for key in keys)
    assert store.partial_entries() == [] and not stray.exists()
    # The killed process ran locally and never imported Dask.
    assert all(store.get_cell(k).summary["dask_imported"] is False for k in finished)
    assert [r["status"] for r in store.list_runs()] == ["finished", "interrupted"]


FAST = """
models = ["task:sort", "rasp:hist"]

[[suite]]
name = "toy"
options = { value = 3, fail_on = "rasp:hist" }

[[suite]]
name = "head_scores"
options = { n_sequences = 2 }
"""


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    # In-process workers (cheap in CI) behind a real TCP scheduler on loopback: tasks and
    # results are serialised exactly as on a remote cluster.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  protocol="tcp", host="127.0.0.1",
                                  dashboard_address=None) as c:  # fmt: skip
        yield c


def test_dask_backend_matches_the_local_run_and_reuses_the_store(cluster, tmp_path):
    config = parse_config(FAST, name="dask")
    local = run_report(config, ResultStore(tmp_path / "local"), show_progress=False)
    store = ResultStore(tmp_path / "dask")
    remote = run_report(config, store, backend="dask", scheduler=cluster.scheduler_address,
                        show_progress=False)  # fmt: skip
    assert remote["counts"] == {"computed": 3, "reused": 0, "failed": 1, "skipped": 0}
    assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    assert remote["backend"] == "dask" and remote["scheduler"] == cluster.scheduler_address
    for a, b in zip(local["cells"], remote["cells"]):
        assert (a["model"], a["label"], a["status"], a["key"]) == (
            b["model"], b["label"], b["status"], b["key"])  # fmt: skip
        assert a["summary"] == b["summary"]
    failed = [c for c in remote["cells"] if c["status"] == "failed"]
    assert [c["error"] for c in failed] == ["RuntimeError: planted failure on rasp:hist"]
    assert sorted(store.cell_keys()) == sorted(
        c["key"] for c in remote["cells"] if c["status"] == "ok"
    )
    again = run_report(config, store, backend="dask", scheduler=cluster.scheduler_address,
                       show_progress=False)  # fmt: skip
    assert again["counts"] == {"computed": 0, "reused": 3, "failed": 1, "skipped": 0}
    html = Path(again["report"]).read_text(encoding="utf-8")
    assert f"backend dask at {cluster.scheduler_address}" in html


def test_dask_backend_bad_scheduler_and_missing_address(tmp_path, monkeypatch):
    monkeypatch.setattr("probes.dask_backend.CONNECT_TIMEOUT", "1s")
    config = parse_config(FAST, name="dask")
    with pytest.raises(BackendError, match="--backend dask needs --scheduler ADDRESS"):
        run_report(config, ResultStore(tmp_path), backend="dask", show_progress=False)
    with pytest.raises(
        BackendError, match=r"cannot reach the Dask scheduler at 'tcp://127.0.0.1:9'"
    ):
        run_report(config, ResultStore(tmp_path), backend="dask",
                   scheduler="tcp://127.0.0.1:9", show_progress=False)  # fmt: skip
    record = json.loads(next((tmp_path / "runs").glob("*/run.json")).read_text())
    assert record["status"] == "interrupted"
