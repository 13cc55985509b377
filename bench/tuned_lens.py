"""Tuned lens vs logit lens on SmolLM2-135M, on the shipped public-domain corpus.

Fits an OLS tuned lens (and optionally a KL one started from it) on the train split of
``load_corpus()`` and prints one JSON object: per-layer mean KL(final || lens) on the held-out
split for the logit lens and each fitted lens, fitting times and token counts, and the machine.

    python bench/tuned_lens.py [--train-tokens 20000] [--eval-tokens 3000] [--kl-steps 0]
                               [--threads 1]

The peer is the logit lens, scored on the same held-out tokens in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.tuned_lens import TunedLensOptions, evaluate_lens_kl, fit_tuned_lens
from models import load_model
from models.corpus import load_corpus, split_corpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--train-tokens", type=int, default=20_000)
    parser.add_argument("--eval-tokens", type=int, default=3_000)
    parser.add_argument("--kl-steps", type=int, default=0, help="0: OLS only")
    parser.add_argument("--kl-tokens", type=int, default=2_000)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    start = time.perf_counter()
    lm = load_model(args.model)
    load_seconds = time.perf_counter() - start
    train, held_out = split_corpus(load_corpus(), held_out_fraction=0.2, seed=0)

    def evaluate(lens):
        t = time.perf_counter()
        kl = evaluate_lens_kl(lm, held_out, lens, max_tokens=args.eval_tokens,
                              max_seq_len=args.seq_len)  # fmt: skip
        return [round(v, 4) for v in kl.tolist()], round(time.perf_counter() - t, 1)

    logit_kl, logit_eval_s = evaluate(None)
    ols_opts = TunedLensOptions("ols", max_tokens=args.train_tokens, max_seq_len=args.seq_len)
    ols, ols_report = fit_tuned_lens(lm, train, options=ols_opts)
    ols_kl, _ = evaluate(ols)
    out = {
        "bench": "tuned_lens",
        "model": args.model,
        "machine": f"{platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpus".strip(),
        "threads": args.threads,
        "torch": torch.__version__,
        "corpus": {"train_texts": len(train), "held_out_texts": len(held_out)},
        "load_seconds": round(load_seconds, 1),
        "eval_tokens": args.eval_tokens,
        "eval_seconds_per_lens": logit_eval_s,
        "layers": [f"L{i} in" for i in range(lm.cfg.n_layers)] + ["final"],
        "kl_logit": logit_kl,
        "ols": {
            "tokens": ols_report.n_tokens,
            "fit_seconds": round(ols_report.seconds, 1),
            "r2": [round(v, 4) for v in ols_report.r2.tolist()],
            "kl": ols_kl,
            "mean_kl_ratio_vs_logit": round(sum(ols_kl[:-1]) / max(sum(logit_kl[:-1]), 1e-12), 4),
            "layers_better_than_logit": sum(a < b for a, b in zip(ols_kl[:-1], logit_kl[:-1])),
        },
    }
    if args.kl_steps > 0:
        kl_opts = TunedLensOptions("kl", init="ols", max_tokens=args.kl_tokens,
                                   max_seq_len=args.seq_len, steps=args.kl_steps)  # fmt: skip
        kl_lens, kl_report = fit_tuned_lens(lm, train, options=kl_opts)
        kl_kl, _ = evaluate(kl_lens)
        out["kl"] = {
            "steps": args.kl_steps,
            "tokens": kl_report.n_tokens,
            "fit_seconds": round(kl_report.seconds, 1),
            "train_loss_first_last": [
                round(kl_report.loss_history[0], 4),
                round(kl_report.loss_history[-1], 4),
            ],
            "kl": kl_kl,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
