"""The sweep configuration: defaults, then a YAML file (``--config``), then command-line values on top.

Example ``sweep.yaml``::

    model: toy-llava
    suite: shapes
    methods: [random, fastv, visionzip]
    budgets: [32, 64, 128]
    budget_mode: average
    method_args: {fastv: {layer: 3}}
    limit: null
    output: results/toy-shapes

The resolved configuration is saved as ``RUN/config.yaml``.
"""

from __future__ import annotations

import re
from typing import Any

from prunebench.core import BUDGET_MODES, PruneBenchError
from prunebench.spec import AVERAGE, BUDGET_SCOPES, LAYOUTS, PREPROCESS, parse_budget  # the option vocabularies, defined once

DEFAULTS: dict[str, Any] = {
    "model": None,  # None: prunebench.models.DEFAULT_MODEL (toy-llava)
    "suite": "shapes",
    "tasks": None,  # None: the suite's tasks
    "gen_kwargs": {},  # generation overrides for every task (over the suite's), e.g. {max_new_tokens: 8}
    "include_path": [],  # extra lmms-eval task folders
    "methods": ["random", "visionzip", "vispruner"],  # training-free, every family, feasible at any budget (vision-stage)
    "budgets": [32, 64, 128],
    "budget_mode": AVERAGE,
    "budget_scope": "image",
    "preprocess": "hf",
    "layout": None,  # LLaVA-NeXT only: anyres (the adapter's default), fivecrop (papers' 5 x 576), spatial (HiPrune)
    "method_args": {},
    "limit": None,
    "seed": 0,
    "batch_size": 8,
    "device": "cpu",
    "dtype": "auto",
    "output": None,  # None: results/<model>_<suite>_<budget_mode>
    "log_samples": True,
    "baseline_cache": None,  # None: <output parent>/.baselines
    "plugins": [],  # modules to import (they register methods)
    "latency": {"samples": 8, "warmup": 2, "new_tokens": 8},
    "leaderboard": True,
}


def split_list(value: Any) -> list[Any]:
    """``"a,b"`` / ``["a,b", "c"]`` / ``[a, b]`` -> ``[a, b, c]``."""
    if value is None:
        return []
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    out: list[Any] = []
    for v in value:
        out.extend(split_list(v) if isinstance(v, str) else [v])
    return out


def parse_budgets(value: Any) -> list[int]:
    """``"32,64"`` / ``[32, 64]`` -> ``[32, 64]``; anything but a positive whole number is an error (YAML's
    ``2.5`` or ``true`` must not quietly become 2 or 1)."""
    budgets = []
    for item in split_list(value):
        budget = parse_budget(item, allow_none=False)
        if budget not in budgets:
            budgets.append(budget)
    return budgets


def parse_seed(value: Any) -> int:
    """One seed drives the methods and lmms-eval's python / numpy / torch generators alike.

    lmms-eval's own ``--seed 0,1234,1234,1234`` form sets those generators separately; here a comma list is
    accepted only when its values are all equal, since a cell records (and is keyed by) a single seed."""
    if isinstance(value, bool):
        raise PruneBenchError(f"--seed must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    parts = [p.strip() for p in str(value).split(",") if p.strip() and p.strip().lower() != "none"]
    try:
        seeds = {int(p) for p in parts}
    except ValueError:
        raise PruneBenchError(f"--seed must be an integer, got {value!r}") from None
    if len(seeds) != 1:
        raise PruneBenchError(f"--seed {value!r}: prunebench uses one seed for the methods and lmms-eval's random, numpy "
                              "and torch generators; pass a single integer, e.g. --seed 0")
    return seeds.pop()


def parse_method_args(items: Any) -> dict[str, dict[str, Any]]:
    """``["fastv.layer=3", "visionzip.dominant=54,visionzip.contextual=10"]`` -> ``{fastv: {layer: "3"}, ...}``."""
    if isinstance(items, dict):
        return {str(m): dict(v or {}) for m, v in items.items()}
    parsed: dict[str, dict[str, Any]] = {}
    for item in split_list(items):
        match = re.fullmatch(r"([\w\-]+)\.(\w+)=(.*)", str(item))
        if not match:
            raise PruneBenchError(f"method argument {item!r} must look like METHOD.PARAM=VALUE, e.g. fastv.layer=3")
        method, param, value = match.groups()
        parsed.setdefault(method, {})[param] = value
    return parsed


def parse_gen_kwargs(value: Any) -> dict[str, Any]:
    """``"max_new_tokens=8,temperature=0"`` (lmms-eval's --gen_kwargs form) or a mapping -> dict."""
    if not value:
        return {}
    if isinstance(value, dict):
        return dict(value)
    out: dict[str, Any] = {}
    for item in split_list(value):
        if "=" not in str(item):
            raise PruneBenchError(f"--gen_kwargs entries look like KEY=VALUE, got {item!r}")
        key, raw = str(item).split("=", 1)
        try:
            out[key.strip()] = int(raw)
        except ValueError:
            try:
                out[key.strip()] = float(raw)
            except ValueError:
                out[key.strip()] = {"true": True, "false": False}.get(raw.lower(), raw)
    return out


def resolve_config(yaml_path: str | None = None, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Defaults <- YAML <- overrides (``None`` values in overrides mean "not given")."""
    from omegaconf import OmegaConf

    import yaml
    from omegaconf import DictConfig
    from omegaconf.errors import OmegaConfBaseException

    config = OmegaConf.create(DEFAULTS)
    if yaml_path:
        try:
            loaded = OmegaConf.load(yaml_path)
        except FileNotFoundError:
            raise PruneBenchError(f"config file {yaml_path} does not exist") from None
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
            problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
            raise PruneBenchError(f"{yaml_path} is not valid YAML{at}: {problem}; fix it (its keys are the flags' names, "
                                  "see `prunebench run --help`) or replay a run's RUN/config.yaml") from None
        if not isinstance(loaded, DictConfig):
            raise PruneBenchError(f"{yaml_path} must be a mapping of sweep keys (methods: ..., budgets: ...), not a "
                                  f"{type(loaded).__name__}")
        unknown = sorted(set(loaded.keys()) - set(DEFAULTS))
        if unknown:
            raise PruneBenchError(f"{yaml_path}: unknown key(s) {unknown}; known keys: {', '.join(DEFAULTS)}")
        try:
            config = OmegaConf.merge(config, loaded)
        except (OmegaConfBaseException, TypeError, ValueError) as exc:  # e.g. a mapping where a list or value belongs
            shapes = ", ".join(f"{k}: {type(v).__name__}" for k, v in DEFAULTS.items() if v is not None)
            raise PruneBenchError(f"{yaml_path}: {str(exc).splitlines()[0]}; each key takes what its flag takes "
                                  f"(defaults: {shapes})") from None
    try:
        data = OmegaConf.to_container(config, resolve=True)
    except OmegaConfBaseException as exc:
        raise PruneBenchError(f"{yaml_path or 'config'}: {str(exc).splitlines()[0]}") from None
    for key, value in (overrides or {}).items():
        if value is None:
            continue
        if key == "method_args":
            merged = parse_method_args(data.get("method_args") or {})
            for method, params in parse_method_args(value).items():
                merged.setdefault(method, {}).update(params)
            data["method_args"] = merged
        elif key == "latency":
            data["latency"].update({k: v for k, v in value.items() if v is not None})
        else:
            data[key] = value
    return normalise(data)


def normalise(data: dict[str, Any]) -> dict[str, Any]:
    data = dict(data)
    data["methods"] = [str(m) for m in split_list(data["methods"])]
    data["budgets"] = parse_budgets(data["budgets"])
    data["tasks"] = split_list(data["tasks"]) or None
    data["include_path"] = split_list(data["include_path"])
    data["plugins"] = split_list(data["plugins"])
    data["gen_kwargs"] = parse_gen_kwargs(data.get("gen_kwargs"))
    data["method_args"] = parse_method_args(data.get("method_args") or {})
    if not data["methods"]:
        raise PruneBenchError("no methods to sweep; pass e.g. --methods random,fastv")
    if "none" in data["methods"]:
        data["methods"] = [m for m in data["methods"] if m != "none"]  # the baseline always runs
    if not data["budgets"] and data["methods"]:
        raise PruneBenchError("no budgets to sweep; pass e.g. --budgets 32,64,128")
    if data["budget_mode"] not in BUDGET_MODES:
        raise PruneBenchError(f"--budget-mode must be one of {', '.join(BUDGET_MODES)}, got {data['budget_mode']!r}")
    if data["budget_scope"] not in BUDGET_SCOPES:
        raise PruneBenchError(f"--budget-scope must be one of {', '.join(BUDGET_SCOPES)}, got {data['budget_scope']!r}")
    if data["preprocess"] not in PREPROCESS:
        raise PruneBenchError(f"--preprocess must be one of {', '.join(PREPROCESS)}, got {data['preprocess']!r}")
    if data.get("layout") is not None and data["layout"] not in LAYOUTS:
        raise PruneBenchError(f"--layout must be one of {', '.join(LAYOUTS)} (LLaVA-NeXT), got {data['layout']!r}")
    if data["limit"] is not None:
        limit = _number(data["limit"], "--limit", float)
        if limit <= 0:
            raise PruneBenchError(f"--limit must be a number of documents per task (>= 1) or a fraction in (0, 1), "
                                  f"got {data['limit']}")
        data["limit"] = int(limit) if limit.is_integer() and limit >= 1 else limit
    data["seed"] = parse_seed(data["seed"])
    data["batch_size"] = _number(data["batch_size"], "--batch_size", int)
    if data["batch_size"] < 1:
        raise PruneBenchError("--batch_size must be >= 1")
    latency = data["latency"]
    if not isinstance(latency, dict) or set(latency) - set(DEFAULTS["latency"]):
        raise PruneBenchError(f"latency must be a mapping with keys {', '.join(DEFAULTS['latency'])} "
                              f"(e.g. latency: {{samples: 8, warmup: 2, new_tokens: 8}}), got {latency!r}")
    data["latency"] = {k: _number(latency.get(k, v), f"latency.{k}", int) for k, v in DEFAULTS["latency"].items()}
    if data["latency"]["samples"] < 1 or data["latency"]["new_tokens"] < 1 or data["latency"]["warmup"] < 0:
        raise PruneBenchError(f"latency needs samples >= 1, new_tokens >= 1 and warmup >= 0, got {data['latency']}")
    stray = sorted(set(data["method_args"]) - set(data["methods"]))
    if stray:
        raise PruneBenchError(f"--method-args for {stray}, which are not among the swept methods {data['methods']}")
    return data


def _number(value: Any, name: str, kind: type) -> Any:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise PruneBenchError(f"{name} must be a number, got {value!r}") from None
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise PruneBenchError(f"{name} must be a whole number, got {value!r}")
    return number


def to_yaml(data: dict[str, Any]) -> str:
    from omegaconf import OmegaConf

    return OmegaConf.to_yaml(OmegaConf.create(data))
