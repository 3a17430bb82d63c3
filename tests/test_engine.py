"""Engine mechanics the conformance kit does not pin: positions handed to LLM stages on M-RoPE, refusal of
per-layer renumbering there, and the run-time token contract (measured counts versus the plan)."""

import functools

import pytest
import torch

from prunebench.conformance import synthetic_samples
from prunebench.core import Plan, PruneBenchError
from prunebench.engine import Pruner, contract_problems
from prunebench.models import load_model
from prunebench.models.defaults import resolve_method
from prunebench.registry import create_method


@functools.cache
def adapter(name):
    return load_model(name)


def _spy(method):
    """Record every LayerView the method is given."""
    views = []
    select = method.select_llm

    def recording(view, keep):
        views.append(view)
        return select(view, keep)

    method.select_llm = recording
    return views


# -- positions in LLM stages ------------------------------------------------------------------------------------
def test_layer_views_on_qwen_carry_the_3d_positions_of_the_tokens_present():
    ad = adapter("tiny-qwen2_5_vl")
    method = resolve_method("sparsevlm", "tiny-qwen2_5_vl", ad.family)  # v2.0: cuts before layers 1, 2 and 3
    views = _spy(method)
    sample = synthetic_samples(family=ad.family)[0]
    with Pruner(ad, method, 32, budget_mode="final") as pruner:
        out = pruner.generate(ad.prepare([sample]), max_new_tokens=2, min_new_tokens=2)
    llm = out.llm_inputs
    assert len(views) >= 2 and llm.position_ids.shape[0] == 3
    # tokens present at the next selecting cut: all text + the visual tokens the first one kept
    kept = llm.visual_index.gather(1, out.stats.kept[f"layer{views[0].layer}"])
    present = torch.ones(llm.inputs_embeds.shape[1], dtype=torch.bool)
    present[llm.visual_index[0]] = False
    present[kept[0]] = True
    second = views[1]
    assert second.position_ids.shape == (3, 1, int(present.sum())) == (3, 1, second.hidden_states.shape[1])
    assert torch.equal(second.position_ids[:, 0], llm.position_ids[:, 0, present])
    visual = second.position_ids[:, 0, second.visual_index[0]]
    assert bool((visual[1] != visual[2]).any())  # rows h and w differ: still 3-D image positions


def test_renumbering_is_refused_on_mrope_and_still_works_on_llama():
    method = create_method("sparsevlm", version="1.5", layers=(0, 1, 2), heads=2)
    assert method.llm_position_policy == "renumber"
    with pytest.raises(PruneBenchError, match="M-RoPE.*positions='original'"):
        Pruner(adapter("tiny-qwen2_5_vl"), method, 32)
    ad = adapter("tiny-llava_next")
    views = _spy(method)
    with Pruner(ad, method, 32, budget_mode="final") as pruner:
        pruner.generate(ad.prepare(synthetic_samples(family=ad.family)[:1]), max_new_tokens=2, min_new_tokens=2)
    # after the first cut, positions are the renumbered 0..n'-1 of the tokens present
    later = views[1]
    assert torch.equal(later.position_ids[0], torch.arange(later.hidden_states.shape[1]))


# -- run-time token contract ------------------------------------------------------------------------------------
def test_contract_problems_compares_measured_counts_with_the_plan():
    plan = Plan(num_visual=100, num_layers=4, vision=None, llm={2: 30})  # layers see 100, 100, 30, 30
    assert contract_problems(plan, [100, 100, 30, 30], [110, 110, 40, 40], text_tokens=10) == []
    assert contract_problems(plan, [100, 100, 30, 30], [], text_tokens=10) == []  # no cache: KV not checked
    tokens = contract_problems(plan, [100, 100, 30, 29], [110, 110, 40, 39], text_tokens=10)
    assert len(tokens) == 2 and "[100, 100, 30, 29] != plan [100, 100, 30, 30]" in tokens[0]
    kv_only = contract_problems(plan, [100, 100, 30, 30], [110, 110, 110, 110], text_tokens=10)
    assert kv_only == ["KV lengths per layer [110, 110, 110, 110] != [110, 110, 40, 40] implied by the plan"]


def test_a_count_changed_behind_the_plan_is_flagged_in_the_stats():
    """A hook outside the method drops one visual token before layer 3: the plan still says 64."""
    ad = adapter("tiny-llava")
    sample = synthetic_samples(family=ad.family)[0]
    layer = ad.decoder_layers()[3]

    def drop_one(module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        if hidden.shape[1] == 1:  # decoding: leave it alone
            return None
        cos, sin = kwargs["position_embeddings"]
        start = int(visual_start)
        keep = torch.cat([torch.arange(start), torch.arange(start + 1, hidden.shape[1])])
        kwargs["position_embeddings"] = (cos[:, keep], sin[:, keep])
        if not args:
            kwargs["hidden_states"] = hidden[:, keep]
        return ((hidden[:, keep], *args[1:]) if args else args), kwargs

    honest = None
    with Pruner(ad, create_method("random"), 64, budget_mode="final") as pruner:
        batch = ad.prepare([sample])
        honest = pruner.generate(batch, max_new_tokens=2, min_new_tokens=2)
        visual_start = honest.llm_inputs.visual_index[0, 0]
        handle = layer.register_forward_pre_hook(drop_one, with_kwargs=True)
        try:
            lied = pruner.generate(batch, max_new_tokens=2, min_new_tokens=2)
        finally:
            handle.remove()
    assert honest.stats.contract_ok and honest.contract_ok and honest.stats.contract_detail == ""
    assert not lied.stats.contract_ok and not lied.contract_ok
    text = honest.stats.text_tokens
    assert lied.stats.kv_lengths == [text + 64, text + 64, text + 64, text + 63]
    assert "KV lengths per layer" in lied.stats.contract_detail
