"""Batch probe report over a task model, a compiled RASP model and SmolLM2-135M: cold run,
rerun from the store, and the same config on a Dask LocalCluster, in one process.

Prints one JSON object: the cold run's wall time, cell counts and report size; the rerun's
time and the cold/rerun ratio; the Dask run's time (fresh store, ``--workers`` worker
processes of one thread each on 127.0.0.1) next to the in-process time; every cell's time;
and SmolLM2's per-layer linear-probe accuracy on the truth of sums and of capital-city
statements against the shuffled-label control (``[accuracy, control]`` per layer).

    nice -n 10 python bench/reports.py [--threads 1] [--workers 2] [--no-dask] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

CONFIG = """
title = "bench: 3 models x 4 suites (+ RASP recovery)"
models = ["task:induction", "rasp:sort", "smollm2-135m"]

[[suite]]
name = "head_scores"

[[suite]]
name = "lens_accuracy"
options = { n_texts = 8 }      # text models: 8 corpus chunks of 32 tokens

[[suite]]
name = "chg"
options = { n_texts = 8, max_len = 16 }   # text models: 10 steps x 3 stages, batch 8, 2 seeds

[[suite]]
name = "linear_probe"
models = ["task:induction", "rasp:sort"]
options = { property = "duplicate_token", n_examples = 128 }

[[suite]]
name = "linear_probe"
label = "linear_probe_arithmetic"
models = ["smollm2-135m"]
options = { property = "arithmetic_truth", n_examples = 160 }

[[suite]]
name = "linear_probe"
label = "linear_probe_capitals"
models = ["smollm2-135m"]
options = { property = "capital_truth", n_examples = 120 }

[[suite]]
name = "rasp_recovery"
"""


def _size_mb(path: str) -> float:
    return round(Path(path).stat().st_size / 1e6, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads in process")
    parser.add_argument("--workers", type=int, default=2, help="Dask worker processes")
    parser.add_argument("--no-dask", action="store_true")
    parser.add_argument("--out", default=None, help="keep the stores here (default: a temp dir)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from probes import ResultStore, parse_config, run_report

    config = parse_config(CONFIG, "bench/reports.py", name="bench")
    root = Path(args.out or tempfile.mkdtemp(prefix="mechscope-bench-reports-"))
    local_store = ResultStore(root / "local")
    with contextlib.redirect_stdout(sys.stderr):
        start = time.perf_counter()
        cold = run_report(config, local_store)
        cold_s = time.perf_counter() - start
        start = time.perf_counter()
        warm = run_report(config, local_store)
        warm_s = time.perf_counter() - start
    out = {
        "benchmark": "batch_reports",
        "device": f"cpu ({platform.machine()}, {__import__('os').cpu_count()} cores), "
        f"{args.threads} torch thread(s) in process",
        "models": list(config.models),
        "cells": len(cold["cells"]),
        "cold": {"seconds": round(cold_s, 1), **cold["counts"],
                 "report_mb": _size_mb(cold["report"]), "report": cold["report"]},
        "rerun": {"seconds": round(warm_s, 2), **warm["counts"]},
        "cold_over_rerun": round(cold_s / warm_s, 1),
        "cell_seconds": {f"{c['model']} · {c['label']}": c["seconds"] for c in cold["cells"]
                         if c["status"] == "ok"},
        "failed": {f"{c['model']} · {c['label']}": c["error"] for c in cold["cells"]
                   if c["status"] == "failed"},
    }  # fmt: skip
    for label in ("linear_probe_arithmetic", "linear_probe_capitals"):
        probe = next(
            (c for c in cold["cells"] if c["label"] == label and c["status"] == "ok"), None
        )
        if probe is None:
            continue
        table = local_store.get_cell(probe["key"]).table("by_layer")
        out[f"smollm2_{label}"] = {
            "summary": probe["summary"],
            "by_layer": {
                row.layer: [round(row.accuracy, 3), round(row.control_accuracy, 3)]
                for row in table.itertuples()
            },
        }
    if not args.no_dask:
        from distributed import LocalCluster

        with contextlib.redirect_stdout(sys.stderr):
            start = time.perf_counter()
            with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                              host="127.0.0.1", dashboard_address=None) as cluster:  # fmt: skip
                started = time.perf_counter() - start
                start = time.perf_counter()
                remote = run_report(config, ResultStore(root / "dask"), backend="dask",
                                    scheduler=cluster.scheduler_address)  # fmt: skip
                dask_s = time.perf_counter() - start
        same = [c["key"] for c in remote["cells"]] == [c["key"] for c in cold["cells"]]
        out["dask"] = {"workers": f"{args.workers} processes x 1 thread on 127.0.0.1",
                       "cluster_start_seconds": round(started, 1), "seconds": round(dask_s, 1),
                       **remote["counts"], "same_keys_as_local": same,
                       "in_process_seconds": round(cold_s, 1),
                       "in_process_over_dask": round(cold_s / dask_s, 2)}  # fmt: skip
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
