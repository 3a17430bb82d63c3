"""LLaVA-1.5 on the stock ``transformers`` ``LlavaForConditionalGeneration``.

Vision features follow ``LlavaModel.get_image_features`` exactly (``hidden_states[vision_feature_layer]``,
[CLS] dropped under the "default" strategy, then ``multi_modal_projector``), so keeping every token
reproduces stock ``generate``. The image span is located from ``input_ids == image_token_id``; nothing is
hard-coded (FastV's evaluation scripts pass ``--fast-v-sys-length 36`` where the span starts at 35:
github.com/pkunlp-icler/FastV @ d165972, ``src/FastV/inference/eval/*.sh``).

Preprocessing (``preprocess=``, recorded by :meth:`describe`):
    * ``"hf"`` (default): the checkpoint's own processor (resize the short side, centre-crop) and chat
      template (no system prompt), i.e. what ``llava-hf`` checkpoints do;
    * ``"paper"``: what the published LLaVA-1.5 numbers used (original ``haotian-liu/LLaVA``,
      ``image_aspect_ratio='pad'``): ``expand2square`` with the mean colour as the original computes it,
      ``tuple(int(x * 255) for x in image_mean)`` (truncated: CLIP's mean gives (122, 116, 104)), then the
      processor's resize, the ``vicuna_v1`` system prompt, and the original's ``tokenizer_image_token``: the
      prompt is split at ``<image>``, each chunk tokenized **on its own** (the first keeps its BOS, later ones
      lose theirs) and the image tokens inserted between. Known difference to ``"hf"``, which tokenizes the whole
      prompt in one pass: with LLaVA's Llama SentencePiece tokenizer the chunk after ``<image>`` is
      ``"\\n{question} ASSISTANT:"`` tokenized from scratch, so it starts with the dummy-prefix ``▁`` (id 29871)
      before ``\\n`` (13), and the chunk before ends in ``USER:`` + ``▁``, exactly as the original model saw it;
      a one-pass tokenization around the special ``<image>`` token need not produce those. Expect accuracy
      shifts between the two modes even with nothing pruned.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image
from torch import nn

from prunebench.adapters.base import Batch, LLMInputs, LLMShape, ModelAdapter, Sample, encoder_prefix, hidden_index
from prunebench.attention import Captured, capture
from prunebench.core import PruneBenchError
from prunebench.views import VisionView

DEFAULT_PROMPT = "USER: <image>\n{question} ASSISTANT:"
VICUNA_V1_PROMPT = (
    "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the human's questions. USER: <image>\n{question} ASSISTANT:"
)
PREPROCESS_MODES = ("hf", "paper")


def expand_to_square(image: Image.Image, mean: Sequence[float]) -> Image.Image:
    """LLaVA's ``expand2square``: pad the short side symmetrically with the mean colour (0..255)."""
    width, height = image.size
    if width == height:
        return image
    side = max(width, height)
    fill = tuple(int(m * 255) for m in mean)  # truncated, as the original (int(x*255)), not rounded
    canvas = Image.new(image.mode, (side, side), fill)
    canvas.paste(image, ((side - width) // 2, (side - height) // 2))
    return canvas


def tokenizer_image_token(tokenizer: Any, prompt: str, image_token: str, image_token_id: int, count: int) -> list[int]:
    """The original LLaVA ``tokenizer_image_token`` with the placeholder expanded to ``count`` image tokens.

    Each chunk between ``image_token`` occurrences is tokenized on its own; if the tokenizer prepends BOS, the
    first chunk keeps it and the others drop it.
    """
    chunks = [tokenizer(chunk).input_ids for chunk in prompt.split(image_token)]
    offset = 1 if chunks and chunks[0] and chunks[0][0] == tokenizer.bos_token_id else 0
    ids = chunks[0][:offset]
    for i, chunk in enumerate(chunks):
        if i:
            ids.extend([image_token_id] * count)
        ids.extend(chunk[offset:])
    return ids


def positions_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids exactly as ``generate`` derives them from a left-padded 2-D mask."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 0)


class LlavaAdapter(ModelAdapter):
    family = "llava"

    model_class = "LlavaForConditionalGeneration"  # e.g. llava-hf/llava-1.5-7b-hf

    def __init__(self, model: nn.Module, processor: Any, name: str = "", preprocess: str = "hf", vision_stop: str = "feature"):
        super().__init__(model, processor, name, vision_stop)
        if preprocess not in PREPROCESS_MODES:
            raise PruneBenchError(f"preprocess must be one of {', '.join(PREPROCESS_MODES)}, got {preprocess!r}")
        self.preprocess = preprocess
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        self.image_token_id = model.config.image_token_id

    # -- structure -----------------------------------------------------------------------------------------
    @property
    def _inner(self) -> nn.Module:
        return self.model.model

    def decoder_layers(self) -> nn.ModuleList:
        return self._inner.language_model.layers

    def final_norm(self) -> nn.Module:
        return self._inner.language_model.norm

    def vision_attention(self, layer: int) -> nn.Module:
        return self._inner.vision_tower.encoder.layers[layer].self_attn

    @property
    def llm_shape(self) -> LLMShape:
        cfg = self.model.config.text_config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return LLMShape(
            num_layers=cfg.num_hidden_layers,
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_heads=cfg.num_attention_heads,
            num_kv_heads=cfg.num_key_value_heads or cfg.num_attention_heads,
            head_dim=head_dim,
            vocab_size=cfg.vocab_size,
        )

    @property
    def num_vision_layers(self) -> int:
        return self.model.config.vision_config.num_hidden_layers

    def _feature_layers(self) -> list[int]:
        layer = self.model.config.vision_feature_layer
        return list(layer) if isinstance(layer, (list, tuple)) else [layer]

    @property
    def feature_layer(self) -> int:
        # hidden_states[i] is the output of encoder layer i - 1 (hidden_states[0] = embeddings)
        index = self._feature_layers()[-1] % (self.num_vision_layers + 1)
        return index - 1

    def vision_layers_run(self, capture_layers: Sequence[int] = ()) -> int:
        deepest = max(hidden_index(i, self.num_vision_layers) for i in self._feature_layers())  # several feature layers: the deepest
        needed = super().vision_layers_run(capture_layers)
        return needed if self.vision_stop == "full" else max(needed, deepest)

    def run_tower(self, tower: nn.Module, pixels: torch.Tensor, capture_layers: Sequence[int] = ()) -> list[torch.Tensor]:
        """The tower's feature-layer hidden states (concatenated over ``vision_feature_layer`` when it is a list),
        from a run that stops where ``vision_stop`` says (:meth:`vision_layers_run`); the features are bit-identical
        to the full run's, ``hidden_states[vision_feature_layer]`` of ``get_image_features``."""
        count, total = self.vision_layers_run(capture_layers), self.num_vision_layers
        if count < total:
            states = encoder_prefix(tower, pixels, count)
        else:  # every layer runs: the stock forward, as get_image_features calls it
            states = tower(pixels, output_hidden_states=True, return_dict=True).hidden_states
        return [states[hidden_index(i, total)] for i in self._feature_layers()]

    # -- data ----------------------------------------------------------------------------------------------
    def prompt(self, question: str) -> str:
        if self.preprocess == "paper":
            return VICUNA_V1_PROMPT.format(question=question)
        template = getattr(self.processor, "chat_template", None)
        if template:
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
            return self.processor.apply_chat_template(conversation, add_generation_prompt=True)
        return DEFAULT_PROMPT.format(question=question)

    def prepare(self, samples: Sequence[Sample]) -> Batch:
        samples = list(samples)
        missing = [s.id for s in samples if s.image is None]
        if missing:
            raise ValueError(f"samples {missing[:5]} have no image; LLaVA-1.5 pruning needs one image per sample")
        images = [s.image.convert("RGB") for s in samples]
        if self.preprocess == "paper":
            inputs = self._paper_inputs(samples, images)
        else:
            inputs = self.processor(images=images, text=[self.prompt(s.question) for s in samples], padding=True, return_tensors="pt")
        inputs = {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        counts = (inputs["input_ids"] == self.image_token_id).sum(1)
        if bool((counts != counts[0]).any()) or int(counts[0]) == 0:
            raise ValueError(f"each prompt must hold exactly one image; image-token counts per sample: {counts.tolist()}")
        return Batch(samples, inputs)

    def _paper_inputs(self, samples: Sequence[Sample], images: list[Image.Image]) -> dict[str, torch.Tensor]:
        """expand2square + the image processor, and ``tokenizer_image_token`` on the vicuna_v1 prompt (module docstring)."""
        processor, tokenizer = self.processor.image_processor, self.processor.tokenizer
        pixels = processor(images=[expand_to_square(im, processor.image_mean) for im in images], return_tensors="pt")["pixel_values"]
        vision = self.model.config.vision_config
        side = vision.image_size // vision.patch_size
        count = side * side + (0 if self.model.config.vision_feature_select_strategy == "default" else 1)
        token = tokenizer.convert_ids_to_tokens(self.image_token_id)
        ids = [tokenizer_image_token(tokenizer, self.prompt(s.question).replace("<image>", token), token, self.image_token_id, count) for s in samples]
        encoded = tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], "pixel_values": pixels}

    def encode(self, batch: Batch, capture_layers: Sequence[int] = ()) -> VisionView:
        tower = self._inner.vision_tower
        captured: dict[int, Captured] = {}
        requests = {self.vision_attention(layer): _store(captured, layer) for layer in capture_layers}
        with capture(requests):
            selected = self.run_tower(tower, batch.inputs["pixel_values"], capture_layers)
        strategy = self.model.config.vision_feature_select_strategy
        has_cls = strategy == "default"
        feats = torch.cat([h[:, 1:] if has_cls else h for h in selected], dim=-1)
        cls_feature = torch.cat([h[:, 0] for h in selected], dim=-1) if has_cls else None
        side = round(feats.shape[1] ** 0.5)
        return VisionView(
            features=feats,
            cls_feature=cls_feature,
            grid=(side, feats.shape[1] // side),
            feature_layer=self.feature_layer,
            num_vision_layers=self.num_vision_layers,
            projector=self.project,
            captured=captured,
            has_cls=has_cls,
            instruction=self.instruction(batch),
        )

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self._inner.multi_modal_projector(features)

    def assemble(self, batch: Batch, visual: torch.Tensor, kept: torch.Tensor | None, policy: str, **_: Any) -> LLMInputs:
        input_ids, mask = batch.input_ids, batch.attention_mask
        bsz, length = input_ids.shape
        is_image = input_ids == self.image_token_id
        num_image = int(is_image[0].sum())
        start = is_image.long().argmax(dim=1, keepdim=True)  # (B, 1) first image token
        n = visual.shape[1]
        new_len = length - num_image + n
        j = torch.arange(new_len, device=input_ids.device).expand(bsz, -1)
        in_span = (j >= start) & (j < start + n)
        source = torch.where(j < start, j, j + (num_image - n)).clamp(max=length - 1)  # text position in the old sequence
        text = self.model.get_input_embeddings()(input_ids.gather(1, source))
        slot = (j - start).clamp(0, max(n - 1, 0))
        vis = visual.to(text.dtype).gather(1, slot[..., None].expand(-1, -1, visual.shape[-1]))
        embeds = torch.where(in_span[..., None], vis, text)
        new_mask = torch.where(in_span, torch.ones_like(mask[:, :1]), mask.gather(1, source))
        if policy == "compact":
            positions = positions_from_mask(new_mask)
        elif policy == "original":
            if kept is None:
                raise ValueError("merged tokens have no original position; this method needs position_policy='compact'")
            old = positions_from_mask(mask)
            old_index = torch.where(in_span, start + kept.gather(1, slot), source)
            positions = old.gather(1, old_index)
        else:
            raise ValueError(f"unknown position policy {policy!r}; expected 'compact' or 'original'")
        visual_index = start + torch.arange(n, device=input_ids.device)
        return LLMInputs(embeds, new_mask, positions, visual_index)

    def run_vision(self, batch: Batch) -> Any:
        return self._inner.vision_tower(batch.inputs["pixel_values"], output_hidden_states=True, return_dict=True)

    def describe(self) -> dict[str, Any]:
        prompt = VICUNA_V1_PROMPT if self.preprocess == "paper" else ("chat template" if getattr(self.processor, "chat_template", None) else DEFAULT_PROMPT)
        image = "expand-to-square (int(255*mean) colour) + resize" if self.preprocess == "paper" else "processor (resize short side + centre crop)"
        tokens = "tokenizer_image_token (chunks tokenized separately)" if self.preprocess == "paper" else "processor (one pass)"
        return {**super().describe(), "preprocess": self.preprocess, "image_preprocessing": image, "prompt": prompt, "tokenization": tokens}

    def stock_generate(self, batch: Batch, **generate_kwargs: Any) -> torch.Tensor:
        out = self.model.generate(**batch.inputs, **generate_kwargs)
        return out[:, batch.input_ids.shape[1] :]


def _store(target: dict[int, Captured], layer: int):
    def callback(cap: Captured) -> None:
        target[layer] = cap

    return callback
