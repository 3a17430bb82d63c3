"""The cost model: FlopCounterMode and the analytic formula agree, pruned and unpruned, tiny and full size."""

import pytest
import torch

from prunebench.costs import (
    FlopCount,
    decoder_flops,
    kv_cache_bytes,
    llava_7b_config,
    llm_shape_of,
    meta_prefill_flops,
)
from prunebench.engine import Pruner, measure_prefill_flops
from prunebench.registry import create_method


@pytest.fixture(scope="module")
def batch1(tiny_llava, samples):
    return tiny_llava.prepare(samples[:1])


def test_cpu_sdpa_is_counted():
    from torch.utils.flop_counter import FlopCounterMode

    q = torch.randn(1, 2, 8, 4)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert counter.get_total_flops() == 2 * (2 * 1 * 2 * 8 * 8 * 4)


@pytest.mark.parametrize("num_visual,expected_tf", [(576, 8.450), (64, 1.614)])
def test_llava_7b_on_meta_matches_analytic(num_visual, expected_tf):
    config = llava_7b_config()
    n = num_visual + 60
    measured = meta_prefill_flops(config, n)
    analytic = decoder_flops(llm_shape_of(config), [n] * 32)
    assert measured == analytic
    assert measured / 1e12 == pytest.approx(expected_tf, abs=0.001)


@pytest.mark.parametrize("method,budget,mode", [("none", None, "average"), ("random", 64, "average"), ("fastv", 64, "final"), ("visionzip", 64, "average")])
def test_measured_matches_analytic_on_tiny_llava(tiny_llava, batch1, method, budget, mode):
    m = create_method("random" if method == "none" else method)
    count: FlopCount = measure_prefill_flops(tiny_llava, m, budget, batch1, budget_mode=mode)
    assert count.llm_rel_diff < 1e-3, count
    assert count.measured_vision > 0 and count.measured_llm > 0
    if method == "fastv":
        assert count.tokens_per_layer == [576, 576, 64, 64]
    elif method != "none":
        assert count.tokens_per_layer == [64] * 4
    if method in ("none", "random"):  # projector sees exactly the planned tokens: vision matches exactly too
        assert count.measured_vision == count.analytic_vision


@pytest.mark.parametrize("method,layer_kw", [("learnpruner", {"layer": 2}), ("sparsevlm", {"layers": [0, 1, 2], "heads": 2})])
def test_in_llm_selection_flops_are_counted_apart_from_the_decoder(tiny_llava, batch1, method, layer_kw):
    # the scores these methods compute inside the LLM's forward are real cost (kept in measured_llm and the
    # total) but no part of the decoder formula; taken out, the decoder matches the formula exactly
    count = measure_prefill_flops(tiny_llava, create_method(method, **layer_kw), 64, batch1, budget_mode="final")
    assert count.measured_select_llm > 0
    assert count.measured_decoder == count.analytic_llm, count
    assert count.measured_llm > count.analytic_llm
    assert count.as_record()["select_llm_tflops"] == count.measured_select_llm / 1e12


def test_pruning_lowers_flops_and_kv(tiny_llava, batch1):
    full = measure_prefill_flops(tiny_llava, create_method("random"), None, batch1)
    pruned = measure_prefill_flops(tiny_llava, create_method("fastv"), 64, batch1, budget_mode="final")
    assert pruned.analytic_llm < 0.55 * full.analytic_llm  # layers 2..3 of 4 at 76 instead of 588 tokens
    with Pruner(tiny_llava, create_method("fastv"), 64, budget_mode="final") as pruner:
        out = pruner.generate(batch1, max_new_tokens=3)
    shape = tiny_llava.llm_shape
    text = out.stats.text_tokens
    analytic = kv_cache_bytes(shape, [text + v for v in out.stats.tokens_per_layer], 4)
    assert out.stats.kv_bytes == analytic
    assert out.stats.kv_lengths == [text + v for v in out.stats.tokens_per_layer]


def test_families_without_a_vision_formula_report_no_analytic_vision(samples):
    from prunebench.models import load_model

    next_model = load_model("tiny-llava_next")
    count = measure_prefill_flops(next_model, create_method("random"), 64, next_model.prepare(samples[:1]))
    record = count.as_record()
    assert count.analytic_vision is None and record["analytic_tflops"] is None and record["vision_tflops"] is None
    assert record["vision_measured_tflops"] > 0 and count.llm_rel_diff < 1e-3  # the LLM side is still checked
