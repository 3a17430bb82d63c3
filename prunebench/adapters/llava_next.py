"""LLaVA-NeXT (LLaVA-1.6) on the stock ``transformers`` ``LlavaNextForConditionalGeneration``.

Three visual layouts (``layout=``, recorded by :meth:`describe`):

* ``"anyres"`` (default, the stock model): base crop (24x24) + the AnyRes sub-crops tiled into one grid,
  **unpadded** back to the image's aspect ratio, with an ``image_newline`` token after every row. The token
  count depends on the image size (336x336 -> 1176 = 576 + 24 x (24 + 1)). The layout is taken from the
  model's own ``pack_image_features`` (run on token indices instead of features), so it cannot drift from it.
* ``"fivecrop"``: the papers' fixed layout (VisPruner/FasterVLM, github.com/Theia-4869/VisPruner @ aefa01a, and
  VisionZip, github.com/dvlab-research/VisionZip @ 3151f6d, both ``llava_arch.py``): the AnyRes grid forced to
  672x672, i.e. base + 2x2 sub-crops, **no unpadding and no newline tokens**: 2880 = 5 x 576 tokens, the
  sub-crops in raster order over the 48x48 tiled grid, the base crop first. Apply it to the unpruned baseline
  too (a budget >= 2880) to compare like with like. Stock ``generate`` has no such layout.
* ``"spatial"``: LLaVA's ``mm_patch_merge_type='spatial'``, HiPrune's NeXT layout (github.com/Danielement321/HiPrune
  @ 6e83a12, ``LLaVA/llava/model/llava_arch.py``): the image's own AnyRes grid
  (the best-fitting pinpoint, as stock), **no unpadding and no newline tokens**: (1 + rows x cols) x 576
  tokens, 3 to 5 crops on LLaVA-NeXT-7B, the sub-crops in raster order over their tiled grid, the base crop
  first. Like ``fivecrop`` it needs a keep-all baseline.

Newline tokens and the budget (a deliberate choice; the originals disagree, see the layouts above): newlines are
**not pruning candidates and not counted in the budget**. They are a learned constant that marks row ends and
have no vision-tower feature, so no vision-stage signal can rank them. After pruning, :meth:`assemble` puts
the kept patches back in their original slots and **every row's newline after its row**, also for a row whose
patches were all pruned, so the samples of a group (one image size) keep equally many tokens and the kept
tokens keep the row structure the model was trained on. The LLM therefore sees ``budget + rows`` visual-span
tokens: at budget 32 on a 672x672 image, 32 patches + 48 newlines. The engine records the newlines as
``Stats.extra_visual_tokens`` (they are also inside ``Stats.text_tokens``, so FLOPs and KV bytes include them;
``final_tokens`` / ``average_tokens`` count only budgeted tokens). ``VisionView.features`` holds only patch
tokens and ``LayerView.visual_index`` skips the newlines, so LLM-stage methods never drop them either.
Alternatives: ``layout="fivecrop"`` has no newlines (VisPruner/FasterVLM/VisionZip's NeXT code), nor has
``layout="spatial"`` (HiPrune's); DivPrune and DART rank newlines as ordinary candidates on stock NeXT, which
prunebench does not offer (no ViT feature).

Budget scope (``--budget-scope``): ``image`` (default) = one budget for all patch tokens of the image; ``crop``
= the budget is per crop and the engine multiplies it by ``VisionView.num_units`` (1 base + sub-crops; the
papers' "32 x 5 = 160"). ``unit_of`` tells a method which crop each token is from (unpadded sub-crop tokens
keep the crop they were cut from).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import nn

from prunebench.adapters.base import Batch, LLMInputs, ModelAdapter, Sample, VisualLayout, splice_span
from prunebench.adapters.llava import LlavaAdapter, _store, positions_from_mask
from prunebench.attention import Captured, capture
from prunebench.core import PruneBenchError
from prunebench.views import UnitVisionView

LAYOUTS = ("anyres", "fivecrop", "spatial")
FIVECROP_PINPOINTS = [[672, 672]]


class LlavaNextAdapter(LlavaAdapter):
    family = "llava_next"
    budget_scopes = ("image", "crop")

    model_class = "LlavaNextForConditionalGeneration"  # e.g. llava-hf/llava-v1.6-vicuna-7b-hf

    def __init__(self, model: nn.Module, processor: Any, name: str = "", layout: str = "anyres", preprocess: str = "hf", vision_stop: str = "feature"):
        if preprocess != "hf":
            raise PruneBenchError("LLaVA-NeXT has one preprocessing (its AnyRes processor); use preprocess='hf'")
        if layout not in LAYOUTS:
            raise PruneBenchError(f"LLaVA-NeXT layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        super().__init__(model, processor, name, preprocess, vision_stop)
        self.layout = layout
        config = model.config
        self.image_token_id = getattr(config, "image_token_id", None) or config.image_token_index
        self._side = config.vision_config.image_size // config.vision_config.patch_size  # 24 for CLIP-L/336

    # -- data ----------------------------------------------------------------------------------------------
    def group_key(self, sample: Sample) -> Hashable:
        return None if self.layout == "fivecrop" else tuple(sample.image.size) if sample.image is not None else None

    def prepare(self, samples: Sequence[Sample]) -> Batch:
        samples = list(samples)
        missing = [s.id for s in samples if s.image is None or s.video is not None]
        if missing:
            raise ValueError(f"samples {missing[:5]} need exactly one image (LLaVA-NeXT takes images, not video)")
        images = [s.image.convert("RGB") for s in samples]
        prompts = [self.prompt(s.question) for s in samples]
        if self.layout == "anyres":
            inputs = self.processor(images=images, text=prompts, padding=True, return_tensors="pt")
        else:
            # The processor's token count assumes the stock layout; expand the placeholder by hand (crops x 576).
            image = self.processor.image_processor(images, image_grid_pinpoints=self._pinpoints(), return_tensors="pt")
            token = self.processor.tokenizer.convert_ids_to_tokens(self.image_token_id)
            text = [p.replace(token, token * (self._num_crops(size) * self._side**2), 1) for p, size in zip(prompts, image["image_sizes"])]
            inputs = {**self.processor.tokenizer(text, padding=True, return_tensors="pt"), **image}
        inputs = {k: v.to(self.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        counts = (inputs["input_ids"] == self.image_token_id).sum(1)
        if int(counts.min()) == 0:
            raise ValueError(f"each prompt must hold one image; image-token counts per sample: {counts.tolist()}")
        return Batch(samples, inputs)

    def _pinpoints(self) -> list[list[int]]:
        return FIVECROP_PINPOINTS if self.layout == "fivecrop" else self.model.config.image_grid_pinpoints

    def _num_crops(self, image_size: torch.Tensor) -> int:
        from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

        return image_size_to_num_patches(image_size, self._pinpoints(), self.model.config.vision_config.image_size)

    def _crop_grid(self, image_size: torch.Tensor) -> tuple[int, int]:
        """(rows, cols) of sub-crops the image's best-fitting pinpoint is cut into (fivecrop: always 2 x 2)."""
        from transformers.image_processing_utils import select_best_resolution

        size = image_size.tolist() if isinstance(image_size, torch.Tensor) else list(image_size)
        height, width = select_best_resolution(size, self._pinpoints())
        crop = self.model.config.vision_config.image_size
        return height // crop, width // crop

    def _tower_input(self, batch: Batch) -> tuple[torch.Tensor, int]:
        pixel_values, sizes = batch.inputs["pixel_values"], batch.inputs["image_sizes"]
        crops = {self._num_crops(size) for size in sizes}
        if len(crops) != 1:
            raise PruneBenchError("images with different AnyRes grids in one group; the engine groups by image size")
        crops = crops.pop()
        return pixel_values[:, :crops].reshape(-1, *pixel_values.shape[2:]), crops

    def token_layout(self, image_size: torch.Tensor, crops: int, tower_tokens: int) -> torch.Tensor:
        """(T,) for each slot of the image span: the index of its tower token in the flattened (crops x
        ``tower_tokens``) output, or -1 for a newline token."""
        has_cls = self.model.config.vision_feature_select_strategy == "default"
        per_crop = self._side**2
        first = 1 if has_cls else 0
        index = torch.arange(crops)[:, None] * tower_tokens + first + torch.arange(per_crop)[None]  # (crops, 576)
        if self.layout != "anyres":  # sub-crops tiled (rows, side, cols, side), read in raster order, no newlines
            rows, cols = self._crop_grid(image_size)
            sub = index[1:].view(rows, cols, self._side, self._side).permute(0, 2, 1, 3).reshape(-1)
            return torch.cat([index[0], sub])
        features = [index[..., None].double()]
        packed, _ = self._inner.pack_image_features(
            features, image_size[None].cpu(), self.model.config.vision_feature_select_strategy, image_newline=torch.tensor([-1.0], dtype=torch.double)
        )
        return packed[0][:, 0].round().long()

    def run_vision(self, batch: Batch) -> Any:
        pixels, _ = self._tower_input(batch)
        return self._inner.vision_tower(pixels, output_hidden_states=True, return_dict=True)

    def encode(self, batch: Batch, capture_layers: Sequence[int] = ()) -> UnitVisionView:
        pixels, crops = self._tower_input(batch)
        captured: dict[int, Captured] = {}
        requests = {self.vision_attention(layer): _store(captured, layer) for layer in capture_layers}
        with capture(requests):
            selected = self.run_tower(self._inner.vision_tower, pixels, capture_layers)
        hidden = torch.cat(selected, dim=-1)  # (B*crops, T, D)
        bsz, tokens = len(batch.samples), hidden.shape[1]
        slots = self.token_layout(batch.inputs["image_sizes"][0], crops, tokens).to(hidden.device)
        newline = slots < 0
        if int((batch.input_ids[0] == self.image_token_id).sum()) != slots.numel():
            raise PruneBenchError(
                f"the prompt holds {int((batch.input_ids[0] == self.image_token_id).sum())} image tokens "
                f"but the {self.layout} layout has {slots.numel()}; prepare the batch with this adapter"
            )
        token_map = slots[~newline].expand(bsz, -1)
        flat = hidden.reshape(bsz, crops * tokens, -1)
        has_cls = self.model.config.vision_feature_select_strategy == "default"
        batch.meta["newline"] = newline
        return UnitVisionView(
            features=flat.gather(1, token_map[..., None].expand(-1, -1, flat.shape[-1])),
            cls_feature=flat[:, 0] if has_cls else None,
            grid=(self._side, self._side),
            feature_layer=self.feature_layer,
            num_vision_layers=self.num_vision_layers,
            projector=self.project,
            captured=captured,
            has_cls=has_cls,
            num_units=crops,
            unit_kind="crop",
            unit_of=token_map // tokens,
            token_map=token_map,
            unit_tokens=tokens,
            instruction=self.instruction(batch),
        )

    def assemble(self, batch: Batch, visual: torch.Tensor, kept: torch.Tensor | None, policy: str, layout: VisualLayout | None = None) -> LLMInputs:
        return assemble_keeping_newlines(self, batch, visual, kept, policy, layout)

    def stock_generate(self, batch: Batch, **generate_kwargs: Any) -> torch.Tensor:
        if self.layout != "anyres":
            raise PruneBenchError(f"stock generate only knows the AnyRes layout; the {self.layout} baseline is a keep-all budget")
        return super().stock_generate(batch, **generate_kwargs)

    def describe(self) -> dict[str, Any]:
        return {
            **super().describe(),
            "layout": self.layout,
            "newline_tokens": "one per row, always kept, outside the budget (Stats.extra_visual_tokens)" if self.layout == "anyres" else "none",
        }


def assemble_keeping_newlines(
    adapter: ModelAdapter, batch: Batch, visual: torch.Tensor, kept: torch.Tensor | None, policy: str, layout: VisualLayout | None = None
) -> LLMInputs:
    """The visual span with the kept candidates in their original slots and every newline token kept, spliced into
    the prompt at the placeholder tokens (``batch.meta["placeholder"]``, default the image token): LLaVA-NeXT's
    AnyRes rows and LLaVA-OneVision's rows and video newline. ``encode`` leaves the newline mask in ``batch.meta``."""
    input_ids, mask = batch.input_ids, batch.attention_mask
    bsz, device = input_ids.shape[0], input_ids.device
    newline = batch.meta.get("newline")
    if newline is None:
        raise PruneBenchError("assemble() needs the layout that encode() computed for this batch; call encode first")
    if layout is None:
        layout = VisualLayout(kept if kept is not None else torch.arange(visual.shape[1], device=device).expand(bsz, -1))
    first, last = layout.prepend, visual.shape[1] - layout.append
    keep = layout.keep
    candidates = (~newline).nonzero().squeeze(1)
    rows = candidates[keep]  # (B, k) span slots of the kept patches
    breaks = newline.nonzero().squeeze(1).expand(bsz, -1)
    slots = torch.cat([rows, breaks], dim=1)
    order = slots.argsort(dim=1)
    source = slots.gather(1, order)
    newline_embed = adapter._inner.image_newline.to(visual.dtype)
    values = torch.cat([visual[:, first:last], newline_embed.expand(bsz, breaks.shape[1], -1)], dim=1)
    values = values.gather(1, order[..., None].expand(-1, -1, values.shape[-1]))
    is_patch = order < rows.shape[1]
    offsets = is_patch.nonzero()[:, 1].view(bsz, -1) + first
    span = torch.cat([visual[:, :first], values, visual[:, last:]], dim=1)
    span_source = torch.cat([source[:, :1].expand(-1, first), source, source[:, -1:].expand(-1, layout.append)], dim=1)
    merged_offsets = [
        torch.arange(first, device=device).expand(bsz, -1),
        offsets,
        torch.arange(span.shape[1] - layout.append, span.shape[1], device=device).expand(bsz, -1),
    ]
    visual_offsets = torch.cat(merged_offsets, dim=1)
    placeholder = input_ids == batch.meta.get("placeholder", adapter.image_token_id)
    embeds, new_mask, old_index, start = splice_span(adapter.model.get_input_embeddings(), input_ids, mask, placeholder, span, span_source)
    if policy == "compact":
        positions = positions_from_mask(new_mask)
    elif policy == "original":
        if layout.merged or kept is None:
            raise ValueError("merged tokens have no original position; this method needs position_policy='compact'")
        positions = positions_from_mask(mask).gather(1, old_index)
    else:
        raise ValueError(f"unknown position policy {policy!r}; expected 'compact' or 'original'")
    return LLMInputs(embeds, new_mask, positions, start + visual_offsets, extra_visual_tokens=int(breaks.shape[1]))
