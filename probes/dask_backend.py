"""Scale-out on Dask: fan the cells a run still needs out to a ``dask.distributed`` cluster.

The driver plans (loads each model once to hash its weights and key its cells) and is the
only writer of the store; workers receive ``(model, suite entry, expected key)``, load the
model themselves (one kept per worker process), rebuild the inputs, check they derive the
same key, measure, and send the result back. The store therefore needs no shared filesystem.
Cells of a ``device = "cuda"`` config ask for one ``GPU`` worker resource each, so they only
run on workers started with ``--resources GPU=1`` (one cell per GPU at a time).

Start a cluster on one machine with ``dask scheduler`` and ``dask worker tcp://127.0.0.1:8786
--nthreads 1``, or from Python with ``distributed.LocalCluster(host="127.0.0.1")``, and pass
its address as ``--scheduler``. Nothing here is imported unless ``--backend dask`` is chosen.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from probes.cells import CellPayload, compute_on_worker
from probes.config import CellSpec
from probes.errors import BackendError

#: How long to wait for the scheduler before giving up.
CONNECT_TIMEOUT = "15s"


@dataclass(frozen=True)
class DaskJob:
    """One cell to compute remotely: its index in the run, model, suite entry and planned key."""

    index: int
    model: str
    cell: CellSpec
    key: str


def task_resources(device: str) -> dict[str, float] | None:
    """The worker resources one cell needs: one ``GPU`` on CUDA, nothing on CPU."""
    return {"GPU": 1} if device == "cuda" else None


def run_on_dask(
    scheduler: str, jobs: list[DaskJob], device: str
) -> Iterator[tuple[DaskJob, CellPayload]]:
    """Submit every job and yield ``(job, payload)`` as each one finishes (any order).

    Args:
        scheduler: the scheduler address (``tcp://127.0.0.1:8786``).
        jobs: the cells to compute.
        device: ``cpu`` or ``cuda``.

    Raises:
        BackendError: distributed is not installed, or the scheduler cannot be reached.
    """
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - distributed is a dependency
        raise BackendError(
            "--backend dask needs dask.distributed (pip install distributed)"
        ) from exc
    try:
        client = Client(scheduler, timeout=CONNECT_TIMEOUT, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise BackendError(f"cannot reach the Dask scheduler at {scheduler!r}: {exc}") from exc
    try:
        futures = {}
        for job in jobs:
            future = client.submit(
                compute_on_worker,
                job.model,
                job.cell,
                device,
                job.key,
                key=f"mechscope-cell-{job.key[:16]}-{job.index}",
                resources=task_resources(device),
                pure=False,
            )
            futures[future] = job
        for future in as_completed(list(futures), loop=client.loop):
            job = futures[future]
            try:
                payload = future.result()
            except Exception as exc:  # the worker died or the task could not be unpickled
                payload = CellPayload(
                    ok=False, error=f"Dask task failed: {type(exc).__name__}: {exc}"
                )
            yield job, payload
    finally:
        client.close()
