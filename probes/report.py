"""Reports: one self-contained HTML file per run, its tables as CSV/JSON, and a diff against the
previous run of the same config.

The HTML carries plotly.js inline (no CDN, no network: it opens offline, e.g. from an e-mail
attachment), a summary table, one section per suite, what changed since the previous run and
the provenance (versions, machine, seeds, model weight hashes, input fingerprints, cell keys,
the config text). Figures are the ``analysis.figures`` ones, stored with each cell as plotly
JSON, so a report can be rebuilt from the store without computing anything.

Example:
    >>> write_report(store, record)          # doctest: +SKIP
    PosixPath('.../runs/20260101-120000-000-example/report.html')
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from probes.errors import StoreError
from probes.store import ResultStore, StoredCell, write_text_atomic
from probes.suite import get_suite

#: Rows of a table shown inline; the full table is in the run's ``tables/`` folder.
INLINE_ROWS = 40
REPORT_FILE = "report.html"

_CSS = """
body{font-family:Inter,Helvetica,Arial,sans-serif;margin:2rem auto;max-width:1200px;color:#222;
padding:0 1rem}
h1{margin-bottom:.2rem} h2{border-bottom:1px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}
.meta{color:#666} nav a{margin-right:1rem}
table{border-collapse:collapse;font-size:13px;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f5f5f5} .ok{color:#1a7f37} .failed{color:#b2182b;font-weight:bold}
.skipped{color:#888} .up{color:#1a7f37} .down{color:#b2182b}
pre{background:#f7f7f7;padding:.6rem;overflow:auto;font-size:12px}
details{margin:.4rem 0} .figs{display:flex;flex-wrap:wrap;gap:.5rem}
.figs>div{flex:1 1 48%;min-width:420px} .note{background:#fff8e1;padding:.3rem .6rem;border-left:3px solid #f0b400}
"""


def _e(value: Any) -> str:
    return html.escape(str(value))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}"
    return str(value)


def _table(frame: pd.DataFrame, max_rows: int | None = None) -> str:
    shown = frame if max_rows is None else frame.head(max_rows)
    out = shown.to_html(
        index=False, escape=True, border=0, float_format=lambda v: f"{v:.4g}", na_rep=""
    )
    if max_rows is not None and len(frame) > max_rows:
        out += f"<p class=meta>first {max_rows} of {len(frame)} rows; all in tables/</p>"
    return out


def _rows_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    head = "".join(f"<th>{_e(c)}</th>" for c in columns)
    body = ""
    for row in rows:
        cells = ""
        for c in columns:
            value = row.get(c, "")
            raw = value if isinstance(value, str) and value.startswith("<") else _e(_fmt(value))
            cells += f"<td>{raw}</td>"
        body += f"<tr>{cells}</tr>"
    return f"<table><tr>{head}</tr>{body}</table>"


def _status(entry: dict[str, Any]) -> str:
    status = entry["status"]
    extra = f" ({entry['source']})" if status == "ok" and entry.get("source") else ""
    return f"<span class={_e(status)}>{_e(status)}{_e(extra)}</span>"


def _headline(summary: dict[str, Any], n: int = 4) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in list(summary.items())[:n])


# -- diff -------------------------------------------------------------------------------------
def diff_runs(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """What changed between two runs of a config, cell by cell (matched on model and label).

    Returns:
        ``{"previous_run", "previous_started", "added", "removed", "changed", "unchanged"}``;
        each ``changed`` entry names the cell, why its key changed (weights, options, inputs,
        mechscope version), its status change and every summary value that moved.
    """

    def index(run: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
        return {(c["model"], c["label"]): c for c in run["cells"]}

    now, before = index(current), index(previous)
    changed, unchanged = [], 0
    old_version = previous.get("provenance", {}).get("mechscope")
    new_version = current.get("provenance", {}).get("mechscope")
    for cell_id, new in now.items():
        old = before.get(cell_id)
        if old is None:
            continue
        reasons = []
        if new.get("key") != old.get("key"):
            old_w = previous.get("models", {}).get(new["model"], {}).get("weights_sha256")
            new_w = current.get("models", {}).get(new["model"], {}).get("weights_sha256")
            if old_w != new_w:
                reasons.append(f"model weights changed ({str(old_w)[:12]} -> {str(new_w)[:12]})")
            if old.get("options") != new.get("options"):
                moved = sorted(
                    k
                    for k in set(old["options"]) | set(new["options"])
                    if old["options"].get(k) != new["options"].get(k)
                )
                reasons.append(
                    "options changed: "
                    + ", ".join(
                        f"{k} {old['options'].get(k)!r} -> {new['options'].get(k)!r}" for k in moved
                    )
                )
            old_in = (old.get("inputs") or {}).get("fingerprint")
            new_in = (new.get("inputs") or {}).get("fingerprint")
            if old_in != new_in and old.get("options") == new.get("options"):
                reasons.append("inputs changed")
            if old_version != new_version:
                reasons.append(f"mechscope {old_version} -> {new_version}")
            if not reasons:
                reasons.append("suite version or device changed")
        metrics = []
        old_s, new_s = old.get("summary", {}), new.get("summary", {})
        for name in list(dict.fromkeys([*new_s, *old_s])):
            a, b = old_s.get(name), new_s.get(name)
            if a == b or (
                isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
            ):
                continue
            delta = None
            if (
                isinstance(a, (int, float))
                and isinstance(b, (int, float))
                and not isinstance(a, bool)
            ):
                delta = b - a
            metrics.append({"name": name, "old": a, "new": b, "delta": delta})
        status_change = (old["status"], new["status"]) if old["status"] != new["status"] else None
        if reasons or metrics or status_change:
            changed.append(
                {
                    "model": new["model"],
                    "label": new["label"],
                    "suite": new["suite"],
                    "key_changed": bool(reasons),
                    "reasons": reasons,
                    "status": status_change,
                    "metrics": metrics,
                }
            )
        else:
            unchanged += 1
    return {
        "previous_run": previous["run_id"],
        "previous_started": previous.get("started"),
        "added": [{"model": m, "label": lb} for (m, lb) in now if (m, lb) not in before],
        "removed": [{"model": m, "label": lb} for (m, lb) in before if (m, lb) not in now],
        "changed": changed,
        "unchanged": unchanged,
    }


def _diff_html(diff: dict[str, Any] | None) -> str:
    if diff is None:
        return "<p>No previous finished run of this config in the store: nothing to compare.</p>"
    out = (
        f"<p>Compared with run <code>{_e(diff['previous_run'])}</code> "
        f"(started {_e(diff['previous_started'])}): {len(diff['changed'])} cells changed, "
        f"{diff['unchanged']} unchanged, {len(diff['added'])} added, "
        f"{len(diff['removed'])} removed.</p>"
    )
    if not (diff["changed"] or diff["added"] or diff["removed"]):
        return out + "<p>No differences: every cell has the same key, status and numbers.</p>"
    for kind in ("added", "removed"):
        if diff[kind]:
            items = ", ".join(f"{_e(c['model'])} · {_e(c['label'])}" for c in diff[kind])
            out += f"<p><b>{kind}:</b> {items}</p>"
    rows = []
    for c in diff["changed"]:
        why = "; ".join(c["reasons"]) or "same key"
        status = f"{c['status'][0]} -> {c['status'][1]}" if c["status"] else ""
        if not c["metrics"]:
            rows.append({"cell": f"{c['model']} · {c['label']}", "why": why, "status": status})
        for m in c["metrics"]:
            delta = m["delta"]
            arrow = (
                ""
                if delta is None
                else f"<span class={'up' if delta > 0 else 'down'}>{delta:+.4g}</span>"
            )
            rows.append(
                {
                    "cell": f"{c['model']} · {c['label']}",
                    "why": why,
                    "status": status,
                    "value": m["name"],
                    "old": m["old"],
                    "new": m["new"],
                    "change": arrow,
                }
            )
    return out + _rows_table(rows, ["cell", "why", "status", "value", "old", "new", "change"])


# -- sections ---------------------------------------------------------------------------------
def _figure_html(fig_json: str, div_id: str) -> str:
    import plotly.io as pio

    fig = pio.from_json(fig_json)
    return pio.to_html(
        fig,
        full_html=False,
        include_plotlyjs=False,
        div_id=div_id,
        config={"displaylogo": False},
        default_width="100%",
    )


def _cell_html(entry: dict[str, Any], cell: StoredCell | None, n: int) -> str:
    out = f"<h3>{_e(entry['model'])}</h3>"
    if entry["status"] == "skipped":
        return out + f"<p class=skipped>skipped: {_e(entry.get('error'))}</p>"
    if entry["status"] == "failed":
        out += f"<p class=failed>failed: {_e(entry.get('error'))}</p>"
        if entry.get("traceback"):
            out += f"<details><summary>traceback</summary><pre>{_e(entry['traceback'])}</pre></details>"
        return out
    inputs = (entry.get("inputs") or {}).get("description", "")
    out += (
        f"<p class=meta>{_e(inputs)} · {_fmt(entry.get('seconds') or 0)} s "
        f"({_e(entry.get('source'))}) · key <code>{_e(str(entry.get('key'))[:16])}</code></p>"
    )
    for note in entry.get("notes", []):
        out += f"<p class=note>{_e(note)}</p>"
    if cell is None:
        return out + "<p class=failed>the stored cell is missing from the store</p>"
    figures = [_figure_html(cell.figure_json(name), f"fig-{n}-{i}")
               for i, name in enumerate(cell.meta.get("figures", []))]  # fmt: skip
    out += "<div class=figs>" + "".join(f"<div>{f}</div>" for f in figures) + "</div>"
    for name, frame in cell.tables().items():
        out += f"<details><summary>table <code>{_e(name)}</code> ({len(frame)} rows)</summary>"
        out += _table(frame, INLINE_ROWS) + "</details>"
    return out


def _anchor(label: str) -> str:
    return "suite-" + "".join(c if c.isalnum() else "-" for c in label)


def build_html(
    record: dict[str, Any], cells: dict[str, StoredCell], diff: dict[str, Any] | None
) -> str:
    """The report of one run as a single HTML document (plotly.js inline).

    Args:
        record: the run record (``ReportRun.run``).
        cells: the stored cells of the run's ``ok`` entries, by key.
        diff: ``diff_runs(record, previous)`` or ``None``.
    """
    from plotly.offline import get_plotlyjs

    config = record["config"]
    counts = record.get("counts", {})
    labels = list(dict.fromkeys(c["label"] for c in record["cells"]))
    nav = " ".join(f"<a href='#{_anchor(lb)}'>{_e(lb)}</a>" for lb in labels)
    parts = [
        f"<h1>{_e(config['title'])}</h1>",
        f"<p class=meta>run <code>{_e(record['run_id'])}</code> · config {_e(config['name'])} "
        f"({_e(config['source'])}) · started {_e(record['started'])} · "
        f"{_fmt(record.get('seconds', 0))} s · backend {_e(record['backend'])} · "
        + ", ".join(f"{v} {k}" for k, v in counts.items())
        + "</p>",
        f"<nav><a href='#summary'>summary</a><a href='#changes'>changes</a>{nav}"
        "<a href='#provenance'>provenance</a></nav>",
        "<h2 id=summary>Summary</h2>",
    ]
    rows = [
        {
            "model": c["model"],
            "suite": c["label"],
            "status": _status(c),
            "seconds": c.get("seconds") if c.get("seconds") is not None else "",
            "headline": _headline(c.get("summary", {}))
            if c["status"] == "ok"
            else (c.get("error") or ""),
        }
        for c in record["cells"]
    ]
    parts.append(_rows_table(rows, ["model", "suite", "status", "seconds", "headline"]))
    parts += ["<h2 id=changes>Changes since the previous run</h2>", _diff_html(diff)]
    n = 0
    for label in labels:
        entries = [c for c in record["cells"] if c["label"] == label]
        suite = get_suite(entries[0]["suite"])
        parts.append(
            f"<h2 id='{_anchor(label)}'>{_e(suite.title)}"
            + (f" · {_e(label)}" if label != suite.name else "")
            + "</h2>"
        )
        parts.append(f"<p>{_e(suite.description)}</p>")
        ok = [c for c in entries if c["status"] == "ok"]
        if ok:
            keys = list(dict.fromkeys(k for c in ok for k in c.get("summary", {})))
            metric_rows = [{"model": c["model"], **c.get("summary", {})} for c in ok]
            parts.append(_rows_table(metric_rows, ["model", *keys]))
        for entry in entries:
            n += 1
            parts.append(_cell_html(entry, cells.get(entry.get("key") or ""), n))
    parts.append(_provenance_html(record))
    body = "\n".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset='utf-8'>"
        f"<title>{_e(config['title'])} · mechscope report</title><style>{_CSS}</style>"
        f"<script type='text/javascript'>{get_plotlyjs()}</script></head>\n"
        f"<body>\n{body}\n</body></html>\n"
    )


def _provenance_html(record: dict[str, Any]) -> str:
    prov = record.get("provenance", {})
    versions = [
        {"what": "mechscope", "version": prov.get("mechscope")},
        {"what": "python", "version": prov.get("python")},
    ]
    versions += [{"what": k, "version": v} for k, v in prov.get("packages", {}).items()]
    machine = {k: prov.get(k) for k in ("platform", "machine", "cpus", "torch_threads")}
    models = [{"model": m, **ident} for m, ident in record.get("models", {}).items()]
    cells = [
        {
            "model": c["model"],
            "suite": c["label"],
            "seed": c["options"].get("seed", ""),
            "key": c.get("key") or "",
            "inputs": (c.get("inputs") or {}).get("fingerprint", ""),
            "options": json.dumps(c["options"]),
        }
        for c in record["cells"]
    ]
    return "\n".join(
        [
            "<h2 id=provenance>Provenance</h2>",
            f"<p class=meta>{_e(', '.join(f'{k} {v}' for k, v in machine.items()))} · backend "
            f"{_e(record['backend'])}{' at ' + _e(record['scheduler']) if record.get('scheduler') else ''}</p>",
            _rows_table(versions, ["what", "version"]),
            "<h3>Models</h3>",
            _rows_table(models, ["model", "kind", "backend", "weights_sha256", "n_params"]),
            "<h3>Cells (keys are SHA-256 of model weights, suite, inputs, options, version)</h3>",
            _rows_table(cells, ["model", "suite", "seed", "key", "inputs", "options"]),
            "<h3>Config</h3>",
            f"<pre>{_e(record['config']['text'])}</pre>",
        ]
    )


# -- tables and files -------------------------------------------------------------------------
def summary_frame(record: dict[str, Any]) -> pd.DataFrame:
    """One row per cell: model, suite, status, source, seconds, key, error and every summary
    value (as ``summary.<name>``)."""
    rows = []
    for c in record["cells"]:
        row = {
            "model": c["model"],
            "label": c["label"],
            "suite": c["suite"],
            "status": c["status"],
            "source": c.get("source"),
            "seconds": c.get("seconds"),
            "key": c.get("key"),
            "error": c.get("error"),
        }
        row |= {f"summary.{k}": v for k, v in c.get("summary", {}).items()}
        rows.append(row)
    return pd.DataFrame(rows)


def suite_tables(record: dict[str, Any], cells: dict[str, StoredCell]) -> dict[str, pd.DataFrame]:
    """``{"<label>.<table>": frame}`` with every model's rows stacked (a ``model`` column first)."""
    stacked: dict[str, list[pd.DataFrame]] = {}
    for entry in record["cells"]:
        cell = cells.get(entry.get("key") or "")
        if entry["status"] != "ok" or cell is None:
            continue
        for name, frame in cell.tables().items():
            frame = frame.copy()
            frame.insert(0, "model", entry["model"])
            stacked.setdefault(f"{entry['label']}.{name}", []).append(frame)
    return {name: pd.concat(frames, ignore_index=True) for name, frames in stacked.items()}


def load_cells(store: ResultStore, record: dict[str, Any]) -> dict[str, StoredCell]:
    """The stored cells of a run's ``ok`` entries (missing ones are left out)."""
    out = {}
    for entry in record["cells"]:
        key = entry.get("key")
        if entry["status"] == "ok" and key and key not in out:
            try:
                out[key] = store.get_cell(key)
            except StoreError:
                continue
    return out


def write_report(
    store: ResultStore, record: dict[str, Any], *, diff_against: str | None = None
) -> Path:
    """Write ``report.html``, ``tables/*.csv|json`` and ``diff.json`` into the run's folder.

    Args:
        store: the store holding the run's cells.
        record: the finished run record; ``report`` and ``diff`` entries are added to it.
        diff_against: a run id to compare with (default: the previous finished run of the same
            config name).

    Returns:
        The path of ``report.html``.

    Raises:
        StoreError: an unknown ``diff_against`` run.
    """
    previous = (
        store.load_run(diff_against)
        if diff_against
        else store.previous_run(record["config"]["name"], record)
    )
    diff = diff_runs(record, previous) if previous else None
    cells = load_cells(store, record)
    folder = store.run_dir(record["run_id"])
    tables = {"summary": summary_frame(record), **suite_tables(record, cells)}
    for name, frame in tables.items():
        safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
        write_text_atomic(folder / "tables" / f"{safe}.csv", frame.to_csv(index=False))
        write_text_atomic(
            folder / "tables" / f"{safe}.json",
            frame.to_json(orient="records", indent=1, default_handler=str),
        )
    write_text_atomic(folder / "diff.json", json.dumps(diff, indent=1, default=str))
    path = folder / REPORT_FILE
    write_text_atomic(path, build_html(record, cells, diff))
    record["report"] = str(path)
    record["diff"] = (
        None
        if diff is None
        else {
            "previous_run": diff["previous_run"],
            "changed": len(diff["changed"]),
            "added": len(diff["added"]),
            "removed": len(diff["removed"]),
        }
    )
    return path
