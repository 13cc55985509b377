"""Hallucination predictor, CASAL direction and steering, on planted data and tiny models."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from analysis.activations import capture
from analysis.errors import OptionError
from analysis.hallucination import (
    fit_hallucination_predictor,
    is_correct,
    known_unknown_direction,
    label_answers,
)
from analysis.hooks import resid_post
from analysis.steering import add_direction, clamp_latents, steering_effect, suppress_latents
from models.questions import load_questions, question_set_source
from tests.test_concepts import one_hot_model, token_sae


@dataclass(frozen=True)
class Q:
    question: str
    answers: tuple[str, ...]
    match: str = "substring"


def test_answer_matching():
    assert is_correct(" The capital of France is Paris.", Q("", ("Paris",)))
    assert not is_correct(" Lyon", Q("", ("Paris",)))
    assert is_correct(" C is its symbol", Q("", ("C",), "word"))
    assert not is_correct(" Carbon", Q("", ("C",), "word"))  # a word starting with C is not C
    assert is_correct(" Na.", Q("", ("Na",), "word")) and not is_correct(
        " Nat", Q("", ("Na",), "word")
    )


def test_shipped_question_set():
    qs = load_questions()
    assert len(qs) == 189 and "common general knowledge" in question_set_source()
    assert qs[0].question == "What is the capital of France?" and qs[0].answers == ("Paris",)
    assert {q.category for q in qs} == {"capital", "element", "author", "general"}
    assert all(q.match == "word" for q in qs if q.category == "element")


def planted_questions(n: int = 120, seed: int = 0):
    """Latent 7 fires on most wrong answers and few right ones; the residual is pure noise."""
    gen = torch.Generator().manual_seed(seed)
    correct = torch.rand(n, generator=gen) < 0.6
    concepts = torch.rand(n, 64, generator=gen) * (torch.rand(n, 64, generator=gen) < 0.2)
    fires = torch.where(
        correct, torch.rand(n, generator=gen) < 0.05, torch.rand(n, generator=gen) < 0.9
    )
    concepts[:, 7] = fires * (1 + torch.rand(n, generator=gen))
    return concepts, torch.randn(n, 32, generator=gen), correct


def test_predictor_finds_the_planted_concept_and_the_noise_baseline_does_not():
    concepts, resid, correct = planted_questions()
    fit = fit_hallucination_predictor(concepts, resid, correct, layer=3)
    assert fit.n == 120 and fit.n_hallucinated == int((~correct).sum())
    assert fit.auroc["pls_concepts"] > 0.75 and fit.auroc["logreg_concepts"] > 0.75  # 0.79, 0.83
    assert fit.auroc["pls_raw"] < 0.65 and fit.auroc["logreg_raw"] < 0.65  # noise: ~0.5
    latent, coef, on_wrong, on_right = fit.top_concepts[0]
    assert latent == 7
    assert coef > 0 and on_wrong > 0.7 and on_right < 0.2
    assert len(fit.roc["pls_concepts"][0]) == len(fit.roc["pls_concepts"][1])
    with pytest.raises(OptionError, match="need at least 2 right and 2 wrong"):
        fit_hallucination_predictor(concepts[:5], resid[:5], torch.ones(5, dtype=torch.bool))


def test_known_unknown_direction_recovers_the_planted_offset():
    gen = torch.Generator().manual_seed(1)
    correct = torch.arange(100) % 3 != 0
    offset = torch.randn(16, generator=gen)
    resid = {layer: torch.randn(100, 16, generator=gen) for layer in range(3)}
    resid[1] = resid[1] + 0.5 * offset * (~correct)[:, None]
    resid[2] = resid[2] + 3.0 * offset * (~correct)[:, None]  # unknown = known + 3 offset
    casal = known_unknown_direction(resid, correct)
    cos = torch.nn.functional.cosine_similarity(casal.direction(2), offset, dim=0)
    assert float(cos) > 0.97
    assert float(casal.norms[2] / offset.norm()) == pytest.approx(3.0, rel=0.1)
    assert casal.best_layer() == 2
    assert float(casal.silhouette[2]) > float(casal.silhouette[1]) > float(casal.silhouette[0])
    assert float(casal.projection_auroc[2]) > 0.99 and float(casal.projection_auroc[0]) < 0.75


def test_suppress_and_clamp_set_latents_exactly():
    model, sae = one_hot_model(), token_sae()
    tokens = torch.tensor([[0, 3, 5, 3, 9]])
    hook = resid_post(0)
    with model.hooks(fwd_hooks=[suppress_latents(sae, [3])]):
        x = capture(model, tokens, [hook])[hook][0]
    f = sae.encode(x)
    assert float(f[:, 3].abs().max()) == 0.0  # token 3 no longer reads as token 3
    assert f[2, 5] > 0 and f[4, 9] > 0  # the other tokens are untouched
    with model.hooks(fwd_hooks=[clamp_latents(sae, [9, 5], [4.0, 0.0])]):
        x = capture(model, tokens, [hook])[hook][0]
    f = sae.encode(x)
    # where latent 9 was active it now reads exactly 4; where it was off (pre-activation -0.5,
    # clipped by the ReLU) the added 4 * d_9 reads 3.5: clamping keeps the rest of x as it was
    torch.testing.assert_close(f[1:, 9], torch.tensor([3.5, 3.5, 3.5, 4.0]))
    assert float(f[:, 5].max()) == 0.0
    with pytest.raises(OptionError, match="latent 99 is out of range"):
        suppress_latents(sae, [99])


def test_steering_along_an_unembedding_direction_raises_its_token():
    model = one_hot_model()
    target = 6
    direction = model.W_U.detach()[:, target]
    prompts = [[0, 1, 2], [0, 4, 4, 4], [0, 9, 3]]
    tokens = [torch.tensor([p]) for p in prompts]
    effect = steering_effect(model, tokens, [add_direction(resid_post(0), direction, 3.0)],
                             target_ids=[target], max_new_tokens=0, label="up")  # fmt: skip
    assert bool((effect.delta_logprob > 0.5).all()) and effect.cohens_d > 1
    assert bool((effect.kl > 0).all())
    null = steering_effect(model, tokens, [add_direction(resid_post(0), direction, 0.0)],
                           target_ids=[target], max_new_tokens=0)  # fmt: skip
    assert float(null.delta_logprob.abs().max()) < 1e-6 and float(null.kl.abs().max()) < 1e-6


def test_label_answers_on_a_tiny_text_model(tmp_path):
    from models import load_model
    from tests.hf_fixtures import save_tiny_llama

    lm = load_model(save_tiny_llama(tmp_path / "llama"))
    said = label_answers(lm, [Q("w1 w2 w3", ("zzz",))], template="{question}", max_new_tokens=4)
    assert said.correct.tolist() == [False] and said.hallucination_rate == 1.0
    answer = said.answers[0].strip()
    assert answer  # the random model says something
    right = label_answers(lm, [Q("w1 w2 w3", (answer,))], template="{question}", max_new_tokens=4)
    assert right.correct.tolist() == [True] and right.answers == said.answers
    with pytest.raises(OptionError, match="must contain"):
        label_answers(lm, [Q("x", ("y",))], template="no slot")
