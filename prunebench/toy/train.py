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

from .world import render, scene_questions, test_split, training_stream

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


def _loss(model, batch):
    import torch
    import torch.nn.functional as F

    input_ids, attn, pixel_values, targets, _ = batch
    hidden = model.model(input_ids=input_ids, attention_mask=attn, pixel_values=pixel_values).last_hidden_state
    rows = torch.tensor([r for r, _, _ in targets])
    cols = torch.tensor([p for _, p, _ in targets])
    labels = torch.tensor([y for _, _, y in targets])
    logits = model.lm_head(hidden[rows, cols])
    return F.cross_entropy(logits, labels)


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
          stop_after: int | None = None, init_from: Path | None = None, extra_questions: int = 8) -> dict:
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
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embed" not in n]
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
    ema = None
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
        loss = _loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        done = step + 1
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        bar.set_postfix(loss=f"{ema:.3f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        if done % eval_every == 0 or done == steps:
            acc = quick_accuracy(model, tokenizer, processor.image_processor, val)
            elapsed = time.time() - t0
            history.append({"step": done, "loss_ema": round(ema, 4), "elapsed_s": round(elapsed, 1),
                            "lr": round(opt.param_groups[0]["lr"], 7),
                            **{k: round(v, 3) for k, v in acc.items()}})
            log.info("step %d loss %.3f elapsed %.0fs val %s", done, ema, elapsed,
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
                    f" --warmup {warmup} --extra-questions {extra_questions}"
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
        "arch": arch_dict(arch), "parameters": n_params, "threads": threads,
        "wall_time_s": round(wall, 1), "machine": f"{platform.machine()}, {threads} CPU threads",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "python": platform.python_version()},
        "history": history,
    }
    (output / "training.json").write_text(json.dumps(recipe, indent=2) + "\n")
    log.info("done: %d steps in %.1f min, saved to %s", done, wall / 60, output)
    return recipe
