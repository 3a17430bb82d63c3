"""LLaVA-OneVision / LLaVA-Video on the stock ``transformers`` ``LlavaOnevisionForConditionalGeneration``.

Checkpoints: ``llava-hf/llava-onevision-qwen2-7b-ov-hf`` (and its 0.5b / 72b siblings), and LLaVA-Video weights
converted to the same class (the authors publish ``lmms-lab/LLaVA-Video-7B-Qwen2`` in the LLaVA-NeXT code base's
own format, which the stock class does not read; a conversion with transformers'
``convert_llava_onevision_weights_to_hf.py`` loads through :meth:`from_pretrained` like any folder). Architecture:
SigLIP-so400m/14 at 384 px, 27 x 27 = 729 patches per crop or frame, **no [CLS]** (strategy ``full``, feature
layer -1 of a tower whose last layer is already removed), a 2-layer GELU projector, a Qwen2 LLM with grouped-query
attention (7B: 28 query / 4 key-value heads).

Images (``anyres_max_9``): the base crop (729 tokens) followed by the AnyRes sub-crops tiled into one grid,
**unpadded** to the image's aspect ratio, one ``image_newline`` after every row, exactly as
``LlavaOnevisionModel.pack_image_features`` (the layout is taken from that function, run on token indices, so it
cannot drift from it). Candidates are the patch tokens (pre-projector features, in LLM order); newlines are not
candidates and not in the budget, and :meth:`assemble` puts every row's newline back after its row (the choice
and its alternatives are those of :mod:`prunebench.adapters.llava_next`). Where the unpadded grid is larger than
9 crops' worth (``ratio > 1.1``, images above about 1150 px on the 7B model), the stock model shrinks it
bilinearly **after** the projector; for such an image the candidates are the model's own projected, shrunk tokens
(as for video below), its signals are shrunk the same way, and ``token_map`` / ``unit_of`` name the tower token
nearest to where the resize samples each candidate.

Video: every frame through SigLIP, the projector, then the model's own ``apply_pooling`` (bilinear to
ceil(27 / 2) = 14 x 14 = **196 tokens per frame**, as transformers implements it for every checkpoint of this
class), then **one** ``image_newline`` after the last frame (newline mode ``one_token``): 32 frames -> 6272 + 1.
Pooling follows the projector, and the projector is not linear, so the candidates of a video are the
**projected, pooled** tokens (``VisionView.features`` has the LLM's width and :meth:`project` is the identity
for them): keeping every token reproduces stock ``generate`` exactly. The video ports prune the same tokens
(HoliTom, github.com/cokeshao/HoliTom @ e9b2972, ``holitom/llava_arch.py``; FastVID, github.com/LunarShen/FastVID
@ a40a109, ``llava_arch.py``: both on the pooled projector outputs). Units are frames (``unit_kind="frame"``,
``unit_of``), so ``--budget-scope frame`` gives a per-frame budget. The trailing newline is kept outside the
budget (``Stats.extra_visual_tokens`` = 1). LLaVA-Video's own code base (github.com/LLaVA-VL/LLaVA-NeXT, ``llava_arch.py`` ``get_2dPool`` /
``add_token_per_grid``) pools 2 x 2 by average with floor (13 x 13 = 169 per frame) and puts a newline after
every pooled row of every frame (newline mode ``grid``: 13 x 14 = 182 per frame); the stock class does neither.
``video_pooling="average"`` and ``video_newline="grid"`` (adapter options, recorded by :meth:`describe`) build that
layout on the same weights; stock ``generate`` has no such layout, so its baseline is a keep-all budget (as
LLaVA-NeXT's ``fivecrop``). Grid newlines are kept like the image rows' newlines (outside the budget).

Signals (no [CLS]; ``has_cls=False``, ``cls_attention`` raises):

=====================  =====================================================================================
signal                 LLaVA-OneVision / LLaVA-Video (this adapter)
=====================  =====================================================================================
``importance()``       attention each token **receives** at the feature layer (the last remaining SigLIP
                       layer), mean over heads and all queries of its crop / frame; HoliTom's saliency
                       (``attentions[-1]`` averaged over heads and query rows, @ e9b2972 ``holitom/llava_arch.py``)
video tokens           that per-patch signal (and ``keys``) **2-D pooled exactly like the features** (the
                       model's ``apply_pooling``), one value per pooled token, as HoliTom pools its saliency
``token_map``          image: the tower token of each candidate; video: frame x 196 + pooled cell
``grid``               (27, 27) per crop for images, (14, 14) per frame for video
``cls_feature``        None
=====================  =====================================================================================

Preprocessing: ``LlavaOnevisionProcessor`` needs its video processor, which cannot be built without torchvision,
so inputs are built the other documented way on every machine alike: the image processor for images (AnyRes
crops) and, for each frame, its base-crop resize (384 x 384 bicubic, the video processor's resize), with the
placeholders expanded by hand to the counts the model's own layout gives, in the authors' ``qwen_1_5`` ChatML
conversation (:data:`PROMPT`). Methods that merge tokens (VisionZip's contextual tokens) merge a video's (or a
shrunk image's) projected tokens, since those are its candidates; :meth:`project` is the identity for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from prunebench.adapters.base import Batch, LLMInputs, Sample, VisualLayout
from prunebench.adapters.llava import LlavaAdapter, _store
from prunebench.adapters.llava_next import assemble_keeping_newlines
from prunebench.adapters.video_llava import ManualProcessor
from prunebench.attention import Captured, capture
from prunebench.core import PruneBenchError
from prunebench.views import HeadReduce, UnitVisionView

VIDEO_POOLINGS = ("bilinear", "average")
VIDEO_NEWLINES = ("one_token", "grid")
# the authors' ``qwen_1_5`` conversation (LLaVA-NeXT ``llava/conversation.py`` ``conv_qwen``, ChatML), which their
# OneVision / LLaVA-Video evaluations use
PROMPT = "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n{placeholder}\n{question}<|im_end|>\n<|im_start|>assistant\n"


@dataclass
class ResampledVisionView(UnitVisionView):
    """A :class:`UnitVisionView` whose candidates may be resampled tower tokens (LLaVA-OneVision's pooled video).

    ``resample``: maps a per-tower-token signal (B*U, T, C) to one value per candidate (B, N, C) the way the model
    maps features (the 2-D pooling); None: candidates are tower tokens, gathered through ``token_map``.
    """

    resample: Callable[[torch.Tensor], torch.Tensor] | None = field(default=None, repr=False)

    def _per_candidate(self, per_token: torch.Tensor) -> torch.Tensor:
        if self.resample is not None:
            return self.resample(per_token)
        flat = per_token.reshape(self.batch_size, -1, per_token.shape[-1])
        return flat.gather(1, self.token_map[..., None].expand(-1, -1, flat.shape[-1]))

    def cls_attention(self, layer: int | None = None, heads: HeadReduce = "mean") -> torch.Tensor:
        raise ValueError("SigLIP has no [CLS] token; use importance() (received attention at the feature layer) or received_attention()")

    def received_attention(self, layer: int | None = None) -> torch.Tensor:
        received = self._capture(layer).received()  # (B*U, T)
        return self._per_candidate(received[..., None])[..., 0]

    def keys(self, layer: int | None = None, include_cls: bool = False) -> torch.Tensor:
        return self._per_candidate(self._capture(layer).key.mean(1))


class LlavaOnevisionAdapter(LlavaAdapter):
    family = "llava_onevision"
    budget_scopes = ("image", "video", "crop", "frame")

    model_class = "LlavaOnevisionForConditionalGeneration"  # e.g. llava-hf/llava-onevision-qwen2-7b-ov-hf

    @classmethod
    def load_processor(cls, name_or_path: str, trust_remote_code: bool = False) -> ManualProcessor:
        """The image processor and tokenizer (the processor object needs torchvision for its video processor)."""
        from transformers import AutoTokenizer, LlavaOnevisionImageProcessorPil

        return ManualProcessor(
            LlavaOnevisionImageProcessorPil.from_pretrained(name_or_path), AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        )

    def __init__(
        self,
        model: nn.Module,
        processor: Any,
        name: str = "",
        preprocess: str = "hf",
        video_pooling: str = "bilinear",
        video_newline: str = "one_token",
        vision_stop: str = "feature",
    ):
        if video_pooling not in VIDEO_POOLINGS:
            raise PruneBenchError(f"video_pooling must be one of {', '.join(VIDEO_POOLINGS)}, got {video_pooling!r}")
        if video_newline not in VIDEO_NEWLINES:
            raise PruneBenchError(f"video_newline must be one of {', '.join(VIDEO_NEWLINES)}, got {video_newline!r}")
        if isinstance(processor, tuple):
            processor = ManualProcessor(*processor)
        if preprocess != "hf":
            raise PruneBenchError("LLaVA-OneVision has one preprocessing (its AnyRes image processor); use preprocess='hf'")
        super().__init__(model, processor, name, preprocess, vision_stop)
        config = model.config
        self.image_token_id = config.image_token_id
        self.video_token_id = config.video_token_id
        self._side = config.vision_config.image_size // config.vision_config.patch_size  # 27 for SigLIP/14 at 384 px
        self.video_pooling, self.video_newline = video_pooling, video_newline
        # LlavaOnevisionModel.apply_pooling: bilinear to ceil(side / 2); LLaVA-Video's average 2 x 2 pooling: floor(side / 2)
        self._pooled_side = math.ceil(self._side / 2) if video_pooling == "bilinear" else self._side // 2
        self._first = 1 if config.vision_feature_select_strategy == "default" else 0
        self._identity_projection = False  # set by encode(): video candidates are already projected (and pooled)

    # -- structure -----------------------------------------------------------------------------------------
    @property
    def _tower(self) -> nn.Module:
        tower = self._inner.vision_tower
        return getattr(tower, "vision_model", tower)

    def vision_attention(self, layer: int) -> nn.Module:
        return self._tower.encoder.layers[layer].self_attn

    @property
    def importance_layer(self) -> int:
        """The SigLIP layer whose received attention replaces [CLS] attention: the feature layer."""
        return self.feature_layer

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """The projector, or the identity after :meth:`encode` of a video or a shrunk image, whose candidates are
        already projected (the engine projects each group right after encoding it)."""
        if self._identity_projection:
            return features
        return self._inner.multi_modal_projector(features)

    # -- data ----------------------------------------------------------------------------------------------
    def group_key(self, sample: Sample) -> Hashable:
        return ("video", len(sample.video)) if sample.modality == "video" else ("image", tuple(sample.image.size))

    def prompt(self, question: str, modality: str = "image") -> str:
        return PROMPT.format(placeholder="<video>" if modality == "video" else "<image>", question=question)

    def tokens_per_frame(self) -> int:
        """Pooled candidate tokens per frame (196 on the 7B models as the stock class pools; 169 with ``average``)."""
        return self._pooled_side**2

    def _video_newline_mask(self, frames: int) -> torch.Tensor:
        """(T,) True at the newline slots of a video's span: one after the last frame (``one_token``), or one after
        every pooled row of every frame (``grid``, LLaVA-NeXT's ``add_token_per_grid``: frames x rows x (cols + 1))."""
        side = self._pooled_side
        if self.video_newline == "grid":
            return (torch.arange(frames * side * (side + 1)) % (side + 1)) == side
        mask = torch.zeros(frames * side * side + 1, dtype=torch.bool)
        mask[-1] = True
        return mask

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        """(B*F, side^2, C) -> (B*F, pooled^2, C): the model's ``apply_pooling`` (bilinear), or LLaVA-Video's
        ``get_2dPool`` with ``mm_spatial_pool_mode='average'`` (2 x 2 average, stride 2, floor)."""
        if self.video_pooling == "bilinear":
            return self._inner.apply_pooling(features)
        grid = features.view(features.shape[0], self._side, self._side, -1).permute(0, 3, 1, 2)
        return nn.functional.avg_pool2d(grid, 2).permute(0, 2, 3, 1).reshape(features.shape[0], -1, features.shape[-1])

    def _num_crops(self, image_size: torch.Tensor) -> int:
        from transformers.models.llava_onevision.modeling_llava_onevision import image_size_to_num_patches

        return image_size_to_num_patches(image_size, self.model.config.image_grid_pinpoints, self.model.config.vision_config.image_size)

    def token_layout(self, image_size: torch.Tensor, crops: int) -> tuple[torch.Tensor, bool]:
        """For each slot of an image's span: the index of its tower token in the flattened (crops x 729) tower output,
        or -1 for a newline; and whether the model shrinks the grid (``anyres_max_9``). Taken from the model's own
        ``pack_image_features`` run on (index, row, column) channels; in a shrunk grid a slot's tower token is the
        nearest one to where the bilinear resize samples it."""
        from transformers.models.llava_onevision.modeling_llava_onevision import get_anyres_image_grid_shape

        config, side = self.model.config, self._side
        tokens = side**2 + self._first
        _, cols = get_anyres_image_grid_shape(image_size.tolist(), config.image_grid_pinpoints, config.vision_config.image_size)
        crop = torch.arange(crops)[:, None].expand(-1, side**2)
        cell = torch.arange(side**2)[None].expand(crops, -1)
        tiled = (crop - 1).clamp(min=0)
        rows = (tiled // cols * side + cell // side).double()  # position in the tiled grid of sub-crops
        columns = (tiled % cols * side + cell % side).double()
        channels = torch.stack([(crop * tokens + self._first + cell).double(), rows, columns], dim=-1)  # (crops, 729, 3)
        packed, _ = self._inner.pack_image_features(
            [channels], image_size[None].cpu(), image_newline=torch.full((3,), -1.0, dtype=torch.double), vision_aspect_ratio=config.vision_aspect_ratio
        )
        packed = packed[0]
        newline = packed[:, 0] < -0.5
        sub = packed[side**2 :]
        shrunk = not torch.equal(sub, sub.round())
        r = sub[:, 1].round().long().clamp(0, None)
        c = sub[:, 2].round().long().clamp(0, None)
        nearest = (1 + r // side * cols + c // side) * tokens + self._first + (r % side) * side + c % side
        slots = torch.cat([packed[: side**2, 0].round().long(), nearest])
        return slots.masked_fill(newline, -1), shrunk

    def prepare(self, samples: Sequence[Sample]) -> Batch:
        samples = list(samples)
        tokenizer = self.processor.tokenizer
        image_token = tokenizer.convert_ids_to_tokens(self.image_token_id)
        video_token = tokenizer.convert_ids_to_tokens(self.video_token_id)
        image_processor = self.processor.image_processor
        images = [s.image.convert("RGB") for s in samples if s.modality == "image" and s.image is not None]
        videos = [[f.convert("RGB") for f in s.video] for s in samples if s.modality == "video"]
        inputs: dict[str, torch.Tensor] = {}
        if images:
            out = image_processor(images=images, return_tensors="pt")
            inputs["pixel_values"], inputs["image_sizes"] = out["pixel_values"], out["image_sizes"]
        if videos:
            if len({len(v) for v in videos}) != 1:
                raise ValueError(f"videos in one batch must have the same number of frames, got {sorted({len(v) for v in videos})}")
            inputs["pixel_values_videos"] = self._frames([f for v in videos for f in v]).view(len(videos), len(videos[0]), 3, *self._frame_hw())
        texts, image_i = [], 0
        for s in samples:
            if s.image is None and s.video is None:
                raise ValueError(f"sample {s.id!r} has neither an image nor a video")
            prompt = self.prompt(s.question, s.modality).replace("<image>", image_token).replace("<video>", video_token)
            if s.modality == "video":
                count = self._video_newline_mask(len(s.video)).numel()
                prompt = prompt.replace(video_token, video_token * count, 1)
            else:
                size = inputs["image_sizes"][image_i]
                count = self.token_layout(size, self._num_crops(size))[0].numel()
                prompt = prompt.replace(image_token, image_token * count, 1)
                image_i += 1
            texts.append(prompt)
        inputs.update(tokenizer(texts, padding=True, return_tensors="pt"))
        inputs = {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        for key in ("pixel_values", "pixel_values_videos"):
            if key in inputs:
                inputs[key] = inputs[key].to(self.dtype)
        return Batch(samples, inputs)

    def _frame_hw(self) -> tuple[int, int]:
        size = self.processor.image_processor.size
        size = size if isinstance(size, dict) else size.__dict__
        return int(size["height"]), int(size["width"])

    def _frames(self, frames: list) -> torch.Tensor:
        """(F, 3, H, W): each frame resized to the crop size (the image processor's base crop, which is the video
        processor's resize), rescaled and normalised."""
        height, width = self._frame_hw()
        out = self.processor.image_processor(images=frames, image_grid_pinpoints=[[height, width]], return_tensors="pt")
        return out["pixel_values"][:, 0]

    @staticmethod
    def _modalities(batch: Batch) -> list[str]:
        return list(dict.fromkeys(s.modality for s in batch.samples))

    def _modality(self, batch: Batch) -> str:
        modalities = self._modalities(batch)
        if len(modalities) != 1:
            raise PruneBenchError("encode() takes images or videos, not both; the engine groups a mixed batch by modality")
        return modalities[0]

    def _image_pixels(self, batch: Batch) -> tuple[torch.Tensor, int]:
        pixel_values, sizes = batch.inputs["pixel_values"], batch.inputs["image_sizes"]
        crops = {self._num_crops(size) for size in sizes}
        if len(crops) != 1:
            raise PruneBenchError("images with different AnyRes grids in one group; the engine groups by image size")
        crops = crops.pop()
        return pixel_values[:, :crops].reshape(-1, *pixel_values.shape[2:]), crops

    def run_vision(self, batch: Batch) -> Any:
        outs = []
        if "pixel_values" in batch.inputs:
            outs.append(self._inner.vision_tower(self._image_pixels(batch)[0], output_hidden_states=True))
        if "pixel_values_videos" in batch.inputs:
            outs.append(self._inner.vision_tower(batch.inputs["pixel_values_videos"].flatten(0, 1), output_hidden_states=True))
        return outs

    def encode(self, batch: Batch, capture_layers: Sequence[int] = ()) -> ResampledVisionView:
        modality = self._modality(batch)
        bsz = len(batch.samples)
        if modality == "video":
            pixels, units = batch.inputs["pixel_values_videos"].flatten(0, 1), batch.inputs["pixel_values_videos"].shape[1]
        else:
            pixels, units = self._image_pixels(batch)
        layers = {layer % self.num_vision_layers for layer in capture_layers}
        layers |= {self.importance_layer} if capture_layers else set()
        captured: dict[int, Captured] = {}
        requests = {self.vision_attention(layer): _store(captured, layer) for layer in sorted(layers)}
        with capture(requests):
            hidden = torch.cat(self.run_tower(self._inner.vision_tower, pixels, sorted(layers)), dim=-1)  # (B*U, T, D)
        tokens = hidden.shape[1]
        common = dict(
            feature_layer=self.feature_layer,
            num_vision_layers=self.num_vision_layers,
            projector=self.project,
            captured=captured,
            has_cls=False,
            num_units=units,
            importance_layer=self.importance_layer,
            instruction=self.instruction(batch),
        )
        if modality == "video":
            first, pool = self._first, self._pool
            pooled = pool(self._inner.multi_modal_projector(hidden[:, first:]))  # (B*F, 196, D_llm), as get_video_features
            per_frame = pooled.shape[1]
            token_map = torch.arange(units * per_frame, device=hidden.device).expand(bsz, -1)
            newline = self._video_newline_mask(units).to(hidden.device)
            batch.meta.update(newline=newline, placeholder=self.video_token_id)
            self._identity_projection = True

            def resample(signal: torch.Tensor) -> torch.Tensor:
                return pool(signal[:, first:]).reshape(bsz, -1, signal.shape[-1])

            return ResampledVisionView(
                features=pooled.reshape(bsz, units * per_frame, -1),
                cls_feature=None,
                grid=(self._pooled_side, self._pooled_side),
                unit_kind="frame",
                unit_of=token_map // per_frame,
                token_map=token_map,
                unit_tokens=per_frame,
                resample=resample,
                **common,
            )
        sizes = batch.inputs["image_sizes"]
        slots, shrunk = self.token_layout(sizes[0], units)
        slots = slots.to(hidden.device)
        newline = slots < 0
        placeholders = int((batch.input_ids[0] == self.image_token_id).sum())
        if placeholders != slots.numel():
            raise PruneBenchError(
                f"the prompt holds {placeholders} image tokens but the AnyRes layout has {slots.numel()}; prepare the batch with this adapter"
            )
        token_map = slots[~newline].expand(bsz, -1)
        flat = hidden.reshape(bsz, units * tokens, -1)
        batch.meta.update(newline=newline, placeholder=self.image_token_id)
        self._identity_projection = shrunk
        resample, features = None, flat.gather(1, token_map[..., None].expand(-1, -1, flat.shape[-1]))
        if shrunk:  # the model resizes the projected grid: candidates are its projected, resized tokens (module docstring)
            first, ratio = self._first, self.model.config.vision_aspect_ratio

            def resample(signal: torch.Tensor) -> torch.Tensor:
                per_image = signal[:, first:].reshape(bsz, units, -1, signal.shape[-1])
                packed, _ = self._inner.pack_image_features(list(per_image), sizes.cpu(), image_newline=None, vision_aspect_ratio=ratio)
                return torch.stack(packed)

            features = resample(self._inner.multi_modal_projector(hidden))
        return ResampledVisionView(
            features=features,
            cls_feature=None,
            grid=(self._side, self._side),
            unit_kind="crop",
            unit_of=token_map // tokens,
            token_map=token_map,
            unit_tokens=tokens,
            resample=resample,
            **common,
        )

    def assemble(self, batch: Batch, visual: torch.Tensor, kept: torch.Tensor | None, policy: str, layout: VisualLayout | None = None) -> LLMInputs:
        """The visual span with the kept candidates in their original slots and every newline kept (images: one per
        row; video: the one after the last frame), as LLaVA-NeXT's."""
        return assemble_keeping_newlines(self, batch, visual, kept, policy, layout)

    @property
    def stock_video(self) -> bool:
        return self.video_pooling == "bilinear" and self.video_newline == "one_token"

    def stock_generate(self, batch: Batch, **generate_kwargs: Any) -> torch.Tensor:
        if "pixel_values_videos" in batch.inputs and not self.stock_video:
            raise PruneBenchError(
                f"stock generate pools video bilinearly with one newline; the {self.video_pooling}/{self.video_newline} "
                "video layout's baseline is a keep-all budget"
            )
        return super().stock_generate(batch, **generate_kwargs)

    def describe(self) -> dict[str, Any]:
        video_newlines = "one after every pooled row of every frame (grid)" if self.video_newline == "grid" else "one after the last frame (one_token)"
        return {
            **super().describe(),
            "prompt": PROMPT,
            "video_tokens_per_frame": self.tokens_per_frame(),
            "video_pooling": f"{self.video_pooling} {self._side}x{self._side} -> {self._pooled_side}x{self._pooled_side} after the projector"
            + (" (stock apply_pooling)" if self.video_pooling == "bilinear" else " (LLaVA-Video's get_2dPool, not the stock class)"),
            "video_newline": self.video_newline,
            "newline_tokens": f"images: one per row; video: {video_newlines}; always kept, outside the budget",
            "importance": f"received attention at SigLIP layer {self.importance_layer} (no [CLS]); pooled like the features for video",
            "preprocessing": "LlavaOnevisionImageProcessor AnyRes crops; frames: its base-crop resize; hand-expanded placeholders",
        }
