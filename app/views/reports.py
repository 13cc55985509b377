"""Reports page: the batch probe runs in a report store, and one run's report opened.

The store is ``$MECHSCOPE_REPORTS`` (``mechscope app --reports DIR``) or the models cache's
``reports`` folder, and can be changed on the page. A run shows its summary table, each suite's
figures and tables (read back from the store, nothing recomputed), what changed since the
previous run of its config, its provenance, and the self-contained HTML report (download, or
inline). Runs are made with ``mechscope report run CONFIG``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from models import LoadedModel
from probes import ResultStore, StoreError
from probes.report import REPORT_FILE, load_cells, summary_frame
from probes.store import default_root

KEY_ROOT = "reports.root"
KEY_RUN = "reports.run"
KEY_INLINE = "reports.inline"


def store_root() -> str:
    """The store folder to open first: ``$MECHSCOPE_REPORTS`` (read at call time) or the
    default under the models cache."""
    return os.environ.get("MECHSCOPE_REPORTS", "").strip() or str(default_root())


def runs_frame(runs: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per run, newest first."""
    rows = []
    for r in runs:
        counts = r.get("counts") or {}
        rows.append({"run": r["run_id"], "config": r["config"]["name"], "status": r["status"],
                     "started": r.get("started", "")[:19].replace("T", " "),
                     "seconds": r.get("seconds"), "cells": len(r.get("cells", [])),
                     **{k: counts.get(k) for k in ("computed", "reused", "failed", "skipped")},
                     "backend": r.get("backend")})  # fmt: skip
    return pd.DataFrame(rows)


def render(model: LoadedModel) -> None:
    """Draw the reports page (the sidebar model is not used)."""
    st.title("Reports", anchor=False)
    st.caption(
        "Batch probe reports: models x suites from a TOML config, run with "
        "`mechscope report run probes/configs/example.toml`."
    )
    root = st.text_input("Report store folder", value=store_root(), key=KEY_ROOT).strip()
    path = Path(root).expanduser()
    if path.exists() and not path.is_dir():
        raise StoreError(f"{root!r} is a file; give the folder of a report store")
    store = ResultStore(path)
    runs = store.list_runs()
    if not runs:
        st.info(
            f"No runs in `{store.root}` yet. Run `mechscope report run "
            f"probes/configs/example.toml --out {store.root}` and reload.",
            icon=":material/info:",
        )
        return
    st.dataframe(runs_frame(runs), hide_index=True, width="stretch")
    ids = [r["run_id"] for r in runs]
    run_id = st.selectbox("Open run", ids, key=KEY_RUN)
    record = store.load_run(run_id)
    _run_view(store, record)


def _run_view(store: ResultStore, record: dict[str, Any]) -> None:
    counts = record.get("counts") or {}
    st.subheader(record["config"]["title"], anchor=False)
    cols = st.columns(5)
    for col, name in zip(cols, ("computed", "reused", "failed", "skipped")):
        col.metric(name, counts.get(name, "–"))
    cols[4].metric("seconds", record.get("seconds", "–"))
    if record.get("status") != "finished":
        st.warning(
            f"This run is {record.get('status')}: its finished cells are in the store; rerun "
            "the config to complete it.",
            icon=":material/warning:",
        )
    summary, suites, changes, provenance, report = st.tabs(
        ["Summary", "Suites", "Changes", "Provenance", "HTML report"]
    )
    with summary:
        st.dataframe(summary_frame(record), hide_index=True, width="stretch")
        for cell in record["cells"]:
            if cell["status"] == "failed":
                st.error(f"{cell['model']} · {cell['label']}: {cell['error']}")
    with suites:
        _suites(store, record)
    with changes:
        _changes(store, record)
    with provenance:
        st.json({"provenance": record.get("provenance"), "models": record.get("models"),
                 "backend": record.get("backend"), "scheduler": record.get("scheduler")})  # fmt: skip
        st.code(record["config"]["text"], language="toml")
    with report:
        _html(store, record)


def _suites(store: ResultStore, record: dict[str, Any]) -> None:
    cells = load_cells(store, record)
    labels = list(dict.fromkeys(c["label"] for c in record["cells"]))
    for label in labels:
        st.markdown(f"#### {label}")
        for entry in (c for c in record["cells"] if c["label"] == label):
            if entry["status"] != "ok":
                st.caption(f"{entry['model']}: {entry['status']} — {entry.get('error')}")
                continue
            cell = cells.get(entry["key"])
            if cell is None:
                st.warning(f"{entry['model']}: the stored cell is missing from {store.root}")
                continue
            with st.expander(
                f"{entry['model']} · {(entry.get('inputs') or {}).get('description', '')}"
            ):
                st.json(entry.get("summary", {}), expanded=False)
                for note in entry.get("notes", []):
                    st.warning(note)
                for name, fig in cell.figures().items():
                    st.plotly_chart(fig, key=f"reports.fig.{entry['key']}.{name}")
                for name, frame in cell.tables().items():
                    st.caption(name)
                    st.dataframe(frame, hide_index=True)


def _changes(store: ResultStore, record: dict[str, Any]) -> None:
    path = store.run_dir(record["run_id"]) / "diff.json"
    diff = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
    if diff is None:
        st.info("No previous finished run of this config to compare with.")
        return
    st.markdown(
        f"Compared with run `{diff['previous_run']}`: {len(diff['changed'])} changed, "
        f"{diff['unchanged']} unchanged, {len(diff['added'])} added, "
        f"{len(diff['removed'])} removed."
    )
    rows = [
        {"cell": f"{c['model']} · {c['label']}", "why": "; ".join(c["reasons"]),
         "value": m["name"], "old": str(m["old"]), "new": str(m["new"]), "delta": m["delta"]}
        for c in diff["changed"] for m in (c["metrics"] or [{"name": "", "old": "", "new": "", "delta": None}])
    ]  # fmt: skip
    if rows:
        st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")


def _html(store: ResultStore, record: dict[str, Any]) -> None:
    path = store.run_dir(record["run_id"]) / REPORT_FILE
    if not path.is_file():
        st.info("This run has no HTML report (it did not finish).")
        return
    data = path.read_bytes()
    st.download_button("Download report.html", data, file_name=f"{record['run_id']}.html",
                       mime="text/html", key="reports.download")  # fmt: skip
    st.caption(f"`{path}` · {len(data) / 1e6:.1f} MB, self-contained (opens offline)")
    if st.toggle("Show the report inline", key=KEY_INLINE):
        import streamlit.components.v1 as components

        components.html(data.decode("utf-8"), height=900, scrolling=True)
