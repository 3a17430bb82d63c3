"""Tiny randomly initialised models built from configs (no download): the conformance kit's test subjects.

They are the stock transformers classes at toy sizes, seeded, with a word-level tokenizer, so every
mechanism (image span, padding, positions, KV cache) is exercised exactly as on a 7B checkpoint.
"""

from __future__ import annotations

import torch

WORDS = (
    "what is the color of shape object left right how many are there a an in on image picture this it yes no "
    "red green blue yellow white black purple orange circle square triangle star one two three four five six "
    "small big background top bottom answer question with single word or phrase describe"
).split()
SPECIALS = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}USER : "
    "{% for item in message['content'] %}{% if item['type'] == 'image' %}<image> {% else %}{{ item['text'] }} {% endif %}{% endfor %}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}ASSISTANT :{% endif %}"
)


def word_tokenizer(
    words: list[str] | tuple[str, ...] = WORDS,
    extra: tuple[str, ...] = ("USER", ":", "ASSISTANT", "?", ".", ","),
    extra_specials: tuple[str, ...] = (),
    image_token: str = "<image>",
    video_token: str | None = None,
):
    """A word-level fast tokenizer over ``words`` (a ``tokenizers`` WordLevel model; no download).

    ``extra_specials`` (e.g. ``<video>``, Qwen's ``<|image_pad|>``) are added as special tokens; ``image_token`` /
    ``video_token`` set the tokenizer attributes processors read.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = SPECIALS + [t for t in extra_specials if t not in SPECIALS]
    vocab = {tok: i for i, tok in enumerate(specials + sorted(set(words) | set(extra)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": image_token, **({"video_token": video_token} if video_token else {})},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": specials[4:]})
    return tokenizer


def llava_processor(tokenizer, image_size: int = 336, patch_size: int = 14):
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    # the PIL backend named explicitly: the same pixels whether or not torchvision is installed (transformers
    # would pick its torchvision backend where it is)
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_llava(seed: int = 0, num_layers: int = 4, vision_layers: int = 3, hidden: int = 64, image_size: int = 336, dtype=torch.float32):
    """(model, processor) of a tiny LLaVA-1.5: CLIP ViT with [CLS], Llama LLM, 24x24 = 576 patches at 336 px."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = word_tokenizer()
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            image_size=image_size,
            patch_size=14,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=vision_layers,
            num_attention_heads=4,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=2048,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).to(dtype).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, llava_processor(tokenizer, image_size)


# -- the other families ----------------------------------------------------------------------------------------
QWEN_SPECIALS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>", "<|im_start|>", "<|im_end|>"]
NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672]]


def _llama_text(tokenizer, num_layers: int, hidden: int):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def _clip(image_size: int, vision_layers: int):
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        image_size=image_size,
        patch_size=14,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=vision_layers,
        num_attention_heads=4,
        projection_dim=32,
    )


def _finish(model, tokenizer, seed: int, dtype):
    model = model.to(dtype).eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def tiny_llava_next(seed: int = 0, num_layers: int = 4, vision_layers: int = 3, hidden: int = 64, dtype=torch.float32):
    """(model, processor) of a tiny LLaVA-NeXT: CLIP at a 336 px base crop, AnyRes grid pinpoints up to 672x672.

    A 336x336 image gives 1176 LLM tokens (576 base + 24 rows x (24 + newline)), a 672x672 one 2928, as the
    7B model with the same pinpoints would (transformers' ``get_anyres_image_grid_shape`` and unpadding).
    """
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil, LlavaNextProcessor

    tokenizer = word_tokenizer()
    config = LlavaNextConfig(
        vision_config=_clip(336, vision_layers),
        text_config=_llama_text(tokenizer, num_layers, hidden),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=NEXT_PINPOINTS,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = _finish(LlavaNextForConditionalGeneration(config), tokenizer, seed, dtype)
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        image_grid_pinpoints=NEXT_PINPOINTS,
    )
    processor = LlavaNextProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )
    return model, processor


def tiny_video_llava(seed: int = 0, num_layers: int = 4, vision_layers: int = 3, hidden: int = 64, dtype=torch.float32):
    """(model, (image processor, tokenizer)) of a tiny Video-LLaVA: 224 px CLIP towers for images and video.

    ``VideoLlavaProcessor`` cannot be built without torchvision (transformers 5.x's video processors need it), so the adapter
    expands the ``<image>`` / ``<video>`` placeholders itself and preprocesses frames with the image processor.
    """
    from transformers import VideoLlavaConfig, VideoLlavaForConditionalGeneration, VideoLlavaImageProcessor

    tokenizer = word_tokenizer(extra_specials=("<video>",))
    config = VideoLlavaConfig(
        vision_config=_clip(224, vision_layers),
        text_config=_llama_text(tokenizer, num_layers, hidden),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        image_seq_length=256,
        video_seq_length=8 * 257,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = _finish(VideoLlavaForConditionalGeneration(config), tokenizer, seed, dtype)
    image_processor = VideoLlavaImageProcessor(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224})
    return model, (image_processor, tokenizer)


def tiny_qwen2_5_vl(seed: int = 0, num_layers: int = 4, vision_depth: int = 4, hidden: int = 64, dtype=torch.float32):
    """(model, ManualProcessor) of a tiny Qwen2.5-VL: windowed ViT (112 px windows) with full
    attention at blocks 1 and 3, 2x2 merger, M-RoPE sections [2, 3, 3] (sum = head_dim / 2).

    ``Qwen2_5_VLProcessor`` cannot be built without torchvision (transformers 5.x's video processors need it); the adapter expands
    ``<|image_pad|>`` / ``<|video_pad|>`` and builds ``mm_token_type_ids`` and the video patches itself.
    """
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen2VLImageProcessorPil

    from prunebench.adapters.video_llava import ManualProcessor

    tokenizer = word_tokenizer(extra_specials=tuple(QWEN_SPECIALS), image_token="<|image_pad|>", video_token="<|video_pad|>")
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]},
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            out_hidden_size=hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[1, vision_depth - 1],
            tokens_per_second=2,
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = _finish(Qwen2_5_VLForConditionalGeneration(config), tokenizer, seed, dtype)
    image_processor = Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=448 * 448, patch_size=14, merge_size=2, temporal_patch_size=2)
    # tiny video limits too (the real default, 128*28*28 per frame, would upscale 224 px test frames to 336 px)
    return model, ManualProcessor(image_processor, tokenizer, video_size={"shortest_edge": 28 * 28 * 4, "longest_edge": 448 * 448})


def tiny_qwen3_vl(seed: int = 0, num_layers: int = 4, vision_depth: int = 3, hidden: int = 64, dtype=torch.float32):
    """(model, ManualProcessor) of a tiny Qwen3-VL: windowless ViT with 16 px patches (one LLM token per 32 x 32
    pixels), learned 8 x 8 position grid, 2x2 merger, DeepStack from ViT blocks 0 and 1 (added after LLM layers 0
    and 1), interleaved M-RoPE sections [2, 3, 3] (sum = head_dim / 2) and a Qwen3 LLM with GQA (4 query / 2
    key-value heads, q/k norms). The adapter expands ``<|image_pad|>`` and builds ``mm_token_type_ids`` itself.
    """
    from transformers import Qwen2VLImageProcessorPil, Qwen3VLConfig, Qwen3VLForConditionalGeneration

    from prunebench.adapters.video_llava import ManualProcessor

    tokenizer = word_tokenizer(extra_specials=tuple(QWEN_SPECIALS), image_token="<|image_pad|>", video_token="<|video_pad|>")
    ids = tokenizer.convert_tokens_to_ids
    config = Qwen3VLConfig(
        text_config=dict(
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=hidden // 4,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": 5e6, "mrope_section": [2, 3, 3], "mrope_interleaved": True},
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=32,
            intermediate_size=64,
            num_heads=4,
            out_hidden_size=hidden,
            patch_size=16,
            spatial_merge_size=2,
            temporal_patch_size=2,
            num_position_embeddings=64,
            deepstack_visual_indexes=[0, 1],
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = _finish(Qwen3VLForConditionalGeneration(config), tokenizer, seed, dtype)
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=32 * 32 * 4, max_pixels=448 * 448, patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )
    return model, ManualProcessor(image_processor, tokenizer)


ONEVISION_PINPOINTS = [[126, 126], [126, 252], [252, 126], [252, 252]]


def tiny_llava_onevision(seed: int = 0, num_layers: int = 4, vision_layers: int = 3, hidden: int = 64, dtype=torch.float32):
    """(model, ManualProcessor) of a tiny LLaVA-OneVision: SigLIP (no [CLS]) at a 126 px crop, 9 x 9 = 81 patches
    per crop (odd, as the 7B model's 27 x 27, so video pooling rounds up: 5 x 5 = 25 per frame), AnyRes pinpoints up
    to 2 x 2 crops with ``anyres_max_9``, and a Qwen2 LLM with GQA (4 query / 2 key-value heads).

    ``LlavaOnevisionProcessor`` needs a video processor, which cannot be built without torchvision; the adapter
    expands ``<image>`` / ``<video>`` itself and preprocesses frames with the image processor's base-crop resize.
    """
    from transformers import LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, LlavaOnevisionImageProcessorPil

    from prunebench.adapters.video_llava import ManualProcessor

    tokenizer = word_tokenizer(extra_specials=("<video>",), video_token="<video>")
    config = LlavaOnevisionConfig(
        vision_config=dict(
            model_type="siglip_vision_model",
            image_size=126,
            patch_size=14,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=vision_layers,
            num_attention_heads=4,
            vision_use_head=False,
        ),
        text_config=dict(
            model_type="qwen2",
            vocab_size=len(tokenizer),
            hidden_size=hidden,
            intermediate_size=2 * hidden,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        video_token_index=tokenizer.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=ONEVISION_PINPOINTS,
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = _finish(LlavaOnevisionForConditionalGeneration(config), tokenizer, seed, dtype)
    image_processor = LlavaOnevisionImageProcessorPil(
        size={"height": 126, "width": 126},
        image_grid_pinpoints=ONEVISION_PINPOINTS,
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )
    return model, ManualProcessor(image_processor, tokenizer)
