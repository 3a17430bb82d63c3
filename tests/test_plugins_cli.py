"""Plugins through the `prunebench.methods` entry-point group, and the CLI's errors and exit codes."""

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from prunebench.cli import main

PLUGIN = "pb_throwaway_plugin"


def _prunebench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prunebench.cli", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def installed_plugin(tmp_path_factory):
    """Build and pip-install a throw-away plugin package into this very environment; uninstall afterwards."""
    root: Path = tmp_path_factory.mktemp("plugin")
    (root / PLUGIN).mkdir()
    (root / PLUGIN / "__init__.py").write_text(
        textwrap.dedent('''
        from dataclasses import dataclass
        from prunebench.core import Selection, VisionStagePruner

        @dataclass
        class KeepFirst(VisionStagePruner):
            """Keeps the first tokens in raster order (a throw-away test plugin)."""
            offset: int = 0
            signals = ("raster order",)
            paper = "throw-away plugin"

            def select_vision(self, view, keep):
                import torch
                return Selection(torch.arange(self.offset, self.offset + keep).expand(view.batch_size, -1))

        @dataclass
        class KeepOutside(KeepFirst):
            """A broken plugin: its indices run past the last visual token."""
            offset: int = 600
    ''')
    )
    (root / "pyproject.toml").write_text(
        textwrap.dedent(f'''
        [build-system]
        requires = ["setuptools"]
        build-backend = "setuptools.build_meta"
        [project]
        name = "{PLUGIN}"
        version = "0.0.1"
        [project.entry-points."prunebench.methods"]
        keepfirst = "{PLUGIN}:KeepFirst"
        keepoutside = "{PLUGIN}:KeepOutside"
        [tool.setuptools]
        packages = ["{PLUGIN}"]
    ''')
    )
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--no-index", str(root)]
    subprocess.run(pip, check=True, capture_output=True, timeout=300)
    yield "keepfirst"
    subprocess.run([sys.executable, "-m", "pip", "uninstall", "-y", "-q", PLUGIN], capture_output=True, timeout=300)


def test_plugin_is_listed_with_its_origin(installed_plugin):
    result = _prunebench("list", installed_plugin, "--json")
    assert result.returncode == 0, result.stderr
    (info,) = json.loads(result.stdout)
    assert info["name"] == "keepfirst" and info["stages"] == ["vision"] and "plugin" in info["origin"]
    assert info["defaults"] == {"offset": 0}


def test_plugin_passes_the_conformance_kit(installed_plugin):
    result = _prunebench("check", installed_plugin)
    assert result.returncode == 0, result.stdout + result.stderr
    from prunebench.conformance import CHECKS
    from prunebench.models import TINY_MODELS

    for check in CHECKS:  # all seven properties on every tiny family
        assert result.stdout.count(f"PASS {check} ") == len(TINY_MODELS), (check, result.stdout)
    assert "FAIL" not in result.stdout and "keepfirst" in result.stdout


def test_check_fails_and_names_property_and_method(installed_plugin):
    result = _prunebench("check", "keepoutside", "--checks", "noop,token_contract")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PASS noop" in result.stdout  # keeping everything never calls select
    assert "keepoutside on tiny-llava: property 'token_contract' failed" in result.stdout
    assert "indices must lie in [0, 576)" in result.stdout
    # one line per failure: no traceback unless --debug
    assert "Traceback" not in result.stdout and 'File "' not in result.stdout
    fails = [line for line in result.stdout.splitlines() if line.startswith("FAIL ")]
    from prunebench.models import TINY_MODELS

    assert len(fails) == len(TINY_MODELS) and all("token_contract" in line for line in fails)  # one per tiny family
    assert "rerun with --debug" in result.stdout
    debug = _prunebench("check", "keepoutside", "--checks", "token_contract", "--model", "tiny-llava", "--debug")
    assert debug.returncode == 1 and 'File "' in debug.stdout  # the traceback, indented under its FAIL line


def test_list_shows_signals_paper_and_citation(installed_plugin, monkeypatch, capsys):
    result = _prunebench("list", installed_plugin)
    assert result.returncode == 0, result.stderr
    lines = dict(line.strip().split(":", 1) for line in result.stdout.splitlines()[1:])
    assert lines["signals"].strip() == "raster order" and lines["paper"].strip() == "throw-away plugin"
    assert lines["citation"].strip() == "—"  # declared by no field of the plugin: a dash, not an empty field
    (info,) = json.loads(_prunebench("list", installed_plugin, "--json").stdout)
    assert info["citation"] == "" and info["signals"] == ["raster order"]
    # a built-in method names its BibTeX key
    assert main(["list", "fastv"]) == 0
    out = capsys.readouterr().out
    assert "citation:  chen2024fastv" in out and "paper:     Chen et al." in out


def test_list_shows_a_dash_for_every_undeclared_field(monkeypatch, capsys):
    from dataclasses import dataclass

    from prunebench import registry
    from prunebench.core import VisionStagePruner

    registry.get_method_class("fastv")  # built-ins first

    @dataclass
    class Bare(VisionStagePruner):
        pass

    monkeypatch.setitem(registry._REGISTRY, "pb-bare", Bare)
    monkeypatch.setitem(registry._ORIGIN, "pb-bare", "plugin pb-bare")
    assert main(["list", "pb-bare"]) == 0
    fields = dict(line.strip().split(":", 1) for line in capsys.readouterr().out.splitlines()[1:])
    for name in ("signals", "defaults", "paper", "citation"):
        assert fields[name].strip() == "—", name


def test_check_lines_are_one_line_and_refusals_pass():
    from types import SimpleNamespace

    from prunebench.commands import check_line

    failed = SimpleNamespace(
        check="cache", method="m", model="tiny-llava", passed=False, detail='raised ValueError: bad\nTraceback (most recent call last):\n  File "x.py", line 1'
    )
    assert check_line(failed) == "FAIL cache           m            tiny-llava     raised ValueError: bad"
    assert 'File "x.py"' in check_line(failed, debug=True)
    own = SimpleNamespace(check="cache", method="m", model="tiny-llava", passed=False, detail="bad", traceback="Traceback: deep")
    assert check_line(own).endswith("bad") and "Traceback: deep" in check_line(own, debug=True)
    refused = SimpleNamespace(check="noop", method="m", model="tiny-qwen2_5_vl", passed=False, refused=True, detail="m needs a [CLS] token", traceback=None)
    line = check_line(refused)
    assert line.startswith("PASS ") and line.endswith("refused: m needs a [CLS] token")


class _EntryPoint:
    """Stands in for an importlib.metadata entry point of an installed plugin."""

    def __init__(self, name, obj, dist="pb-fake"):
        self.name, self.value, self._obj = name, f"pb_fake:{name}", obj
        self.dist = type("Dist", (), {"name": dist})()

    def load(self):
        return self._obj


def test_plugin_named_like_a_builtin_is_skipped_with_a_warning(monkeypatch, caplog):
    from dataclasses import dataclass

    from prunebench import registry
    from prunebench.core import VisionStagePruner

    builtin = registry.get_method_class("fastv")  # loads built-ins (and installed plugins) first

    @dataclass
    class Impostor(VisionStagePruner):
        pass

    @dataclass
    class Fine(VisionStagePruner):
        pass

    monkeypatch.setattr(registry, "entry_points", lambda group: [_EntryPoint("fastv", Impostor), _EntryPoint("pb-fine", Fine)])
    monkeypatch.setitem(registry._ORIGIN, "fastv", registry._ORIGIN["fastv"])
    try:
        with caplog.at_level("WARNING", logger="prunebench.registry"):
            registry._load_plugins()  # must not raise: list/check/run would all die with it
        assert registry.get_method_class("fastv") is builtin and registry.method_info("fastv")["origin"] == builtin.__module__
        assert "skipping prunebench plugin fastv" in caplog.text and "already registered" in caplog.text
        assert registry.get_method_class("pb-fine") is Fine and registry.method_info("pb-fine")["origin"] == "plugin pb-fake"
    finally:
        registry._REGISTRY.pop("pb-fine", None)
        registry._ORIGIN.pop("pb-fine", None)


def test_check_rejects_a_non_positive_budget_before_loading_models(capsys):
    for bad in ("0", "-5", "sixty"):
        with pytest.raises(SystemExit) as exit_info:
            main(["check", "random", "--budget", bad])
        assert exit_info.value.code == 2
        assert "--budget" in capsys.readouterr().err


def test_unknown_method_exits_nonzero_with_known_names(capsys):
    assert main(["check", "nosuchmethod"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nosuchmethod'" in err and "fastv" in err


def test_unknown_check_is_an_error(capsys):
    assert main(["check", "random", "--checks", "noop,speed"]) == 2
    assert "unknown check(s) ['speed']" in capsys.readouterr().err


def test_help_teaches_by_example(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "prunebench run --methods" in out and "check" in out


def test_toy_eval_limit_must_be_at_least_one(capsys):
    # a negative limit used to slice [:-1] off every family silently
    from prunebench.toy.cli import main as toy_main

    with pytest.raises(SystemExit):
        toy_main(["eval", "--limit", "-1"])
    assert "at least 1 question per family" in capsys.readouterr().err
