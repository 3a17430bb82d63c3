"""Accuracy of a toy-llava checkpoint on a shapes split with plain ``transformers`` ``generate``.

``keep=None``: the stock path (``processor(...)`` then ``model.generate(**inputs)``).
``keep=k``: a hand-written sanity check of pruning *before the LLM*: the prompt's embeddings are
built with ``get_image_features`` + ``masked_scatter``, then only the text tokens and ``k`` uniformly
random visual tokens (seeded, original order kept) go into ``generate(inputs_embeds=...)``.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

from .world import FAMILIES, render, test_split


def normalize(text: str) -> str:
    """Lower-case first word of a reply, punctuation stripped ("Red." -> "red")."""
    words = re.sub(r"[^a-z0-9 ]", " ", text.lower()).split()
    return words[0] if words else ""


def load(model_dir: Path):
    import torch
    from transformers import AutoProcessor

    from .model import load_checkpoint

    model = load_checkpoint(model_dir, dtype=torch.float32)  # safetensors only
    model.eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    return model, processor


def prompt_for(processor, question: str) -> str:
    return processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}], add_generation_prompt=True)


def answer(model, processor, sample: dict, keep: int | None = None, rng: random.Random | None = None, max_new_tokens: int = 4) -> str:
    """The model's decoded reply to one sample (greedy)."""
    import torch

    inputs = processor(text=prompt_for(processor, sample["question"]), images=render(sample), return_tensors="pt")
    with torch.no_grad():
        if keep is None:
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
            new = out[0, inputs["input_ids"].shape[1] :]
        else:
            ids = inputs["input_ids"]
            emb = model.get_input_embeddings()(ids)
            feats = model.model.get_image_features(pixel_values=inputs["pixel_values"]).pooler_output
            feats = torch.cat(list(feats), 0) if isinstance(feats, (list, tuple)) else feats.reshape(-1, emb.shape[-1])
            is_img = ids[0] == model.config.image_token_id
            emb = emb.masked_scatter(is_img[None, :, None].expand_as(emb), feats.to(emb.dtype))
            img_pos = is_img.nonzero().flatten().tolist()
            rng = rng or random.Random(0)
            kept = set(rng.sample(img_pos, min(keep, len(img_pos))))
            sel = torch.tensor([i for i in range(ids.shape[1]) if not is_img[i] or i in kept])
            emb = emb[:, sel]
            out = model.generate(inputs_embeds=emb, attention_mask=torch.ones(1, len(sel), dtype=torch.long), max_new_tokens=max_new_tokens, do_sample=False)
            new = out[0]  # with inputs_embeds only, generate returns just the new tokens
    return processor.tokenizer.decode(new, skip_special_tokens=True)


def evaluate(model, processor, samples: list[dict], keep: int | None = None, seed: int = 0, progress: bool = True) -> dict:
    from tqdm import tqdm

    rng = random.Random(seed)
    rows = []
    for s in tqdm(samples, disable=not progress, desc="toy eval", mininterval=5):
        reply = answer(model, processor, s, keep=keep, rng=rng)
        rows.append({"id": s["id"], "family": s["family"], "answer": s["answer"], "reply": reply, "correct": normalize(reply) == s["answer"]})
    acc = {}
    for fam in FAMILIES:
        r = [x["correct"] for x in rows if x["family"] == fam]
        if r:
            acc[fam] = round(sum(r) / len(r), 4)
    acc["overall"] = round(sum(x["correct"] for x in rows) / max(1, len(rows)), 4)
    return {"keep": keep, "n": len(rows), "accuracy": acc, "samples": rows}


def evaluate_checkpoint(
    model_dir: Path, split: str = "test", keep: int | None = None, seed: int = 0, threads: int = 2, limit: int | None = None, progress: bool = True
) -> dict:
    import torch

    torch.set_num_threads(threads)
    model, processor = load(model_dir)
    samples = test_split(split)
    if limit is not None:
        samples = [s for f in FAMILIES for s in [x for x in samples if x["family"] == f][:limit]]
    return evaluate(model, processor, samples, keep=keep, seed=seed, progress=progress)
