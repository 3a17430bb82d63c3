"""Trainable pruners: the training loop of LearnPruner's learned pruning module (LPM) and ``prunebench train``.

The LPM itself, its checkpoints and their loading live in :mod:`prunebench.lpm` (re-exported here).

``prunebench train learnpruner --model M`` trains an LPM on model M's training data with the base model frozen
and writes ``prunebench/assets/learnpruner/<M>.safetensors`` plus ``<M>.json`` (the recipe: seed, steps, data,
loss weights, target ratio, versions). Weights are stored as safetensors only; nothing is ever unpickled.

Training forward (the paper's recipe, following Dynamic-LLaVA, ``Osilly/dynamic_llava`` @e1469bc): p = softmax(LPM(x))
per visual token, a hard keep mask m_h, and the
straight-through m = m_h + p_keep − stopgrad(p_keep). Tokens are dropped by **key-masking** in every LLM
layer, never by physical removal: the 4-D additive attention mask carries log(m + eps) on every visual key
column (DynamicViT: attention to key j multiplied by m_j and renormalised), so the loss is differentiable with
respect to m. Only the LPM receives gradients. Two hard masks (``--selection``):

* ``topk`` (default): m_h keeps exactly the top round(ρ·N) tokens by p_keep, ties to the lower index, with ρ
  drawn per step from [``keep_min``, ``keep_max``]; loss = next-token cross-entropy on the answer tokens and
  EOS. This is stage 1's inference rule (a top-k on M_soft[keep]) at the keep ratios the budgets use, so no
  ratio term is needed;
* ``argmax``: the paper's m_h = [argmax p = keep] (Dynamic-LLaVA's recipe) with the ratio loss
  w·(ρ_target − mean m)² pulling the kept share to ``target_ratio``.

``--objective``: ``ce`` (default, the paper's task loss) = cross-entropy of the ground-truth answer; ``kl`` =
KL(unpruned ‖ pruned) of the answer distributions (one extra forward without gradients), which asks the LPM
to keep what the frozen model itself uses, also on samples it gets wrong.

Why ``topk`` is the default (measured on toy-llava, frozen, 12 held-out samples): with ``argmax`` the shipped
toy LPM's cross-entropy did not move in 400 steps (0.271 first, 0.279 last) and it ranked no better than its own
random initialisation. The ratio term's gradient (2w·Δ/(B·N) per token, 1.4e-3 at a 5 % miss, and the hard
ratio jitters around the target, so the miss never settles) is ten times the cross-entropy's on kept tokens
(1e-4 to 1e-3), so Adam's steps follow "shift every score" noise; and the share the argmax keeps is decided by
the ratio term rather than by the budget the LPM will be ranked at. ``topk`` removes the term and trains the
ranking exactly where inference uses it. (The straight-through gradient of a dropped token, the first-order
effect of adding it at full weight, is 1e3 to 1e5 times a kept token's, so a handful of dropped tokens the
model would attend to most steer each step; that is what makes the signal informative from a poor start.)

``--eval-samples N`` (default 60 on toy-llava) ends a run by measuring what the LPM is for: answer accuracy of
the frozen model, teacher-forced, with only the LPM's top-k visual tokens (exact removal), on N held-out
samples (the toy world's val split), next to seeded random LPMs and uniformly random tokens at the same keep
counts; the recipe records the numbers, so a checkpoint that does not beat random modules is visible as such.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from prunebench.core import PruneBenchError, ranked
from prunebench.environment import versions  # the one version dict (also in cell keys and records)
from prunebench.lpm import (  # noqa: F401  (re-exported: the names prunebench.training has always offered)
    ASSETS,
    FULL_DIGEST_KEY,
    INPUT_SPACES,
    KEEP,
    VISION_DIGEST_KEY,
    LearnedPruningModule,
    _digest,
    check_base,
    default_checkpoint,
    load_lpm,
    load_recipe,
    random_lpm,
    save_lpm,
    vision_digest,
    weights_digest,
)

log = logging.getLogger("prunebench.training")

# The LPM, its checkpoints and its base-model check live in prunebench.lpm (the method loads them without the
# training loop); re-exported here for the names this module has always offered.
# -- training ------------------------------------------------------------------------------------------------
SELECTIONS = ("topk", "argmax")
OBJECTIVES = ("ce", "kl")


@dataclass
class TrainConfig:
    """The recipe (see the module docstring). Optimiser settings follow Dynamic-LLaVA's predictor
    (``Osilly/dynamic_llava`` @e1469bc, the closest published analogue of the LPM) except where a few-minute CPU
    toy run needs otherwise (``lr``: the reference 2e-4 is for 1 epoch of 66 K samples)."""

    steps: int = 300
    batch_size: int = 4
    lr: float = 3e-3
    weight_decay: float = 0.0
    warmup: float = 0.03
    selection: str = "topk"  # "topk" (stage 1's inference rule) or "argmax" (the paper's, with the ratio loss)
    objective: str = "ce"  # "ce": answer cross-entropy (the paper's task loss); "kl": KL(unpruned || pruned) answers
    # topk: per-step keep ratio drawn from [keep_min, keep_max], the R1/N of budgets 32..128 (55..219 of 576 on
    # LLaVA-1.5-7B, 57..231 on the toy); budget 192's R1 = 329 of 576 (0.57) lies above it: train with --keep-max 0.6
    keep_min: float = 0.05
    keep_max: float = 0.4
    target_ratio: float = 0.2  # argmax: kept share the ratio loss aims at (R1/N ≈ 110/576 at B = 64)
    mask_weight: float = 100.0  # argmax: w of the ratio loss (Dynamic-LLaVA mask_loss_weight)
    eps: float = 1e-6  # log(m + eps) on masked keys: finite gradients at m = 0 (DynamicViT uses an eps too)
    hidden: int = 0  # LPM hidden width (0 = width / 2: 1024 -> 512 -> 2 = 0.53 M for CLIP-L)
    input: str = "vision"  # features the LPM reads: "vision" (before the projector) or "projected" (after)
    seed: int = 0
    log_every: int = 10
    max_minutes: float = 0.0  # stop early after this wall time (0 = run all steps); the recipe records steps done
    eval_samples: int = 60  # held-out samples of the final comparison with random LPMs (0 = skip; toy-llava only)

    def __post_init__(self) -> None:
        if self.selection not in SELECTIONS:
            raise PruneBenchError(f"--selection must be one of {SELECTIONS}, got {self.selection!r}")
        if self.objective not in OBJECTIVES:
            raise PruneBenchError(f"--objective must be one of {OBJECTIVES}, got {self.objective!r}")
        if self.input not in INPUT_SPACES:
            raise PruneBenchError(f"--input must be one of {INPUT_SPACES}, got {self.input!r}")
        if not 0 < self.keep_min <= self.keep_max <= 1:
            raise PruneBenchError(f"keep ratios need 0 < --keep-min <= --keep-max <= 1, got {self.keep_min}, {self.keep_max}")
        if self.steps < 1 or self.batch_size < 1:
            raise PruneBenchError(f"--steps and --batch-size must be at least 1, got {self.steps} and {self.batch_size}")


@dataclass
class TrainSample:
    image: Any
    question: str
    answer: str
    id: str = ""


def _answer_batch(adapter, samples: Sequence[TrainSample]):
    """Left-padded prompt + answer + EOS and the answer positions (the adapter's own prompt format)."""
    from prunebench.adapters.base import Batch, Sample

    tokenizer = adapter.processor.tokenizer
    texts = [f"{adapter.prompt(s.question)} {s.answer}" for s in samples]
    inputs = adapter.processor(images=[s.image.convert("RGB") for s in samples], text=texts, padding=True, return_tensors="pt")
    inputs = {k: v.to(adapter.device) for k, v in inputs.items() if isinstance(v, torch.Tensor)}
    bsz = inputs["input_ids"].shape[0]
    eos = torch.full((bsz, 1), tokenizer.eos_token_id, dtype=torch.long, device=adapter.device)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], eos], 1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(eos)], 1)
    inputs["pixel_values"] = inputs["pixel_values"].to(adapter.dtype)
    answer_len = [len(tokenizer(s.answer, add_special_tokens=False)["input_ids"]) + 1 for s in samples]  # + EOS
    batch = Batch([Sample(id=s.id or str(i), question=s.question, image=s.image) for i, s in enumerate(samples)], inputs)
    return batch, answer_len


def masked_visual_mask(attention_mask: torch.Tensor, visual_index: torch.Tensor, keep: torch.Tensor, eps: float, dtype: torch.dtype) -> torch.Tensor:
    """4-D additive mask (B, 1, L, L): causal + padding, plus log(keep + eps) on the visual key columns."""
    bsz, length = attention_mask.shape
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal[None] & attention_mask.bool()[:, None, :]
    column = torch.zeros(bsz, length, dtype=keep.dtype, device=keep.device)
    column = column.scatter(1, visual_index, torch.log(keep + eps))
    neg = torch.finfo(dtype).min
    return torch.where(allowed, column[:, None, :].to(dtype), torch.tensor(neg, dtype=dtype, device=keep.device))[:, None]


def _lpm_inputs(adapter, batch, space: str):
    """(LPM features, LLM inputs with every visual token) of a training / evaluation batch, no gradients."""
    with torch.no_grad():
        view = adapter.encode(batch)
        projected = adapter.project(view.features)
        bsz, n = view.features.shape[:2]
        llm = adapter.assemble(batch, projected, torch.arange(n, device=adapter.device).expand(bsz, -1), "compact")
    return (projected if space == "projected" else view.features).float(), llm


def top_mask(scores: torch.Tensor, keep: int) -> torch.Tensor:
    """(B, N) float mask of the ``keep`` highest scores per row, ties to the lower index (stage 1's rule)."""
    return torch.zeros_like(scores).scatter(1, ranked(scores)[:, :keep], 1.0)


def _answer_loss(adapter, llm, batch, answer_len: list[int], keep: torch.Tensor, eps: float, reduction: str = "mean"):
    """Cross-entropy (and logits) of the answer tokens + EOS with the visual keys masked by ``keep`` (B, N)."""
    import torch.nn.functional as F

    mask = masked_visual_mask(llm.attention_mask, llm.visual_index, keep, eps, llm.inputs_embeds.dtype)
    language_model = adapter.model.model.language_model
    hidden = language_model(inputs_embeds=llm.inputs_embeds, attention_mask=mask, position_ids=llm.position_ids).last_hidden_state
    length = hidden.shape[1]
    rows = torch.tensor([b for b, a in enumerate(answer_len) for _ in range(a)], device=hidden.device)
    cols = torch.tensor([length - 1 - a + j for a in answer_len for j in range(a)], device=hidden.device)  # predicts cols + 1
    targets = batch.input_ids[rows, cols + 1]  # every visual token is present: same layout as input_ids
    logits = adapter.model.lm_head(hidden[rows, cols]).float()
    return F.cross_entropy(logits, targets, reduction=reduction), logits, targets, rows


def lpm_loss(
    adapter, lpm: LearnedPruningModule, batch, answer_len: list[int], cfg: TrainConfig, keep_ratio: float | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """One differentiable forward: STE mask → key-masked LLM → CE on answers (+ the ratio loss for argmax).

    ``keep_ratio``: the share the ``topk`` selection keeps this step (default: the middle of the range).
    """
    features, llm = _lpm_inputs(adapter, batch, cfg.input)
    logits = lpm(features).float()
    p_keep = torch.softmax(logits, dim=-1)[..., KEEP]
    if cfg.selection == "topk":
        ratio = (cfg.keep_min + cfg.keep_max) / 2 if keep_ratio is None else keep_ratio
        hard = top_mask(p_keep.detach(), max(1, round(ratio * p_keep.shape[1])))
    else:
        hard = (logits.argmax(dim=-1) == KEEP).to(p_keep.dtype)
    m = hard + p_keep - p_keep.detach()  # straight-through: forward = hard mask, backward = soft
    ce, answer_logits, _, _ = _answer_loss(adapter, llm, batch, answer_len, m, cfg.eps)
    task = ce
    if cfg.objective == "kl":  # match the unpruned model's answer distribution (every visual key present)
        import torch.nn.functional as F

        with torch.no_grad():
            full = _answer_loss(adapter, llm, batch, answer_len, torch.ones_like(m), 0.0)[1]
        task = F.kl_div(answer_logits.log_softmax(-1), full.log_softmax(-1), log_target=True, reduction="batchmean")
    kept = m.mean()
    loss = task if cfg.selection == "topk" else task + cfg.mask_weight * (cfg.target_ratio - kept) ** 2
    return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), "keep_ratio": float(p_keep.detach().mean()), "hard_ratio": float(hard.mean())}


def train_lpm(adapter, data: Iterator[TrainSample], cfg: TrainConfig, on_log=None) -> tuple[LearnedPruningModule, list[dict[str, float]]]:
    """Train an LPM for ``adapter``'s vision features with the base model frozen; returns (lpm, log)."""
    torch.manual_seed(cfg.seed)
    draws = random.Random(cfg.seed)  # the per-step keep ratios, independent of the data stream
    model = adapter.model
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    was_training = model.training
    model.eval()
    first = next(data)
    data = itertools.chain([first], data)
    width = _input_width(adapter, cfg.input, first)
    lpm = LearnedPruningModule(width, cfg.hidden or None, cfg.input).to(adapter.device)
    lpm.train()
    opt = torch.optim.AdamW(lpm.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    warm = max(1, int(cfg.warmup * cfg.steps))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, cfg.steps - warm)))
    )
    history: list[dict[str, float]] = []
    start = time.time()
    try:
        for step in range(cfg.steps):
            if cfg.max_minutes and time.time() - start > 60 * cfg.max_minutes:
                log.warning("stopping after %d of %d steps: --max-minutes %s reached", step, cfg.steps, cfg.max_minutes)
                break
            samples = [next(data) for _ in range(cfg.batch_size)]
            batch, answer_len = _answer_batch(adapter, samples)
            loss, stats = lpm_loss(adapter, lpm, batch, answer_len, cfg, draws.uniform(cfg.keep_min, cfg.keep_max))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            stats["step"] = step + 1
            history.append(stats)
            if on_log and ((step + 1) % cfg.log_every == 0 or step == 0):
                on_log(stats)
    finally:
        for p, flag in frozen:
            p.requires_grad_(flag)
        model.train(was_training)
    return lpm.eval(), history


def _input_width(adapter, space: str, sample: TrainSample) -> int:
    """Width of the features the LPM reads, from the view the adapter builds for one sample (every family's
    own: LLaVA's feature layer(s), Qwen2.5-VL's merger input, the projector's output)."""
    batch, _ = _answer_batch(adapter, [sample])
    return int(_lpm_inputs(adapter, batch, space)[0].shape[-1])


# -- does the LPM beat random modules? -----------------------------------------------------------------------------
EVAL_KEEP = (0.1, 0.2)  # R1/N of the toy model at budgets 32 and 64
RANDOM_SEEDS = (1, 2)  # random LPMs compared with, besides the trained LPM's own init (seed ``cfg.seed``)


@torch.no_grad()
def evaluate_lpms(
    adapter, scorers: dict[str, Any], samples: Sequence[TrainSample], keep_ratios: Sequence[float] = EVAL_KEEP, space: str = "vision", batch_size: int = 20
) -> dict[str, dict[str, float]]:
    """{scorer: {keep ratio: answer accuracy}} of the frozen model, teacher-forced, keeping only each scorer's
    top-k visual tokens (exact removal: hard key-masking with eps 0). A scorer maps (B, N, D) features to (B, N)
    scores; every scorer sees the same batches."""
    correct = {name: {r: 0 for r in keep_ratios} for name in scorers}
    for i in range(0, len(samples), batch_size):
        chunk = list(samples[i : i + batch_size])
        batch, answer_len = _answer_batch(adapter, chunk)
        features, llm = _lpm_inputs(adapter, batch, space)
        first = torch.tensor([sum(answer_len[:b]) for b in range(len(chunk))], device=features.device)  # the answer word
        for name, scorer in scorers.items():
            scores = scorer(features)
            for ratio in keep_ratios:
                keep = top_mask(scores, max(1, round(ratio * scores.shape[1])))
                _, logits, targets, _ = _answer_loss(adapter, llm, batch, answer_len, keep, 0.0)
                correct[name][ratio] += int((logits[first].argmax(-1) == targets[first]).sum())
    return {name: {str(r): c / len(samples) for r, c in by_ratio.items()} for name, by_ratio in correct.items()}


def compare_with_random(adapter, lpm: LearnedPruningModule, samples: Sequence[TrainSample], seed: int = 0) -> dict[str, Any]:
    """The trained LPM against seeded random LPMs (mean and best) and uniformly random tokens."""
    generator = torch.Generator().manual_seed(seed)
    scorers: dict[str, Any] = {
        "trained": lpm.keep_probability,
        "untrained_init": random_lpm(lpm.width, seed, lpm.hidden, lpm.input).to(adapter.device).keep_probability,
    }
    for s in RANDOM_SEEDS:
        scorers[f"random_lpm_{s}"] = random_lpm(lpm.width, s, lpm.hidden, lpm.input).to(adapter.device).keep_probability
    scorers["random_tokens"] = lambda f: torch.rand(f.shape[:2], generator=generator).to(f.device)
    acc = evaluate_lpms(adapter, scorers, samples, space=lpm.input)
    randoms = [acc[f"random_lpm_{s}"] for s in RANDOM_SEEDS]
    return {
        "metric": "teacher-forced answer-word accuracy keeping only the top round(keep * N) visual tokens",
        "trained": acc["trained"],
        "untrained_init": acc["untrained_init"],
        "random_lpm_mean": {r: sum(x[r] for x in randoms) / len(randoms) for r in acc["trained"]},
        "random_lpm_best": {r: max(x[r] for x in randoms) for r in acc["trained"]},
        "random_lpm_seeds": list(RANDOM_SEEDS),
        "random_tokens": acc["random_tokens"],
    }


# -- data ------------------------------------------------------------------------------------------------------
def toy_stream(seed: int) -> Iterator[TrainSample]:
    """The shapes world's training stream (never yields a test/val scene)."""
    from prunebench.toy.world import render, training_stream

    for s in training_stream(seed):
        yield TrainSample(render(s), s["question"], s["answer"], s["id"])


def synthetic_stream(seed: int, words: Sequence[str] = ("red", "green", "blue", "yes", "no", "one", "two")) -> Iterator[TrainSample]:
    """Random images with coloured shapes and word answers (tiny config-built models: no real data exists)."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    pyrng = random.Random(seed)
    i = 0
    while True:
        pixels = rng.integers(0, 255, (336, 336, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        draw = ImageDraw.Draw(image)
        x, y = (int(v) for v in rng.integers(0, 276, 2))
        draw.ellipse([x, y, x + 60, y + 60], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
        yield TrainSample(image, "what is the color of the circle ?", pyrng.choice(list(words)), f"synthetic-{seed}-{i}")
        i += 1


def data_for(model: str, seed: int) -> tuple[Iterator[TrainSample], str]:
    from prunebench.models import TINY_MODELS
    from prunebench.toy import TOY_MODEL_NAME

    if model == TOY_MODEL_NAME:
        return toy_stream(seed), f"prunebench.toy.world.training_stream(seed={seed}) (shapes world, held-out scenes excluded)"
    if model in TINY_MODELS:
        return synthetic_stream(seed), f"prunebench.training.synthetic_stream(seed={seed}) (random images, word answers)"
    raise PruneBenchError(
        f"no training data is wired for {model!r}; LearnPruner's LPM for LLaVA-1.5 is trained on 10 % of LLaVA-665K "
        "(Takezoe et al., ICLR 2026, arXiv 2604.23950), which prunebench does not download. Supported here: toy-llava, tiny-llava"
    )


def eval_data_for(model: str, count: int) -> tuple[list[TrainSample], str] | None:
    """Held-out samples for :func:`compare_with_random`, or None where none mean anything (tiny random models)."""
    from prunebench.toy import TOY_MODEL_NAME

    if model != TOY_MODEL_NAME or count <= 0:
        return None
    from prunebench.toy.world import FAMILIES, render, test_split

    per_family = max(1, count // len(FAMILIES))
    samples = [TrainSample(render(s), s["question"], s["answer"], s["id"]) for s in test_split("val", per_family)]
    return samples, f"prunebench.toy.world.test_split('val', {per_family}) ({len(samples)} samples, never trained on)"


TRAINABLE_FAMILIES = ("llava", "llava_next")  # the families _answer_batch can build answer batches for


def train_learnpruner(model: str, cfg: TrainConfig, output: Path | None = None, on_log=None) -> Path:
    from prunebench.models import load_model

    adapter = load_model(model)
    if adapter.family not in TRAINABLE_FAMILIES:
        raise PruneBenchError(
            f"LPM training builds prompt + answer batches for LLaVA-1.5 and LLaVA-NeXT only "
            f"({', '.join(TRAINABLE_FAMILIES)}); {model} is {adapter.family}. Train on a LLaVA model, or load an LPM trained elsewhere with "
            "--method-args learnpruner.checkpoint=PATH"
        )
    data, description = data_for(model, cfg.seed)
    start = time.time()
    lpm, history = train_lpm(adapter, data, cfg, on_log=on_log)
    seconds = round(time.time() - start, 1)
    path = Path(output) if output else default_checkpoint(model)
    tail = history[-min(10, len(history)) :]
    held_out = eval_data_for(model, cfg.eval_samples)
    evaluation: dict[str, Any] = {"skipped": "no held-out data that means anything for this model (or --eval-samples 0)"}
    if held_out is not None:
        evaluation = {"data": held_out[1], **compare_with_random(adapter, lpm, held_out[0], cfg.seed)}
        if on_log:
            on_log({"eval": evaluation})
    inputs = {"vision": "ViT feature layer, [CLS] dropped, before the projector", "projected": "after the projector (LLM layer-0 input)"}
    loss = (
        "CE(answer + EOS); m = STE(top round(rho N) of softmax keep, softmax), rho ~ U[keep_min, keep_max] per step"
        if cfg.selection == "topk"
        else "CE(answer + EOS) + mask_weight * (target_ratio - mean m)^2; m = STE(argmax, softmax)"
    )
    recipe = {
        "method": "learnpruner",
        "module": {
            "class": "LearnedPruningModule",
            "width": lpm.width,
            "hidden": lpm.hidden,
            "keep_class": KEEP,
            "parameters": sum(p.numel() for p in lpm.parameters()),
            "input": inputs[lpm.input],
            "input_space": lpm.input,
        },
        "model": model,
        VISION_DIGEST_KEY: vision_digest(adapter.model),
        "vision_weights_scope": "every weight outside the language model and LM head (vision tower, projector)",
        FULL_DIGEST_KEY: weights_digest(adapter),
        "data": description,
        "config": asdict(cfg),
        "loss": loss + "; key-masking log(m + eps) in every LLM layer",
        "eval": evaluation,
        "steps_done": len(history),
        "final": {k: sum(h[k] for h in tail) / len(tail) for k in ("loss", "ce", "keep_ratio", "hard_ratio")},
        "first": {k: history[0][k] for k in ("loss", "ce", "keep_ratio", "hard_ratio")} if history else {},
        "seconds": seconds,
        "versions": versions(),
    }
    save_lpm(lpm, path, recipe)
    return path


# -- command line ----------------------------------------------------------------------------------------------
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a trainable pruner (learnpruner)",
        description="Train a trainable pruning method with the base model frozen and save its checkpoint + recipe.",
    )
    sub = p.add_subparsers(dest="trainee", metavar="METHOD")
    lp = sub.add_parser(
        "learnpruner", help="train LearnPruner's learned pruning module (LPM)", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    lp.add_argument("--model", required=True, help="model name (toy-llava, tiny-llava)")
    lp.add_argument("--output", type=Path, default=None, help="checkpoint path (default prunebench/assets/learnpruner/MODEL.safetensors)")
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        lp.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value, help=f"default {value}")
    lp.set_defaults(func=cmd_train_learnpruner)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_train_learnpruner(args: argparse.Namespace) -> int:
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig())})

    def show(stats: dict[str, Any]) -> None:
        if "eval" in stats:
            ev = stats["eval"]
            for ratio in ev["trained"]:
                print(
                    f"held-out accuracy at keep {ratio}: trained {ev['trained'][ratio]:.3f}, its init {ev['untrained_init'][ratio]:.3f}, random LPMs mean "
                    f"{ev['random_lpm_mean'][ratio]:.3f} (best {ev['random_lpm_best'][ratio]:.3f}), random tokens "
                    f"{ev['random_tokens'][ratio]:.3f}",
                    flush=True,
                )
            return
        print(
            f"step {int(stats['step']):5d}  loss {stats['loss']:.4f}  ce {stats['ce']:.4f}  keep {stats['keep_ratio']:.3f} (hard {stats['hard_ratio']:.3f})",
            flush=True,
        )

    path = train_learnpruner(args.model, cfg, args.output, on_log=show)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0
