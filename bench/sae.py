"""Our SAE trainer vs SAELens' trainer on the same stored activations, in one run.

Both train a TopK SAE (same d_sae, k, batch, steps, Adam learning rate, AuxK weight, the same
activation rows in the same order) and are scored on the same held-out rows with each SAE's
own forward pass: throughput (tokens / s), FVE, L0 and dead latents. Differences that remain
by design: SAELens normalises to E||x|| = sqrt(d_in) and rescales activations by decoder norms
(its TopK default) and clips gradients at 1; we scale to E||x||^2 = 1 and keep decoder rows
unit-norm. Prints one JSON object.

    nice -n 10 python bench/sae.py --out bench/results/sae-trainer-cpu-1thread.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch


def stored_activations(args) -> tuple[torch.Tensor, str]:
    """``[rows, d]`` activations: SmolLM2 residuals after a layer, or planted features."""
    if args.source == "planted":
        from analysis.sae_metrics import planted_features

        data, _ = planted_features(512, 128, p=0.01, n_samples=args.tokens + 4096, seed=0)
        return data, "planted features (512 directions in R^128)"
    from analysis.activations import capture, token_windows
    from analysis.hooks import resid_post
    from models import load_model
    from models.corpus import load_corpus

    lm = load_model(args.model)
    tokens = token_windows(lm, load_corpus(), 128, max_windows=(args.tokens + 4096) // 127 + 1)
    hook = resid_post(args.layer)
    rows = [capture(lm, tokens[i : i + 8], [hook])[hook][:, 1:].reshape(-1, lm.cfg.d_model)
            for i in range(0, tokens.shape[0], 8)]  # fmt: skip
    return torch.cat(rows), f"{args.model} {hook}"


def ours(train: torch.Tensor, args) -> tuple[float, object]:
    from analysis.sae_training import SAETrainOptions, fit_sae

    opts = SAETrainOptions(d_sae=args.d_sae, architecture="topk", k=args.k, lr=args.lr,
                           lr_decay_fraction=0.0, steps=args.steps, batch_size=args.batch,
                           dead_window=args.dead_steps * args.batch, aux_coefficient=args.aux,
                           norm_batches=4)  # fmt: skip
    start = time.perf_counter()
    state = fit_sae(iter(train.split(args.batch)), opts)
    return time.perf_counter() - start, state.sae


def saelens(train: torch.Tensor, args) -> tuple[float, object]:
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig
    from sae_lens.training.sae_trainer import SAETrainer

    cfg = TopKTrainingSAEConfig(d_in=train.shape[1], d_sae=args.d_sae, k=args.k,
                                aux_loss_coefficient=args.aux,
                                normalize_activations="expected_average_only_in")  # fmt: skip
    sae = TopKTrainingSAE(cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=args.steps * args.batch, train_batch_size_samples=args.batch,
        lr=args.lr, lr_end=args.lr, dead_feature_window=args.dead_steps, feature_sampling_window=10**9,
        n_batches_for_norm_estimate=4, logger=LoggingConfig(log_to_wandb=False),
    )  # fmt: skip

    def provider():
        yield from train[: 4 * args.batch].split(args.batch)  # norm estimate
        yield from train.split(args.batch)

    start = time.perf_counter()
    trainer = SAETrainer(trainer_cfg, sae, provider())
    trained = trainer.fit()
    return time.perf_counter() - start, trained


def measure(sae, held: torch.Tensor) -> dict[str, float]:
    with torch.inference_mode():
        f = sae.encode(held)
        recon = sae.decode(f)
    err = (recon - held).pow(2).sum()
    total = (held - held.mean(0)).pow(2).sum()
    return {"fve": float(1 - err / total), "l0": float((f > 0).float().sum(-1).mean()),
            "dead_fraction_held_out": float(((f > 0).sum(0) == 0).float().mean())}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", choices=["smollm2", "planted"], default="smollm2")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--tokens", type=int, default=40_960)
    parser.add_argument("--d-sae", type=int, default=2304)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--steps", type=int, default=80)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--aux", type=float, default=1 / 32)
    parser.add_argument("--dead-steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    rows, source = stored_activations(args)
    read_seconds = time.perf_counter() - t0
    held, train = rows[-4096:], rows[:-4096]
    need = args.steps * args.batch
    if train.shape[0] < need:
        train = train.repeat((need + train.shape[0] - 1) // train.shape[0], 1)
    train = train[torch.randperm(train.shape[0], generator=torch.Generator().manual_seed(0))][:need]
    # The first torch.optim.Adam imports torch._dynamo (seconds): pay it before timing either.
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    results = {}
    for name, fn in (("ours", ours), ("saelens", saelens)):
        seconds, sae = fn(train, args)
        results[name] = {"seconds": round(seconds, 2), "tokens_per_second": round(need / seconds, 1),
                         **measure(sae, held)}  # fmt: skip
    ratio = results["saelens"]["seconds"] / results["ours"]["seconds"]
    out = {
        "benchmark": "sae_trainer", "source": source, "rows_trained": need,
        "device": f"cpu ({platform.machine()}), {args.threads} thread(s)",
        "torch": torch.__version__, "settings": vars(args) | {"out": str(args.out)},
        "activation_read_seconds": round(read_seconds, 1), "results": results,
        "speedup_ours_vs_saelens": round(ratio, 3),
    }  # fmt: skip
    text = json.dumps(out, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
