"""``prunebench profile``: cost profiles of a full-size architecture without downloading its weights.

The architecture is built from a ``config.json`` shipped in the package (:data:`SHIPPED_CONFIGS`; no weights, no
network) with random weights, optionally cut to ``--layers N`` decoder layers so it fits a CPU, and every
method x budget x batch size is run through the engine to measure time to first token and its parts (vision,
selection, assembly, LLM prefill), decode time per token, prefill FLOPs (measured and analytic), KV-cache bytes
and peak memory. Timing, FLOPs and memory do not depend on the weights; the answers do, so none is computed:
every record and every line printed says :data:`COST_ONLY`.

Records go to a :class:`~prunebench.store.ResultStore` folder (``status: done``, ``tasks: {}``, ``relacc`` and
``agreement`` null), so ``prunebench report`` reads them like any run's.

What works now: LLaVA-1.5-7B (``llava-hf/llava-1.5-7b-hf``); the prompt is a short word-level one (the real
tokenizer is not shipped), so the text part of the sequence is ~10 tokens instead of the chat template's ~40.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from prunebench.adapters.base import ModelAdapter
from prunebench.conformance import synthetic_samples
from prunebench.core import PruneBenchError
from prunebench.engine import Pruner
from prunebench.models import adapter_class
from prunebench.resolve import cell_spec
from prunebench.runner.cells import key_versions
from prunebench.runner.measure import PeakMemory, flops_record, kv_record, prefill_flops, sample_latency
from prunebench.spec import NO_METHOD, parse_budget
from prunebench.store import ResultStore, cell_key

COST_ONLY = "cost only: random weights, no accuracy"
CONFIG_DIR = Path(__file__).parent / "assets" / "configs"
SHIPPED_CONFIGS = {"llava-hf/llava-1.5-7b-hf": "llava-1.5-7b-hf.json"}

__all__ = ["COST_ONLY", "SHIPPED_CONFIGS", "ProfileError", "add_parser", "build_random_model", "profile", "shipped_config"]


class ProfileError(PruneBenchError):
    """A profile request prunebench cannot build (no shipped config, a bad layer count, ...)."""


def shipped_config(model: str) -> Any:
    """The transformers config of ``model`` from the config.json shipped with prunebench."""
    if model not in SHIPPED_CONFIGS:
        raise ProfileError(f"no shipped config for {model!r}; profiles exist for: {', '.join(sorted(SHIPPED_CONFIGS))}")
    from transformers import AutoConfig

    data = json.loads((CONFIG_DIR / SHIPPED_CONFIGS[model]).read_text())
    return AutoConfig.for_model(data.pop("model_type"), **data)


def build_random_model(
    model: str, layers: int | None = None, device: str = "cpu", dtype: str = "auto", seed: int = 0, vision_layers: int | None = None
) -> ModelAdapter:
    """The adapter of ``model``'s architecture with random weights, built on ``device`` without the per-module
    initialisation (parameters are allocated empty, then filled with N(0, 0.02) in place; norms at 1, biases at 0).

    ``layers``: keep the first N decoder layers; ``vision_layers``: keep the first N ViT layers (tests and quick
    CPU checks only: the feature layer counts from the end, so the tower stays whole unless asked). ``dtype``:
    ``auto`` is float32 on CPU and bfloat16 elsewhere.
    """
    import transformers
    from transformers.initialization import no_init_weights

    from prunebench.models.tiny import llava_processor, word_tokenizer

    config = shipped_config(model)
    text = config.text_config
    if layers is not None:
        if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= text.num_hidden_layers:
            raise ProfileError(f"--layers must be a whole number in 1..{text.num_hidden_layers} for {model}, got {layers!r}")
        text.num_hidden_layers = layers
    if vision_layers is not None:
        if isinstance(vision_layers, bool) or not isinstance(vision_layers, int) or not 2 <= vision_layers <= config.vision_config.num_hidden_layers:
            raise ProfileError(f"--vision-layers must be a whole number in 2..{config.vision_config.num_hidden_layers} for {model}, got {vision_layers!r}")
        config.vision_config.num_hidden_layers = vision_layers
    tokenizer = word_tokenizer()
    config.image_token_id = tokenizer.convert_tokens_to_ids("<image>")  # the prompt's tokens come from the shipped word tokenizer
    text.bos_token_id, text.eos_token_id, text.pad_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    config._attn_implementation = "sdpa"
    torch_dtype = (torch.float32 if str(device).startswith("cpu") else torch.bfloat16) if dtype == "auto" else getattr(torch, dtype)
    family = config.model_type
    cls = getattr(transformers, adapter_class(family).model_class)
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with no_init_weights(), torch.device(device):
        net = cls(config)
    net = net.to(torch_dtype).eval()
    with torch.no_grad():
        for name, param in net.named_parameters():
            if param.dim() == 1:
                param.fill_(1.0 if name.endswith("weight") else 0.0)
            else:
                param.copy_(torch.randn(param.shape, generator=generator).mul_(0.02))
    net.generation_config.pad_token_id, net.generation_config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    side = config.vision_config.image_size
    cut = f", {layers} of {json.loads((CONFIG_DIR / SHIPPED_CONFIGS[model]).read_text())['text_config']['num_hidden_layers']} decoder layers" if layers else ""
    return adapter_class(family)(
        net, llava_processor(tokenizer, image_size=side, patch_size=config.vision_config.patch_size), name=f"{model} (random weights{cut})"
    )


def _cells(methods: Sequence[str], budgets: Sequence[int]) -> list[tuple[str, int | None]]:
    return [(NO_METHOD, None)] + [(m, b) for m in methods if m != NO_METHOD for b in budgets]


def profile(
    model: str,
    methods: Sequence[str],
    budgets: Sequence[int],
    output: str | Path,
    layers: int | None = None,
    batch_sizes: Sequence[int] = (1,),
    device: str = "cpu",
    dtype: str = "auto",
    reps: int = 3,
    warmup: int = 1,
    new_tokens: int = 4,
    seed: int = 0,
    vision_layers: int | None = None,
    echo: Any = print,
) -> list[dict[str, Any]]:
    """Profile every (method, budget) and the unpruned model at each batch size; returns the records written."""
    budgets = [parse_budget(b, allow_none=False) for b in budgets]
    if reps < 1 or new_tokens < 2:
        raise ProfileError("reps must be >= 1 and new_tokens >= 2 (decode time per token needs a second token)")
    adapter = build_random_model(model, layers, device, dtype, seed, vision_layers)
    store = ResultStore(Path(output))
    samples = synthetic_samples(max(max(batch_sizes), 3), size=adapter.model.config.vision_config.image_size, family=adapter.family)
    config_text = (CONFIG_DIR / SHIPPED_CONFIGS[model]).read_text()
    records = []
    for method, budget in _cells(methods, budgets):
        for batch_size in batch_sizes:
            spec = cell_spec(
                method,
                budget,
                model=model,
                family=adapter.family,
                batch_size=batch_size,
                dtype=str(adapter.dtype).replace("torch.", ""),
                device=device,
                vision_stop=adapter.vision_stop,
            )
            fields = {
                "profile": True,
                "model": model,
                "config_sha256": _sha256(config_text),
                "layers": layers,
                "vision_layers": vision_layers,
                "random_weights": True,
                "seed": seed,
                "reps": reps,
                "new_tokens": new_tokens,
                "versions": key_versions(),
                **spec.record(),
            }
            batch = adapter.prepare([samples[i % len(samples)] for i in range(batch_size)])
            parts: list[dict[str, float]] = []
            with PeakMemory(adapter.device) as peak, torch.inference_mode():
                with Pruner(adapter, spec.method, spec.budget, **spec.pruner_options()) as pruner:
                    for _ in range(warmup):
                        pruner.generate(batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
                    for _ in range(reps):
                        out = pruner.generate(batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
                        parts.append(sample_latency(out.stats.timings_ms))
                one = adapter.prepare(samples[:1])
                flops = flops_record(prefill_flops(adapter, spec, one))
                with Pruner(adapter, spec.method, spec.budget, **spec.pruner_options()) as pruner:
                    stats = pruner.generate(one, max_new_tokens=1).stats
            peak_mb, growth_mb, kind = peak.result()
            latency = {name: statistics.median(p[name] for p in parts if name in p) for name in dict.fromkeys(k for p in parts for k in p)}
            record = {
                **fields,
                "key": cell_key(fields),
                "status": "done",
                "label": COST_ONLY,
                "cost_only": True,
                "tasks": {},
                "relacc": None,
                "agreement": None,
                "tokens": {"per_layer": list(stats.tokens_per_layer), "text": stats.text_tokens},
                "latency_ms": latency,
                "flops": flops,
                "kv_cache": kv_record(adapter, stats),
                "peak_memory": {"peak_mb": peak_mb, "growth_mb": growth_mb, "kind": kind},
                "adapter": adapter.describe(),
            }
            store.put(record)
            records.append(record)
            echo(
                f"[{COST_ONLY}] {spec.label} batch {batch_size}: ttft {latency.get('ttft', float('nan')):.1f} ms "
                f"(vision {latency.get('vision', float('nan')):.1f}, select {latency.get('select', 0.0):.1f}, "
                f"llm prefill {latency.get('llm_prefill', latency.get('prefill', float('nan'))):.1f}), "
                f"decode {latency.get('decode_per_token', float('nan')):.1f} ms/token, {flops['measured_tflops']:.3f} TFLOPs, "
                f"KV {record['kv_cache']['measured_mb']:.1f} MB"
            )
    return records


def _sha256(text: str) -> str:
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def _ints(value: str, what: str) -> list[int]:
    try:
        out = [int(v) for v in str(value).split(",") if v.strip()]
    except ValueError:
        raise ProfileError(f"{what} must be comma-separated whole numbers, got {value!r}") from None
    if not out or any(v < 1 for v in out):
        raise ProfileError(f"{what} must be positive whole numbers, got {value!r}")
    return out


def cmd_profile(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in (args.methods or "").split(",") if m.strip()]
    profile(
        args.model,
        methods,
        _ints(args.budgets, "--budgets") if methods else [],
        args.output,
        layers=args.layers,
        batch_sizes=_ints(args.batch_sizes, "--batch-sizes"),
        device=args.device,
        dtype=args.dtype,
        reps=args.reps,
        new_tokens=args.new_tokens,
        seed=args.seed,
        vision_layers=args.vision_layers,
    )
    print(f"{COST_ONLY}; records in {args.output}")
    return 0


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "profile",
        help=f"cost profile of a full-size architecture from its shipped config ({COST_ONLY})",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default="llava-hf/llava-1.5-7b-hf", help=f"one of: {', '.join(sorted(SHIPPED_CONFIGS))}")
    p.add_argument("--methods", default="", help="comma-separated methods (the unpruned model is always profiled)")
    p.add_argument("--budgets", default="64,128,192", help="comma-separated visual-token budgets")
    p.add_argument("--layers", type=int, help="keep the first N decoder layers (for a CPU)")
    p.add_argument(
        "--vision-layers",
        "--vision_layers",
        dest="vision_layers",
        type=int,
        help="keep the first N ViT layers (quick CPU checks; the profile of the real model keeps them all)",
    )
    p.add_argument("--batch-sizes", "--batch_sizes", dest="batch_sizes", default="1", help="comma-separated batch sizes, e.g. 1,8")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--reps", type=int, default=3, help="timed generate calls per cell (median reported)")
    p.add_argument("--new-tokens", "--new_tokens", dest="new_tokens", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="results/profile", help="results folder (a prunebench results store)")
    p.set_defaults(func=cmd_profile)
