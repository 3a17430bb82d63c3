"""A sweep: methods x budgets on one model and one suite, evaluated by lmms-eval, recorded cell by cell.

Work done once per sweep: load the model, index lmms-eval's tasks, pick the latency probe samples, check every
budget against their visual tokens (a budget above them is an input error, reported before any cell runs),
and find or evaluate the unpruned baseline (the run folder first, then the shared baseline cache
``<results>/.baselines``, then an evaluation whose record lands in both). Per cell:

1. latency probe: ``warmup`` calls, then ``samples`` fixed samples at batch size 1 (the same samples for every
   cell), each generating exactly ``new_tokens`` tokens; median and p90 of the time to first token and its
   parts (:data:`LATENCY_PARTS`). The probe's per-layer tokens and KV lengths are checked against the plan
   (``contract_ok``). An infeasible budget surfaces here (``core.InfeasibleBudget``) before any evaluation;
2. FLOPs of one probe sample's prefill with ``FlopCounterMode`` (counted once per method, parameters and
   per-layer token pattern in this process, so each method's own selection compute is counted), checked
   against the analytic LLM count; KV bytes measured and analytic. Saved as ``RUN/partial/<key>/costs.json``;
3. the suite's tasks one by one through ``lmms_eval.evaluator.simple_evaluate`` with the live
   :class:`prunebench.lmms.PruneBenchLMM` (batched); each finished task is saved atomically
   (``RUN/partial/<key>/<task>.json``), a task that raises is saved with its traceback and the others go on;
4. when every task has run: scores, RelAcc and agreement against the baseline, and one atomic record
   (``ResultStore.put``): done, failed (a task or the probe raised; traceback kept) or infeasible (with the reason).

A rerun skips cells whose record is done or infeasible; in any other cell it reuses the saved costs and the
tasks that finished and re-runs only the failed or missing tasks. A SIGKILL loses at most the task in flight,
because nothing is ever half-written.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import io
import json
import logging
import math
import platform
import re
import resource
import subprocess
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from prunebench.core import BudgetError, InfeasibleBudget, PruneBenchError
from prunebench.runner.config import check_same_sweep, import_plugins
from prunebench.store import BASELINE_METHOD, ResultStore, cell_key

log = logging.getLogger("prunebench.runner")
FLOPS_NOTE = ("per sample: first probe sample, batch 1, prefill up to the first token (vision + the method's selection + LLM + "
              "lm_head at 1 position); analytic counts model compute only")
LLM_FLOPS_TOLERANCE = 1e-3  # measured vs analytic LLM prefill FLOPs (relative); the method's in-LLM scoring is the only gap
LATENCY_PARTS = (
    "per probe sample (batch 1, from the prepared batch to the first generated token): "
    "ttft = vision + select_vision + assemble + select_llm + llm_prefill, where vision = the vision tower, "
    "select_vision = the vision stage's selection and the projection of the kept tokens, assemble = planning and building "
    "the LLM input, select_llm = the method's LLM-stage selection (inside the prefill), llm_prefill = the LLM prefill without it; "
    "prefill = select_llm + llm_prefill (the engine's generate window up to the first token), select = select_vision + select_llm; "
    "decode_per_token = mean time per further token, total = ttft + decoding, generate = prefill + decoding. "
    "Median and p90 are taken per part, so the medians need not add up exactly"
)


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


def plan_cells(config: dict[str, Any], model: str, suite_tasks: list[str], generation_kwargs: dict[str, Any] | None = None,
               include_paths: list[str] | None = None) -> list[Cell]:
    """The baseline and every method x budget cell, each with its resolved parameters and key.

    The key covers everything that changes a cell's numbers: model and the fingerprint of its weights, the
    LLaVA-NeXT layout, suite tasks, their generation overrides and the fingerprint of the task folders read
    besides lmms-eval's own, limit, seed, preprocessing, dtype, device, the latency protocol, method, every
    method parameter, budget, budget mode and scope, and the code that computes them (prunebench's version and
    source fingerprint; lmms-eval, transformers and torch versions). Not the batch size: batched outputs equal
    batch-1 outputs by the engine's contract (it is recorded, since peak memory depends on it).
    """
    from prunebench.fingerprint import code_fingerprint, model_fingerprint, task_fingerprint
    from prunebench.lmms import resolve

    family = family_of(model)
    common = {
        "model": model, "weights": model_fingerprint(model), "layout": config.get("layout"), "suite": config["suite"],
        "task_names": sorted(suite_tasks), "task_files": task_fingerprint(include_paths or []), "limit": config["limit"],
        "seed": config["seed"], "preprocess": config["preprocess"], "dtype": config["dtype"], "device": config["device"],
        "generation_kwargs": dict(generation_kwargs or {}), "latency": dict(config["latency"]),
        "code": code_fingerprint(), "versions": key_versions(),
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


@functools.lru_cache(maxsize=1)
def key_versions() -> dict[str, str | None]:
    """Versions of the code that computes a cell (part of its key)."""
    import torch
    import transformers

    from prunebench import __version__

    return {"prunebench": __version__, "lmms_eval": lmms_eval_version(), "transformers": transformers.__version__,
            "torch": torch.__version__}


def lmms_eval_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("lmms_eval")
    except Exception:  # noqa: BLE001
        return None


# -- environment ------------------------------------------------------------------------------------------------
def environment(adapter: Any) -> dict[str, Any]:
    import torch
    import transformers

    from prunebench import __version__

    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
                "prunebench": __version__, "lmms_eval": lmms_eval_version()}
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


class PeakMemory:
    """Peak memory while one cell runs (latency probe, FLOP count and evaluation at ``--batch_size``).

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset at the start of the cell (tensors only, weights
    included). CPU on Linux: the process's peak resident set (``VmHWM``) after resetting it at the start of the
    cell (``/proc/self/clear_refs``), so the figure includes the resident weights and libraries but no earlier
    cell. ``growth_mb`` is the peak minus the footprint at the start of the cell: what the cell itself added.
    Elsewhere only the process-wide ``ru_maxrss`` exists, and ``kind`` says so. A cell resumed after a kill
    reports the part that ran in the resuming process.
    """

    def __init__(self, device: Any):
        self.device = device
        self.is_cuda = getattr(device, "type", str(device)) == "cuda"
        self.start_mb: float | None = None
        self._peak: float | None = None
        self.kind = ""

    def __enter__(self) -> "PeakMemory":
        import torch

        if self.is_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "cuda max_memory_allocated during this cell (tensors, weights included)"
        elif _reset_peak_rss():
            self.start_mb = _proc_status_mb("VmRSS")
            self.kind = "peak RSS during this cell (VmHWM after a reset; resident weights included)"
        else:
            self.kind = "process peak RSS (ru_maxrss, whole run so far: this platform cannot reset it)"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._peak = self._read_peak()  # before anything resets the counter again (the next cell)

    def _read_peak(self) -> float:
        import torch

        if self.is_cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.start_mb is not None:
            return _proc_status_mb("VmHWM")
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20

    def result(self) -> tuple[float, float | None, str]:
        """(peak MB, growth over the start of the cell in MB or None, what the number means)."""
        peak = self._peak if self._peak is not None else self._read_peak()
        growth = None if self.start_mb is None or peak is None else max(peak - self.start_mb, 0.0)
        return peak, growth, self.kind


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # Linux >= 4.0: reset the peak RSS (VmHWM) to the current RSS
        return _proc_status_mb("VmHWM") is not None
    except OSError:
        return False


def _proc_status_mb(field: str) -> float | None:
    try:
        text = open("/proc/self/status").read()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else None


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


def sample_latency(timings: dict[str, float]) -> dict[str, float]:
    """One generate call's engine timings as the entries of ``latency_ms`` (see :data:`LATENCY_PARTS`).

    ttft = vision + select_vision + assemble + prefill, and the prefill window holds the LLM-stage selection
    (select_llm) besides the LLM's own prefill (llm_prefill = prefill - select_llm).
    """
    t = timings
    out = {"prefill": t.get("prefill_ms"), "decode_per_token": t.get("decode_ms_per_token"), "total": t.get("total_ms"),
           "vision": t.get("vision_ms"), "select": t.get("select_ms"), "generate": t.get("generate_ms"),
           "ttft": t.get("ttft_ms"), "select_vision": t.get("select_vision_ms"), "select_llm": t.get("select_llm_ms"),
           "assemble": t.get("assemble_ms")}
    if None not in (out["prefill"], out["select_llm"]):
        out["llm_prefill"] = out["prefill"] - out["select_llm"]
    return {k: v for k, v in out.items() if v is not None}


def latency_probe(adapter: Any, method: Any, budget: int | None, mode: str, seed: int, samples: list[Any], warmup: int,
                  new_tokens: int, scope: str = "image") -> tuple[dict[str, Any], list[Any]]:
    """Batch-1 timings over ``samples`` after ``warmup`` calls; returns (latency_ms record, per-sample Stats)."""
    from prunebench.engine import Pruner

    batches = [adapter.prepare([s]) for s in samples]
    stats, parts = [], []
    with Pruner(adapter, method, budget, budget_mode=mode, seed=seed, budget_scope=scope) as pruner:
        for i in range(warmup):
            pruner.generate(batches[i % len(batches)], max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        for batch in batches:
            out = pruner.generate(batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
            stats.append(out.stats)
            parts.append(sample_latency(out.stats.timings_ms))
    names = dict.fromkeys(k for p in parts for k in p)
    record = {name: _stat([p.get(name, float("nan")) for p in parts]) for name in names}
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
    broken: dict[str, str] = {}
    index = 0
    while len(out) < count and any(index < len(d) for name, _, d in docs if name not in broken):
        for name, task, items in docs:
            if index < len(items) and len(out) < count and name not in broken:
                doc = items[index]
                try:
                    visuals = _flatten(task.doc_to_visual(doc))
                    text = task.doc_to_text(doc)
                    question = str(text).replace("<image>", "").replace("<video>", "").strip()
                    out.append(make_sample(name, index, question, visuals))
                except Exception as exc:  # noqa: BLE001 - a broken task fails in its own evaluation, not the sweep
                    broken[name] = f"{type(exc).__name__}: {exc}"
                    log.warning("latency probe: skipping task %s (%s)", name, broken[name])
        index += 1
    if not out:
        raise PruneBenchError(f"no latency probe samples could be built from {tasks}: {broken or 'the tasks have no documents'}")
    return out


# -- scores -----------------------------------------------------------------------------------------------------
def task_scores(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{task: {metric, score, n, metrics}}`` for each leaf task lmms-eval reported (groups are expanded).

    ``metric``/``score``: the task's first metric (its primary one, what tables show); ``metrics``: every
    metric lmms-eval reported, keyed ``name`` for the unfiltered value and ``name,filter`` otherwise."""
    out = {}
    n_samples = results.get("n-samples", {})
    for task, metrics in results.get("results", {}).items():
        if task in results.get("group_subtasks", {}) and results["group_subtasks"][task]:
            continue  # a group: its leaves are reported
        values = {}
        for name, value in metrics.items():
            if name == "alias" or "stderr" in name or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            metric, _, filt = name.partition(",")
            values[metric if filt in ("", "none") else name] = float(value)
        if not values:
            continue
        primary = next(iter(values))
        out[task] = {"metric": primary.split(",")[0], "score": values[primary], "n": (n_samples.get(task) or {}).get("effective"),
                     "metrics": values}
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
    """Runs a resolved config (see :mod:`prunebench.runner.config`).

    ``progress``: prunebench's bars (cells, samples). ``foreign_progress``: lmms-eval's own bars (building
    requests, postprocessing), hidden by default; they are created with the process's stderr and ignore
    ``TQDM_DISABLE`` once tqdm is imported (torch imports it), so the sweep hands lmms-eval a stderr that drops
    their carriage-return redraws while passing every other line through.
    """

    def __init__(self, config: dict[str, Any], progress: bool = True, echo: Callable[[str], None] | None = None,
                 foreign_progress: bool = False):
        from prunebench.lmms import check_layout
        from prunebench.models import DEFAULT_MODEL
        from prunebench.suites.registry import load_suite

        self.config = dict(config)
        self.model_name = config["model"] or DEFAULT_MODEL
        self.config["model"] = self.model_name
        import_plugins(config.get("plugins") or [])
        self.suite = load_suite(config["suite"], config["tasks"])
        self.suite.generation_kwargs.update(config.get("gen_kwargs") or {})
        self.output = Path(config["output"]) if config["output"] else default_output(config, self.model_name)
        self.config["output"] = str(self.output)
        self.progress = progress
        self.foreign_progress = foreign_progress
        self.echo = echo or _write
        self.store = ResultStore(self.output, on_damage=self.echo)
        baseline_dir = config.get("baseline_cache") or (self.output.parent / ".baselines")
        self.baselines = ResultStore(baseline_dir, repair=True, on_damage=self.echo)  # shared: set aside what is damaged
        check_layout(family_of(self.model_name), config.get("layout"))
        self.cells = plan_cells(self.config, self.model_name, self.suite.tasks, self.suite.generation_kwargs, self.include_paths)
        self._flops_cache: dict[tuple, Any] = {}
        self._adapter = None
        self._lm = None
        self._task_manager = None
        self._probe: list[Any] | None = None
        self._env: dict[str, Any] | None = None

    @property
    def include_paths(self) -> list[str]:
        return list(dict.fromkeys([*self.suite.include_path, *self.config["include_path"]]))

    # -- bookkeeping ---------------------------------------------------------------------------------------------
    def write_plan(self) -> None:
        from prunebench.runner.config import to_yaml
        from prunebench.store import atomic_write_text

        self.store.write_config(to_yaml(self.config), suite=self.suite.to_dict())
        plan = [{"key": c.key, "label": c.label, "method": c.method, "budget": c.budget} for c in self.cells]
        atomic_write_text(self.output / "plan.json", json.dumps(plan, indent=1))

    def pending(self) -> list[Cell]:
        return [c for c in self.cells if not self.store.is_done(c.key)]

    # -- lazily loaded, once per sweep ---------------------------------------------------------------------------
    @property
    def adapter(self):
        if self._adapter is None:
            from prunebench.lmms import adapter_options
            from prunebench.models import load_model

            options = adapter_options(self.config["preprocess"], self.config.get("layout"))
            self._adapter = load_model(self.model_name, dtype=self.config["dtype"], device=self.config["device"], seed=self.config["seed"], **options)
            log.info("loaded %s (%s)", self.model_name, self._adapter.describe())
        return self._adapter

    @property
    def task_manager(self):
        if self._task_manager is None:
            self._task_manager = cached_task_manager(tuple(self.include_paths))
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
                                                  preprocess=self.config["preprocess"], seed=self.config["seed"],
                                                  layout=self.config.get("layout"))
            self._lm.progress = self.progress
            self._lm.progress_file = sys.stderr  # the real one, also while lmms-eval's bars are filtered
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

    def check_budgets(self) -> None:
        """Every swept budget against the visual tokens of the probe inputs: a budget above them is a mistake in
        the command line, not a property of a method, so it stops the sweep here with the largest valid budget."""
        from prunebench.adapters.base import UNIT_SCOPES
        from prunebench.core import check_budget

        scope = self.config["budget_scope"]
        counts = set()
        for sample in self.probe:
            view = self.adapter.encode(self.adapter.prepare([sample]), ())
            counts.add((view.num_tokens, getattr(view, "num_units", 1)))
        for budget in self.config["budgets"]:
            for tokens, units in sorted(counts):
                try:
                    check_budget(budget * units if scope in UNIT_SCOPES else budget, tokens)
                except BudgetError:
                    per = f" per {scope}" if scope in UNIT_SCOPES else ""
                    limit = tokens // units if scope in UNIT_SCOPES else tokens
                    raise PruneBenchError(
                        f"budget {budget}{per} exceeds the {tokens} visual tokens ({units} {scope}(s)) of {self.model_name}'s inputs "
                        f"in this suite; choose budgets <= {limit}{per} (e.g. --budgets {','.join(str(b) for b in self.config['budgets'] if b <= limit) or limit})"
                    ) from None

    # -- running ---------------------------------------------------------------------------------------------------
    def run(self, wait: bool | float = False) -> SweepResult:
        """Run the pending cells holding the folder's lock (``wait``: see :class:`prunebench.store.RunLock`)."""
        with self.store.lock(wait=wait):  # one writer; repair mode: damaged files are set aside, .tmp leftovers removed
            return self._run()

    def _run(self) -> SweepResult:
        from tqdm import tqdm

        check_same_sweep(self.output, self.config, self.store.plan())
        result = SweepResult(self.store, self.cells)
        pending = self.pending()
        done = len(self.cells) - len(pending)
        self.echo(f"prunebench run: {self.model_name} on suite '{self.suite.name}' ({len(self.suite.tasks)} tasks), "
                  f"{len(self.cells)} cells ({done} already finished, {len(pending)} to run) -> {self.output}")
        result.skipped = [c.key for c in self.cells if c not in pending]
        baseline_cell = self.cells[0]
        if pending and not (pending == [baseline_cell] and self.baselines.is_done(baseline_cell.key)):
            # shared resources first: a missing model, an unknown task or a budget above the inputs' visual tokens
            # stops the sweep here with its message, before plan.json and config.yaml are written
            _ = self.adapter, self.task_manager, self.lm, self.probe
            self.check_budgets()
        self.write_plan()
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
        """Measure, evaluate task by task (resuming saved parts) and record one cell; never raises."""
        from prunebench.lmms import resolve

        record: dict[str, Any] = {"key": cell.key, **cell.fields, "started": _now(), "error": None,
                                  "batch_size": self.config["batch_size"]}
        memory = PeakMemory(self.adapter.device)
        rows: list[dict[str, Any]] = []
        try:
            with memory:
                method = resolve(cell.method, self.model_name, self.adapter.family, dict(self.config["method_args"].get(cell.method, {})))
                costs = self.store.get_partial(cell.key, "costs")
                if costs is None:
                    costs = self.measure(cell, method)
                    self.store.put_partial(cell.key, "costs", costs)
                record.update(costs)
                units = {unit: self._task(cell, method, unit) for unit in self.suite.tasks}
            rows = self._assemble(cell, record, units)
        except InfeasibleBudget as exc:
            record.update(status="infeasible", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken cell is recorded and the sweep goes on
            # BudgetError included: the budget is an input mistake (check_budgets catches it for the probe inputs;
            # this is an evaluation input with fewer visual tokens), never a method's infeasibility
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            log.error("cell %s failed: %s", cell.label, exc)
        peak, growth, kind = memory.result()
        record.update(peak_memory_mb=peak, peak_memory_growth_mb=growth, peak_memory_kind=kind, finished=_now())
        try:
            record["env"] = self.env
        except Exception:  # noqa: BLE001
            pass
        if record["status"] == "done":
            keep_rows = self.config["log_samples"] or cell.method == BASELINE_METHOD  # agreement needs the baseline's answers
            self.store.put(record, rows if keep_rows else [])
            if cell.method == BASELINE_METHOD:
                self.baselines.put(record, rows)
            self.store.clear_partial(cell.key)
        else:
            self.store.put(record)
        if record["status"] == "infeasible":
            self.store.clear_partial(cell.key)
        return record

    # -- one cell's parts --------------------------------------------------------------------------------------------
    def measure(self, cell: Cell, method: Any) -> dict[str, Any]:
        """Latency probe, token contract, FLOPs and KV bytes of a cell (the ``costs`` part of its record)."""
        lat = self.config["latency"]
        latency, probe_stats = latency_probe(self.adapter, method, cell.budget, self.config["budget_mode"], self.config["seed"], self.probe,
                                             int(lat["warmup"]), int(lat["new_tokens"]), self.config["budget_scope"])
        first = probe_stats[0]
        warnings = []
        problems = [f"probe sample {i}: {s.contract_detail}" for i, s in enumerate(probe_stats) if not s.contract_ok]
        if problems:
            warnings.append("token contract: " + "; ".join(problems))
            log.warning("cell %s misses its plan: %s", cell.label, "; ".join(problems))
        flops = self._flops(cell, method, first)
        if not flops["llm_agree"]:
            message = (f"measured LLM prefill FLOPs differ from the analytic count by {flops['llm_rel_diff']:.2e} "
                       f"(> {LLM_FLOPS_TOLERANCE:g}) after the in-LLM selection steps are taken out; an uncounted kernel or an unplanned token count is the gap")
            warnings.append(message)
            log.warning("cell %s: %s", cell.label, message)
        return {
            "latency_ms": latency,
            "latency_protocol": (f"batch 1, {len(self.probe)} fixed samples after {lat['warmup']} warm-up calls, {lat['new_tokens']} new "
                                 "tokens each; engine timings (perf_counter on CPU, synchronised on GPU)"),
            "latency_parts": LATENCY_PARTS,
            "flops": flops, "flops_counted_on": FLOPS_NOTE, "kv_cache": self._kv(first),
            "tokens": {"planned_per_layer": first.plan.tokens_per_layer(), "per_layer": list(first.tokens_per_layer),
                       "kv_per_layer": list(first.kv_lengths), "text": first.text_tokens},
            "contract_ok": not problems, "warnings": warnings, "env_adapter": self.adapter.describe(),
        }

    def _task(self, cell: Cell, method: Any, unit: str) -> dict[str, Any]:
        """One task of a cell: the saved result, or an evaluation saved before it is returned."""
        saved = self.store.get_partial(cell.key, f"task-{unit}")
        if saved is not None and saved.get("status") in ("done", "infeasible"):
            return saved
        entry: dict[str, Any] = {"task": unit, "started": _now()}
        lm = self.lm.configure(method, cell.budget, budget_mode=self.config["budget_mode"], budget_scope=self.config["budget_scope"],
                               seed=self.config["seed"])
        try:
            results = self._evaluate(lm, [unit])
            scores = task_scores(results)
            if not scores:
                raise RuntimeError(f"lmms-eval reported no metric for task {unit}")
            rows = sample_rows(results, scores)
            by_key = {(r.task, r.doc_id): r for r in lm.requests_log}
            for row in rows:
                req = by_key.get((row["task"], row["doc_id"]))
                if req is not None:
                    row.update(final_tokens=req.final_tokens, layer_average_tokens=req.layer_average_tokens)
            entry.update(status="done", scores=scores, rows=rows,
                         tokens={"final": [r.final_tokens for r in lm.requests_log], "layer_average": [r.layer_average_tokens for r in lm.requests_log]})
        except InfeasibleBudget as exc:
            entry.update(status="infeasible", error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken task is recorded and the cell's other tasks go on
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            log.error("cell %s, task %s failed: %s", cell.label, unit, exc)
        entry.update(timing=dict(lm.timing), finished=_now())
        self.store.put_partial(cell.key, f"task-{unit}", entry)
        return entry

    def _assemble(self, cell: Cell, record: dict[str, Any], units: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """The cell's record from its task parts (status, scores, RelAcc, agreement, tokens, overhead); its rows."""
        tasks: dict[str, dict[str, Any]] = {}
        rows: list[dict[str, Any]] = []
        finals: list[float] = []
        averages: list[float] = []
        errors = {u: {k: e.get(k) for k in ("status", "error", "traceback")} for u, e in units.items() if e["status"] != "done"}
        for entry in units.values():
            if entry["status"] == "done":
                tasks.update(entry["scores"])
                rows += entry["rows"]
                finals += entry["tokens"]["final"]
                averages += entry["tokens"]["layer_average"]
        record["tokens"].update(final=_mean(finals), layer_average=_mean(averages))
        if cell.method == BASELINE_METHOD:
            for entry in tasks.values():
                entry["baseline"] = entry["score"]
            relacc, agreement = (1.0, 1.0) if tasks else (None, None)
        else:
            baseline, baseline_rows = self.baseline()
            relacc, agreement = relacc_and_agreement(tasks, rows, baseline, baseline_rows)
        record.update(tasks=tasks, relacc=relacc, agreement=agreement, overhead_ms=_overhead([e.get("timing") or {} for e in units.values()],
                                                                                               self.config["batch_size"]))
        if sorted(tasks) != record["task_names"] and not errors:  # groups (e.g. `shapes`) are reported by their leaf tasks
            record["requested_tasks"], record["task_names"] = record["task_names"], sorted(tasks)
        failed = {u: e for u, e in errors.items() if e["status"] == "failed"}
        if failed:
            record["task_errors"] = errors
            record["traceback"] = "\n".join(f"--- task {u} ---\n{e.get('traceback') or e.get('error')}" for u, e in failed.items())
            record.update(status="failed", error=f"{len(failed)} of {len(units)} task(s) failed: " +
                          "; ".join(f"{u}: {e['error']}" for u, e in failed.items()))
        elif errors:
            record["task_errors"] = errors
            record.update(status="infeasible", error="; ".join(f"{u}: {e['error']}" for u, e in errors.items()))
        else:
            record["status"] = "done"
        return rows

    def _evaluate(self, lm: Any, tasks: list[str]) -> dict[str, Any]:
        from lmms_eval.evaluator import simple_evaluate

        with contextlib.redirect_stderr(sys.stderr if self.foreign_progress else _DropRedraws(sys.stderr)):
            results = simple_evaluate(
                model=lm, model_args=lm.model_args, tasks=list(tasks), task_manager=self.task_manager,
                limit=self.config["limit"], batch_size=self.config["batch_size"], device=self.config["device"],
                log_samples=True, bootstrap_iters=0, verbosity="WARNING", gen_kwargs=self.suite.gen_kwargs_string(),
                random_seed=self.config["seed"], numpy_random_seed=self.config["seed"], torch_random_seed=self.config["seed"],
                process_docs_parallel=1,
            )
        if results is None:
            raise RuntimeError("lmms-eval returned no results")
        return results

    def _flops(self, cell: Cell, method: Any, stats: Any) -> dict[str, Any]:
        """FLOPs of one probe prefill. Counted once per (method, its parameters, per-layer token pattern): another
        method with the same pattern selects differently (DivPrune's pairwise distances, VisionZip's attention),
        and its own selection compute belongs to its count."""
        from prunebench.costs import measure_prefill_flops

        pattern = (method.name, json.dumps(method.params(), sort_keys=True, default=str), tuple(stats.tokens_per_layer),
                   stats.text_tokens, stats.plan.vision)
        count = self._flops_cache.get(pattern)
        if count is None:
            batch = self.adapter.prepare([self.probe[0]])
            count = measure_prefill_flops(self.adapter, method, cell.budget, batch, budget_mode=self.config["budget_mode"], seed=self.config["seed"],
                                          budget_scope=self.config["budget_scope"])
            self._flops_cache[pattern] = count
        record = {k: v for k, v in count.as_record().items() if v is None or isinstance(v, (int, float))}
        record["llm_agree"] = count.llm_rel_diff <= LLM_FLOPS_TOLERANCE
        return record

    def _kv(self, stats: Any) -> dict[str, Any]:
        from prunebench.costs import kv_cache_bytes

        shape = self.adapter.llm_shape
        analytic = kv_cache_bytes(shape, [stats.text_tokens + v for v in stats.tokens_per_layer], self.adapter.dtype.itemsize)
        return {"measured_mb": stats.kv_bytes / 2**20, "analytic_mb": analytic / 2**20}


class _DropRedraws(io.TextIOBase):
    """A stderr for lmms-eval that drops tqdm's redraws and passes everything else, warnings and log lines, through.

    A redraw is a write starting with a carriage return. Around it a bar below position 0 (nested under the
    sweep's own bar, or under bars lmms-eval left open when a task raised) moves the cursor with bare newlines and
    cursor-ups, and a closing bar writes a newline: writes made only of those are dropped unless they end a line
    of real text (``print`` writes its newline separately)."""

    def __init__(self, stream: Any):
        self.stream = stream
        self._line_open = False  # the last text passed through did not end its line

    def write(self, text: str) -> int:
        if text.startswith("\r"):
            return len(text)
        if not self._line_open and text.strip("\n\x1b[A ") == "":
            return len(text)
        self._line_open = not text.endswith("\n")
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


def _overhead(timings: list[dict[str, float]], batch_size: int) -> dict[str, Any]:
    t = {k: sum(float(x.get(k, 0) or 0) for x in timings) for k in ("requests", "wall_s", "visual_s", "prepare_s", "generate_s")}
    n = max(int(t["requests"]), 1)
    harness = t["wall_s"] - t["visual_s"] - t["prepare_s"] - t["generate_s"]
    return {"per_sample_data_ms": t["visual_s"] / n * 1e3, "per_sample_preprocess_ms": t["prepare_s"] / n * 1e3,
            "per_sample_generate_ms": t["generate_s"] / n * 1e3, "per_sample_harness_ms": harness / n * 1e3,
            "batch_size": batch_size, "requests": int(t["requests"])}


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
    latency = record.get("latency_ms") or {}
    ttft = (latency.get("ttft") or latency.get("prefill") or {}).get("median")
    parts = [f"RelAcc {relacc:.3f}" if relacc is not None else "RelAcc -"]
    if record.get("agreement") is not None:
        parts.append(f"agreement {record['agreement']:.3f}")
    if ttft is not None:
        parts.append(f"TTFT {ttft:.1f} ms")
    tflops = (record.get("flops") or {}).get("measured_tflops")
    if tflops is not None:
        parts.append(f"{tflops * 1e3:.3f} GFLOPs")
    parts += [f"WARNING {w}" for w in record.get("warnings") or []]
    return ", ".join(parts)


__all__ = ["Cell", "Sweep", "SweepResult", "plan_cells"]
