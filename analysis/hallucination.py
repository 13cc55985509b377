"""Predicting hallucination from SAE concepts, and the CASAL known-vs-unknown direction.

1. ``label_answers``: the model answers factual questions greedily; an answer is right when it
   contains an accepted answer (questions with known answers: ``models.questions``), else a
   hallucination.
2. ``question_features``: per question and layer, the SAE concept vector of the *input* (each
   latent's largest activation over the question's tokens, as in "From Noise to Narrative")
   and, as the baseline, the raw residual at the question's last token.
3. ``fit_hallucination_predictor``: scikit-learn ``PLSRegression`` (the paper's method) and
   ``LogisticRegression`` from features to the label, scored by stratified cross-validated
   AUROC on out-of-fold predictions, on concepts and on raw residuals; the latents with the
   largest positive PLS coefficients are the top-loading (hallucination-predicting) concepts.
4. ``known_unknown_direction`` (CASAL, Yang et al. 2025): per layer the difference of mean
   residuals at the question's last token between wrong (unknown) and right (known) answers,
   the silhouette score of the two groups, and the AUROC of projecting onto the direction.

Suppressing top-loading concepts during generation (``analysis.steering.suppress_latents``)
and relabelling answers shows whether they change the hallucination rate.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from analysis.activations import capture
from analysis.errors import OptionError
from analysis.hooks import resid_post
from analysis.protocol import model_name
from analysis.sae import SparseAutoencoder
from analysis.steering import Hook, greedy_generate_batch

TEMPLATE = "Q: {question}\nA:"
#: ``progress(done, total)``.
Progress = Callable[[int, int], None]


def is_correct(answer: str, question: Any) -> bool:
    """Whether ``answer`` contains one of ``question.answers`` (see ``models.questions``)."""
    if getattr(question, "match", "substring") == "word":
        return any(
            re.search(rf"(?<![A-Za-z]){re.escape(a)}(?![a-z])", answer) for a in question.answers
        )
    low = answer.lower()
    return any(a.lower() in low for a in question.answers)


@dataclass(frozen=True)
class AnswerLabels:
    """A model's greedy answers and whether each is right.

    Attributes:
        model_name: the model.
        prompts: the prompts (template filled in).
        answers: the generated answers.
        correct: ``[question]`` right (True) or hallucinated (False).
        categories: each question's category.
    """

    model_name: str
    prompts: list[str]
    answers: list[str]
    correct: Bool[Tensor, " question"]
    categories: list[str]

    @property
    def hallucination_rate(self) -> float:
        """Share of wrong answers."""
        return float((~self.correct).float().mean())

    def to_frame(self) -> pd.DataFrame:
        """One row per question."""
        return pd.DataFrame({"prompt": self.prompts, "answer": self.answers,
                             "correct": self.correct.tolist(), "category": self.categories})  # fmt: skip


def label_answers(
    model: Any,
    questions: Sequence[Any],
    *,
    template: str = TEMPLATE,
    max_new_tokens: int = 10,
    hooks: Sequence[Hook] = (),
    batch_size: int = 16,
    progress: Progress | None = None,
) -> AnswerLabels:
    """Greedy answers to ``questions`` (objects with ``question``, ``answers``, ``match``),
    ``batch_size`` prompts per forward pass, ``hooks`` active (e.g. a suppression).

    Raises:
        OptionError: no questions, or a template without ``{question}``.
    """
    if not questions:
        raise OptionError("no questions to answer")
    if "{question}" not in template:
        raise OptionError(f"the template must contain '{{question}}', got {template!r}")
    prompts = [template.format(question=q.question) for q in questions]
    answers: list[str] = []
    for start in range(0, len(prompts), batch_size):
        answers += greedy_generate_batch(model, prompts[start : start + batch_size],
                                         max_new_tokens=max_new_tokens, hooks=hooks)  # fmt: skip
        if progress is not None:
            progress(len(answers), len(questions))
    correct = [is_correct(a, q) for a, q in zip(answers, questions)]
    return AnswerLabels(model_name(model), prompts, answers, torch.tensor(correct),
                        [getattr(q, "category", "") for q in questions])  # fmt: skip


@torch.inference_mode()
def question_features(
    model: Any, saes: Mapping[int, SparseAutoencoder], prompts: Sequence[str],
    *, layers: Sequence[int] | None = None,
) -> tuple[dict[int, Tensor], dict[int, Tensor]]:  # fmt: skip
    """``(concepts, residuals)``: per layer ``[question, d_sae]`` max latent activation over the
    prompt's non-BOS tokens, and ``[question, d_model]`` residual at the last token.

    ``layers`` (default: the SAEs' layers) may include layers without an SAE (residuals only).
    """
    layers = sorted(set(saes) | set(layers or []))
    hooks = [resid_post(layer) for layer in layers]
    concepts: dict[int, list[Tensor]] = {layer: [] for layer in saes}
    resid: dict[int, list[Tensor]] = {layer: [] for layer in layers}
    for prompt in prompts:
        acts = capture(model, model.to_tokens(prompt), hooks)
        for layer, hook in zip(layers, hooks):
            x = acts[hook][0, 1:]
            resid[layer].append(x[-1])
            if layer in saes:
                concepts[layer].append(saes[layer].encode(x).amax(0))
    return ({k: torch.stack(v) for k, v in concepts.items()},
            {k: torch.stack(v) for k, v in resid.items()})  # fmt: skip


@dataclass(frozen=True)
class PredictorOptions:
    """How to fit the hallucination predictors.

    Attributes:
        n_components: PLS components.
        c: inverse L2 strength of the logistic regression (on standardised features).
        folds: stratified cross-validation folds (fewer when a class is smaller).
        n_top: top-loading concepts listed.
        seed: fold shuffling seed.
    """

    n_components: int = 4
    c: float = 0.05
    folds: int = 5
    n_top: int = 10
    seed: int = 0


@dataclass(frozen=True)
class HallucinationPredictorResult:
    """Cross-validated hallucination prediction from concepts vs raw residuals.

    Attributes:
        layer: the layer the features come from.
        n, n_hallucinated: questions and wrong answers.
        auroc: ``{model: AUROC}`` of out-of-fold scores for ``pls_concepts``,
            ``logreg_concepts``, ``pls_raw``, ``logreg_raw``.
        fold_auroc: ``{model: [fold]}`` per-fold AUROCs.
        scores: ``{model: [question]}`` out-of-fold scores (higher: more likely wrong).
        labels: ``[question]`` 1 = hallucinated.
        roc: ``{model: (fpr, tpr)}``.
        top_concepts: ``[(latent, standardised PLS coefficient, firing rate on wrong answers,
            on right answers)]``, largest coefficient first.
        options: the options used.
    """

    layer: int
    n: int
    n_hallucinated: int
    auroc: dict[str, float]
    fold_auroc: dict[str, list[float]]
    scores: dict[str, Tensor] = field(repr=False)
    labels: Tensor = field(repr=False)
    roc: dict[str, tuple[list[float], list[float]]] = field(repr=False)
    top_concepts: list[tuple[int, float, float, float]] = field(default_factory=list)
    options: PredictorOptions = field(default_factory=PredictorOptions)

    def to_frame(self) -> pd.DataFrame:
        """One row per predictor: AUROC and its fold spread."""
        return pd.DataFrame([{"predictor": k, "auroc": v, "fold_mean": float(np.mean(self.fold_auroc[k])),
                              "fold_std": float(np.std(self.fold_auroc[k]))}
                             for k, v in self.auroc.items()])  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"layer": self.layer, "n": self.n, "n_hallucinated": self.n_hallucinated,
                "auroc": self.auroc, "fold_auroc": self.fold_auroc,
                "top_concepts": self.top_concepts, "options": asdict(self.options)}  # fmt: skip


def _models(options: PredictorOptions, n_features: int):
    from sklearn.cross_decomposition import PLSRegression
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pls = PLSRegression(n_components=max(1, min(options.n_components, n_features)))
    logreg = make_pipeline(StandardScaler(), LogisticRegression(C=options.c, max_iter=5000))
    return pls, logreg


def _score(model: Any, x: np.ndarray) -> np.ndarray:
    if hasattr(model, "predict_proba"):
        return model.predict_proba(x)[:, 1]
    return np.asarray(model.predict(x)).reshape(-1)


def fit_hallucination_predictor(
    concepts: Float[Tensor, "question d_sae"],
    residuals: Float[Tensor, "question d_model"],
    correct: Bool[Tensor, " question"],
    *,
    layer: int = -1,
    options: PredictorOptions | None = None,
) -> HallucinationPredictorResult:
    """Cross-validated AUROC of PLS and logistic regression, on concepts and on raw residuals.

    Raises:
        OptionError: fewer than 2 questions in either class, or mismatched row counts.

    Example:
        >>> c, r = question_features(lm, saes, labels.prompts)                    # doctest: +SKIP
        >>> fit_hallucination_predictor(c[15], r[15], labels.correct).auroc       # doctest: +SKIP
    """
    from sklearn.metrics import roc_auc_score, roc_curve
    from sklearn.model_selection import StratifiedKFold

    options = options or PredictorOptions()
    y = (~correct).numpy().astype(int)
    if not concepts.shape[0] == residuals.shape[0] == y.shape[0]:
        raise OptionError(
            f"row counts differ: {concepts.shape[0]}, {residuals.shape[0]}, {y.shape[0]}"
        )
    minority = int(min(y.sum(), len(y) - y.sum()))
    if minority < 2:
        raise OptionError(f"need at least 2 right and 2 wrong answers, got {len(y) - y.sum()} right "
                          f"and {y.sum()} wrong")  # fmt: skip
    active = concepts.amax(0) > 0  # drop latents that never fire on these questions
    feats = {"concepts": concepts[:, active].double().numpy(), "raw": residuals.double().numpy()}
    folds = StratifiedKFold(n_splits=min(options.folds, minority), shuffle=True,
                            random_state=options.seed)  # fmt: skip
    auroc, fold_auroc, scores, roc = {}, {}, {}, {}
    for kind in ("pls", "logreg"):
        for name, x in feats.items():
            key = f"{kind}_{name}"
            oof = np.zeros(len(y))
            per_fold = []
            for train, test in folds.split(x, y):
                model = _models(options, x.shape[1])[0 if kind == "pls" else 1]
                model.fit(x[train], y[train])
                oof[test] = _score(model, x[test])
                per_fold.append(float(roc_auc_score(y[test], oof[test])))
            auroc[key] = float(roc_auc_score(y, oof))
            fold_auroc[key] = per_fold
            scores[key] = torch.tensor(oof)
            fpr, tpr, _ = roc_curve(y, oof)
            roc[key] = (fpr.tolist(), tpr.tolist())
    pls = _models(options, feats["concepts"].shape[1])[0].fit(feats["concepts"], y)
    # Coefficients per standard deviation of each feature: sklearn's ``coef_`` is per raw unit,
    # which ranks rarely-firing (small-spread) latents above strongly-varying ones.
    coef = np.asarray(pls.coef_).reshape(-1) * feats["concepts"].std(0)
    latent_ids = active.nonzero().flatten()
    wrong, right = torch.tensor(y == 1), torch.tensor(y == 0)
    fires = concepts[:, active] > 0
    top = []
    for j in np.argsort(-coef)[: options.n_top]:
        if coef[j] <= 0:
            break
        top.append((int(latent_ids[j]), float(coef[j]), float(fires[wrong, j].float().mean()),
                    float(fires[right, j].float().mean())))  # fmt: skip
    return HallucinationPredictorResult(layer, len(y), int(y.sum()), auroc, fold_auroc, scores,
                                        torch.tensor(y), roc, top, options)  # fmt: skip


@dataclass(frozen=True)
class KnownUnknownResult:
    """The CASAL known-vs-unknown direction per layer.

    Attributes:
        layers: the layers.
        directions: ``[layer, d_model]`` mean(wrong) - mean(right) residual at the question's
            last token (the "unknown" direction; its negative is the "known" one).
        norms: ``[layer]`` their norms.
        silhouette: ``[layer]`` silhouette score of the right / wrong groups (euclidean).
        projection_auroc: ``[layer]`` cross-validated AUROC of projecting held-out questions
            onto the direction fitted on the other folds (wrong vs right).
        n_known, n_unknown: group sizes.
    """

    layers: list[int]
    directions: Float[Tensor, "layer d_model"]
    norms: Float[Tensor, " layer"]
    silhouette: Float[Tensor, " layer"]
    projection_auroc: Float[Tensor, " layer"]
    n_known: int
    n_unknown: int

    def direction(self, layer: int) -> Tensor:
        """The unknown-minus-known direction at ``layer``.

        Raises:
            OptionError: a layer not in ``layers``.
        """
        if layer not in self.layers:
            raise OptionError(f"layer {layer} was not measured; layers: {self.layers}")
        return self.directions[self.layers.index(layer)]

    def best_layer(self) -> int:
        """The layer with the highest silhouette score."""
        return self.layers[int(self.silhouette.argmax())]

    def to_frame(self) -> pd.DataFrame:
        """One row per layer."""
        return pd.DataFrame({"layer": self.layers, "norm": self.norms.tolist(),
                             "silhouette": self.silhouette.tolist(),
                             "projection_auroc": self.projection_auroc.tolist()})  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (without the directions)."""
        return {"layers": self.layers, "norms": self.norms.tolist(),
                "silhouette": self.silhouette.tolist(),
                "projection_auroc": self.projection_auroc.tolist(),
                "n_known": self.n_known, "n_unknown": self.n_unknown}  # fmt: skip


def known_unknown_direction(
    residuals: Mapping[int, Float[Tensor, "question d_model"]],
    correct: Bool[Tensor, " question"],
    *,
    seed: int = 0,
) -> KnownUnknownResult:
    """CASAL's difference-of-means direction, silhouette and projection AUROC per layer.

    Raises:
        OptionError: fewer than 2 questions in either group.
    """
    from sklearn.metrics import roc_auc_score, silhouette_score

    known, unknown = correct, ~correct
    if int(known.sum()) < 2 or int(unknown.sum()) < 2:
        raise OptionError(f"need at least 2 right and 2 wrong answers, got {int(known.sum())} "
                          f"right and {int(unknown.sum())} wrong")  # fmt: skip
    from sklearn.model_selection import StratifiedKFold

    layers = sorted(residuals)
    dirs, sil, auc = [], [], []
    labels = unknown.numpy().astype(int)
    minority = int(min(labels.sum(), len(labels) - labels.sum()))
    folds = StratifiedKFold(n_splits=min(5, minority), shuffle=True, random_state=seed)
    for layer in layers:
        x = residuals[layer].double()
        v = x[unknown].mean(0) - x[known].mean(0)
        dirs.append(v.float())
        sil.append(float(silhouette_score(x.numpy(), labels)))
        oof = np.zeros(len(labels))
        for train, test in folds.split(x.numpy(), labels):
            tk, tu = known.numpy()[train], unknown.numpy()[train]
            v_fold = x[train][tu].mean(0) - x[train][tk].mean(0)
            oof[test] = (x[test] @ v_fold).numpy()
        auc.append(float(roc_auc_score(labels, oof)))
    directions = torch.stack(dirs)
    return KnownUnknownResult(layers, directions, directions.norm(dim=-1), torch.tensor(sil),
                              torch.tensor(auc), int(known.sum()), int(unknown.sum()))  # fmt: skip
