"""Model names → adapters: tiny config-built models, the shipped toy model, and any hub id or folder.

A hub id or folder is dispatched on its ``config.model_type``: ``llava`` (LLaVA-1.5), ``llava_next``
(LLaVA-1.6), ``video_llava``, ``qwen2_5_vl``, ``llava_onevision`` (LLaVA-OneVision, LLaVA-Video) and ``qwen3_vl``.
``options`` go to the adapter: ``preprocess="paper"|"hf"`` (LLaVA-1.5), ``layout="anyres"|"fivecrop"|"spatial"``
(LLaVA-NeXT), ``vision_stop="feature"|"full"`` (every family: run the vision encoder up to the feature layer, the
default, or every layer as stock transformers), and are recorded by ``adapter.describe()``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prunebench.adapters.base import ModelAdapter
from prunebench.core import PruneBenchError
from prunebench.models.catalog import CATALOG, TINY, catalog_entry, catalog_rows, is_random_weights

# tiny name -> family (model_type), from the one model table (prunebench.models.catalog); the builders live in
# prunebench.models.tiny
TINY_MODELS = {entry.name: entry.family for entry in CATALOG if entry.kind == TINY}
DEFAULT_MODEL = "toy-llava"
FAMILIES = ("llava", "llava_next", "video_llava", "qwen2_5_vl", "llava_onevision", "qwen3_vl")


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


def adapter_class(family: str) -> type[ModelAdapter]:
    """The adapter class of a model family (``config.model_type``)."""
    if family == "llava":
        from prunebench.adapters.llava import LlavaAdapter as cls
    elif family == "llava_next":
        from prunebench.adapters.llava_next import LlavaNextAdapter as cls
    elif family == "video_llava":
        from prunebench.adapters.video_llava import VideoLlavaAdapter as cls
    elif family == "qwen2_5_vl":
        from prunebench.adapters.qwen2_5_vl import Qwen2_5_VLAdapter as cls
    elif family == "llava_onevision":
        from prunebench.adapters.llava_onevision import LlavaOnevisionAdapter as cls
    elif family == "qwen3_vl":
        from prunebench.adapters.qwen3_vl import Qwen3VLAdapter as cls
    else:
        raise PruneBenchError(f"model type {family!r} has no adapter yet; supported: {', '.join(FAMILIES)}")
    return cls


def _tiny_builder(family: str) -> Callable:
    from prunebench.models import tiny

    return getattr(tiny, f"tiny_{family}")


def load_model(
    name: str = DEFAULT_MODEL, dtype: str = "auto", device: str = "cpu", trust_remote_code: bool = False, seed: int = 0, **options: Any
) -> ModelAdapter:
    """An adapter for ``name``: ``tiny-<family>``, ``toy-llava``, a hub id or a folder.

    Hub ids such as ``llava-hf/llava-1.5-7b-hf``, ``llava-hf/llava-v1.6-vicuna-7b-hf``,
    ``LanguageBind/Video-LLaVA-7B-hf``, ``Qwen/Qwen2.5-VL-7B-Instruct``, ``llava-hf/llava-onevision-qwen2-7b-ov-hf`` and
    ``Qwen/Qwen3-VL-8B-Instruct`` load through each adapter's
    ``from_pretrained`` (the stock ``*ForConditionalGeneration.from_pretrained``); ``prunebench models`` lists
    the checkpoints of each family (:data:`prunebench.models.catalog.CATALOG`).
    """
    if name in TINY_MODELS:
        family = TINY_MODELS[name]
        model, processor = _tiny_builder(family)(seed=seed)
        return adapter_class(family)(model.to(device), processor, name=name, **options)
    path: Any = name
    if name == DEFAULT_MODEL:
        from prunebench.toy import TOY_MODEL_DIR

        if not (TOY_MODEL_DIR / "config.json").exists():
            raise PruneBenchError(f"the toy model is missing at {TOY_MODEL_DIR}; train it with `prunebench toy train`")
        path = str(TOY_MODEL_DIR)
    family = _family_of(str(path), trust_remote_code)
    adapter = adapter_class(family).from_pretrained(str(path), dtype=dtype, device=device, trust_remote_code=trust_remote_code, **options)
    adapter.name = name
    return adapter


__all__ = [
    "CATALOG",
    "DEFAULT_MODEL",
    "FAMILIES",
    "TINY_MODELS",
    "adapter_class",
    "catalog_entry",
    "catalog_rows",
    "is_random_weights",
    "known_models",
    "load_model",
]
