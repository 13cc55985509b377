"""Transformer Programs: a seed x learning-rate (x epochs) grid of fits, run in parallel.

The paper reports the best program of a grid per task (architectures x 5 seeds); this is
that search for the tasks whose shipped program is short of Table 1. Every grid point is
``train_and_save_program(task, folder, seed=..., lr=..., epochs=...)`` in its own process
with one torch thread, so N workers run N fits at once. Each fit keeps its best epoch by
validation accuracy; the grid's winner per task is also chosen by validation accuracy
(never by test), and its test accuracy is what is reported.

Prints one JSON object per fit as it finishes, then a summary per task. The run is added to
the ``runs`` of ``--out`` (default ``bench/results/program-grid-<tasks>.json``; earlier runs
stay), rewritten after every fit so a grid cut short keeps its rows. The program folders
stay under ``--programs`` so a winner can be copied into ``models/data/program-<task>/``.

Usage:
    python bench/program_grid.py --task dyck2 --seeds 0-9 --lr 0.02 0.05 --epochs 12 \
        [--task double_hist ...] [--workers 16] [--programs DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import os
import time
from functools import partial
from pathlib import Path

from machine import cpu_name

RESULTS = Path(__file__).parent / "results"


def _seeds(text: str) -> list[int]:
    """``"0-4"`` -> [0, 1, 2, 3, 4]; ``"1,3"`` -> [1, 3]."""
    out: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        out.extend(range(int(low), int(high or low) + 1))
    return out


def _fit(point: dict, deadline: float | None) -> dict:
    import torch

    torch.set_num_threads(1)
    from models.programs import train_and_save_program

    folder = Path(point["folder"])
    start = time.perf_counter()
    device = point["device"]
    where = "1 torch thread" if device == "cpu" else f"{torch.cuda.get_device_name()} ({device})"
    settings = {"batch_size": point["batch_size"]} if point["batch_size"] else {}
    shared = f", {point['workers']} fits in parallel" if point["workers"] > 1 else ""
    try:
        train_and_save_program(
            point["task"],
            folder,
            progress=False,
            device=device,
            should_stop=(lambda: time.time() > deadline) if deadline else None,
            seed=point["seed"],
            lr=point["lr"],
            epochs=point["epochs"],
            machine=f"{cpu_name()}, {where}{shared}",
            **settings,
        )
    except Exception as error:  # a failed point is reported, the grid goes on
        return {**point, "error": f"{type(error).__name__}: {error}"}
    metrics = json.loads((folder / "config.json").read_text())["metrics"]
    return {
        **point,
        "seconds": round(time.perf_counter() - start, 1),
        **{k: metrics[k] for k in ("val_acc", "test_acc", "best_epoch", "steps", "interrupted")},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", action="append", required=True)
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--lr", type=float, nargs="+", default=[0.05])
    parser.add_argument("--epochs", type=int, nargs="+", default=None)
    parser.add_argument("--batch-size", type=int, default=None, help="default: the task's")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (fits share the GPU)")
    parser.add_argument(
        "--minutes", type=float, default=None, help="stop every fit then, keeping its best epoch"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--programs", type=Path, default=Path("/tmp/program-grid"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    from models.program_tasks import program_task

    args.out = args.out or RESULTS / f"program-grid-{'-'.join(args.task)}.json"
    args.started = time.strftime("%Y-%m-%dT%H:%M:%S")
    deadline = time.time() + 60 * args.minutes if args.minutes else None
    points = []
    for task in args.task:
        epochs = args.epochs or [program_task(task).epochs]
        for seed, lr, n in itertools.product(_seeds(args.seeds), args.lr, epochs):
            name = f"{task}-s{seed}-lr{lr:g}-e{n}" + (
                f"-b{args.batch_size}" if args.batch_size else ""
            )
            points.append(
                {
                    "task": task,
                    "seed": seed,
                    "lr": lr,
                    "epochs": n,
                    "batch_size": args.batch_size,
                    "device": args.device,
                    "workers": args.workers,
                    "folder": str(args.programs / name),
                }
            )
    # Longest fits first, so the pool does not end on one straggler.
    points.sort(key=lambda p: -p["epochs"])
    start = time.perf_counter()
    rows: list[dict] = []
    with mp.get_context("spawn").Pool(args.workers) as pool:
        for row in pool.imap_unordered(partial(_fit, deadline=deadline), points):
            rows.append(row)
            print(json.dumps(row), flush=True)
            result = _result(args, rows, start)
    print(
        json.dumps({"summary": result["summary"], "wall_seconds": result["wall_seconds"]}, indent=1)
    )


def _result(args: argparse.Namespace, rows: list[dict], start: float) -> dict:
    from models.program_tasks import program_task

    summary = {}
    for task in args.task:
        done = [r for r in rows if r["task"] == task and "val_acc" in r]
        if not done:
            continue
        best = max(done, key=lambda r: (r["val_acc"], -r["epochs"]))
        tests = sorted(r["test_acc"] for r in done)
        summary[task] = {
            "fits": len(done),
            "best_by_val": best,
            "test_acc_min": tests[0],
            "test_acc_median": tests[len(tests) // 2],
            "test_acc_max": tests[-1],
            "paper_acc": program_task(task).paper_acc,
        }
    result = {
        "started": args.started,
        "machine": cpu_name(),
        "workers": args.workers,
        "grid": {
            "tasks": args.task,
            "seeds": args.seeds,
            "lr": args.lr,
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "device": args.device,
            "minutes": args.minutes,
        },
        "wall_seconds": round(time.perf_counter() - start, 1),
        "summary": summary,
        "fits": sorted(rows, key=lambda r: (r["task"], r["seed"], r["lr"], r["epochs"])),
    }
    runs = json.loads(args.out.read_text())["runs"] if args.out.is_file() else []
    runs = [r for r in runs if r["started"] != args.started] + [result]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"bench": "program_grid", "runs": runs}, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
