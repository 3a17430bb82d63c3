"""Every runnable model in one table: the shipped toy model, the tiny test models and the checkpoints each family loads.

The table (:data:`CATALOG`) is data: a row names the model, its family (``config.model_type``), what kind of
model it is, the depth of its LLM and the vision geometry of its config (image size, patch size, ...), from
which :func:`visual_tokens_text` computes the visual tokens of one image without downloading anything.
:func:`weights_present` asks the local Hugging Face cache (offline) whether a checkpoint's weights are there.
:func:`is_random_weights` tells a run on randomly initialised weights (the tiny test models) from a real one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub import try_to_load_from_cache

from prunebench.toy import TOY_MODEL_DIR

TOY = "toy"
TINY = "tiny"
CHECKPOINT = "checkpoint"
RANDOM_WEIGHTS_NOTE = "random weights: scores are meaningless, for tests"


@dataclass(frozen=True)
class ModelEntry:
    """One runnable model. ``geometry``: the config values the visual-token count follows from."""

    name: str
    family: str
    kind: str  # toy | tiny | checkpoint
    llm_layers: int
    geometry: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def random_weights(self) -> bool:
        return self.kind == TINY


# LLaVA-1.5: CLIP ViT-L/14 at 336 px, the [CLS] token dropped ("default" strategy): (336 / 14)^2 = 576.
# LLaVA-NeXT: the 336 px base image plus an AnyRes grid of 336 px crops (unpadded, one newline per row), pinpoints
# up to 672 x 672. Video-LLaVA: LanguageBind ViT-L/14 at 224 px, 256 per image (8 frames x 257 per video).
# Qwen2.5-VL: 14 px patches merged 2 x 2, so one token per 28 x 28 pixels between min_pixels and max_pixels.
_LLAVA = {"image_size": 336, "patch_size": 14}
_NEXT = {"image_size": 336, "patch_size": 14, "max_grid": (672, 672)}
_VIDEO = {"image_size": 224, "patch_size": 14, "frames": 8}
# LLaVA-OneVision / LLaVA-Video: SigLIP/14 at 384 px (27 x 27 = 729 per crop, no [CLS]), AnyRes up to 6 x 6 crops
# shrunk to at most 9 crops' area (anyres_max_9), newline per row; video: 2-D pooled to 14 x 14 = 196 per frame + 1 newline.
_ONEVISION = {"image_size": 384, "patch_size": 14, "max_crops": 9, "frames": 32}
_QWEN = {"patch_size": 14, "merge_size": 2, "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 16384}
# Qwen3-VL: 16 px patches merged 2 x 2, one token per 32 x 32 pixels; the 8B processor's 65536 .. 16777216 pixels
_QWEN3 = {"patch_size": 16, "merge_size": 2, "min_pixels": 65536, "max_pixels": 16777216}

CATALOG: tuple[ModelEntry, ...] = (
    ModelEntry("toy-llava", "llava", TOY, 6, _LLAVA, "shipped 0.9 M-parameter LLaVA trained on the shapes suite"),
    ModelEntry("tiny-llava", "llava", TINY, 4, _LLAVA, RANDOM_WEIGHTS_NOTE),
    ModelEntry("tiny-llava_next", "llava_next", TINY, 4, _NEXT, RANDOM_WEIGHTS_NOTE),
    ModelEntry("tiny-video_llava", "video_llava", TINY, 4, _VIDEO, RANDOM_WEIGHTS_NOTE),
    ModelEntry("tiny-qwen2_5_vl", "qwen2_5_vl", TINY, 4, {**_QWEN, "max_pixels": 448 * 448, "min_pixels": 28 * 28 * 4}, RANDOM_WEIGHTS_NOTE),
    ModelEntry("tiny-llava_onevision", "llava_onevision", TINY, 4, {**_ONEVISION, "image_size": 126, "max_crops": 4, "frames": 4}, RANDOM_WEIGHTS_NOTE),
    ModelEntry("tiny-qwen3_vl", "qwen3_vl", TINY, 4, {**_QWEN3, "max_pixels": 448 * 448, "min_pixels": 32 * 32 * 4}, RANDOM_WEIGHTS_NOTE),
    ModelEntry("llava-hf/llava-1.5-7b-hf", "llava", CHECKPOINT, 32, _LLAVA, "LLaVA-1.5 7B (Vicuna-7B)"),
    ModelEntry("llava-hf/llava-1.5-13b-hf", "llava", CHECKPOINT, 40, _LLAVA, "LLaVA-1.5 13B (Vicuna-13B)"),
    ModelEntry("llava-hf/llava-v1.6-vicuna-7b-hf", "llava_next", CHECKPOINT, 32, _NEXT, "LLaVA-NeXT 7B (Vicuna-7B)"),
    ModelEntry("llava-hf/llava-v1.6-vicuna-13b-hf", "llava_next", CHECKPOINT, 40, _NEXT, "LLaVA-NeXT 13B (Vicuna-13B)"),
    ModelEntry("llava-hf/llava-v1.6-mistral-7b-hf", "llava_next", CHECKPOINT, 32, _NEXT, "LLaVA-NeXT 7B (Mistral-7B)"),
    ModelEntry("LanguageBind/Video-LLaVA-7B-hf", "video_llava", CHECKPOINT, 32, _VIDEO, "Video-LLaVA 7B (Vicuna-7B)"),
    ModelEntry("llava-hf/llava-onevision-qwen2-0.5b-ov-hf", "llava_onevision", CHECKPOINT, 24, _ONEVISION, "LLaVA-OneVision 0.5B (Qwen2-0.5B)"),
    ModelEntry("llava-hf/llava-onevision-qwen2-7b-ov-hf", "llava_onevision", CHECKPOINT, 28, _ONEVISION, "LLaVA-OneVision 7B (Qwen2-7B)"),
    ModelEntry(
        "llava-hf/LLaVA-Video-7B-Qwen2-hf",
        "llava_onevision",
        CHECKPOINT,
        28,
        _ONEVISION,
        "LLaVA-Video 7B in the OneVision class (id not verified offline); stock pooling: 196/frame, one newline",
    ),
    ModelEntry("Qwen/Qwen2.5-VL-3B-Instruct", "qwen2_5_vl", CHECKPOINT, 36, _QWEN, "Qwen2.5-VL 3B"),
    ModelEntry("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2_5_vl", CHECKPOINT, 28, _QWEN, "Qwen2.5-VL 7B"),
    ModelEntry("Qwen/Qwen2.5-VL-72B-Instruct", "qwen2_5_vl", CHECKPOINT, 80, _QWEN, "Qwen2.5-VL 72B"),
    ModelEntry("Qwen/Qwen3-VL-8B-Instruct", "qwen3_vl", CHECKPOINT, 36, _QWEN3, "Qwen3-VL 8B (DeepStack from ViT blocks 8/16/24; images)"),
)
_BY_NAME = {entry.name: entry for entry in CATALOG}


def catalog_entry(model: str) -> ModelEntry | None:
    """The table row of ``model`` (a name as given to ``--model``), or None for a model the table does not list."""
    return _BY_NAME.get(str(model))


def is_random_weights(model: str) -> bool:
    """Whether ``model`` runs on randomly initialised weights (the tiny test models): its scores mean nothing."""
    entry = catalog_entry(model)
    return entry is not None and entry.random_weights


def _grid(size: int, patch: int) -> int:
    return (size // patch) ** 2


def visual_tokens(entry: ModelEntry) -> tuple[int, int]:
    """(fewest, most) visual tokens of one image for ``entry``'s family, from its geometry."""
    g = entry.geometry
    if entry.family == "llava":
        n = _grid(g["image_size"], g["patch_size"])
        return n, n
    if entry.family == "video_llava":
        n = _grid(g["image_size"], g["patch_size"])
        return n, n
    if entry.family == "llava_next":
        side = g["image_size"] // g["patch_size"]
        base = side * side
        lo = base + side * (side + 1)  # a base-size image: one crop, one newline per row
        rows, cols = (d // g["image_size"] * side for d in g["max_grid"])
        hi = base + rows * (cols + 1)
        return lo, hi
    if entry.family == "llava_onevision":
        side = g["image_size"] // g["patch_size"]
        base = side * side
        lo = base + side * (side + 1)  # one sub-crop, one newline per row
        rows = int(side * math.isqrt(g["max_crops"]))  # the largest grid kept at full size: max_crops crops' area
        return lo, base + rows * (rows + 1)
    if entry.family in ("qwen2_5_vl", "qwen3_vl"):
        unit = (g["patch_size"] * g["merge_size"]) ** 2
        return max(1, g["min_pixels"] // unit), g["max_pixels"] // unit
    raise ValueError(f"no visual-token arithmetic for family {entry.family!r}")


def visual_tokens_text(entry: ModelEntry) -> str:
    """The visual tokens of one image as a table cell: '576', '1176-2928 (AnyRes)', '4-16384 (H*W/28^2)'."""
    lo, hi = visual_tokens(entry)
    if entry.family == "llava_next":
        return f"{lo}-{hi} (AnyRes)"
    if entry.family in ("qwen2_5_vl", "qwen3_vl"):
        unit = entry.geometry["patch_size"] * entry.geometry["merge_size"]
        return f"{lo}-{hi} (H*W/{unit}^2)"
    if entry.family == "video_llava":
        return f"{lo} (video: {entry.geometry['frames']} x {lo + 1})"
    if entry.family == "llava_onevision":
        pooled = math.ceil(entry.geometry["image_size"] // entry.geometry["patch_size"] / 2) ** 2
        return f"{lo}-{hi} (AnyRes; video: {entry.geometry['frames']} x {pooled} + 1)"
    return str(lo)


def toy_geometry() -> dict[str, Any]:
    """The shipped toy model's vision geometry and depth, read from its config.json."""
    config = json.loads((Path(TOY_MODEL_DIR) / "config.json").read_text())
    vision = config["vision_config"]
    return {"image_size": int(vision["image_size"]), "patch_size": int(vision["patch_size"]), "llm_layers": int(config["text_config"]["num_hidden_layers"])}


def weights_present(entry: ModelEntry) -> bool | None:
    """Whether the model's weights are on this machine: the shipped toy model's file, the Hugging Face cache for a
    checkpoint (looked up offline, nothing is downloaded); None for models built from a config (no weights)."""
    if entry.kind == TINY:
        return None
    if entry.kind == TOY:
        return (Path(TOY_MODEL_DIR) / "model.safetensors").exists()
    return _in_hf_cache(entry.name)


def _in_hf_cache(repo_id: str) -> bool:
    try:
        for filename in ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin"):
            found = try_to_load_from_cache(repo_id, filename)
            if isinstance(found, str):
                return True
    except Exception:
        return False
    return False


def catalog_rows() -> list[dict[str, Any]]:
    """One dict per runnable model: name, family, kind, LLM layers, visual tokens per image, weights, note."""
    rows = []
    for entry in CATALOG:
        if entry.kind == TOY:
            try:
                geo = toy_geometry()
                entry = ModelEntry(entry.name, entry.family, entry.kind, geo.pop("llm_layers"), geo, entry.note)
            except (OSError, KeyError, ValueError):
                pass
        present = weights_present(entry)
        rows.append(
            {
                "name": entry.name,
                "family": entry.family,
                "kind": entry.kind,
                "llm_layers": entry.llm_layers,
                "visual_tokens": visual_tokens_text(entry),
                "visual_tokens_range": list(visual_tokens(entry)),
                "weights": "built from config" if present is None else ("present" if present else "not downloaded"),
                "random_weights": entry.random_weights,
                "note": entry.note,
            }
        )
    return rows


__all__ = [
    "CATALOG",
    "RANDOM_WEIGHTS_NOTE",
    "ModelEntry",
    "catalog_entry",
    "catalog_rows",
    "is_random_weights",
    "visual_tokens",
    "visual_tokens_text",
    "weights_present",
]
