"""prunebench as an lmms-eval 0.7 model: a pruned VLM that lmms-eval's tasks and metrics evaluate.

Two routes, one class (:class:`PruneBenchLMM`):

* programmatic (what ``prunebench run`` does): the sweep loads the model once, builds one
  ``PruneBenchLMM.from_adapter(adapter, ...)`` and re-targets it per cell with :meth:`PruneBenchLMM.configure`,
  then hands the live object to ``lmms_eval.evaluator.simple_evaluate(model=lm, model_args=lm.model_args, ...)``;
* lmms-eval's own CLI, through the ``lmms_eval.models`` entry point declared in pyproject.toml
  (:func:`manifests`)::

      lmms-eval --model prunebench --model_args pretrained=tiny-llava,method=fastv,budget=64,budget_mode=final,fastv.layer=2 \\
          --tasks shapes --include_path $(python -c "import prunebench.suites.shapes as s; print(s.TASK_DIR)")

  ``pretrained`` is a prunebench model name (``toy-llava``, ``tiny-llava``), a hub id or a folder; ``layout``
  (``anyres`` | ``fivecrop`` | ``spatial``) picks LLaVA-NeXT's visual layout; ``vision_stop`` (``feature``, the
  default: the vision encoder runs up to its feature layer | ``full``: every layer, as stock transformers; same
  answers) how far the vision encoder runs; every other key that is not an
  argument of the class is a parameter of the method (``layer=3`` or ``fastv.layer=3``).

Every cell is one :class:`prunebench.spec.CellSpec` (method instance, budget, mode, scope, seed, batch size,
layout, preprocessing, dtype, attention implementation, device type, vision stop), validated once when it is built;
:meth:`PruneBenchLMM.configure` takes it (or the arguments to build one on this model).

This is the only prunebench module that imports lmms_eval at module level; model resolution lives in
:mod:`prunebench.resolve`, request visuals become engine samples in :mod:`prunebench.models.inputs`.

Model identity. lmms-eval's response cache keys every answer by ``str(model)`` + the model arguments. The
identity here holds the model and its weights' fingerprint (:mod:`prunebench.fingerprint`), the method,
**every** resolved method parameter (paper default, per-model table, overrides), the budget and its mode and
scope, the preprocessing, the layout, the seed, the batch size, the dtype, the attention implementation and the
device type, and ``str(lm)`` is that identity, so two budgets (or two
FastV layers, or a retrained checkpoint) can never share cached answers.

Requests are answered in batches through :meth:`prunebench.engine.Pruner.generate` (left padding). The batch
size is part of the identity: kernels of a padded batch can round differently from batch 1, and on a trained
model a near-tie can flip an answer. ``loglikelihood`` is not supported: pruning benchmarks are
generative; a task that needs it fails with a message saying so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from lmms_eval.api.model import lmms
from tqdm import tqdm

from prunebench.core import PruneBenchError, PruningMethod
from prunebench.engine import Pruner
from prunebench.fingerprint import model_fingerprint
from prunebench.models import DEFAULT_MODEL, load_model
from prunebench.models.inputs import flatten_visuals, question_text, sample_from_visuals
from prunebench.resolve import adapter_options, cell_spec, check_layout, family_of
from prunebench.spec import AVERAGE, NO_METHOD, CellSpec, device_type

log = logging.getLogger(__name__)

MODEL_ID = "prunebench"

__all__ = ["MODEL_ID", "NO_METHOD", "PruneBenchLMM", "RequestLog", "manifests"]


def manifests():
    """Entry point ``lmms_eval.models: prunebench`` (lmms-eval 0.7 ``ModelManifest``)."""
    # imported here, not above: importing lmms_eval.models loads every entry point, this module's included, so a
    # module-level import would run while this module is half-initialised (not a prunebench cycle)
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path="prunebench.lmms.PruneBenchLMM", aliases=("prunebench_llava",))]


@dataclass
class RequestLog:
    """What one answered request measured (kept by the model object for the sweep's record)."""

    task: str
    doc_id: int
    answer: str
    final_tokens: int
    layer_average_tokens: float
    kv_bytes: int
    batch_size: int


class PruneBenchLMM(lmms):
    """A prunebench-pruned VLM as an lmms-eval "simple" model."""

    is_simple = True

    def __init__(
        self,
        pretrained: str | None = None,
        method: str = NO_METHOD,
        budget: Any = None,
        budget_mode: str = AVERAGE,
        budget_scope: str = "image",
        preprocess: str = "hf",
        seed: int = 0,
        batch_size: int | str = 1,
        device: str | None = "cpu",
        dtype: str = "auto",
        max_new_tokens: int | None = None,
        max_batch_size: int | None = None,
        trust_remote_code: bool = False,
        cache_mb: float = 1024,
        adapter: Any = None,
        layout: str | None = None,
        vision_stop: str = "feature",
        **method_params: Any,
    ):
        super().__init__()
        if adapter is None:
            check_layout(family_of(pretrained or DEFAULT_MODEL), layout)
            adapter = load_model(
                pretrained or DEFAULT_MODEL,
                dtype=dtype,
                device=device or "cpu",
                trust_remote_code=trust_remote_code,
                **adapter_options(preprocess, layout, vision_stop),
            )
        elif layout is not None and getattr(adapter, "layout", None) != layout:
            raise PruneBenchError(f"layout={layout!r} but the given adapter was loaded with layout {getattr(adapter, 'layout', None)!r}")
        elif getattr(adapter, "vision_stop", "feature") != vision_stop:
            raise PruneBenchError(f"vision_stop={vision_stop!r} but the given adapter was loaded with vision_stop {adapter.vision_stop!r}")
        self.adapter = adapter
        self.model_name = pretrained or adapter.name
        self.layout = getattr(adapter, "layout", None)
        self.requested_dtype = dtype
        self._weights: dict[str, Any] | None = None
        self.batch_size_per_gpu = int(batch_size) if str(batch_size).isdigit() else 1
        self.max_new_tokens = max_new_tokens
        self.preprocess = getattr(adapter, "preprocess", preprocess)
        self.vision_stop = getattr(adapter, "vision_stop", vision_stop)
        self.progress = True  # a progress bar over the samples of each generate_until call
        self.progress_file: Any = None  # its stream (None: sys.stderr at the time of the call)
        # Preprocessed batches are the same for every cell of a sweep (same documents, same processor): keep them
        # (bounded; 0 disables) so images are rendered/decoded and preprocessed once per sweep, not once per cell.
        self._batches = _BatchCache(int(float(cache_mb) * 2**20))
        self.requests_log: list[RequestLog] = []
        self.timing = {"requests": 0, "wall_s": 0.0, "visual_s": 0.0, "prepare_s": 0.0, "generate_s": 0.0}
        prefix = f"{method}."
        params = {(k[len(prefix) :] if k.startswith(prefix) else k): v for k, v in method_params.items()}
        self.configure(method, budget, budget_mode=budget_mode, budget_scope=budget_scope, seed=seed, params=params)

    @classmethod
    def from_adapter(cls, adapter: Any, **kwargs: Any) -> PruneBenchLMM:
        """Wrap an already loaded adapter (the sweep loads the model once)."""
        return cls(pretrained=kwargs.pop("pretrained", adapter.name), adapter=adapter, **kwargs)

    # -- identity ------------------------------------------------------------------------------------------
    @property
    def attn_implementation(self) -> str | None:
        return self.adapter.describe().get("attn_implementation")

    def spec_for(self, method: str | PruningMethod, budget: Any, params: dict[str, Any] | None = None, **options: Any) -> CellSpec:
        """The spec of a cell on this model (its layout, preprocessing, dtype, attention and device; this batch size
        unless ``batch_size`` is given)."""
        defaults = {
            "batch_size": self.batch_size_per_gpu,
            "layout": self.layout,
            "preprocess": self.preprocess,
            "dtype": self.requested_dtype,
            "attn_implementation": self.attn_implementation,
            "device": self.adapter.device,
            "vision_stop": self.vision_stop,
        }
        return cell_spec(method, budget, model=self.model_name, family=self.adapter.family, params=params, **{**defaults, **options})

    def configure(self, spec: CellSpec | str | PruningMethod, budget: Any = None, **options: Any) -> PruneBenchLMM:
        """Point this model at another cell (a :class:`CellSpec`, or what :meth:`spec_for` builds one from); the
        loaded weights are kept."""
        if not isinstance(spec, CellSpec):
            spec = self.spec_for(spec, budget, **options)
        elif budget is not None or options:
            raise PruneBenchError("pass either a CellSpec or a method with its budget and options, not both")
        loaded = {
            "layout": self.layout,
            "preprocess": self.preprocess,
            "attn_implementation": self.attn_implementation,
            "device_type": device_type(self.adapter.device),
            "vision_stop": self.vision_stop,
        }
        wrong = {k: (getattr(spec, k), v) for k, v in loaded.items() if getattr(spec, k) is not None and getattr(spec, k) != v}
        if wrong:
            raise PruneBenchError(
                "the cell spec does not match the loaded model: " + ", ".join(f"{k} {asked!r} (loaded: {have!r})" for k, (asked, have) in wrong.items())
            )
        self.spec = spec
        self.method = spec.method
        self.budget = spec.budget
        self.budget_mode = spec.budget_mode
        self.budget_scope = spec.budget_scope
        self.seed = spec.seed
        self.batch_size_per_gpu = spec.batch_size
        self.requests_log = []
        self.timing = dict.fromkeys(self.timing, 0)
        return self

    @property
    def weights(self) -> dict[str, Any]:
        """The fingerprint of the weights behind ``model_name`` (computed once; cached by file size and mtime)."""
        if self._weights is None:
            self._weights = model_fingerprint(self.model_name)
        return self._weights

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that changes an answer (the response cache's and the results store's key material)."""
        return {
            "model": self.model_name,
            "weights": self.weights,
            "layout": self.layout,
            "method": self.method.name,
            "method_params": self.method.params(),
            "budget": self.budget,
            "budget_mode": self.budget_mode,
            "budget_scope": self.budget_scope,
            "preprocess": self.preprocess,
            "seed": self.seed,
            "dtype": str(self.adapter.dtype).replace("torch.", ""),
            "batch_size": self.spec.batch_size,
            "attn_implementation": self.attn_implementation,
            "device_type": self.spec.device_type,
            "vision_stop": self.vision_stop,
        }

    @property
    def model_args(self) -> str:
        """The identity as an lmms-eval ``--model_args`` string (what lmms-eval fingerprints and logs; the weights'
        fingerprint, batch size, attention and device are in ``str(lm)``, not here, so the string stays valid on
        lmms-eval's command line, which passes ``--batch_size`` and ``--device`` separately)."""
        ident = self.identity
        parts = [
            f"pretrained={ident['model']}",
            f"method={ident['method']}",
            f"budget={ident['budget'] if ident['budget'] is not None else 'none'}",
            f"budget_mode={ident['budget_mode']}",
            f"budget_scope={ident['budget_scope']}",
            f"preprocess={ident['preprocess']}",
            f"seed={ident['seed']}",
            f"dtype={ident['dtype']}",
        ]
        if ident["layout"] is not None:
            parts.append(f"layout={ident['layout']}")
        if ident["vision_stop"] != "feature":
            parts.append(f"vision_stop={ident['vision_stop']}")
        parts += [f"{ident['method']}.{k}={v}" for k, v in sorted(ident["method_params"].items())]
        return ",".join(parts)

    def __str__(self) -> str:
        return f"{MODEL_ID}({json.dumps(self.identity, sort_keys=True, default=str)})"

    __repr__ = __str__

    def make_sample(self, task: str, doc_id: int, question: str, visuals: list[Any]):
        """One engine sample from a request's visuals (see :func:`prunebench.models.inputs.sample_from_visuals`)."""
        return sample_from_visuals(self.adapter, task, doc_id, question, visuals)

    # -- lmms-eval interface -----------------------------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def clean(self) -> None:
        """lmms-eval calls this after every evaluation; the sweep reuses the loaded model, so keep it."""

    def loglikelihood(self, requests):
        raise NotImplementedError(
            "prunebench models answer generate_until tasks only (pruning is benchmarked on generated answers); "
            f"this task asks for loglikelihood. Use the task's generative variant or drop it from the suite ({len(requests)} requests)."
        )

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("prunebench models do not support multi-round generation; use single-round generate_until tasks")

    def generate_until(self, requests) -> list[str]:
        answers: list[str | None] = [None] * len(requests)
        order = _batch_order(requests)
        tasks = sorted({req.args[4] for req in requests})
        bar = tqdm(
            total=len(requests),
            desc=f"{','.join(tasks) if len(tasks) <= 2 else f'{len(tasks)} tasks'} {self.spec.label}",
            unit="sample",
            leave=False,
            mininterval=1.0,
            disable=not self.progress,
            file=self.progress_file,
        )
        wall_start = time.perf_counter()
        # closing(bar): a method that raises must not leave the bar open, or every later bar is drawn one line lower
        with contextlib.closing(bar), Pruner(self.adapter, self.spec.method, self.spec.budget, **self.spec.pruner_options()) as pruner:
            for same_task in order:
                for start in range(0, len(same_task), self.batch_size):
                    chunk = same_task[start : start + self.batch_size]
                    t0 = time.perf_counter()
                    key = tuple((requests[i].args[4], requests[i].args[3], requests[i].args[0]) for i in chunk)
                    batch = self._batches.get(key)
                    if batch is None:
                        samples = []
                        for i in chunk:
                            context, _gen, doc_to_visual, doc_id, task, split = requests[i].args
                            visuals = flatten_visuals(doc_to_visual(self.task_dict[task][split][doc_id]))
                            samples.append(self.make_sample(task, doc_id, question_text(context), visuals))
                        t1 = time.perf_counter()
                        batch = self.adapter.prepare(samples)
                        self._batches.put(key, batch)
                        t2 = time.perf_counter()
                    else:
                        t0 = t1 = t2 = time.perf_counter()  # cache hits cost nothing in data / preprocessing time
                    samples = batch.samples
                    gen_kwargs = dict(requests[chunk[0]].args[1] or {})
                    max_new = int(self.max_new_tokens or gen_kwargs.get("max_new_tokens") or gen_kwargs.get("max_gen_toks") or 32)
                    out = pruner.generate(batch, max_new_tokens=max_new)
                    t3 = time.perf_counter()
                    until = gen_kwargs.get("until") or []
                    until = [until] if isinstance(until, str) else list(until)
                    # samples of different visual layouts (NeXT crops, video) run as separate groups with their own stats
                    group_of = [(out.stats, len(chunk))] * len(chunk)
                    for ran in getattr(out, "groups", None) or []:
                        for index in ran.indices:
                            group_of[index] = (ran.stats, len(ran.indices))
                    for i, sample, text, (stats, size) in zip(chunk, samples, out.texts, group_of):
                        text = _truncate(text, until)
                        answers[i] = text
                        self.requests_log.append(
                            RequestLog(
                                sample.meta["task"], sample.meta["doc_id"], text, stats.final_tokens, stats.average_tokens, stats.kv_bytes // size, len(chunk)
                            )
                        )
                    self.timing["visual_s"] += t1 - t0
                    self.timing["prepare_s"] += t2 - t1
                    self.timing["generate_s"] += t3 - t2
                    self.timing["requests"] += len(chunk)
                    bar.update(len(chunk))
        self.timing["wall_s"] += time.perf_counter() - wall_start
        return answers  # type: ignore[return-value]


class _BatchCache:
    """Prepared batches by (task, doc id, context) of their requests, least recently used out beyond ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.items: OrderedDict[tuple, Any] = OrderedDict()
        self.sizes: dict[tuple, int] = {}
        self.bytes = 0

    def get(self, key: tuple) -> Any:
        batch = self.items.get(key)
        if batch is not None:
            self.items.move_to_end(key)
        return batch

    def put(self, key: tuple, batch: Any) -> None:
        size = sum(t.numel() * t.element_size() for t in batch.inputs.values() if hasattr(t, "numel"))
        if size > self.max_bytes:
            return
        self.items[key] = batch
        self.sizes[key] = size
        self.bytes += size
        while self.bytes > self.max_bytes:
            old, _ = self.items.popitem(last=False)
            self.bytes -= self.sizes.pop(old)


def _batch_order(requests) -> list[list[int]]:
    """Request indices grouped by (task, generation kwargs), longest context first inside a group."""
    groups: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
        _context, gen_kwargs, _v, _d, task, _s = req.args
        groups.setdefault(f"{task}|{json.dumps(gen_kwargs, sort_keys=True, default=str)}", []).append(i)
    return [sorted(idx, key=lambda i: -len(requests[i].args[0])) for idx in groups.values()]


def _truncate(text: str, until: Iterable[str]) -> str:
    for stop in until:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text
