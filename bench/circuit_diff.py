"""Circuit diffs that issue 8 must show: a task model across training, SmolLM2 on two sets.

1. ``checkpoints``: the induction task model (2 layers x 1 head, attention only) trained
   afresh once with snapshots; at each, the exact mean-ablation circuit, held-out accuracy,
   each head's induction / previous-token score, and the diff against the previous snapshot.
   (A 2 x 4 variant spreads the work over several heads with no clean story at this size.)
2. ``smollm2``: SmolLM2-135M (real weights, offline) on natural text (next token, shipped
   corpus) vs repeated random tokens (induction, the repeat supervised). Node attribution
   (integrated gradients, 5 points) on each, circuits = nodes scoring >= 10% of the top
   score, their diff, faithfulness of each circuit on both sets (mean ablation), and the exact
   mean-ablation effect of each circuit's top nodes as a check of the estimate.

Prints one JSON object and writes ``bench/results/circuit-diff-cpu.json``.

Usage:
    python bench/circuit_diff.py [--only checkpoints|smollm2] [--rows 12] [--len 24]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from scipy.stats import spearmanr

from analysis.activation_patching import activation_patching_edges
from analysis.circuit_diff import diff_circuits
from analysis.edge_attribution import answer_metric, edge_attribution_patching
from analysis.faithfulness import ablated_loss, ablation_means, circuit_faithfulness
from analysis.gating_data import from_token_batch, next_token_data
from analysis.head_scores import HeadScoreOptions, run_head_scores
from analysis.node_attribution import node_attribution

RESULTS = Path(__file__).parent / "results" / "circuit-diff-cpu.json"


def _by_head(grid: torch.Tensor) -> dict[str, float]:
    return {
        f"L{layer}H{head}": round(float(grid[layer, head]), 3)
        for layer in range(grid.shape[0])
        for head in range(grid.shape[1])
    }


def _induction_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """Clean ``[BOS, x, x]`` (x: 7 distinct tokens) and corrupted = first half redrawn: the
    induction circuit's job is to copy what followed the earlier x."""
    gen = torch.Generator().manual_seed(0)
    half = torch.stack([torch.randperm(10, generator=gen)[:7] + 1 for _ in range(64)])
    other = torch.stack([torch.randperm(10, generator=gen)[:7] + 1 for _ in range(64)])
    bos = torch.zeros(64, 1, dtype=torch.long)
    return torch.cat([bos, half, half], dim=1), torch.cat([bos, other, half], dim=1)


def checkpoints() -> dict:
    from models.finetune import train_snapshots
    from probes.suites.data import codec_dataset

    steps = [0, 25, 50, 75, 100, 150, 200, 300, 600, 1000]
    start = time.perf_counter()
    snaps, report = train_snapshots("induction", steps, evaluate=1000)
    train_s = time.perf_counter() - start
    data = codec_dataset(snaps[-1], 300, 1, "300 induction inputs")
    clean, corrupted = _induction_pair()
    out, prev, prev_edges = [], None, None
    for step, lm in zip(steps, snaps, strict=True):
        circuit = node_attribution(lm, data, estimate="exact", threshold=0.1)
        scores = run_head_scores(lm, HeadScoreOptions(n_sequences=16, seed=0))
        row = {
            "step": step,
            "held_out_seq_acc": float(lm.provenance["held_out_seq_acc"]),
            "members": circuit.member_nodes(),
            "loss_increase": {n: round(v, 4) for n, v in circuit.scores().items()},
            "induction_score": _by_head(scores.scores["induction"]),
            "prev_token_score": _by_head(scores.scores["previous_token"]),
            "faithfulness": round(circuit_faithfulness(lm, data, circuit).faithfulness, 4)
            if circuit.members
            else None,
        }
        metric = answer_metric(lm, clean, corrupted)
        eap = edge_attribution_patching(lm, clean, corrupted, metric, ig_steps=5)
        exact = activation_patching_edges(lm, clean, corrupted, metric)
        row["eap_ig5_edges"] = {e: round(v, 3) for e, v in eap.edge_score_map().items()}
        row["exact_edges"] = {e: round(v, 3) for e, v in exact.edge_score_map().items()}
        row["eap_ig5_member_edges"] = sorted(eap.edge_members)
        if prev is not None:
            d = diff_circuits(prev, circuit)
            row["vs_previous"] = {k: d.summary()[k] for k in ("jaccard", "spearman", "nodes")}
            row["added"], row["removed"] = d.nodes_with("added"), d.nodes_with("removed")
            de = diff_circuits(prev_edges, eap)
            row["edges_vs_previous"] = {
                "edge_jaccard": de.edge_jaccard, "edge_spearman": de.edge_spearman,
                "statuses": de.edge_frame.set_index("edge")["status"].to_dict(),
            }  # fmt: skip
        out.append(row)
        prev, prev_edges = circuit, eap
    return {"model": "task:induction architecture (2 layers x 1 head, attn-only, d_model 64), "
                     "trained afresh with seed 0",
            "train_seconds": round(train_s, 1), "losses_every_50": report.losses,
            "snapshots": out}  # fmt: skip


def _smollm2_data(lm, rows: int, length: int):
    from models.corpus import load_corpus

    texts = [t for t in load_corpus() if len(t) > 6 * length]
    data = next_token_data(lm, texts[: 3 * rows], max_len=length, name="text")
    full = torch.nonzero(data.lengths == length).flatten()[:rows]
    text = from_token_batch(data.tokens[full], data.targets[full], name="natural text")
    gen = torch.Generator().manual_seed(1)
    half = length // 2
    rand = torch.randint(1000, 20000, (rows, half), generator=gen)
    tokens = torch.cat([torch.ones(rows, 1, dtype=torch.long), rand, rand], dim=1)
    targets = torch.full_like(tokens, -100)
    targets[:, half + 1 : -1] = tokens[:, half + 2 :]
    return text, from_token_batch(tokens, targets, name="repeated random tokens")


def smollm2(rows: int, length: int) -> dict:
    from models import load_model

    lm = load_model("smollm2-135m", backend="hooked")
    sets = _smollm2_data(lm, rows, length)
    circuits, means, timings = [], [], {}
    for data in sets:
        start = time.perf_counter()
        circuits.append(node_attribution(lm, data, max_rows=rows))  # members: >= 10% of top
        timings[data.name] = round(time.perf_counter() - start, 1)
        means.append(ablation_means(lm, data, max_rows=rows))
    a, b = circuits
    diff = diff_circuits(a, b, top_k=20)
    faith = {}
    for ci, circuit in enumerate(circuits):
        for di, data in enumerate(sets):
            f = circuit_faithfulness(lm, data, circuit, means=means[di], max_rows=rows)
            faith[f"{'AB'[ci]} on {data.name}"] = {
                "faithfulness": round(f.faithfulness, 4), "members": len(f.members),
                "loss_full": round(f.loss_full, 4), "loss_circuit": round(f.loss_circuit, 4),
                "loss_empty": round(f.loss_empty, 4),
                "accuracy_full": round(f.accuracy_full, 4),
                "accuracy_circuit": round(f.accuracy_circuit, 4),
            }  # fmt: skip
    checks = {}
    for circuit, data, mean in zip(circuits, sets, means, strict=True):
        top = circuit.top_nodes(10)
        base = ablated_loss(lm, data, [], max_rows=rows)[0]
        exact = [ablated_loss(lm, data, [n], means=mean, max_rows=rows)[0] - base for n in top]
        est = [circuit.scores()[n] for n in top]
        checks[data.name] = {
            "top_nodes": top, "estimate": [round(x, 4) for x in est],
            "exact": [round(x, 4) for x in exact],
            "spearman_top10": round(float(spearmanr(est, exact).statistic), 3),
            "exact_positive": sum(x > 0 for x in exact),
        }  # fmt: skip
    # Faithfulness against circuit size: the top-k nodes of each circuit on its own data.
    curve = {}
    for circuit, data, mean in zip(circuits, sets, means, strict=True):
        full = ablated_loss(lm, data, [], max_rows=rows)[0]
        empty = ablated_loss(lm, data, list(circuit.nodes), means=mean, max_rows=rows)[0]
        curve[data.name] = {}
        for k in (10, 30, 60, 120, 200):
            keep = set(circuit.top_nodes(k))
            rest = [n for n in circuit.nodes if n not in keep]
            part = ablated_loss(lm, data, rest, means=mean, max_rows=rows)[0]
            curve[data.name][k] = round((empty - part) / (empty - full), 4)
    # Do the heads only the induction circuit has look like induction heads?
    scores = run_head_scores(lm, HeadScoreOptions(n_sequences=8, seed=0)).scores["induction"]
    only_b = [n for n in diff.nodes_with("added") if "H" in n]
    ind = {
        n: round(float(scores[int(n[1:].split("H")[0]), int(n.split("H")[1])]), 3) for n in only_b
    }
    ranks = scores.flatten().argsort(descending=True).argsort()
    top_ranks = {n: int(ranks[int(n[1:].split("H")[0]) * scores.shape[1] + int(n.split("H")[1])]) + 1
                 for n in only_b}  # fmt: skip
    summary = diff.summary()
    return {
        "faithfulness_by_size": curve,
        "induction_score_of_induction_only_heads": ind,
        "their_rank_among_270_heads": top_ranks,
        "median_induction_score": round(float(scores.median()), 3),
        "model": "smollm2-135m (real weights, GGUF, hooked)",
        "rows": rows, "tokens_per_row": length + 1,
        "sets": [d.name for d in sets],
        "circuit_sizes": [len(c.members) for c in circuits],
        "members_A_text": a.member_nodes(), "members_B_induction": b.member_nodes(),
        "diff": {k: summary[k] for k in ("jaccard", "top_k", "top_k_jaccard", "spearman", "nodes")},
        "only_text": diff.nodes_with("removed"), "only_induction": diff.nodes_with("added"),
        "faithfulness": faith, "estimate_vs_exact": checks, "attribution_seconds": timings,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=["checkpoints", "smollm2"], default=None)
    parser.add_argument("--rows", type=int, default=12)
    parser.add_argument("--len", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(1)
    result = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    result["machine"] = f"{platform.processor() or platform.machine()}, 2 shared cores, 1 thread"
    if args.only in (None, "checkpoints"):
        result["checkpoints"] = checkpoints()
    if args.only in (None, "smollm2"):
        result["smollm2"] = smollm2(args.rows, args.len)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
