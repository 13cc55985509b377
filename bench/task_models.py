"""Train every built-in task with its default settings and print one JSON object.

Per task: held-out sequence and token accuracy (2000 samples from the evaluation stream),
training wall time and CPU time, steps taken, parameter count and the configs used. Timings
are for one torch thread on the machine named under ``machine``.

Usage:
    python bench/task_models.py [task ...]
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict

import torch

from models.tasks import TASKS, get_task
from models.training import evaluate_task_model, train_task_model


def bench_task(name: str) -> dict:
    """Train and evaluate one task with its defaults."""
    task = get_task(name)
    cpu_start = time.process_time()
    model, report = train_task_model(task, progress=False)
    cpu_seconds = time.process_time() - cpu_start
    result = evaluate_task_model(model, task, n=2000, seed=0)
    return {
        "seq_acc": result.seq_acc,
        "token_acc": round(result.token_acc, 5),
        "seq_acc_by_length": {str(k): round(v, 4) for k, v in result.seq_acc_by_length.items()},
        "train_seconds": round(report.seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "steps": report.steps_done,
        "stopped_early": report.stopped_early,
        "params": sum(p.numel() for p in model.parameters()),
        "model_config": asdict(task.model_config),
        "train_config": asdict(task.train_config),
    }


def main(names: list[str]) -> None:
    torch.set_num_threads(1)
    out = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores_visible": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "tasks": {name: bench_task(name) for name in names or list(TASKS)},
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
