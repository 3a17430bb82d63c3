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

The resolved configuration is saved as ``RUN/config.yaml`` (interpolations such as ``${oc.env:USER,me}`` resolved,
so a replay writes to the same place).

Code from a config file: a config read from disk whose ``plugins``, ``include_path`` or suite file (a path, not a
built-in suite name) survive into the resolved config names code that the run would import (a plugin module,
the ``!function`` helpers of lmms-eval task YAMLs). :func:`config_code` lists it; ``prunebench run`` prints it and
refuses unless ``--trust-config`` is given. Values typed on the command line (``--plugins``, ``--include_path``,
``--suite path``) are the user's own and need no flag.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from prunebench.core import BUDGET_MODES, PruneBenchError
from prunebench.spec import AVERAGE, BUDGET_SCOPES, LAYOUTS, PREPROCESS, VISION_STOPS, parse_budget  # the option vocabularies, defined once

DTYPES = ("auto", "float32", "bfloat16", "float16")
# config keys that do not make a sweep different (a rerun may change them freely)
NOT_THE_SWEEP = ("leaderboard", "output", "baseline_cache", "log_samples")

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
    "vision_stop": "feature",  # run the ViT up to the feature layer ("full": every layer, as stock transformers)
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
        raise PruneBenchError(
            f"--seed {value!r}: prunebench uses one seed for the methods and lmms-eval's random, numpy "
            "and torch generators; pass a single integer, e.g. --seed 0"
        )
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
    import yaml
    from omegaconf import DictConfig, OmegaConf
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
            raise PruneBenchError(
                f"{yaml_path} is not valid YAML{at}: {problem}; fix it (its keys are the flags' names, "
                "see `prunebench run --help`) or replay a run's RUN/config.yaml"
            ) from None
        if not isinstance(loaded, DictConfig):
            raise PruneBenchError(f"{yaml_path} must be a mapping of sweep keys (methods: ..., budgets: ...), not a {type(loaded).__name__}")
        unknown = sorted(set(loaded.keys()) - set(DEFAULTS))
        if unknown:
            raise PruneBenchError(f"{yaml_path}: unknown key(s) {unknown}; known keys: {', '.join(DEFAULTS)}")
        try:
            config = OmegaConf.merge(config, loaded)
        except (OmegaConfBaseException, TypeError, ValueError) as exc:  # e.g. a mapping where a list or value belongs
            shapes = ", ".join(f"{k}: {type(v).__name__}" for k, v in DEFAULTS.items() if v is not None)
            raise PruneBenchError(f"{yaml_path}: {str(exc).splitlines()[0]}; each key takes what its flag takes (defaults: {shapes})") from None
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
        elif key in ("output", "baseline_cache") and isinstance(value, str) and "${" in value:
            data[key] = _resolve_interpolation(value, key)  # saved resolved: a replay must write to the same place
        else:
            data[key] = value
    return normalise(data)


def _resolve_interpolation(value: str, name: str) -> str:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        return str(OmegaConf.to_container(OmegaConf.create({"v": value}), resolve=True)["v"])
    except OmegaConfBaseException as exc:
        raise PruneBenchError(f"--{name} {value!r}: {str(exc).splitlines()[0]}; fix the ${{...}} interpolation or give a plain path") from None


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
    if data.get("vision_stop", "feature") not in VISION_STOPS:
        raise PruneBenchError(f"--vision-stop must be one of {', '.join(VISION_STOPS)}, got {data['vision_stop']!r}")
    if data.get("layout") is not None and data["layout"] not in LAYOUTS:
        raise PruneBenchError(f"--layout must be one of {', '.join(LAYOUTS)} (LLaVA-NeXT), got {data['layout']!r}")
    if data["limit"] is not None:
        data["limit"] = parse_limit(data["limit"])
    if data["dtype"] not in DTYPES:
        raise PruneBenchError(f"--dtype must be one of {', '.join(DTYPES)}, got {data['dtype']!r}")
    data["device"] = str(data["device"])
    check_device(data["device"])
    data["seed"] = parse_seed(data["seed"])
    data["batch_size"] = _number(data["batch_size"], "--batch_size", int)
    if data["batch_size"] < 1:
        raise PruneBenchError("--batch_size must be >= 1")
    latency = data["latency"]
    if not isinstance(latency, dict) or set(latency) - set(DEFAULTS["latency"]):
        raise PruneBenchError(
            f"latency must be a mapping with keys {', '.join(DEFAULTS['latency'])} (e.g. latency: {{samples: 8, warmup: 2, new_tokens: 8}}), got {latency!r}"
        )
    data["latency"] = {k: _number(latency.get(k, v), f"latency.{k}", int) for k, v in DEFAULTS["latency"].items()}
    if data["latency"]["samples"] < 1 or data["latency"]["new_tokens"] < 1 or data["latency"]["warmup"] < 0:
        raise PruneBenchError(f"latency needs samples >= 1, new_tokens >= 1 and warmup >= 0, got {data['latency']}")
    stray = sorted(set(data["method_args"]) - set(data["methods"]))
    if stray:
        raise PruneBenchError(f"--method-args for {stray}, which are not among the swept methods {data['methods']}")
    return data


def parse_limit(value: Any) -> int | float:
    """``--limit``: a whole number of documents per task (>= 1) or a fraction in (0, 1), as lmms-eval reads it;
    anything else (1.5, 0, -3, true) is an error (lmms-eval would evaluate int(1.5) = 1 document)."""
    limit = None if isinstance(value, bool) else _number(value, "--limit", float)
    if limit is None or not math.isfinite(limit) or limit <= 0 or (limit >= 1 and not limit.is_integer()):
        raise PruneBenchError(
            f"--limit must be a number of documents per task (a whole number >= 1) or a fraction in (0, 1), got {value!r}; e.g. --limit 20 or --limit 0.1"
        )
    return int(limit) if limit >= 1 else limit


def check_device(device: str) -> None:
    """``--device``: a torch device this build and machine have (cuda on a CPU build is an error, not a traceback)."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise PruneBenchError(f"--device {device!r} is not a torch device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise PruneBenchError(
                f"--device {device}: this torch build or machine has no CUDA GPU; use --device cpu (or install a CUDA build of torch on a GPU machine)"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise PruneBenchError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s); use cuda:0..cuda:{torch.cuda.device_count() - 1}")
    elif dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise PruneBenchError(f"--device {device}: MPS is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise PruneBenchError(f"--device {device!r}: prunebench runs on cpu, cuda or mps")


def config_code(yaml_path: str | None, overrides: dict[str, Any] | None = None) -> list[str]:
    """What a config file read from disk would have the run import: its plugin modules, its lmms-eval task
    folders (their ``!function`` Python helpers) and a suite YAML given by path (its include paths), each as
    one phrase; values overridden on the command line are not the file's and are not listed."""
    if not yaml_path:
        return []
    from omegaconf import OmegaConf

    try:
        loaded = OmegaConf.to_container(OmegaConf.load(yaml_path), resolve=False)
    except Exception:
        return []
    if not isinstance(loaded, dict):
        return []
    overrides = overrides or {}
    found = []
    if overrides.get("plugins") is None:
        found += [f"plugin module {m}" for m in split_list(loaded.get("plugins"))]
    if overrides.get("include_path") is None:
        found += [f"task folder {p} (the Python of its !function entries)" for p in split_list(loaded.get("include_path"))]
    suite = loaded.get("suite")
    if overrides.get("suite") is None and isinstance(suite, str) and ("/" in suite or "." in suite or "$" in suite):
        found.append(f"suite file {suite} (the task folders it includes)")
    return found


def import_plugins(modules: list[str]) -> None:
    """Import ``--plugins`` (they register methods); one that does not import is a one-line error."""
    import importlib

    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise PruneBenchError(
                f"--plugins {module}: cannot import it ({type(exc).__name__}: {exc}); install it, add its folder to PYTHONPATH, or fix the module name"
            ) from None


def check_same_sweep(root: Path, config: dict[str, Any], plan: list[dict[str, Any]] | None) -> None:
    """Refuse to overwrite the ``config.yaml`` / ``plan.json`` of a different sweep in run folder ``root``.

    The same sweep (the same resolved config, ``NOT_THE_SWEEP`` keys aside) may rerun there, also after a code or
    weights change gave its cells new keys; any other is an error (plans are never merged: one folder, one
    sweep). ``plan``: the folder's validated plan.json (None: none), consulted when config.yaml is missing."""
    from omegaconf import OmegaConf

    path = Path(root) / "config.yaml"
    fix = (
        f"choose another --output for this sweep, or rerun {root} with its own settings "
        f"(`prunebench run --config {path}`, or the same methods, budgets and options)"
    )
    if path.exists():
        try:
            old = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        except Exception:
            old = None
        if isinstance(old, dict):
            old = {**old, "output": config.get("output")}
            try:
                old = normalise({**DEFAULTS, **old})
            except PruneBenchError:
                pass
            diffs = sweep_differences(old, config)
            if diffs:
                raise PruneBenchError(f"{root} holds a different sweep ({'; '.join(diffs[:4])}{'; ...' if len(diffs) > 4 else ''}); {fix}")
            return
    if plan:
        old_labels = sorted(str(c.get("label")) for c in plan)
        new_labels = sorted(_labels(config))
        if old_labels != new_labels:
            raise PruneBenchError(f"{root} holds a different sweep (cells {', '.join(old_labels[:6])}); {fix}")


def _labels(config: dict[str, Any]) -> list[str]:
    return ["none (unpruned)"] + [f"{m}@{b}" for m in config["methods"] for b in config["budgets"]]


def sweep_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The settings in which two resolved configs make different sweeps (``NOT_THE_SWEEP`` keys aside), as
    ``key: old -> new`` phrases; a key one of them lacks counts with its default."""
    out = []
    for key in sorted(set(old) | set(new)):
        if key in NOT_THE_SWEEP:
            continue
        a, b = old.get(key, DEFAULTS.get(key)), new.get(key, DEFAULTS.get(key))
        if a != b:
            out.append(f"{key}: {a!r} -> {b!r}")
    return out


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
