"""The conformance kit: properties every method (built-in or plugin) must have on every model family.

``prunebench check METHOD... [--model tiny-llava]`` runs it from the command line; ``tests/test_conformance.py``
runs it under pytest. Each check returns a :class:`CheckResult` with a one-line ``detail``; a failed check names
the property and the method (the traceback of a crash is kept apart, in ``CheckResult.traceback``). A method
that raises :class:`prunebench.core.UnsupportedModel` from ``plan`` or a ``select`` (its original is undefined on
this family or input) passes the property as a *refusal* (``CheckResult.refused``, the reason as ``detail``):
declining with a clear reason is the conformant behaviour there. The properties:

1. ``noop``: a budget that keeps every token reproduces stock ``generate`` of the unhooked model: the same
   tokens and logits within :data:`NOOP_TOL`;
2. ``token_contract``: measured per-layer visual tokens and per-layer KV-cache lengths equal the plan, per
   visual layout, in final mode and in average mode (at the kit's budget where feasible and at
   :data:`AVERAGE_SHARE` of the input's visual tokens, which single-cut methods on a 4-layer LLM can reach);
3. ``cache``: cached generation equals a no-cache recomputation on the same kept tokens, for every visual
   layout / modality of the inputs (each family's inputs include a padded group of several samples);
4. ``batch``: a padded batch of different prompts equals the same prompts one by one;
5. ``signals``: attention computed from captured q/k equals eager attention (fp32), and so do the scores a
   method reads (``VisionView.cls_attention/received_attention/importance``, ``LayerView.attention`` and
   ``attention_to_visual`` at the first LLM stage) against slices of the eager probabilities;
6. ``hygiene``: afterwards no hook is left and the model's outputs are unchanged, also after an exception
   raised in ``plan`` and inside each stage's ``select`` during ``generate``;
7. ``determinism``: same seed, same kept indices.

Tolerances (fp32 on CPU): :data:`NOOP_TOL` for no-op logits, :data:`LOGIT_TOL` per unit of logit magnitude
for cache and batch logits (:func:`logit_tolerance`), :data:`SIGNAL_TOL` for attention probabilities.
"""

from __future__ import annotations

import itertools
import math
import traceback
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch

from prunebench.adapters.base import ModelAdapter, Sample
from prunebench.attention import Captured, active_requests, attention_probe, capture

# Re-exported: the kit's inputs and helpers live in their own modules; these names are imported from here.
from prunebench.conformance_helpers import _Boom, _boom, _compact, _eager, _hook_count, _Intercept, _one_line, _sub_configs
from prunebench.conformance_inputs import FAMILY_INPUTS as FAMILY_INPUTS
from prunebench.conformance_inputs import QUESTIONS as QUESTIONS
from prunebench.conformance_inputs import _picture as _picture
from prunebench.conformance_inputs import synthetic_samples
from prunebench.core import InfeasibleBudget, PruningMethod, UnsupportedModel
from prunebench.engine import Pruner, contract_problems

CHECKS = ("noop", "token_contract", "cache", "batch", "signals", "hygiene", "determinism")
NEW_TOKENS = 4
NOOP_TOL = 1e-6  # keep-all runs the stock computation on the same batch (measured 0 on every family)
# cache vs recompute, batch vs single: different kernel shapes and padding reorder fp32 sums, so the error grows
# with the logits' magnitude. The bound is LOGIT_TOL per unit of the largest |logit| (at least 1): 1e-6 absolute
# on the random tiny models (logits below 1, measured <= 2.1e-7), about 1.6e-5 on the trained toy-llava, whose logits
# reach |16| (measured <= 5.7e-6 there, i.e. 4e-7 relative).
LOGIT_TOL = 1e-6
SIGNAL_TOL = 1e-5
AVERAGE_SHARE = 3 / 4  # average-mode budget (share of the visual tokens) single-cut methods reach at K=2 of 4


@dataclass
class CheckResult:
    """One property of one method on one model. ``detail`` is one line; ``traceback`` holds a crash's traceback."""

    check: str
    method: str
    model: str
    passed: bool
    detail: str = ""
    refused: bool = False  # the method raised UnsupportedModel: a pass, ``detail`` is its reason
    traceback: str = ""

    def __str__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        detail = f"refused: {self.detail}" if self.refused else self.detail
        return f"{mark} {self.check:<15} {self.method:<12} {self.model:<14} {detail}"


def _groups(adapter: ModelAdapter, samples: Sequence[Sample]) -> list[list[Sample]]:
    """The samples split as the engine splits a batch: by equal visual layout."""
    groups: dict = {}
    for sample in samples:
        groups.setdefault(adapter.group_key(sample), []).append(sample)
    return list(groups.values())


def _generate(
    adapter: ModelAdapter, method: PruningMethod, budget: int | None, samples: Sequence[Sample], mode: str = "final", seed: int = 0, logits: bool = False
):
    batch = adapter.prepare(samples)
    with Pruner(adapter, method, budget, budget_mode=mode, seed=seed) as pruner:
        return pruner.generate(batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, output_logits=logits)


def _max_diff(a: Iterable[torch.Tensor], b: Iterable[torch.Tensor]) -> float:
    """Largest |x - y| over pairs of tensors; inf where only one side is NaN or infinite (a NaN difference would
    otherwise pass every ``<=`` and be skipped by ``max``). Entries equal on both sides (NaN padding included) count 0."""
    worst = 0.0
    for x, y in zip(a, b):
        x, y = x.float(), y.float()
        same = (x == y) | (x.isnan() & y.isnan())
        gap = torch.where(same, torch.zeros_like(x), (x - y).abs()).nan_to_num(nan=math.inf, posinf=math.inf)
        worst = max(worst, float(gap.max()) if gap.numel() else 0.0)
    return worst


def logit_tolerance(reference: Iterable[torch.Tensor]) -> tuple[float, float]:
    """(tolerance, scale) for comparing logits against ``reference``: :data:`LOGIT_TOL` times the largest
    |logit| of the reference, never below :data:`LOGIT_TOL` itself (fp32 rounding is relative to magnitude)."""
    scale = max(float(x.float().abs().max()) for x in reference)
    return LOGIT_TOL * max(1.0, scale), scale


def _num_visual(adapter: ModelAdapter, samples: Sequence[Sample]) -> int:
    with torch.inference_mode():
        return adapter.encode(adapter.prepare(samples[:1])).num_tokens


# -- the checks ------------------------------------------------------------------------------------------------
def check_noop(adapter, method, samples, budget):
    """Keeping every token reproduces stock generate on the same batch: same tokens, same logits.

    Per visual layout: the engine runs a mixed batch as one group per layout, and stock ``generate`` on that
    group is the reference (a stock batch of mixed layouts pads differently, which moves logits by ~1e-7).
    """
    worst = 0.0
    for group in _groups(adapter, samples):  # a keep-all budget is per visual layout
        batch = adapter.prepare(group)
        with torch.inference_mode():
            stock = adapter.model.generate(
                **batch.inputs, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, return_dict_in_generate=True, output_logits=True
            )
        stock_tokens = stock.sequences[:, batch.input_ids.shape[1] :]
        out = _generate(adapter, method, _num_visual(adapter, group), group, logits=True)
        if not torch.equal(out.tokens, stock_tokens):
            return False, f"tokens differ from stock generate: {out.tokens.tolist()} vs {stock_tokens.tolist()}"
        worst = max(worst, _max_diff(out.logits, stock.logits))
    return worst <= NOOP_TOL, f"max |Δlogit| vs stock = {worst:.2e} (tolerance {NOOP_TOL:.0e})"


def check_token_contract(adapter, method, samples, budget):
    """Measured per-layer visual tokens and KV lengths equal the plan, per visual layout, in both budget modes."""
    details = []
    for g, group in enumerate(_groups(adapter, samples)):
        num_visual = _num_visual(adapter, group)
        cells = [("final", budget), ("average", budget), ("average", math.ceil(AVERAGE_SHARE * num_visual))]
        exercised = []  # a vision-only method plans alike in both modes: run each distinct plan once
        for mode, cell_budget in dict.fromkeys(cells):
            if cell_budget > num_visual:
                details.append(f"group {g} {mode}@{cell_budget}: above its {num_visual} visual tokens")
                continue
            try:
                with Pruner(adapter, method, cell_budget, budget_mode=mode) as pruner:
                    plan = pruner.plan_for(num_visual)
            except InfeasibleBudget:
                details.append(f"group {g} {mode}@{cell_budget}: infeasible")
                continue
            if plan in exercised:
                details.append(f"group {g} {mode}@{cell_budget}: the plan above")
                continue
            exercised.append(plan)
            out = _generate(adapter, method, cell_budget, group, mode=mode)
            stats = out.stats
            problems = contract_problems(stats.plan, stats.tokens_per_layer, stats.kv_lengths, stats.text_tokens)
            if not stats.kv_lengths:
                problems.append("no KV cache was measured")
            if mode == "final" and stats.final_tokens != cell_budget:
                problems.append(f"kept {stats.final_tokens} tokens after the last stage, budget {cell_budget}")
            if problems:
                return False, f"group {g} ({len(group)} samples) {mode} mode, budget {cell_budget}: " + "; ".join(problems)
            details.append(f"group {g} {mode}@{cell_budget}: layers {_compact(stats.tokens_per_layer)}")
    return True, "; ".join(details)


def check_cache(adapter, method, samples, budget):
    """Cached generation equals a no-cache recomputation over the same kept tokens, for every visual layout."""
    batch = adapter.prepare(samples)
    with Pruner(adapter, method, budget, budget_mode="final") as pruner:
        out = pruner.generate(batch, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, output_logits=True)
        again = pruner.recompute(out.tokens)
    diff = _max_diff(out.logits, again)
    tolerance, scale = logit_tolerance(again)
    sizes = [len(group.indices) for group in out.groups]
    return diff <= tolerance, (
        f"max |Δlogit| cached vs recomputed = {diff:.2e} over groups of {sizes} samples (tolerance {tolerance:.1e} at max |logit| {scale:.3g})"
    )


def check_batch(adapter, method, samples, budget):
    """A left-padded batch of different prompts gives what each prompt gives alone."""
    together = _generate(adapter, method, budget, samples, logits=True)
    worst, worst_tolerance, worst_scale = 0.0, LOGIT_TOL, 0.0  # of the sample closest to its tolerance
    for i, sample in enumerate(samples):
        alone = _generate(adapter, method, budget, [sample], logits=True)
        if not torch.equal(alone.tokens[0], together.tokens[i]):
            return False, f"sample {i}: tokens {alone.tokens[0].tolist()} alone vs {together.tokens[i].tolist()} in batch"
        for stage, kept in alone.stats.kept.items():
            if not torch.equal(kept[0], together.kept(stage, i)):
                return False, f"sample {i}: kept set at {stage} differs between batch and alone"
        reference = [l[0] for l in alone.logits]
        diff = _max_diff(reference, [l[i] for l in together.logits])
        tolerance, scale = logit_tolerance(reference)
        if not math.isfinite(diff):
            return False, f"sample {i}: logits batch vs single differ by {diff} (non-finite logits)"
        if diff / tolerance >= worst / worst_tolerance:
            worst, worst_tolerance, worst_scale = diff, tolerance, scale
    lengths = [len(s.question.split()) for s in samples]
    return worst <= worst_tolerance, (
        f"max |Δlogit| batch vs single = {worst:.2e} (prompt lengths {lengths}; tolerance {worst_tolerance:.1e} at max |logit| {worst_scale:.3g})"
    )


def check_signals(adapter, method, samples, budget):
    """Attention from captured q/k, and the scores methods read from the views, equal eager attention."""
    groups = _groups(adapter, samples)
    worst, read = 0.0, set()
    for group in groups:  # each visual layout / modality (image and video towers)
        passed, detail, diff, names = _check_signals_group(adapter, method, group[:2], budget)
        worst, read = max(worst, diff), read | names
        if not passed:
            return False, detail
    return True, f"max |Δp| vs eager over {len(groups)} group(s) = {worst:.2e}; view scores compared: {', '.join(sorted(read))}"


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
    requests = {adapter.decoder_attention(l): (lambda c, l=l: captured_llm.setdefault(l, c)) for l in llm_layers}
    model = adapter.model
    with torch.inference_mode():
        with attention_probe(model), capture(requests):
            model(**batch.inputs)
        with _eager(model):
            eager = model(**batch.inputs, output_attentions=True)
    # ViT: every kernel call of those layers (one per image batch, or per window / image on Qwen2.5-VL)
    captured_vit = adapter.captured_vision_attentions(batch, vision_layers)
    with torch.inference_mode(), attention_probe(model):  # the view the engine builds (as inside a Pruner)
        view = adapter.encode(batch, vision_layers)
    eager_vit = adapter.eager_vision_attentions(batch, sorted(set(vision_layers) | set(view.captured)))
    worst = 0.0
    where = f"LLM layers {llm_layers}, ViT layers {vision_layers}"
    for layer, cap in captured_llm.items():
        rows = torch.arange(cap.query.shape[2]).expand(cap.query.shape[0], -1)
        worst = max(worst, _max_diff([cap.probabilities(rows)], [eager.attentions[layer]]))
    for layer, caps in captured_vit.items():
        if not caps or len(caps) != len(eager_vit[layer]):
            return False, f"ViT layer {layer}: {len(caps)} captured kernel calls vs {len(eager_vit[layer])} eager ones", worst, set()
        for cap, reference in zip(caps, eager_vit[layer]):
            rows = torch.arange(cap.query.shape[2]).expand(cap.query.shape[0], -1)
            worst = max(worst, _max_diff([cap.probabilities(rows)], [reference]))
    if worst > SIGNAL_TOL:
        return False, f"max |Δp| captured vs eager at {where} = {worst:.2e}", worst, set()
    # the scores methods read, through the views the engine builds, against slices of eager attention
    with torch.inference_mode():
        pairs = _vision_view_scores(view, {layer: eager_vit[layer] for layer in sorted(view.captured)})
    if plan.llm:
        pairs.update(_layer_view_scores(adapter, method, batch, budget))
    for name, (got, want) in pairs.items():
        if got.shape != want.shape:
            return False, f"{name}: shape {tuple(got.shape)} vs eager {tuple(want.shape)}", worst, set()
        diff = _max_diff([got], [want])
        worst = max(worst, diff)
        if diff > SIGNAL_TOL:
            return False, f"{name} differs from eager attention by {diff:.2e} (tolerance {SIGNAL_TOL:.0e})", worst, set()
    return True, f"max |Δp| vs eager at {where} = {worst:.2e}", worst, set(pairs)


def _vision_view_scores(view, eager: dict[int, list[torch.Tensor]]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(view's score, the same score sliced from eager probabilities) for every ViT layer the view captured."""
    pairs = {}
    bsz = view.batch_size
    for layer, calls in eager.items():
        if hasattr(view, "reverse"):  # Qwen2.5-VL: chunks in window order, 2x2 merge units, no [CLS]
            per_patch = torch.cat([p.mean(1)[0].mean(0) for p in calls])  # received: head-mean, query-mean
            want = per_patch.view(-1, view.unit).mean(1)[view.reverse].view(bsz, -1)
            pairs[f"received_attention({layer})"] = (view.received_attention(layer), want)
            continue
        probs = torch.cat(calls)  # (B*U, H, T, T): one CLIP pass per image, crop or frame
        received = probs.mean(1).mean(1)  # (B*U, T)
        cls_row = probs[:, :, 0, :]  # (B*U, H, T)
        if getattr(view, "resample", None) is not None:  # pooled candidates (LLaVA-OneVision video): the model's own pooling
            want_received = view.resample(received[..., None])[..., 0]
            want_cls = None
        elif hasattr(view, "token_map"):  # crops / frames: candidates gathered from the flattened unit tokens
            heads = cls_row.shape[1]
            flat_cls = cls_row.view(bsz, -1, heads, cls_row.shape[-1]).transpose(1, 2).reshape(bsz, heads, -1)
            want_cls = flat_cls.gather(2, view.token_map[:, None].expand(-1, heads, -1))
            want_received = received.reshape(bsz, -1).gather(1, view.token_map)
        else:  # one image per row; [CLS] (column 0) is never a candidate
            want_cls = cls_row[..., 1:]
            want_received = received[:, 1:] if view.has_cls else received
        pairs[f"received_attention({layer})"] = (view.received_attention(layer), want_received)
        if view.has_cls:
            pairs[f"cls_attention({layer})"] = (view.cls_attention(layer), want_cls.mean(1))
            pairs[f"cls_attention({layer}, heads='sum')"] = (view.cls_attention(layer, heads="sum"), want_cls.sum(1))
    layer = view.feature_layer if view.has_cls else view.importance_layer
    if layer is not None and layer % view.num_vision_layers in eager:
        name = f"{'cls' if view.has_cls else 'received'}_attention({layer % view.num_vision_layers})"
        pairs["importance()"] = (view.importance(), pairs[name][1])
    return pairs


def _layer_view_scores(adapter, method, batch, budget) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The first LLM stage's LayerView scores in a real pruned run, and the same slices of eager attention of
    layer K-1 over the same LLM input (no token is dropped inside the LLM before the first cut)."""
    seen = {}

    def select_llm(view, keep):
        if not seen:
            rows, valid = view.text_queries()
            last = view.last_index
            seen.update(
                layer=view.layer,
                visual=view.visual_index,
                rows=rows,
                valid=valid,
                last=last,
                attention=view.attention(last),
                to_visual=view.attention_to_visual(rows),
                to_visual_heads=view.attention_to_visual(last, heads="none"),
            )
        return method.select_llm(view, keep)

    with Pruner(adapter, method, budget, budget_mode="final") as pruner:
        pruner.method = _Intercept(method, select_llm=select_llm)
        out = pruner.generate(batch, max_new_tokens=1)
    if not seen:
        return {}
    llm = out.llm_inputs
    with torch.inference_mode(), _eager(adapter.model):
        probs = (
            adapter.model(inputs_embeds=llm.inputs_embeds, attention_mask=llm.attention_mask, position_ids=llm.position_ids, output_attentions=True)
            .attentions[seen["layer"] - 1]
            .float()
        )  # (B, H, L, L)

    def rows_of(rows):  # (B, H, r, L)
        return probs.gather(2, rows[:, None, :, None].expand(-1, probs.shape[1], -1, probs.shape[-1]))

    def at_visual(p):  # (B, H, r, n)
        return p.gather(3, seen["visual"][:, None, None, :].expand(*p.shape[:3], -1))

    k = seen["layer"]
    # rows a sample does not own (before its own image, a padded batch-mate's span) are compared too: equal anyway
    return {
        f"LayerView(layer {k}).attention(last row)": (seen["attention"], rows_of(seen["last"])),
        f"LayerView(layer {k}).attention_to_visual(text rows)": (seen["to_visual"], at_visual(rows_of(seen["rows"])).mean(1)),
        f"LayerView(layer {k}).attention_to_visual(last row, heads='none')": (seen["to_visual_heads"], at_visual(rows_of(seen["last"]))),
    }


def check_hygiene(adapter, method, samples, budget):
    """No hooks, capture requests or attention changes survive a run, even one that raises (in ``plan`` and in
    each stage's ``select`` during ``generate``)."""
    model = adapter.model
    batch = adapter.prepare(samples[:1])
    before_impl = {k: cfg._attn_implementation for k, cfg in _sub_configs(model)}
    with torch.inference_mode():
        reference = model(**batch.inputs).logits
    # counted after one stock forward: transformers installs its own output-recording hooks on a model's first call
    before_hooks = _hook_count(model)
    _generate(adapter, method, budget, samples[:1])
    num_visual = _num_visual(adapter, samples[:1])
    with Pruner(adapter, method, budget, budget_mode="final") as pruner:
        plan = pruner.plan_for(num_visual)
    counts = [num_visual, *plan.tokens_per_layer()]  # a stage that keeps everything never calls its select
    # a method that prunes in preprocessing (downsample) reaches the vision stage with the budget already met
    vision_target = "preprocess" if callable(getattr(method, "preprocess", None)) else "select_vision"
    targets = ["plan"] + [vision_target] * (counts[1] < num_visual) + ["select_llm"] * any(b < a for a, b in itertools.pairwise(counts[1:]))
    problems = []
    for target in targets:
        try:
            with Pruner(adapter, method, budget, budget_mode="final") as pruner:
                pruner.method = _Intercept(method, **{target: _boom})
                pruner.generate(batch, max_new_tokens=2)
            problems.append(f"the failure injected into {target} was never raised")
        except _Boom:
            pass
        if _hook_count(model) != before_hooks:
            problems.append(f"after a failure in {target}: hooks left: {_hook_count(model)} vs {before_hooks}")
        impl = {k: cfg._attn_implementation for k, cfg in _sub_configs(model)}
        if impl != before_impl:
            problems.append(f"after a failure in {target}: attention implementation changed: {impl} vs {before_impl}")
        if active_requests():
            problems.append(f"after a failure in {target}: {active_requests()} capture requests left")
    with torch.inference_mode():
        after = model(**batch.inputs).logits
    if not torch.equal(after, reference):
        problems.append(f"outputs changed (max |Δ| {float((after - reference).abs().max()):.2e})")
    return not problems, "; ".join(problems) or f"no hooks, requests or config changes left (also after failures in {', '.join(targets)})"


def check_determinism(adapter, method, samples, budget):
    """The same seed selects the same tokens."""
    first = _generate(adapter, method, budget, samples, seed=7)
    second = _generate(adapter, method, budget, samples, seed=7)
    for group, again in zip(first.groups, second.groups):
        for stage, kept in group.stats.kept.items():
            if not torch.equal(kept, again.stats.kept[stage]):
                return False, f"kept set at {stage} differs between two runs with seed 7"
    return True, f"stages {sorted(first.groups[0].stats.kept)} identical"


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
    """Run property ``check``; a refusal (``UnsupportedModel``) passes as refused, a crash fails with its cause."""
    samples = list(samples or synthetic_samples(family=adapter.family))
    result = _run_check(check, adapter, method, budget, samples)
    modalities = sorted({s.modality for s in samples})
    if result.refused and len(modalities) > 1:
        # a method may refuse one modality only (downsample: images, not videos): check each on its own, so a
        # video refusal does not leave the image path of the same family untested
        parts = [_run_check(check, adapter, method, budget, [s for s in samples if s.modality == m]) for m in modalities]
        if all(p.refused for p in parts):
            return result
        result = CheckResult(
            check,
            method.name,
            adapter.name,
            passed=all(p.passed for p in parts),
            detail="; ".join(f"{m}: {'refused: ' if p.refused else ''}{p.detail}" for m, p in zip(modalities, parts)),
            traceback="\n".join(p.traceback for p in parts if p.traceback),
        )
    return result


def _run_check(check: str, adapter: ModelAdapter, method: PruningMethod, budget: int, samples: list[Sample]) -> CheckResult:
    result = CheckResult(check, method.name, adapter.name, passed=False)
    try:
        passed, detail = CHECK_FUNCTIONS[check](adapter, method, samples, budget)
        result.passed, result.detail = bool(passed), _one_line(detail)
    except UnsupportedModel as exc:
        result.passed, result.refused, result.detail = True, True, _one_line(str(exc))
    except Exception as exc:  # a crash is a failure of the property, reported with its cause
        result.detail = _one_line(f"raised {type(exc).__name__}: {exc}")
        result.traceback = traceback.format_exc(limit=-3)
    return result


def run_conformance(
    methods: Sequence[PruningMethod],
    adapter: ModelAdapter,
    checks: Sequence[str] = CHECKS,
    budget: int = 64,
    on_result: Callable[[CheckResult], None] | None = None,
) -> list[CheckResult]:
    samples = synthetic_samples(family=adapter.family)
    results = []
    for method in methods:
        for check in checks:
            result = run_check(check, adapter, method, budget, samples)
            results.append(result)
            if on_result:
                on_result(result)
    return results
