"""Train the toy LLaVA from scratch on the shapes world (CPU, seeded), in two stages.

**Stage 1, vision** (``vision_steps``): the CLIP ViT and the projector learn, from dense training-only probes
(not saved), what every patch shows: its colour, its shape, whether it is background, part of a normal
object or a small object, and its column; and the ViT's [CLS] token at the feature layer learns the scene's
content (which shape/colour pairs are present, how many objects, the background), as CLIP's [CLS] summarises
an image, so [CLS]-attention methods (VisPruner, FasterVLM, VisionZip) see attention that favours objects.
Patches are weighted by kind (background 1, normal object 10, small object 40): a loss averaged over all 576
patches is ~97 % background and hid that shapes were not learned (the first shipped model read shape off
only 52 % of object patches, so every question naming a shape was a guess).

**Stage 2, language** (``steps`` / ``minutes``): the ViT and projector are frozen (each visual token stays
about its own patch, so pruning removes information) and the Llama decoder learns to answer. Loss: the
answer word and EOS of every chat turn (each image carries its own question plus up to ``extra_questions``
other questions about the same scene as extra turns), plus a training-only probe at the output of decoder
layer 1 that reads the question's family, shapes and colour at each answer position: it moves the question
into the last token early, so that the later layers can use it to look up the right image tokens (without
it, the lookup is a two-hop problem that trained very slowly). No loss ever touches attention weights.

To make the lookups cheap to learn, most batches show the LLM the object tokens plus a random 16-128 of the
background tokens (with their original position ids, or renumbered, at random); ``full_fraction`` of the
batches show all 576 tokens, so the model is trained on exactly what it is evaluated on.
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

# Re-exported: the training data (labels, pixel values, token ids) lives in .data; these names are imported from here.
from .data import (
    AUX_COLORS,
    AUX_SHAPES,
    KIND_WEIGHTS,
    QUESTION_SIZES,
    SCENE_PAIRS,
    Conversation,
    column_target,
    encode_batch,
    object_patches,
    patch_labels,
    pixel_values,
    scene_labels,
)
from .data import QUESTION_FAMILIES as QUESTION_FAMILIES
from .data import question_labels as question_labels
from .data import relation_columns as relation_columns
from .world import BACKGROUNDS, FAMILIES, GRID, NUMBERS, scene_questions, test_split, training_stream

log = logging.getLogger("prunebench.toy.train")


class VisionProbes:
    """Training-only heads of stage 1 (not saved): per-patch probes on the projected tokens, a scene probe on [CLS]."""

    def __init__(self, token_width: int, vit_width: int):
        import torch

        self.sizes = (len(AUX_COLORS), len(AUX_SHAPES), len(KIND_WEIGHTS))
        self.patch = torch.nn.Linear(token_width, sum(self.sizes) + 1)  # + column, regressed
        self.scene = torch.nn.Linear(vit_width, len(SCENE_PAIRS) + len(NUMBERS) + len(BACKGROUNDS))

    def parameters(self):
        return [*self.patch.parameters(), *self.scene.parameters()]

    def loss(self, tokens, cls, samples):
        import torch
        import torch.nn.functional as F

        labels = patch_labels(samples)
        weight = torch.tensor(KIND_WEIGHTS)[labels[..., 2]].reshape(-1)
        *logits, column = self.patch(tokens).split([*self.sizes, 1], dim=-1)
        patch = sum(
            (F.cross_entropy(lg.reshape(-1, lg.shape[-1]), labels[..., j].reshape(-1), reduction="none") * weight).sum() / weight.sum()
            for j, lg in enumerate(logits)
        ) / len(logits)
        patch = patch + F.mse_loss(column.squeeze(-1), column_target(labels[..., 3].float()))
        present, count, background = scene_labels(samples)
        pairs, counts, backgrounds = self.scene(cls).split([len(SCENE_PAIRS), len(NUMBERS), len(BACKGROUNDS)], dim=-1)
        scene = F.binary_cross_entropy_with_logits(pairs, present) + F.cross_entropy(counts, count) + F.cross_entropy(backgrounds, background)
        return patch, scene

    def accuracy(self, tokens, samples) -> dict:
        """Per-kind accuracy of the patch probes on object patches (what stage 1 must get right)."""
        labels = patch_labels(samples)
        *logits, column = self.patch(tokens).split([*self.sizes, 1], dim=-1)
        obj = labels[..., 2] > 0
        small = labels[..., 2] == 2
        out = {
            name: round(float((lg.argmax(-1)[obj] == labels[..., j][obj]).float().mean()), 3)
            for j, (name, lg) in enumerate(zip(("colour", "shape", "kind"), logits))
        }
        out["small_kind"] = round(float((logits[2].argmax(-1)[small] == 2).float().mean()), 3) if small.any() else None
        x = (column.squeeze(-1) + 2) / 4 * (GRID - 1)
        out["column_error"] = round(float((x - labels[..., 3].float())[obj].abs().mean()), 2)
        return out


def language_forward(model, features, conversations, keeps, compact: bool):
    """Decoder pass over conversations whose image shows only the ``keeps`` visual tokens.

    ``compact``: positions 0..L'-1 over the shortened sequence (what pre-LLM pruning gives); otherwise every
    token keeps its position in the full 576-token prompt. Returns (hidden states per layer, targets as
    (row, position, label, question labels, relation columns)).
    """
    import torch

    embed = model.get_input_embeddings()
    rows, positions, targets = [], [], []
    for i, (conv, keep) in enumerate(zip(conversations, keeps)):
        before, after = torch.tensor(conv.before), torch.tensor(conv.after)
        rows.append(torch.cat([embed(before), features[i, keep], embed(after)]))
        if compact:
            positions.append(torch.arange(len(rows[-1])))
        else:
            positions.append(torch.cat([torch.arange(len(before)), len(before) + keep, len(before) + features.shape[1] + torch.arange(len(after))]))
        offset = len(before) + len(keep)
        targets += [(i, offset + p, y, q, x) for p, y, q, x in conv.targets]
    length = max(len(r) for r in rows)
    hidden = rows[0].new_zeros(len(rows), length, rows[0].shape[-1])
    mask = torch.zeros(len(rows), length, dtype=torch.long)
    pos = torch.zeros(len(rows), length, dtype=torch.long)
    for i, (r, p) in enumerate(zip(rows, positions)):
        hidden[i, : len(r)], mask[i, : len(r)], pos[i, : len(r)] = r, 1, p
        pos[i, len(r) :] = p[-1] + 1 + torch.arange(length - len(r))  # right padding, masked
    out = model.model.language_model(inputs_embeds=hidden, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    return out.hidden_states, targets


def quick_accuracy(model, tokenizer, image_processor, samples, batch_size: int = 16) -> dict:
    """First-token greedy accuracy per family on full 576-token prompts (the same as generate's first step)."""
    import torch

    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    model.eval()
    hits: dict[str, list[int]] = {}
    with torch.no_grad():
        for i in range(0, len(samples), batch_size):
            chunk = samples[i : i + batch_size]
            input_ids, attn, pv, first = encode_batch(chunk, tokenizer, image_processor, image_token_id)
            hidden = model.model(input_ids=input_ids, attention_mask=attn, pixel_values=pv).last_hidden_state
            pos = torch.tensor([p for p, _ in first])
            pred = model.lm_head(hidden[torch.arange(len(chunk)), pos]).argmax(-1)
            for s, (_, a), p in zip(chunk, first, pred.tolist()):
                hits.setdefault(s["family"], []).append(int(p == a))
    model.train()
    acc = {f: sum(h) / len(h) for f, h in hits.items()}
    acc["overall"] = sum(sum(h) for h in hits.values()) / sum(len(h) for h in hits.values())
    return acc


def _cosine(lr: float, warmup: int, progress: float, step: int) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def _vision_features(model, pv):
    """Projected patch tokens and the [CLS] state at the feature layer (LLaVA's ``hidden_states[-2]``)."""
    states = model.model.vision_tower(pv, output_hidden_states=True).hidden_states[model.config.vision_feature_layer]
    return model.model.multi_modal_projector(states[:, 1:]), states[:, 0]


def train_vision(model, image_processor, steps: int, batch_size: int, lr: float, seed: int, progress: bool, eval_every: int) -> list[dict]:
    import torch
    from tqdm import tqdm

    tower, projector = model.model.vision_tower, model.model.multi_modal_projector
    probes = VisionProbes(model.config.text_config.hidden_size, model.config.vision_config.hidden_size)
    params = [*tower.parameters(), *projector.parameters(), *probes.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    stream = training_stream(seed + 500)  # its own scenes; stage 2 draws from training_stream(seed)
    held = [s for s in test_split("val") if int(s["id"].rsplit("-", 1)[1]) % 50 < 8]
    history = []
    t0 = time.time()
    for step in tqdm(range(steps), disable=not progress, desc="toy train: vision", mininterval=10):
        for g in opt.param_groups:
            g["lr"] = _cosine(lr, 50, step / steps, step)
        scenes = [next(stream) for _ in range(batch_size)]
        tokens, cls = _vision_features(model, pixel_values(scenes, image_processor))
        patch, scene = probes.loss(tokens, cls, scenes)
        loss = patch + 0.5 * scene
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            with torch.no_grad():
                acc = probes.accuracy(_vision_features(model, pixel_values(held, image_processor))[0], held)
            history.append(
                {
                    "stage": "vision",
                    "step": step + 1,
                    "patch_loss": round(patch.item(), 4),
                    "scene_loss": round(scene.item(), 4),
                    "elapsed_s": round(time.time() - t0, 1),
                    **acc,
                }
            )
            log.info("vision step %d patch %.3f scene %.3f val object patches %s", step + 1, patch.item(), scene.item(), acc)
    return history


def train_language(
    model,
    tokenizer,
    image_processor,
    steps: int,
    minutes: float | None,
    batch_size: int,
    lr: float,
    warmup: int,
    seed: int,
    extra_questions: int,
    background_keep: tuple[int, int],
    full_fraction: float,
    question_weight: float,
    eval_every: int,
    progress: bool,
    stop_after: int | None,
    checkpoint,
    families: tuple[str, ...] = FAMILIES,
    lookup_weight: float = 1.0,
) -> tuple[list[dict], int]:
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    for p in [*model.model.vision_tower.parameters(), *model.model.multi_modal_projector.parameters()]:
        p.requires_grad_(False)
    probe = torch.nn.Linear(model.config.text_config.hidden_size, sum(QUESTION_SIZES))
    lookup = torch.nn.Linear(model.config.text_config.hidden_size, 2)
    lookup_layer = model.config.text_config.num_hidden_layers // 2  # hidden_states index: output of the middle layer
    params = [p for p in model.parameters() if p.requires_grad] + list(probe.parameters()) + list(lookup.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98))
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    stream = training_stream(seed, families)
    qrng, krng = random.Random(seed + 12345), random.Random(seed + 54321)
    val = [s for s in test_split("val") if int(s["id"].rsplit("-", 1)[1]) % 50 < 12]  # 12 per family
    history, ema, done = [], None, 0
    t0 = time.time()

    def progress_at(step):
        p = step / steps
        return max(p, (time.time() - t0) / (minutes * 60)) if minutes else p

    for step in tqdm(range(steps), disable=not progress, desc="toy train: language", mininterval=10):
        for g in opt.param_groups:
            g["lr"] = _cosine(lr, warmup, progress_at(step), step)
        scenes = [next(stream) for _ in range(batch_size)]
        conversations = []
        for sc in scenes:  # up to `extra_questions` more questions about the same image (other families)
            more = list(dict.fromkeys((q, a) for _, q, a in scene_questions(sc, qrng) if q != sc["question"]))
            qrng.shuffle(more)
            conversations.append(Conversation(sc, more[:extra_questions], tokenizer, image_token_id))
        with torch.no_grad():
            features = _vision_features(model, pixel_values(scenes, image_processor))[0]
        full = krng.random() < full_fraction
        keeps = []
        for sc in scenes:
            if full:
                keeps.append(torch.arange(GRID * GRID))
                continue
            objects = object_patches(sc)
            background = sorted(set(range(GRID * GRID)) - set(objects))
            keeps.append(torch.tensor(sorted(objects + krng.sample(background, krng.randint(*background_keep)))))
        hidden, targets = language_forward(model, features, conversations, keeps, compact=not full and krng.random() < 0.5)
        rows = torch.tensor([r for r, *_ in targets])
        cols = torch.tensor([c for _, c, *_ in targets])
        answer_loss = F.cross_entropy(model.lm_head(hidden[-1][rows, cols]), torch.tensor([t[2] for t in targets]))
        asked = [(r, c, q) for r, c, _, q, _ in targets if q is not None]
        logits = probe(hidden[2][torch.tensor([r for r, _, _ in asked]), torch.tensor([c for _, c, _ in asked])])
        labels = torch.tensor([q for _, _, q in asked])
        question_loss = sum(F.cross_entropy(lg, labels[:, j]) for j, lg in enumerate(logits.split(QUESTION_SIZES, -1))) / len(QUESTION_SIZES)
        related = [(r, c, x) for r, c, _, _, x in targets if x is not None]
        lookup_loss = hidden[-1].new_zeros(())
        if related:
            found = lookup(hidden[lookup_layer][torch.tensor([r for r, _, _ in related]), torch.tensor([c for _, c, _ in related])])
            lookup_loss = F.mse_loss(found, torch.tensor([x for _, _, x in related]))
        loss = answer_loss + question_weight * question_loss + lookup_weight * lookup_loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        done = step + 1
        ema = answer_loss.item() if ema is None else 0.98 * ema + 0.02 * answer_loss.item()
        if done % eval_every == 0 or done == steps:
            acc = quick_accuracy(model, tokenizer, image_processor, val)
            history.append(
                {
                    "stage": "language",
                    "step": done,
                    "loss_ema": round(ema, 4),
                    "question_loss": round(question_loss.item(), 4),
                    "lookup_loss": round(lookup_loss.item(), 4),
                    "elapsed_s": round(time.time() - t0, 1),
                    "lr": round(opt.param_groups[0]["lr"], 7),
                    **{k: round(v, 3) for k, v in acc.items()},
                }
            )
            log.info("language step %d loss %.3f elapsed %.0fs val %s", done, ema, time.time() - t0, " ".join(f"{k}={v:.2f}" for k, v in acc.items()))
            checkpoint()
        if stop_after is not None and done >= stop_after:
            log.info("stopping after step %d (--stop-after)", done)
            break
        if minutes is not None and done < steps and progress_at(done) >= 1.0:
            log.warning("time budget of %.1f min reached at step %d of %d", minutes, done, steps)
            break
    return history, done


def train(
    output: Path,
    seed: int = 0,
    vision_steps: int = 2000,
    vision_lr: float = 3e-3,
    steps: int = 4000,
    batch_size: int = 16,
    lr: float = 2e-3,
    warmup: int = 100,
    minutes: float | None = 40.0,
    eval_every: int = 200,
    threads: int = 2,
    arch=None,
    progress: bool = True,
    stop_after: int | None = None,
    init_from: Path | None = None,
    extra_questions: int = 8,
    background_keep: tuple[int, int] = (16, 128),
    full_fraction: float = 0.2,
    question_weight: float = 1.0,
    families: tuple[str, ...] = FAMILIES,
    lookup_weight: float = 1.0,
) -> dict:
    """Train and save to ``output`` (model, processor, ``training.json``); see the module docstring.

    ``steps`` fixes stage 2's LR schedule; with ``minutes`` its cosine follows whichever of steps and wall time
    runs out first (for a shared, slow CPU); ``stop_after`` ends stage 2 at that step (reproduces a run that was
    stopped by ``minutes``). ``init_from``: start from that checkpoint's weights (with ``vision_steps=0`` this
    continues stage 2 on a trained vision side). ``families``: the question families stage 2's scenes are drawn
    from, uniformly over the entries (a family named twice is drawn twice as often).
    """
    import torch

    from prunebench.environment import versions  # lazy like torch above: `prunebench toy --help` stays quick

    from .model import ToyArch, arch_dict, build_model, build_processor, build_tokenizer

    torch.set_num_threads(threads)
    random.seed(seed)
    torch.manual_seed(seed)
    arch = arch or ToyArch()
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer)
    model = build_model(tokenizer, arch, seed=seed)
    if init_from is not None:
        from .model import load_checkpoint

        model.load_state_dict(load_checkpoint(init_from).state_dict())  # safetensors only
        log.info("initialised from %s", init_from)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    log.info("toy-llava: %.2f M parameters, arch %s", n_params / 1e6, arch_dict(arch))
    output = Path(output)
    tmp = output.with_name(output.name + ".partial")

    def checkpoint():
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)

    t0 = time.time()
    history = train_vision(model, processor.image_processor, vision_steps, batch_size, vision_lr, seed, progress, eval_every) if vision_steps > 0 else []
    vision_s = time.time() - t0
    language, done = train_language(
        model,
        tokenizer,
        processor.image_processor,
        steps,
        minutes,
        batch_size,
        lr,
        warmup,
        seed,
        extra_questions,
        tuple(background_keep),
        full_fraction,
        question_weight,
        eval_every,
        progress,
        stop_after,
        checkpoint,
        tuple(families),
        lookup_weight,
    )
    history += language
    wall = time.time() - t0
    for p in model.parameters():
        p.requires_grad_(True)
    model.save_pretrained(output)
    processor.save_pretrained(output)
    shutil.rmtree(tmp, ignore_errors=True)
    keep = f"{background_keep[0]},{background_keep[1]}"
    recipe = {
        "model": "toy-llava",
        "command": (
            f"prunebench toy train --seed {seed} --vision-steps {vision_steps} --vision-lr {vision_lr}"
            f" --steps {steps} --batch-size {batch_size} --lr {lr} --warmup {warmup}"
            f" --extra-questions {extra_questions} --background-keep {keep} --full-fraction {full_fraction}"
            f" --question-weight {question_weight} --lookup-weight {lookup_weight}"
            + (f" --minutes {minutes}" if minutes else "")
            + (f" --families {','.join(families)}" if tuple(families) != FAMILIES else "")
            + (f" --stop-after {done}" if done < steps else "")
            + (f" --init-from {init_from}" if init_from else "")
        ),
        "init_from": str(init_from) if init_from else None,
        "seed": seed,
        "vision_steps": vision_steps,
        "vision_lr": vision_lr,
        "steps": done,
        "steps_planned": steps,
        "batch_size": batch_size,
        "samples": (vision_steps + done) * batch_size,
        "lr": lr,
        "warmup": warmup,
        "schedule": (
            "linear warm-up, cosine to 5% (stage 1 over its steps; stage 2 over its steps"
            + (f" or {minutes} min of wall time, whichever runs out first)" if minutes else ")")
        ),
        "minutes": minutes,
        "weight_decay": 0.01,
        "optimizer": "AdamW(betas=(0.9, 0.98)), grad clip 1.0",
        "stage_1": (
            "vision tower + projector; training-only probes: per-patch colour/shape/kind cross-entropy weighted "
            f"by kind {KIND_WEIGHTS} + column regression on the projected tokens; [CLS] at the feature layer "
            "predicts present shape-colour pairs, object count and background (weight 0.5)"
        ),
        "stage_2": (
            "vision frozen; cross-entropy on answer words + EOS of every turn, plus a question probe at the "
            f"output of decoder layer 1 (weight {question_weight}) and, for relation turns, a lookup probe "
            "regressing both named objects' columns from the output of the middle decoder layer "
            f"(weight {lookup_weight}); visual tokens shown: objects + "
            f"{keep} random background tokens (original or renumbered positions), all 576 in "
            f"{full_fraction:.0%} of the batches"
        ),
        "lookup_weight": lookup_weight,
        "extra_questions": extra_questions,
        "families": list(families),
        "arch": arch_dict(arch),
        "parameters": n_params,
        "threads": threads,
        "wall_time_s": round(wall, 1),
        "vision_wall_time_s": round(vision_s, 1),
        "machine": f"{platform.machine()}, {threads} CPU threads",
        "versions": versions(),
        "history": history,
    }
    if init_from is not None and (Path(init_from) / "training.json").exists():  # the run this one continues
        recipe["previous"] = json.loads((Path(init_from) / "training.json").read_text())
    (output / "training.json").write_text(json.dumps(recipe, indent=2) + "\n")
    log.info("done: stage 2 %d steps, %.1f min in all, saved to %s", done, wall / 60, output)
    return recipe
