"""The conformance kit: properties every method (built-in or plugin) must have on every model family.

``prunebench check METHOD... [--model tiny-llava]`` runs it from the command line; ``tests/test_conformance.py``
runs it under pytest. Each check returns a :class:`CheckResult`; a failed check names the property and the
method. The properties (DESIGN.md, "Conformance kit"):

1. ``noop``: a budget that keeps every token reproduces stock ``generate`` of the unhooked model exactly;
2. ``token_contract``: measured per-layer visual tokens and per-layer KV-cache lengths equal the plan;
3. ``cache``: cached generation equals a no-cache recomputation on the same kept tokens;
4. ``batch``: a padded batch of different prompts equals the same prompts one by one;
5. ``signals``: attention computed from captured q/k equals eager attention (fp32);
6. ``hygiene``: afterwards no hook is left and the model's outputs are unchanged, also after an exception;
7. ``determinism``: same seed, same kept indices.
"""

from __future__ import annotations

import contextlib
import traceback
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from prunebench.adapters.base import ModelAdapter, Sample
from prunebench.attention import Captured, active_requests, attention_probe, capture
from prunebench.core import InfeasibleBudget, PruningMethod
from prunebench.engine import Pruner

CHECKS = ("noop", "token_contract", "cache", "batch", "signals", "hygiene", "determinism")
QUESTIONS = (
    "what is the color of the circle ?",
    "how many",
    "is there a red square in the image ? answer with a single word or phrase .",
)
NEW_TOKENS = 4
LOGIT_TOL = 1e-4
SIGNAL_TOL = 1e-5


@dataclass
class CheckResult:
    check: str
    method: str
    model: str
    passed: bool
    detail: str = ""

    def __str__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"{mark} {self.check:<15} {self.method:<12} {self.model:<14} {self.detail}"


class ConformanceFailure(AssertionError):
    pass


def _picture(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):  # the same draws as the original square-only generator for square images
        x, y = (int(v) for v in rng.integers(0, min(width, height) - 60, 2))
        draw.ellipse([x, y, x + 50, y + 50], fill=tuple(int(c) for c in rng.integers(0, 255, 3)))
    return image


# Per family: (width, height) of each image, or ("video", frames, side). Mixed sizes / modalities make the batch
# check cover batches whose samples have different visual-token counts (the engine groups them).
FAMILY_INPUTS: dict[str, list[tuple]] = {
    "llava_next": [(336, 336), (448, 336), (336, 336)],  # 1176 / 1464 / 1176 tokens (AnyRes, unpadded)
    "video_llava": [("video", 4, 224), (224, 224), ("video", 4, 224)],  # 4 x 257 / 256 / 4 x 257
    "qwen2_5_vl": [(252, 252), (308, 224), (252, 252), ("video", 4, 224)],  # 81 / 88 / 81 / 2 x 64 merged tokens
}


def synthetic_samples(count: int = 3, size: int = 336, seed: int = 0, family: str = "llava") -> list[Sample]:
    """Deterministic images (or videos) with a few coloured shapes on noise, and prompts of different lengths.

    ``family`` picks the inputs of :data:`FAMILY_INPUTS` (image sizes, videos) for that model family;
    other families get ``count`` square images of ``size`` pixels.
    """
    rng = np.random.default_rng(seed)
    specs = FAMILY_INPUTS.get(family) or [(size, size)] * count
    samples = []
    for i, spec in enumerate(specs):
        sample = Sample(id=f"synthetic-{seed}-{i}", question=QUESTIONS[i % len(QUESTIONS)])
        if spec[0] == "video":
            _, frames, side = spec
            sample.video = [_picture(rng, side, side) for _ in range(frames)]
        else:
            sample.image = _picture(rng, *spec)
        samples.append(sample)
    return samples


def _groups(adapter: ModelAdapter, samples: Sequence[Sample]) -> list[list[Sample]]:
    """The samples split as the engine splits a batch: by equal visual layout."""
    groups: dict = {}
    for sample in samples:
        groups.setdefault(adapter.group_key(sample), []).append(sample)
    return list(groups.values())


def _generate(adapter: ModelAdapter, method: PruningMethod, budget: int | None, samples: Sequence[Sample], mode: str = "final", seed: int = 0, logits: bool = False):
    batch = adapter.prepare(samples)
    with Pruner(adapter, method, budget, budget_mode=mode, seed=seed) as pruner:
        return pruner.generate(batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, output_logits=logits)


def _max_diff(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor]) -> float:
    return max(float((x.float() - y.float()).abs().max()) for x, y in zip(a, b))


def _num_visual(adapter: ModelAdapter, samples: Sequence[Sample]) -> int:
    with torch.inference_mode():
        return adapter.encode(adapter.prepare(samples[:1])).num_tokens


# -- the checks ------------------------------------------------------------------------------------------------
def check_noop(adapter, method, samples, budget):
    """Keeping every token reproduces stock generate: same tokens, same logits."""
    batch = adapter.prepare(samples)
    with torch.inference_mode():
        stock = adapter.model.generate(**batch.inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                                       return_dict_in_generate=True, output_logits=True)
    stock_tokens = stock.sequences[:, batch.input_ids.shape[1]:]
    position = {id(s): i for i, s in enumerate(samples)}
    worst = 0.0
    for group in _groups(adapter, samples):  # a keep-all budget is per visual layout
        rows = [position[id(s)] for s in group]
        out = _generate(adapter, method, _num_visual(adapter, group), group, logits=True)
        if not torch.equal(out.tokens, stock_tokens[rows]):
            return False, f"tokens differ from stock generate: {out.tokens.tolist()} vs {stock_tokens[rows].tolist()}"
        worst = max(worst, _max_diff(out.logits, [l[rows] for l in stock.logits]))
    return worst <= LOGIT_TOL, f"max |Δlogit| vs stock = {worst:.2e}"


def check_token_contract(adapter, method, samples, budget):
    """Measured per-layer visual tokens and KV lengths equal the plan, in both budget modes where feasible."""
    details = []
    for mode in ("final", "average"):
        try:
            out = _generate(adapter, method, budget, samples, mode=mode)
        except InfeasibleBudget as exc:
            details.append(f"{mode}: infeasible ({exc})")
            continue
        for group in out.groups:  # one per visual layout of the batch
            stats = group.stats
            planned = stats.plan.tokens_per_layer()
            if stats.tokens_per_layer != planned:
                return False, f"{mode}: measured visual tokens per layer {stats.tokens_per_layer} != plan {planned}"
            expected_kv = [stats.text_tokens + n for n in planned]
            if stats.kv_lengths != expected_kv:
                return False, f"{mode}: KV lengths per layer {stats.kv_lengths} != expected {expected_kv}"
            if mode == "final" and stats.final_tokens != budget:
                return False, f"final mode kept {stats.final_tokens} tokens, budget {budget}"
            details.append(f"{mode}: layers {_compact(planned)}")
    return True, "; ".join(details)


def check_cache(adapter, method, samples, budget):
    """Cached generation equals a no-cache recomputation over the same kept tokens."""
    batch = adapter.prepare(samples[:2])
    with Pruner(adapter, method, budget, budget_mode="final") as pruner:
        out = pruner.generate(batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, output_logits=True)
        again = pruner.recompute(out.tokens)
    diff = _max_diff(out.logits, again)
    return diff <= LOGIT_TOL, f"max |Δlogit| cached vs recomputed = {diff:.2e}"


def check_batch(adapter, method, samples, budget):
    """A left-padded batch of different prompts gives what each prompt gives alone."""
    together = _generate(adapter, method, budget, samples, logits=True)
    worst = 0.0
    for i, sample in enumerate(samples):
        alone = _generate(adapter, method, budget, [sample], logits=True)
        if not torch.equal(alone.tokens[0], together.tokens[i]):
            return False, f"sample {i}: tokens {alone.tokens[0].tolist()} alone vs {together.tokens[i].tolist()} in batch"
        for stage, kept in alone.stats.kept.items():
            if not torch.equal(kept[0], together.kept(stage, i)):
                return False, f"sample {i}: kept set at {stage} differs between batch and alone"
        worst = max(worst, _max_diff([l[0] for l in alone.logits], [l[i] for l in together.logits]))
    return worst <= LOGIT_TOL, f"max |Δlogit| batch vs single = {worst:.2e} (prompt lengths {[len(s.question.split()) for s in samples]})"


def check_signals(adapter, method, samples, budget):
    """Attention rows from captured q/k equal eager attention probabilities at every layer the method reads."""
    worst, detail = 0.0, ""
    for group in _groups(adapter, samples):  # each visual layout / modality (image and video towers)
        passed, detail, diff = _check_signals_group(adapter, method, group[:2], budget)
        worst = max(worst, diff)
        if not passed:
            return False, detail
    return True, detail.replace("= ", "= (worst over groups) ") if len(_groups(adapter, samples)) > 1 else detail


def _check_signals_group(adapter, method, samples, budget):
    batch = adapter.prepare(samples)
    num_visual = _num_visual(adapter, samples)
    with Pruner(adapter, method, budget, budget_mode="final") as pruner:
        plan = pruner.plan_for(num_visual)
    llm_layers = sorted(set(method.llm_signal_layers(plan)))
    vision_layers = sorted(set(method.vision_layers(adapter.num_vision_layers, adapter.feature_layer))) if "vision" in method.stages else []
    # also prove the mechanism on the first decoder layer and the feature layer for methods that read nothing
    llm_layers = llm_layers or [0]
    vision_layers = vision_layers or [adapter.feature_layer]
    captured_llm: dict[int, Captured] = {}
    captured_vit: dict[int, Captured] = {}
    requests = {adapter.decoder_attention(l): (lambda c, l=l: captured_llm.setdefault(l, c)) for l in llm_layers}
    model = adapter.model
    with torch.inference_mode():
        with attention_probe(model), capture(requests):
            model(**batch.inputs)
        original = {k: cfg._attn_implementation for k, cfg in _sub_configs(model)}
        model.set_attn_implementation("eager")
        try:
            eager = model(**batch.inputs, output_attentions=True)
        finally:
            model.set_attn_implementation({k: v for k, v in original.items() if k} | {"": original[""]})
    # ViT: every kernel call of those layers (one per image batch, or per window / image on Qwen2.5-VL)
    captured_vit = adapter.captured_vision_attentions(batch, vision_layers)
    eager_vit = adapter.eager_vision_attentions(batch, vision_layers)
    worst = 0.0
    for layer, cap in captured_llm.items():
        rows = torch.arange(cap.query.shape[2]).expand(cap.query.shape[0], -1)
        worst = max(worst, _max_diff([cap.probabilities(rows)], [eager.attentions[layer]]))
    for layer, caps in captured_vit.items():
        if not caps or len(caps) != len(eager_vit[layer]):
            return False, f"ViT layer {layer}: {len(caps)} captured kernel calls vs {len(eager_vit[layer])} eager ones", worst
        for cap, reference in zip(caps, eager_vit[layer]):
            rows = torch.arange(cap.query.shape[2]).expand(cap.query.shape[0], -1)
            worst = max(worst, _max_diff([cap.probabilities(rows)], [reference]))
    return worst <= SIGNAL_TOL, f"max |Δp| vs eager at LLM layers {llm_layers}, ViT layers {vision_layers} = {worst:.2e}", worst


def check_hygiene(adapter, method, samples, budget):
    """No hooks, capture requests or attention changes survive a run, even one that raises."""
    model = adapter.model
    batch = adapter.prepare(samples[:1])
    before_hooks = _hook_count(model)
    before_impl = {k: cfg._attn_implementation for k, cfg in _sub_configs(model)}
    with torch.inference_mode():
        reference = model(**batch.inputs).logits
    _generate(adapter, method, budget, samples[:1])
    with contextlib.suppress(_Boom):
        with Pruner(adapter, method, budget, budget_mode="final") as pruner:
            _explode_on_select(pruner)
            pruner.generate(batch, max_new_tokens=2)
    problems = []
    if _hook_count(model) != before_hooks:
        problems.append(f"hooks left: {_hook_count(model)} vs {before_hooks}")
    impl = {k: cfg._attn_implementation for k, cfg in _sub_configs(model)}
    if impl != before_impl:
        problems.append(f"attention implementation changed: {impl} vs {before_impl}")
    if active_requests():
        problems.append(f"{active_requests()} capture requests left")
    with torch.inference_mode():
        after = model(**batch.inputs).logits
    if not torch.equal(after, reference):
        problems.append(f"outputs changed (max |Δ| {float((after - reference).abs().max()):.2e})")
    return not problems, "; ".join(problems) or "no hooks, requests or config changes left (also after an exception)"


def check_determinism(adapter, method, samples, budget):
    """The same seed selects the same tokens."""
    first = _generate(adapter, method, budget, samples, seed=7)
    second = _generate(adapter, method, budget, samples, seed=7)
    for group, again in zip(first.groups, second.groups):
        for stage, kept in group.stats.kept.items():
            if not torch.equal(kept, again.stats.kept[stage]):
                return False, f"kept set at {stage} differs between two runs with seed 7"
    return True, f"stages {sorted(first.groups[0].stats.kept)} identical"


# -- helpers -----------------------------------------------------------------------------------------------------
class _Boom(RuntimeError):
    pass


def _explode_on_select(pruner: Pruner) -> None:
    """Make the method's selection raise mid-run (on this instance only) to test cleanup on errors."""

    def boom(*args, **kwargs):
        raise _Boom("injected failure")

    pruner.method = _Exploding(pruner.method, boom)


class _Exploding:
    def __init__(self, method, boom):
        self._method, self._boom = method, boom

    def __getattr__(self, name):
        if name in ("select_vision", "select_llm", "plan"):
            return self._boom
        return getattr(self._method, name)


def _hook_count(model: torch.nn.Module) -> int:
    return sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())


def _sub_configs(model):
    yield "", model.config
    for key in getattr(model.config, "sub_configs", {}):
        sub = getattr(model.config, key, None)
        if sub is not None:
            yield key, sub


def _compact(counts: list[int]) -> str:
    return ",".join(str(c) for c in counts)


CHECK_FUNCTIONS: dict[str, Callable] = {
    "noop": check_noop,
    "token_contract": check_token_contract,
    "cache": check_cache,
    "batch": check_batch,
    "signals": check_signals,
    "hygiene": check_hygiene,
    "determinism": check_determinism,
}


def run_check(check: str, adapter: ModelAdapter, method: PruningMethod, budget: int = 64, samples: Sequence[Sample] | None = None) -> CheckResult:
    samples = list(samples or synthetic_samples(family=adapter.family))
    try:
        passed, detail = CHECK_FUNCTIONS[check](adapter, method, samples, budget)
    except Exception as exc:  # a crash is a failure of the property, reported with its cause
        passed, detail = False, f"raised {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}"
    return CheckResult(check, method.name, adapter.name, bool(passed), detail)


def run_conformance(methods: Sequence[PruningMethod], adapter: ModelAdapter, checks: Sequence[str] = CHECKS, budget: int = 64,
                    on_result: Callable[[CheckResult], None] | None = None) -> list[CheckResult]:
    samples = synthetic_samples(family=adapter.family)
    results = []
    for method in methods:
        for check in checks:
            result = run_check(check, adapter, method, budget, samples)
            results.append(result)
            if on_result:
                on_result(result)
    return results
