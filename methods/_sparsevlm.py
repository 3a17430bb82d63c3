"""SparseVLM's published schedules and its token recycling's clustering (``Gumpest/SparseVLMs``).

Kept apart from :mod:`prunebench.methods.sparsevlm` (the algorithm) because they are tables and a clustering
routine, not the method's score; the method module re-exports every name.
"""

from __future__ import annotations

import itertools
import math

import torch

from prunebench.core import InfeasibleBudget, PlanContext, check_plan_meets_budget
from prunebench.views import RecycledSelection

# The authors' schedules for LLaVA-1.5-7B (576 visual tokens, 32 layers), keyed by their budget label: the
# tokens each pruning layer {2, 6, 15} keeps by top-k (``Gumpest/SparseVLMs``: v1.5 = @8435974, v2.0 = main @26a5f48 with
# USE_VERSION=2_0). A v1.5 entry counts the top-k tokens only: the c merged tokens of that layer come on top
# (300 kept at layer 2 + 9 merged = 309 tokens seen by layers 3-6).
SCHEDULES: dict[str, dict[int, tuple[int, int, int]]] = {
    "1.5": {192: (300, 200, 110), 128: (303, 110, 36), 96: (238, 48, 26), 64: (66, 30, 17)},
    "2.0": {192: (300, 200, 118), 128: (238, 108, 60), 96: (246, 54, 28), 64: (66, 34, 20)},
}
REFERENCE_TOKENS = 576
PAPER_LAYERS = (2, 6, 15)
REFERENCE_DEPTH = 32
SCHEDULE_MODES = ("auto", "paper", "scaled")


def recycled_clusters(pruned: int, recycle_share: float = 0.3, cluster_share: float = 0.1) -> tuple[int, int]:
    """(n1 candidates, c clusters) of v1/v1.5's recycling for ``pruned`` pruned tokens (v1.5 @8435974):
    n1 = int(0.3·pruned) + 1, c = int(n1/10) + 1."""
    n1 = min(pruned, int(recycle_share * pruned) + 1)
    return n1, min(n1, int(n1 * cluster_share) + 1)


def paper_counts(version: str, label: int, num_visual: int = REFERENCE_TOKENS) -> tuple[int, ...]:
    """Visual tokens the layers after each pruning layer see under the authors' schedule ``label``: v2.0 the
    top-k counts min(k, N_v - 1); v1.5 those plus the merged tokens (309/204/113 for "192")."""
    counts, current = [], num_visual
    for k in SCHEDULES[version][label]:
        k = min(k, current - 1)
        current = k + (recycled_clusters(current - k)[1] if version == "1.5" else 0)
        counts.append(current)
    return tuple(counts)


def paper_budgets(version: str, mode: str = "average") -> dict[int, float]:
    """{authors' label: what prunebench measures for that schedule} on LLaVA-1.5-7B (576 tokens, 32 layers):
    in ``average`` mode the mean over the 32 layers of the visual tokens each layer sees (layers 0-2 see all
    576), in ``final`` mode the tokens after layer 15. v2.0: 192 -> 206.75, 128 -> 144.125, 96 -> 113.94,
    64 -> 81.81 (final 118/60/28/20); v1.5: 206.5, 145.41, 114.09, 82.25 (final 113/39/27/18)."""
    spans = [PAPER_LAYERS[i + 1] - PAPER_LAYERS[i] for i in range(len(PAPER_LAYERS) - 1)]
    spans.append(REFERENCE_DEPTH - 1 - PAPER_LAYERS[-1])
    out = {}
    for label in SCHEDULES[version]:
        counts = paper_counts(version, label)
        if mode == "final":
            out[label] = float(counts[-1])
        else:
            seen = (PAPER_LAYERS[0] + 1) * REFERENCE_TOKENS + sum(s * c for s, c in zip(spans, counts))
            out[label] = seen / REFERENCE_DEPTH
    return out


def schedule_shape(version: str, budget_576: float, stages: int = len(PAPER_LAYERS)) -> list[float]:
    """Fractions of N that the layers after each pruning layer see under the authors' schedule at
    ``budget_576`` (budget rescaled to 576 tokens; v1.5 with its merged tokens), over ``stages`` stages.

    Between the published budgets the fractions are interpolated linearly; outside [64, 192] the nearest
    published schedule's shape is used. Another stage count interpolates the fractions over the stages.
    """
    table = {label: paper_counts(version, label) for label in SCHEDULES[version]}
    budgets = sorted(table)
    b = min(max(budget_576, budgets[0]), budgets[-1])
    shape = [x / REFERENCE_TOKENS for x in table[budgets[0]]]
    for lo, hi in itertools.pairwise(budgets):
        if lo <= b <= hi:
            t = (b - lo) / (hi - lo)
            shape = [((1 - t) * x + t * y) / REFERENCE_TOKENS for x, y in zip(table[lo], table[hi])]
            break
    if stages != len(shape):
        xs = torch.linspace(0, len(shape) - 1, stages).tolist()
        shape = [shape[int(x)] + (x - int(x)) * (shape[min(int(x) + 1, len(shape) - 1)] - shape[int(x)]) for x in xs]
    return shape


def served_budgets(version: str, ctx: PlanContext, cuts: list[int], name: str = "sparsevlm") -> dict[int, int | None]:
    """{authors' label: the budget at which its schedule (cut before ``cuts``) meets the harness's contract in
    ``ctx.mode`` (:func:`prunebench.core.check_plan_meets_budget`), or None where no integer budget does}."""
    served: dict[int, int | None] = {}
    for label, measured in paper_budgets(version, ctx.mode).items():
        plan = ctx.plan(llm=dict(zip(cuts, paper_counts(version, label))))
        served[label] = None
        for budget in dict.fromkeys((math.floor(measured), math.ceil(measured))):
            try:
                check_plan_meets_budget(plan, budget, ctx.mode, name)
            except InfeasibleBudget:
                continue
            served[label] = budget
            break
    return served


def no_paper_schedule(version: str, budget: int, ctx: PlanContext, layers: tuple[int, ...], served: dict[int, int | None]) -> str:
    """The message of an infeasible ``schedule="paper"`` cell: which budgets the published schedules serve."""
    if not served:
        return (
            f"sparsevlm schedule='paper': the authors published schedules only for {REFERENCE_TOKENS} visual tokens, "
            f"{REFERENCE_DEPTH} layers and pruning layers {PAPER_LAYERS}; this input has {ctx.num_visual} tokens and "
            f"{ctx.num_layers} layers (layers {layers}); use schedule='scaled'"
        )
    measured = paper_budgets(version, ctx.mode)
    listed = "; ".join(
        f'"{label}" measures {measured[label]:g}: ' + (f"budget {b}" if b is not None else "no integer budget in this mode") for label, b in served.items()
    )
    return (
        f"sparsevlm v{version} schedule='paper': no published schedule meets budget {budget} in {ctx.mode} mode "
        f"(prunebench counts the visual tokens each layer sees, the authors each layer's output): {listed}. "
        f"Use one of those budgets (the other budget mode for the rest), or schedule='scaled' for {budget}"
    )


def dpc_knn(x: torch.Tensor, clusters: int, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """TCFormer-style density-peak clustering (SparseVLM's ``DPC_KNN``), batched.

    x: (B, n, C) fp32; noise: (B, n) uniform numbers (the original's unseeded ``torch.rand``, here seeded per
    sample). Returns (centres (B, c) indices into n, assignment (B, n) cluster ids in 0..c-1).
    """
    bsz, n, dim = x.shape
    dist = torch.cdist(x, x) / math.sqrt(dim)
    knn = dist.topk(min(clusters, n), dim=-1, largest=False).values  # includes the token itself
    density = (-(knn**2).mean(-1)).exp() + noise * 1e-6
    higher = density[:, None, :] > density[:, :, None]  # [i, j]: j is denser than i
    far = dist.flatten(1).max(dim=1).values[:, None, None]
    delta = torch.where(higher, dist, far).min(dim=-1).values
    centres = (delta * density).topk(clusters, dim=-1).indices  # (B, c)
    to_centre = dist.gather(2, centres[:, None, :].expand(-1, n, -1))  # (B, n, c)
    assign = to_centre.argmin(dim=-1)
    assign.scatter_(1, centres, torch.arange(clusters, device=x.device).expand(bsz, -1))
    return centres, assign


def cluster_means(x: torch.Tensor, clusters: int, noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(centres (B, c) indices into n, merged (B, c, C)): :func:`dpc_knn`'s clusters of ``x`` and each one's mean
    (SparseVLM's recycled tokens)."""
    centres, assign = dpc_knn(x, clusters, noise)
    bsz, _, dim = x.shape
    sums = torch.zeros(bsz, clusters, dim, device=x.device).scatter_add_(1, assign[..., None].expand(-1, -1, dim), x)
    counts = torch.zeros(bsz, clusters, device=x.device).scatter_add_(1, assign, torch.ones_like(x[..., 0]))
    return centres, sums / (counts[..., None] + 1e-6)


def in_slot(hidden: torch.Tensor, kept: torch.Tensor, centres: torch.Tensor, merged: torch.Tensor) -> RecycledSelection:
    """Kept visual tokens (B, k) plus one merged token in each cluster centre's slot (B, c) (``recycle="inplace"``):
    a selection in original order whose centre slots take the cluster means as new hidden states."""
    indices = torch.cat([kept, centres], dim=1)
    order = indices.argsort(dim=1)
    values = torch.cat([hidden.gather(1, kept[..., None].expand(-1, -1, hidden.shape[-1])), merged], dim=1)
    replace = torch.cat([torch.zeros_like(kept, dtype=torch.bool), torch.ones_like(centres, dtype=torch.bool)], dim=1)
    return RecycledSelection(
        indices.gather(1, order), values=values.gather(1, order[..., None].expand(-1, -1, values.shape[-1])), replace=replace.gather(1, order)
    )
