"""Batch invariance on the trained toy model: a sample's kept tokens and answer do not depend on its batch.

The tiny random models of the conformance kit hide this (their scores are far from ties); toy-llava, trained on
the shapes world, ranks hundreds of near-equal background patches, so a last-bit difference in a score changes
which ones VisPruner keeps. Measured on the shapes suite (first 40 questions of each of the 6 tasks, budgets
32/64/128, batch 1 vs 8, samples built as ``PruneBenchLMM.generate_until`` builds them), before the fix
(kept sets differing / answers differing, of 240 per budget):

    random, fastv, fastervlm, sparsevlm, visionzip, divprune, hiprune, learnpruner: 0 / 0 at every budget
    vispruner: 8 / 0 at each of 32, 64, 128 (shapes_attribute 11, 18, 25, 27 and 4 more)

Cause: ``Captured.logits`` (the [CLS] attention every ViT-attention method reads) was one batched ``matmul`` over
the attention kernel's strided key view; at batch 1 torch folds the batch into the heads without a copy, at
batch > 1 it copies first, and the two kernels round the 16-term dot products differently (|diff| ~1e-8 on
probabilities ~1e-3). The ViT features and queries were bitwise equal. Now one matmul per sample: 0 / 0 for
every method. ``Captured.received`` (Qwen's importance) had the same flaw another way: its query chunks were
sized by the batch, so a sample's sums were grouped, hence rounded, differently; now chunked per sample.
FastV/SparseVLM/LearnPruner select in the LLM, where left padding changes the sequence length; their selections
and answers were equal anyway (the padding is masked and positions come from the mask).

The questions below are the four attribute questions whose VisPruner kept set changed with the batch at budget
64 before the fix, and the first four count questions.
"""

from __future__ import annotations

import json

import pytest
import torch

from prunebench.adapters.base import Sample
from prunebench.attention import attention_probe
from prunebench.core import InfeasibleBudget
from prunebench.engine import Pruner
from prunebench.models import load_model
from prunebench.resolve import resolve
from prunebench.suites.shapes import TASK_DIR
from prunebench.toy.world import render

METHODS = ("random", "fastv", "fastervlm", "sparsevlm", "visionzip", "vispruner", "divprune", "hiprune", "learnpruner")
QUESTIONS = {"shapes_attribute": (11, 18, 25, 27), "shapes_count": (0, 1, 2, 3)}
BUDGET = 64
# Differences (kept sets, answers) at batch 1 vs 8 still allowed per method: none; a residual that is not ours
# (kernel rounding we cannot control) would be entered here with its measured count and cause.
RESIDUAL: dict[str, tuple[int, int]] = {}


@pytest.fixture(scope="module")
def toy():
    return load_model("toy-llava")


def lmms_samples() -> list[Sample]:
    """The questions as ``prunebench.models.inputs.sample_from_visuals`` builds them (id ``task/doc_id``: the random generators' seed)."""
    samples = []
    for task, doc_ids in QUESTIONS.items():
        lines = (TASK_DIR / f"test_{task.removeprefix('shapes_')}.jsonl").read_text().splitlines()
        for doc_id in doc_ids:
            doc = json.loads(lines[doc_id])
            samples.append(Sample(id=f"{task}/{doc_id}", question=doc["question"], image=render(doc), meta={"task": task, "doc_id": doc_id}))
    return samples


def budget_mode(adapter, method) -> str:
    """The demo's layer-average mode where the method can meet it, else final (FastV/SparseVLM at 64 of 576)."""
    try:
        with Pruner(adapter, method, BUDGET) as pruner:
            pruner.plan_for(576)
        return "average"
    except InfeasibleBudget:
        return "final"


def run(adapter, method, samples, batch_size: int) -> dict[str, tuple[str, dict[str, list[int]]]]:
    """Each sample's answer and kept indices per stage, generated in batches of ``batch_size``."""
    out: dict[str, tuple[str, dict[str, list[int]]]] = {}
    with Pruner(adapter, method, BUDGET, budget_mode=budget_mode(adapter, method), seed=0) as pruner:
        for start in range(0, len(samples), batch_size):
            chunk = samples[start : start + batch_size]
            result = pruner.generate(adapter.prepare(chunk), max_new_tokens=4)
            for row, sample in enumerate(chunk):
                out[sample.id] = (result.texts[row], {stage: kept[row].tolist() for stage, kept in result.stats.kept.items()})
    return out


@pytest.mark.parametrize("name", METHODS)
def test_kept_sets_and_answers_do_not_depend_on_the_batch(toy, name):
    method = resolve(name, "toy-llava", "llava")
    samples = lmms_samples()
    alone, batched = run(toy, method, samples, 1), run(toy, method, samples, 8)
    kept = [sid for sid in alone if alone[sid][1] != batched[sid][1]]
    answers = [sid for sid in alone if alone[sid][0] != batched[sid][0]]
    allowed_kept, allowed_answers = RESIDUAL.get(name, (0, 0))
    assert len(kept) <= allowed_kept, f"{name}@{BUDGET}: kept sets differ at batch 1 vs 8 for {kept}"
    assert len(answers) <= allowed_answers, f"{name}@{BUDGET}: answers differ at batch 1 vs 8 for {answers}"


def test_vit_cls_attention_of_a_sample_is_bitwise_the_same_alone_and_in_a_batch(toy):
    """The signal itself: [CLS] attention and received attention from captured q/k, batch of 8 vs each alone."""
    samples = lmms_samples()
    layer = toy.feature_layer
    with torch.inference_mode(), attention_probe(toy.model):
        batched = toy.encode(toy.prepare(samples), (layer,))
        for row, sample in enumerate(samples):
            alone = toy.encode(toy.prepare([sample]), (layer,))
            assert torch.equal(batched.features[row], alone.features[0])  # the tower itself is batch-invariant
            assert torch.equal(batched.cls_attention()[row], alone.cls_attention()[0]), sample.id
            assert torch.equal(batched.received_attention()[row], alone.received_attention()[0]), sample.id
