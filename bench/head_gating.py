"""CHG fit time vs exhaustive single-head ablation on the same data; print one JSON object.

Per model: CHG fit seconds, exhaustive one-at-a-time ablation seconds (batched: several
single-head ablations share a forward pass), their ratio, the Spearman rank correlation
between the facilitation score and the single-head loss increase, class counts, the ablation
check and the seed spread. Models: ``task:sort`` (a trained in-repo model) and SmolLM2-135M
on short corpus sequences. Timings are for one torch thread on the machine under ``machine``.
The authors' package (``nam-causal-head-gating``) is not compared here (see ``peer``).

Usage:
    python bench/head_gating.py [--quick] [--tiny]

``--tiny`` fits SmolLM2 only (6 texts x 16 tokens, 8 steps a stage) and skips the exhaustive
ablation, which alone takes ~30 min on one CPU thread.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import asdict

import numpy as np
import torch
from scipy.stats import spearmanr

from analysis.gating_ablation import ablation_check, single_head_ablation
from analysis.gating_data import GatingData, next_token_data, task_data
from analysis.head_gating import HeadGatingOptions, fit_head_gates
from models import load_model
from models.corpus import load_corpus
from models.tasks import get_task


def compare(
    model, data: GatingData, options: HeadGatingOptions, ablate_rows: int, exhaustive: bool = True
) -> dict:
    """Fit CHG, run exhaustive single-head ablation (unless skipped), and compare them."""
    start = time.perf_counter()
    result = fit_head_gates(model, data, options=options)
    chg_seconds = time.perf_counter() - start
    ablate_seconds, rho = float("nan"), float("nan")
    fac = result.scores["facilitation"].flatten().numpy()
    if exhaustive:
        start = time.perf_counter()
        single = single_head_ablation(model, data, heads_per_pass=max(1, ablate_rows // len(data)),
                                      max_rows=ablate_rows)  # fmt: skip
        ablate_seconds = time.perf_counter() - start
        rho = spearmanr(fac, single.flatten().numpy()).statistic
    check = ablation_check(model, data, result, max_rows=options.eval_rows)
    return {
        "data": {
            "rows": len(data),
            "supervised_positions": data.n_supervised,
            "max_len": int(data.lengths.max()),
        },
        "heads": int(fac.size),
        "options": asdict(options),
        "chg_seconds": round(chg_seconds, 2),
        "single_ablation_seconds": None if not exhaustive else round(ablate_seconds, 2),
        "time_ratio_chg_over_ablation": None
        if not exhaustive
        else round(chg_seconds / ablate_seconds, 3),
        "spearman_facilitation_vs_ablation": None if np.isnan(rho) else round(float(rho), 4),
        "class_counts": result.class_counts(),
        "valid_seeds": int(result.valid_seeds.sum()),
        "facilitation_std_mean": round(float(result.score_std["facilitation"].mean()), 4),
        "ungated_loss": round(result.ungated_loss, 5),
        "ablation_check": {
            r["class"]: {
                "n_heads": r["n_heads"],
                "delta_loss": round(r["delta_loss"], 4),
                "delta_accuracy": round(r["delta_accuracy"], 4),
            }
            for r in check.rows
        },
        "warnings": list(result.warnings),
    }


def task_sort(quick: bool) -> dict:
    lm = load_model("task:sort")
    task = get_task("sort")
    seqs = task.sample(64 if quick else 256, np.random.default_rng(0))
    out_index = {v: i for i, v in enumerate(task.output_values)}
    outs = [[out_index[v] for v in task.target(s)] for s in seqs]
    data = task_data(lm, seqs, outs, name="task:sort samples")
    options = HeadGatingOptions(steps=50 if quick else 200, batch_size=32, n_seeds=4)
    return compare(lm, data, options, ablate_rows=256)


def smollm(quick: bool, exhaustive: bool = True, tiny: bool = False) -> dict:
    lm = load_model("smollm2-135m")
    n_texts, max_len, steps = (6, 16, 8) if tiny else (12, 24, 10) if quick else (32, 32, 40)
    texts = load_corpus()[:n_texts]
    data = next_token_data(lm, texts, max_len=max_len, name="corpus chunks")
    options = HeadGatingOptions(steps=steps, batch_size=8, n_seeds=2, eval_rows=16)
    return compare(lm, data, options, ablate_rows=64, exhaustive=exhaustive)


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    quick = "--quick" in argv
    tiny = "--tiny" in argv  # SmolLM2 only, 6 texts x 16 tokens, no exhaustive ablation
    task_only = "--task-only" in argv  # task:sort only (SmolLM2: bench/head_gating_smollm2.py)
    out = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "quick": quick,
        "task:sort": None if tiny else task_sort(quick),
        "smollm2-135m": None if task_only else smollm(quick, exhaustive=not tiny, tiny=tiny),
        "peer": "see bench/head_gating_smollm2.py --peer",
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
