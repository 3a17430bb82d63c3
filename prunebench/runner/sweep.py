"""A sweep: methods x budgets on one model and one suite, evaluated by lmms-eval, recorded cell by cell.

Work done once per sweep: load the model, index lmms-eval's tasks, pick the latency probe samples, and find or
evaluate the unpruned baseline (the run folder first, then the shared baseline cache
``<results>/.baselines``, then an evaluation whose record lands in both). Per cell:

1. latency probe: ``warmup`` calls, then ``samples`` fixed samples at batch size 1 (the same samples for every
   cell), each generating exactly ``new_tokens`` tokens; median and p90 of the engine's split timings. An
   infeasible budget surfaces here (``core.InfeasibleBudget``) before any evaluation;
2. FLOPs of one probe sample's prefill with ``FlopCounterMode``, counted once per distinct per-layer token
   pattern in this process, plus the analytic count; KV bytes measured and analytic;
3. the suite through ``lmms_eval.evaluator.simple_evaluate`` with the live :class:`prunebench.lmms.PruneBenchLMM`
   (batched); scores, RelAcc and agreement against the baseline;
4. one atomic record (``ResultStore.put``): done, failed (with traceback) or infeasible (with the reason).

A rerun skips cells whose record is done or infeasible and retries failed ones; a SIGKILL loses at most the
cell in flight, because nothing else is ever half-written.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import math
import platform
import resource
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from prunebench.core import BudgetError, InfeasibleBudget, PruneBenchError
from prunebench.store import BASELINE_METHOD, ResultStore, cell_key

log = logging.getLogger("prunebench.runner")
FLOPS_NOTE = "per sample: first probe sample, batch 1, prefill up to the first token (vision + LLM + lm_head at 1 position)"


@dataclass
class Cell:
    method: str
    budget: int | None
    params: dict[str, Any]
    key: str
    fields: dict[str, Any]

    @property
    def label(self) -> str:
        return "none (unpruned)" if self.method == BASELINE_METHOD else f"{self.method}@{self.budget}"


@dataclass
class SweepResult:
    store: ResultStore
    cells: list[Cell]
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished before this run
    reused: list[str] = field(default_factory=list)  # baselines taken from the shared baseline cache
    leaderboard_paths: list[Path] = field(default_factory=list)
    leaderboard: Any = None


# -- planning -------------------------------------------------------------------------------------------------
def default_output(config: dict[str, Any], model: str) -> Path:
    name = f"{Path(model).name}_{config['suite'] if '/' not in str(config['suite']) else Path(config['suite']).stem}_{config['budget_mode']}"
    return Path("results") / name


def family_of(model: str) -> str:
    from prunebench.models import DEFAULT_MODEL, TINY_MODELS

    if model in TINY_MODELS:
        return TINY_MODELS[model]
    if model == DEFAULT_MODEL:
        return "llava"
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model).model_type
    except Exception:  # the model load reports it properly later
        return ""


def plan_cells(config: dict[str, Any], model: str, suite_tasks: list[str], generation_kwargs: dict[str, Any] | None = None) -> list[Cell]:
    """The baseline and every method x budget cell, each with its resolved parameters and key.

    The key covers everything that changes a cell's numbers: model, suite tasks and their generation overrides,
    limit, seed, preprocessing, dtype, device, the latency protocol, method, every method parameter, budget,
    budget mode and scope (not the batch size: batched outputs equal batch-1 outputs by the engine's contract).
    """
    from prunebench.lmms import resolve

    family = family_of(model)
    common = {
        "model": model, "suite": config["suite"], "task_names": sorted(suite_tasks), "limit": config["limit"],
        "seed": config["seed"], "preprocess": config["preprocess"], "dtype": config["dtype"], "device": config["device"],
        "generation_kwargs": dict(generation_kwargs or {}), "latency": dict(config["latency"]),
    }
    cells = [_cell(BASELINE_METHOD, None, {}, {**common, "budget_mode": None, "budget_scope": None})]
    for method in config["methods"]:
        params = resolve(method, model, family, dict(config["method_args"].get(method, {}))).params()
        for budget in config["budgets"]:
            cells.append(_cell(method, budget, params, {**common, "budget_mode": config["budget_mode"], "budget_scope": config["budget_scope"]}))
    return cells


def _cell(method: str, budget: int | None, params: dict[str, Any], common: dict[str, Any]) -> Cell:
    fields = {**common, "method": method, "method_params": params, "budget": budget}
    return Cell(method, budget, params, cell_key(fields), fields)


# -- environment ------------------------------------------------------------------------------------------------
def environment(adapter: Any) -> dict[str, Any]:
    import torch
    import transformers

    from prunebench import __version__

    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
                "prunebench": __version__}
    try:
        from importlib.metadata import version

        versions["lmms_eval"] = version("lmms_eval")
    except Exception:
        versions["lmms_eval"] = None
    info = adapter.describe()
    return {"attn_implementation": info.get("attn_implementation"), "device": info.get("device"), "dtype": info.get("dtype"),
            "versions": versions, "git": git_commit(), "host": platform.node(), "threads": torch.get_num_threads()}


def git_commit() -> str | None:
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("-dirty" if dirty else "")) if commit else None


def peak_memory_mb(device: Any) -> tuple[float, str]:
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "cuda max_memory_allocated (this cell)"
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20, "process peak RSS (ru_maxrss, whole run so far)"


@functools.lru_cache(maxsize=8)
def cached_task_manager(include_path: tuple[str, ...] = ()) -> Any:
    """lmms-eval's task index (a few seconds to build), shared by every sweep in this process."""
    from lmms_eval.tasks import TaskManager

    return TaskManager("WARNING", include_path=list(include_path) or None)


# -- measurements -----------------------------------------------------------------------------------------------
def _stat(values: list[float]) -> dict[str, float] | None:
    values = sorted(v for v in values if v is not None and not math.isnan(v))
    if not values:
        return None
    def q(p: float) -> float:
        pos = (len(values) - 1) * p
        lo, hi = math.floor(pos), math.ceil(pos)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)
    return {"median": q(0.5), "p90": q(0.9), "n": len(values)}


def latency_probe(adapter: Any, method: Any, budget: int | None, mode: str, seed: int, samples: list[Any], warmup: int,
                  new_tokens: int, scope: str = "image") -> tuple[dict[str, Any], list[Any]]:
    """Batch-1 timings over ``samples`` after ``warmup`` calls; returns (latency_ms record, per-sample Stats)."""
    from prunebench.engine import Pruner

    batches = [adapter.prepare([s]) for s in samples]
    stats = []
    with Pruner(adapter, method, budget, budget_mode=mode, seed=seed, budget_scope=scope) as pruner:
        for i in range(warmup):
            pruner.generate(batches[i % len(batches)], max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        for batch in batches:
            stats.append(pruner.generate(batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens).stats)
    keys = {"prefill": "prefill_ms", "decode_per_token": "decode_ms_per_token", "total": "total_ms", "vision": "vision_ms",
            "select": "select_ms", "generate": "generate_ms"}
    record = {name: _stat([s.timings_ms.get(k, float("nan")) for s in stats]) for name, k in keys.items()}
    return record, stats


def probe_samples(task_manager: Any, tasks: list[str], count: int, make_sample: Callable[..., Any]) -> list[Any]:
    """The first ``count`` documents of the suite, round-robin over its tasks, as engine samples.

    ``make_sample(task, doc_index, question, visuals)`` builds one (``PruneBenchLMM._sample``: image or video).
    """
    from lmms_eval.tasks import get_task_dict

    from prunebench.lmms import _flatten

    leaves: list[tuple[str, Any]] = []

    def walk(d: dict) -> None:
        for name, obj in d.items():
            if isinstance(obj, dict):
                walk(obj)
            elif isinstance(obj, tuple):
                if obj[1] is not None:
                    leaves.append((name if isinstance(name, str) else str(name), obj[1]))
            elif obj is not None:
                leaves.append((getattr(name, "group_name", name) if not isinstance(name, str) else name, obj))

    walk(get_task_dict(tasks, task_manager))
    if not leaves:
        raise PruneBenchError(f"no tasks found for {tasks}")
    docs = [(name, task, list(task.eval_docs)) for name, task in leaves]
    out: list[Any] = []
    index = 0
    while len(out) < count and any(index < len(d) for _, _, d in docs):
        for name, task, items in docs:
            if index < len(items) and len(out) < count:
                doc = items[index]
                visuals = _flatten(task.doc_to_visual(doc))
                text = task.doc_to_text(doc)
                question = str(text).replace("<image>", "").replace("<video>", "").strip()
                out.append(make_sample(name, index, question, visuals))
        index += 1
    return out


# -- scores -----------------------------------------------------------------------------------------------------
def task_scores(results: dict[str, Any], tasks: list[str]) -> dict[str, dict[str, Any]]:
    """``{task: {metric, score, n}}`` for each leaf task lmms-eval reported (groups are expanded)."""
    out = {}
    n_samples = results.get("n-samples", {})
    for task, metrics in results.get("results", {}).items():
        if task in results.get("group_subtasks", {}) and results["group_subtasks"][task]:
            continue  # a group: its leaves are reported
        for name, value in metrics.items():
            if name == "alias" or "stderr" in name or not isinstance(value, (int, float)):
                continue
            metric = name.split(",")[0]
            out[task] = {"metric": metric, "score": float(value), "n": (n_samples.get(task) or {}).get("effective")}
            break
    return out


def sample_rows(results: dict[str, Any], scores: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for task, samples in (results.get("samples") or {}).items():
        metric = scores.get(task, {}).get("metric")
        for s in samples:
            resp = s.get("resps") or [[""]]
            raw = resp[0][0] if isinstance(resp[0], list) else resp[0]
            filtered = s.get("filtered_resps") or [raw]
            rows.append({"task": task, "doc_id": s.get("doc_id"), "target": s.get("target"), "answer": raw,
                         "filtered": filtered[0], "score": s.get(metric) if metric else None})
    return rows


def relacc_and_agreement(tasks: dict[str, dict[str, Any]], rows: list[dict[str, Any]], baseline: dict[str, Any] | None,
                         baseline_rows: list[dict[str, Any]]) -> tuple[float | None, float | None]:
    if baseline is None:
        return None, None
    ratios = []
    for task, entry in tasks.items():
        base = (baseline.get("tasks") or {}).get(task, {}).get("score")
        entry["baseline"] = base
        if base:
            ratios.append(entry["score"] / base)
    relacc = sum(ratios) / len(ratios) if ratios else None
    ref = {(r["task"], r["doc_id"]): r["answer"] for r in baseline_rows}
    same = [r["answer"] == ref[(r["task"], r["doc_id"])] for r in rows if (r["task"], r["doc_id"]) in ref]
    return relacc, (sum(same) / len(same) if same else None)


# -- the sweep --------------------------------------------------------------------------------------------------
class Sweep:
    """Runs a resolved config (see :mod:`prunebench.runner.config`)."""

    def __init__(self, config: dict[str, Any], progress: bool = True, echo: Callable[[str], None] | None = None):
        from prunebench.models import DEFAULT_MODEL
        from prunebench.suites.registry import load_suite

        self.config = dict(config)
        self.model_name = config["model"] or DEFAULT_MODEL
        self.config["model"] = self.model_name
        for module in config.get("plugins") or []:
            __import__(module)
        self.suite = load_suite(config["suite"], config["tasks"])
        self.suite.generation_kwargs.update(config.get("gen_kwargs") or {})
        self.output = Path(config["output"]) if config["output"] else default_output(config, self.model_name)
        self.config["output"] = str(self.output)
        self.store = ResultStore(self.output)
        baseline_dir = config.get("baseline_cache") or (self.output.parent / ".baselines")
        self.baselines = ResultStore(baseline_dir)
        self.progress = progress
        self.echo = echo or _write
        self.cells = plan_cells(self.config, self.model_name, self.suite.tasks, self.suite.generation_kwargs)
        self._flops_cache: dict[tuple, Any] = {}
        self._adapter = None
        self._lm = None
        self._task_manager = None
        self._probe: list[Any] | None = None
        self._env: dict[str, Any] | None = None

    # -- bookkeeping ---------------------------------------------------------------------------------------------
    def write_plan(self) -> None:
        from prunebench.runner.config import to_yaml
        from prunebench.store import atomic_write_text

        self.store.write_config(to_yaml({**self.config, "suite_detail": self.suite.to_dict()}))
        plan = [{"key": c.key, "label": c.label, "method": c.method, "budget": c.budget} for c in self.cells]
        atomic_write_text(self.output / "plan.json", json.dumps(plan, indent=1))

    def pending(self) -> list[Cell]:
        return [c for c in self.cells if not self.store.is_done(c.key)]

    # -- lazily loaded, once per sweep ---------------------------------------------------------------------------
    @property
    def adapter(self):
        if self._adapter is None:
            from prunebench.models import load_model

            options = {"preprocess": self.config["preprocess"]} if self.config["preprocess"] != "hf" else {}
            self._adapter = load_model(self.model_name, dtype=self.config["dtype"], device=self.config["device"], seed=self.config["seed"], **options)
            log.info("loaded %s (%s)", self.model_name, self._adapter.describe())
        return self._adapter

    @property
    def task_manager(self):
        if self._task_manager is None:
            include = tuple(dict.fromkeys([*self.suite.include_path, *self.config["include_path"]]))
            self._task_manager = cached_task_manager(include)
            missing = [t for t in self.suite.tasks if t not in self._task_manager.all_tasks]
            if missing:
                raise PruneBenchError(f"lmms-eval does not know task(s) {missing}; check the names (`lmms-eval tasks list`) "
                                      "or add their folder with --include_path")
        return self._task_manager

    @property
    def lm(self):
        if self._lm is None:
            from prunebench.lmms import PruneBenchLMM

            self._lm = PruneBenchLMM.from_adapter(self.adapter, pretrained=self.model_name, batch_size=self.config["batch_size"],
                                                  preprocess=self.config["preprocess"], seed=self.config["seed"])
            self._lm.progress = self.progress
        return self._lm

    @property
    def probe(self) -> list[Any]:
        if self._probe is None:
            lat = self.config["latency"]
            self._probe = probe_samples(self.task_manager, self.suite.tasks, int(lat["samples"]), self.lm._sample)
        return self._probe

    @property
    def env(self) -> dict[str, Any]:
        if self._env is None:
            self._env = environment(self.adapter)
        return self._env

    # -- running ---------------------------------------------------------------------------------------------------
    def run(self) -> SweepResult:
        from tqdm import tqdm

        self.write_plan()
        result = SweepResult(self.store, self.cells)
        pending = self.pending()
        done = len(self.cells) - len(pending)
        self.echo(f"prunebench run: {self.model_name} on suite '{self.suite.name}' ({len(self.suite.tasks)} tasks), "
                  f"{len(self.cells)} cells ({done} already finished, {len(pending)} to run) -> {self.output}")
        result.skipped = [c.key for c in self.cells if c not in pending]
        baseline_cell = self.cells[0]
        if pending and not (pending == [baseline_cell] and self.baselines.is_done(baseline_cell.key)):
            # shared resources first: a missing model or an unknown task stops the sweep here with its message,
            # instead of being recorded as a failure of every cell
            _ = self.adapter, self.task_manager, self.lm, self.probe
        bar = tqdm(total=len(self.cells), initial=done, desc="cells", unit="cell", disable=not self.progress)
        for cell in self.cells:
            if cell not in pending:
                continue
            bar.set_postfix_str(cell.label)
            if cell is baseline_cell and self._reuse_baseline(cell):
                result.reused.append(cell.key)
                self.echo(f"  {cell.label}: reused from the baseline cache {self.baselines.root}")
            else:
                record = self.run_cell(cell)
                result.computed.append(cell.key)
                self.echo(f"  {cell.label}: {_summary(record)}")
            bar.update(1)
        bar.close()
        return result

    def _reuse_baseline(self, cell: Cell) -> bool:
        record = self.baselines.get(cell.key)
        if record is None or record.get("status") != "done":
            return False
        record = {**record, "reused_from": str(self.baselines.root)}
        self.store.put(record, self.baselines.samples(cell.key))
        return True

    def baseline(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        key = self.cells[0].key
        record = self.store.get(key)
        if record is None or record.get("status") != "done":
            return None, []
        return record, self.store.samples(key)

    def run_cell(self, cell: Cell) -> dict[str, Any]:
        import torch

        from prunebench.lmms import resolve

        started = _now()
        record: dict[str, Any] = {"key": cell.key, **cell.fields, "started": started, "error": None}
        try:
            method = resolve(cell.method, self.model_name, self.adapter.family, dict(self.config["method_args"].get(cell.method, {})))
            mode = self.config["budget_mode"]
            if self.adapter.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.adapter.device)
            lat = self.config["latency"]
            latency, probe_stats = latency_probe(self.adapter, method, cell.budget, mode, self.config["seed"], self.probe,
                                                 int(lat["warmup"]), int(lat["new_tokens"]), self.config["budget_scope"])
            first = probe_stats[0]
            record["latency_ms"] = latency
            record["latency_protocol"] = (f"batch 1, {len(self.probe)} fixed samples after {lat['warmup']} warm-up calls, "
                                          f"{lat['new_tokens']} new tokens each; engine timings (perf_counter on CPU, synchronised on GPU)")
            record["flops"] = self._flops(cell, method, first)
            record["flops_counted_on"] = FLOPS_NOTE
            record["kv_cache"] = self._kv(first)
            record["tokens"] = {"planned_per_layer": first.plan.tokens_per_layer(), "per_layer": list(first.tokens_per_layer),
                                "kv_per_layer": list(first.kv_lengths), "text": first.text_tokens}

            lm = self.lm.configure(method, cell.budget, budget_mode=mode, budget_scope=self.config["budget_scope"], seed=self.config["seed"])
            record["env_adapter"] = self.adapter.describe()
            results = self._evaluate(lm)
            tasks = task_scores(results, self.suite.tasks)
            rows = sample_rows(results, tasks)
            by_key = {(r.task, r.doc_id): r for r in lm.requests_log}
            for row in rows:
                req = by_key.get((row["task"], row["doc_id"]))
                if req is not None:
                    row.update(final_tokens=req.final_tokens, layer_average_tokens=req.layer_average_tokens)
            finals = [r.final_tokens for r in lm.requests_log]
            averages = [r.layer_average_tokens for r in lm.requests_log]
            record["tokens"].update(final=_mean(finals), layer_average=_mean(averages))
            if cell.method == BASELINE_METHOD:
                for entry in tasks.values():
                    entry["baseline"] = entry["score"]
                relacc, agreement = 1.0, 1.0
            else:
                baseline, baseline_rows = self.baseline()
                relacc, agreement = relacc_and_agreement(tasks, rows, baseline, baseline_rows)
            record.update(tasks=tasks, relacc=relacc, agreement=agreement)
            if sorted(tasks) != record["task_names"]:  # groups (e.g. `shapes`) are reported by their leaf tasks
                record["requested_tasks"], record["task_names"] = record["task_names"], sorted(tasks)
            record["overhead_ms"] = _overhead(lm)
            memory, how = peak_memory_mb(self.adapter.device)
            record.update(peak_memory_mb=memory, peak_memory_kind=how, env=self.env, status="done", finished=_now())
            keep_rows = self.config["log_samples"] or cell.method == BASELINE_METHOD  # agreement needs the baseline's answers
            self.store.put(record, rows if keep_rows else [])
            if cell.method == BASELINE_METHOD:
                self.baselines.put(record, rows)
            return record
        except (InfeasibleBudget, BudgetError) as exc:
            record.update(status="infeasible", error=str(exc), finished=_now())
        except Exception as exc:  # noqa: BLE001 - a broken cell is recorded and the sweep goes on
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(), finished=_now())
            log.error("cell %s failed: %s", cell.label, exc)
        try:
            record["env"] = self.env
        except Exception:  # noqa: BLE001
            pass
        self.store.put(record)
        return record

    def _evaluate(self, lm: Any) -> dict[str, Any]:
        from lmms_eval.evaluator import simple_evaluate

        results = simple_evaluate(
            model=lm, model_args=lm.model_args, tasks=list(self.suite.tasks), task_manager=self.task_manager,
            limit=self.config["limit"], batch_size=self.config["batch_size"], device=self.config["device"],
            log_samples=True, bootstrap_iters=0, verbosity="WARNING", gen_kwargs=self.suite.gen_kwargs_string(),
            random_seed=self.config["seed"], numpy_random_seed=self.config["seed"], torch_random_seed=self.config["seed"],
            process_docs_parallel=1,
        )
        if results is None:
            raise RuntimeError("lmms-eval returned no results")
        return results

    def _flops(self, cell: Cell, method: Any, stats: Any) -> dict[str, Any]:
        from prunebench.costs import measure_prefill_flops

        pattern = (tuple(stats.tokens_per_layer), stats.text_tokens, stats.plan.vision)
        count = self._flops_cache.get(pattern)
        if count is None:
            batch = self.adapter.prepare([self.probe[0]])
            count = measure_prefill_flops(self.adapter, method, cell.budget, batch, budget_mode=self.config["budget_mode"], seed=self.config["seed"],
                                          budget_scope=self.config["budget_scope"])
            self._flops_cache[pattern] = count
        record = {k: v for k, v in count.as_record().items() if isinstance(v, (int, float))}
        return record

    def _kv(self, stats: Any) -> dict[str, Any]:
        from prunebench.costs import kv_cache_bytes

        shape = self.adapter.llm_shape
        analytic = kv_cache_bytes(shape, [stats.text_tokens + v for v in stats.tokens_per_layer], self.adapter.dtype.itemsize)
        return {"measured_mb": stats.kv_bytes / 2**20, "analytic_mb": analytic / 2**20}


def _overhead(lm: Any) -> dict[str, Any]:
    t = lm.timing
    n = max(int(t["requests"]), 1)
    harness = t["wall_s"] - t["visual_s"] - t["prepare_s"] - t["generate_s"]
    return {"per_sample_data_ms": t["visual_s"] / n * 1e3, "per_sample_preprocess_ms": t["prepare_s"] / n * 1e3,
            "per_sample_generate_ms": t["generate_s"] / n * 1e3, "per_sample_harness_ms": harness / n * 1e3,
            "batch_size": lm.batch_size, "requests": int(t["requests"])}


def _write(message: str) -> None:
    from tqdm import tqdm

    tqdm.write(message)  # keeps the progress bar intact


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _summary(record: dict[str, Any]) -> str:
    status = record.get("status")
    if status == "infeasible":
        return f"infeasible ({record.get('error')})"
    if status == "failed":
        return f"FAILED ({record.get('error')}); traceback in {record.get('key')}.json"
    relacc = record.get("relacc")
    pre = ((record.get("latency_ms") or {}).get("prefill") or {}).get("median")
    parts = [f"RelAcc {relacc:.3f}" if relacc is not None else "RelAcc -"]
    if record.get("agreement") is not None:
        parts.append(f"agreement {record['agreement']:.3f}")
    if pre is not None:
        parts.append(f"prefill {pre:.1f} ms")
    parts.append(f"{record['flops']['analytic_tflops'] * 1e3:.3f} GFLOPs")
    return ", ".join(parts)


__all__ = ["Cell", "Sweep", "SweepResult", "plan_cells"]
