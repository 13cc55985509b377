"""Hallucination prediction from SAE concepts, CASAL direction, suppression and steering.

On a model with cached per-layer SAEs (``bench/sae_layers.py``) and the shipped factual
question set: label the greedy answers, fit PLS / logistic predictors per layer (concepts vs the
raw residual, cross-validated AUROC), the known-vs-unknown direction with its silhouette per
layer, then re-answer a subset with (a) the top-loading concepts suppressed, (b) as many
random latents of similar firing rate suppressed (control), (c) the CASAL direction added
toward "known", and measure concept and CASAL steering effect sizes.

    nice -n 10 python bench/hallucination.py --out bench/results/hallucination-smollm2-cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from analysis.activations import token_windows
from analysis.hallucination import (
    AnswerLabels,
    PredictorOptions,
    fit_hallucination_predictor,
    known_unknown_direction,
    label_answers,
    question_features,
)
from analysis.hooks import resid_post
from analysis.steering import add_direction, clamp_latents, steering_effect, suppress_latents
from models import load_model
from models.corpus import load_corpus, split_corpus
from models.questions import load_questions, question_set_source
from probes.sae_layers import load_layer_saes


def _bar(desc: str):
    bar = tqdm(desc=desc, leave=False)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    return progress


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--name", default="default")
    parser.add_argument(
        "--layer", type=int, default=None, help="intervention layer (default: best)"
    )
    parser.add_argument("--subset-every", type=int, default=4)
    parser.add_argument("--steer-prompts", type=int, default=6)
    parser.add_argument("--n-suppress", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--labels", type=Path, default=None, help="JSON cache of the answers")
    parser.add_argument("--labels-only", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    lm = load_model(args.model)
    questions = load_questions()
    if args.labels and args.labels.is_file():  # answers are the slow part: reuse them
        saved = json.loads(args.labels.read_text())
        labels = AnswerLabels(saved["model_name"], saved["prompts"], saved["answers"],
                              torch.tensor(saved["correct"]), saved["categories"])  # fmt: skip
        t_label = float(saved["seconds"])
    else:
        labels = label_answers(lm, questions, progress=_bar("answers"))
        t_label = time.perf_counter() - t0
        if args.labels:
            args.labels.write_text(json.dumps({
                "model_name": labels.model_name, "prompts": labels.prompts,
                "answers": labels.answers, "correct": labels.correct.tolist(),
                "categories": labels.categories, "seconds": t_label,
            }))  # fmt: skip
    if args.labels_only:
        return
    saes = load_layer_saes(lm, None, args.name)
    concepts, resid = question_features(lm, saes, labels.prompts)
    per_layer = {}
    for layer in sorted(saes):
        fit = fit_hallucination_predictor(concepts[layer], resid[layer], labels.correct, layer=layer,
                                          options=PredictorOptions())  # fmt: skip
        per_layer[layer] = fit
    best = max(per_layer, key=lambda k: per_layer[k].auroc["pls_concepts"])
    layer = args.layer if args.layer is not None else best
    casal = known_unknown_direction(resid, labels.correct)
    fit = per_layer[layer]
    top = [latent for latent, *_ in fit.top_concepts[: args.n_suppress]]
    # control: random latents that fire on the questions about as often as the top ones
    freq = (concepts[layer] > 0).float().mean(0)
    gen = torch.Generator().manual_seed(0)
    pool = [i for i in torch.randperm(freq.shape[0], generator=gen).tolist()
            if i not in top and freq[i] > 0]  # fmt: skip
    target = sorted(float(freq[i]) for i in top)
    control = []
    for f in target:
        pick = min(pool, key=lambda i: abs(float(freq[i]) - f))
        pool.remove(pick)
        control.append(pick)
    subset = questions[:: args.subset_every]
    idx = list(range(0, len(questions), args.subset_every))
    base_rate = float((~labels.correct[idx]).float().mean())
    sae = saes[layer]
    hook = resid_post(layer)
    conditions = {
        "suppress_top_concepts": [suppress_latents(sae, top)],
        "suppress_random_control": [suppress_latents(sae, control)],
    }
    direction = casal.direction(casal.best_layer())
    casal_hook = resid_post(casal.best_layer())
    conditions["casal_toward_known"] = [add_direction(casal_hook, -direction, 1.0)]
    interventions = {}
    for name, hooks in conditions.items():
        run = label_answers(lm, subset, hooks=hooks, progress=_bar(name))
        flips_to_right = int((run.correct & ~labels.correct[idx]).sum())
        flips_to_wrong = int((~run.correct & labels.correct[idx]).sum())
        changed = sum(a != b for a, b in zip(run.answers, [labels.answers[i] for i in idx]))
        interventions[name] = {"hallucination_rate": run.hallucination_rate,
                               "baseline_rate": base_rate, "wrong_to_right": flips_to_right,
                               "right_to_wrong": flips_to_wrong, "answers_changed": changed,
                               "examples": list(zip([labels.answers[i] for i in idx][:8], run.answers[:8]))}  # fmt: skip
    # concept steering effect sizes at the intervention layer
    _, held = split_corpus(load_corpus(), 0.2, seed=0)
    prompts = token_windows(lm, held, 24, max_windows=args.steer_prompts)
    max_act = concepts[layer].amax(0)
    steer = {}
    for latent in [*top[:2], control[0]]:
        ids = (sae.direction(latent) @ lm.model.W_U.detach().float()).topk(10).indices.tolist()
        value = float(max(max_act[latent], 1.0)) * 2
        effect = steering_effect(lm, list(prompts), [clamp_latents(sae, [latent], value, hook_name=hook)],
                                 target_ids=ids, max_new_tokens=4, label=f"clamp L{layer}/{latent}={value:.1f}")  # fmt: skip
        steer[str(latent)] = effect.to_dict() | {
            "examples": list(zip(effect.clean_text[:3], effect.steered_text[:3]))
        }
    for alpha in (-1.0, 1.0):  # multiples of the unknown-minus-known difference
        effect = steering_effect(lm, list(prompts), [add_direction(casal_hook, direction, alpha)],
                                 max_new_tokens=4, label=f"casal {alpha:+}")  # fmt: skip
        steer[f"casal_{alpha:+}"] = effect.to_dict()
    result = {
        "benchmark": "hallucination", "model": args.model,
        "device": f"cpu ({platform.machine()}), {args.threads} thread(s)",
        "question_set": {"n": len(questions), "source": question_set_source()},
        "hallucination_rate": labels.hallucination_rate,
        "label_seconds": round(t_label, 1),
        "answers": labels.to_frame().to_dict("records"),
        "auroc_by_layer": {str(k): v.auroc for k, v in per_layer.items()},
        "best_concept_layer": best, "intervention_layer": layer,
        "predictor": fit.to_dict(),
        "casal": casal.to_dict() | {"best_layer": casal.best_layer()},
        "suppressed_latents": top, "control_latents": control,
        "interventions": interventions, "steering": steer,
        "wall_seconds": round(time.perf_counter() - t0, 1),
    }  # fmt: skip
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
