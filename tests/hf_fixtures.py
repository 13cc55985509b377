"""Tiny randomly initialised Hugging Face models, built in the test (no download)."""

from __future__ import annotations

from pathlib import Path

import torch

WORDS = [f"w{i}" for i in range(60)]


def save_tiny_tokenizer(folder: Path) -> None:
    """A word-level tokenizer over ``w0 .. w59`` plus specials, saved as a fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    tok.save_pretrained(folder)


def save_tiny_llama(folder: Path, seed: int = 0) -> Path:
    """A 2-layer Llama with grouped-query attention (like SmolLM2), random weights."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64, hidden_size=48, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        bos_token_id=1, eos_token_id=2, tie_word_embeddings=True, rope_theta=10000.0,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    save_tiny_tokenizer(folder)
    return folder


def save_tiny_gpt2(folder: Path, seed: int = 0) -> Path:
    """A 2-layer GPT-2 with LayerNorm and learned positions, random weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=64, n_positions=128, n_embd=48, n_layer=2, n_head=4,
                        bos_token_id=1, eos_token_id=2)  # fmt: skip
    GPT2LMHeadModel(config).save_pretrained(folder)
    save_tiny_tokenizer(folder)
    return folder
