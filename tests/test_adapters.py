"""Model adapters of the four families (issue 6): layouts, budget scopes, mixed batches, M-RoPE, preprocessing.

The conformance kit (tests/test_conformance.py) proves no-op = stock generate, cache consistency and batch =
single on every tiny family; these tests pin the family-specific facts that the kit does not look at.
"""

import functools

import numpy as np
import pytest
import torch
from PIL import Image

from prunebench.adapters.base import Sample
from prunebench.conformance import synthetic_samples
from prunebench.core import PruneBenchError
from prunebench.engine import Pruner
from prunebench.models import TINY_MODELS, load_model
from prunebench.registry import create_method


@functools.cache
def adapter(name, **options):
    return load_model(name, **dict(options))


def _image(width, height, seed=0):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


def _run(ad, method, budget, samples, scope="image", mode="final", new=2):
    batch = ad.prepare(samples)
    with Pruner(ad, create_method(method), budget, budget_mode=mode, budget_scope=scope) as pruner:
        return pruner.generate(batch, max_new_tokens=new, min_new_tokens=new)


def test_every_family_has_a_tiny_model():
    assert set(TINY_MODELS.values()) == {"llava", "llava_next", "video_llava", "qwen2_5_vl", "llava_onevision", "qwen3_vl"}
    for name, family in TINY_MODELS.items():
        assert adapter(name).family == family


# -- LLaVA-NeXT ---------------------------------------------------------------------------------------------------
def test_next_anyres_layout_matches_the_stock_token_count_and_keeps_newlines():
    ad = adapter("tiny-llava_next")
    sample = Sample("a", "what is it ?", image=_image(336, 336))
    batch = ad.prepare([sample])
    from prunebench.attention import attention_probe

    with attention_probe(ad.model):
        view = ad.encode(batch)
    span = int((batch.input_ids == ad.image_token_id).sum())
    rows = int(batch.meta["newline"].sum())
    assert span == 1176 and rows == 24 and view.num_tokens == span - rows  # 576 base + 24 x 24, 24 newlines
    assert view.num_units == 3 and view.unit_kind == "crop" and int(view.unit_of.max()) == 2

    out = _run(ad, "random", 32, [sample])
    llm = out.llm_inputs
    assert llm.visual_index.shape[1] == 32 and out.stats.tokens_per_layer == [32] * 4
    # the newlines are outside the budget: recorded, and inside the text count that KV lengths and costs use
    assert out.stats.extra_visual_tokens == rows and out.stats.final_tokens == 32
    assert out.stats.kv_lengths == [out.stats.text_tokens + 32] * 4 and out.stats.text_tokens >= rows
    newline = ad._inner.image_newline
    start = int(llm.visual_index[0, 0])
    span_embeds = llm.inputs_embeds[0, start : start + 32 + rows]
    is_newline = (span_embeds == newline).all(-1)
    assert int(is_newline.sum()) == rows  # every row's newline survives, none is counted as visual
    assert not bool(is_newline[llm.visual_index[0] - start].any())


def test_next_fivecrop_is_five_full_crops_without_newlines():
    ad = adapter("tiny-llava_next", layout="fivecrop")
    assert ad.describe()["layout"] == "fivecrop"
    batch = ad.prepare([Sample("a", "what", image=_image(448, 336))])
    from prunebench.attention import attention_probe

    with attention_probe(ad.model):
        view = ad.encode(batch)
    assert view.num_tokens == 2880 == int((batch.input_ids == ad.image_token_id).sum())
    assert not bool(batch.meta["newline"].any())
    assert torch.bincount(view.unit_of[0]).tolist() == [576] * 5
    # sub-crops in raster order over the tiled 48 x 48 grid: token (r, c) comes from crop 1 + 2 (r // 24) + c // 24
    sub = view.unit_of[0, 576:].view(48, 48)
    r, c = torch.meshgrid(torch.arange(48), torch.arange(48), indexing="ij")
    assert torch.equal(sub, 1 + 2 * (r // 24) + c // 24)
    out = _run(ad, "random", 32, [batch.samples[0]], scope="crop")
    assert out.stats.plan.vision == 160 and out.stats.units == 5  # the papers' "32 x 5"


def test_budget_scope_multiplies_by_units_and_rejects_foreign_scopes():
    ad = adapter("tiny-llava_next")
    sample = Sample("a", "what", image=_image(336, 336))
    assert _run(ad, "random", 16, [sample], scope="crop").stats.plan.vision == 48  # 3 crops
    assert _run(ad, "random", 16, [sample], scope="image").stats.plan.vision == 16
    with pytest.raises(PruneBenchError, match="budget-scope 'frame' is not defined for llava_next"):
        Pruner(ad, create_method("random"), 16, budget_scope="frame")
    video = adapter("tiny-video_llava")
    clip = Sample("v", "what", video=[_image(224, 224, s) for s in range(4)])
    assert _run(video, "random", 16, [clip], scope="frame").stats.plan.vision == 64
    with pytest.raises(PruneBenchError, match="choose one of image, video, frame"):
        Pruner(video, create_method("random"), 16, budget_scope="crop")


def test_mixed_batch_runs_in_groups_and_restores_order():
    ad = adapter("tiny-llava_next")
    samples = synthetic_samples(family="llava_next")  # 1176 / 1464 / 1176 image tokens
    out = _run(ad, "fastv", 64, samples)
    assert [g.indices for g in out.groups] == [[0, 2], [1]]
    with pytest.raises(PruneBenchError, match="read out.groups"):
        _ = out.stats.plan
    assert out.sample_stats(1).plan.num_visual != out.sample_stats(0).plan.num_visual
    alone = _run(ad, "fastv", 64, [samples[1]])
    assert torch.equal(out.tokens[1], alone.tokens[0]) and torch.equal(out.kept("layer2", 1), alone.stats.kept["layer2"][0])


# -- Video-LLaVA ----------------------------------------------------------------------------------------------------
def test_video_llava_images_and_videos():
    ad = adapter("tiny-video_llava")
    from prunebench.attention import attention_probe

    image = ad.prepare([Sample("i", "what", image=_image(300, 224))])
    video = ad.prepare([Sample("v", "what", video=[_image(224, 224, s) for s in range(8)])])
    assert int((image.input_ids == ad.image_token_id).sum()) == 256
    assert int((video.input_ids == ad.video_token_id).sum()) == 8 * 257  # the HF video tower keeps [CLS]
    with attention_probe(ad.model):
        view = ad.encode(video, (ad.feature_layer,))
    assert view.num_tokens == 2056 and view.num_units == 8 and view.cls_feature is None
    cls = view.cls_attention()
    assert cls.shape == (1, 2056)
    # per frame, the [CLS] row sums to 1 over the frame's 257 keys (its own [CLS] included)
    assert torch.allclose(cls.view(8, 257).sum(-1), torch.ones(8), atol=1e-5)
    with pytest.raises(PruneBenchError, match="one visual input"):
        ad.prepare([Sample("x", "what", image=_image(224, 224), video=[_image(224, 224)] * 2)])


# -- Qwen2.5-VL -----------------------------------------------------------------------------------------------------
def test_qwen_features_project_to_the_stock_merged_tokens():
    ad = adapter("tiny-qwen2_5_vl")
    from prunebench.attention import attention_probe

    batch = ad.prepare([Sample("a", "what", image=_image(308, 224))])
    with attention_probe(ad.model), torch.inference_mode():
        view = ad.encode(batch, (ad.feature_layer,))
        stock = ad._inner.get_image_features(batch.inputs["pixel_values"], batch.inputs["image_grid_thw"]).pooler_output[0]
        projected = view.projected[0]
    assert view.num_tokens == 88 and view.grid == (8, 11) and not view.has_cls
    assert torch.allclose(projected, stock, atol=1e-6)  # window order undone: raster order of the LLM
    importance = view.importance()
    assert importance.shape == (1, 88) and torch.isfinite(importance).all()
    assert view.importance_layer == 3
    with pytest.raises(ValueError, match="no \\[CLS\\] token; use view.importance"):
        view.cls_attention()


def test_qwen_signals_are_the_same_from_one_varlen_call():
    """FlashAttention runs each ViT block as one varlen call over every image/window; the view splits it."""
    from prunebench.attention import Captured, attention_probe

    ad = adapter("tiny-qwen2_5_vl")
    batch = ad.prepare([Sample("a", "what", image=_image(252, 252)), Sample("b", "what", image=_image(252, 252, 1))])
    with attention_probe(ad.model), torch.inference_mode():
        view = ad.encode(batch, (0, ad.feature_layer))  # block 0 is windowed, block 3 full attention
    for layer in (0, 3):
        chunks = view.captured[layer]
        assert len(chunks) == len(view.chunk_lengths[layer]) >= 2  # 2 images; block 0: 9 windows each
        expected_received, expected_keys = view.received_attention(layer), view.keys(layer)
        one = Captured(torch.cat([c.query for c in chunks], 2), torch.cat([c.key for c in chunks], 2), None, chunks[0].scaling, False)
        view.captured[layer] = [one]
        assert torch.allclose(view.received_attention(layer), expected_received) and torch.equal(view.keys(layer), expected_keys)


@pytest.mark.parametrize("kind", ["image", "video"])
def test_qwen_kept_tokens_keep_their_unpruned_mrope_positions(kind):
    ad = adapter("tiny-qwen2_5_vl")
    if kind == "image":
        sample = Sample("a", "what is it ?", image=_image(252, 252))
    else:
        sample = Sample("v", "what is it ?", video=[_image(224, 224, s) for s in range(4)])
    batch = ad.prepare([sample])
    full = ad.rope_positions(batch)
    out = _run(ad, "random", 20, [sample], new=3)
    llm, kept = out.llm_inputs, out.stats.kept["vision"]
    token = ad.video_token_id if kind == "video" else ad.image_token_id
    start = int((batch.input_ids[0] == token).nonzero()[0])
    assert llm.position_ids.shape[0] == 3
    assert torch.equal(llm.position_ids[:, 0, llm.visual_index[0]], full[:, 0, start + kept[0]])
    assert torch.equal(llm.position_ids[:, 0, -1], full[:, 0, -1])  # text after the image: unchanged
    if kind == "video":
        assert out.stats.units == 2 and len(set(full[0, 0, start : start + 128].tolist())) == 2  # 2 temporal units


def test_qwen_video_uses_the_video_pixel_range_and_the_given_frame_rate():
    from prunebench.adapters.qwen2_5_vl import VIDEO_MAX_PIXELS, VIDEO_MIN_PIXELS, Qwen2_5_VLAdapter

    tiny = adapter("tiny-qwen2_5_vl")
    default = Qwen2_5_VLAdapter(tiny.model, (tiny.processor.image_processor, tiny.processor.tokenizer))
    assert default.video_pixels == (VIDEO_MIN_PIXELS, VIDEO_MAX_PIXELS) == (128 * 28 * 28, 768 * 28 * 28)
    frames = [_image(224, 224, s) for s in range(4)]
    # 224 x 224 = 50176 px < 100352: smart_resize scales by sqrt(2) and rounds up to 12 x 28 = 336 px -> 24 x 24 patches
    assert default.patchify_video(frames)[1] == [2, 24, 24]
    assert tiny.patchify_video(frames)[1] == [2, 16, 16]  # the tiny model's own (small) range keeps 224 px
    # fps is the rate of the frames given: 4 frames of a 4 s clip = 1 fps -> 2 s per temporal unit
    clips = [Sample("v", "what", video=frames, meta=meta) for meta in ({}, {"fps": 1.0}, {"second_per_grid": 3.0})]
    seconds = [tiny.prepare([clip]).inputs["second_per_grid_ts"].tolist() for clip in clips]
    assert seconds == [[1.0], [2.0], [3.0]]
    positions = [tiny.rope_positions(tiny.prepare([clip])) for clip in clips[:2]]
    start = int((tiny.prepare([clips[0]]).input_ids[0] == tiny.video_token_id).nonzero()[0])
    # temporal row of the second unit's first token: unit * second_per_grid * tokens_per_second (2) after unit 0
    step = [int(p[0, 0, start + 64] - p[0, 0, start]) for p in positions]
    assert step == [2, 4]
    assert len({tiny.group_key(c) for c in clips}) == 3  # different spacing, different M-RoPE: never one group
    with pytest.raises(PruneBenchError, match="fps must be positive"):
        tiny.prepare([Sample("v", "what", video=frames, meta={"fps": 0})])


def test_qwen_still_video_gives_the_image_processor_patches():
    """The hand-built video patches use the processors' layout: two equal frames = the image, which the image
    processor repeats over the temporal patch."""
    ad = adapter("tiny-qwen2_5_vl")
    frame = _image(308, 224, 3)
    patches, grid = ad.patchify_video([frame, frame])
    image = ad.processor.image_processor(images=[frame], return_tensors="pt")
    assert grid == image["image_grid_thw"][0].tolist() == [1, 16, 22]
    assert torch.allclose(patches, image["pixel_values"], atol=1e-6)


# -- LLaVA-1.5 preprocessing ------------------------------------------------------------------------------------------
def test_llava_paper_preprocessing_pads_to_square_and_uses_the_vicuna_prompt():
    from prunebench.adapters.llava import VICUNA_V1_PROMPT, expand_to_square

    tall = Image.new("RGB", (100, 300), (255, 0, 0))
    # the original's fill is tuple(int(x * 255) for x in image_mean): CLIP's mean x 255 = (122.77, 116.75, 104.09)
    square = expand_to_square(tall, (0.48145466, 0.4578275, 0.40821073))
    assert square.size == (300, 300) and square.getpixel((0, 0)) == (122, 116, 104) and square.getpixel((150, 150)) == (255, 0, 0)
    hf, paper = adapter("tiny-llava"), adapter("tiny-llava", preprocess="paper")
    assert hf.describe()["preprocess"] == "hf" and paper.describe()["preprocess"] == "paper"
    assert paper.prompt("q").startswith("A chat between a curious human") and paper.prompt("q") == VICUNA_V1_PROMPT.format(question="q")
    sample = Sample("a", "what", image=tall)
    # centre crop keeps only red; padding brings in the mean colour at the edges
    hf_pixels, paper_pixels = hf.prepare([sample]).inputs["pixel_values"], paper.prepare([sample]).inputs["pixel_values"]
    assert not torch.allclose(hf_pixels, paper_pixels)
    assert torch.allclose(hf_pixels[0, :, :, 0], hf_pixels[0, :, :, 168])
    with pytest.raises(PruneBenchError, match="preprocess must be one of"):
        load_model("tiny-llava", preprocess="square")


def _original_tokenizer_image_token(prompt, tokenizer, image_token_index):
    """LLaVA's mm_utils.tokenizer_image_token (haotian-liu/LLaVA), the oracle for paper-mode input ids."""
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split("<image>")]
    separated = [part for chunk in chunks for part in (chunk, None)][:-1]
    offset = 1 if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id else 0
    ids = [chunks[0][0]] if offset else []
    for part in separated:
        ids.extend(([image_token_index] * (offset + 1))[offset:] if part is None else part[offset:])
    return ids


def _sentencepiece_like_tokenizer(texts):
    """A word-level tokenizer with Llama's dummy prefix: "▁" before the first word of every string it encodes
    (Metaspace, prepend_scheme "first"), and BOS prepended; the vocabulary covers ``texts`` split either way."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from prunebench.models.tiny import SPECIALS

    pre = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    pieces = {p for text in texts for p, _ in pre.pre_tokenize_str(text)}
    pieces |= {p[1:] for p in pieces if p.startswith("▁") and len(p) > 1}
    core = Tokenizer(models.WordLevel(vocab={t: i for i, t in enumerate(SPECIALS + sorted(pieces))}, unk_token="<unk>"))
    core.pre_tokenizer = pre
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", SPECIALS.index("<s>"))])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>", extra_special_tokens={"image_token": "<image>"}
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def test_llava_paper_input_ids_follow_the_original_chunked_tokenization():
    from prunebench.adapters.llava import VICUNA_V1_PROMPT, LlavaAdapter
    from prunebench.models.tiny import llava_processor, tiny_llava

    questions = ["what color is it ?", "how many ?"]
    prompts = [VICUNA_V1_PROMPT.format(question=q) for q in questions]
    tokenizer = _sentencepiece_like_tokenizer([chunk for p in prompts for chunk in p.split("<image>")])
    model, _ = tiny_llava()
    paper = LlavaAdapter(model, llava_processor(tokenizer), preprocess="paper")
    image, bos = paper.image_token_id, tokenizer.bos_token_id
    assert image == model.config.image_token_id
    batch = paper.prepare([Sample(str(i), q, image=_image(300, 200, i)) for i, q in enumerate(questions)])
    for row, prompt in enumerate(prompts):
        expected = _original_tokenizer_image_token(prompt, tokenizer, image)
        at = expected.index(image)
        expected[at : at + 1] = [image] * 576
        ids = batch.input_ids[row][batch.attention_mask[row].bool()].tolist()
        assert ids == expected and ids.count(bos) == 1 and ids[0] == bos  # the chunk after <image> lost its BOS
        # the text after the image starts with the dummy prefix, as LLaVA's "▁" (29871) before "\n" (13);
        # one pass over the whole prompt does not put it there
        assert tokenizer.convert_ids_to_tokens(ids[at + 576]) == "▁\n" + questions[row].split()[0]
        one_pass = tokenizer(prompt).input_ids
        assert tokenizer.convert_ids_to_tokens(one_pass[one_pass.index(image) + 1]) == "\n" + questions[row].split()[0]
    assert batch.attention_mask[1, 0] == 0  # left padding: the second prompt is shorter
    assert paper.describe()["tokenization"].startswith("tokenizer_image_token")


# -- loading from a folder: dispatch on config.model_type, the real from_pretrained code ------------------------------
@pytest.mark.parametrize("name", ["tiny-llava", "tiny-llava_next", "tiny-video_llava", "tiny-qwen2_5_vl"])
def test_load_model_from_a_saved_folder_dispatches_on_model_type(name, tmp_path):
    ad = adapter(name)
    ad.model.save_pretrained(tmp_path)
    if hasattr(ad.processor, "save_pretrained"):
        ad.processor.save_pretrained(tmp_path)
    else:
        ad.processor.image_processor.save_pretrained(tmp_path)
        ad.processor.tokenizer.save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), dtype="float32")
    assert type(loaded) is type(ad) and loaded.family == ad.family
    if name == "tiny-qwen2_5_vl":  # the video pixel range travels in video_preprocessor_config.json
        assert loaded.video_pixels == ad.video_pixels == (28 * 28 * 4, 448 * 448)
    sample = synthetic_samples(family=ad.family)[0]
    assert torch.equal(_run(loaded, "random", 16, [sample]).tokens, _run(ad, "random", 16, [sample]).tokens)


@pytest.mark.parametrize("layout", ["fivecrop", "spatial"])
@pytest.mark.parametrize("method", ["visionzip", "fastv"])
def test_fixed_layouts_pass_the_kit_properties_that_need_no_stock_reference(method, layout):
    """Stock generate has no five-crop or spatial layout, so no-op is checked on AnyRes; the rest must hold here too."""
    from prunebench.conformance import run_check

    ad = adapter("tiny-llava_next", layout=layout)
    samples = [Sample(f"s{i}", q, image=_image(w, h, i)) for i, (q, (w, h)) in enumerate([("what", (336, 448)), ("how many ?", (448, 336))])]
    for check in ("token_contract", "cache", "batch"):
        result = run_check(check, ad, create_method(method), budget=64, samples=samples)
        assert result.passed, result.detail


def test_next_spatial_is_the_native_grid_without_unpadding_or_newlines():
    """HiPrune's layout on LLaVA-NeXT (mm_patch_merge_type='spatial'): the best-fitting pinpoint's crops, all 576 tokens each, no newlines."""
    ad = adapter("tiny-llava_next", layout="spatial")
    wide = ad.prepare([Sample("a", "what", image=_image(672, 336))])  # PIL size (w, h): best pinpoint 336 x 672
    from prunebench.attention import attention_probe

    with attention_probe(ad.model):
        view = ad.encode(wide)
    assert view.num_units == 3 and view.num_tokens == 3 * 576 == int((wide.input_ids == ad.image_token_id).sum())
    assert not bool(wide.meta["newline"].any())
    # one row of two sub-crops tiled 24 x 48: token (r, c) comes from crop 1 + c // 24
    sub = view.unit_of[0, 576:].view(24, 48)
    assert torch.equal(sub, 1 + torch.arange(48).expand(24, -1) // 24)
    square = ad.prepare([Sample("b", "what", image=_image(448, 448))])
    with attention_probe(ad.model):
        assert ad.encode(square).num_units == 5  # best pinpoint 672 x 672: 2 x 2 sub-crops
    out = _run(ad, "random", 32, [wide.samples[0]], scope="crop")
    assert out.stats.plan.vision == 96 and out.stats.units == 3
    with pytest.raises(PruneBenchError, match="spatial baseline is a keep-all budget"):
        ad.stock_generate(wide, max_new_tokens=1)
