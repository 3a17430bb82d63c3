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


def word_tokenizer(words: list[str] | tuple[str, ...] = WORDS, extra: tuple[str, ...] = ("USER", ":", "ASSISTANT", "?", ".", ",")):
    """A word-level fast tokenizer over ``words`` (transformers-notes §2.1)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + sorted(set(words) | set(extra)))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    return tokenizer


def llava_processor(tokenizer, image_size: int = 336, patch_size: int = 14):
    from transformers import CLIPImageProcessor, LlavaProcessor

    image_processor = CLIPImageProcessor(size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size})
    return LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=patch_size,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE,
    )


def tiny_llava(seed: int = 0, num_layers: int = 4, vision_layers: int = 3, hidden: int = 64, image_size: int = 336, dtype=torch.float32):
    """(model, processor) of a tiny LLaVA-1.5: CLIP ViT with [CLS], Llama LLM, 24x24 = 576 patches at 336 px."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    tokenizer = word_tokenizer()
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            image_size=image_size, patch_size=14, hidden_size=32, intermediate_size=64,
            num_hidden_layers=vision_layers, num_attention_heads=4, projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=num_layers,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
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
