"""Model names → adapters: tiny config-built models, the shipped toy model, and any hub id or folder."""

from __future__ import annotations

from typing import Any

from prunebench.adapters.base import ModelAdapter
from prunebench.core import PruneBenchError

TINY_MODELS = {"tiny-llava": "llava"}
DEFAULT_MODEL = "toy-llava"


def _family_of(name_or_path: str, trust_remote_code: bool) -> str:
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        raise PruneBenchError(
            f"cannot load model {name_or_path!r}: not a built-in name ({', '.join(known_models())}), "
            f"a local folder, or a reachable hub id ({exc.__class__.__name__}: {exc})"
        ) from None
    return config.model_type


def known_models() -> list[str]:
    return sorted([*TINY_MODELS, DEFAULT_MODEL])


def load_model(name: str = DEFAULT_MODEL, dtype: str = "auto", device: str = "cpu", trust_remote_code: bool = False, seed: int = 0) -> ModelAdapter:
    """An adapter for ``name``: ``tiny-<family>``, ``toy-llava``, a hub id (e.g. ``llava-hf/llava-1.5-7b-hf``) or a folder."""
    from prunebench.adapters.llava import LlavaAdapter

    if name in TINY_MODELS:
        from prunebench.models.tiny import tiny_llava

        model, processor = tiny_llava(seed=seed)
        return LlavaAdapter(model.to(device), processor, name=name)
    path: Any = name
    if name == DEFAULT_MODEL:
        from prunebench.toy import TOY_MODEL_DIR

        if not (TOY_MODEL_DIR / "config.json").exists():
            raise PruneBenchError(f"the toy model is missing at {TOY_MODEL_DIR}; train it with `prunebench toy train`")
        path = str(TOY_MODEL_DIR)
    family = _family_of(str(path), trust_remote_code)
    if family == "llava":
        adapter = LlavaAdapter.from_pretrained(str(path), dtype=dtype, device=device, trust_remote_code=trust_remote_code)
        adapter.name = name
        return adapter
    raise PruneBenchError(f"model type {family!r} of {name!r} has no adapter yet; supported: llava")
