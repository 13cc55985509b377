"""The result store: one immutable folder of Parquet tables per finished cell, and run records.

Why Parquet files rather than DuckDB:

- Nothing to add: pyarrow already comes with streamlit, while DuckDB would be a new ~40 MB
  dependency.
- Crash safety comes from the filesystem. A cell is written into a temporary folder and
  renamed to ``cells/<key[:2]>/<key>`` in one ``os.replace``; a SIGKILL at any moment leaves the
  cell complete or absent, never partial, with no write-ahead log or lock to recover.
- No single writer. A DuckDB file admits one writing process; content-addressed folders need
  no lock, so two runs (or a Dask driver and a local run) can share a store, and two writers of
  the same key write the same content: whichever rename lands first wins.
- Each suite's tables keep their own columns (Parquet per table), where one database would
  need a table per schema or JSON columns. The files stay queryable: pandas, pyarrow or DuckDB
  itself can read ``cells/*/*/tables/*.parquet``.

Layout under the store root (``cache_dir()/"reports"`` unless given)::

    cells/ab/<key>/cell.json             status ok, summary, provenance of the cell
    cells/ab/<key>/tables/<name>.parquet
    cells/ab/<key>/figures/<name>.json   plotly JSON
    failures/<key>.json                  the last failure of a cell (retried on the next run)
    runs/<run id>/run.json               config, every cell's status/key/time, provenance
    runs/<run id>/report.html, tables/*.csv, tables/*.json

Example:
    >>> store = ResultStore(tmp_path)                                  # doctest: +SKIP
    >>> store.put_cell(key, {"summary": {}}, {"t": frame}, {})          # doctest: +SKIP
    >>> store.get_cell(key).table("t").equals(frame)                    # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from probes.errors import StoreError

CELL_FILE = "cell.json"
RUN_FILE = "run.json"
SCHEMA_VERSION = 1
_TMP_PREFIX = ".tmp-"
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,120}")


def default_root() -> Path:
    """``cache_dir()/"reports"``: where reports go unless a folder is given."""
    from models.cache import cache_dir

    return cache_dir() / "reports"


def _safe_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name) or name.startswith("."):
        raise StoreError(f"{what} {name!r} must be 1-120 of letters, digits, '_', '.', '-'")
    return name


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def write_text_atomic(path: Path, text: str | bytes) -> None:
    """Write a file through a temporary sibling and ``os.replace`` (all or nothing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; reports are meant to be read and shared
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode("utf-8") if isinstance(text, str) else text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


@dataclass(frozen=True)
class StoredCell:
    """A finished cell read back from the store.

    Attributes:
        key: its content key.
        meta: ``cell.json``: ``summary``, ``notes``, ``identity``, ``suite``, ``options``,
            ``inputs``, ``seconds``, ``versions``, ``created``, ``tables``, ``figures``.
        path: its folder.
    """

    key: str
    meta: dict[str, Any]
    path: Path

    @property
    def summary(self) -> dict[str, Any]:
        """The headline numbers."""
        return dict(self.meta.get("summary", {}))

    def table(self, name: str) -> pd.DataFrame:
        """One stored table.

        Raises:
            StoreError: for a table the cell does not have, or an unreadable file.
        """
        if name not in self.meta.get("tables", []):
            raise StoreError(
                f"cell {self.key[:12]} has no table {name!r}; tables: "
                f"{', '.join(self.meta.get('tables', [])) or 'none'}"
            )
        path = self.path / "tables" / f"{name}.parquet"
        try:
            return pd.read_parquet(path)
        except Exception as exc:
            raise StoreError(f"{path}: unreadable Parquet table ({exc})") from exc

    def tables(self) -> dict[str, pd.DataFrame]:
        """Every stored table, by name."""
        return {name: self.table(name) for name in self.meta.get("tables", [])}

    def figure_json(self, name: str) -> str:
        """One stored figure as plotly JSON text."""
        path = self.path / "figures" / f"{name}.json"
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise StoreError(f"{path}: missing figure {name!r} of cell {self.key[:12]}") from exc

    def figures(self) -> dict[str, Any]:
        """Every stored figure as a plotly ``Figure``, by name."""
        import plotly.io as pio

        return {
            name: pio.from_json(self.figure_json(name)) for name in self.meta.get("figures", [])
        }


class ResultStore:
    """Finished cells by content key, failures, and run records under one folder.

    Args:
        root: the store folder (created if missing); ``None``: ``default_root()``.
    """

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root is not None else default_root()
        try:
            for sub in ("cells", "failures", "runs"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot use {self.root} as a report store: {exc}") from exc

    def __repr__(self) -> str:
        return f"ResultStore({str(self.root)!r})"

    # -- cells -----------------------------------------------------------------------------
    def cell_dir(self, key: str) -> Path:
        """Where the cell of ``key`` lives (it may not exist)."""
        _safe_name(key, "cell key")
        return self.root / "cells" / key[:2] / key

    def has_cell(self, key: str) -> bool:
        """Whether a finished cell is stored under ``key``."""
        return (self.cell_dir(key) / CELL_FILE).is_file()

    def get_cell(self, key: str) -> StoredCell:
        """The finished cell of ``key``.

        Raises:
            StoreError: when it is not stored or its ``cell.json`` is unreadable.
        """
        folder = self.cell_dir(key)
        path = folder / CELL_FILE
        if not path.is_file():
            raise StoreError(f"no finished cell {key[:12]} in {self.root}")
        try:
            meta = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path}: unreadable cell record ({exc})") from exc
        return StoredCell(key, meta, folder)

    def put_cell(
        self,
        key: str,
        meta: dict[str, Any],
        tables: dict[str, pd.DataFrame],
        figures: dict[str, str],
    ) -> StoredCell:
        """Store a finished cell atomically (a temporary folder renamed into place).

        Args:
            key: the content key.
            meta: JSON-safe record (summary, provenance...); ``tables`` and ``figures`` name
                lists are added.
            tables: frames written as Parquet.
            figures: plotly JSON texts.

        Returns:
            The stored cell. If another writer stored the key first, that cell is kept.
        """
        target = self.cell_dir(key)
        if self.has_cell(key):
            return self.get_cell(key)
        for name in [*tables, *figures]:
            _safe_name(name, "table or figure name")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", dir=target.parent))
        try:
            (tmp / "tables").mkdir()
            (tmp / "figures").mkdir()
            for name, frame in tables.items():
                frame.to_parquet(tmp / "tables" / f"{name}.parquet", index=False)
            for name, text in figures.items():
                (tmp / "figures" / f"{name}.json").write_text(text, encoding="utf-8")
            record = {
                **meta,
                "key": key,
                "schema": SCHEMA_VERSION,
                "tables": list(tables),
                "figures": list(figures),
            }
            (tmp / CELL_FILE).write_text(json.dumps(record, indent=1, default=str), "utf-8")
            try:
                os.replace(tmp, target)
            except OSError:
                if not self.has_cell(key):  # not a concurrent writer of the same key
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        self.failures_path(key).unlink(missing_ok=True)
        return self.get_cell(key)

    def failures_path(self, key: str) -> Path:
        """Where the last failure of ``key`` is recorded."""
        return self.root / "failures" / f"{_safe_name(key, 'cell key')}.json"

    def put_failure(self, key: str, record: dict[str, Any]) -> None:
        """Record that computing ``key`` raised (the next run tries it again)."""
        write_text_atomic(self.failures_path(key), json.dumps(record, indent=1, default=str))

    def get_failure(self, key: str) -> dict[str, Any] | None:
        """The recorded failure of ``key``, if any."""
        path = self.failures_path(key)
        if not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def cell_keys(self) -> list[str]:
        """Keys of every finished cell."""
        return sorted(p.parent.name for p in (self.root / "cells").glob(f"*/*/{CELL_FILE}"))

    def partial_entries(self) -> list[Path]:
        """Temporary folders and files left by writers (a killed writer leaves one)."""
        return sorted(self.root.rglob(f"{_TMP_PREFIX}*"))

    def clean_partial(self) -> int:
        """Remove the temporary entries of writers that are no longer running; how many."""
        removed = 0
        for path in self.partial_entries():
            pid = path.name[len(_TMP_PREFIX) :].split("-", 1)[0]
            if pid.isdigit() and _pid_alive(int(pid)):
                continue
            if path.is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed += 1
        return removed

    # -- runs ------------------------------------------------------------------------------
    def run_dir(self, run_id: str) -> Path:
        """The folder of a run (it may not exist)."""
        return self.root / "runs" / _safe_name(run_id, "run id")

    def save_run(self, record: dict[str, Any]) -> Path:
        """Write a run record (``run.json``) atomically."""
        folder = self.run_dir(record["run_id"])
        write_text_atomic(folder / RUN_FILE, json.dumps(record, indent=1, default=str))
        return folder

    def load_run(self, run_id: str) -> dict[str, Any]:
        """A run record.

        Raises:
            StoreError: for an unknown run (the message lists the latest ones) or a corrupt file.
        """
        path = self.run_dir(run_id) / RUN_FILE
        if not path.is_file():
            runs = [r["run_id"] for r in self.list_runs()[:5]]
            raise StoreError(
                f"no run {run_id!r} in {self.root}; latest: {', '.join(runs) or 'none yet'}"
            )
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path}: unreadable run record ({exc})") from exc

    def list_runs(self) -> list[dict[str, Any]]:
        """Every run record, newest first; a ``running`` run whose process is gone is reported
        as ``interrupted``."""
        runs = []
        for path in (self.root / "runs").glob(f"*/{RUN_FILE}"):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                continue
            if record.get("status") == "running" and not _pid_alive(int(record.get("pid", 0))):
                record["status"] = "interrupted"
            runs.append(record)
        return sorted(runs, key=lambda r: (r.get("started", ""), r["run_id"]), reverse=True)

    def previous_run(self, config_name: str, before: dict[str, Any]) -> dict[str, Any] | None:
        """The latest finished run of the same config started before the run ``before``."""
        for record in self.list_runs():
            if (
                record["run_id"] != before["run_id"]
                and record.get("config", {}).get("name") == config_name
                and record.get("status") == "finished"
                and record.get("started", "") < before.get("started", "")
            ):
                return record
        return None
