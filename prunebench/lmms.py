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
  (``anyres`` | ``fivecrop`` | ``spatial``) picks LLaVA-NeXT's visual layout; every other key that is not an
  argument of the class is a parameter of the method (``layer=3`` or ``fastv.layer=3``).

Model identity. lmms-eval's response cache keys every answer by ``str(model)`` + the model arguments. The
identity here holds the model and its weights' fingerprint (:mod:`prunebench.fingerprint`), the method,
**every** resolved method parameter (paper default, per-model table, overrides), the budget and its mode and
scope, the preprocessing, the layout and the seed, and ``str(lm)`` is that identity, so two budgets (or two
FastV layers, or a retrained checkpoint) can never share cached answers.

Requests are answered in batches through :meth:`prunebench.engine.Pruner.generate` (left padding; the engine
guarantees batched outputs equal batch-1 outputs). ``loglikelihood`` is not supported: pruning benchmarks are
generative; a task that needs it fails with a message saying so.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from dataclasses import dataclass
from typing import Any, Iterable

from lmms_eval.api.model import lmms

from prunebench.core import PlanContext, PruneBenchError, PruningMethod

log = logging.getLogger(__name__)

MODEL_ID = "prunebench"
NO_METHOD = "none"


def manifests():
    """Entry point ``lmms_eval.models: prunebench`` (lmms-eval 0.7 ``ModelManifest``)."""
    from lmms_eval.models.registry_v2 import ModelManifest

    return [ModelManifest(model_id=MODEL_ID, simple_class_path="prunebench.lmms.PruneBenchLMM", aliases=("prunebench_llava",))]


class NoPruning(PruningMethod):
    """The unpruned model (method ``none``): every stage keeps every token."""

    name = NO_METHOD
    stages = ()

    def plan(self, budget: int, ctx: PlanContext):
        return ctx.plan()


def adapter_options(preprocess: str = "hf", layout: str | None = None) -> dict[str, Any]:
    """``load_model`` options for the non-default preprocessing / layout (the defaults are the adapters' own)."""
    options: dict[str, Any] = {}
    if preprocess != "hf":
        options["preprocess"] = preprocess
    if layout is not None:
        options["layout"] = layout
    return options


def check_layout(family: str, layout: str | None) -> None:
    if layout is not None and family != "llava_next":
        raise PruneBenchError(f"layout={layout!r} applies to LLaVA-NeXT models only; this model is {family or 'of an unknown family'}. "
                              "Drop the layout option")


def resolve(method: str, model: str, family: str, params: dict[str, Any] | None = None) -> PruningMethod:
    """The method instance for ``method`` on ``model``: paper defaults, then the per-model table, then ``params``."""
    if method == NO_METHOD:
        if params:
            raise PruneBenchError(f"method 'none' (the unpruned baseline) takes no parameters, got {sorted(params)}")
        return NoPruning()
    from prunebench.models.defaults import resolve_method

    return resolve_method(method, model, family, **(params or {}))


def _budget(value: Any) -> int | None:
    if value is None or (isinstance(value, str) and value.lower() in ("", "none", "null", "all")):
        return None
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise PruneBenchError(f"budget must be a positive integer number of visual tokens or 'none', got {value!r}")


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

    def __init__(self, pretrained: str | None = None, method: str = NO_METHOD, budget: Any = None, budget_mode: str = "average",
                 budget_scope: str = "image", preprocess: str = "hf", seed: int = 0, batch_size: int | str = 1,
                 device: str | None = "cpu", dtype: str = "auto", max_new_tokens: int | None = None,
                 max_batch_size: int | None = None, trust_remote_code: bool = False, cache_mb: float = 1024, adapter: Any = None,
                 layout: str | None = None, **method_params: Any):
        super().__init__()
        from prunebench.models import DEFAULT_MODEL

        if adapter is None:
            from prunebench.models import load_model
            from prunebench.runner.sweep import family_of

            check_layout(family_of(pretrained or DEFAULT_MODEL), layout)
            adapter = load_model(pretrained or DEFAULT_MODEL, dtype=dtype, device=device or "cpu", trust_remote_code=trust_remote_code,
                                 **adapter_options(preprocess, layout))
        elif layout is not None and getattr(adapter, "layout", None) != layout:
            raise PruneBenchError(f"layout={layout!r} but the given adapter was loaded with layout {getattr(adapter, 'layout', None)!r}")
        self.adapter = adapter
        self.model_name = pretrained or adapter.name
        self.layout = getattr(adapter, "layout", None)
        self._weights: dict[str, Any] | None = None
        self.batch_size_per_gpu = int(batch_size) if str(batch_size).isdigit() else 1
        self.max_new_tokens = max_new_tokens
        self.preprocess = getattr(adapter, "preprocess", preprocess)
        self.progress = True  # a progress bar over the samples of each generate_until call
        self.progress_file: Any = None  # its stream (None: sys.stderr at the time of the call)
        # Preprocessed batches are the same for every cell of a sweep (same documents, same processor): keep them
        # (bounded; 0 disables) so images are rendered/decoded and preprocessed once per sweep, not once per cell.
        self._batches = _BatchCache(int(float(cache_mb) * 2**20))
        self.requests_log: list[RequestLog] = []
        self.timing = {"requests": 0, "wall_s": 0.0, "visual_s": 0.0, "prepare_s": 0.0, "generate_s": 0.0}
        prefix = f"{method}."
        params = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in method_params.items()}
        self.configure(method, budget, budget_mode=budget_mode, budget_scope=budget_scope, seed=seed, params=params)

    @classmethod
    def from_adapter(cls, adapter: Any, **kwargs: Any) -> "PruneBenchLMM":
        """Wrap an already loaded adapter (the sweep loads the model once)."""
        return cls(pretrained=kwargs.pop("pretrained", adapter.name), adapter=adapter, **kwargs)

    # -- identity ------------------------------------------------------------------------------------------
    def configure(self, method: str | PruningMethod, budget: Any, budget_mode: str = "average", budget_scope: str = "image",
                  seed: int = 0, params: dict[str, Any] | None = None) -> "PruneBenchLMM":
        """Point this model at another (method, budget) cell; the loaded weights are kept."""
        if budget_mode not in ("average", "final"):
            raise PruneBenchError(f"budget_mode must be 'average' or 'final', got {budget_mode!r}")
        if isinstance(method, PruningMethod):
            if params:
                raise PruneBenchError("pass either a method instance or a method name with params, not both")
            self.method = method
        else:
            self.method = resolve(method, self.model_name, self.adapter.family, params)
        self.budget = _budget(budget)
        if self.budget is not None and isinstance(self.method, NoPruning):
            raise PruneBenchError("method 'none' is the unpruned model; it takes no budget (use budget=none)")
        self.budget_mode = budget_mode
        self.budget_scope = budget_scope
        self.seed = int(seed)
        self.requests_log = []
        self.timing = dict.fromkeys(self.timing, 0)
        return self

    @property
    def weights(self) -> dict[str, Any]:
        """The fingerprint of the weights behind ``model_name`` (computed once; cached by file size and mtime)."""
        if self._weights is None:
            from prunebench.fingerprint import model_fingerprint

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
        }

    @property
    def model_args(self) -> str:
        """The identity as an lmms-eval ``--model_args`` string (what lmms-eval fingerprints and logs; the weights'
        fingerprint is in ``str(lm)``, not here, so the string stays valid on lmms-eval's command line)."""
        ident = self.identity
        parts = [f"pretrained={ident['model']}", f"method={ident['method']}", f"budget={ident['budget'] if ident['budget'] is not None else 'none'}",
                 f"budget_mode={ident['budget_mode']}", f"budget_scope={ident['budget_scope']}", f"preprocess={ident['preprocess']}",
                 f"seed={ident['seed']}", f"dtype={ident['dtype']}"]
        if ident["layout"] is not None:
            parts.append(f"layout={ident['layout']}")
        parts += [f"{ident['method']}.{k}={v}" for k, v in sorted(ident["method_params"].items())]
        return ",".join(parts)

    def __str__(self) -> str:
        return f"{MODEL_ID}({json.dumps(self.identity, sort_keys=True, default=str)})"

    __repr__ = __str__

    def _sample(self, task: str, doc_id: int, question: str, visuals: list[Any]):
        """One engine sample from a request's visuals: one image, or a video (a file path or a list of frames)."""
        from PIL import Image

        from prunebench.adapters.base import Sample

        meta = {"task": task, "doc_id": doc_id}
        sid = f"{task}/{doc_id}"
        video_ok = "video" in getattr(self.adapter, "budget_scopes", ())
        if len(visuals) == 1 and isinstance(visuals[0], Image.Image):
            return Sample(id=sid, question=question, image=visuals[0], meta=meta)
        if video_ok and len(visuals) == 1 and isinstance(visuals[0], str):
            frames, fps = _video_frames(visuals[0])
            return Sample(id=sid, question=question, video=frames, meta={**meta, "fps": fps})
        if video_ok and len(visuals) > 1 and all(isinstance(v, Image.Image) for v in visuals):
            return Sample(id=sid, question=question, video=list(visuals), meta=meta)
        kinds = sorted({type(v).__name__ for v in visuals}) or ["nothing"]
        raise PruneBenchError(
            f"task {task} doc {doc_id} gives {len(visuals)} visual(s) ({', '.join(kinds)}); the {self.adapter.family} adapter takes "
            + ("one image or one video per request" if video_ok else "exactly one image per request (use a video-capable model such as Video-LLaVA for video tasks)")
        )

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
        from tqdm import tqdm

        from prunebench.engine import Pruner

        answers: list[str | None] = [None] * len(requests)
        order = _batch_order(requests)
        bar = tqdm(total=len(requests), desc=f"{self.method.name}@{self.budget if self.budget is not None else 'all'}",
                   unit="sample", leave=False, mininterval=1.0, disable=not self.progress, file=self.progress_file)
        wall_start = time.perf_counter()
        # closing(bar): a method that raises must not leave the bar open, or every later bar is drawn one line lower
        with contextlib.closing(bar), Pruner(self.adapter, self.method, self.budget, budget_mode=self.budget_mode, seed=self.seed,
                                             budget_scope=self.budget_scope) as pruner:
            for same_task in order:
                for start in range(0, len(same_task), self.batch_size):
                    chunk = same_task[start:start + self.batch_size]
                    t0 = time.perf_counter()
                    key = tuple((requests[i].args[4], requests[i].args[3], requests[i].args[0]) for i in chunk)
                    batch = self._batches.get(key)
                    if batch is None:
                        samples = []
                        for i in chunk:
                            context, _gen, doc_to_visual, doc_id, task, split = requests[i].args
                            visuals = _flatten(doc_to_visual(self.task_dict[task][split][doc_id]))
                            question = context.replace("<image>", "").replace("<video>", "").strip()
                            samples.append(self._sample(task, doc_id, question, visuals))
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
                        self.requests_log.append(RequestLog(sample.meta["task"], sample.meta["doc_id"], text, stats.final_tokens,
                                                            stats.average_tokens, stats.kv_bytes // size, len(chunk)))
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
        from collections import OrderedDict

        self.max_bytes = max_bytes
        self.items: "OrderedDict[tuple, Any]" = OrderedDict()
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


def _video_frames(path: str, count: int = 8) -> tuple[list[Any], float | None]:
    """``count`` uniformly spaced RGB frames of a video file (PyAV) and the rate of those sampled frames
    (``count`` / clip seconds, what qwen-vl-utils hands Qwen2.5-VL for its temporal M-RoPE positions; None
    when the container gives no duration)."""
    try:
        import av
    except ImportError:
        raise PruneBenchError(f"video {path!r} needs PyAV to decode: pip install av") from None
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [f.to_image() for f in container.decode(video=0)]
        rate = float(stream.average_rate) if stream.average_rate else None
    if not frames:
        raise PruneBenchError(f"no frames decoded from {path!r}")
    step = len(frames) / count
    picked = [frames[min(int(i * step), len(frames) - 1)].convert("RGB") for i in range(count)]
    return picked, (count * rate / len(frames) if rate else None)


def _batch_order(requests) -> list[list[int]]:
    """Request indices grouped by (task, generation kwargs), longest context first inside a group."""
    groups: dict[str, list[int]] = {}
    for i, req in enumerate(requests):
        context, gen_kwargs, _v, _d, task, _s = req.args
        groups.setdefault(f"{task}|{json.dumps(gen_kwargs, sort_keys=True, default=str)}", []).append(i)
    return [sorted(idx, key=lambda i: -len(requests[i].args[0])) for idx in groups.values()]


def _flatten(visuals: Any) -> list[Any]:
    if visuals is None:
        return []
    if not isinstance(visuals, (list, tuple)):
        return [visuals]
    flat: list[Any] = []
    for v in visuals:
        flat.extend(_flatten(v) if isinstance(v, (list, tuple)) else [v])
    return flat


def _truncate(text: str, until: Iterable[str]) -> str:
    for stop in until:
        if stop and stop in text:
            text = text.split(stop, 1)[0]
    return text
