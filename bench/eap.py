"""Edge attribution patching (EAP, EAP-IG) vs exact activation patching of every edge; one JSON.

Per model: seconds for EAP (2 forward + 1 backward), EAP-IG (5 steps) and exact activation
patching of every edge (batched: many single-edge patches share a forward pass; it also patches
each node once), and of the same exact patching one edge per pass where there are few edges;
the ratios; the number of edges; and agreement with the exact scores: Spearman over all edges,
Jaccard of the top-10 and top-10% edges by magnitude, and sign agreement on the edges whose
exact effect is at least 1% of the largest. Models: the trained ``task:induction`` (first half
corrupted, and both halves), ``task:sort``, the compiled ``rasp:sort``, random-weight
4x4 and 8x8 models with MLPs and LayerNorm (scaling), and SmolLM2-135M (EAP only, with the
exact effect of EAP's top 20 edges; the full exact time is extrapolated). The metric is the
logit difference at the last position between the clean answer and the corrupted run's answer.

Usage:
    python bench/eap.py [--repeats 3] [--no-smollm2] [--out bench/results/eap-cpu-1thread.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from machine import cpu_name
from scipy.stats import spearmanr
from transformer_lens import HookedTransformer, HookedTransformerConfig

from analysis.activation_patching import activation_patching_edges
from analysis.edge_attribution import answer_metric, corrupt_tokens, edge_attribution_scores
from models.loader import load_model
from models.tasks import get_task

RESULTS = Path(__file__).parent / "results" / "eap-cpu-1thread.json"


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def jaccard(a, b) -> float:
    return len(set(a) & set(b)) / len(set(a) | set(b))


def agreement(estimate, exact, edges) -> dict:
    k10 = max(1, round(0.1 * len(edges)))
    top = lambda s, k: [edges[i] for i in torch.argsort(s.abs(), descending=True)[:k]]  # noqa: E731
    big = exact.abs() >= 0.01 * float(exact.abs().max())
    return {
        "spearman": round(float(spearmanr(estimate, exact).statistic), 4),
        "top10_jaccard": round(jaccard(top(estimate, 10), top(exact, 10)), 3),
        "top10pct_jaccard": round(jaccard(top(estimate, k10), top(exact, k10)), 3),
        "top10pct_k": k10,
        "sign_agreement": round(float((estimate[big].sign() == exact[big].sign()).float().mean()), 3),
        "top1_same": top(estimate, 1) == top(exact, 1),
    }  # fmt: skip


def compare(model, clean, corrupted, repeats: int, note: str = "") -> dict:
    metric = answer_metric(model, clean, corrupted)
    eap_s, eap = timed(lambda: edge_attribution_scores(model, clean, corrupted, metric), repeats)
    ig_s, ig = timed(
        lambda: edge_attribution_scores(model, clean, corrupted, metric, ig_steps=5), 1
    )
    exact_s, exact = timed(lambda: activation_patching_edges(model, clean, corrupted, metric), 1)
    edges = eap.graph.edges
    one_s = None
    if len(edges) <= 300:  # one edge per forward pass: the unbatched loop
        one_s, _ = timed(lambda: activation_patching_edges(model, clean, corrupted, metric,
                                                           batch=clean.shape[0]), 1)  # fmt: skip
    return {
        "note": note,
        "rows": int(clean.shape[0]), "positions": int(clean.shape[1]),
        "edges": len(edges), "nodes": len(eap.graph.nodes),
        "metric_clean": round(eap.metric_clean, 3), "metric_corrupted": round(eap.metric_corrupted, 3),
        "eap_seconds": round(eap_s, 4), "eap_ig5_seconds": round(ig_s, 4),
        "exact_seconds": round(exact_s, 3),
        "exact_one_edge_per_pass_seconds": None if one_s is None else round(one_s, 3),
        "ratio_exact_over_eap": round(exact_s / eap_s, 1),
        "eap_vs_exact": agreement(eap.edge_scores, exact.edge_scores, edges),
        "eap_ig5_vs_exact": agreement(ig.edge_scores, exact.edge_scores, edges),
        "node_spearman_eap_vs_exact": round(float(spearmanr(eap.node_scores, exact.node_scores).statistic), 4),
        "top5": {"eap": eap.to_circuit().top_edges(5), "eap_ig5": ig.to_circuit().top_edges(5),
                 "exact": exact.top_edges(5)},
    }  # fmt: skip


def induction(repeats: int, both_halves: bool) -> dict:
    lm, g, rows, half = load_model("task:induction"), torch.Generator().manual_seed(0), 64, 6
    x, y = (torch.stack([torch.randperm(10, generator=g)[:half] + 1 for _ in range(rows)])
            for _ in range(2))  # fmt: skip
    bos = torch.zeros(rows, 1, dtype=torch.long)
    clean, corrupted = torch.cat([bos, x, x], 1), torch.cat([bos, y, y if both_halves else x], 1)
    note = "both halves redrawn" if both_halves else "first half redrawn (the copy keyed on)"
    return compare(lm, clean, corrupted, repeats, "[BOS, x, x] with x 6 distinct tokens; " + note)


def task_sort(repeats: int) -> dict:
    lm, task = load_model("task:sort"), get_task("sort")
    clean = torch.cat([lm.to_tokens(s) for s in task.sample(128, np.random.default_rng(0), 8)])
    corrupted = corrupt_tokens(clean, lm.cfg.d_vocab, generator=torch.Generator().manual_seed(0))
    return compare(lm, clean, corrupted, repeats, "length 8, every token redrawn")


def rasp_sort(repeats: int) -> dict:
    lm = load_model("rasp:sort")
    g = torch.Generator().manual_seed(0)
    clean = torch.cat(
        [torch.zeros(64, 1, dtype=torch.long), torch.randint(1, 4, (64, 5), generator=g)], 1
    )
    corrupted = corrupt_tokens(clean, lm.cfg.d_vocab, generator=g)
    return compare(lm, clean, corrupted, repeats, "compiled; length 5, every token redrawn")


def random_model(layers: int, heads: int, d_model: int, repeats: int) -> dict:
    cfg = HookedTransformerConfig(n_layers=layers, n_heads=heads, d_model=d_model,
                                  d_head=d_model // heads, d_mlp=4 * d_model, d_vocab=12,
                                  n_ctx=17, act_fn="relu", normalization_type="LN", seed=0)  # fmt: skip
    model = HookedTransformer(cfg).eval()
    g = torch.Generator().manual_seed(0)
    clean = torch.cat(
        [torch.zeros(32, 1, dtype=torch.long), torch.randint(1, 12, (32, 16), generator=g)], 1
    )
    corrupted = corrupt_tokens(clean, 12, generator=g)
    return compare(
        model, clean, corrupted, repeats, f"random weights, {layers}x{heads}, d_model {d_model}"
    )


def smollm2(repeats: int) -> dict:
    lm = load_model("smollm2-135m", backend="hooked")
    pairs = [("The capital of France is", "The capital of Italy is"),
             ("The capital of Japan is", "The capital of Spain is")]  # fmt: skip
    clean = torch.cat([lm.to_tokens(a) for a, _ in pairs])
    corrupted = torch.cat([lm.to_tokens(b) for _, b in pairs])
    metric = answer_metric(lm, clean, corrupted)
    eap_s, eap = timed(lambda: edge_attribution_scores(lm, clean, corrupted, metric), repeats)
    top = eap.to_circuit().top_edges(20)
    exact_s, exact = timed(
        lambda: activation_patching_edges(lm, clean, corrupted, metric, edges=top), 1
    )
    per_patch = exact_s / (len(top) + len(eap.graph.nodes))
    sums = torch.zeros(len(eap.graph.upstream)).index_add_(0, eap.graph.src, eap.edge_scores)[1:]
    mine = torch.tensor([eap.edge_scores[eap.graph.edges.index(e)] for e in exact.edges])
    return {
        "note": "2 prompt pairs (France/Italy, Japan/Spain), 6 tokens; GQA run ungrouped",
        "edges": len(eap.graph.edges), "nodes": len(eap.graph.nodes),
        "metric_clean": round(eap.metric_clean, 3), "metric_corrupted": round(eap.metric_corrupted, 3),
        "eap_seconds": round(eap_s, 3),
        "exact_top20_plus_nodes_seconds": round(exact_s, 2),
        "exact_all_edges_seconds_extrapolated": round(per_patch * (len(eap.graph.edges) + len(eap.graph.nodes)), 1),
        "node_vs_edge_sum_max_abs_error": float((sums - eap.node_scores).abs().max()),
        "top20_eap_vs_exact": {e: [round(float(a), 3), round(float(b), 3)]
                               for e, a, b in zip(exact.edges, mine, exact.edge_scores)},
        "top20_sign_agreement": round(float((mine.sign() == exact.edge_scores.sign()).float().mean()), 3),
        "top20_spearman": round(float(spearmanr(mine, exact.edge_scores).statistic), 4),
    }  # fmt: skip


def machine() -> dict:
    return {"cpu": f"{cpu_name()}, {os.cpu_count()} shared cores (KVM)", "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "platform": platform.platform(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()]}  # fmt: skip


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-smollm2", action="store_true")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    out = {"benchmark": "eap", "machine": machine(), "ig_steps": 5, "models": {}}
    runs = {
        "task:induction (first half)": lambda: induction(args.repeats, both_halves=False),
        "task:induction (both halves)": lambda: induction(args.repeats, both_halves=True),
        "task:sort": lambda: task_sort(args.repeats),
        "rasp:sort": lambda: rasp_sort(args.repeats),
        "random 4x4": lambda: random_model(4, 4, 64, args.repeats),
        "random 8x8": lambda: random_model(8, 8, 128, args.repeats),
    }
    if not args.no_smollm2:
        runs["smollm2-135m"] = lambda: smollm2(args.repeats)
    for name, run in runs.items():
        out["models"][name] = run()
        print(name, json.dumps(out["models"][name]), file=sys.stderr, flush=True)
    out["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    text = json.dumps(out, indent=1)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(args.out)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
