"""Helpers of the conformance kit (:mod:`prunebench.conformance`): failure injection, method interception,
eager attention for reference forwards, hook counting and one-line messages."""

from __future__ import annotations

import contextlib

import torch


class _Boom(RuntimeError):
    pass


def _boom(*args, **kwargs):
    raise _Boom("injected failure")


class _Intercept:
    """The method with some attributes replaced, on one Pruner only (the method's class is left alone)."""

    def __init__(self, method, **replaced):
        self._method, self._replaced = method, replaced

    def __getattr__(self, name):
        if name in self._replaced:
            return self._replaced[name]
        return getattr(self._method, name)


@contextlib.contextmanager
def _eager(model: torch.nn.Module):
    """The model's eager attention for one reference forward; the previous implementations afterwards."""
    original = {k: cfg._attn_implementation for k, cfg in _sub_configs(model)}
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation({k: v for k, v in original.items() if k} | {"": original[""]})


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def _sub_configs(model):
    yield "", model.config
    for key in getattr(model.config, "sub_configs", {}):
        sub = getattr(model.config, key, None)
        if sub is not None:
            yield key, sub


def _one_line(text: str) -> str:
    """``text`` on one line (a multi-line message's lines joined with "; ")."""
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip())


def _compact(counts: list[int]) -> str:
    return ",".join(str(c) for c in counts)
