"""``prunebench list`` and ``prunebench check``."""

from __future__ import annotations

import argparse
import json

from prunebench.core import PruneBenchError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("list", help="list pruning methods (built-in and plugins)",
                              description="List the registered pruning methods with their stages, signals, defaults and paper.")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'fast*'")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_list)

    c = subparsers.add_parser(
        "check", help="run the conformance kit on methods",
        description="Run the conformance kit (no-op = stock generate, token contract, cache consistency, batch = single, "
        "signals = eager, hygiene, determinism) on tiny models. Exits 1 and names the failed property and method "
        "if any check fails.",
    )
    c.add_argument("methods", nargs="+", help="method names, or 'all'")
    c.add_argument("--model", action="append", help="model(s) to check on (default: every tiny model)")
    c.add_argument("--budget", type=positive_int, default=64, help="visual tokens to keep, a positive integer (default 64)")
    c.add_argument("--checks", default="all", help="comma-separated subset of: noop,token_contract,cache,batch,signals,hygiene,determinism")
    c.set_defaults(func=cmd_check)


def positive_int(text: str) -> int:
    """argparse type: a budget is a positive whole number of visual tokens (checked before any model loads)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of visual tokens, e.g. --budget 64") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number of visual tokens; use e.g. --budget 64")
    return value


def cmd_list(args: argparse.Namespace) -> int:
    from prunebench.registry import list_methods, method_info

    infos = [method_info(n) for n in list_methods(args.pattern)]
    if args.json:
        print(json.dumps(infos, indent=2, default=str))
        return 0
    if not infos:
        print(f"no method matches {args.pattern!r}")
        return 1
    for info in infos:
        defaults = ", ".join(f"{k}={v!r}" for k, v in info["defaults"].items()) or "-"
        print(f"{info['name']}\n  stages:    {', '.join(info['stages'])} (positions: {info['positions']})\n"
              f"  signals:   {'; '.join(info['signals']) or '-'}\n  defaults:  {defaults}\n"
              f"  paper:     {info['paper']}\n  from:      {info['origin']}")
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
        results = run_conformance(methods, adapter, checks, budget=args.budget, on_result=lambda r: print(str(r).splitlines()[0], flush=True))
        failures += [r for r in results if not r.passed]
    if failures:
        print(f"\n{len(failures)} check(s) failed:")
        for r in failures:
            print(f"  {r.method} on {r.model}: property '{r.check}' failed: {r.detail}")
        return 1
    print(f"\nall checks passed for {', '.join(names)}")
    return 0
