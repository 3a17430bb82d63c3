"""Video-LLaVA on the stock ``transformers`` ``VideoLlavaForConditionalGeneration``: images and videos.

* Images go through the **image tower**: ``hidden_states[-2]``, [CLS] dropped, 16x16 = 256 tokens at 224 px.
* Videos go through the **video tower** frame by frame, and the HF model **keeps every frame's [CLS]**:
  T x 257 tokens (8 frames -> 2056; ``VideoLlavaModel.get_video_features`` drops no [CLS] for videos, and the
  authors' ``LanguageBindVideoTower.feature_select`` returns every token too, github.com/PKU-YuanGroup/Video-LLaVA
  @ 9ab69e6). VisPruner and VisionZip state Video-LLaVA budgets out of 8 x 256 = 2048 tokens; we follow the stock
  HF model, so the unpruned baseline equals stock ``generate``. The 8 frame [CLS] tokens are ordinary
  candidates: ``cls_attention`` gives each token the attention of its own frame's [CLS] (a [CLS] token gets its
  attention to itself), ``cls_feature`` is None.
* Budget scope: ``video`` (or ``image``; default) = one budget over all tokens of the sample; ``frame`` = the
  budget applies per frame and the engine multiplies it by the number of frames (``VisionView.num_units``;
  ``unit_of`` gives each token's frame). Images are one unit.
* A batch may mix images and videos; the engine runs them as separate groups (different token counts).

Preprocessing: ``VideoLlavaProcessor`` cannot be built without torchvision (its video processor needs it), so
inputs are built the documented other way, on every machine alike: the image processor
(``VideoLlavaImageProcessor``: resize 224 + centre crop + CLIP normalisation, which is also what the video
processor does per frame) for images and for each frame, and the ``<image>`` / ``<video>`` placeholder
expanded by hand to 256 / T x 257 tokens, in the model card's prompt ``USER: <video>\\n{question} ASSISTANT:``.
Frames are sampled by the caller (``Sample.video``; Video-LLaVA was trained on 8 uniformly spaced frames).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import nn

from prunebench.adapters.base import Batch, LLMInputs, Sample, VisualLayout, splice_span
from prunebench.adapters.llava import LlavaAdapter, _store, positions_from_mask
from prunebench.attention import Captured, capture
from prunebench.core import PruneBenchError
from prunebench.views import UnitVisionView

PROMPT = "USER: {placeholder}\n{question} ASSISTANT:"


class ManualProcessor:
    """An image processor and a tokenizer, where the model's processor class cannot be built (torchvision).

    ``video_size``: the video processor's ``{"shortest_edge", "longest_edge"}`` pixel range, where it differs
    from the image processor's (Qwen2.5-VL); saved as ``video_preprocessor_config.json``.
    """

    def __init__(self, image_processor: Any, tokenizer: Any, video_size: dict[str, int] | None = None):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.video_size = video_size
        self.chat_template = None

    def save_pretrained(self, directory: str) -> None:
        import json
        from pathlib import Path

        self.image_processor.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        if self.video_size:
            config = {"size": dict(self.video_size), "video_processor_type": "Qwen2VLVideoProcessor"}
            (Path(directory) / "video_preprocessor_config.json").write_text(json.dumps(config, indent=2))


class VideoLlavaAdapter(LlavaAdapter):
    family = "video_llava"
    budget_scopes = ("video", "frame")

    model_class = "VideoLlavaForConditionalGeneration"  # e.g. LanguageBind/Video-LLaVA-7B-hf

    @classmethod
    def load_processor(cls, name_or_path: str, trust_remote_code: bool = False) -> ManualProcessor:
        """The image processor and tokenizer (the processor object needs torchvision for its video processor)."""
        from transformers import AutoTokenizer, VideoLlavaImageProcessor

        return ManualProcessor(
            VideoLlavaImageProcessor.from_pretrained(name_or_path), AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        )

    def __init__(self, model: nn.Module, processor: Any, name: str = "", preprocess: str = "hf", vision_stop: str = "feature"):
        if isinstance(processor, tuple):
            processor = ManualProcessor(*processor)
        if preprocess != "hf":
            raise PruneBenchError("Video-LLaVA has one preprocessing (CLIP resize + centre crop); use preprocess='hf'")
        config = model.config
        if not hasattr(config, "image_token_id"):
            config.image_token_id = config.image_token_index
        super().__init__(model, processor, name, preprocess, vision_stop)
        self.image_token_id = config.image_token_index
        self.video_token_id = config.video_token_index
        side = config.vision_config.image_size // config.vision_config.patch_size
        self._grid = (side, side)
        self._has_cls = config.vision_feature_select_strategy == "default"

    # -- structure -----------------------------------------------------------------------------------------
    def _tower(self, modality: str) -> nn.Module:
        return self._inner.video_tower if modality == "video" else self._inner.image_tower

    def vision_attention(self, layer: int, modality: str = "image") -> nn.Module:
        return self._tower(modality).encoder.layers[layer].self_attn

    def vision_attention_modules(self, batch: Batch, layer: int) -> list[nn.Module]:
        return [self.vision_attention(layer, m) for m in self._modalities(batch)]

    # -- data ----------------------------------------------------------------------------------------------
    def group_key(self, sample: Sample) -> Hashable:
        return ("video", len(sample.video)) if sample.modality == "video" else ("image",)

    def prompt(self, question: str, modality: str = "image") -> str:
        return PROMPT.format(placeholder="<video>" if modality == "video" else "<image>", question=question)

    def tokens_per_frame(self) -> int:
        return self._grid[0] * self._grid[1] + 1  # the video tower keeps [CLS]

    def prepare(self, samples: Sequence[Sample]) -> Batch:
        samples = list(samples)
        tokenizer = self.processor.tokenizer
        image_token = tokenizer.convert_ids_to_tokens(self.image_token_id)
        video_token = tokenizer.convert_ids_to_tokens(self.video_token_id)
        texts, images, videos = [], [], []
        for s in samples:
            if s.image is None and s.video is None:
                raise ValueError(f"sample {s.id!r} has neither an image nor a video")
            prompt = self.prompt(s.question, s.modality).replace("<image>", image_token).replace("<video>", video_token)
            if s.modality == "video":
                videos.append([f.convert("RGB") for f in s.video])
                prompt = prompt.replace(video_token, video_token * (len(s.video) * self.tokens_per_frame()), 1)
            else:
                images.append(s.image.convert("RGB"))
                prompt = prompt.replace(image_token, image_token * (self._grid[0] * self._grid[1] + (0 if self._has_cls else 1)), 1)
            texts.append(prompt)
        inputs = dict(tokenizer(texts, padding=True, return_tensors="pt"))
        kwargs = {"return_tensors": "pt", "return_legacy_image_output": False}
        if images:
            inputs["pixel_values"] = self.processor.image_processor(images=images, **kwargs)["pixel_values"]
        if videos:
            if len({len(v) for v in videos}) != 1:
                raise ValueError(f"videos in one batch must have the same number of frames, got {sorted({len(v) for v in videos})}")
            frames = self.processor.image_processor(images=[f for v in videos for f in v], **kwargs)["pixel_values"]
            inputs["pixel_values_videos"] = frames.view(len(videos), len(videos[0]), *frames.shape[1:])
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        return Batch(samples, inputs)

    @staticmethod
    def _modalities(batch: Batch) -> list[str]:
        return list(dict.fromkeys(s.modality for s in batch.samples))

    def _modality(self, batch: Batch) -> str:
        modalities = self._modalities(batch)
        if len(modalities) != 1:
            raise PruneBenchError("encode() takes images or videos, not both; the engine groups a mixed batch by modality")
        return modalities[0]

    def run_vision(self, batch: Batch) -> Any:
        outs = []
        if "pixel_values" in batch.inputs:
            outs.append(self._inner.image_tower(batch.inputs["pixel_values"], output_hidden_states=True))
        if "pixel_values_videos" in batch.inputs:
            videos = batch.inputs["pixel_values_videos"]
            outs.append(self._inner.video_tower(videos.flatten(0, 1), output_hidden_states=True))
        return outs

    def encode(self, batch: Batch, capture_layers: Sequence[int] = ()) -> UnitVisionView:
        modality = self._modality(batch)
        bsz = len(batch.samples)
        pixels = batch.inputs["pixel_values_videos"].flatten(0, 1) if modality == "video" else batch.inputs["pixel_values"]
        captured: dict[int, Captured] = {}
        requests = {self.vision_attention(layer, modality): _store(captured, layer) for layer in capture_layers}
        with capture(requests):
            hidden = torch.cat(self.run_tower(self._tower(modality), pixels, capture_layers), dim=-1)  # (B*U, T, D)
        units, tokens = hidden.shape[0] // bsz, hidden.shape[1]
        flat = hidden.reshape(bsz, units * tokens, -1)
        if modality == "video":  # every token of every frame, [CLS] included, enters the LLM
            token_map = torch.arange(units * tokens, device=hidden.device)
            cls_feature = None
        else:
            token_map = torch.arange(1 if self._has_cls else 0, tokens, device=hidden.device)
            cls_feature = flat[:, 0] if self._has_cls else None
        token_map = token_map.expand(bsz, -1)
        batch.meta["placeholder"] = self.video_token_id if modality == "video" else self.image_token_id
        return UnitVisionView(
            features=flat.gather(1, token_map[..., None].expand(-1, -1, flat.shape[-1])),
            cls_feature=cls_feature,
            grid=self._grid,
            feature_layer=self.feature_layer,
            num_vision_layers=self.num_vision_layers,
            projector=self.project,
            captured=captured,
            has_cls=self._has_cls,
            num_units=units,
            unit_kind="frame" if modality == "video" else "image",
            unit_of=token_map // tokens,
            token_map=token_map,
            unit_tokens=tokens,
            instruction=self.instruction(batch),
        )

    def assemble(self, batch: Batch, visual: torch.Tensor, kept: torch.Tensor | None, policy: str, layout: VisualLayout | None = None) -> LLMInputs:
        input_ids, mask = batch.input_ids, batch.attention_mask
        bsz, n, device = input_ids.shape[0], visual.shape[1], input_ids.device
        token = batch.meta.get("placeholder", self.video_token_id if self._modality(batch) == "video" else self.image_token_id)
        if layout is None:
            layout = VisualLayout(kept if kept is not None else torch.arange(n, device=device).expand(bsz, -1))
        keep = layout.keep
        # merged rows stand for the first / last kept slot; with nothing kept (pooling merges every token) for slot 0
        first, last = (keep[:, :1], keep[:, -1:]) if keep.shape[1] else (keep.new_zeros(bsz, 1),) * 2
        source = torch.cat([first.expand(-1, layout.prepend), keep, last.expand(-1, layout.append)], dim=1)
        embeds, new_mask, old_index, start = splice_span(self.model.get_input_embeddings(), input_ids, mask, input_ids == token, visual, source)
        if policy == "compact":
            positions = positions_from_mask(new_mask)
        elif policy == "original":
            if layout.merged or kept is None:
                raise ValueError("merged tokens have no original position; this method needs position_policy='compact'")
            positions = positions_from_mask(mask).gather(1, old_index)
        else:
            raise ValueError(f"unknown position policy {policy!r}; expected 'compact' or 'original'")
        return LLMInputs(embeds, new_mask, positions, start + torch.arange(n, device=device))

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "prompt": PROMPT,
            "video_tokens_per_frame": self.tokens_per_frame(),
            "preprocessing": "VideoLlavaImageProcessor per image/frame + hand-expanded placeholders",
        }
