"""Qwen2.5-VL on the stock ``transformers`` ``Qwen2_5_VLForConditionalGeneration``: images and video.

What differs from the LLaVA family, and the choices made. Few originals have Qwen2.5-VL code; the conventions
below follow the Qwen2.5-VL ports of HiPrune (github.com/Danielement321/HiPrune @ 6e83a12,
``Qwen2_5_VL/qwen2_5_vl_HiPrune.py``), DART (github.com/ZichenWen1/DART @ 5a19452) and LightCompress
(github.com/ModelTC/LightCompress @ 9701d03, ``llmc/compression/token_reduction/``):

* **Granularity = the LLM token = one 2x2 merge unit.** ``VisionView.features`` (B, N, 4 x D_vit) are the
  merger's input for each merged token (the four ViT outputs of its 2x2 unit after ``merger.ln_q``,
  concatenated), in raster order (the ViT's window order undone with ``argsort(window_index)``); the
  "projector" is ``merger.mlp``, so ``project(features)`` is exactly the stock merged embedding. Merging
  methods therefore average pre-projector features, as on LLaVA.
* **No [CLS]** (``has_cls=False``): ``VisionView.importance()`` — the signal that replaces [CLS] attention — is
  the attention each token **receives** at the last full-attention ViT block (``fullatt_block_indexes[-1]``;
  block 31 of the 7B model, the block the LightCompress ports read), head-mean, averaged over all queries of
  its image/frame, then averaged over the 4 patches of its merge unit. It is computed from captured q/k per
  kernel call (one per image/frame for full-attention blocks, one per window otherwise); the adapter captures
  that block whenever a method captures any ViT layer. ``received_attention(layer)`` / ``keys(layer)`` work
  for any block (windowed blocks: attention within the window).
* **Positions**: M-RoPE positions come from the model's own ``get_rope_index`` on the **unpruned** sequence
  (with ``mm_token_type_ids``, which 5.23 requires) and every kept token keeps its 3-D position, for every
  method (those ports all keep them; the ``compact`` policy does not apply on Qwen2.5-VL). The 3-row
  ``position_ids`` go to ``generate``, which uses them unchanged and continues with last + 1 — the stock
  ``text position + rope_delta`` rule, because the prompt ends with text. Merged (contextual) tokens get the
  position of the image's first (prepended) or last (appended) token.
* **Dynamic resolution**: the token count depends on the image size (``smart_resize`` to multiples of 28);
  the engine groups a batch by image size.
* **Video**: frames are grouped in temporal pairs (``temporal_patch_size`` 2), so T frames give T/2 units of
  (H/28)x(W/28) tokens; ``--budget-scope frame`` applies the budget per temporal unit. The temporal M-RoPE
  index of unit i is ``i * second_per_grid * tokens_per_second``; ``second_per_grid`` = ``temporal_patch_size /
  fps``, where ``fps`` is the rate **of the frames given** (``Sample.meta["fps"]``: 8 frames sampled from a 16 s
  clip are 0.5 fps, i.e. 4 s per unit), or ``Sample.meta["second_per_grid"]`` directly; qwen-vl-utils (Qwen's
  own inference) passes this sampled fps. Without either, fps is 2.0 (1 s per unit): qwen-vl-utils' sampling
  rate, so right for frames sampled as the model was trained, and what transformers 4.x's processor (which
  lmms-eval's ``qwen2_5_vl`` wrapper was written against; it passes no fps) assumed. transformers 5.23's
  processor instead reads the frames' metadata and, for frames without it, falls back to 24 fps (1/12 s).

Preprocessing: ``Qwen2_5_VLProcessor`` cannot be built without torchvision (its video processor needs it), so on
every machine the adapter uses the image processor (``Qwen2VLImageProcessor``) for images and builds by hand
what the video processor (``Qwen2VLVideoProcessor``, which needs torchvision) would do:

* per-frame size: ``smart_resize`` to multiples of 28 within the **video** pixel range, ``video_min_pixels`` ..
  ``video_max_pixels`` per frame; default 128·28·28 .. 768·28·28, the video processor's own defaults (and
  qwen-vl-utils' VIDEO_MIN/MAX_PIXELS), or the checkpoint's video processor config where it has one. Not the
  image processor's range: transformers falls back to ``preprocessor_config.json`` (the image limits, up to
  12.8 M pixels per frame on Qwen2.5-VL-7B) only when a checkpoint has no video config, which gives frames far
  larger than the model was trained on (transformers PR 37660 fixed the same for Qwen2.5-Omni);
* resize with PIL bicubic (the video processor resizes uint8 tensors with torchvision's bicubic, so pixels can
  differ slightly), rescale, CLIP normalisation, padding T to even with the last frame, and the video
  processor's patch layout (the image processor's too: a still two-frame video gives the image's patches,
  checked by the tests);
* not reproduced: the optional total-pixel cap (``cap_pixels_per_frame``, off by default in transformers 5.23)
  that only bites beyond about 300 frames; frame sampling (the caller passes sampled frames).

``<|image_pad|>`` / ``<|video_pad|>`` are expanded by hand, with the chat template's default system prompt;
``mm_token_type_ids`` = 0 text, 1 image, 2 video.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from prunebench.adapters.base import Batch, LLMInputs, LLMShape, ModelAdapter, Sample, VisualLayout, splice_span
from prunebench.adapters.video_llava import ManualProcessor
from prunebench.attention import Captured, capture
from prunebench.core import PruneBenchError
from prunebench.views import HeadReduce, VisionView

PROMPT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "<|vision_start|>{placeholder}<|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
)
DEFAULT_FPS = 2.0
# Qwen2VLVideoProcessor.size (transformers 5.23) = qwen-vl-utils' VIDEO_MIN_PIXELS / VIDEO_MAX_PIXELS, per frame
VIDEO_MIN_PIXELS = 128 * 28 * 28
VIDEO_MAX_PIXELS = 768 * 28 * 28


def video_size_from_checkpoint(name_or_path: str) -> dict[str, int] | None:
    """The video processor's ``size`` saved with a checkpoint (``processor_config.json``'s nested entry, then
    ``video_preprocessor_config.json``), read as JSON because the class needs torchvision; None if absent."""
    import json

    from transformers.utils import cached_file

    for filename, key in (("processor_config.json", "video_processor"), ("video_preprocessor_config.json", None)):
        path = cached_file(name_or_path, filename, _raise_exceptions_for_missing_entries=False)
        if path is None:
            continue
        with open(path) as handle:
            config = json.load(handle)
        config = config.get(key) if key else config
        if not config:
            continue
        size = dict(config.get("size") or {})
        if config.get("min_pixels") is not None:
            size["shortest_edge"] = config["min_pixels"]
        if config.get("max_pixels") is not None:
            size["longest_edge"] = config["max_pixels"]
        if "shortest_edge" in size and "longest_edge" in size:
            return {"shortest_edge": int(size["shortest_edge"]), "longest_edge": int(size["longest_edge"])}
    return None


@dataclass
class QwenVisionView(VisionView):
    """VisionView of Qwen2.5-VL's merged tokens (see the module docstring).

    ``captured[layer]``: the :class:`Captured` of every kernel call of that block (window or image chunks, in
    the ViT's window order); ``chunk_lengths[layer]``: the expected chunk sizes (to split a single varlen
    FlashAttention call); ``reverse``: ``argsort(window_index)`` over merge units.
    """

    captured: dict[int, list[Captured]] = field(default_factory=dict, repr=False)  # type: ignore[assignment]
    chunk_lengths: dict[int, list[int]] = field(default_factory=dict, repr=False)
    reverse: torch.Tensor = None  # type: ignore[assignment]
    unit: int = 4

    def _chunks(self, layer: int | None) -> list[Captured]:
        layer = (self.importance_layer if layer is None else layer) % self.num_vision_layers
        if not self.captured.get(layer):
            raise KeyError(f"ViT block {layer} was not captured; the method must list it in vision_layers() (captured: {sorted(self.captured)})")
        caps, lengths = self.captured[layer], self.chunk_lengths[layer]
        if len(caps) == 1 and len(lengths) > 1:  # one varlen (flash) call over every chunk: split it
            cap = caps[0]
            queries, keys = cap.query.split(lengths, dim=2), cap.key.split(lengths, dim=2)
            caps = [Captured(q, k, None, cap.scaling, False) for q, k in zip(queries, keys)]
        return caps

    def _per_token(self, values: torch.Tensor) -> torch.Tensor:
        """(S, ...) per ViT patch in window order -> (B, N, ...) per merged token in raster order."""
        merged = values.view(-1, self.unit, *values.shape[1:]).mean(1)[self.reverse]
        return merged.view(self.batch_size, -1, *values.shape[1:])

    def cls_attention(self, layer: int | None = None, heads: HeadReduce = "mean") -> torch.Tensor:
        raise ValueError(
            "Qwen2.5-VL's vision tower has no [CLS] token; use view.importance() (received attention at "
            f"the last full-attention block, {self.importance_layer}) or received_attention(layer)"
        )

    def received_attention(self, layer: int | None = None) -> torch.Tensor:
        """(B, N): attention received per merged token at ViT block ``layer`` (default: ``importance_layer``),
        head-mean, averaged over the queries of its chunk and over its 4 patches."""
        return self._per_token(torch.cat([cap.received()[0] for cap in self._chunks(layer)]))

    def keys(self, layer: int | None = None, include_cls: bool = False) -> torch.Tensor:
        """(B, N, d_head): head-mean keys of block ``layer`` (default: the feature block), averaged per merge unit."""
        layer = self.feature_layer if layer is None else layer
        return self._per_token(torch.cat([cap.key.mean(1)[0] for cap in self._chunks(layer)]))

    def importance(self, heads: HeadReduce = "mean") -> torch.Tensor:
        received = self.received_attention(self.importance_layer)
        return received * self._chunks(self.importance_layer)[0].num_heads if heads == "sum" else received


class Qwen2_5_VLAdapter(ModelAdapter):
    family = "qwen2_5_vl"
    budget_scopes = ("video", "frame")
    mrope = True
    dynamic_resolution = True
    prompt = PROMPT  # the chat template's single-image turn (subclasses: their model's template)

    model_class = "Qwen2_5_VLForConditionalGeneration"  # e.g. Qwen/Qwen2.5-VL-7B-Instruct

    @classmethod
    def load_processor(cls, name_or_path: str, trust_remote_code: bool = False) -> ManualProcessor:
        """The image processor and tokenizer (the processor object needs torchvision for its video processor)."""
        from transformers import AutoImageProcessor, AutoTokenizer

        return ManualProcessor(
            AutoImageProcessor.from_pretrained(name_or_path),
            AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code),
            video_size=video_size_from_checkpoint(name_or_path),
        )

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        name: str = "",
        preprocess: str = "hf",
        video_min_pixels: int | None = None,
        video_max_pixels: int | None = None,
        vision_stop: str = "feature",
    ):
        if isinstance(processor, tuple):
            processor = ManualProcessor(*processor)
        if preprocess != "hf":
            raise PruneBenchError("Qwen2.5-VL has one preprocessing (its image processor); use preprocess='hf'")
        super().__init__(model, processor, name, vision_stop)  # the features are the last block's: both stops run every block
        size = getattr(processor, "video_size", None) or {}
        self.video_pixels = (
            int(video_min_pixels or size.get("shortest_edge", VIDEO_MIN_PIXELS)),
            int(video_max_pixels or size.get("longest_edge", VIDEO_MAX_PIXELS)),
        )
        if not 0 < self.video_pixels[0] <= self.video_pixels[1]:
            raise PruneBenchError(f"video pixel range must satisfy 0 < min <= max, got {self.video_pixels}")
        tokenizer = processor.tokenizer
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        config = model.config
        self.image_token_id, self.video_token_id = config.image_token_id, config.video_token_id
        vision = config.vision_config
        self.merge = vision.spatial_merge_size
        self.patch = vision.patch_size
        self.temporal = vision.temporal_patch_size
        self.importance_layer = self.default_importance_layer()

    def default_importance_layer(self) -> int:
        """The ViT block whose received attention is ``VisionView.importance()``: the last full-attention block."""
        return max(self.model.config.vision_config.fullatt_block_indexes)

    # -- structure -----------------------------------------------------------------------------------------
    @property
    def _inner(self) -> nn.Module:
        return self.model.model

    def decoder_layers(self) -> nn.ModuleList:
        return self._inner.language_model.layers

    def final_norm(self) -> nn.Module:
        return self._inner.language_model.norm

    def vision_attention(self, layer: int) -> nn.Module:
        return self._inner.visual.blocks[layer].attn

    @property
    def llm_shape(self) -> LLMShape:
        cfg = self.model.config.text_config
        head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        return LLMShape(
            cfg.num_hidden_layers,
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.num_attention_heads,
            cfg.num_key_value_heads or cfg.num_attention_heads,
            head_dim,
            cfg.vocab_size,
        )

    @property
    def num_vision_layers(self) -> int:
        return self.model.config.vision_config.depth

    @property
    def feature_layer(self) -> int:
        """The last ViT block: its output feeds the merger."""
        return self.num_vision_layers - 1

    # -- data ----------------------------------------------------------------------------------------------
    def group_key(self, sample: Sample) -> Hashable:
        if sample.modality == "video":
            return ("video", len(sample.video), tuple(sample.video[0].size), self.second_per_grid(sample))
        return ("image", tuple(sample.image.size))

    def second_per_grid(self, sample: Sample) -> float:
        """Seconds one temporal unit spans: ``meta["second_per_grid"]``, else temporal_patch_size / ``meta["fps"]``
        (the rate of the frames given; default 2.0)."""
        if sample.meta.get("second_per_grid") is not None:
            seconds = float(sample.meta["second_per_grid"])
        else:
            fps = float(sample.meta.get("fps", DEFAULT_FPS))
            if fps <= 0:
                raise PruneBenchError(f"sample {sample.id!r}: fps must be positive (frames per second of the frames given), got {fps}")
            seconds = self.temporal / fps
        if seconds <= 0:
            raise PruneBenchError(f"sample {sample.id!r}: second_per_grid must be positive, got {seconds}")
        return seconds

    def patchify_video(self, frames: Sequence[Image.Image]) -> tuple[torch.Tensor, list[int]]:
        """Hand-written ``Qwen2VLVideoProcessor``: (patches (t*h*w, C*2*14*14), [t, h, w]); see the module docstring."""
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        proc = self.processor.image_processor
        factor = self.patch * self.merge
        width, height = frames[0].size
        min_pixels, max_pixels = self.video_pixels
        new_h, new_w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        arrays = [np.asarray(f.convert("RGB").resize((new_w, new_h), Image.BICUBIC), dtype=np.float32) / 255.0 for f in frames]
        video = (np.stack(arrays) - np.array(proc.image_mean, dtype=np.float32)) / np.array(proc.image_std, dtype=np.float32)
        video = video.transpose(0, 3, 1, 2)  # (T, C, H, W)
        if video.shape[0] % self.temporal:
            video = np.concatenate([video, np.repeat(video[-1:], self.temporal - video.shape[0] % self.temporal, axis=0)])
        t, c = video.shape[0] // self.temporal, video.shape[1]
        gh, gw, m, p = new_h // self.patch, new_w // self.patch, self.merge, self.patch
        patches = video.reshape(t, self.temporal, c, gh // m, m, p, gw // m, m, p).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
        return torch.from_numpy(np.ascontiguousarray(patches).reshape(t * gh * gw, c * self.temporal * p * p)), [t, gh, gw]

    def prepare(self, samples: Sequence[Sample]) -> Batch:
        samples = list(samples)
        tokenizer = self.processor.tokenizer
        image_pad = tokenizer.convert_ids_to_tokens(self.image_token_id)
        video_pad = tokenizer.convert_ids_to_tokens(self.video_token_id)
        images = [s.image.convert("RGB") for s in samples if s.modality == "image" and s.image is not None]
        missing = [s.id for s in samples if s.image is None and s.video is None]
        if missing:
            raise ValueError(f"samples {missing[:5]} have neither an image nor a video")
        inputs: dict[str, torch.Tensor] = {}
        image_grids: list[list[int]] = []
        if images:
            processed = self.processor.image_processor(images=images, return_tensors="pt")
            inputs["pixel_values"] = processed["pixel_values"]
            inputs["image_grid_thw"] = processed["image_grid_thw"]
            image_grids = processed["image_grid_thw"].tolist()
        video_patches, video_grids, seconds = [], [], []
        texts = []
        for s in samples:
            if s.modality == "video":
                patches, grid = self.patchify_video(s.video)
                video_patches.append(patches)
                video_grids.append(grid)
                seconds.append(self.second_per_grid(s))
                placeholder = video_pad * (int(np.prod(grid)) // self.merge**2)
            else:
                placeholder = image_pad * (int(np.prod(image_grids.pop(0))) // self.merge**2)
            texts.append(self.prompt.format(placeholder=placeholder, question=s.question))
        if video_patches:
            inputs["pixel_values_videos"] = torch.cat(video_patches)
            inputs["video_grid_thw"] = torch.tensor(video_grids, dtype=torch.long)
            inputs["second_per_grid_ts"] = torch.tensor(seconds)
        encoded = tokenizer(texts, padding=True, return_tensors="pt")
        ids = encoded["input_ids"]
        types = torch.zeros_like(ids, dtype=torch.int)
        types[ids == self.image_token_id] = 1
        types[ids == self.video_token_id] = 2
        inputs.update(input_ids=ids, attention_mask=encoded["attention_mask"], mm_token_type_ids=types)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        return Batch(samples, inputs)

    def _modality(self, batch: Batch) -> str:
        modalities = {s.modality for s in batch.samples}
        if len(modalities) != 1:
            raise PruneBenchError("encode() takes images or videos, not both; the engine groups a mixed batch by modality")
        return modalities.pop()

    def _vision_inputs(self, batch: Batch, modality: str) -> tuple[torch.Tensor, torch.Tensor]:
        if modality == "video":
            return batch.inputs["pixel_values_videos"], batch.inputs["video_grid_thw"]
        return batch.inputs["pixel_values"], batch.inputs["image_grid_thw"]

    def run_vision(self, batch: Batch) -> Any:
        modalities = dict.fromkeys(s.modality for s in batch.samples)
        return [self._inner.visual(*self._vision_inputs(batch, m)) for m in modalities]

    def _chunk_lengths(self, grid: torch.Tensor, layer: int) -> list[int]:
        from transformers.vision_utils import get_vision_window_index

        visual = self._inner.visual
        if layer in visual.fullatt_block_indexes:
            return torch.repeat_interleave(grid[:, 1] * grid[:, 2], grid[:, 0]).tolist()
        _, cu = get_vision_window_index(grid, spatial_merge_size=self.merge, window_size=visual.window_size, patch_size=self.patch)
        cu = torch.unique_consecutive(torch.as_tensor(cu))
        return (cu[1:] - cu[:-1]).tolist()

    def encode(self, batch: Batch, capture_layers: Sequence[int] = ()) -> QwenVisionView:
        from transformers.vision_utils import get_vision_window_index

        modality = self._modality(batch)
        pixels, grid = self._vision_inputs(batch, modality)
        visual = self._inner.visual
        layers = sorted({layer % self.num_vision_layers for layer in capture_layers} | ({self.importance_layer} if capture_layers else set()))
        captured: dict[int, list[Captured]] = {layer: [] for layer in layers}
        merger_input: list[torch.Tensor] = []
        handle = visual.merger.register_forward_hook(lambda module, args, output: merger_input.append(args[0]))
        try:
            with capture({self.vision_attention(layer): captured[layer].append for layer in layers}):
                visual(pixels.to(self.dtype), grid_thw=grid)
        finally:
            handle.remove()
        window_index, _ = get_vision_window_index(grid, spatial_merge_size=self.merge, window_size=visual.window_size, patch_size=self.patch)
        reverse = torch.argsort(torch.as_tensor(window_index, device=pixels.device))
        unit = self.merge**2
        hidden = visual.merger.ln_q(merger_input[0])
        features = hidden.view(-1, unit * hidden.shape[-1])[reverse]
        bsz = len(batch.samples)
        features = features.view(bsz, -1, features.shape[-1])
        t, h, w = (int(v) for v in grid[0])
        rows, cols = h // self.merge, w // self.merge
        unit_of = (torch.arange(features.shape[1], device=features.device) // (rows * cols)).expand(bsz, -1)
        batch.meta["placeholder"] = self.video_token_id if modality == "video" else self.image_token_id
        return QwenVisionView(
            features=features,
            cls_feature=None,
            grid=(rows, cols),
            feature_layer=self.feature_layer,
            num_vision_layers=self.num_vision_layers,
            projector=self.project,
            captured=captured,
            has_cls=False,
            num_units=t if modality == "video" else 1,
            unit_kind="frame" if modality == "video" else "image",
            unit_of=unit_of,
            importance_layer=self.importance_layer,
            chunk_lengths={layer: self._chunk_lengths(grid, layer) for layer in layers},
            reverse=reverse,
            unit=unit,
            instruction=self.instruction(batch),
        )

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self._inner.visual.merger.mlp(features)

    def rope_positions(self, batch: Batch) -> torch.Tensor:
        """(3, B, L) M-RoPE positions of the **unpruned** prompt, from the model's own ``get_rope_index``."""
        inputs = batch.inputs
        positions, _ = self._inner.get_rope_index(
            inputs["input_ids"],
            inputs["mm_token_type_ids"],
            image_grid_thw=inputs.get("image_grid_thw"),
            video_grid_thw=inputs.get("video_grid_thw"),
            second_per_grid_ts=inputs.get("second_per_grid_ts"),
            attention_mask=inputs["attention_mask"],
        )
        return positions

    def assemble(self, batch: Batch, visual: torch.Tensor, kept: torch.Tensor | None, policy: str, layout: VisualLayout | None = None) -> LLMInputs:
        """Kept tokens keep their 3-D positions under every policy (module docstring)."""
        if policy not in ("compact", "original"):
            raise ValueError(f"unknown position policy {policy!r}; expected 'compact' or 'original'")
        input_ids, mask = batch.input_ids, batch.attention_mask
        bsz, n, device = input_ids.shape[0], visual.shape[1], input_ids.device
        token = batch.meta.get("placeholder", self.video_token_id if self._modality(batch) == "video" else self.image_token_id)
        placeholder = input_ids == token
        size = int(placeholder[0].sum())
        if layout is None:
            layout = VisualLayout(kept if kept is not None else torch.arange(n, device=device).expand(bsz, -1))
        keep = layout.keep
        source = torch.cat(
            [torch.zeros_like(keep[:, :1]).expand(-1, layout.prepend), keep, torch.full_like(keep[:, :1], size - 1).expand(-1, layout.append)], dim=1
        )
        embeds, new_mask, old_index, start = splice_span(self.model.get_input_embeddings(), input_ids, mask, placeholder, visual, source)
        positions = self.rope_positions(batch)
        positions = positions.gather(2, old_index[None].expand(positions.shape[0], -1, -1))
        return LLMInputs(embeds, new_mask, positions, start + torch.arange(n, device=device))

    def stock_generate(self, batch: Batch, **generate_kwargs: Any) -> torch.Tensor:
        out = self.model.generate(**batch.inputs, **generate_kwargs)
        return out[:, batch.input_ids.shape[1] :]

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "preprocess": "hf",
            "prompt": PROMPT,
            "positions": "original 3-D M-RoPE (all methods)",
            "importance": f"received attention at ViT block {self.importance_layer} (no [CLS])",
            "preprocessing": "Qwen2VLImageProcessor for images; hand-written video patchifier; hand-expanded pads",
            "video_pixels": list(self.video_pixels),
            "video_fps_default": DEFAULT_FPS,
        }
