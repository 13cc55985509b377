"""Transformer Programs: accuracy against the paper, training time, size, code, agreement.

For every task of ``models.program_tasks`` (or those named), reads the stored program (cache,
else shipped) and prints one JSON object: test token accuracy of the discretised program on
its stored test set, the paper's Table 1 accuracy, the CPU training time recorded when it
was fitted (and the machine), layers / heads / MLPs per layer, the compiled TransformerLens
size, lines of decompiled code, and the agreement of the decompiled program and of the
``program:<task>`` TransformerLens model with the discretised model on every test input.
With ``--train`` the programs are fitted again first (``--epochs N`` overrides the epochs;
hours of CPU for all tasks at the authors' 250 epochs) and saved to the cache.
Results are also written to ``bench/results/programs-cpu-1thread.json``.

Usage:
    python bench/programs.py [--train] [--epochs N] [task ...]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from machine import cpu_name

from models.compiled import predict_batch
from models.program_tasks import PROGRAM_TASKS, program_task
from models.programs import (
    discrete_program,
    find_program,
    load_program_model,
    read_program,
    read_test_set,
    train_and_save_program,
)
from rasp.programs.decompile import decompile_program
from rasp.programs.to_rasp import program_to_rasp

RESULTS = Path(__file__).parent / "results" / "programs-cpu-1thread.json"


def bench_task(name: str) -> dict:
    """Score one stored program (see the module docstring)."""
    folder = find_program(name, train_missing=False)
    stored = read_program(folder)
    tests = read_test_set(folder)
    task = program_task(name)
    program = discrete_program(stored)
    source = decompile_program(program, name)
    namespace: dict = {}
    exec(compile(source, f"<{name}>", "exec"), namespace)
    start = time.perf_counter()
    decompiled = [namespace["run"](s) for s in tests]
    run_seconds = time.perf_counter() - start
    vocab = stored.vocab
    model_out = []
    with torch.no_grad():
        for s in tests:
            pred = stored.model(torch.tensor([vocab.encode(s)]), hard=True).argmax(-1)[0, 1:]
            model_out.append([vocab.output_values[c] for c in pred.tolist()])
    loaded = load_program_model(name, folder=folder)
    tl_out = predict_batch(loaded, tests)
    hits = total = 0
    for s, got in zip(tests, decompiled):
        for want, y in zip(task.target(s), got):
            if want is not None:
                hits, total = hits + (want == y), total + 1
    arch = stored.model.arch
    emitted = program_to_rasp(program)
    cfg = loaded.cfg
    return {
        "test_acc": round(100 * hits / total, 2),
        "paper_acc": task.paper_acc,
        "within_2_points": None if task.paper_acc is None else task.paper_acc - 100 * hits / total <= 2,
        "train_seconds": stored.meta.get("trained_seconds"),
        "train_machine": stored.meta.get("machine"),
        "epochs": stored.meta["fit"]["epochs"],
        "paper_epochs": task.paper_epochs,
        "batch_size": stored.meta["fit"]["batch_size"],
        "seed": stored.meta["fit"]["seed"],
        "layers": arch.n_layers,
        "heads_per_layer": arch.heads_per_layer,
        "mlps_per_layer": arch.mlps_per_layer,
        "decompiled_lines": len(source.splitlines()),
        "test_inputs": len(tests),
        "agreement_decompiled_vs_model": sum(a == b for a, b in zip(decompiled, model_out)) / len(tests),
        "agreement_transformerlens_vs_model": sum(a == b for a, b in zip(tl_out, model_out)) / len(tests),
        "decompiled_run_ms_per_input": round(1000 * run_seconds / len(tests), 3),
        "transformerlens": {"blocks": cfg.n_layers, "heads": cfg.n_heads, "d_model": cfg.d_model,
                            "d_mlp": cfg.d_mlp},
        "rasp_direct_parts": len(emitted.sops) - 3,
        "rasp_skipped_parts": len(emitted.skipped),
        "checkpoint": str(folder),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("tasks", nargs="*", default=list(PROGRAM_TASKS))
    parser.add_argument("--train", action="store_true", help="fit the programs again first")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.train:
        for name in args.tasks:
            extra = {} if args.epochs is None else {"epochs": args.epochs}
            train_and_save_program(name, machine=f"{cpu_name()}, 1 torch thread", **extra)
    out = {
        "machine": {
            "cpu": cpu_name(),
            "cores_visible": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "note": "training times were recorded when each program was fitted, where "
            "train_machine says (most: 1 torch thread, niced, on a shared 2-core machine)",
        },
        "tasks": {name: bench_task(name) for name in args.tasks},
    }
    print(json.dumps(out, indent=1))
    # Tasks benched earlier and not named this time keep their stored rows.
    stored = json.loads(RESULTS.read_text()).get("tasks", {}) if RESULTS.is_file() else {}
    out["tasks"] = {**stored, **out["tasks"]}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
