"""``fit_program``: train a Transformer Program on a task (CPU, seeded, interruptible).

The loop is the authors' (``src/run.py``): Adam, shuffled mini-batches of the training split,
one Gumbel sample per step, the temperature falling geometrically from ``tau_init`` to
``tau_end`` step by step, a per-sequence mean of the token losses. After every
``eval_every`` epochs the *discretised* program (every choice at its argmax) is scored on
the validation split, and the best one so far is kept: it is what ``fit_program`` returns,
also when training is interrupted (Ctrl-C or ``should_stop``).

Example:
    >>> fitted = fit_program(task, FitConfig(epochs=5))      # doctest: +SKIP
    >>> fitted.metrics["test_acc"]                           # doctest: +SKIP
    1.0
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from rasp.errors import ProgramConfigError
from rasp.programs.config import FitConfig
from rasp.programs.data import IGNORE, ProgramData, ProgramTask, ProgramVocab, Split, make_data
from rasp.programs.model import ProgramModel

#: ``callback(step, total_steps, loss, tau)`` after every step.
FitCallback = Callable[[int, int, float, float], None]


@dataclass
class FittedProgram:
    """A trained program, the data it was fitted on and how well it does.

    Attributes:
        model: the trained model (eval mode); ``model(..., hard=True)`` is the program.
        vocab: its token ids and output classes.
        task: the task's name.
        config: the fit settings.
        metrics: token accuracy of the discretised program on ``train``/``val``/``test``
            (``*_acc``), the epoch it was taken from, steps, seconds, ``interrupted``.
        history: per evaluation ``{"epoch", "loss", "tau", "val_acc"}``.
        data: the splits (not saved with the program).
    """

    model: ProgramModel
    vocab: ProgramVocab
    task: str
    config: FitConfig
    metrics: dict[str, Any]
    history: list[dict[str, float]] = field(default_factory=list)
    data: ProgramData | None = None


@torch.no_grad()
def program_accuracy(model: ProgramModel, split: Split, *, batch: int = 4096) -> float:
    """Token accuracy of the discretised program over the scored positions of ``split``."""
    hits = total = 0
    device = next(model.parameters()).device
    for start in range(0, len(split), batch):
        sl = slice(start, start + batch)
        tokens, valid, targets = (
            t[sl].to(device) for t in (split.tokens, split.valid, split.targets)
        )
        pred = model(tokens, valid, hard=True).argmax(-1)
        scored = targets != IGNORE
        hits += int(((pred == targets) & scored).sum())
        total += int(scored.sum())
    return hits / max(total, 1)


def _loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    scored = targets != IGNORE
    nll = torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), targets.clamp(min=0), reduction="none"
    )
    per_seq = (nll * scored).sum(-1) / scored.sum(-1).clamp(min=1)
    return per_seq.mean()


def fit_program(
    task: ProgramTask,
    config: FitConfig | None = None,
    *,
    data: ProgramData | None = None,
    progress: bool = True,
    callback: FitCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    device: str | torch.device = "cpu",
) -> FittedProgram:
    """Train a Transformer Program on ``task``.

    Args:
        task: anything with ``name``, ``input_values``, ``output_values``, ``max_len``,
            ``causal``, ``target(seq)`` and ``sample(n, rng)`` (see ``ProgramTask``).
        config: architecture and training settings (``FitConfig()`` when ``None``).
        data: prepared splits (drawn from ``task`` with ``config.seed`` when ``None``).
        progress: show a tqdm bar.
        callback: called as ``callback(step, total, loss, tau)`` after every step.
        should_stop: polled every step; training ends (keeping the best program) when true.
        device: where to train (``"cuda"`` for a GPU). The returned model is on the CPU. A
            seed gives the same program on the same device; the CPU and a GPU draw different
            Gumbel noise, so a seed's program differs between them.

    Returns:
        The best discretised program seen (by validation accuracy) and its metrics.

    Raises:
        ProgramConfigError: for a config that is not a ``FitConfig``.
        ProgramDataError: for a task whose samples or targets do not fit its vocabulary.

    Example:
        >>> from models.programs import program_task                  # doctest: +SKIP
        >>> fit_program(program_task("hist"), FitConfig(epochs=20)).metrics["test_acc"]  # doctest: +SKIP
        1.0
    """
    config = config or FitConfig()
    if not isinstance(config, FitConfig):
        raise ProgramConfigError(f"config must be a FitConfig, got {type(config).__name__}")
    data = data or make_data(task, config.dataset_size, config.seed)
    vocab = data.vocab
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ProgramConfigError("device='cuda' was asked for, but torch sees no CUDA GPU")
    cuda = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(config.seed)
        model = ProgramModel(
            config.architecture,
            n_tokens=vocab.n_tokens,
            n_ctx=vocab.n_ctx,
            n_out=len(vocab.output_values),
            causal=bool(task.causal),
        )
        fitted = _train(task, config, data, model.to(device), progress, callback, should_stop)
    fitted.model.cpu()
    return fitted


def _to(split: Split, device: torch.device) -> Split:
    return replace(
        split, **{k: getattr(split, k).to(device) for k in ("tokens", "valid", "targets")}
    )


def _train(task, config, data, model, progress, callback, should_stop) -> FittedProgram:
    device = next(model.parameters()).device
    # On the model's device once: every step samples train, every epoch scores val.
    train, val = (_to(split, device) for split in (data.train, data.val))
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    total = steps_per_epoch * config.epochs
    taus = np.geomspace(config.tau_init, config.tau_end, max(total, 2))
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    order_rng = torch.Generator().manual_seed(config.seed)
    best = {"val_acc": -1.0, "epoch": -1, "state": copy.deepcopy(model.state_dict())}
    history: list[dict[str, float]] = []
    step, interrupted, window = 0, False, []
    start = time.perf_counter()
    bar = tqdm(total=total, desc=f"program {task.name}", disable=not progress, leave=False)
    try:
        for epoch in range(config.epochs):
            model.train()
            perm = torch.randperm(len(train), generator=order_rng)
            for b in range(steps_per_epoch):
                idx = perm[b * config.batch_size : (b + 1) * config.batch_size].to(device)
                tau = float(taus[step])
                logits = model(train.tokens[idx], train.valid[idx], tau=tau)
                loss = _loss(logits, train.targets[idx])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                window.append(loss.item())
                bar.update(1)
                if callback is not None:
                    callback(step, total, window[-1], tau)
                if should_stop is not None and should_stop():
                    raise KeyboardInterrupt
            if (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs:
                model.eval()
                val_acc = program_accuracy(model, val)
                history.append({"epoch": epoch + 1, "loss": float(np.mean(window)),
                                "tau": float(taus[step - 1]), "val_acc": val_acc})  # fmt: skip
                window = []
                bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val=f"{val_acc:.3f}")
                if val_acc >= best["val_acc"]:
                    best = {"val_acc": val_acc, "epoch": epoch + 1,
                            "state": copy.deepcopy(model.state_dict())}  # fmt: skip
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    if best["epoch"] < 0:  # interrupted before the first check: score what there is
        model.eval()
        best = {"val_acc": program_accuracy(model, val), "epoch": 0,
                "state": copy.deepcopy(model.state_dict())}  # fmt: skip
    model.load_state_dict(best["state"])
    model.eval()
    metrics: dict[str, Any] = {
        "train_acc": program_accuracy(model, train),
        "val_acc": program_accuracy(model, val),
        "test_acc": program_accuracy(model, data.test),
        "best_epoch": best["epoch"],
        "steps": step,
        "total_steps": total,
        "seconds": round(seconds, 2),
        "interrupted": interrupted,
        "n_train": len(data.train),
        "n_val": len(data.val),
        "n_test": len(data.test),
        "torch_threads": torch.get_num_threads(),
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
    }
    return FittedProgram(model, data.vocab, task.name, config, metrics, history, data)
