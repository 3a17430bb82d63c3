"""Synthetic inputs of the conformance kit (:mod:`prunebench.conformance`): deterministic pictures and videos
of coloured shapes on noise, per model family, with prompts of different lengths."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from prunebench.adapters.base import Sample

QUESTIONS = (
    "what is the color of the circle ?",
    "how many",
    "is there a red square in the image ? answer with a single word or phrase .",
)


def _picture(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):  # the same draws as the original square-only generator for square images
        x, y = (int(v) for v in rng.integers(0, min(width, height) - 60, 2))
        draw.ellipse([x, y, x + 50, y + 50], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return image


# Per family: (width, height) of each image, or ("video", frames, side). Mixed sizes / modalities make the batch
# check cover batches whose samples have different visual-token counts (the engine groups them).
FAMILY_INPUTS: dict[str, list[tuple]] = {
    "llava_next": [(336, 336), (448, 336), (336, 336)],  # 1152 / 1344 / 1152 candidates (AnyRes, unpadded; + newlines)
    "video_llava": [("video", 4, 224), (224, 224), ("video", 4, 224)],  # 4 x 257 / 256 / 4 x 257
    "qwen2_5_vl": [(252, 252), (308, 224), (252, 252), ("video", 4, 224)],  # 81 / 88 / 81 / 2 x 64 merged tokens
    "llava_onevision": [(126, 126), (168, 126), ("video", 4, 126), (126, 126)],
    "qwen3_vl": [(256, 256), (320, 224), (256, 256)],  # 64 / 70 / 64 merged tokens (no video yet)  # 162 / 189 (AnyRes, + newlines) / 4 x 25 pooled + 1
}


def synthetic_samples(count: int = 3, size: int = 336, seed: int = 0, family: str = "llava") -> list[Sample]:
    """Deterministic images (or videos) with a few coloured shapes on noise, and prompts of different lengths.

    ``family`` picks the inputs of :data:`FAMILY_INPUTS` (image sizes, videos) for that model family;
    other families get ``count`` square images of ``size`` pixels.
    """
    rng = np.random.default_rng(seed)
    specs = FAMILY_INPUTS.get(family) or [(size, size)] * count
    samples = []
    for i, spec in enumerate(specs):
        sample = Sample(id=f"synthetic-{seed}-{i}", question=QUESTIONS[i % len(QUESTIONS)])
        if spec[0] == "video":
            _, frames, side = spec
            sample.video = [_picture(rng, side, side) for _ in range(frames)]
        else:
            sample.image = _picture(rng, *spec)
        samples.append(sample)
    return samples
