"""Linear probes: is a labelled property linearly decodable from the residual stream, per layer?

For every input the residual stream at one token position is read at the entrance of each block
(``L0 in`` is the embedding) and after the last block (``final``), only through hooks that keep
that one position, so memory stays ``[n_inputs, d_model]`` per layer. A scikit-learn logistic
regression is fitted per layer and scored on held-out folds (stratified k-fold). The same fit on
shuffled labels is the control: a probe is only evidence of a representation when its accuracy
is far above the control (Hewitt & Liang 2019's "selectivity" is accuracy minus control).

Example:
    >>> result = run_linear_probes(lm, prompts, labels)        # doctest: +SKIP
    >>> result.best_layer()                                     # doctest: +SKIP
    ('L12 in', 0.94)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.errors import OptionError
from analysis.hooks import require_hooks, resid_post, resid_pre
from analysis.protocol import Inputs, hooked_module, model_device, model_name, tokens_of

#: ``progress(done, total)`` after each batch of inputs and each probed layer.
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class LinearProbeOptions:
    """How to read activations and fit the probes.

    Attributes:
        position: the token position read in every input; negative counts from each input's
            own end (``-1``: its last token).
        layers: block indices whose input residual is probed (``None``: every block plus the
            final residual). The final residual is always included.
        n_folds: stratified folds; each example is held out exactly once.
        n_controls: shuffled-label repetitions of the whole cross-validation (the control).
        C: inverse L2 strength of the logistic regression.
        max_iter: solver iterations per fit.
        standardize: z-score each feature on the training fold before fitting (residual
            streams have a few outlier dimensions that would otherwise dominate).
        batch_size: inputs per forward pass (inputs are batched by token length, never padded).
        seed: seed of the folds and the shuffles.
    """

    position: int = -1
    layers: tuple[int, ...] | None = None
    n_folds: int = 5
    n_controls: int = 3
    C: float = 1.0
    max_iter: int = 1000
    standardize: bool = True
    batch_size: int = 32
    seed: int = 0

    def check(self) -> None:
        """Raise ``OptionError`` for a value out of range."""
        if self.n_folds < 2:
            raise OptionError(
                f"n_folds must be >= 2 (a held-out fold is needed), got {self.n_folds}"
            )
        if self.n_controls < 1:
            raise OptionError(f"n_controls must be >= 1, got {self.n_controls}")
        if self.C <= 0:
            raise OptionError(f"C must be > 0, got {self.C}")
        if self.max_iter < 1 or self.batch_size < 1:
            raise OptionError(
                f"max_iter and batch_size must be >= 1, got {self.max_iter}, {self.batch_size}"
            )


@dataclass(frozen=True)
class LinearProbeResult:
    """Held-out accuracy of a linear probe at every probed layer, with its shuffled control.

    Attributes:
        model_name: the model.
        layer_labels: one per row (``L3 in`` ... ``final``).
        accuracy, accuracy_std: ``[layer]`` mean and spread over folds of held-out accuracy.
        train_accuracy: ``[layer]`` mean training-fold accuracy (a gap to ``accuracy`` is
            overfitting).
        control_accuracy, control_std: ``[layer]`` the same with shuffled labels (mean and
            spread over the ``n_controls`` shuffles).
        classes: the label values, in the order the probes index them.
        class_counts: examples per class.
        majority_baseline: accuracy of always answering the most common class.
        n_examples, d_model: the design matrix size.
        options: the options used.
        seconds: wall time (activations and fits).
    """

    model_name: str
    layer_labels: list[str]
    accuracy: Float[Tensor, " layer"]
    accuracy_std: Float[Tensor, " layer"]
    train_accuracy: Float[Tensor, " layer"]
    control_accuracy: Float[Tensor, " layer"]
    control_std: Float[Tensor, " layer"]
    classes: list[str]
    class_counts: list[int]
    majority_baseline: float
    n_examples: int
    d_model: int
    options: LinearProbeOptions
    seconds: float

    @property
    def selectivity(self) -> Float[Tensor, " layer"]:
        """Accuracy minus the shuffled-label control, per layer."""
        return self.accuracy - self.control_accuracy

    def best_layer(self) -> tuple[str, float]:
        """The row with the highest held-out accuracy (the first one on ties) and that accuracy."""
        i = int(torch.argmax(self.accuracy))
        return self.layer_labels[i], float(self.accuracy[i])

    def to_frame(self) -> pd.DataFrame:
        """One row per probed layer."""
        return pd.DataFrame(
            {
                "layer": self.layer_labels,
                "accuracy": self.accuracy.tolist(),
                "accuracy_std": self.accuracy_std.tolist(),
                "train_accuracy": self.train_accuracy.tolist(),
                "control_accuracy": self.control_accuracy.tolist(),
                "control_std": self.control_std.tolist(),
                "selectivity": self.selectivity.tolist(),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "model_name": self.model_name,
            "layer_labels": self.layer_labels,
            "accuracy": self.accuracy.tolist(),
            "accuracy_std": self.accuracy_std.tolist(),
            "train_accuracy": self.train_accuracy.tolist(),
            "control_accuracy": self.control_accuracy.tolist(),
            "control_std": self.control_std.tolist(),
            "classes": self.classes,
            "class_counts": self.class_counts,
            "majority_baseline": self.majority_baseline,
            "n_examples": self.n_examples,
            "d_model": self.d_model,
            "options": asdict(self.options),
            "seconds": self.seconds,
        }


def probe_rows(model: Any, layers: tuple[int, ...] | None) -> tuple[list[str], list[str]]:
    """``(hook names, row labels)``: the input residual of each chosen block, then the final one.

    Raises:
        OptionError: a layer outside ``0..n_layers-1``.
    """
    n = model.cfg.n_layers
    chosen = list(range(n)) if layers is None else sorted(set(layers))
    for layer in chosen:
        if not 0 <= layer < n:
            raise OptionError(f"layer {layer} is out of range; this model has layers 0..{n - 1}")
    names = [resid_pre(layer) for layer in chosen] + [resid_post(n - 1)]
    return names, [f"L{layer} in" for layer in chosen] + ["final"]


@torch.no_grad()
def collect_activations(
    model: Any,
    inputs: Sequence[Inputs],
    names: list[str],
    *,
    position: int = -1,
    batch_size: int = 32,
    progress: Progress | None = None,
) -> Float[Tensor, "layer n d_model"]:
    """The residual at ``position`` of every input, for every hook in ``names``.

    Inputs are tokenised one by one and run in batches of equal token length, so no padding
    ever enters a forward pass. The hooks keep only the one position.

    Raises:
        OptionError: a position outside an input.
    """
    require_hooks(model, names)
    inner = hooked_module(model)
    rows = [tokens_of(model, x)[0] for x in inputs]
    for i, row in enumerate(rows):
        if not -len(row) <= position < len(row):
            raise OptionError(
                f"position {position} is outside input {i}, which has {len(row)} tokens "
                f"(valid: {-len(row)}..{len(row) - 1})"
            )
    by_length: dict[int, list[int]] = {}
    for i, row in enumerate(rows):
        by_length.setdefault(len(row), []).append(i)
    out = torch.zeros(len(names), len(rows), model.cfg.d_model)
    device = model_device(model)
    captured: dict[str, Tensor] = {}

    def keeper(name: str) -> Callable[[Tensor, Any], None]:
        # Keyed by the name asked for: a TransformerBridge's alias hooks (``hook_resid_pre``)
        # report their target's name in ``hook.name``.
        def keep(act: Tensor, hook: Any) -> None:
            captured[name] = act[:, position].detach().float().cpu()

        return keep

    chunks = [
        idx[start : start + batch_size]
        for idx in by_length.values()
        for start in range(0, len(idx), batch_size)
    ]
    with inner.hooks(fwd_hooks=[(name, keeper(name)) for name in names]):
        for done, chunk in enumerate(chunks, start=1):
            captured.clear()
            inner(torch.stack([rows[i] for i in chunk]).to(device))
            for j, name in enumerate(names):
                out[j, chunk] = captured[name]
            if progress is not None:
                progress(done, len(chunks))
    return out


def _fit_layer(
    x: np.ndarray, y: np.ndarray, folds: list[tuple[np.ndarray, np.ndarray]], options: Any
) -> tuple[list[float], list[float]]:
    """Held-out and training accuracy of one probe on each fold."""
    from sklearn.linear_model import LogisticRegression

    # newton-cg: 10x faster than lbfgs on these small, often separable problems (same optimum).
    held, train = [], []
    for train_idx, test_idx in folds:
        x_train, x_test = x[train_idx], x[test_idx]
        if options.standardize:
            mean = x_train.mean(0)
            std = x_train.std(0) + 1e-6
            x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        probe = LogisticRegression(C=options.C, max_iter=options.max_iter, solver="newton-cg")
        probe.fit(x_train, y[train_idx])
        held.append(float((probe.predict(x_test) == y[test_idx]).mean()))
        train.append(float((probe.predict(x_train) == y[train_idx]).mean()))
    return held, train


def run_linear_probes(
    model: Any,
    inputs: Sequence[Inputs],
    labels: Sequence[Hashable],
    *,
    options: LinearProbeOptions | None = None,
    progress: Progress | None = None,
) -> LinearProbeResult:
    """Fit a logistic-regression probe per layer for ``labels`` and score it on held-out folds.

    Args:
        model: a hooked model.
        inputs: prompts, task sequences or ``[1, pos]`` token tensors, one per example.
        labels: one class label per input (two or more classes, each at least ``n_folds``
            times so every fold holds every class).
        options: ``LinearProbeOptions`` (defaults if ``None``).
        progress: called as ``progress(done, total)``; nothing is printed.

    Returns:
        A ``LinearProbeResult`` with held-out accuracy per layer and its shuffled-label control.

    Raises:
        OptionError: mismatched lengths, a single class, a class rarer than ``n_folds``, a bad
            position or layer, or options out of range.

    Example:
        >>> prompts = ["1 + 1 = 2.", "1 + 1 = 3.", ...]                   # doctest: +SKIP
        >>> res = run_linear_probes(lm, prompts, [True, False, ...])      # doctest: +SKIP
        >>> res.accuracy.max() > res.control_accuracy.max()               # doctest: +SKIP
        tensor(True)
    """
    from sklearn.model_selection import StratifiedKFold

    options = options or LinearProbeOptions()
    options.check()
    if len(inputs) != len(labels):
        raise OptionError(f"{len(inputs)} inputs but {len(labels)} labels; give one label each")
    classes = sorted({str(v) for v in labels})
    y = np.array([classes.index(str(v)) for v in labels])
    counts = np.bincount(y, minlength=len(classes))
    if len(classes) < 2:
        raise OptionError(f"labels hold one class ({classes[0] if classes else 'none'}); need >= 2")
    if counts.min() < options.n_folds:
        rare = classes[int(counts.argmin())]
        raise OptionError(
            f"class {rare!r} has {int(counts.min())} examples; each class needs at least "
            f"n_folds = {options.n_folds} (give more inputs or lower n_folds)"
        )
    start = time.perf_counter()
    names, row_labels = probe_rows(model, options.layers)
    total = len(names)
    acts = collect_activations(
        model, inputs, names, position=options.position, batch_size=options.batch_size
    )
    rng = np.random.default_rng(options.seed)

    def folds_for(target: np.ndarray, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        splitter = StratifiedKFold(n_splits=options.n_folds, shuffle=True, random_state=seed)
        return list(splitter.split(np.zeros(len(target)), target))

    real_folds = folds_for(y, options.seed)
    shuffles = [rng.permutation(y) for _ in range(options.n_controls)]
    control_folds = [folds_for(s, options.seed + 1 + i) for i, s in enumerate(shuffles)]
    acc, acc_std, train_acc, ctrl, ctrl_std = [], [], [], [], []
    for row in range(total):
        x = acts[row].numpy().astype(np.float64)
        held, train = _fit_layer(x, y, real_folds, options)
        acc.append(np.mean(held))
        acc_std.append(np.std(held))
        train_acc.append(np.mean(train))
        control = [
            np.mean(_fit_layer(x, s, f, options)[0]) for s, f in zip(shuffles, control_folds)
        ]
        ctrl.append(np.mean(control))
        ctrl_std.append(np.std(control))
        if progress is not None:
            progress(row + 1, total)

    def vec(values: list) -> Tensor:
        return torch.tensor(values, dtype=torch.float32)

    return LinearProbeResult(
        model_name=model_name(model),
        layer_labels=row_labels,
        accuracy=vec(acc),
        accuracy_std=vec(acc_std),
        train_accuracy=vec(train_acc),
        control_accuracy=vec(ctrl),
        control_std=vec(ctrl_std),
        classes=classes,
        class_counts=[int(c) for c in counts],
        majority_baseline=float(counts.max() / counts.sum()),
        n_examples=len(y),
        d_model=int(acts.shape[-1]),
        options=options,
        seconds=time.perf_counter() - start,
    )
