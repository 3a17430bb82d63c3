"""Train the toy LLaVA from scratch on the shapes world (CPU, seeded).

Loss on the answer word and the EOS token only. AdamW, linear warm-up, cosine decay. Samples come
from :func:`prunebench.toy.world.training_stream`, which never yields a test/val scene.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import random
import shutil
import time
from pathlib import Path

from .world import BACKGROUNDS, COLORS, GRID, SHAPES, render, scene_questions, test_split, training_stream

log = logging.getLogger("prunebench.toy.train")


def encode_batch(samples, tokenizer, image_processor, image_token_id: int, n_image_tokens: int = 576,
                 extra_turns=None):
    """Right-padded multi-turn sequences for a batch of scenes.

    Turn 1 is exactly the evaluation prompt (``format_prompt``) followed by the answer and EOS; each
    of ``extra_turns[i]`` (a list of (question, answer)) adds ``USER: q ASSISTANT: a</s>`` (the
    chat template's multi-turn rendering). Returns input_ids, attention_mask, pixel_values, targets
    ``[(row, position, label)]`` (the logits at ``position`` must predict ``label``) and ``first``
    ``[(position, label)]`` for each row's first answer.
    """
    import torch

    from .model import format_prompt

    seqs, targets, first = [], [], []
    eos = tokenizer.eos_token_id
    for r, s in enumerate(samples):
        ids = tokenizer(format_prompt(s["question"]))["input_ids"]
        k = ids.index(image_token_id)
        ids = ids[:k] + [image_token_id] * n_image_tokens + ids[k + 1:]
        turns = [(None, s["answer"])] + list(extra_turns[r] if extra_turns else [])
        for t, (q, a) in enumerate(turns):
            if q is not None:
                ids = ids + tokenizer(f"USER: {q} ASSISTANT:", add_special_tokens=False)["input_ids"]
            ans = tokenizer.convert_tokens_to_ids(a)
            if t == 0:
                first.append((len(ids) - 1, ans))
            targets += [(r, len(ids) - 1, ans), (r, len(ids), eos)]
            ids = ids + [ans, eos]
        seqs.append(ids)
    L = max(len(x) for x in seqs)
    input_ids = torch.full((len(seqs), L), tokenizer.pad_token_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), L), dtype=torch.long)
    for i, x in enumerate(seqs):
        input_ids[i, : len(x)] = torch.tensor(x)
        attn[i, : len(x)] = 1
    pixel_values = image_processor([render(s) for s in samples], return_tensors="pt")["pixel_values"]
    return input_ids, attn, pixel_values, targets, first


AUX_COLORS = tuple(BACKGROUNDS) + tuple(COLORS)
AUX_SHAPES = ("none",) + SHAPES
AUX_SIZES = 3  # background, normal object, small object


def patch_labels(samples):
    """Per-patch targets of the auxiliary loss, (B, 576, 4): colour, shape, kind, column."""
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


class AuxHead:
    """Training-only linear probes on the projected visual tokens (not part of the saved model).

    Dense per-patch supervision (colour, shape, object kind, column) makes the from-scratch ViT and
    projector informative within a few hundred steps, instead of waiting for the answer-only loss to
    break symmetry; it also keeps each visual token about its own patch, so pruning removes information.
    """

    def __init__(self, width: int):
        import torch

        sizes = (len(AUX_COLORS), len(AUX_SHAPES), AUX_SIZES, GRID)
        self.sizes = sizes
        self.linear = torch.nn.Linear(width, sum(sizes))

    def loss(self, feats, labels):
        import torch.nn.functional as F

        logits = self.linear(feats).split(self.sizes, dim=-1)
        return sum(F.cross_entropy(lg.reshape(-1, lg.shape[-1]), labels[..., j].reshape(-1))
                   for j, lg in enumerate(logits)) / len(logits)


def _loss(model, batch, aux=None, aux_labels=None, aux_weight: float = 0.5):
    import torch
    import torch.nn.functional as F

    input_ids, attn, pixel_values, targets, _ = batch
    emb = model.get_input_embeddings()(input_ids)
    feats = model.model.get_image_features(pixel_values=pixel_values).pooler_output
    feats = torch.stack(list(feats)) if isinstance(feats, (list, tuple)) else feats
    feats = feats.reshape(input_ids.shape[0], -1, emb.shape[-1])
    is_img = (input_ids == model.config.image_token_id)[..., None].expand_as(emb)
    emb = emb.masked_scatter(is_img, feats.to(emb.dtype))
    hidden = model.model(inputs_embeds=emb, attention_mask=attn).last_hidden_state
    rows = torch.tensor([r for r, _, _ in targets])
    cols = torch.tensor([p for _, p, _ in targets])
    labels = torch.tensor([y for _, _, y in targets])
    loss = F.cross_entropy(model.lm_head(hidden[rows, cols]), labels)
    if aux is not None:
        return loss, aux.loss(feats, aux_labels)
    return loss, None


def quick_accuracy(model, tokenizer, image_processor, samples, batch_size: int = 16) -> dict:
    """First-token greedy accuracy per family (one forward pass per sample; same as generate's first step)."""
    import torch

    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    model.eval()
    hits: dict[str, list[int]] = {}
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            chunk = samples[i: i + batch_size]
            input_ids, attn, pv, _, first = encode_batch(chunk, tokenizer, image_processor, image_token_id)
            hidden = model.model(input_ids=input_ids, attention_mask=attn, pixel_values=pv).last_hidden_state
            pos = torch.tensor([p for p, _ in first])
            pred = model.lm_head(hidden[torch.arange(len(chunk)), pos]).argmax(-1)
            for s, (_, a), p in zip(chunk, first, pred.tolist()):
                hits.setdefault(s["family"], []).append(int(p == a))
    model.train()
    acc = {f: sum(h) / len(h) for f, h in hits.items()}
    acc["overall"] = sum(sum(h) for h in hits.values()) / sum(len(h) for h in hits.values())
    return acc


def train(output: Path, seed: int = 0, steps: int = 2400, batch_size: int = 8, lr: float = 1e-3,
          warmup: int = 200, weight_decay: float = 0.01, minutes: float | None = None,
          eval_every: int = 200, threads: int = 2, arch=None, progress: bool = True,
          stop_after: int | None = None, init_from: Path | None = None, extra_questions: int = 8,
          aux_weight: float = 0.5) -> dict:
    """Train and save to ``output`` (model, processor, ``training.json``).

    ``steps`` fixes the LR schedule; with ``minutes`` the cosine follows whichever of steps and wall
    time runs out first (for a shared, slow CPU); ``stop_after`` ends the run early at that step (reproduces a
    run that was stopped by ``minutes``). ``init_from``: start from that checkpoint's weights instead
    of random ones (a second stage with a fresh warm-up/cosine schedule and its own data seed).
    ``extra_questions``: besides its own question, each training image gets up to this many other
    questions about the same scene as extra chat turns (the image costs most of the compute).
    """
    import torch
    import transformers
    from tqdm import tqdm

    from .model import ToyArch, arch_dict, build_model, build_processor, build_tokenizer

    torch.set_num_threads(threads)
    random.seed(seed)
    torch.manual_seed(seed)
    arch = arch or ToyArch()
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    model = build_model(tokenizer, arch, seed=seed)
    if init_from is not None:
        from transformers import LlavaForConditionalGeneration

        model.load_state_dict(LlavaForConditionalGeneration.from_pretrained(init_from).state_dict())
        log.info("initialised from %s", init_from)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log.info("toy-llava: %.2f M parameters, arch %s", n_params / 1e6, arch_dict(arch))
    aux = AuxHead(model.config.text_config.hidden_size) if aux_weight > 0 else None
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
    decay += list(aux.linear.parameters()) if aux is not None else []
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))

    def progress_at(step):
        """Fraction of the run done: by steps, or by wall time when ``minutes`` is set (whichever is further)."""
        p = step / steps
        if minutes is not None:
            p = max(p, (time.time() - t0) / (minutes * 60))
        return min(1.0, p)

    def lr_at(step):
        if step < warmup:
            return lr * (step + 1) / warmup
        t = progress_at(step)
        return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)))

    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    stream = training_stream(seed)
    qrng = random.Random(seed + 12345)
    val = [s for s in test_split("val") if int(s["id"].rsplit("-", 1)[1]) % 50 < 12]  # 12 per family
    history = []
    output = Path(output)
    tmp = output.with_name(output.name + ".partial")
    t0 = time.time()
    bar = tqdm(range(steps), disable=not progress, desc="toy train", mininterval=10)
    ema = aux_ema = None
    done = 0
    for step in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        scenes = [next(stream) for _ in range(batch_size)]
        extra = []
        for sc in scenes:  # up to `extra_questions` more questions about the same image (other families)
            more = list(dict.fromkeys((q, a) for _, q, a in scene_questions(sc, qrng) if q != sc["question"]))
            qrng.shuffle(more)
            extra.append(more[:extra_questions])
        batch = encode_batch(scenes, tokenizer, processor.image_processor, image_token_id, extra_turns=extra)
        answer_loss, aux_loss = _loss(model, batch, aux, patch_labels(scenes) if aux is not None else None)
        loss = answer_loss + aux_weight * aux_loss if aux is not None else answer_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        ema = answer_loss.item() if ema is None else 0.98 * ema + 0.02 * answer_loss.item()
        aux_ema = None if aux is None else (aux_loss.item() if aux_ema is None else 0.98 * aux_ema + 0.02 * aux_loss.item())
        bar.set_postfix(loss=f"{ema:.3f}", aux=f"{aux_ema or 0:.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        if done % eval_every == 0 or done == steps:
            acc = quick_accuracy(model, tokenizer, processor.image_processor, val)
            elapsed = time.time() - t0
            history.append({"step": done, "loss_ema": round(ema, 4), "aux_loss_ema": round(aux_ema or 0, 4),
                            "elapsed_s": round(elapsed, 1),
                            "lr": round(opt.param_groups[0]["lr"], 7),
                            **{k: round(v, 3) for k, v in acc.items()}})
            log.info("step %d loss %.3f aux %.3f elapsed %.0fs val %s", done, ema, aux_ema or 0, elapsed,
                     " ".join(f"{k}={v:.2f}" for k, v in acc.items()))
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
        if stop_after is not None and done >= stop_after:
            log.info("stopping after step %d (--stop-after)", done)
            break
        if minutes is not None and progress_at(done) >= 1.0:
            log.warning("time budget of %.1f min reached at step %d of %d", minutes, done, steps)
            break
    wall = time.time() - t0
    model.save_pretrained(output)
    processor.save_pretrained(output)
    shutil.rmtree(tmp, ignore_errors=True)
    recipe = {
        "model": "toy-llava",
        "command": (f"prunebench toy train --seed {seed} --steps {steps} --batch-size {batch_size} --lr {lr}"
                    f" --warmup {warmup} --extra-questions {extra_questions} --aux-weight {aux_weight}"
                    + (f" --minutes {minutes}" if minutes else "") + (f" --stop-after {done}" if done < steps else "")
                    + (f" --init-from {init_from}" if init_from else "")),
        "init_from": str(init_from) if init_from else None,
        "seed": seed, "steps": done, "steps_planned": steps, "batch_size": batch_size, "samples": done * batch_size,
        "lr": lr, "warmup": warmup,
        "schedule": ("linear warm-up, cosine to 5% over the steps"
                     + (f" or {minutes} min of wall time, whichever runs out first" if minutes else "")),
        "minutes": minutes, "weight_decay": weight_decay,
        "optimizer": "AdamW(betas=(0.9, 0.98)), grad clip 1.0", "loss": "cross-entropy on answer words + EOS of every turn",
        "extra_questions": extra_questions,
        "aux_loss": (f"weight {aux_weight}: training-only linear probes on the projected visual tokens predict each "
                     "patch's colour, shape, object kind and column (not saved)") if aux is not None else None,
        "arch": arch_dict(arch), "parameters": n_params, "threads": threads,
        "wall_time_s": round(wall, 1), "machine": f"{platform.machine()}, {threads} CPU threads",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "history": history,
    }
    (output / "training.json").write_text(json.dumps(recipe, indent=2) + "\n")
    log.info("done: %d steps in %.1f min, saved to %s", done, wall / 60, output)
    return recipe
