"""Compiled vs trained sort: which heads play the same role, and do the circuits agree?

Models: ``rasp:sort`` (compiled RASP, 3 layers x 1 head: L1H0 ranks, L2H0 gathers the token
of each rank, L0H0 unused), ``task:sort`` (a 2 x 2 transformer trained on sort) and
``program:sort`` (a learned Transformer Program, 6 x 8 heads, half of them empty slots).
Shared inputs: every sequence over the values all three accept ({1, 2, 3}) of length 1..5
(the compiled model's context), 363 in all. ``program:sort`` was trained with a trailing
EOS that ``rasp:sort`` does not accept, so it sees none here (its accuracy is reported).

For each pair of models and each similarity (attention, effect, both) the head matching
(``analysis.head_matching``) with each pair's similarity, margin, null z and p, and whether
it is confident. Then the circuits: the compiled one from its roles
(``model_circuit_from_roles``), the trained ones from CHG fitted on the shared inputs with
the exact sort targets; each trained circuit's heads are mapped to compiled ids through the
matching (confident pairs only, and every pair) and compared with the compiled heads by
Jaccard (a trained member head with no partner counts as its own node). Timings are for one
torch thread on the machine under ``machine``.

Measured (bench/results/circuits-sort-cpu.json, ~3 min on one thread): only the effect
similarity matches compiled L2H0 confidently, to task:sort's L0H0 (correlation 0.72, margin
0.36, null z 27.9, p 1/51), the head whose single ablation costs task:sort most; CHG keeps
task:sort's L0H0 and L0H1, so head Jaccard with the compiled {L1H0, L2H0} is 1/3 after
mapping. program:sort spreads sorting over 24 live heads (CHG keeps all 24): no compiled
head finds a confident partner there (best margins 0.003-0.04).

Usage:
    python bench/circuits_sort.py [--out bench/results/circuits-sort-cpu.json]
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from analysis.circuits import circuit_from_gating, model_circuit_from_roles, parse_node
from analysis.gating_ablation import single_head_ablation
from analysis.gating_data import task_data
from analysis.head_gating import HeadGatingOptions, fit_head_gates
from analysis.head_matching import HeadMatching, match_heads
from models import load_model
from models.tasks import get_task

MODELS = ("rasp:sort", "task:sort", "program:sort")
PAIRS = (("rasp:sort", "task:sort"), ("rasp:sort", "program:sort"), ("task:sort", "program:sort"))
KINDS = ("attention", "effect", "both")
CHG = HeadGatingOptions(steps=150, batch_size=32, n_seeds=2, seed=0)
DEFAULT_OUT = Path(__file__).parent / "results" / "circuits-sort-cpu.json"


def shared_inputs(models: dict) -> list[list[int]]:
    """Every sequence over the values every model accepts, up to the shortest context."""
    values = set.intersection(*(set(m.codec.vocab[1:]) for m in models.values()))
    values = sorted(v for v in values if isinstance(v, int))
    longest = min(m.cfg.n_ctx for m in models.values()) - 1
    return [list(s) for n in range(1, longest + 1) for s in itertools.product(values, repeat=n)]


def matching_summary(m: HeadMatching, seconds: float) -> dict:
    """Pairs with their confidence, the confident alignment, time."""
    pairs = [
        {"a": p.head_a, "b": p.head_b, "similarity": round(p.similarity, 4),
         "margin": round(p.margin, 4), "null_z": round(p.null_z, 2), "null_p": round(p.null_p, 4),
         "confident": p.confident}
        for p in m.pairs
    ]  # fmt: skip
    return {"pairs": pairs, "alignment": m.alignment(), "seconds": round(seconds, 2),
            "similarity": [[round(x, 4) for x in row] for row in m.similarity.tolist()]}  # fmt: skip


def sort_data(model, inputs: list[list[int]]):
    """The exact sort targets of ``inputs`` in the model's output classes."""
    index = {v: i for i, v in enumerate(model.codec.output_vocab)}
    target = get_task("sort").target
    return task_data(model, inputs, [[index[v] for v in target(s)] for s in inputs],
                     name=f"{len(inputs)} shared inputs")  # fmt: skip


def trained_circuit(model, inputs: list[list[int]]) -> dict:
    """CHG circuit and single-head ablation costs of a trained model on the shared inputs."""
    data = sort_data(model, inputs)
    start = time.perf_counter()
    fit = fit_head_gates(model, data, options=CHG)
    seconds = time.perf_counter() - start
    circuit = circuit_from_gating(fit)
    cost = single_head_ablation(model, data).flatten()
    order = torch.argsort(cost, descending=True)[:6].tolist()
    return {
        "circuit": circuit,
        "members": circuit.member_nodes(),
        "class_counts": fit.class_counts(),
        "chg_seconds": round(seconds, 2),
        "top_single_ablation": {circuit.heads[i]: round(float(cost[i]), 4) for i in order},
    }


def jaccard(compiled: set[str], trained: list[str], alignment: dict[str, str]) -> dict:
    """Jaccard of compiled member heads and trained member heads mapped to compiled ids."""
    mapped = {alignment.get(h, f"trained:{h}") for h in trained}
    inter, union = compiled & mapped, compiled | mapped
    return {"mapped": sorted(mapped), "shared": sorted(inter),
            "jaccard": round(len(inter) / len(union), 4) if union else 1.0}  # fmt: skip


def accuracy(model, inputs: list[list[int]]) -> float:
    return sum(model.predict(s) == sorted(s) for s in inputs) / len(inputs)


def main(argv: list[str]) -> None:
    torch.set_num_threads(1)
    out_path = Path(argv[argv.index("--out") + 1]) if "--out" in argv else DEFAULT_OUT
    begin = time.perf_counter()
    models = {name: load_model(name) for name in MODELS}
    inputs = shared_inputs(models)
    result: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
        },
        "inputs": {
            "n": len(inputs),
            "values": sorted({v for s in inputs for v in s}),
            "max_len": max(map(len, inputs)),
        },
        "accuracy_on_shared_inputs": {n: round(accuracy(m, inputs), 4) for n, m in models.items()},
        "compiled_roles": dict(models["rasp:sort"].head_roles),
    }
    matchings: dict[str, dict[str, HeadMatching]] = {}
    result["matching"] = {}
    for a, b in PAIRS:
        key = f"{a} vs {b}"
        matchings[key], result["matching"][key] = {}, {}
        for kind in KINDS:
            start = time.perf_counter()
            m = match_heads(models[a], models[b], inputs, similarity=kind)
            matchings[key][kind] = m
            result["matching"][key][kind] = matching_summary(m, time.perf_counter() - start)
    compiled = model_circuit_from_roles(models["rasp:sort"])
    compiled_heads = {n for n in compiled.member_nodes() if parse_node(n)[0] == "head"}
    result["circuits"] = {"rasp:sort": {"members": compiled.member_nodes(),
                                        "heads": sorted(compiled_heads)}}  # fmt: skip
    for name in ("task:sort", "program:sort"):
        found = trained_circuit(models[name], inputs)
        heads = [n for n in found.pop("circuit").member_nodes() if parse_node(n)[0] == "head"]
        overlap = {}
        for kind, m in matchings[f"rasp:sort vs {name}"].items():
            overlap[kind] = {
                "confident_pairs": jaccard(compiled_heads, heads, m.alignment()),
                "all_pairs": jaccard(compiled_heads, heads, m.alignment(include_all=True)),
            }
        result["circuits"][name] = found | {"jaccard_with_compiled": overlap}
    result["total_seconds"] = round(time.perf_counter() - begin, 1)
    text = json.dumps(result, indent=1)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(".tmp")
    tmp.write_text(text + "\n")
    tmp.replace(out_path)
    print(text)


if __name__ == "__main__":
    main(sys.argv[1:])
