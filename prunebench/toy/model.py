"""Build the toy LLaVA: word-level tokenizer, LlavaProcessor (PIL image processor) and a small
stock ``LlavaForConditionalGeneration`` (CLIP ViT with [CLS] + Llama decoder), all from scratch.

The saved directory is an ordinary ``save_pretrained`` checkpoint, loaded with
``LlavaForConditionalGeneration.from_pretrained(dir, use_safetensors=True)`` and ``AutoProcessor.from_pretrained(dir)``,
exactly like a hub model. :func:`load_checkpoint` is how the toy commands load one: safetensors only, never a
pickled ``pytorch_model.bin``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from .world import vocabulary

IMAGE_TOKEN = "<image>"
SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN)
CHAT_WORDS = ("user", ":", "assistant")

# LLaVA-1.5 style prompt: "USER: <image>\n<question> ASSISTANT:" -> "<answer></s>"
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% else %}ASSISTANT: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% endif %}</s>"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def load_checkpoint(model_dir, dtype=None):
    """``LlavaForConditionalGeneration`` from a checkpoint folder, from its safetensors only (a pickled
    ``pytorch_model.bin`` is never loaded: unpickling runs code); a folder without them is a one-line error."""
    from pathlib import Path

    from transformers import LlavaForConditionalGeneration

    from prunebench.core import PruneBenchError

    folder = Path(model_dir)
    if not folder.is_dir() or not any(folder.glob("*.safetensors")):
        raise PruneBenchError(
            f"{folder} holds no *.safetensors weights; prunebench loads safetensors only (a pickled "
            "pytorch_model.bin can run code): convert it with safetensors.torch.save_file, or pass another folder"
        )
    kwargs = {"dtype": dtype} if dtype is not None else {}
    return LlavaForConditionalGeneration.from_pretrained(folder, use_safetensors=True, **kwargs)


def format_prompt(question: str) -> str:
    """The string ``apply_chat_template`` produces for one image + question (checked equal in the tests)."""
    return f"USER: {IMAGE_TOKEN}\n{question} ASSISTANT:"


@dataclass(frozen=True)
class ToyArch:
    vit_layers: int = 3
    vit_width: int = 64
    vit_heads: int = 4
    vit_ffn: int = 256
    llm_layers: int = 6
    llm_width: int = 96
    llm_heads: int = 4
    llm_ffn: int = 256


def build_tokenizer():
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    words = list(SPECIAL_TOKENS) + list(CHAT_WORDS) + vocabulary()
    vocab = {w: i for i, w in enumerate(words)}
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": IMAGE_TOKEN},
        padding_side="left",
    )
    fast.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    fast.model_max_length = 1024
    return fast


def build_processor(tokenizer=None):
    from transformers import CLIPImageProcessorPil, LlavaProcessor

    tokenizer = tokenizer or build_tokenizer()
    ip = CLIPImageProcessorPil(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return LlavaProcessor(
        image_processor=ip,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


def build_model(tokenizer, arch: ToyArch = ToyArch(), seed: int = 0):
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        image_size=336,
        patch_size=14,
        hidden_size=arch.vit_width,
        intermediate_size=arch.vit_ffn,
        num_hidden_layers=arch.vit_layers,
        num_attention_heads=arch.vit_heads,
        projection_dim=arch.vit_width,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=arch.llm_width,
        intermediate_size=arch.llm_ffn,
        num_hidden_layers=arch.llm_layers,
        num_attention_heads=arch.llm_heads,
        num_key_value_heads=arch.llm_heads,
        max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    cfg = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        image_seq_length=576,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(cfg)
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.max_new_tokens = 4
    model.generation_config.do_sample = False
    return model


def arch_dict(arch: ToyArch) -> dict:
    return asdict(arch)
