"""LearnPruner's learned pruning module (LPM): the module, its safetensors checkpoints and their loading.

Kept apart from the method (:mod:`prunebench.methods.learnpruner`, which only scores with an LPM) and from
the training loop (:mod:`prunebench.training`, which writes one), so that running the method never imports the
trainer. Checkpoint format: ``<name>.safetensors`` (``fc1``/``fc2`` weights in fp32; metadata ``format =
prunebench-lpm``, ``width``, ``hidden``, ``input``) plus the recipe ``<name>.json`` next to it; nothing is ever
unpickled. The recipe records the sha256 of the vision weights it was trained on (:func:`vision_digest`), which
:func:`check_base` compares with the model it is loaded for.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from prunebench.core import PruneBenchError

ASSETS = Path(__file__).resolve().parent / "assets" / "learnpruner"
KEEP = 0  # class index of "keep" (the Dynamic-LLaVA convention, Osilly/dynamic_llava @e1469bc)


INPUT_SPACES = ("vision", "projected")


class LearnedPruningModule(nn.Module):
    """LearnPruner's LPM: a two-layer MLP (width → hidden → 2, GELU; hidden = width/2 by default) classifying
    each visual token.

    For CLIP ViT-L (width 1024) this is 1024 → 512 → 2 = 525,826 parameters, the paper's "0.53 M"; other
    towers get the same shape from their own width. Channel ``KEEP`` (0) is the keep class. ``input`` says
    which features it reads: ``"vision"`` (the ViT feature layer, before the projector: the default reading
    of the paper's X_v^(0)) or ``"projected"`` (after the projector, the LLM layer-0 input reading).
    """

    def __init__(self, width: int, hidden: int | None = None, input: str = "vision"):
        super().__init__()
        if input not in INPUT_SPACES:
            raise PruneBenchError(f"LPM input must be one of {INPUT_SPACES}, got {input!r}")
        self.input = input
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


def random_lpm(width: int, seed: int = 0, hidden: int | None = None, input: str = "vision") -> LearnedPruningModule:
    """A seeded, untrained LPM (tiny config-built models, ablations)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        return LearnedPruningModule(width, hidden, input).eval()
    finally:
        torch.random.set_rng_state(generator_state)


def default_checkpoint(model: str) -> Path:
    return ASSETS / f"{model}.safetensors"


def save_lpm(module: LearnedPruningModule, path: Path, recipe: dict[str, Any]) -> None:
    """Write ``path`` (safetensors, shapes in its metadata) and the recipe next to it (``.json``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}
    metadata = {"format": "prunebench-lpm", "width": str(module.width), "hidden": str(module.hidden), "input": module.input}
    save_file(tensors, str(path), metadata=metadata)
    path.with_suffix(".json").write_text(json.dumps(recipe, indent=2, sort_keys=True) + "\n")


def load_lpm(path: Path | str) -> LearnedPruningModule:
    """Load an LPM from a safetensors file (never pickle)."""
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
    module = LearnedPruningModule(width, hidden, meta.get("input", "vision"))  # checkpoints before "input": vision
    module.load_state_dict(state)
    return module.eval()


def load_recipe(path: Path | str) -> dict[str, Any]:
    """The recipe written next to an LPM checkpoint (``<name>.json``), or {} when there is none."""
    recipe = Path(path).with_suffix(".json")
    try:
        return json.loads(recipe.read_text())
    except (OSError, ValueError):
        return {}


# -- which base model an LPM belongs to ----------------------------------------------------------------------
VISION_DIGEST_KEY = "vision_weights_sha256"
FULL_DIGEST_KEY = "base_weights_sha256"  # recipes before the vision digest: every weight of the model


def _digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().numpy().tobytes())
    return digest.hexdigest()


def weights_digest(adapter) -> str:
    """sha256 of all the base model's weights (what recipes recorded as ``base_weights_sha256``)."""
    return _digest(adapter.model.state_dict().items())


def vision_digest(model: nn.Module) -> str:
    """sha256 of the weights that produce an LPM's input: every weight outside the language model and the LM
    head (vision tower(s) and projector / merger). A fraction of a 7B model, so cheap enough to check at load."""
    inner = getattr(model, "model", model)
    llm = [m for m in (getattr(inner, "language_model", None), model.get_output_embeddings()) if m is not None]
    if not llm:
        raise PruneBenchError(f"{type(model).__name__} has no language_model / output embeddings to tell apart from its vision weights")
    skip = {id(t) for m in llm for t in (*m.parameters(), *m.buffers())}
    return _digest((name, t) for name, t in model.state_dict(keep_vars=True).items() if id(t) not in skip)


def check_base(recipe: dict[str, Any], model: nn.Module, model_name: str, path: Path | str) -> None:
    """Raise unless the LPM's recorded base weights are ``model``'s (vision digest; full digest for older
    recipes). A recipe without either digest cannot be checked and passes."""
    if VISION_DIGEST_KEY in recipe:
        key, current = VISION_DIGEST_KEY, vision_digest(model)
    elif FULL_DIGEST_KEY in recipe:
        key, current = FULL_DIGEST_KEY, _digest(model.state_dict().items())
    else:
        return
    if recipe[key] != current:
        scope = "vision tower and projector" if key == VISION_DIGEST_KEY else "weights"
        raise PruneBenchError(
            f"the LPM at {path} was trained on a model whose {scope} hash to {recipe[key][:12]}…, but {model_name or 'this model'}'s "
            f"hash to {current[:12]}…: it would score the tokens of a different vision tower. Retrain it with "
            f"`prunebench train learnpruner --model {model_name or 'MODEL'}` (or pass verify=False to use it anyway)"
        )


# -- finding the LPM of a model ---------------------------------------------------------------------------------
TINY_PREFIX = "tiny-"  # the config-built test models (random weights): no LPM can learn anything from them


def resolve_lpm(
    checkpoint: str,
    model: str,
    width: int,
    *,
    seed: int = 0,
    hidden: int | None = None,
    input: str = "vision",
    base: nn.Module | None = None,
    verify: bool = True,
) -> LearnedPruningModule:
    """The LPM that ``checkpoint`` names for ``model``.

    ``"auto"``: ``assets/learnpruner/<model>.safetensors``; for a tiny test model (``tiny-*``) without one, a
    seeded random LPM; any other model without one is an error naming the training command. ``"random"``: the
    seeded random LPM. A ``.safetensors`` path, or a model name whose checkpoint to load. With ``verify`` and a
    ``base`` model, a loaded LPM's recipe must record ``base``'s vision weights (:func:`check_base`).
    """
    if checkpoint == "random":
        return random_lpm(width, seed, hidden, input)
    if checkpoint == "auto":
        path = default_checkpoint(model) if model else None
        if path is None or not path.exists():
            if model.startswith(TINY_PREFIX):
                return random_lpm(width, seed, hidden, input)
            raise PruneBenchError(
                f"learnpruner has no trained LPM for model {model or '(unnamed)'!r}: run `prunebench train learnpruner "
                f"--model {model or 'MODEL'}` (writes {path or 'prunebench/assets/learnpruner/MODEL.safetensors'}), "
                "or pass checkpoint=PATH.safetensors (checkpoint=random for an untrained, seeded LPM)"
            )
    else:
        path = Path(checkpoint)
        if path.suffix != ".safetensors":
            path = default_checkpoint(checkpoint)
    module = load_lpm(path)
    if verify and base is not None:
        check_base(load_recipe(path), base, model, path)
    return module


def check_lpm(module: LearnedPruningModule, width: int, input: str, hidden: int, model: str) -> LearnedPruningModule:
    """``module`` if it reads ``input`` features of ``width`` (and has ``hidden`` units, unless 0); else an error
    naming the training command."""
    fix = f"train one with `prunebench train learnpruner --model {model or 'MODEL'} --input {input}`"
    if getattr(module, "input", "vision") != input:
        raise PruneBenchError(f"learnpruner: the LPM reads {module.input} features but lpm_input={input!r}; set lpm_input={module.input!r} or {fix}")
    if module.width != width:
        raise PruneBenchError(f"learnpruner: the LPM expects {module.width}-d features but this model's {input} features are {width}-d; {fix}")
    if hidden and module.hidden != hidden:
        raise PruneBenchError(
            f"learnpruner: lpm_hidden={hidden} but the LPM's hidden width is {module.hidden}; "
            f"set lpm_hidden=0 (take the checkpoint's) or {fix} --hidden {hidden}"
        )
    return module
