"""SAE training page: train a sparse autoencoder on one hook, watch its curves, cache it.

The SAE is saved in SAELens' format in the user cache under the chosen name, with its
training state, so training can be continued later and the feature browser, concept tracing
and steering pages can use it.
"""

from __future__ import annotations

import numpy as np
import streamlit as st
import torch

from analysis.errors import OptionError
from analysis.figures.sae import sae_training_figure
from analysis.sae_metrics import SAEMetrics, evaluate_sae
from analysis.sae_training import SAETrainOptions, SAETrainState, train_sae, with_steps
from app.views.sae_common import hook_picker, sample_tokens
from models import LoadedModel
from models.saes import has_train_state, load_train_state, sae_dir, save_sae, save_train_state


def _targets(model: LoadedModel, tokens: torch.Tensor) -> torch.Tensor | None:
    """Per-position output classes for task models (their outputs are not next tokens)."""
    if model.kind != "task":
        return None
    from models.tasks import get_task

    task = get_task(model.provenance.get("task", model.spec.name))
    vocab = model.codec.vocab
    index = {v: i for i, v in enumerate(model.codec.output_vocab)}
    rows = []
    for row in tokens.tolist():
        seq = [vocab[i] for i in row[1:]]
        rows.append([-1] + [-1 if v is None else index.get(v, -1) for v in task.target(seq)])
    return torch.tensor(rows)


def options_input(model: LoadedModel) -> tuple[SAETrainOptions, int, int]:
    """The SAE settings, the number of training sequences and the text window length."""
    k = f"sae.train.{model.name}"
    d = model.cfg.d_model
    c1, c2, c3, c4 = st.columns(4)
    arch = c1.radio("Architecture", ["topk", "relu"], horizontal=True, key=f"{k}.arch",
                    help="TopK keeps the k largest latents per token; ReLU uses an L1 penalty")  # fmt: skip
    d_sae = c2.number_input("Latents (d_sae)", 2, 65536, 4 * d, key=f"{k}.dsae")
    if arch == "topk":
        sparsity = c3.number_input("k", 1, 4096, min(32, max(1, d // 4)), key=f"{k}.k")
    else:
        sparsity = c3.number_input("L1 coefficient", 0.0, 100.0, 1.0, key=f"{k}.l1")
    steps = c4.number_input("Steps", 1, 100_000, 300, key=f"{k}.steps")
    with st.expander("More settings"):
        e1, e2, e3, e4 = st.columns(4)
        batch = e1.number_input("Batch (tokens)", 8, 8192, 256, key=f"{k}.batch")
        lr = e2.number_input("Learning rate", 1e-5, 1.0, 2e-3, format="%.4f", key=f"{k}.lr")
        n_seq = e3.number_input("Training sequences", 1, 100_000,
                                200 if model.codec is None else 2000, key=f"{k}.nseq")  # fmt: skip
        seq_len = e4.number_input("Window (text)", 4, 1024, 64, key=f"{k}.seqlen")
        seed = e1.number_input("Seed", 0, 10_000, 0, key=f"{k}.seed")
        dead = e2.selectbox("Dead latents", ["auto", "auxk", "resample", "none"], key=f"{k}.dead")
    options = SAETrainOptions(
        d_sae=int(d_sae), architecture=arch, k=int(sparsity) if arch == "topk" else 1,
        l1_coefficient=float(sparsity) if arch == "relu" else 5.0, lr=float(lr),
        steps=int(steps), batch_size=int(batch), dead_handling=dead, seed=int(seed),
        dead_window=max(int(batch) * 20, 2000),
    )  # fmt: skip
    return options, int(n_seq), int(seq_len)


def show_run(state: SAETrainState, metrics: SAEMetrics, folder: str) -> None:
    """Metrics, curves and where the SAE was saved."""
    m = st.columns(5)
    m[0].metric("Variance explained", f"{metrics.fve:.3f}")
    m[1].metric("L0", f"{metrics.l0:.1f}")
    m[2].metric("Dead latents", f"{100 * metrics.dead_fraction:.1f}%")
    recovered = "n/a" if np.isnan(metrics.ce_recovered) else f"{metrics.ce_recovered:.3f}"
    m[3].metric("CE loss recovered", recovered)
    m[4].metric("Training time", f"{state.seconds:.1f} s")
    if not np.isnan(metrics.ce_clean):
        st.caption(f"Held-out loss: clean {metrics.ce_clean:.4f}, SAE spliced "
                   f"{metrics.ce_spliced:.4f}, zero-ablated {metrics.ce_zero:.4f} nats "
                   f"({metrics.n_tokens} tokens).")  # fmt: skip
    if state.interrupted:
        st.warning(f"Training stopped at step {state.step} of {state.options.steps}; "
                   "continue it with the checkbox above.", icon=":material/warning:")  # fmt: skip
    st.plotly_chart(sae_training_figure(state), width="stretch")
    st.caption(f"Saved in SAELens format: `{folder}`")


def render(model: LoadedModel) -> None:
    """Draw the SAE training page for ``model``."""
    st.header("SAE training")
    st.caption(
        "A sparse autoencoder writes one hook's activations as a sparse sum of learned "
        "directions (decoder rows, kept unit-norm). Activations stream from the model in "
        "batches (the forward pass stops at the hook), are scaled to unit mean squared norm, "
        "and dead latents are revived by the AuxK loss (TopK) or by resampling (ReLU)."
    )
    hook = hook_picker(model, "sae.train")
    options, n_seq, seq_len = options_input(model)
    name = st.text_input("Save as", "default", key=f"sae.train.name.{model.name}",
                         help="the SAE's name among this hook's cached SAEs")  # fmt: skip
    folder = sae_dir(model, hook, name.strip() or "default")
    resume = False
    if has_train_state(folder):
        resume = st.checkbox(f"Continue the saved run of '{name}' for {options.steps} more steps",
                             key=f"sae.train.resume.{model.name}")  # fmt: skip
    runs = st.session_state.setdefault("sae.train.runs", {})
    run_key = repr((model.name, hook, name))
    if st.button("Train SAE", type="primary", key="sae.train.run", icon=":material/play_arrow:"):
        if n_seq < 1:
            raise OptionError(f"the number of training sequences must be at least 1, got {n_seq}")
        tokens = sample_tokens(model, n_seq, seq_len=seq_len)
        held = sample_tokens(model, 16, seq_len=seq_len, held_out=True)
        state = None
        if resume:
            state = SAETrainState.from_state(*load_train_state(folder))
            state = with_steps(state, state.step + options.steps)
        total = state.options.steps if state is not None else options.steps
        bar = st.progress(0.0, text="Training…")

        def progress(step: int, of: int, metrics: dict[str, float]) -> None:
            if step == of or step % max(1, total // 100) == 0:
                bar.progress(min(1.0, step / of),
                             text=f"step {step}/{of}: FVE {metrics['fve']:.3f}, L0 {metrics['l0']:.1f}")  # fmt: skip

        state = train_sae(model, tokens, hook, options, state=state, progress=progress)
        bar.empty()
        with st.spinner("Evaluating on held-out data…"):
            metrics = evaluate_sae(model, state.sae, held, targets=_targets(model, held),
                                   with_loss=model.kind != "rasp")  # fmt: skip
        save_train_state(folder, state.to_state())
        extra = {"train": state.summary(), "eval": {k: v for k, v in metrics.to_dict().items()
                                                     if k != "latent_frequency"}}  # fmt: skip
        save_sae(folder, state.sae.to_state(), extra=extra)
        runs[run_key] = (state, metrics, str(folder))
    stored = runs.get(run_key)
    if stored is None:
        st.info(
            "Pick the hook and settings, then press **Train SAE**.",
            icon=":material/model_training:",
        )
    else:
        show_run(*stored)
