"""Steering playground: add or clamp an SAE latent's decoder direction and see the output change.

The latent's decoder direction is added to (or the latent clamped at) its hook at every
position; text models show clean and steered greedy continuations, task models their
predicted outputs. A sweep over strengths measures the effect size on the tokens the latent
promotes through W_U (mean change in log-probability, Cohen's d over prompts, KL).
"""

from __future__ import annotations

import streamlit as st
import torch

from analysis.figures.hallucination import steering_sweep_figure
from analysis.hooks import require_hooks
from analysis.protocol import hooked_module, tokens_of
from analysis.sae import SparseAutoencoder
from analysis.steering import Hook, add_direction, clamp_latents, steering_effect
from app.views.inputs import default_input, model_key
from app.views.sae_common import cached_sae_picker, hook_picker
from models import LoadedModel


def _hooks(sae: SparseAutoencoder, latent: int, mode: str, strength: float) -> list[Hook]:
    if mode == "add":
        return [add_direction(sae.cfg.hook_name, sae.direction(latent) / sae.cfg.activation_scale,
                              strength)]  # fmt: skip
    return [clamp_latents(sae, [latent], strength)]


def _task_outputs(model: LoadedModel, prompt: list, hooks: list[Hook]) -> list:
    tokens = tokens_of(model, prompt)
    with torch.inference_mode(), model.hooks(fwd_hooks=hooks):
        logits = model(tokens)
    return model.output_decoder(logits[0, 1:].float())


def _prompts(model: LoadedModel, text: str) -> list:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if model.codec is None:
        return lines
    return [[model.codec.parse_value(t) for t in line.split()] for line in lines]


def render(model: LoadedModel) -> None:
    """Draw the steering playground for ``model``."""
    st.header("Steering playground")
    st.caption("Add a latent's decoder direction to its hook (or clamp the latent to a value, "
               "keeping the SAE's error term) at every position, and compare the outputs.")  # fmt: skip
    hook = hook_picker(model, "steer")
    picked = cached_sae_picker(model, hook, "steer")
    if picked is None:
        return
    sae, _ = picked
    require_hooks(model, [sae.cfg.hook_name or hook])
    if not sae.cfg.hook_name:
        sae = sae.with_config(hook_name=hook)
    key = model_key(model)
    c1, c2, c3 = st.columns(3)
    latent = int(c1.number_input("Latent", 0, sae.cfg.d_sae - 1, 0, key=f"steer.latent.{key}"))
    mode = c2.radio("Intervention", ["add", "clamp"], horizontal=True, key="steer.mode",
                    help="add: x + strength · direction (raw units); clamp: set the latent")  # fmt: skip
    strength = float(c3.slider("Strength", -50.0, 50.0, 10.0, key="steer.strength"))
    default = default_input(model) if model.codec is not None else (
        "The weather today is\nMy favourite food is\nThe king said")  # fmt: skip
    text = st.text_area("Prompts, one per line", default, key=f"steer.prompts.{model.name}")
    prompts = _prompts(model, text)
    if not prompts:
        st.info("Type at least one prompt.")
        return
    hooks = _hooks(sae, latent, mode, strength)
    direction = sae.direction(latent)
    targets = (direction @ hooked_module(model).W_U.detach().float()).topk(5).indices.tolist() if (
        direction.shape[0] == model.cfg.d_model) else []  # fmt: skip
    if model.codec is None:
        effect = steering_effect(model, prompts, hooks, target_ids=targets, max_new_tokens=12,
                                 label=f"{mode} {strength:+}")  # fmt: skip
        rows = [{"prompt": p, "clean": c, "steered": s}
                for p, c, s in zip(prompts, effect.clean_text, effect.steered_text)]  # fmt: skip
    else:
        effect = steering_effect(model, prompts, hooks, target_ids=targets, max_new_tokens=0)
        rows = [{"input": " ".join(map(str, p)), "clean": _task_outputs(model, p, []),
                 "steered": _task_outputs(model, p, hooks)} for p in prompts]  # fmt: skip
    m = st.columns(3)
    m[0].metric("Δ log p(promoted tokens)", f"{effect.mean_delta:+.3f}")
    m[1].metric(
        "Cohen's d over prompts",
        "n/a" if effect.delta_logprob.numel() < 2 else f"{effect.cohens_d:.2f}",
    )
    m[2].metric("KL(clean‖steered)", f"{float(effect.kl.mean()):.4g}")
    st.caption("Promoted tokens: " + ", ".join(repr(t) for t in effect.target_tokens))
    st.dataframe(rows, hide_index=True, width="stretch")
    if st.toggle("Sweep strengths", key="steer.sweep"):
        grid = [-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0]
        sweep = [(strength * g, steering_effect(model, prompts, _hooks(sae, latent, mode, strength * g),
                                                target_ids=targets, max_new_tokens=0))
                 for g in grid]  # fmt: skip
        st.plotly_chart(steering_sweep_figure(sweep), width="stretch")
