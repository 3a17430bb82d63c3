"""The toy model's training data: labels of the scenes of :mod:`prunebench.toy.world` (per patch, per scene,
per question), pixel values, and the token ids of training chats and evaluation prompts. Used by
:mod:`prunebench.toy.train`."""

from __future__ import annotations

from .world import BACKGROUNDS, COLORS, GRID, NUMBERS, SHAPES, render

AUX_COLORS = tuple(BACKGROUNDS) + tuple(COLORS)
AUX_SHAPES = ("none",) + SHAPES
KIND_WEIGHTS = (1.0, 10.0, 40.0)  # background, normal object, small object
SCENE_PAIRS = tuple((s, c) for s in SHAPES for c in COLORS)
QUESTION_FAMILIES = ("attribute", "count", "background", "small", "relation", "exist")


def pixel_values(samples, image_processor):
    """What ``image_processor(images)`` returns for shapes-world images, without its per-image PIL work.

    The world renders 336x336 images, so the CLIP processor's resize and centre crop are identities and only
    rescale + normalise remain (``tests/test_toy_world.py`` checks the two agree exactly).
    """
    import numpy as np
    import torch

    x = torch.from_numpy(np.stack([np.asarray(render(s)) for s in samples])).permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor(image_processor.image_mean)[None, :, None, None]
    std = torch.tensor(image_processor.image_std)[None, :, None, None]
    return (x - mean) / std


def patch_labels(samples):
    """Per-patch targets of the vision probes, (B, 576, 4): colour, shape, kind (0 bg, 1 normal, 2 small), column."""
    import torch

    lab = torch.zeros((len(samples), GRID, GRID, 4), dtype=torch.long)
    lab[..., 3] = torch.arange(GRID)  # column (x) of each patch, row-major order like the image tokens
    for i, s in enumerate(samples):
        lab[i, :, :, 0] = AUX_COLORS.index(s["background"])
        for o in s["objects"]:
            k = o["size"]
            sl = (i, slice(o["y"], o["y"] + k), slice(o["x"], o["x"] + k))
            lab[sl + (0,)] = AUX_COLORS.index(o["color"])
            lab[sl + (1,)] = AUX_SHAPES.index(o["shape"])
            lab[sl + (2,)] = 1 if k == 2 else 2
    return lab.reshape(len(samples), GRID * GRID, 4)


def column_target(column):
    """A patch column 0..GRID-1 scaled to [-2, 2]: the regression target of every column probe."""
    return column / (GRID - 1) * 4 - 2


def scene_labels(samples):
    """Scene-level targets of the [CLS] probe: present (shape, colour) pairs (multi-hot), object count, background."""
    import torch

    present = torch.zeros(len(samples), len(SCENE_PAIRS))
    count, background = [], []
    for i, s in enumerate(samples):
        for o in s["objects"]:
            present[i, SCENE_PAIRS.index((o["shape"], o["color"]))] = 1
        count.append(min(len(s["objects"]), len(NUMBERS)) - 1)
        background.append(list(BACKGROUNDS).index(s["background"]))
    return present, torch.tensor(count), torch.tensor(background)


def question_labels(question: str) -> list[int]:
    """Family, first shape, second shape, colour named by a question (0 = none): the stage-2 question probe's targets."""
    words = question.split()
    shapes = [w for w in words if w in SHAPES]
    colours = [w for w in words if w in COLORS]
    if "many" in words:
        family = "count"
    elif "background" in words:
        family = "background"
    elif "small" in words:
        family = "small"
    elif "left" in words:
        family = "relation"
    elif "there" in words:
        family = "exist"
    else:
        family = "attribute"
    return [
        QUESTION_FAMILIES.index(family),
        1 + SHAPES.index(shapes[0]) if shapes else 0,
        1 + SHAPES.index(shapes[1]) if len(shapes) > 1 else 0,
        1 + list(COLORS).index(colours[0]) if colours else 0,
    ]


QUESTION_SIZES = (len(QUESTION_FAMILIES), 1 + len(SHAPES), 1 + len(SHAPES), 1 + len(COLORS))


def relation_columns(sample, question: str) -> tuple[float, float] | None:
    """Centre columns of the two objects a relation question names, scaled like the stage-1 column probe's
    (:func:`column_target`): the stage-2 lookup probe's targets. None for any other question."""
    words = question.split()
    if "left" not in words:
        return None
    first, second = [w for w in words if w in SHAPES][:2]
    by_shape = {o["shape"]: o for o in sample["objects"]}
    return tuple(column_target(by_shape[s]["x"] + (by_shape[s]["size"] - 1) / 2) for s in (first, second))


def object_patches(sample):
    """Indices (row-major, 0..575) of the patches covered by the sample's objects."""
    out = []
    for o in sample["objects"]:
        k = o["size"]
        out += [(o["y"] + dy) * GRID + o["x"] + dx for dy in range(k) for dx in range(k)]
    return sorted(out)


class Conversation:
    """Token ids of one training image's chat: the evaluation prompt split around ``<image>``, then turns."""

    def __init__(self, sample, extra_turns, tokenizer, image_token_id: int):
        from .model import format_prompt

        ids = tokenizer(format_prompt(sample["question"]))["input_ids"]
        k = ids.index(image_token_id)
        self.before, after = ids[:k], ids[k + 1 :]
        self.targets = []  # (position in `after`, label, question labels or None, relation columns or None)
        for question, answer in [(None, sample["answer"]), *extra_turns]:
            if question is not None:
                after = after + tokenizer(f"USER: {question} ASSISTANT:", add_special_tokens=False)["input_ids"]
            word = tokenizer.convert_tokens_to_ids(answer)
            asked = question or sample["question"]
            self.targets += [(len(after) - 1, word, question_labels(asked), relation_columns(sample, asked)), (len(after), tokenizer.eos_token_id, None, None)]
            after = after + [word, tokenizer.eos_token_id]
        self.after = after


def encode_batch(samples, tokenizer, image_processor, image_token_id: int, n_image_tokens: int = 576):
    """Right-padded evaluation prompts (one turn) for a batch of scenes: input_ids, attention_mask,
    pixel_values and ``first`` [(position, label)] of each row's answer."""
    import torch

    from .model import format_prompt

    seqs, first = [], []
    for s in samples:
        ids = tokenizer(format_prompt(s["question"]))["input_ids"]
        k = ids.index(image_token_id)
        ids = ids[:k] + [image_token_id] * n_image_tokens + ids[k + 1 :]
        first.append((len(ids) - 1, tokenizer.convert_tokens_to_ids(s["answer"])))
        seqs.append(ids)
    length = max(len(x) for x in seqs)
    input_ids = torch.full((len(seqs), length), tokenizer.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), length), dtype=torch.long)
    for i, x in enumerate(seqs):
        input_ids[i, : len(x)] = torch.tensor(x)
        attn[i, : len(x)] = 1
    return input_ids, attn, pixel_values(samples, image_processor), first
