"""Run a report config: plan every cell, compute the missing ones, store each as it finishes.

For each model the runner loads it once, hashes its weights, lets each suite build its inputs,
and derives every cell's content key (``probes.hashing.cell_key``). A key already in the store
is reused; the rest are computed in process (``backend="local"``, the default, no Dask import)
or on a Dask cluster (``backend="dask"``, ``probes.dask_backend``). Each finished cell is
written to the store at once and atomically, and the run record is rewritten after each cell,
so a run killed at any moment loses nothing already finished and a rerun resumes from the
store. A cell that raises is recorded as failed with its error and traceback; the run goes
on, and the next run tries that cell again.

Example:
    >>> record = run_report(load_config("probes/configs/example.toml"))   # doctest: +SKIP
    >>> record["counts"]                                                    # doctest: +SKIP
    {'computed': 9, 'reused': 0, 'failed': 0, 'skipped': 1}
"""

from __future__ import annotations

import os
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Literal

from probes.cells import CellPayload, compute_cell, error_text, key_of, load_for_run, provenance
from probes.config import CellSpec, ReportConfig
from probes.errors import BackendError, SuiteNotApplicable
from probes.hashing import model_identity
from probes.store import ResultStore
from probes.suite import PreparedInputs, get_suite

Backend = Literal["local", "dask"]
BACKENDS = ("local", "dask")


class _Bars:
    """tqdm bars: one over cells, one inside the current cell (suites report their steps)."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled
        self.inner: Any = None
        if enabled:
            from tqdm.auto import tqdm

            self._tqdm = tqdm
            self.outer = tqdm(total=total, desc="cells", unit="cell", dynamic_ncols=True)

    def start(self, text: str) -> None:
        if self.enabled:
            self.outer.set_postfix_str(text, refresh=True)

    def step(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        if self.inner is None:
            self.inner = self._tqdm(total=total, leave=False, dynamic_ncols=True, position=1)
        if self.inner.total != total or self.inner.desc != stage:
            self.inner.reset(total=total)  # a new stage: restart the count and the rate
            self.inner.set_description_str(stage, refresh=False)
        self.inner.n = done
        self.inner.refresh()

    def done(self, n: int = 1) -> None:
        if self.enabled:
            if self.inner is not None:
                self.inner.close()
                self.inner = None
            self.outer.update(n)

    def close(self) -> None:
        if self.enabled:
            self.done(0)
            self.outer.close()


def new_run_id(config: ReportConfig) -> str:
    """``20260101-120000-123-<config name>``: sortable, unique per millisecond."""
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")[:-3]
    safe = "".join(c if c.isalnum() or c in "_-" else "_" for c in config.name)[:60] or "report"
    return f"{stamp}-{safe}"


class ReportRun:
    """One execution of a config against a store; ``run()`` does the work.

    Args:
        config: a validated config.
        store: the result store (default folder if ``None``).
        backend: ``local`` (in process) or ``dask``.
        scheduler: the Dask scheduler address (``tcp://127.0.0.1:8786``), for ``dask``.
        show_progress: draw tqdm bars on stderr.
        write_report: write ``report.html`` and the tables when the run ends.
        diff_against: a run id to diff with (default: the previous run of the same config).

    Raises:
        BackendError: an unknown backend, or ``dask`` without a scheduler.
        StoreError: a ``diff_against`` run that is not in the store.
    """

    def __init__(
        self,
        config: ReportConfig,
        store: ResultStore | None = None,
        *,
        backend: Backend = "local",
        scheduler: str | None = None,
        show_progress: bool = True,
        write_report: bool = True,
        diff_against: str | None = None,
    ):
        if backend not in BACKENDS:
            raise BackendError(f"unknown backend {backend!r}; valid: {', '.join(BACKENDS)}")
        if backend == "dask" and not scheduler:
            raise BackendError(
                "--backend dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786, from "
                "`dask scheduler`)"
            )
        self.config = config
        self.store = store or ResultStore()
        if diff_against is not None:
            self.store.load_run(diff_against)  # an unknown run fails now, not after the work
        self.backend = backend
        self.scheduler = scheduler
        self.show_progress = show_progress
        self.write_report = write_report
        self.diff_against = diff_against
        self.cells = config.cells()
        started = datetime.now(UTC)
        self.record: dict[str, Any] = {
            "run_id": new_run_id(config),
            "status": "running",
            "pid": os.getpid(),
            "started": started.isoformat(),
            "backend": backend,
            "scheduler": scheduler,
            "config": {
                "name": config.name,
                "title": config.title,
                "source": config.source,
                "text": config.text,
                "device": config.device,
                "models": list(config.models),
            },
            "provenance": provenance(),
            "models": {},
            "cells": [self._entry(cell) for cell in self.cells],
        }

    @staticmethod
    def _entry(cell: CellSpec) -> dict[str, Any]:
        return {
            "model": cell.model,
            "label": cell.label,
            "suite": cell.suite,
            "options": asdict(cell.options),
            "status": "pending",
            "source": None,
            "key": None,
            "inputs": None,
            "seconds": None,
            "error": None,
            "traceback": None,
            "notes": [],
            "summary": {},
        }

    # -- bookkeeping -----------------------------------------------------------------------
    def _save(self) -> None:
        self.store.save_run(self.record)

    def _finish_cell(self, i: int, payload: CellPayload, key: str | None) -> None:
        entry = self.record["cells"][i]
        cell = self.cells[i]
        entry["seconds"] = round(payload.seconds, 3)
        if payload.ok and key is not None:
            identity = self.record["models"].get(cell.model, {})
            meta = {
                "model": cell.model,
                "identity": identity,
                "suite": cell.suite,
                "suite_version": get_suite(cell.suite).version,
                "label": cell.label,
                "options": asdict(cell.options),
                "inputs": entry["inputs"],
                "device": self.config.device,
                "summary": payload.summary,
                "notes": payload.notes,
                "seconds": payload.seconds,
                "created": datetime.now(UTC).isoformat(),
                "run_id": self.record["run_id"],
                "mechscope": self.record["provenance"]["mechscope"],
            }
            try:
                self.store.put_cell(key, meta, payload.tables, payload.figures)
            except Exception as exc:  # e.g. a table Parquet cannot hold: the cell fails
                payload = CellPayload(ok=False, error=f"storing the result failed: "
                                      f"{error_text(exc)}", traceback=traceback.format_exc())  # fmt: skip
                return self._finish_cell(i, payload, key)
            entry.update(
                status="ok",
                source="computed",
                key=key,
                summary=payload.summary,
                notes=payload.notes,
            )
        else:
            entry.update(
                status="failed",
                source="computed",
                key=key,
                error=payload.error,
                traceback=payload.traceback,
            )
            if key is not None:
                self.store.put_failure(
                    key,
                    {
                        "model": cell.model,
                        "suite": cell.suite,
                        "label": cell.label,
                        "error": payload.error,
                        "traceback": payload.traceback,
                        "run_id": self.record["run_id"],
                    },
                )
        self._save()

    def _fail(self, i: int, exc: BaseException, what: str) -> None:
        entry = self.record["cells"][i]
        entry.update(
            status="failed", error=f"{what}: {error_text(exc)}", traceback=traceback.format_exc()
        )

    # -- planning --------------------------------------------------------------------------
    def _plan_model(self, model_text: str, indices: list[int], bars: _Bars) -> tuple[Any, list]:
        """Load one model, key its cells, mark skipped/reused ones; the model and pending
        ``(index, prepared, key)``."""
        pending: list[tuple[int, PreparedInputs, str]] = []
        todo = []
        for i in indices:
            cell = self.cells[i]
            entry = self.record["cells"][i]
            if cell.skip_reason:
                entry.update(status="skipped", error=cell.skip_reason)
                bars.done()
            else:
                todo.append(i)
        if not todo:
            return None, pending
        try:
            bars.start(f"loading {model_text}")
            model = load_for_run(model_text, self.config.device)
            identity = model_identity(model)
        except Exception as exc:
            for i in todo:
                self._fail(i, exc, f"loading {model_text} failed")
                bars.done()
            return None, pending
        self.record["models"][model_text] = identity
        for i in todo:
            cell = self.cells[i]
            entry = self.record["cells"][i]
            try:
                prepared, key = key_of(model, identity, cell, self.config.device)
            except SuiteNotApplicable as exc:
                entry.update(status="skipped", error=str(exc))
                bars.done()
                continue
            except Exception as exc:
                self._fail(i, exc, "preparing the inputs failed")
                bars.done()
                continue
            entry.update(
                key=key,
                inputs={"fingerprint": prepared.fingerprint, "description": prepared.description},
            )
            if self.store.has_cell(key):
                stored = self.store.get_cell(key)
                entry.update(
                    status="ok",
                    source="reused",
                    summary=stored.summary,
                    notes=stored.meta.get("notes", []),
                    seconds=stored.meta.get("seconds"),
                )
                bars.done()
            else:
                pending.append((i, prepared, key))
        self._save()
        return model, pending

    def _by_model(self) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for i, cell in enumerate(self.cells):
            groups.setdefault(cell.model, []).append(i)
        return groups

    # -- execution -------------------------------------------------------------------------
    def _run_local(self, bars: _Bars) -> None:
        for model_text, indices in self._by_model().items():
            model, pending = self._plan_model(model_text, indices, bars)
            for i, prepared, key in pending:
                cell = self.cells[i]
                bars.start(f"{model_text} · {cell.label}")
                payload = compute_cell(model, cell, prepared, bars.step)
                self._finish_cell(i, payload, key)
                bars.done()
            del model

    def _run_dask(self, bars: _Bars) -> None:
        from probes.dask_backend import DaskJob, run_on_dask

        jobs = []
        for model_text, indices in self._by_model().items():
            model, pending = self._plan_model(model_text, indices, bars)
            del model  # workers load their own copy
            jobs += [DaskJob(i, model_text, self.cells[i], key) for i, _, key in pending]
        if not jobs:
            return
        bars.start(f"{len(jobs)} cells on {self.scheduler}")
        assert self.scheduler is not None
        for job, payload in run_on_dask(self.scheduler, jobs, self.config.device):
            self._finish_cell(
                job.index, payload, job.key if payload.key in (None, job.key) else None
            )
            bars.done()

    def run(self) -> dict[str, Any]:
        """Compute every cell, write the run record and (by default) the report.

        Returns:
            The run record: ``run_id``, ``status``, ``counts``, ``cells`` (status, source,
            key, seconds, summary, error of each), ``models`` (identities), ``provenance``.

        Raises:
            BackendError: Dask missing or the scheduler unreachable (cells already stored stay).
        """
        self.store.clean_partial()
        self._save()
        start = time.perf_counter()
        bars = _Bars(len(self.cells), self.show_progress)
        try:
            if self.backend == "dask":
                self._run_dask(bars)
            else:
                self._run_local(bars)
        except BaseException:
            self.record["status"] = "interrupted"
            self._save()
            raise
        finally:
            bars.close()
        statuses = [c["status"] for c in self.record["cells"]]
        sources = [c["source"] for c in self.record["cells"]]
        self.record["counts"] = {
            "computed": sum(
                1 for s, src in zip(statuses, sources) if s == "ok" and src == "computed"
            ),
            "reused": sources.count("reused"),
            "failed": statuses.count("failed"),
            "skipped": statuses.count("skipped"),
        }
        self.record["seconds"] = round(time.perf_counter() - start, 3)
        self.record["finished"] = datetime.now(UTC).isoformat()
        self.record["status"] = "finished"
        if self.write_report:
            from probes.report import write_report

            write_report(self.store, self.record, diff_against=self.diff_against)
        self._save()
        return self.record


def run_report(
    config: ReportConfig,
    store: ResultStore | None = None,
    *,
    backend: Backend = "local",
    scheduler: str | None = None,
    show_progress: bool = True,
    write_report: bool = True,
    diff_against: str | None = None,
) -> dict[str, Any]:
    """Run a config and write its report (see ``ReportRun`` for the arguments).

    Example:
        >>> rec = run_report(parse_config(text), ResultStore(tmp), show_progress=False)  # doctest: +SKIP
        >>> rec["counts"]["computed"]                                                    # doctest: +SKIP
        4
    """
    return ReportRun(
        config,
        store,
        backend=backend,
        scheduler=scheduler,
        show_progress=show_progress,
        write_report=write_report,
        diff_against=diff_against,
    ).run()
