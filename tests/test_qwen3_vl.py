"""Qwen3-VL (issue 16): the stock-equal keep-all run, kept M-RoPE positions, DeepStack features pruned with the
kept indices, the refusals (LLM cuts between DeepStack injections, video), and the Qwen3 (GQA) cost model. The
conformance kit (tests/test_conformance.py) covers the seven properties for every method on the tiny model."""

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from prunebench.adapters.base import Sample
from prunebench.core import PruneBenchError, UnsupportedModel
from prunebench.costs import decoder_flops, llm_shape_of, meta_prefill_flops
from prunebench.engine import Pruner, measure_prefill_flops
from prunebench.models import adapter_class, catalog_entry, load_model
from prunebench.models.catalog import visual_tokens_text
from prunebench.registry import create_method

NAME = "tiny-qwen3_vl"


@functools.cache
def adapter():
    return load_model(NAME)


def _image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _samples():
    return [Sample("a", "what is this ?", image=_image(256, 256, 1)), Sample("b", "what color is the big shape", image=_image(256, 256, 2))]


def _stock_llm_logits(ad, llm, mask, rows):
    """Last-position logits of the stock text model given DeepStack rows at ``mask`` (no cache)."""
    hidden = ad.model.model.language_model(
        inputs_embeds=llm.inputs_embeds,
        attention_mask=llm.attention_mask,
        position_ids=llm.position_ids,
        visual_pos_masks=mask,
        deepstack_visual_embeds=rows,
        use_cache=False,
    ).last_hidden_state
    return ad.model.lm_head(hidden[:, -1])


def _generate(ad, method, budget, samples, new=3):
    with Pruner(ad, method, budget, budget_mode="final") as pruner:
        out = pruner.generate(ad.prepare(samples), max_new_tokens=new, min_new_tokens=new, output_logits=True)
    return out


def test_the_family_is_registered():
    ad = adapter()
    assert ad.family == "qwen3_vl" and adapter_class("qwen3_vl") is type(ad)
    assert ad.deepstack_layers == 2 and ad.llm_shape.num_kv_heads < ad.llm_shape.num_heads
    assert ad.model.config.text_config.rope_parameters["mrope_interleaved"]


def test_keep_all_equals_stock_generate_and_needs_deepstack(monkeypatch):
    ad = adapter()
    samples = _samples()
    stock = ad.model.generate(
        **ad.prepare(samples).inputs, max_new_tokens=4, min_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True
    )
    kept_all = _generate(ad, create_method("random"), None, samples, new=4)
    assert torch.allclose(torch.stack(kept_all.logits), torch.stack(stock.logits), atol=1e-5)
    # the same run with the DeepStack features zeroed: the injection is what makes it equal
    encode = ad.encode

    def zeroed(batch, capture_layers=()):
        view = encode(batch, capture_layers)
        batch.meta["deepstack"] = [torch.zeros_like(level) for level in batch.meta["deepstack"]]
        return view

    monkeypatch.setattr(ad, "encode", zeroed)
    without = _generate(ad, create_method("random"), None, samples, new=4)
    assert (torch.stack(without.logits) - torch.stack(stock.logits)).abs().max() > 1e-3


@pytest.mark.parametrize("method", ["random", "visionzip", "fastv"])
def test_deepstack_rows_are_the_stock_features_of_the_kept_tokens(method):
    """Reference built from the stock pieces: the tower's own DeepStack features (``get_image_features``) indexed by
    the kept tokens, added by the stock text model at the kept tokens' positions of the pruned prompt."""
    ad = adapter()
    samples = _samples()
    out = _generate(ad, create_method(method), 24, samples, new=1)
    llm = out.llm_inputs
    batch = ad.prepare(samples)
    with torch.inference_mode():
        stock = ad.model.model.get_image_features(batch.inputs["pixel_values"], batch.inputs["image_grid_thw"])
        levels = [torch.stack(level) for level in stock.deepstack_features]  # (B, N, D) each
        rows = ad._deepstack_prompts[-1][2]
        if method == "fastv":  # LLM stage: every token enters the LLM, so the rows are all of them
            kept = torch.arange(levels[0].shape[1]).expand(len(samples), -1)
        else:
            kept = out.stats.kept["vision"]
        merged = rows[0].shape[1] - kept.shape[1]  # VisionZip's contextual tokens come after the kept ones
        for level, row in zip(levels, rows):
            expected = level.gather(1, kept[..., None].expand(-1, -1, level.shape[-1]))
            assert torch.allclose(row[:, : kept.shape[1]], expected, atol=1e-6)
            assert not row[:, kept.shape[1] :].any() and (merged > 0) == (method == "visionzip")
        # and the pruned prefill is the stock text model given those rows at those positions
        mask = torch.zeros(llm.attention_mask.shape, dtype=torch.bool).scatter_(1, llm.visual_index, True)
        if method != "fastv":
            reference = _stock_llm_logits(ad, llm, mask, [r.reshape(-1, r.shape[-1]) for r in rows])
            assert torch.allclose(out.logits[0], reference, atol=1e-5)


def test_a_wrong_gather_would_be_caught():
    """The reference of the test above is sensitive to the rows: shuffled kept rows change the logits."""
    ad = adapter()
    out = _generate(ad, create_method("random"), 24, _samples(), new=1)
    llm, rows = out.llm_inputs, ad._deepstack_prompts[-1][2]
    mask = torch.zeros(llm.attention_mask.shape, dtype=torch.bool).scatter_(1, llm.visual_index, True)
    with torch.inference_mode():
        shuffled = [r.flip(1).reshape(-1, r.shape[-1]) for r in rows]
        wrong = _stock_llm_logits(ad, llm, mask, shuffled)
    assert (wrong - out.logits[0]).abs().max() > 1e-4


def test_kept_tokens_keep_their_unpruned_mrope_positions():
    ad = adapter()
    sample = Sample("a", "what is it ?", image=_image(320, 224))
    batch = ad.prepare([sample])
    full = ad.rope_positions(batch)
    out = _generate(ad, create_method("random"), 20, [sample])
    llm, kept = out.llm_inputs, out.stats.kept["vision"]
    start = int((batch.input_ids[0] == ad.image_token_id).nonzero()[0])
    assert llm.position_ids.shape[0] == 3
    assert torch.equal(llm.position_ids[:, 0, llm.visual_index[0]], full[:, 0, start + kept[0]])
    assert torch.equal(llm.position_ids[:, 0, -1], full[:, 0, -1])  # text after the image: unchanged
    assert len(set(full[1, 0, start : start + 70].tolist())) == 224 // 32 and len(set(full[2, 0, start : start + 70].tolist())) == 320 // 32


@pytest.mark.parametrize("layer", [1, 2])
def test_an_llm_cut_between_deepstack_injections_adds_the_later_levels_at_the_kept_tokens(layer):
    """FastV cutting at layer 1 (between the injections after layers 0 and 1) or 2 (after both), against a
    reference written out layer by layer from the stock modules: cut the rows, then add each later DeepStack
    level (the stock tower's features) at the kept visual tokens only."""
    ad = adapter()
    sample = [Sample("a", "what is this ?", image=_image(320, 224, 3))]
    out = _generate(ad, create_method("fastv", layer=layer), 24, sample, new=1)
    llm, kept = out.llm_inputs, out.stats.kept[f"layer{layer}"][0]
    lm = ad.model.model.language_model
    batch = ad.prepare(sample)
    with torch.inference_mode():
        stock = ad.model.model.get_image_features(batch.inputs["pixel_values"], batch.inputs["image_grid_thw"])
        levels = [level[0][None] for level in stock.deepstack_features]  # (1, N, D)
        hidden = llm.inputs_embeds
        cos, sin = lm.rotary_emb(hidden, llm.position_ids)
        visual = llm.visual_index[0]
        rows, candidates = visual, torch.arange(visual.shape[0])
        for index, decoder_layer in enumerate(lm.layers):
            if index == layer:
                dropped = torch.ones(hidden.shape[1], dtype=torch.bool)
                dropped[visual] = False
                dropped[visual[kept]] = True
                keep_rows = dropped.nonzero()[:, 0]
                hidden, cos, sin = hidden[:, keep_rows], cos[:, keep_rows], sin[:, keep_rows]
                rows, candidates = torch.searchsorted(keep_rows, visual[kept]), kept
            hidden = decoder_layer(hidden, position_embeddings=(cos, sin), attention_mask=None)
            if index < len(levels):
                hidden = hidden.clone()
                hidden[:, rows] = hidden[:, rows] + levels[index][:, candidates]
        reference = ad.model.lm_head(lm.norm(hidden)[:, -1])
    assert out.stats.tokens_per_layer[layer:] == [24] * (4 - layer)
    assert torch.allclose(out.logits[0], reference, atol=1e-5), (out.logits[0] - reference).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cut_rows_are_matched_exactly_and_new_hidden_states_are_refused(dtype):
    """How the adapter follows a cut: each row after it is a bitwise copy of one row before it. A row with new
    hidden states (a recycled or merged token) cannot be followed and is refused, never guessed."""
    from prunebench.adapters.qwen3_vl import _match_rows

    before = torch.randn(2, 30, 16, generator=torch.Generator().manual_seed(0)).to(dtype)
    keep = torch.stack([torch.tensor([0, 3, 4, 9, 29]), torch.tensor([1, 2, 5, 6, 7])])
    after = before.gather(1, keep[..., None].expand(-1, -1, 16))
    assert torch.equal(_match_rows(before, after), keep)
    recycled = after.clone()
    recycled[1, 2] = (recycled[1, 2] + recycled[1, 3]) / 2
    with pytest.raises(UnsupportedModel, match="DeepStack"):
        _match_rows(before, recycled)


def test_video_is_refused_with_one_line():
    with pytest.raises(PruneBenchError, match="video"):
        adapter().prepare([Sample("v", "what ?", video=[_image(256, 256, i) for i in range(4)])])


def test_measured_flops_match_the_gqa_formula_on_the_tiny_model():
    ad = adapter()
    batch = ad.prepare([Sample("i", "what is this ?", image=_image(320, 224))])
    for method, budget, mode in [("random", None, "average"), ("random", 32, "average"), ("fastv", 32, "final")]:
        count = measure_prefill_flops(ad, create_method(method), budget, batch, budget_mode=mode)
        assert count.llm_rel_diff < 1e-3, (method, count)


def qwen3_vl_8b_config():
    """Qwen3-VL-8B-Instruct's architecture (36 layers, 32 q / 8 kv heads of 128, FFN 12288), built locally."""
    from transformers import Qwen3VLConfig

    return Qwen3VLConfig(
        text_config=dict(
            vocab_size=151936,
            hidden_size=4096,
            intermediate_size=12288,
            num_hidden_layers=36,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=128,
            max_position_embeddings=262144,
            rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [24, 20, 20], "mrope_interleaved": True},
        ),
        vision_config=dict(
            depth=27,
            hidden_size=1152,
            intermediate_size=4304,
            num_heads=16,
            out_hidden_size=4096,
            patch_size=16,
            num_position_embeddings=2304,
            deepstack_visual_indexes=[8, 16, 24],
        ),
    )


def test_full_size_qwen3_llm_on_meta_matches_the_gqa_formula():
    from transformers import Qwen3VLForConditionalGeneration

    config = qwen3_vl_8b_config()
    shape = llm_shape_of(config)
    assert (shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.num_layers) == (32, 8, 128, 36)
    n = 1024 + 60
    assert meta_prefill_flops(config, n, Qwen3VLForConditionalGeneration) == decoder_flops(shape, [n] * 36)


def test_catalog_rows_describe_the_family():
    entry = catalog_entry("Qwen/Qwen3-VL-8B-Instruct")
    assert entry.family == "qwen3_vl" and entry.llm_layers == 36
    assert visual_tokens_text(entry) == "64-16384 (H*W/32^2)"
    assert catalog_entry(NAME).kind == "tiny"


def test_a_saved_folder_loads_through_from_pretrained_and_prunes_alike(tmp_path):
    ad = adapter()
    ad.model.save_pretrained(tmp_path)
    ad.processor.image_processor.save_pretrained(tmp_path)
    ad.processor.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), dtype="float32")
    assert type(loaded) is type(ad) and loaded.family == "qwen3_vl"
    sample = _samples()[:1]
    runs = [_generate(model, create_method("random"), 16, sample, new=2).tokens for model in (loaded, ad)]
    assert torch.equal(*runs)
