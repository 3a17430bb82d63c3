"""Harness performance on the shipped small model on CPU (collected only with ``--benchmark-only``).

    pytest tests/benchmarks/test_bench_harness.py --benchmark-only -s     (figures below: 2 CPU threads)

Model: ``toy-llava`` when its checkpoint is present, otherwise the same architecture (``prunebench.toy.model.ToyArch``)
with random weights; timing does not depend on the weights. Every comparison is a ratio of medians of
interleaved measurements taken in the same process, so machine load shifts both sides alike.

1. a pre-LLM method (random) at 64 tokens reaches >= 80 % of its ideal prefill speedup (unpruned prefill FLOPs /
   pruned prefill FLOPs), prefill meaning time to first token, vision encoder included (see the test);
   the same measurement on a LLaVA-1.5-7B-width slice (one full-width decoder layer, two CLIP-L layers,
   random weights) shows it where compute, not per-op dispatch, dominates;
2. an in-LLM method's attention scores (FastV at layer K, scores from captured q/k) add <= 5 % to the prefill of
   the same cut made without scores;
3. what the harness adds per sample besides model compute (engine hooks and bookkeeping versus stock
   ``generate``; the lmms-eval wrapper around it) stays under 5 % of the unpruned prefill.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import pytest
import torch

from prunebench.core import PruneBenchError, Selection, SingleCutLLMPruner
from prunebench.engine import Pruner
from prunebench.registry import create_method
from prunebench.resolve import NoPruning

REPS = 15


@pytest.fixture(scope="module")
def small():
    from prunebench.models import load_model

    try:
        return load_model("toy-llava")
    except PruneBenchError:
        from prunebench.adapters.llava import LlavaAdapter
        from prunebench.toy.model import build_model, build_processor, build_tokenizer

        tokenizer = build_tokenizer()
        adapter = LlavaAdapter(build_model(tokenizer).eval(), build_processor(tokenizer), name="toy-arch (random weights)")
        return adapter


@pytest.fixture(scope="module")
def batch(small):
    from prunebench.adapters.base import Sample
    from prunebench.toy.world import render, test_split

    doc = test_split()[0]
    image = render(doc)
    return small.prepare([Sample(id="bench-0", question=doc["question"], image=image)])


@dataclass
class FirstK(SingleCutLLMPruner):
    """The same cut as FastV with no scores: keeps the first ``keep`` visual tokens, captures nothing."""

    layer: int = 2
    name = "first_k"

    def llm_signal_layers(self, plan):
        return ()

    def select_llm(self, view, keep):
        return Selection(torch.arange(keep, device=view.hidden_states.device).expand(view.batch_size, -1))


def _run(adapter, method, budget, batch, mode="final", new_tokens=1):
    with Pruner(adapter, method, budget, budget_mode=mode) as pruner:
        return pruner.generate(batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens)


def _interleaved(fns: dict, reps: int = REPS, warmup: int = 2) -> dict[str, list[float]]:
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            times[name].append(fn())
    return times


def _med(values):
    return statistics.median(values)


def test_pre_llm_prefill_speedup(benchmark, small, batch):
    """random@64 vs unpruned: time-to-first-token speedup through the engine >= 80 % of the FLOP-ideal speedup.

    "Prefill" is the issue's prefill latency, the time to first token: vision tower, selection, input assembly and
    LLM prefill (``latency_ms.ttft`` of a record). Its ideal speedup is therefore the ratio of the FLOPs of that
    whole window, counted with ``FlopCounterMode`` (vision + selection + LLM + lm_head at one position) -- not the
    LLM-only ratio: a pre-LLM method leaves the vision tower's cost untouched, so an LLM-only "ideal" would be a
    speedup no implementation can approach and would measure the model's vision share, not the harness. The
    LLM-only figures (engine ``prefill_ms`` against LLM FLOPs) are recorded in ``extra_info`` next to it.

    The stock reference runs the same two LLM inputs (all tokens / 64 visual tokens) through the unhooked
    ``model.generate(inputs_embeds=..., max_new_tokens=1)`` (the window the engine's ``prefill_ms`` times), so
    ``engine / stock`` isolates what the harness costs inside the LLM.

    Measured on toy-llava, 2 CPU threads (2026-12-02): 1.9-2.1x of a 3.53x ideal (53-58 %), with the engine at
    96-100 % of stock generate's own speedup. The pruned TTFT is the vision tower (8.4 ms, untouched by pruning)
    plus a 76-token LLM prefill whose bare forward already takes 5.5-9 ms of per-op dispatch, which bounds the ratio
    near 2.5x (~71 %) on this model on CPU. Nor does compilation lift it: a ``torch.compile``'d decoder (measured
    as an experiment, not used by the engine) runs the 76-token forward in 2.2 ms instead of 4.4 ms but the
    588-token one in 19.6 instead of 18.5 ms, which with the untouched ~9 ms of vision, selection and assembly
    still gives ~2.5x (~70 %). Half of the vision tower's time is CPU flash attention at head_dim 16, which no
    pruning before the LLM can shorten. The 80 % target is asserted as the issue states it. On a larger model
    the fixed per-call cost is a smaller share: the 7B-width benchmark below reaches 71-85 % on the same CPU.
    Later runs the same day: 2.10-2.12x of 3.53x (59-60 %); the engine keeps 98-101 % of stock generate's LLM
    speedup.
    """
    figures, report = _pre_llm_speedup(small, batch)
    benchmark.extra_info.update(figures)
    print(f"\n[pre-LLM] {report}")
    benchmark.pedantic(lambda: _run(small, create_method("random"), 64, batch), rounds=5, iterations=1)
    assert figures["efficiency"] >= 0.8, f"below 80 % of the FLOP-ideal time-to-first-token speedup: {report}"
    assert figures["harness_share_of_stock"] >= 0.9, f"the engine loses more than 10 % of the model's own LLM speedup: {report}"


def test_pre_llm_prefill_speedup_at_llava_7b_width(benchmark):
    """The same measurement on one LLaVA-1.5-7B decoder layer at full width (Vicuna-7B: 4096 hidden, 11008 MLP,
    32 heads) behind two CLIP ViT-L/14-336 layers, random weights (timing does not depend on them): a model whose
    every op is compute, not dispatch, so it shows what the harness does where the toy model cannot.

    Asserted: the engine keeps >= 90 % of the LLM speedup that stock ``generate`` gets on the same inputs. The
    FLOP efficiency is recorded, not asserted: it lands around the issue's 80 %, limited by the CPU's GEMM rate,
    which is lower for the pruned prefill's 76 rows than for the unpruned 588 (``llm_gflops_*`` in
    ``extra_info``) -- a property of the hardware that no harness can change.
    Measured 2026-12-02, 2 CPU threads, four runs: TTFT 3.2-3.9x of a 4.55x FLOP ideal (71-85 %); LLM prefill
    4.5-5.6x of 7.90x at 78-95 GFLOP/s (76 tokens) against 109-148 GFLOP/s (588 tokens); the engine keeps
    95-100 % of stock generate's speedup. (toy-llava in the same session: 59-60 %.)
    """
    adapter, batch = _llava_7b_width()
    figures, report = _pre_llm_speedup(adapter, batch, reps=5)
    benchmark.extra_info.update(figures)
    print(f"\n[pre-LLM, 7B width] {report}")
    benchmark.pedantic(lambda: _run(adapter, create_method("random"), 64, batch), rounds=2, iterations=1)
    assert figures["harness_share_of_stock"] >= 0.9, f"the engine loses more than 10 % of the model's own LLM speedup: {report}"


def _llava_7b_width(decoder_layers: int = 1, vision_layers: int = 2):
    """(adapter, batch) of a LLaVA-1.5-7B-width model cut to a few layers, random weights, fp32 on CPU."""
    import numpy as np
    from PIL import Image
    from transformers import LlavaForConditionalGeneration

    from prunebench.adapters.base import Sample
    from prunebench.adapters.llava import LlavaAdapter
    from prunebench.costs import llava_7b_config
    from prunebench.models.tiny import llava_processor, word_tokenizer

    tokenizer = word_tokenizer()
    config = llava_7b_config()
    config.vision_config.num_hidden_layers = vision_layers
    text = config.text_config
    text.num_hidden_layers, text.vocab_size = decoder_layers, len(tokenizer)
    text.bos_token_id, text.eos_token_id, text.pad_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id
    config.image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.pad_token_id, model.generation_config.eos_token_id = tokenizer.pad_token_id, tokenizer.eos_token_id
    adapter = LlavaAdapter(model, llava_processor(tokenizer), name=f"llava-7b-width ({decoder_layers} decoder, {vision_layers} ViT layers)")
    image = Image.fromarray((np.random.default_rng(0).random((336, 336, 3)) * 255).astype("uint8"))
    return adapter, adapter.prepare([Sample(id="bench-7b", question="what is the color of the circle ?", image=image)])


def _pre_llm_speedup(adapter, batch, reps: int = REPS) -> tuple[dict, str]:
    """random@64 against unpruned through the engine and through stock ``generate``: figures and a report line."""
    from prunebench.engine import measure_prefill_flops
    from prunebench.runner.measure import sample_latency

    random = create_method("random")
    full_in = _run(adapter, NoPruning(), None, batch).llm_inputs
    pruned_in = _run(adapter, random, 64, batch).llm_inputs
    model = adapter.model

    def stock(inputs):  # the same window as the engine's prefill_ms: generate() up to the first token
        def fn():
            start = time.perf_counter()
            with torch.inference_mode():
                model.generate(
                    inputs_embeds=inputs.inputs_embeds,
                    attention_mask=inputs.attention_mask,
                    position_ids=inputs.position_ids,
                    max_new_tokens=1,
                    do_sample=False,
                )
            return (time.perf_counter() - start) * 1e3

        return fn

    parts: dict[str, list[dict]] = {"none": [], "random64": []}

    def engine(name, m, b):
        def fn():
            part = sample_latency(_run(adapter, m, b, batch).stats.timings_ms)
            parts[name].append(part)
            return part["ttft"]

        return fn

    times = _interleaved(
        {
            "none": engine("none", NoPruning(), None),
            "random64": engine("random64", random, 64),
            "stock_none": stock(full_in),
            "stock_random64": stock(pruned_in),
        },
        reps=reps,
    )
    full_flops = measure_prefill_flops(adapter, NoPruning(), None, batch)
    pruned_flops = measure_prefill_flops(adapter, random, 64, batch)
    ideal = full_flops.measured_total / pruned_flops.measured_total
    measured = _med(times["none"]) / _med(times["random64"])
    llm_ideal = full_flops.measured_llm / pruned_flops.measured_llm
    llm_prefill = {k: _med([p["prefill"] for p in v[-reps:]]) for k, v in parts.items()}
    llm_measured = llm_prefill["none"] / llm_prefill["random64"]
    stock_speedup = _med(times["stock_none"]) / _med(times["stock_random64"])
    figures = dict(
        model=adapter.name,
        ideal_speedup=ideal,
        measured_speedup=measured,
        efficiency=measured / ideal,
        ttft_ms_none=_med(times["none"]),
        ttft_ms_random64=_med(times["random64"]),
        llm_ideal_speedup=llm_ideal,
        llm_measured_speedup=llm_measured,
        llm_efficiency=llm_measured / llm_ideal,
        stock_llm_speedup=stock_speedup,
        harness_share_of_stock=llm_measured / stock_speedup,
        llm_gflops_none=full_flops.measured_llm / llm_prefill["none"] / 1e6,
        llm_gflops_random64=pruned_flops.measured_llm / llm_prefill["random64"] / 1e6,
        vision_ms_none=_med([p["vision"] for p in parts["none"][-reps:]]),
        vision_flop_share_none=full_flops.measured_vision / full_flops.measured_total,
    )
    report = (
        f"{adapter.name}: TTFT none {figures['ttft_ms_none']:.2f} ms, random@64 {figures['ttft_ms_random64']:.2f} ms -> {measured:.2f}x; "
        f"FLOP ideal {ideal:.2f}x ({measured / ideal:.1%} of it). LLM prefill only: {llm_measured:.2f}x of {llm_ideal:.2f}x "
        f"({llm_measured / llm_ideal:.1%}; {figures['llm_gflops_none']:.0f} vs {figures['llm_gflops_random64']:.0f} GFLOP/s); "
        f"stock generate on the same inputs {stock_speedup:.2f}x (engine keeps {llm_measured / stock_speedup:.1%} of it)"
    )
    return figures, report


def test_in_llm_scores_overhead(benchmark, small, batch):
    layer = min(2, small.llm_shape.num_layers - 1)
    fastv = create_method("fastv", layer=layer)
    first_k = FirstK(layer=layer)
    prefill = lambda m: lambda: _run(small, m, 64, batch).stats.timings_ms["prefill_ms"]  # noqa: E731
    times = _interleaved({"fastv": prefill(fastv), "first_k": prefill(first_k)})
    select = _med([_run(small, fastv, 64, batch).stats.timings_ms["select_ms"] for _ in range(5)])
    overhead = _med(times["fastv"]) / _med(times["first_k"]) - 1
    benchmark.extra_info.update(
        model=small.name, prefill_ms_fastv=_med(times["fastv"]), prefill_ms_first_k=_med(times["first_k"]), overhead=overhead, fastv_select_ms=select
    )
    print(
        f"\n[in-LLM] {small.name}: prefill FastV(K={layer})@64 {_med(times['fastv']):.2f} ms vs same cut without scores "
        f"{_med(times['first_k']):.2f} ms: +{overhead:.1%} (FastV select {select:.2f} ms)"
    )
    benchmark.pedantic(lambda: _run(small, fastv, 64, batch), rounds=5, iterations=1)
    assert overhead <= 0.05, f"FastV's scores add {overhead:.1%} to the prefill"


def test_harness_overhead_per_sample(benchmark, small, batch):
    new_tokens = 4
    model = small.model

    def stock():
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(**batch.inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)
        return (time.perf_counter() - start) * 1e3

    def engine():
        # hooks are attached once per cell in a sweep (PruneBenchLMM.generate_until), so only generate is per sample
        with Pruner(small, NoPruning(), None) as pruner:
            start = time.perf_counter()
            pruner.generate(batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
            return (time.perf_counter() - start) * 1e3

    times = _interleaved({"stock": stock, "engine": engine}, reps=2 * REPS)
    prefill = _med([_run(small, NoPruning(), None, batch).stats.timings_ms["prefill_ms"] for _ in range(5)])
    engine_ms = _med(times["engine"]) - _med(times["stock"])
    wrapper_ms = _wrapper_overhead_ms(small)
    share = (max(engine_ms, 0.0) + wrapper_ms) / prefill
    benchmark.extra_info.update(
        model=small.name,
        stock_ms=_med(times["stock"]),
        engine_ms=_med(times["engine"]),
        engine_overhead_ms=engine_ms,
        wrapper_overhead_ms=wrapper_ms,
        unpruned_prefill_ms=prefill,
        share=share,
    )
    print(
        f"\n[harness] {small.name}: stock generate {_med(times['stock']):.2f} ms, through the engine {_med(times['engine']):.2f} ms "
        f"(+{engine_ms:.2f} ms), lmms-eval wrapper +{wrapper_ms:.3f} ms/sample; unpruned prefill {prefill:.2f} ms -> {share:.1%}"
    )
    benchmark.pedantic(engine, rounds=5, iterations=1)
    assert share < 0.05, f"the harness adds {share:.1%} of the unpruned prefill per sample"


def _wrapper_overhead_ms(adapter) -> float:
    """Per-sample time of PruneBenchLMM.generate_until outside data loading, preprocessing and Pruner.generate."""
    pytest.importorskip("lmms_eval.evaluator")
    from lmms_eval.evaluator import simple_evaluate

    from prunebench.lmms import PruneBenchLMM
    from prunebench.runner.evaluate import cached_task_manager
    from prunebench.suites.shapes import TASK_DIR

    lm = PruneBenchLMM.from_adapter(adapter, batch_size=1)
    simple_evaluate(
        model=lm,
        model_args=lm.model_args,
        tasks=["shapes_count"],
        task_manager=cached_task_manager((str(TASK_DIR),)),
        limit=8,
        batch_size=1,
        bootstrap_iters=0,
        verbosity="WARNING",
    )
    t = lm.timing
    return (t["wall_s"] - t["visual_s"] - t["prepare_s"] - t["generate_s"]) / t["requests"] * 1e3


def test_default_sweep_time(benchmark, tmp_path):
    """`prunebench run` with its defaults (toy-llava, shapes test split, 3 methods x 3 budgets) in under 10 minutes."""
    from prunebench.toy import TOY_MODEL_DIR

    if not (TOY_MODEL_DIR / "config.json").exists():
        pytest.skip(f"the toy checkpoint is not at {TOY_MODEL_DIR} yet (`prunebench toy train`)")
    from prunebench.runner import run_sweep

    start = time.perf_counter()
    result = benchmark.pedantic(lambda: run_sweep(output=str(tmp_path / "default")), rounds=1, iterations=1)
    wall = time.perf_counter() - start
    benchmark.extra_info.update(wall_s=wall, cells=len(result.cells), computed=len(result.computed))
    print(f"\n[sweep] default sweep: {len(result.cells)} cells in {wall:.0f} s")
    assert wall < 600
