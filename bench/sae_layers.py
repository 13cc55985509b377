"""Train one residual-stream SAE per layer of a model (default SmolLM2-135M) and print JSON.

The SAEs are cached in the user cache (``$MECHSCOPE_CACHE``), not shipped; concept tracing and
the hallucination predictor load them from there. A rerun skips finished layers and resumes an
interrupted one. Prints the per-layer training summary and held-out evaluation (FVE, L0, dead
fraction; CE loss recovered for ``--ce-layers``) and the wall times.

    nice -n 10 python bench/sae_layers.py --out bench/results/sae-layers-smollm2-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch

from analysis.sae_training import SAETrainOptions
from models import load_model
from models.corpus import load_corpus, split_corpus
from probes.sae_layers import layer_sae_info, train_layer_saes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", type=int, nargs="*", default=None)
    parser.add_argument("--name", default="default")
    parser.add_argument("--d-sae", type=int, default=1152)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-tokens", type=int, default=48_000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--ce-layers", type=int, nargs="*", default=[15])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    lm = load_model(args.model)
    train, held = split_corpus(load_corpus(), 0.2, seed=0)
    options = SAETrainOptions(d_sae=args.d_sae, architecture="topk", k=args.k, lr=args.lr,
                              batch_size=args.batch_size, dead_window=20_000, seed=0)  # fmt: skip
    train_layer_saes(lm, train, options, layers=args.layers, name=args.name, seq_len=args.seq_len,
                     max_tokens=args.max_tokens, epochs=args.epochs, held_out_texts=held,
                     ce_layers=args.ce_layers, progress_bar=True)  # fmt: skip
    info = layer_sae_info(lm, args.layers, args.name)
    result = {
        "benchmark": "sae_layers",
        "model": args.model,
        "device": f"cpu ({platform.machine()}), {args.threads} thread(s)",
        "torch": torch.__version__,
        "settings": vars(args) | {"out": str(args.out)},
        "wall_seconds_this_run": round(time.perf_counter() - started, 1),
        "layers": {str(layer): entry for layer, entry in info.items()},
    }
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
