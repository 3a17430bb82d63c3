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
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, TypeVar

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
    builtin = importlib.import_module("prunebench.methods")  # found at run time, as plugins are: methods import the registry

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
                log.warning(
                    'skipping prunebench plugin %s (%s): %s; rename its entry point in the plugin\'s [project.entry-points."%s"] table',
                    ep.name,
                    ep.value,
                    exc,
                    ENTRY_POINT_GROUP,
                )
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
        raise UnknownMethodError(
            f"unknown method {name!r}; known methods: {known} (plugins register through the '{ENTRY_POINT_GROUP}' entry-point group)"
        ) from None


def create_method(name: str, **overrides: Any) -> PruningMethod:
    """An instance of method ``name`` with its paper defaults, overridden by ``overrides``."""
    cls = get_method_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        raise PruneBenchError(f"{name} has no parameter(s) {unknown}; its parameters are: {sorted(fields) or 'none'}")
    return cls(**{k: _coerce(fields[k], v) for k, v in overrides.items()})


_SCALARS: dict[str, type] = {"bool": bool, "int": int, "float": float, "str": str}
_SEQUENCE_HINTS = ("tuple[", "list[", "Sequence[")
_ARTICLE = {int: "an"}


def _coerce(field: dataclasses.Field, value: Any) -> Any:
    """Command-line values (``--method-args name.field=VALUE``) arrive as strings: convert to the field's type.

    By the default's type: bool (1/0, true/false, yes/no, on/off), int, float, str; a list or tuple default takes
    ``2,6,12`` or ``[2,6,12]`` (also ``(2, 6, 12)``, empty ``[]``) with elements of its first element's type
    (or the annotation's, for an empty default). A str default whose annotation also allows a sequence
    (e.g. ``layers: Sequence[int] | str = "auto"``) takes a bracketed or comma-separated list as that sequence;
    one whose annotation allows an int takes an integer literal as an int. Anything else stays a string.
    """
    if not isinstance(value, str) or field.default is dataclasses.MISSING:
        return value
    default, hint = field.default, str(field.type)
    try:
        if isinstance(default, (list, tuple)):
            element = type(default[0]) if default else _element_type(hint)
            return type(default)(_parse_scalar(item, element) for item in _split_list(value))
        if isinstance(default, str):
            text = value.strip()
            if any(h in hint for h in _SEQUENCE_HINTS) and ((text[:1] in "[(" and text) or "," in text):
                return tuple(_parse_scalar(item, _element_type(hint)) for item in _split_list(text))
            if "int" in hint.replace("[int", "") and _is_int(text):
                return int(text)
            return value
        return _parse_scalar(value, type(default))
    except ValueError:
        if isinstance(default, (list, tuple)) or any(h in hint for h in _SEQUENCE_HINTS):
            element = type(default[0]) if isinstance(default, (list, tuple)) and default else _element_type(hint)
            raise PruneBenchError(
                f"parameter {field.name}={value!r} should be a comma-separated list of {element.__name__}s, e.g. {field.name}=2,6,12 or {field.name}=[2,6,12]"
            ) from None
        raise PruneBenchError(f"parameter {field.name}={value!r} should be {_ARTICLE.get(type(default), 'a')} {type(default).__name__}") from None


def _split_list(text: str) -> list[str]:
    text = text.strip()
    if len(text) >= 2 and text[0] + text[-1] in ("[]", "()"):
        text = text[1:-1]
    items = [item.strip().strip("'\"") for item in text.split(",")]
    if items and not items[-1]:
        items.pop()  # a trailing comma
    return [] if items == [""] else items


def _element_type(hint: str) -> type:
    for marker in _SEQUENCE_HINTS:
        if marker in hint:
            inner = hint.split(marker, 1)[1].split("]", 1)[0].split(",", 1)[0].strip()
            return _SCALARS.get(inner, str)
    return str


def _parse_scalar(text: str, kind: type) -> Any:
    if kind is bool:
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if kind in (int, float):
        return kind(text)
    return text


def _is_int(text: str) -> bool:
    return text.lstrip("+-").isdigit()


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
