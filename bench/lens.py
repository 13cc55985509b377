"""Logit lens over every layer vs one plain forward, on SmolLM2-135M, in the same run.

Prints one JSON object: for each prompt length, the median time and peak extra memory of
``run_logit_lens`` (all 31 rows, top-10, KL and entropy per position) and of the model's plain
forward, and their ratio. The lens reduces each layer's ``[pos, vocab]`` logits as it goes, so
its memory stays near one forward's.

    python bench/lens.py [--lengths 128 1024] [--repeats 3] [--threads 1] [--random-weights]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys

import torch

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from forward import load, measure


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--random-weights", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from analysis.lens import run_logit_lens
    from models.pretrained import hook_hf_model

    with contextlib.redirect_stdout(sys.stderr):
        hf, tokenizer, source = load(args.random_weights, "cpu")
        bridge = hook_hf_model(hf, tokenizer, backend="bridge")
    results = {}
    for length in args.lengths:
        tokens = torch.randint(100, 40000, (1, length))
        forward = measure(lambda tokens=tokens: bridge(tokens), args.repeats, "cpu")
        lens = measure(
            lambda tokens=tokens: run_logit_lens(bridge, tokens, k=10), args.repeats, "cpu"
        )
        results[str(length)] = {
            "forward": forward,
            "logit_lens_all_layers": lens,
            "time_ratio": round(lens["seconds"] / forward["seconds"], 3),
            "memory_ratio": round(lens["peak_mib"] / max(forward["peak_mib"], 1e-9), 3),
        }
    print(json.dumps({"benchmark": "logit_lens", "model": source,
                      "device": f"cpu ({platform.machine()}), {args.threads} thread(s)",
                      "rows": bridge.cfg.n_layers + 1, "results": results}, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
