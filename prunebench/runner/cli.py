"""``prunebench run`` (sweep methods x budgets on a suite) and ``prunebench status RUN``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from prunebench.core import BUDGET_MODES, PruneBenchError
from prunebench.runner.config import BUDGET_SCOPES, DEFAULTS, LAYOUTS, PREPROCESS, VISION_STOPS
from prunebench.store import ResultStore, atomic_write_text

RUN_DESCRIPTION = """\
Sweep pruning methods x token budgets over the tasks of a suite, evaluated by lmms-eval 0.7, and record one
result per cell (every metric of each task, RelAcc and agreement against the unpruned model, visual tokens per
layer, time to first token split into vision / selection / LLM prefill, decode time per token, FLOPs measured
and analytic, KV-cache bytes, peak memory) in a crash-safe run folder.

The model is loaded once; the unpruned baseline (method 'none') is evaluated once per model, suite, limit, seed
and preprocessing and reused by every cell and by later runs (RUN/../.baselines). Rerunning the same command
skips finished cells and, inside an unfinished cell, the tasks already evaluated, so an interrupted sweep
(even kill -9) resumes where it stopped; a task that raises is recorded with its traceback and the others go
on; a budget a method cannot meet is recorded as infeasible; a budget above the inputs' visual tokens is an
error before the sweep starts. The key of a cell includes the weights' and the code's fingerprints, so a
retrained model or an edited method is never answered from old results.
"""

RUN_EPILOG = """\
budgets (the budget contract):
  --budgets counts visual tokens. --budget-mode average (default): the mean over the LLM's decoder layers of
  the visual tokens each layer sees during prefill (equal prefill compute). --budget-mode final: the tokens
  left after the last pruning stage. Pre-LLM methods meet both alike; an in-LLM method (FastV at layer K)
  cannot reach every average budget and such cells are reported as infeasible, never altered.

examples:
  prunebench run                                          toy model, shapes suite, default methods and budgets
  prunebench run --methods fastv,visionzip --budgets 64,128 --budget-mode final --method-args fastv.layer=3
  prunebench run --model tiny-llava --tasks shapes_count --limit 10 --output results/smoke
  prunebench run --config sweep.yaml --limit 20           YAML config, command line wins
  prunebench status results/smoke                         finished / failed / infeasible / pending cells

outputs (RUN = --output):
  RUN/config.yaml             the resolved config (defaults <- --config YAML <- flags); replay with --config
  RUN/suite.json              the suite's tasks, include paths and generation kwargs
  RUN/plan.json               every cell of the sweep with its key (what `prunebench status` compares against)
  RUN/cells/<key>.json        one record per finished cell (schema: prunebench/store.py), written atomically
  RUN/samples/<key>.jsonl     per-sample answers, targets and scores of that cell
  RUN/partial/<key>/          a cell in progress: its costs and each evaluated task (a rerun resumes from them)
  RUN/leaderboard.md|.csv     method x budget table (also printed at the end)
  RUN/../.baselines/          unpruned baselines shared by later runs (--baseline-cache)
  RUN/damaged/                files found damaged (bad JSON, wrong schema, garbled samples), set aside with a reason in
                              RUN/damaged/index.jsonl; their cells are recomputed by the next run
  RUN/.lock, RUN/.lock.json   one writer per folder: a second run into RUN fails naming the holder (or waits: --wait);
                              a different sweep (other methods, budgets, options) into RUN is refused: use another --output

security: weights load from safetensors only. A --config file read from disk that names plugins, include_path
task folders or a suite file would import their code: it is listed and refused unless --trust-config is given
(the same values typed as flags need no such confirmation). Outputs follow the umask.

a config file holds the same keys as the flags (underscored): model, suite, tasks, methods, budgets,
budget_mode, budget_scope, preprocess, layout, method_args ({fastv: {layer: 3}}), limit, seed, batch_size,
device, dtype, output, include_path, plugins, gen_kwargs, latency ({samples: 8, warmup: 2, new_tokens: 8});
`prunebench run --config RUN/config.yaml` replays a run.

the same pruned model from lmms-eval's own command line:
  lmms-eval --model prunebench --model_args pretrained=toy-llava,method=fastv,budget=64,budget_mode=final \\
      --tasks shapes --include_path <prunebench>/suites/shapes
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "run",
        help="sweep methods x budgets on a suite (resumable)",
        description=RUN_DESCRIPTION,
        epilog=RUN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_argument_group("what to run")
    what.add_argument("--config", metavar="YAML", help="sweep config (omegaconf YAML); command-line values override it")
    what.add_argument("--model", help="model name (toy-llava [default], tiny-llava), hub id or folder")
    what.add_argument("--suite", help="suite name (shapes [default], image, video) or path of a suite YAML")
    what.add_argument("--tasks", help="comma-separated lmms-eval tasks replacing the suite's (e.g. shapes_count,shapes_exist)")
    what.add_argument(
        "--include_path", "--include-path", dest="include_path", action="append", metavar="DIR", help="extra folder of lmms-eval task YAMLs (repeatable)"
    )
    what.add_argument("--methods", help=f"comma-separated methods (see `prunebench list`); default {','.join(DEFAULTS['methods'])}")
    what.add_argument("--budgets", help=f"comma-separated visual-token budgets; default {','.join(map(str, DEFAULTS['budgets']))}")
    what.add_argument(
        "--budget-mode",
        "--budget_mode",
        dest="budget_mode",
        choices=BUDGET_MODES,
        help="budget = layer-average visual tokens (default) or tokens after the last stage",
    )
    what.add_argument(
        "--budget-scope",
        "--budget_scope",
        dest="budget_scope",
        choices=BUDGET_SCOPES,
        help="what a budget counts for multi-crop / video inputs (default image; recorded)",
    )
    what.add_argument("--preprocess", choices=PREPROCESS, help="image preprocessing: the model's HF processor (default) or the paper's")
    what.add_argument(
        "--layout",
        choices=LAYOUTS,
        help="LLaVA-NeXT visual layout: anyres (stock, default), fivecrop (the papers' fixed 5 x 576 tokens) or "
        "spatial (HiPrune's: the native AnyRes grid, no unpadding, no newlines)",
    )
    what.add_argument(
        "--vision-stop",
        "--vision_stop",
        dest="vision_stop",
        choices=VISION_STOPS,
        help="run the vision encoder up to the feature layer (default, as serving engines do) or every layer "
        "(full: stock transformers); same answers, different vision time and FLOPs (recorded, in the key)",
    )
    what.add_argument(
        "--method-args",
        "--method_args",
        dest="method_args",
        action="append",
        metavar="M.P=V",
        help="method parameter, e.g. fastv.layer=3 (repeatable or comma-separated)",
    )
    what.add_argument("--plugins", help="comma-separated Python modules to import first (they register extra methods)")
    how = p.add_argument_group("how to run (lmms-eval names)")
    how.add_argument(
        "--gen_kwargs",
        "--gen-kwargs",
        dest="gen_kwargs",
        metavar="K=V,...",
        help="generation overrides for every task, lmms-eval style (e.g. max_new_tokens=8)",
    )
    how.add_argument("--limit", type=float, help="documents per task (an int), or a fraction < 1; default: all")
    how.add_argument(
        "--seed",
        help="seed of random methods and of lmms-eval's random/numpy/torch generators (default 0); "
        "lmms-eval's comma form is accepted when all its values are equal",
    )
    how.add_argument("--batch_size", "--batch-size", dest="batch_size", type=int, help="evaluation batch size (default 8); latency is always timed at 1")
    how.add_argument("--device", help="cpu (default), cuda, cuda:1, ...")
    how.add_argument("--dtype", help="model dtype: auto (default), float32, bfloat16, float16")
    how.add_argument("--output", "--output_path", dest="output", metavar="RUN", help="run folder (default results/<model>_<suite>_<mode>)")
    how.add_argument(
        "--baseline-cache",
        "--baseline_cache",
        dest="baseline_cache",
        metavar="DIR",
        help="shared store of unpruned baselines reused across runs (default: <parent of RUN>/.baselines)",
    )
    how.add_argument(
        "--log_samples",
        "--log-samples",
        dest="log_samples",
        action=argparse.BooleanOptionalAction,
        help="keep per-sample answers (default on; needed for agreement)",
    )
    how.add_argument("--latency-samples", dest="latency_samples", type=int, help="samples timed per cell (default 8)")
    how.add_argument("--latency-warmup", dest="latency_warmup", type=int, help="warm-up calls before timing (default 2)")
    how.add_argument("--latency-new-tokens", dest="latency_new_tokens", type=int, help="tokens generated per timed call (default 8)")
    how.add_argument("--no-leaderboard", dest="leaderboard", action="store_false", default=None, help="do not print/write the leaderboard")
    how.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars (lmms-eval's own bars are shown only with -v)")
    how.add_argument("--dry-run", action="store_true", help="print the resolved config and the cells, run nothing")
    how.add_argument(
        "--wait", action="store_true", help="if another run holds RUN, wait for it to finish instead of failing at once (one writer per run folder)"
    )
    how.add_argument(
        "--trust-config",
        dest="trust_config",
        action="store_true",
        help="allow a --config file that names plugins, task folders (include_path) or a suite file: their Python "
        "code is imported (lmms-eval runs a task's !function helpers); without it such a config is refused",
    )
    p.set_defaults(func=cmd_run)

    s = subparsers.add_parser(
        "status",
        help="finished, failed, infeasible, damaged and pending cells of a run",
        description="Show the cells of a run folder: finished, failed (with the error), infeasible (with the reason), "
        "damaged (with what is wrong; the next run sets the file aside and recomputes the cell) and pending.",
    )
    s.add_argument("run", metavar="RUN", help="run folder (the --output of `prunebench run`)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.set_defaults(func=cmd_status)


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    latency = {"samples": args.latency_samples, "warmup": args.latency_warmup, "new_tokens": args.latency_new_tokens}
    return {
        "model": args.model,
        "suite": args.suite,
        "tasks": args.tasks,
        "include_path": args.include_path,
        "methods": args.methods,
        "budgets": args.budgets,
        "budget_mode": args.budget_mode,
        "budget_scope": args.budget_scope,
        "preprocess": args.preprocess,
        "layout": args.layout,
        "vision_stop": args.vision_stop,
        "method_args": args.method_args,
        "plugins": args.plugins,
        "limit": args.limit,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "device": args.device,
        "dtype": args.dtype,
        "output": args.output,
        "log_samples": args.log_samples,
        "leaderboard": args.leaderboard,
        "baseline_cache": args.baseline_cache,
        "gen_kwargs": args.gen_kwargs,
        "latency": latency if any(v is not None for v in latency.values()) else None,
    }


def _quiet_lmms_eval(verbose: bool) -> None:
    """lmms-eval and datasets log every task at INFO; keep warnings. (lmms-eval's progress bars are filtered by
    the sweep itself: TQDM_DISABLE cannot, since tqdm reads it when torch first imports it.)"""
    if verbose:
        return
    try:
        from loguru import logger

        logger.remove()
        logger.add(sys.stderr, level="WARNING")
    except ImportError:
        pass
    for name in ("datasets", "transformers", "lmms-eval"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import datasets

        datasets.disable_progress_bars()
    except ImportError:
        pass


def cmd_run(args: argparse.Namespace) -> int:
    from prunebench.runner.config import config_code, resolve_config, to_yaml
    from prunebench.runner.sweep import Sweep

    overrides = overrides_from_args(args)
    code = config_code(args.config, overrides)
    if code and not getattr(args, "trust_config", False):
        raise PruneBenchError(
            f"{args.config} would import code: {'; '.join(code)}. Read it, then rerun with --trust-config (or give these values as flags yourself)"
        )
    if code:
        print(f"--trust-config: importing the code {args.config} names: {'; '.join(code)}", file=sys.stderr)
    config = resolve_config(args.config, overrides)
    verbose = getattr(args, "verbose", 0) > 0
    sweep = Sweep(config, progress=args.progress, foreign_progress=verbose and args.progress)
    if args.dry_run:
        print(to_yaml(sweep.config))
        for cell in sweep.cells:
            state, detail = sweep.store.state(cell.key)
            state = "pending" if state == "missing" else state
            print(f"{cell.key}  {cell.label:24s} {state}  {cell.params}" + (f"  ({detail})" if state == "damaged" else ""))
        return 0
    _quiet_lmms_eval(verbose)
    with sweep.store.lock(wait=getattr(args, "wait", False)):  # the leaderboard too is written under the run's lock
        result = sweep.run()
        paths = write_leaderboard(sweep.store, echo=print) if config.get("leaderboard", True) else []
    counts = status_counts(sweep.store)
    print(
        f"\n{counts['done']} done, {counts['infeasible']} infeasible, {counts['failed']} failed, {counts['pending']} pending"
        + (f", {counts['damaged']} damaged" if counts.get("damaged") else "")
        + " "
        f"({len(result.computed)} computed now, {len(result.skipped)} finished earlier, {len(result.reused)} from the baseline cache)"
    )
    print(f"results: {sweep.store.root.resolve()}")
    for path in paths:
        print(f"leaderboard: {path.resolve()}")
    print(f"figures: prunebench plot {sweep.store.root}")
    return 1 if counts["failed"] else 0


def write_leaderboard(store: Any, echo: Any = print) -> list[Path]:
    """leaderboard.md / leaderboard.csv in the run folder (the report package's tables when installed)."""
    try:
        from prunebench.report import leaderboard, to_csv, to_markdown  # lazy: optional (pandas/matplotlib), with a fallback table

        df = leaderboard(store)
        markdown, csv = to_markdown(df), to_csv(df)
    except ImportError:
        df = simple_leaderboard(list(store.records()))
        markdown, csv = df.to_markdown(index=False) if _has_tabulate() else df.to_string(index=False), df.to_csv(index=False)
    md_path, csv_path = store.root / "leaderboard.md", store.root / "leaderboard.csv"
    atomic_write_text(md_path, markdown + "\n")
    atomic_write_text(csv_path, csv)
    echo("\n" + markdown)
    return [md_path, csv_path]


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def simple_leaderboard(records: list[dict[str, Any]]):
    """Rows method x budget; columns: each task, RelAcc, agreement, TTFT ms, TFLOPs, KV MB (fallback table)."""
    import pandas as pd

    rows = []
    for r in records:
        row: dict[str, Any] = {"method": r.get("method"), "budget": r.get("budget") if r.get("budget") is not None else "all", "status": r.get("status")}
        for task, entry in (r.get("tasks") or {}).items():
            row[task] = entry.get("score")
        row["RelAcc"] = r.get("relacc")
        row["agreement"] = r.get("agreement")
        latency = r.get("latency_ms") or {}
        row["TTFT ms"] = (latency.get("ttft") or latency.get("prefill") or {}).get("median")
        flops = r.get("flops") or {}
        row["TFLOPs"] = flops.get("measured_tflops", flops.get("analytic_tflops"))
        row["KV MB"] = (r.get("kv_cache") or {}).get("measured_mb")
        rows.append(row)
    df = pd.DataFrame(rows)
    if not df.empty:
        df["_order"] = df["method"].ne("none")
        df = df.sort_values(["_order", "method", "budget"], key=lambda s: s.astype(str)).drop(columns="_order")
    return df


def status_counts(store: Any) -> dict[str, int]:
    report = run_status(store.root)
    return {k: len(v) for k, v in report.items()}


def run_status(root: str | Path) -> dict[str, list[dict[str, Any]]]:
    root = Path(root)
    store = ResultStore(root)
    plan_path = root / "plan.json"
    if not plan_path.exists() and not store.exists():
        raise PruneBenchError(f"{root} is not a prunebench run folder (no plan.json or cells/); run `prunebench run --output {root}` first")
    store.on_damage = lambda _msg: None  # status reads only; damage shows as the cell's state
    plan = store.plan()
    if plan is None and plan_path.exists():
        raise PruneBenchError(f"{plan_path} is damaged; rerun `prunebench run --output {root}` (it sets it aside and rewrites it)")
    if not plan:
        plan = [{"key": p.stem, "label": p.stem} for p in sorted(store.cells_dir.glob("*.json"))]
        for cell in plan:
            record = store.get(cell["key"])
            if record is not None:
                cell["label"] = f"{record.get('method')}@{record.get('budget')}"
    out: dict[str, list[dict[str, Any]]] = {"done": [], "failed": [], "infeasible": [], "damaged": [], "pending": []}
    for cell in plan:
        status, detail = store.state(cell["key"])
        record = store.get(cell["key"]) if status in ("done", "failed", "infeasible") else None
        status = "pending" if status == "missing" else status
        out.setdefault(status, []).append(
            {**cell, "error": detail if status == "damaged" else (record or {}).get("error"), "finished": (record or {}).get("finished")}
        )
    return out


def status_lines(root: str | Path) -> list[str]:
    report = run_status(root)
    total = sum(len(v) for v in report.values())
    lines = [f"{root}: {total} cells - " + ", ".join(f"{len(v)} {k}" for k, v in report.items())]
    for status in ("done", "infeasible", "failed", "damaged", "pending"):
        for cell in report.get(status, []):
            detail = f"  ({cell['error']})" if cell.get("error") else ""
            lines.append(f"  {status:10s} {cell['label']:24s} {cell['key']}{detail}")
    return lines


def cmd_status(args: argparse.Namespace) -> int:
    if args.json:
        print(json.dumps(run_status(args.run), indent=1))
        return 0
    print("\n".join(status_lines(args.run)))
    return 0
