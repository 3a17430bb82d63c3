"""The shapes world: a deterministic, seeded generator of 336x336 VQA scenes with one-word answers.

A scene is a plain background colour (with mild pixel noise) and a few flat shapes. Everything is
aligned to LLaVA-1.5's 14-pixel patch grid (336 / 14 = 24, so 24 x 24 = 576 patches):

* a normal object covers a 2 x 2 block of patches (28 px), so it lives in 4 of the 576 visual tokens;
* a small object covers exactly 1 patch (14 px box, ~10 px shape), so it lives in a single token;
* the rest (typically > 95 % of the tokens) is background.

Question families (``FAMILIES``), each with a one-word answer:

``attribute``   colour of the object with a given shape, or shape of the object with a given colour
``count``       number of shapes (one .. five)
``exist``       "is there a <colour> <shape> ?" (yes / no, balanced; "no" is usually a near miss)
``relation``    "is the <shape> left or right of the <shape> ?" (left / right)
``small``       colour of the single small object among normal-sized distractors
``background``  colour of the background (only background tokens carry it)

A sample is a small JSON-able dict of parameters; :func:`render` turns it into the PIL image
deterministically, so a split is stored as a tiny JSONL of parameters, never as PNGs.

Seeds: the training stream draws seeds below ``TEST_SEED_BASE`` and additionally rejects any scene
whose parameters equal a test sample's (:func:`training_stream`); test splits use seeds from
``TEST_SEED_BASE`` up (:func:`test_split`).
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterator
from functools import cache

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 336
PATCH = 14
GRID = IMAGE_SIZE // PATCH  # 24

FAMILIES = ("attribute", "count", "exist", "relation", "small", "background")

COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (45, 80, 225),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 195),
    "orange": (245, 135, 25),
}
BACKGROUNDS = {
    "black": (25, 25, 25),
    "gray": (125, 125, 125),
    "white": (235, 235, 235),
    "brown": (105, 65, 35),
}
SHAPES = ("circle", "square", "triangle")
NUMBERS = ("one", "two", "three", "four", "five")

# Test splits: seeds TEST_SEED_BASE + SPLIT_OFFSETS[name] + i. Training seeds are < TEST_SEED_BASE.
TEST_SEED_BASE = 1_000_000_000
SPLIT_OFFSETS = {"test": 0, "val": 10_000_000}
TEST_PER_FAMILY = 50

# Every word a question or answer can contain (the tokenizer's vocabulary is built from this).
QUESTION_WORDS = ("what color is the shape object of how many shapes are there a left or right small background ?").split()
ANSWER_WORDS = tuple(COLORS) + tuple(BACKGROUNDS) + SHAPES + NUMBERS + ("yes", "no", "left", "right")


def vocabulary() -> list[str]:
    """All words (questions and answers), in a fixed order."""
    words: list[str] = []
    for w in list(QUESTION_WORDS) + list(ANSWER_WORDS):
        if w not in words:
            words.append(w)
    return words


# --------------------------------------------------------------------------------------------- scenes
def _place(rng: random.Random, sizes: list[int], occupied: list[tuple[int, int, int]] | None = None, min_dx: int | None = None) -> list[tuple[int, int]]:
    """Place boxes of ``sizes`` (in patches) on the grid, with at least one free patch between boxes."""
    for _ in range(1000):
        boxes = list(occupied or [])
        out = []
        ok = True
        for s in sizes:
            for _ in range(200):
                x, y = rng.randrange(0, GRID - s + 1), rng.randrange(0, GRID - s + 1)
                if all(x + s + 1 <= bx or bx + bs + 1 <= x or y + s + 1 <= by or by + bs + 1 <= y for bx, by, bs in boxes):
                    boxes.append((x, y, s))
                    out.append((x, y))
                    break
            else:
                ok = False
                break
        if ok and min_dx is not None and len(out) == 2 and abs(out[0][0] - out[1][0]) < min_dx:
            ok = False
        if ok:
            return out
    raise RuntimeError("could not place objects")  # pragma: no cover - grid is far from full


def _obj(shape: str, color: str, xy: tuple[int, int], size: int = 2) -> dict:
    return {"shape": shape, "color": color, "x": xy[0], "y": xy[1], "size": size}


def _distinct_objects(rng: random.Random, n: int, distinct_shapes=False, distinct_colors=False, exclude_colors=()) -> list[tuple[str, str]]:
    shapes = rng.sample(SHAPES, n) if distinct_shapes else [rng.choice(SHAPES) for _ in range(n)]
    palette = [c for c in COLORS if c not in exclude_colors]
    colors = rng.sample(palette, n) if distinct_colors else [rng.choice(palette) for _ in range(n)]
    return list(zip(shapes, colors))


def _make(rng: random.Random, family: str, answer_hint: str | None = None) -> dict:
    bg = rng.choice(list(BACKGROUNDS))
    if family == "attribute":
        n = rng.randint(1, 3)
        pairs = _distinct_objects(rng, n, distinct_shapes=True, distinct_colors=True)
        objs = [_obj(s, c, xy) for (s, c), xy in zip(pairs, _place(rng, [2] * n))]
        target = rng.randrange(n)
        s, c = pairs[target]
        if rng.random() < 0.5:
            question, answer = f"what color is the {s} ?", c
        else:
            question, answer = f"what shape is the {c} object ?", s
    elif family == "count":
        n = rng.randint(1, len(NUMBERS))
        pairs = _distinct_objects(rng, n)
        objs = [_obj(s, c, xy) for (s, c), xy in zip(pairs, _place(rng, [2] * n))]
        question, answer = "how many shapes are there ?", NUMBERS[n - 1]
    elif family == "exist":
        yes = (answer_hint == "yes") if answer_hint in ("yes", "no") else rng.random() < 0.5
        n = rng.randint(1, 4)
        pairs = []
        while len(pairs) < n:  # distinct (shape, colour) combinations
            p = (rng.choice(SHAPES), rng.choice(list(COLORS)))
            if p not in pairs:
                pairs.append(p)
        objs = [_obj(s, c, xy) for (s, c), xy in zip(pairs, _place(rng, [2] * n))]
        if yes:
            s, c = rng.choice(pairs)
        else:
            absent = [(s, c) for s in SHAPES for c in COLORS if (s, c) not in pairs]
            near = [(s, c) for s, c in absent if any(s == ps or c == pc for ps, pc in pairs)]
            s, c = rng.choice(near if near and rng.random() < 0.75 else absent)
        question, answer = f"is there a {c} {s} ?", "yes" if yes else "no"
    elif family == "relation":
        pairs = _distinct_objects(rng, 2, distinct_shapes=True)
        xy = _place(rng, [2, 2], min_dx=4)
        objs = [_obj(s, c, p) for (s, c), p in zip(pairs, xy)]
        a, b = (0, 1) if rng.random() < 0.5 else (1, 0)
        question = f"is the {pairs[a][0]} left or right of the {pairs[b][0]} ?"
        answer = "left" if xy[a][0] < xy[b][0] else "right"
    elif family == "small":
        n = rng.randint(1, 3)
        small_shape, small_color = rng.choice(SHAPES), rng.choice(list(COLORS))
        pairs = _distinct_objects(rng, n, exclude_colors=(small_color,))
        xy = _place(rng, [1] + [2] * n)
        objs = [_obj(small_shape, small_color, xy[0], 1)]
        objs += [_obj(s, c, p) for (s, c), p in zip(pairs, xy[1:])]
        rng.shuffle(objs)
        question, answer = "what color is the small object ?", small_color
    elif family == "background":
        n = rng.randint(1, 4)
        pairs = _distinct_objects(rng, n)
        objs = [_obj(s, c, xy) for (s, c), xy in zip(pairs, _place(rng, [2] * n))]
        question, answer = "what color is the background ?", bg
    else:
        raise ValueError(f"unknown family {family!r}; expected one of {FAMILIES}")
    return {"family": family, "question": question, "answer": answer, "background": bg, "objects": objs, "noise_seed": rng.getrandbits(32)}


def generate_sample(rng_or_seed: int | random.Random, family: str | None = None, answer: str | None = None) -> dict:
    """One sample (parameters only; see :func:`render`).

    ``rng_or_seed``: an int seed (fully deterministic, the id is ``"<family>-<seed>"``) or a
    ``random.Random`` (the stream is advanced). ``family``: one of ``FAMILIES`` or None (uniform).
    ``answer``: for ``exist`` only, force ``"yes"``/``"no"`` (used to balance the test split).
    Keys: id, family, question, answer, background, objects, noise_seed.
    """
    if isinstance(rng_or_seed, random.Random):
        rng = rng_or_seed
        sid = None
    else:
        seed = int(rng_or_seed)
        rng = random.Random(seed)
        sid = seed
    if family is None:
        family = rng.choice(FAMILIES)
    s = _make(rng, family, answer)
    if sid is None:
        sid = s["noise_seed"]
    return {"id": f"{family}-{sid}", **s}


# --------------------------------------------------------------------------------------------- render
def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, box: tuple[int, int, int, int], fill) -> None:
    x0, y0, x1, y1 = box
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
    else:
        raise ValueError(shape)


def render(sample: dict) -> Image.Image:
    """The 336x336 RGB image of a sample, a pure function of its parameters."""
    img = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUNDS[sample["background"]])
    draw = ImageDraw.Draw(img)
    for o in sample["objects"]:
        s = o["size"]
        margin = 2
        x0, y0 = o["x"] * PATCH + margin, o["y"] * PATCH + margin
        x1, y1 = (o["x"] + s) * PATCH - margin - 1, (o["y"] + s) * PATCH - margin - 1
        _draw_shape(draw, o["shape"], (x0, y0, x1, y1), COLORS[o["color"]])
    arr = np.asarray(img, dtype=np.int16)
    noise = np.random.default_rng(sample["noise_seed"]).integers(-8, 9, size=arr.shape, dtype=np.int16)
    return Image.fromarray(np.clip(arr + noise, 0, 255).astype(np.uint8), "RGB")


# --------------------------------------------------------------------------------------------- splits
def scene_key(sample: dict) -> str:
    """Canonical key of a scene (background and objects; not the question, id or noise).

    Disjointness is checked on scenes, not on questions, because training asks several questions
    about each scene (:func:`scene_questions`).
    """
    return json.dumps({"background": sample["background"], "objects": sample["objects"]}, sort_keys=True)


def scene_questions(sample: dict, rng: random.Random, per_family: int = 2) -> list[tuple[str, str, str]]:
    """Other valid (family, question, answer) triples about the same scene (up to ``per_family`` each).

    Used to get many supervised answers per rendered image during training (the image is the
    expensive part). Questions are drawn the same way as in the families' own scenes: no count /
    exist / attribute questions about scenes with a small object, relations only between objects with
    unique shapes at least 4 patches apart, exist balanced between yes and no.
    """
    objs = sample["objects"]
    out = [("background", "what color is the background ?", sample["background"])]
    if any(o["size"] != 2 for o in objs):
        return out
    out.append(("count", "how many shapes are there ?", NUMBERS[len(objs) - 1]))
    present = sorted({(o["shape"], o["color"]) for o in objs})
    absent = [(sh, c) for sh in SHAPES for c in COLORS if (sh, c) not in present]
    for _ in range(per_family):
        if rng.random() < 0.5:
            sh, c = rng.choice(present)
            out.append(("exist", f"is there a {c} {sh} ?", "yes"))
        else:
            sh, c = rng.choice(absent)
            out.append(("exist", f"is there a {c} {sh} ?", "no"))
    shapes = [o["shape"] for o in objs]
    colors = [o["color"] for o in objs]
    unique_shape = [o for o in objs if shapes.count(o["shape"]) == 1]
    unique_color = [o for o in objs if colors.count(o["color"]) == 1]
    attr = [(f"what color is the {o['shape']} ?", o["color"]) for o in unique_shape]
    attr += [(f"what shape is the {o['color']} object ?", o["shape"]) for o in unique_color]
    out += [("attribute", q, a) for q, a in rng.sample(attr, min(per_family, len(attr)))]
    pairs = [(a, b) for a in unique_shape for b in unique_shape if a is not b and abs(a["x"] - b["x"]) >= 4]
    for a, b in rng.sample(pairs, min(per_family, len(pairs))):
        out.append(("relation", f"is the {a['shape']} left or right of the {b['shape']} ?", "left" if a["x"] < b["x"] else "right"))
    return out


def _generate_split(name: str, per_family: int) -> list[dict]:
    if name not in SPLIT_OFFSETS:
        raise ValueError(f"unknown split {name!r}; expected one of {sorted(SPLIT_OFFSETS)}")
    base = TEST_SEED_BASE + SPLIT_OFFSETS[name]
    out = []
    for fi, fam in enumerate(FAMILIES):
        for i in range(per_family):
            seed = base + fi * 100_000 + i
            hint = ("yes", "no")[i % 2] if fam == "exist" else None
            out.append(generate_sample(seed, fam, answer=hint))
    return out


@cache
def _cached_split(name: str, per_family: int) -> tuple[str, ...]:
    return tuple(json.dumps(s, sort_keys=True) for s in _generate_split(name, per_family))


def test_split(name: str = "test", per_family: int = TEST_PER_FAMILY) -> list[dict]:
    """The fixed split ``name`` ("test" or "val"): ``per_family`` samples per family, in family order.

    Regenerated deterministically from fixed seeds (a few ms); the lmms-eval suite ships the same
    parameters as JSONL (``suites/shapes/test_<family>.jsonl``), and the tests check both against a fixed hash.
    """
    return [json.loads(line) for line in _cached_split(name, per_family)]


test_split.__test__ = False  # not a pytest test


def split_hash(samples: list[dict]) -> str:
    """sha256 of a split's canonical JSON (parameters, not pixels)."""
    h = hashlib.sha256()
    for s in samples:
        h.update(json.dumps(s, sort_keys=True).encode())
        h.update(b"\n")
    return h.hexdigest()


@cache
def _held_out_keys() -> frozenset[str]:
    return frozenset(scene_key(s) for name in SPLIT_OFFSETS for s in test_split(name))


def training_stream(seed: int = 0, families: tuple[str, ...] = FAMILIES) -> Iterator[dict]:
    """Unbounded training stream: seeds ``seed*1e6 + i`` (< ``TEST_SEED_BASE``); held-out scenes are skipped."""
    if not 0 <= seed < TEST_SEED_BASE // 1_000_000:
        raise ValueError("training seed must be in [0, 1000)")
    held = _held_out_keys()
    rng = random.Random(seed)
    i = 0
    while True:
        s = generate_sample(seed * 1_000_000 + (i % 1_000_000), rng.choice(families))
        i += 1
        if scene_key(s) not in held:
            yield s
