"""Steering: add a direction to, or clamp SAE latents in, one hook during generation.

Three interventions on a hook's activation ``x`` (every position, prompt and generated):

* ``add``: ``x + alpha * direction`` (a concept's decoder direction, or the CASAL
  known-vs-unknown direction);
* ``clamp``: set latent ``i`` to ``value``, keeping the SAE's error term:
  ``x + (value - f_i(x)) * d_i`` with ``d_i`` the latent's decoder row in raw units;
* ``suppress``: clamp several latents to 0.

``steering_effect`` measures what an intervention does on a set of prompts: the change in the
next-token log-probabilities of chosen tokens (e.g. those the latent promotes), its mean and
Cohen's d across prompts, the KL divergence from the clean next-token distribution, and how
many greedy continuations change.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis.errors import OptionError
from analysis.hooks import require_hooks
from analysis.protocol import hooked_module, tokens_of
from analysis.sae import SparseAutoencoder

Hook = tuple[str, Callable[..., Tensor]]


def add_direction(hook_name: str, direction: Float[Tensor, " d"], alpha: float) -> Hook:
    """``x + alpha * direction`` at every position of ``hook_name``."""
    vec = direction.detach().float()

    def hook(act: Tensor, hook: Any) -> Tensor:
        return act + alpha * vec.to(act.dtype)

    return hook_name, hook


def _latent_rows(sae: SparseAutoencoder, latents: Sequence[int]) -> Tensor:
    for latent in latents:
        sae.check_latent(latent)
    # The contribution of latent i to the raw reconstruction is f_i * W_dec[i] / scale.
    return sae.W_dec.detach()[list(latents)] / sae.cfg.activation_scale


def clamp_latents(
    sae: SparseAutoencoder, latents: Sequence[int], value: float | Sequence[float], *,
    hook_name: str | None = None,
) -> Hook:  # fmt: skip
    """Set each of ``latents`` to ``value`` (one value, or one per latent), keeping the rest of
    the activation (the SAE's error term included) as it is.

    Raises:
        OptionError: a latent out of range, or values of another length than ``latents``.
    """
    latents = [int(i) for i in latents]
    rows = _latent_rows(sae, latents)
    values = torch.as_tensor(value, dtype=torch.float32).flatten()
    if values.numel() == 1:
        values = values.repeat(len(latents))
    if values.numel() != len(latents):
        raise OptionError(f"{values.numel()} values for {len(latents)} latents")
    name = hook_name or sae.cfg.hook_name

    def hook(act: Tensor, hook: Any) -> Tensor:
        f = sae.encode(act.float())[..., latents]  # [..., n]
        return act + ((values - f) @ rows).to(act.dtype)

    return name, hook


def suppress_latents(
    sae: SparseAutoencoder, latents: Sequence[int], *, hook_name: str | None = None
) -> Hook:
    """Clamp ``latents`` to 0: remove their part of the reconstruction from the activation."""
    return clamp_latents(sae, latents, 0.0, hook_name=hook_name)


@torch.inference_mode()
def greedy_generate(
    model: Any,
    prompt: Any,
    *,
    max_new_tokens: int = 12,
    hooks: Sequence[Hook] = (),
    stop_at: Sequence[str] = ("\n",),
) -> str:
    """Greedy continuation of ``prompt`` (text or ``[1, pos]`` ids) with ``hooks`` active.

    Generation stops at the model's EOS token or once the decoded text contains a ``stop_at``
    string (which is cut off).

    Raises:
        HookNotFoundError: a hook name the model lacks.
    """
    inner = hooked_module(model)
    require_hooks(model, [name for name, _ in hooks])
    tokens = tokens_of(model, prompt)
    start = tokens.shape[-1]
    eos = getattr(getattr(model, "tokenizer", None), "eos_token_id", None)
    with model.hooks(fwd_hooks=list(hooks)):
        for _ in range(max_new_tokens):
            if tokens.shape[-1] >= model.cfg.n_ctx:
                break
            next_id = model(tokens)[0, -1].argmax()
            if eos is not None and int(next_id) == eos:
                break
            tokens = torch.cat([tokens, next_id.view(1, 1)], dim=-1)
            text = inner.to_string(tokens[0, start:])
            if any(s in text for s in stop_at):
                break
    text = inner.to_string(tokens[0, start:])
    for s in stop_at:
        text = text.split(s)[0]
    return text


@torch.inference_mode()
def greedy_generate_batch(
    model: Any,
    prompts: Sequence[str],
    *,
    max_new_tokens: int = 12,
    hooks: Sequence[Hook] = (),
    stop_at: Sequence[str] = ("\n",),
) -> list[str]:
    """``greedy_generate`` for many prompts at once (the same outputs, several times faster).

    Prompts are right-padded into one batch; each row's next token is read at its own last
    real position and written over its padding, so causal attention never sees the filler
    (the row's last prompt token, never a pad id a model might mask). On a CPU a forward
    pass of one short prompt is bound by reading the weights; a batch reads them once.

    Raises:
        HookNotFoundError: a hook name the model lacks.
    """
    inner = hooked_module(model)
    require_hooks(model, [name for name, _ in hooks])
    rows = [tokens_of(model, p)[0] for p in prompts]
    if not rows:
        return []
    lengths = torch.tensor([int(r.shape[0]) for r in rows])
    width = int(lengths.max()) + max_new_tokens
    width = min(width, int(model.cfg.n_ctx))
    batch = torch.stack([torch.cat([r, r[-1:].repeat(width - r.shape[0])]) for r in rows])
    cur = lengths.clone()
    eos = getattr(getattr(model, "tokenizer", None), "eos_token_id", None)
    done = torch.zeros(len(rows), dtype=torch.bool)
    with model.hooks(fwd_hooks=list(hooks)):
        for _ in range(max_new_tokens):
            active = (~done) & (cur < width)
            if not bool(active.any()):
                break
            upto = int(cur[active].max())
            logits = model(batch[:, :upto])
            next_ids = logits[torch.arange(len(rows)), (cur - 1).clamp(max=upto - 1)].argmax(-1)
            for i in active.nonzero().flatten().tolist():
                if eos is not None and int(next_ids[i]) == eos:
                    done[i] = True
                    continue
                batch[i, cur[i]] = next_ids[i]
                cur[i] += 1
                text = inner.to_string(batch[i, lengths[i] : cur[i]])
                if any(s in text for s in stop_at):
                    done[i] = True
    out = []
    for i in range(len(rows)):
        text = inner.to_string(batch[i, lengths[i] : cur[i]])
        for s in stop_at:
            text = text.split(s)[0]
        out.append(text)
    return out


@dataclass(frozen=True)
class SteeringEffect:
    """What an intervention did on a set of prompts.

    Attributes:
        label: a name for the intervention.
        delta_logprob: ``[prompt]`` change in the mean next-token log-probability of the
            target tokens at the last prompt position (steered - clean).
        kl: ``[prompt]`` KL(clean || steered) of the next-token distribution, nats.
        clean_text, steered_text: greedy continuations.
        target_tokens: the tokens whose log-probabilities were followed.
    """

    label: str
    delta_logprob: Float[Tensor, " prompt"]
    kl: Float[Tensor, " prompt"]
    clean_text: list[str]
    steered_text: list[str]
    target_tokens: list[str] = field(default_factory=list)

    @property
    def mean_delta(self) -> float:
        """Mean change in target log-probability."""
        return float(self.delta_logprob.mean())

    @property
    def cohens_d(self) -> float:
        """Mean change over its standard deviation across prompts (effect size)."""
        if self.delta_logprob.numel() < 2:
            return float("nan")
        return float(self.delta_logprob.mean() / self.delta_logprob.std().clamp_min(1e-9))

    @property
    def changed_fraction(self) -> float:
        """Share of prompts whose greedy continuation changed."""
        return sum(a != b for a, b in zip(self.clean_text, self.steered_text)) / max(
            1, len(self.clean_text)
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per prompt."""
        return pd.DataFrame({"delta_logprob": self.delta_logprob.tolist(), "kl": self.kl.tolist(),
                             "clean": self.clean_text, "steered": self.steered_text})  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary."""
        return {"label": self.label, "mean_delta_logprob": self.mean_delta,
                "cohens_d": self.cohens_d, "mean_kl": float(self.kl.mean()),
                "changed_fraction": self.changed_fraction, "target_tokens": self.target_tokens}  # fmt: skip


@torch.inference_mode()
def steering_effect(
    model: Any,
    prompts: Sequence[Any],
    hooks: Sequence[Hook],
    *,
    target_ids: Int[Tensor, " n"] | Sequence[int] = (),
    max_new_tokens: int = 12,
    label: str = "steered",
) -> SteeringEffect:
    """Run each prompt clean and with ``hooks``; compare next-token distributions and outputs.

    Args:
        model: the hooked model.
        prompts: texts (or task sequences).
        hooks: the intervention (``add_direction``, ``clamp_latents``, ``suppress_latents``).
        target_ids: token ids whose mean log-probability change is measured (empty: none,
            ``delta_logprob`` is 0).
        max_new_tokens: length of the greedy continuations compared (0: none).
        label: the intervention's name.

    Raises:
        OptionError: no prompts.
    """
    if not prompts:
        raise OptionError("no prompts to steer")
    targets = torch.as_tensor(list(target_ids), dtype=torch.long)
    deltas, kls, clean_text, steered_text = [], [], [], []
    for prompt in prompts:
        tokens = tokens_of(model, prompt)
        clean = model(tokens)[0, -1].float().log_softmax(-1)
        with model.hooks(fwd_hooks=list(hooks)):
            steered = model(tokens)[0, -1].float().log_softmax(-1)
        kls.append(float((clean.exp() * (clean - steered)).sum()))
        deltas.append(float((steered[targets] - clean[targets]).mean()) if targets.numel() else 0.0)
        if max_new_tokens > 0 and getattr(model, "codec", None) is None:
            clean_text.append(greedy_generate(model, tokens, max_new_tokens=max_new_tokens))
            steered_text.append(
                greedy_generate(model, tokens, max_new_tokens=max_new_tokens, hooks=hooks)
            )
    names: list[str] = []
    if targets.numel():
        from analysis.protocol import output_labels

        has_vocab = getattr(model, "codec", None) is not None or hooked_module(model).tokenizer
        names = (
            output_labels(model, targets.tolist())
            if has_vocab
            else [str(i) for i in targets.tolist()]
        )
    return SteeringEffect(
        label, torch.tensor(deltas), torch.tensor(kls), clean_text, steered_text, names
    )
