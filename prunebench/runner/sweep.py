"""A sweep: methods x budgets on one model and one suite, evaluated by lmms-eval, recorded cell by cell.

Work done once per sweep: load the model, index lmms-eval's tasks, pick the latency probe samples, check every
budget against their visual tokens (a budget above them is an input error, reported before any cell runs, and
before anything is written into the run folder), and find or evaluate the unpruned baseline (the run folder
first, then the shared baseline cache ``<results>/.baselines``, then an evaluation whose record lands in both).
Per cell, with its :class:`~prunebench.spec.CellSpec` built once by :func:`~prunebench.runner.cells.plan_cells`:

1. latency probe (:mod:`prunebench.runner.measure`): ``warmup`` calls, then ``samples`` fixed samples at batch
   size 1 (the same samples for every cell), each generating exactly ``new_tokens`` tokens; the spread of the
   time to first token and its parts, and the CPU load while it ran. The probe's per-layer tokens and KV lengths
   are checked against the plan (``contract_ok``). An infeasible budget surfaces here (``core.InfeasibleBudget``);
2. FLOPs of one probe sample's prefill with ``FlopCounterMode`` (counted once per method, parameters and
   per-layer token pattern in this process, so each method's own selection compute is counted), checked
   against the analytic LLM count; KV bytes measured and analytic. Saved as ``RUN/partial/<key>/costs.json``;
3. the suite's tasks one by one through lmms-eval (:mod:`prunebench.runner.evaluate`) with the live
   :class:`prunebench.lmms.PruneBenchLMM` configured with the cell's spec (batched); each finished task is saved
   atomically (``RUN/partial/<key>/<task>.json``), a task that raises is saved with its traceback and the others go on;
4. when every task has run: scores, RelAcc and agreement against the baseline (:mod:`prunebench.runner.results`),
   and one atomic record (``ResultStore.put``): done, failed (a task or the probe raised; traceback kept) or
   infeasible (with the reason).

A rerun skips cells whose record is done or infeasible; in any other cell it reuses the saved costs and the
tasks that finished and re-runs only the failed or missing tasks. A SIGKILL loses at most the task in flight,
because nothing is ever half-written.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from prunebench.core import BudgetError, InfeasibleBudget, PruneBenchError, check_budget
from prunebench.models import DEFAULT_MODEL, load_model
from prunebench.resolve import adapter_options, check_layout, family_of
from prunebench.runner.cells import Cell, default_output, plan_cells
from prunebench.runner.config import check_same_sweep, import_plugins, to_yaml
from prunebench.runner.evaluate import evaluate, probe_samples, task_index
from prunebench.runner.measure import (
    FLOPS_NOTE,
    LATENCY_PARTS,
    LLM_FLOPS_TOLERANCE,
    PeakMemory,
    environment,
    flops_record,
    kv_record,
    latency_probe,
    prefill_flops,
)
from prunebench.runner.results import assemble, sample_rows, summary, task_scores
from prunebench.spec import UNIT_SCOPES
from prunebench.store import BASELINE_METHOD, ResultStore, atomic_write_text
from prunebench.suites.registry import load_suite

log = logging.getLogger("prunebench.runner")

__all__ = ["Cell", "Sweep", "SweepResult", "plan_cells"]


@dataclass
class SweepResult:
    store: ResultStore
    cells: list[Cell]
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # finished before this run
    reused: list[str] = field(default_factory=list)  # baselines taken from the shared baseline cache


class Sweep:
    """Runs a resolved config (see :mod:`prunebench.runner.config`).

    ``progress``: prunebench's bars (cells, samples). ``foreign_progress``: lmms-eval's own bars (building
    requests, postprocessing), hidden by default; they are created with the process's stderr and ignore
    ``TQDM_DISABLE`` once tqdm is imported (torch imports it), so the sweep hands lmms-eval a stderr that drops
    their carriage-return redraws while passing every other line through.
    """

    def __init__(self, config: dict[str, Any], progress: bool = True, echo: Callable[[str], None] | None = None, foreign_progress: bool = False):
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
        self.echo = echo or tqdm.write  # tqdm.write keeps the progress bar intact
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
        self.store.write_config(to_yaml(self.config), suite=self.suite.to_dict())
        plan = [{"key": c.key, "label": c.label, "method": c.method, "budget": c.budget} for c in self.cells]
        atomic_write_text(self.output / "plan.json", json.dumps(plan, indent=1))

    def pending(self) -> list[Cell]:
        return [c for c in self.cells if not self.store.is_done(c.key)]

    # -- lazily loaded, once per sweep ---------------------------------------------------------------------------
    @property
    def adapter(self):
        if self._adapter is None:
            options = adapter_options(self.config["preprocess"], self.config.get("layout"), self.config.get("vision_stop", "feature"))
            self._adapter = load_model(self.model_name, dtype=self.config["dtype"], device=self.config["device"], seed=self.config["seed"], **options)
            log.info("loaded %s (%s)", self.model_name, self._adapter.describe())
        return self._adapter

    @property
    def task_manager(self):
        if self._task_manager is None:
            self._task_manager = task_index(self.suite.tasks, self.include_paths)
        return self._task_manager

    @property
    def lm(self):
        if self._lm is None:
            from prunebench.lmms import PruneBenchLMM  # lazy: lmms_eval is needed only when cells are evaluated

            self._lm = PruneBenchLMM.from_adapter(
                self.adapter,
                pretrained=self.model_name,
                batch_size=self.config["batch_size"],
                preprocess=self.config["preprocess"],
                seed=self.config["seed"],
                dtype=self.config["dtype"],
                layout=self.config.get("layout"),
                vision_stop=self.config.get("vision_stop", "feature"),
            )
            self._lm.progress = self.progress
            self._lm.progress_file = sys.stderr  # the real one, also while lmms-eval's bars are filtered
        return self._lm

    @property
    def probe(self) -> list[Any]:
        if self._probe is None:
            lat = self.config["latency"]
            self._probe = probe_samples(self.task_manager, self.suite.tasks, int(lat["samples"]), self.lm.make_sample)
        return self._probe

    @property
    def env(self) -> dict[str, Any]:
        if self._env is None:
            self._env = environment(self.adapter)
        return self._env

    def check_budgets(self) -> None:
        """Every swept budget against the visual tokens of the probe inputs: a budget above them is a mistake in
        the command line, not a property of a method, so it stops the sweep here with the largest valid budget."""
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
                        f"in this suite; choose budgets <= {limit}{per} "
                        f"(e.g. --budgets {','.join(str(b) for b in self.config['budgets'] if b <= limit) or limit})"
                    ) from None

    # -- running ---------------------------------------------------------------------------------------------------
    def run(self, wait: bool | float = False) -> SweepResult:
        """Run the pending cells holding the folder's lock (``wait``: see :class:`prunebench.store.RunLock`)."""
        with self.store.lock(wait=wait):  # one writer; repair mode: damaged files are set aside, .tmp leftovers removed
            return self._run()

    def _run(self) -> SweepResult:
        check_same_sweep(self.output, self.config, self.store.plan())
        pending = self.pending()
        result = SweepResult(self.store, self.cells)
        done = len(self.cells) - len(pending)
        self.echo(
            f"prunebench run: {self.model_name} on suite '{self.suite.name}' ({len(self.suite.tasks)} tasks), "
            f"{len(self.cells)} cells ({done} already finished, {len(pending)} to run) -> {self.output}"
        )
        result.skipped = [c.key for c in self.cells if c not in pending]
        baseline_cell = self.cells[0]
        if pending and not (pending == [baseline_cell] and self.baselines.is_done(baseline_cell.key)):
            # shared resources first: a missing model, an unknown task or a budget above the inputs' visual tokens
            # stops the sweep here with its message, before plan.json and config.yaml are written
            _ = self.task_manager, self.adapter, self.lm, self.probe  # the task index first: an unknown task costs no model load
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
                self.echo(f"  {cell.label}: {summary(record)}")
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
        record: dict[str, Any] = {"key": cell.key, **cell.fields, "device": self.config["device"], "started": _now(), "error": None}
        memory = PeakMemory(self.adapter.device)
        rows: list[dict[str, Any]] = []
        try:
            with memory:
                costs = self.store.get_partial(cell.key, "costs")
                if costs is None:
                    costs = self.measure(cell)
                    self.store.put_partial(cell.key, "costs", costs)
                record.update(costs)
                units = {unit: self._task(cell, unit) for unit in self.suite.tasks}
            is_baseline = cell.method == BASELINE_METHOD
            rows = assemble(record, units, is_baseline, (None, []) if is_baseline else self.baseline(), self.config["batch_size"])
        except InfeasibleBudget as exc:
            record.update(status="infeasible", error=str(exc))
        except Exception as exc:
            # BudgetError included: the budget is an input mistake (check_budgets catches it for the probe inputs;
            # this is an evaluation input with fewer visual tokens), never a method's infeasibility
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            log.error("cell %s failed: %s", cell.label, exc)
        peak, growth, kind = memory.result()
        record.update(peak_memory_mb=peak, peak_memory_growth_mb=growth, peak_memory_kind=kind, finished=_now())
        try:
            record["env"] = self.env
        except Exception:
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
    def measure(self, cell: Cell) -> dict[str, Any]:
        """Latency probe, token contract, FLOPs and KV bytes of a cell (the ``costs`` part of its record)."""
        lat = self.config["latency"]
        latency, probe_stats, conditions = latency_probe(self.adapter, cell.spec, self.probe, int(lat["warmup"]), int(lat["new_tokens"]))
        first = probe_stats[0]
        warnings = []
        problems = [f"probe sample {i}: {s.contract_detail}" for i, s in enumerate(probe_stats) if not s.contract_ok]
        if problems:
            warnings.append("token contract: " + "; ".join(problems))
            log.warning("cell %s misses its plan: %s", cell.label, "; ".join(problems))
        flops = self._flops(cell, first)
        if not flops["llm_agree"]:
            message = (
                f"measured LLM prefill FLOPs differ from the analytic count by {flops['llm_rel_diff']:.2e} "
                f"(> {LLM_FLOPS_TOLERANCE:g}) after the in-LLM selection steps are taken out; an uncounted kernel or an unplanned token count is the gap"
            )
            warnings.append(message)
            log.warning("cell %s: %s", cell.label, message)
        return {
            "latency_ms": latency,
            **conditions,
            "latency_protocol": (
                f"batch 1, {len(self.probe)} fixed samples after {lat['warmup']} warm-up calls, {lat['new_tokens']} new "
                "tokens each; engine timings (perf_counter on CPU, synchronised on GPU)"
            ),
            "latency_parts": LATENCY_PARTS,
            "flops": flops,
            "flops_counted_on": FLOPS_NOTE,
            "kv_cache": kv_record(self.adapter, first),
            "tokens": {
                "planned_per_layer": first.plan.tokens_per_layer(),
                "per_layer": list(first.tokens_per_layer),
                "kv_per_layer": list(first.kv_lengths),
                "text": first.text_tokens,
            },
            "contract_ok": not problems,
            "warnings": warnings,
            "env_adapter": self.adapter.describe(),
        }

    def _task(self, cell: Cell, unit: str) -> dict[str, Any]:
        """One task of a cell: the saved result, or an evaluation saved before it is returned."""
        saved = self.store.get_partial(cell.key, f"task-{unit}")
        if saved is not None and saved.get("status") in ("done", "infeasible"):
            return saved
        entry: dict[str, Any] = {"task": unit, "started": _now()}
        lm = self.lm.configure(cell.spec)
        try:
            results = evaluate(lm, [unit], self.task_manager, self.config, self.suite.gen_kwargs_string(), self.foreign_progress)
            scores = task_scores(results)
            if not scores:
                raise RuntimeError(f"lmms-eval reported no metric for task {unit}")
            rows = sample_rows(results, scores)
            by_key = {(r.task, r.doc_id): r for r in lm.requests_log}
            for row in rows:
                req = by_key.get((row["task"], row["doc_id"]))
                if req is not None:
                    row.update(final_tokens=req.final_tokens, layer_average_tokens=req.layer_average_tokens)
            entry.update(
                status="done",
                scores=scores,
                rows=rows,
                tokens={"final": [r.final_tokens for r in lm.requests_log], "layer_average": [r.layer_average_tokens for r in lm.requests_log]},
            )
        except InfeasibleBudget as exc:
            entry.update(status="infeasible", error=str(exc))
        except Exception as exc:
            entry.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
            log.error("cell %s, task %s failed: %s", cell.label, unit, exc)
        entry.update(timing=dict(lm.timing), finished=_now())
        self.store.put_partial(cell.key, f"task-{unit}", entry)
        return entry

    def _flops(self, cell: Cell, stats: Any) -> dict[str, Any]:
        """FLOPs of one probe prefill. Counted once per (method, its parameters, per-layer token pattern): another
        method with the same pattern selects differently (DivPrune's pairwise distances, VisionZip's attention),
        and its own selection compute belongs to its count."""
        pattern = (cell.method, json.dumps(cell.params, sort_keys=True, default=str), tuple(stats.tokens_per_layer), stats.text_tokens, stats.plan.vision)
        count = self._flops_cache.get(pattern)
        if count is None:
            count = prefill_flops(self.adapter, cell.spec, self.adapter.prepare([self.probe[0]]))
            self._flops_cache[pattern] = count
        return flops_record(count)


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
