"""Concept counts per layer vs input uncertainty on a model with cached per-layer SAEs.

Needs the SAE set trained by ``bench/sae_layers.py``. Prints one JSON object: for n-gram
shuffling and random-token replacement, the mean number of active concepts per input at every
(layer, level), the overlap with the intact input's concepts, the growth (noise / intact) per
layer, and the noise-robust latents.

    nice -n 10 python bench/concepts.py --out bench/results/concepts-smollm2-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from analysis.activations import token_windows
from analysis.concepts import ConceptTraceOptions, run_concept_trace
from models import load_model
from models.corpus import load_corpus, split_corpus
from probes.sae_layers import load_layer_saes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--name", default="default")
    parser.add_argument("--inputs", type=int, default=24)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lm = load_model(args.model)
    saes = load_layer_saes(lm, None, args.name)
    _, held = split_corpus(load_corpus(), 0.2, seed=0)
    tokens = token_windows(lm, held, args.seq_len, max_windows=args.inputs)
    result = {"benchmark": "concepts", "model": args.model,
              "device": f"cpu ({platform.machine()}), {args.threads} thread(s)",
              "inputs": int(tokens.shape[0]), "seq_len": args.seq_len, "methods": {}}  # fmt: skip
    for method in ("shuffle", "replace"):
        started = time.perf_counter()
        trace = run_concept_trace(lm, saes, tokens, options=ConceptTraceOptions(method=method))
        entry = trace.to_dict()
        entry["growth"] = trace.growth().tolist()
        entry["monotone_layers"] = trace.monotone_layers()
        entry["seconds"] = round(time.perf_counter() - started, 1)
        result["methods"][method] = entry
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
