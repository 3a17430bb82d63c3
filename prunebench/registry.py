"""Method registry: ``register_method`` / ``list_methods`` / ``create_method`` (timm-style), plus plugins.

Built-in methods live in ``methods/`` (installed as ``prunebench.methods``) and register on import. A
third-party package adds methods through the entry-point group ``prunebench.methods``; each entry point
names a method class (or a module that registers its methods on import)::

    [project.entry-points."prunebench.methods"]
    mymethod = "my_package.mymethod:MyMethod"
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import logging
import pkgutil
from importlib.metadata import entry_points
from typing import Any, Callable, TypeVar

from prunebench.core import PruneBenchError, PruningMethod

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "prunebench.methods"
_REGISTRY: dict[str, type[PruningMethod]] = {}
_ORIGIN: dict[str, str] = {}
_LOADED = False

M = TypeVar("M", bound=type[PruningMethod])


class UnknownMethodError(PruneBenchError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: make ``cls`` (a ``PruningMethod`` subclass) available as ``name``."""

    def decorator(cls: M) -> M:
        if not (isinstance(cls, type) and issubclass(cls, PruningMethod)):
            raise TypeError(f"@register_method({name!r}) expects a PruningMethod subclass, got {cls!r}")
        if not dataclasses.is_dataclass(cls):
            cls = dataclasses.dataclass(cls)  # hyper-parameters are dataclass fields
        existing = _REGISTRY.get(name)
        if existing is not None and existing is not cls and f"{existing.__module__}.{existing.__qualname__}" != f"{cls.__module__}.{cls.__qualname__}":
            raise ValueError(f"method name {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")
        cls.name = name
        _REGISTRY[name] = cls
        _ORIGIN.setdefault(name, cls.__module__)
        return cls

    return decorator


def _load_builtins() -> None:
    import prunebench.methods as builtin

    for info in pkgutil.iter_modules(builtin.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{builtin.__name__}.{info.name}")


def _load_plugins() -> None:
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the built-ins down with it
            log.warning("could not load prunebench plugin %s (%s): %s", ep.name, ep.value, exc)
            continue
        if isinstance(obj, type) and issubclass(obj, PruningMethod) and _REGISTRY.get(ep.name) is not obj:
            try:
                register_method(ep.name)(obj)
            except (ValueError, TypeError) as exc:  # e.g. a name a built-in already has: the built-in stays
                log.warning("skipping prunebench plugin %s (%s): %s; rename its entry point in the plugin's "
                            "[project.entry-points.\"%s\"] table", ep.name, ep.value, exc, ENTRY_POINT_GROUP)
                continue
        origin = f"plugin {ep.dist.name if ep.dist else ep.value}"
        if isinstance(obj, type):
            if _REGISTRY.get(ep.name) is obj:
                _ORIGIN[ep.name] = origin
        else:  # a module whose import registered its methods
            prefix = getattr(obj, "__name__", "")
            for name, cls in _REGISTRY.items():
                if prefix and (cls.__module__ == prefix or cls.__module__.startswith(prefix + ".")):
                    _ORIGIN[name] = origin


def _ensure_loaded() -> None:
    global _LOADED
    if not _LOADED:
        _LOADED = True
        _load_builtins()
        _load_plugins()


def list_methods(pattern: str = "*") -> list[str]:
    """Registered method names matching a shell-style pattern, sorted."""
    _ensure_loaded()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatch(n, pattern))


def get_method_class(name: str) -> type[PruningMethod]:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(list_methods())
        raise UnknownMethodError(f"unknown method {name!r}; known methods: {known} (plugins register through the '{ENTRY_POINT_GROUP}' entry-point group)") from None


def create_method(name: str, **overrides: Any) -> PruningMethod:
    """An instance of method ``name`` with its paper defaults, overridden by ``overrides``."""
    cls = get_method_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise PruneBenchError(f"{name} has no parameter(s) {unknown}; its parameters are: {sorted(fields) or 'none'}")
    return cls(**{k: _coerce(fields[k], v) for k, v in overrides.items()})


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    """Command-line values arrive as strings: convert to the field's default type."""
    if not isinstance(value, str) or field.default is dataclasses.MISSING:
        return value
    default = field.default
    try:
        if isinstance(default, bool):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if isinstance(default, int):
            return int(value)
        if isinstance(default, float):
            return float(value)
    except ValueError:
        raise PruneBenchError(f"parameter {field.name}={value!r} should be a {type(default).__name__}") from None
    return value


def method_info(name: str) -> dict[str, Any]:
    """What ``prunebench list`` shows for a method."""
    cls = get_method_class(name)
    defaults = {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}
    return {
        "name": name,
        "stages": list(cls.stages),
        "signals": list(cls.signals),
        "positions": cls.position_policy if isinstance(cls.position_policy, str) else "compact",
        "defaults": defaults,
        "paper": cls.paper,
        "origin": _ORIGIN.get(name, cls.__module__),
    }
