"""Computing one cell: load the model, build the inputs and key, measure, catch failures.

Shared by the in-process runner and Dask workers (``compute_on_worker`` loads its own model,
rebuilds the inputs and checks it derives the key the driver planned).
"""

from __future__ import annotations

import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from probes.config import CellSpec
from probes.hashing import cell_key, mechscope_version, model_identity
from probes.suite import PreparedInputs, Progress, get_suite

PROVENANCE_PACKAGES = (
    "torch",
    "transformer-lens",
    "transformers",
    "numpy",
    "pandas",
    "scikit-learn",
    "pyarrow",
    "plotly",
)


@dataclass
class CellPayload:
    """What computing one cell gives (pickled back from Dask workers).

    Attributes:
        ok: whether the measurement finished.
        summary, tables, notes: the suite's output (``figures`` as plotly JSON texts).
        error, traceback: what went wrong when not ``ok``.
        seconds: wall time of the measurement.
        key: the cell key the computing process derived (Dask workers check it).
    """

    ok: bool
    summary: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    traceback: str | None = None
    seconds: float = 0.0
    key: str | None = None


def error_text(exc: BaseException) -> str:
    """``TypeName: message``."""
    return f"{type(exc).__name__}: {exc}"


def _scalar(value: Any) -> Any:
    """A JSON-safe summary value (numpy and torch scalars become Python numbers)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def compute_cell(
    model: Any, cell: CellSpec, prepared: PreparedInputs, progress: Progress | None = None
) -> CellPayload:
    """Measure one cell; an exception becomes a failed payload, never escapes."""
    start = time.perf_counter()
    try:
        out = get_suite(cell.suite).measure(model, prepared.value, cell.options, progress)
        return CellPayload(
            ok=True,
            summary={k: _scalar(v) for k, v in out.summary.items()},
            tables=dict(out.tables),
            figures={name: fig.to_json() for name, fig in out.figures.items()},
            notes=list(out.notes),
            seconds=time.perf_counter() - start,
        )
    except Exception as exc:
        return CellPayload(
            ok=False,
            error=error_text(exc),
            traceback=traceback.format_exc(),
            seconds=time.perf_counter() - start,
        )


def load_for_run(model_text: str, device: str) -> Any:
    """Load a model for a run, on ``device``."""
    from models import load_model

    model = load_model(model_text)
    if device != "cpu":
        model.model.to(device)
    return model


def key_of(
    model: Any, identity: dict[str, str], cell: CellSpec, device: str
) -> tuple[PreparedInputs, str]:
    """A cell's inputs and content key (raises what ``prepare`` raises)."""
    suite = get_suite(cell.suite)
    prepared = suite.prepare(model, cell.options)
    key = cell_key(identity, suite.name, suite.version, prepared.fingerprint, cell.options, device)
    return prepared, key


_WORKER_MODEL: dict[tuple[str, str], tuple[Any, dict[str, str]]] = {}


def compute_on_worker(
    model_text: str, cell: CellSpec, device: str, expected_key: str
) -> CellPayload:
    """Compute one cell in a Dask worker: load the model (one kept per worker process), rebuild
    the inputs, check the key matches the driver's plan, measure."""
    start = time.perf_counter()
    try:
        cached = _WORKER_MODEL.get((model_text, device))
        if cached is None:
            _WORKER_MODEL.clear()  # one model per worker keeps memory bounded
            model = load_for_run(model_text, device)
            cached = (model, model_identity(model))
            _WORKER_MODEL[(model_text, device)] = cached
        model, identity = cached
        prepared, key = key_of(model, identity, cell, device)
        if key != expected_key:
            return CellPayload(
                ok=False,
                error=(
                    f"the worker derived key {key[:12]} but the driver planned {expected_key[:12]}: "
                    "the model or inputs differ on the worker (another mechscope version or "
                    "checkpoint there?)"
                ),
                seconds=time.perf_counter() - start,
                key=key,
            )
    except Exception as exc:
        return CellPayload(
            ok=False,
            error=error_text(exc),
            traceback=traceback.format_exc(),
            seconds=time.perf_counter() - start,
        )
    payload = compute_cell(model, cell, prepared)
    payload.key = key
    return payload


def provenance() -> dict[str, Any]:
    """Versions and machine of this process, for the run record."""
    from importlib.metadata import PackageNotFoundError, version

    import torch

    packages = {}
    for name in PROVENANCE_PACKAGES:
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = "not installed"
    return {
        "mechscope": mechscope_version(),
        "python": sys.version.split()[0],
        "packages": packages,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }
