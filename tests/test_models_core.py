"""Model specs, task codecs and our checkpoint format, including every kind of bad file."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from transformer_lens import HookedTransformer, HookedTransformerConfig

from models import CheckpointError, InputError, ModelSpec, TaskCodec, UnknownModelError
from models.cache import atomic_folder
from models.checkpoints import load_checkpoint, save_checkpoint


@pytest.mark.parametrize(
    ("text", "kind", "name"),
    [
        ("task:sort", "task", "sort"),
        ("rasp:reverse", "rasp", "reverse"),
        ("program:sort", "program", "sort"),
        ("smollm2-135m", "builtin", "smollm2-135m"),
        ("SmolLM2-135M", "builtin", "smollm2-135m"),
        ("HuggingFaceTB/SmolLM2-135M", "hub", "HuggingFaceTB/SmolLM2-135M"),
        ("hf:gpt2", "hub", "gpt2"),
    ],
)
def test_spec_parses(text, kind, name):
    spec = ModelSpec.parse(text)
    assert (spec.kind, spec.name, spec.text) == (kind, name, text)


def test_spec_recognises_folders_and_gguf(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    assert ModelSpec.parse(str(tmp_path)).kind == "folder"
    assert ModelSpec.parse(str(gguf)).kind == "gguf"


@pytest.mark.parametrize("text", ["", "gpt9", "task:", "./no/such/folder", "x.gguf"])
def test_spec_rejects_with_valid_forms(text):
    with pytest.raises(UnknownModelError, match="valid: task:<task>"):
        ModelSpec.parse(text)


CODEC = TaskCodec(vocab=("BOS", 0, 1, 2), max_len=4, output_vocab=(0, 1, 2))


def test_codec_round_trip():
    assert CODEC.encode([2, 0, 1]) == [0, 3, 1, 2]
    assert CODEC.to_tokens([[2, 0], [1, 1]]).tolist() == [[0, 3, 1], [0, 2, 2]]
    assert CODEC.to_str_tokens([2, 0]) == ["BOS", "2", "0"]
    assert CODEC.parse_value(" 2 ") == 2


@pytest.mark.parametrize(
    ("seq", "message"),
    [([], "empty input"), ([0, 1, 2, 0, 1], "at most 4"), ([0, 7], "token 7 at position 1"),
     (["BOS"], "'BOS' at position 0")],
)  # fmt: skip
def test_codec_rejects_bad_input(seq, message):
    with pytest.raises(InputError, match=message):
        CODEC.encode(seq)


def tiny_model() -> HookedTransformer:
    cfg = HookedTransformerConfig(
        n_layers=1, d_model=16, n_ctx=5, d_head=4, n_heads=4, d_mlp=32, d_vocab=4,
        d_vocab_out=3, act_fn="relu", normalization_type="LN", attention_dir="bidirectional",
        seed=0, device="cpu",
    )  # fmt: skip
    return HookedTransformer(cfg, move_to_device=False)


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return save_checkpoint(tmp_path / "ckpt", tiny_model(), {"task": "demo"})


def test_checkpoint_round_trip(checkpoint):
    original = tiny_model()
    model, meta = load_checkpoint(checkpoint)
    tokens = torch.tensor([[0, 1, 2, 3, 1]])
    assert torch.equal(model(tokens), original(tokens))
    assert meta["task"] == "demo" and meta["schema_version"] == 1


def test_truncated_weights_name_the_file(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors"):
        load_checkpoint(checkpoint)


def test_corrupt_config_names_the_file(checkpoint):
    (checkpoint / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json is not valid JSON"):
        load_checkpoint(checkpoint)


def test_wrong_schema_version_names_the_field(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["schema_version"] = 99
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="'schema_version' is 99"):
        load_checkpoint(checkpoint)


def test_config_that_does_not_match_weights_names_tensor(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["tl_config"]["d_mlp"] = 64
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'blocks\.0\.mlp\.W_in' has shape \(16, 32\)"):
        load_checkpoint(checkpoint)


def test_missing_tensor_is_named(checkpoint):
    state = tiny_model().state_dict()
    state.pop("unembed.W_U")
    save_file({k: v.contiguous() for k, v in state.items()}, str(checkpoint / "model.safetensors"))
    with pytest.raises(CheckpointError, match=r"unembed\.W_U"):
        load_checkpoint(checkpoint)


class Exploit:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickle_with_code_is_refused(checkpoint, capsys):
    weights = checkpoint / "model.pt"
    weights.write_bytes(pickle.dumps({"w": Exploit()}))
    (checkpoint / "model.safetensors").unlink()
    from models.checkpoints import read_weights

    with pytest.raises(CheckpointError, match="refusing to unpickle"):
        read_weights(weights)
    assert "must never run" not in capsys.readouterr().out


def test_atomic_folder_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError), atomic_folder(target) as tmp:
        (tmp / "half.json").write_text("{")
        raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_loaded_model_labels_an_id_tensor_like_transformer_lens():
    import torch

    from models import load_model
    from models.errors import InputError

    lm = load_model("task:sort")
    ids = lm.to_tokens([3, 1, 2])
    assert lm.to_str_tokens(ids) == lm.to_str_tokens([3, 1, 2]) == ["BOS", "3", "1", "2"]
    assert lm.to_str_tokens(ids[0]) == ["BOS", "3", "1", "2"]
    with pytest.raises(InputError, match=r"shape \[pos\] or \[1, pos\], got \(2, 4\)"):
        lm.to_str_tokens(ids.repeat(2, 1))
    with pytest.raises(InputError, match=r"token ids must lie in 0\.\.8"):
        lm.to_str_tokens(torch.tensor([0, 99]))
