"""Trainable pruners: LearnPruner's learned pruning module (LPM), its training loop and ``prunebench train``.

``prunebench train learnpruner --model M`` trains an LPM on model M's training data with the base model frozen
and writes ``prunebench/assets/learnpruner/<M>.safetensors`` plus ``<M>.json`` (the recipe: seed, steps, data,
loss weights, target ratio, versions). Weights are stored as safetensors only; nothing is ever unpickled.

Training forward (methods-2.md §3.3): p = softmax(LPM(x)) per visual token, hard keep mask
m_h = [argmax p = keep], straight-through m = m_h + p_keep − stopgrad(p_keep). Tokens are dropped by
**key-masking** in every LLM layer, never by physical removal: the 4-D additive attention mask carries
log(m + eps) on every visual key column (DynamicViT: attention to key j multiplied by m_j and renormalised),
so the loss is differentiable with respect to m. Loss = next-token cross-entropy on the answer tokens (and
EOS) + w·(r_target − mean m)². Only the LPM receives gradients.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import platform
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import torch
from torch import nn

from prunebench.core import PruneBenchError

log = logging.getLogger("prunebench.training")

ASSETS = Path(__file__).resolve().parent / "assets" / "learnpruner"
KEEP = 0  # class index of "keep" (Dynamic-LLaVA convention; methods-2.md §3.2)


class LearnedPruningModule(nn.Module):
    """LearnPruner's LPM: a two-layer MLP (width → width/2 → 2, GELU) classifying each visual token.

    For CLIP ViT-L (width 1024) this is 1024 → 512 → 2 = 525,826 parameters, the paper's "0.53 M"; other
    towers get the same shape from their own width. Channel ``KEEP`` (0) is the keep class.
    """

    def __init__(self, width: int, hidden: int | None = None):
        super().__init__()
        self.width, self.hidden = int(width), int(hidden or max(1, width // 2))
        self.fc1 = nn.Linear(self.width, self.hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(self.hidden, 2)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(..., width) → (..., 2) logits."""
        return self.fc2(self.act(self.fc1(features)))

    def keep_probability(self, features: torch.Tensor) -> torch.Tensor:
        """M_soft[..., keep], in fp32: the importance score used at inference."""
        return torch.softmax(self(features.float()).float(), dim=-1)[..., KEEP]


def random_lpm(width: int, seed: int = 0) -> LearnedPruningModule:
    """A seeded, untrained LPM (tiny config-built models, ablations)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return LearnedPruningModule(width).eval()
    finally:
        torch.random.set_rng_state(generator_state)


def default_checkpoint(model: str) -> Path:
    return ASSETS / f"{model}.safetensors"


def save_lpm(module: LearnedPruningModule, path: Path, recipe: dict[str, Any]) -> None:
    """Write ``path`` (safetensors, shapes in its metadata) and the recipe next to it (``.json``)."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": "prunebench-lpm", "width": str(module.width), "hidden": str(module.hidden)})
    path.with_suffix(".json").write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")


def load_lpm(path: Path | str) -> LearnedPruningModule:
    """Load an LPM from a safetensors file (never pickle)."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise PruneBenchError(f"LPM checkpoints are .safetensors files, got {path}")
    if not path.exists():
        raise PruneBenchError(f"no LPM checkpoint at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    state = load_file(str(path))
    width = int(meta.get("width", state["fc1.weight"].shape[1]))
    hidden = int(meta.get("hidden", state["fc1.weight"].shape[0]))
    module = LearnedPruningModule(width, hidden)
    module.load_state_dict(state)
    return module.eval()


# -- training ------------------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """The recipe. Defaults follow methods-2.md §3.3 (Dynamic-LLaVA's predictor settings) except where a CPU
    toy run needs otherwise (``lr``: the reference 2e-4 is for 1 epoch of 66 K samples)."""

    steps: int = 300
    batch_size: int = 4
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup: float = 0.03
    target_ratio: float = 0.2  # keep ratio of stage 1 at the training budget (R1/N ≈ 111/576 at B = 64)
    mask_weight: float = 100.0  # w of the ratio loss (Dynamic-LLaVA mask_loss_weight)
    eps: float = 1e-6  # log(m + eps) on masked keys: finite gradients at m = 0 (DynamicViT uses an eps too)
    seed: int = 0
    log_every: int = 10
    max_minutes: float = 0.0  # stop early after this wall time (0 = run all steps); the recipe records steps done


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


def lpm_loss(adapter, lpm: LearnedPruningModule, batch, answer_len: list[int], cfg: TrainConfig) -> tuple[torch.Tensor, dict[str, float]]:
    """One differentiable forward: STE mask → key-masked LLM → CE on answers + ratio loss."""
    import torch.nn.functional as F

    with torch.no_grad():
        view = adapter.encode(batch)
        projected = adapter.project(view.features)
        bsz, n = view.features.shape[:2]
        llm = adapter.assemble(batch, projected, torch.arange(n, device=adapter.device).expand(bsz, -1), "compact")
    logits = lpm(view.features.float()).float()
    p_keep = torch.softmax(logits, dim=-1)[..., KEEP]
    hard = (logits.argmax(dim=-1) == KEEP).to(p_keep.dtype)
    m = hard + p_keep - p_keep.detach()  # straight-through: forward = hard mask, backward = soft
    mask = masked_visual_mask(llm.attention_mask, llm.visual_index, m, cfg.eps, llm.inputs_embeds.dtype)
    language_model = adapter.model.model.language_model
    hidden = language_model(inputs_embeds=llm.inputs_embeds, attention_mask=mask, position_ids=llm.position_ids).last_hidden_state
    length = hidden.shape[1]
    rows = torch.tensor([b for b, a in enumerate(answer_len) for _ in range(a)], device=hidden.device)
    cols = torch.tensor([length - 1 - a + j for a in answer_len for j in range(a)], device=hidden.device)  # predicts cols + 1
    targets = batch.input_ids[rows, cols + 1]  # every visual token is present: same layout as input_ids
    ce = F.cross_entropy(adapter.model.lm_head(hidden[rows, cols]).float(), targets)
    ratio = m.mean()
    loss = ce + cfg.mask_weight * (cfg.target_ratio - ratio) ** 2
    return loss, {"loss": float(loss.detach()), "ce": float(ce.detach()), "keep_ratio": float(ratio.detach()), "hard_ratio": float(hard.mean())}


def train_lpm(adapter, data: Iterator[TrainSample], cfg: TrainConfig, on_log=None) -> tuple[LearnedPruningModule, list[dict[str, float]]]:
    """Train an LPM for ``adapter``'s vision features with the base model frozen; returns (lpm, log)."""
    torch.manual_seed(cfg.seed)
    model = adapter.model
    frozen = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in frozen:
        p.requires_grad_(False)
    was_training = model.training
    model.eval()
    width = adapter.model.config.vision_config.hidden_size * len(adapter._feature_layers())
    lpm = LearnedPruningModule(width).to(adapter.device)
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
            loss, stats = lpm_loss(adapter, lpm, batch, answer_len, cfg)
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
        "(methods-2.md §3.3), which prunebench does not download. Supported here: toy-llava, tiny-llava"
    )


def weights_digest(adapter) -> str:
    """sha256 of the base model's weights (an LPM is only valid for the ViT it was trained on)."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(adapter.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def versions() -> dict[str, str]:
    import transformers

    from prunebench import __version__

    return {"prunebench": __version__, "torch": torch.__version__, "transformers": transformers.__version__, "python": platform.python_version()}


def train_learnpruner(model: str, cfg: TrainConfig, output: Path | None = None, on_log=None) -> Path:
    from prunebench.models import load_model

    adapter = load_model(model)
    data, description = data_for(model, cfg.seed)
    start = time.time()
    lpm, history = train_lpm(adapter, data, cfg, on_log=on_log)
    path = Path(output) if output else default_checkpoint(model)
    tail = history[-min(10, len(history)):]
    recipe = {
        "method": "learnpruner",
        "module": {"class": "LearnedPruningModule", "width": lpm.width, "hidden": lpm.hidden, "keep_class": KEEP,
                   "parameters": sum(p.numel() for p in lpm.parameters()), "input": "ViT feature layer, [CLS] dropped, before the projector"},
        "model": model,
        "base_weights_sha256": weights_digest(adapter),
        "data": description,
        "config": asdict(cfg),
        "loss": "CE(answer + EOS) + mask_weight * (target_ratio - mean m)^2; m = STE(argmax, softmax); key-masking log(m + eps) in every LLM layer",
        "steps_done": len(history),
        "final": {k: sum(h[k] for h in tail) / len(tail) for k in ("loss", "ce", "keep_ratio", "hard_ratio")},
        "first": {k: history[0][k] for k in ("loss", "ce", "keep_ratio", "hard_ratio")} if history else {},
        "seconds": round(time.time() - start, 1),
        "versions": versions(),
    }
    save_lpm(lpm, path, recipe)
    return path


# -- command line ----------------------------------------------------------------------------------------------
def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a trainable pruner (learnpruner)",
                              description="Train a trainable pruning method with the base model frozen and save its checkpoint + recipe.")
    sub = p.add_subparsers(dest="trainee", metavar="METHOD")
    lp = sub.add_parser("learnpruner", help="train LearnPruner's learned pruning module (LPM)",
                        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    lp.add_argument("--model", required=True, help="model name (toy-llava, tiny-llava)")
    lp.add_argument("--output", type=Path, default=None, help="checkpoint path (default prunebench/assets/learnpruner/MODEL.safetensors)")
    defaults = TrainConfig()
    for name, value in asdict(defaults).items():
        lp.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value, help=f"default {value}")
    lp.set_defaults(func=cmd_train_learnpruner)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def cmd_train_learnpruner(args: argparse.Namespace) -> int:
    cfg = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig())})

    def show(stats: dict[str, float]) -> None:
        print(f"step {int(stats['step']):5d}  loss {stats['loss']:.4f}  ce {stats['ce']:.4f}  keep {stats['keep_ratio']:.3f} (hard {stats['hard_ratio']:.3f})", flush=True)

    path = train_learnpruner(args.model, cfg, args.output, on_log=show)
    print(f"wrote {path} and {path.with_suffix('.json')}")
    return 0
