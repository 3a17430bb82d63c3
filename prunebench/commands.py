"""``prunebench list``, ``prunebench models`` and ``prunebench check``."""

from __future__ import annotations

import argparse
import json

from prunebench.core import PruneBenchError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "list",
        help="list pruning methods (built-in and plugins)",
        description="List the registered pruning methods with their stages, signals, defaults and paper.",
    )
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'fast*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    c = subparsers.add_parser(
        "check",
        help="run the conformance kit on methods",
        description="Run the conformance kit (no-op = stock generate, token contract, cache consistency, batch = single, "
        "signals = eager, hygiene, determinism) on tiny models. Exits 1 and names the failed property and method "
        "if any check fails.",
    )
    c.add_argument("methods", nargs="+", help="method names, or 'all'")
    c.add_argument("--model", action="append", help="model(s) to check on (default: every tiny model)")
    c.add_argument("--budget", type=positive_int, default=64, help="visual tokens to keep, a positive integer (default 64)")
    c.add_argument("--checks", default="all", help="comma-separated subset of: noop,token_contract,cache,batch,signals,hygiene,determinism")
    c.add_argument("--debug", action="store_true", help="print the traceback of each failed check (default: one line per failure)")
    c.set_defaults(func=cmd_check)

    m = subparsers.add_parser(
        "models",
        help="list the runnable models",
        description="List every model `prunebench run --model` takes by name: the shipped toy model, the tiny test models "
        "(random weights) and the checkpoints each family loads, with family, LLM depth, visual tokens per image (from the "
        "config, nothing downloaded) and whether the weights are on this machine (the local Hugging Face cache, offline). "
        "Any other hub id or folder of a supported family (llava, llava_next, video_llava, qwen2_5_vl, llava_onevision, qwen3_vl) loads too.",
    )
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(func=cmd_models)


def positive_int(text: str) -> int:
    """argparse type: a budget is a positive whole number of visual tokens (checked before any model loads)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of visual tokens, e.g. --budget 64") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of visual tokens; use e.g. --budget 64")
    return value


MISSING = "—"  # a field a plugin does not declare


def _text(value: object) -> str:
    """A list field joined, or the dash for an empty one (a plugin without ``signals`` / ``paper`` / ``citation``)."""
    if isinstance(value, (list, tuple)):
        value = "; ".join(str(v) for v in value if str(v).strip())
    text = str(value or "").strip()
    return text or MISSING


def method_listing(name: str) -> dict:
    """What ``prunebench list`` shows: the registry's description plus the BibTeX key (``citation``)."""
    from prunebench.registry import get_method_class, method_info

    info = dict(method_info(name))
    info.setdefault("citation", str(getattr(get_method_class(name), "citation", "") or ""))
    return info


def cmd_list(args: argparse.Namespace) -> int:
    from prunebench.registry import list_methods

    infos = [method_listing(n) for n in list_methods(args.pattern)]
    if args.json:
        print(json.dumps(infos, indent=2, default=str))
        return 0
    if not infos:
        print(f"no method matches {args.pattern!r}")
        return 1
    for info in infos:
        defaults = ", ".join(f"{k}={v!r}" for k, v in info["defaults"].items()) or MISSING
        print(
            f"{info['name']}\n  stages:    {_text(info['stages'])} (positions: {info['positions']})\n"
            f"  signals:   {_text(info['signals'])}\n  defaults:  {defaults}\n"
            f"  paper:     {_text(info['paper'])}\n  citation:  {_text(info['citation'])}\n  from:      {info['origin']}"
        )
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from prunebench.models import DEFAULT_MODEL, catalog_rows

    rows = catalog_rows()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = [
        ("name", "model"),
        ("family", "family"),
        ("llm_layers", "LLM layers"),
        ("visual_tokens", "visual tokens / image"),
        ("weights", "weights"),
        ("note", "note"),
    ]
    cells = [[title for _, title in columns]] + [
        [str(r[key]) + (" (default)" if key == "name" and r["name"] == DEFAULT_MODEL else "") for key, _ in columns] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns) - 1)]
    for k, row in enumerate(cells):
        print("  ".join(text.ljust(w) for text, w in zip(row, widths)) + "  " + row[-1])
        if k == 0:
            print("  ".join("-" * w for w in widths) + "  " + "-" * max(len(r[-1]) for r in cells))
    print(
        "\nrun one with `prunebench run --model NAME`; any other hub id or local folder of these families loads too. "
        "Tiny models have random weights: their scores are meaningless (they exist for the tests and `prunebench check`)."
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    import torch

    from prunebench.conformance import CHECKS, run_conformance
    from prunebench.models import TINY_MODELS, load_model
    from prunebench.models.defaults import resolve_method
    from prunebench.registry import get_method_class, list_methods

    names = list_methods() if args.methods == ["all"] else args.methods
    for name in names:
        get_method_class(name)  # unknown names fail before any model is built
    checks = CHECKS if args.checks == "all" else tuple(c.strip() for c in args.checks.split(","))
    unknown = sorted(set(checks) - set(CHECKS))
    if unknown:
        raise PruneBenchError(f"unknown check(s) {unknown}; known: {', '.join(CHECKS)}")
    torch.manual_seed(0)
    failures = []
    for model_name in args.model or sorted(TINY_MODELS):
        adapter = load_model(model_name)
        methods = [resolve_method(n, model_name, adapter.family) for n in names]  # per-model defaults table
        results = run_conformance(methods, adapter, checks, budget=args.budget, on_result=lambda r: print(check_line(r, args.debug), flush=True))
        failures += [r for r in results if not r.passed and not getattr(r, "refused", False)]
    if failures:
        print(f"\n{len(failures)} check(s) failed:")
        for r in failures:
            print(f"  {r.method} on {r.model}: property '{r.check}' failed: {one_line(r.detail)}")
        if not args.debug:
            print("(tracebacks: rerun with --debug)")
        return 1
    print(f"\nall checks passed for {', '.join(names)}")
    return 0


def one_line(text: object) -> str:
    """The first non-empty line of a check's detail (the rest, if any, is a traceback)."""
    for line in str(text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def check_traceback(result: object) -> str:
    """A failed check's traceback: the result's own ``traceback`` field where it has one, else the lines of its
    detail after the first."""
    own = getattr(result, "traceback", None)
    if own:
        return str(own).rstrip()
    lines = str(getattr(result, "detail", "") or "").strip().splitlines()
    return "\n".join(lines[1:]).rstrip()


def check_line(result: object, debug: bool = False) -> str:
    """One line per check: PASS / FAIL, property, method, model and a one-line detail; a method's refusal to run
    on a family (UnsupportedModel) is a pass that reads "refused: <reason>". ``debug`` appends the traceback of
    a failure."""
    refused = bool(getattr(result, "refused", False))
    passed = bool(getattr(result, "passed", False)) or refused
    detail = one_line(getattr(result, "detail", ""))
    if refused:
        detail = detail if detail.startswith("refused") else f"refused: {detail}"
    line = f"{'PASS' if passed else 'FAIL'} {result.check:<15} {result.method:<12} {result.model:<14} {detail}".rstrip()
    if debug and not passed:
        trace = check_traceback(result)
        if trace:
            line += "\n" + "\n".join("    " + t for t in trace.splitlines())
    return line
