"""LLaVA-OneVision / LLaVA-Video (issue 16): AnyRes image layout, pooled video with one newline, SigLIP signals
without [CLS], per-frame budgets, and the Qwen2 (GQA) cost model. The conformance kit (tests/test_conformance.py)
covers no-op = stock generate, cache, batch, signals, hygiene and determinism for every method on the tiny model."""

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from prunebench.adapters.base import Sample
from prunebench.attention import attention_probe
from prunebench.core import PruneBenchError
from prunebench.costs import decoder_flops, llm_shape_of, meta_prefill_flops
from prunebench.engine import Pruner, measure_prefill_flops
from prunebench.models import adapter_class, catalog_entry, load_model
from prunebench.models.catalog import visual_tokens_text
from prunebench.registry import create_method

NAME = "tiny-llava_onevision"


@functools.cache
def adapter():
    return load_model(NAME)


def _image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _video(frames=4, seed=1):
    return Sample("v", "how many shape are there ?", video=[_image(126, 126, seed + i) for i in range(frames)])


def _encode(ad, batch, layers=()):
    with torch.inference_mode(), attention_probe(ad.model):
        return ad.encode(batch, layers)


def test_the_family_is_registered():
    ad = adapter()
    assert ad.family == "llava_onevision" and adapter_class("llava_onevision") is type(ad)
    assert ad.llm_shape.num_kv_heads < ad.llm_shape.num_heads  # Qwen2 with grouped-query attention


@pytest.mark.parametrize("size", [(126, 126), (168, 126), (126, 210)])
def test_image_layout_matches_the_stock_packing(size):
    ad = adapter()
    batch = ad.prepare([Sample("i", "what is this ?", image=_image(*size))])
    with torch.inference_mode():
        stock = ad._inner.get_image_features(batch.inputs["pixel_values"], batch.inputs["image_sizes"], return_dict=True).pooler_output[0]
        view = _encode(ad, batch)
        projected = ad.project(view.features)
    newline = batch.meta["newline"]
    assert int((batch.input_ids == ad.image_token_id).sum()) == stock.shape[0] == newline.numel()
    # the candidates are exactly the stock tokens that are not newlines, in the same order; newlines are image_newline
    assert torch.allclose(projected[0], stock[~newline], atol=1e-6)
    assert torch.allclose(stock[newline], ad._inner.image_newline.expand(int(newline.sum()), -1))
    assert view.num_units == ad._num_crops(batch.inputs["image_sizes"][0]) and view.unit_kind == "crop"
    assert view.num_tokens >= 81 * view.num_units - 81 and bool((view.unit_of[0, :81] == 0).all())  # base crop first


def test_video_candidates_are_the_stock_pooled_projected_tokens_plus_one_newline():
    ad = adapter()
    batch = ad.prepare([_video()])
    assert int((batch.input_ids == ad.video_token_id).sum()) == 4 * 25 + 1  # 9x9 -> ceil(9/2)^2 = 25 per frame, one newline
    with torch.inference_mode():
        stock = ad._inner.get_video_features(batch.inputs["pixel_values_videos"], return_dict=True).pooler_output[0]
        view = _encode(ad, batch)
    assert torch.allclose(view.features[0], stock[:-1], atol=1e-6)
    assert torch.equal(ad.project(view.features), view.features)  # pooled after the projector: already projected
    assert view.features.shape[-1] == ad.model.config.text_config.hidden_size
    assert view.num_units == 4 and view.unit_kind == "frame" and view.grid == (5, 5)
    assert view.unit_of[0].tolist() == [f for f in range(4) for _ in range(25)]
    # encoding an image afterwards projects again
    image_view = _encode(ad, ad.prepare([Sample("i", "what", image=_image(126, 126))]))
    with torch.inference_mode():
        assert ad.project(image_view.features).shape[-1] == ad.model.config.text_config.hidden_size
    assert image_view.features.shape[-1] == ad.model.config.vision_config.hidden_size


def test_no_cls_importance_is_received_attention_pooled_like_the_features():
    ad = adapter()
    batch = ad.prepare([_video()])
    view = _encode(ad, batch, [ad.feature_layer])
    assert not view.has_cls and view.cls_feature is None
    with pytest.raises(ValueError, match="no \\[CLS\\]"):
        view.cls_attention()
    # reference: the model's eager softmax at the feature layer, head- and query-mean per frame, bilinear 9x9 -> 5x5
    probs = ad.eager_vision_attentions(batch, [ad.feature_layer])[ad.feature_layer][0]  # (F, H, 81, 81)
    received = probs.mean(1).mean(1).view(4, 1, 9, 9)
    want = F.interpolate(received, size=[5, 5], mode="bilinear").reshape(1, -1)
    assert torch.allclose(view.importance(), want, atol=1e-6)
    assert view.keys().shape == (1, 100, ad.model.config.vision_config.hidden_size // 4)
    # images: the received attention of each candidate's own tower token
    image_batch = ad.prepare([Sample("i", "what", image=_image(168, 126))])
    image_view = _encode(ad, image_batch, [ad.feature_layer])
    probs = torch.cat(ad.eager_vision_attentions(image_batch, [ad.feature_layer])[ad.feature_layer])
    want = probs.mean(1).mean(1).reshape(1, -1).gather(1, image_view.token_map)
    assert torch.allclose(image_view.importance(), want, atol=1e-6)


def test_pruned_video_keeps_the_trailing_newline_outside_the_budget():
    ad = adapter()
    batch = ad.prepare([_video()])
    with Pruner(ad, create_method("random"), 20) as pruner:
        out = pruner.generate(batch, max_new_tokens=2, min_new_tokens=2)
    assert out.stats.final_tokens == 20 and out.stats.extra_visual_tokens == 1
    inputs = out.llm_inputs
    last = int(inputs.visual_index[0, -1])
    assert torch.allclose(inputs.inputs_embeds[0, last + 1], ad._inner.image_newline)  # right after the last kept token


def test_per_frame_budget_scope_multiplies_by_the_frames_and_keeps_quotas():
    ad = adapter()
    with Pruner(ad, create_method("vispruner"), 6, budget_scope="frame") as pruner:
        out = pruner.generate(ad.prepare([_video()]), max_new_tokens=1)
    assert out.stats.final_tokens == 24
    kept = out.stats.kept["vision"][0]
    assert torch.bincount(kept // 25, minlength=4).tolist() == [6, 6, 6, 6]


@functools.cache
def shrinking_adapter():
    ad = load_model(NAME)
    ad.model.config.vision_aspect_ratio = "anyres_max_1"  # a 2 x 2 grid (18 x 18) exceeds one crop's area: shrunk to 9 x 9
    return ad


def test_an_image_the_model_shrinks_after_the_projector_prunes_its_shrunk_tokens():
    ad = shrinking_adapter()
    batch = ad.prepare([Sample("i", "what is this ?", image=_image(252, 252))])
    with torch.inference_mode():
        stock = ad._inner.get_image_features(batch.inputs["pixel_values"], batch.inputs["image_sizes"], return_dict=True).pooler_output[0]
        view = _encode(ad, batch, [ad.feature_layer])
    assert stock.shape[0] == 81 + 9 * 10 == int((batch.input_ids == ad.image_token_id).sum())  # base + shrunk 9 x 9 with newlines
    assert torch.allclose(view.features[0], stock[~batch.meta["newline"]], atol=1e-6)
    assert torch.equal(ad.project(view.features), view.features)
    # the nearest tower token of a shrunk slot: 2x bilinear samples between tokens 2i and 2i+1 -> rounds into the 2 x 2 block
    sub_units = view.unit_of[0, 81:].view(9, 9)
    assert sub_units[:4, :4].eq(1).all() and sub_units[5:, 5:].eq(4).all() and sub_units[:4, 5:].eq(2).all()
    probs = torch.cat(ad.eager_vision_attentions(batch, [ad.feature_layer])[ad.feature_layer]).mean(1).mean(1)  # (crops, 81)
    received = F.interpolate(probs[1:].view(2, 2, 9, 9).permute(0, 2, 1, 3).reshape(1, 1, 18, 18), size=[9, 9], mode="bilinear")
    assert torch.allclose(view.importance()[0], torch.cat([probs[0], received.flatten()]), atol=1e-6)


@pytest.mark.parametrize("method", ["visionzip", "hiprune"])
def test_shrunk_images_pass_the_kit(method):
    from prunebench.conformance import run_check

    ad = shrinking_adapter()
    samples = [Sample("a", "what is this ?", image=_image(252, 252, 1)), Sample("b", "what color is it", image=_image(252, 252, 2))]
    for check in ("noop", "token_contract", "batch", "signals"):
        result = run_check(check, ad, create_method(method), budget=64, samples=samples)
        assert result.passed, result.detail


@pytest.mark.parametrize("kind", ["image", "video"])
def test_measured_flops_match_the_gqa_formula_on_the_tiny_model(kind):
    ad = adapter()
    sample = _video() if kind == "video" else Sample("i", "what is this ?", image=_image(168, 126))
    for method, budget, mode in [("random", None, "average"), ("random", 32, "average"), ("fastv", 32, "final")]:
        count = measure_prefill_flops(ad, create_method(method), budget, ad.prepare([sample]), budget_mode=mode)
        assert count.llm_rel_diff < 1e-3, (method, count)


def onevision_7b_config():
    """LLaVA-OneVision-7B's architecture (SigLIP-so400m, 26 layers kept; Qwen2-7B, 28 q / 4 kv heads), built locally."""
    from transformers import LlavaOnevisionConfig

    return LlavaOnevisionConfig(
        text_config=dict(
            model_type="qwen2",
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
            max_position_embeddings=32768,
        )
    )


def test_full_size_qwen2_llm_on_meta_matches_the_gqa_formula():
    from transformers import LlavaOnevisionForConditionalGeneration

    config = onevision_7b_config()
    shape = llm_shape_of(config)
    assert (shape.num_heads, shape.num_kv_heads, shape.head_dim) == (28, 4, 128)
    n = 32 * 196 + 1 + 60  # 32 frames, the newline and a prompt
    assert meta_prefill_flops(config, n, LlavaOnevisionForConditionalGeneration) == decoder_flops(shape, [n] * 28)


def test_catalog_rows_describe_the_family():
    entry = catalog_entry("llava-hf/llava-onevision-qwen2-7b-ov-hf")
    assert entry.family == "llava_onevision" and entry.llm_layers == 28
    assert visual_tokens_text(entry) == "1485-7371 (AnyRes; video: 32 x 196 + 1)"
    assert catalog_entry(NAME).kind == "tiny"


def test_a_saved_folder_loads_through_from_pretrained_and_prunes_alike(tmp_path):
    ad = adapter()
    ad.model.save_pretrained(tmp_path)
    ad.processor.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), dtype="float32")
    assert type(loaded) is type(ad) and loaded.family == "llava_onevision"
    for sample in (Sample("i", "what is this ?", image=_image(168, 126)), _video()):
        runs = []
        for model in (loaded, ad):
            with Pruner(model, create_method("random"), 16) as pruner:
                runs.append(pruner.generate(model.prepare([sample]), max_new_tokens=2, min_new_tokens=2).tokens)
        assert torch.equal(*runs)


@functools.cache
def llava_video_adapter():
    return load_model(NAME, video_pooling="average", video_newline="grid")


def test_llava_video_layout_average_pooling_and_grid_newlines():
    ad = llava_video_adapter()
    batch = ad.prepare([_video()])
    side = 4  # 9 x 9 -> floor(9 / 2) = 4 x 4 per frame, a newline after each of its 4 rows
    assert int((batch.input_ids == ad.video_token_id).sum()) == 4 * side * (side + 1)
    view = _encode(ad, batch, [ad.feature_layer])
    with torch.inference_mode():
        hidden = ad._inner.vision_tower(batch.inputs["pixel_values_videos"][0], output_hidden_states=True).hidden_states[-1]
        grid = ad._inner.multi_modal_projector(hidden).view(4, 9, 9, -1).permute(0, 3, 1, 2)
        want = F.avg_pool2d(grid, 2).permute(0, 2, 3, 1).reshape(1, 4 * side * side, -1)
    assert torch.allclose(view.features, want, atol=1e-6) and view.grid == (side, side)
    probs = ad.eager_vision_attentions(batch, [ad.feature_layer])[ad.feature_layer][0]  # (F, H, 81, 81)
    received = F.avg_pool2d(probs.mean(1).mean(1).view(4, 1, 9, 9), 2).reshape(1, -1)
    assert torch.allclose(view.importance(), received, atol=1e-6)  # saliency pooled like the features
    assert batch.meta["newline"].nonzero().squeeze(1).tolist() == list(range(side, 4 * side * (side + 1), side + 1))
    with Pruner(ad, create_method("random"), 20) as pruner:
        out = pruner.generate(batch, max_new_tokens=1)
    assert out.stats.final_tokens == 20 and out.stats.extra_visual_tokens == 4 * side
    with pytest.raises(PruneBenchError, match="keep-all budget"):
        ad.stock_generate(batch, max_new_tokens=1)
    assert ad.describe()["video_newline"] == "grid"
    with pytest.raises(PruneBenchError, match="video_newline must be one of"):
        load_model(NAME, video_newline="frame")


@pytest.mark.parametrize("method", ["vispruner", "fastv"])
def test_llava_video_layout_passes_the_kit_properties_that_need_no_stock_reference(method):
    from prunebench.conformance import run_check

    ad = llava_video_adapter()
    samples = [_video(4, 1), Sample("q", "what color is the big shape ?", video=[_image(126, 126, 9 + i) for i in range(4)])]
    for check in ("token_contract", "cache", "batch"):  # signals compares against a stock forward, which has no such layout
        result = run_check(check, ad, create_method(method), budget=32, samples=samples)
        assert result.passed, result.detail


@pytest.mark.parametrize("height,width,shrunk", [(384, 384, False), (480, 640, False), (1000, 1000, False), (1536, 2048, True), (2304, 2304, True)])
def test_7b_image_token_counts_match_the_stock_processor_formula(height, width, shrunk):
    """The 7B geometry (27 x 27 per crop, 6 x 6 pinpoints, anyres_max_9) on the meta device: the layout the adapter
    takes from ``pack_image_features`` has the token count ``LlavaOnevisionProcessor`` computes, shrunk grids included."""
    from types import SimpleNamespace

    from transformers import LlavaOnevisionForConditionalGeneration
    from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor

    from prunebench.adapters.llava_onevision import LlavaOnevisionAdapter

    with torch.device("meta"):
        model = LlavaOnevisionForConditionalGeneration(onevision_7b_config())
    ad = LlavaOnevisionAdapter(model, adapter().processor)
    size = torch.tensor([height, width])
    slots, got_shrunk = ad.token_layout(size, ad._num_crops(size))
    # the processor's own count (its methods on a stand-in holding the attributes they read)
    stock = SimpleNamespace(
        image_processor=SimpleNamespace(image_grid_pinpoints=model.config.image_grid_pinpoints), num_image_tokens=729, vision_aspect_ratio="anyres_max_9"
    )
    stock._get_unpadded_features = LlavaOnevisionProcessor._get_unpadded_features.__get__(stock)
    assert slots.numel() == LlavaOnevisionProcessor._get_number_of_features(stock, height, width, 384, 384)
    assert got_shrunk == shrunk
    assert 0 <= int(slots[slots >= 0].min()) and int(slots.max()) < ad._num_crops(size) * 729  # nearest tower tokens exist
