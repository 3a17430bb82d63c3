"""Bad inputs are one-line errors before anything is written; a config read from disk does not import code
unasked; weights load from safetensors only. (issue 13, points 5, 6 and 7)"""

from __future__ import annotations

import errno
import os

import pytest

pytest.importorskip("lmms_eval.evaluator")

from prunebench.cli import main
from prunebench.core import PruneBenchError
from prunebench.runner.config import config_code, resolve_config

RUN = ["run", "--model", "tiny-llava", "--tasks", "shapes_count", "--methods", "random", "--budgets", "8", "--limit", "1", "--no-progress"]


def _one_line_error(capsys, *needles):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err
    return err


# -- 13.6: bad inputs --------------------------------------------------------------------------------------------------
def test_output_that_is_a_file(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("mine")
    assert main([*RUN, "--output", str(target)]) == 2
    _one_line_error(capsys, "is a file, not a folder", "choose another --output")
    assert target.read_text() == "mine"


@pytest.mark.parametrize(
    "code, fix", [(errno.ENOSPC, "free disk space"), (errno.EROFS, "choose a writable --output"), (errno.EACCES, "choose a writable --output")]
)
def test_a_full_disk_or_read_only_folder_is_one_line(tmp_path, capsys, monkeypatch, code, fix):
    import prunebench.records

    def refuse(*args, **kwargs):
        raise OSError(code, os.strerror(code), str(kwargs.get("dir", "?")))

    monkeypatch.setattr(prunebench.records.tempfile, "mkstemp", refuse)  # every write of the store starts here (atomic_write_text)
    root = tmp_path / "run"
    assert main([*RUN, "--output", str(root)]) == 2
    _one_line_error(capsys, os.strerror(code), fix, "--debug")
    assert not root.exists(), "nothing is left in --output"
    with pytest.raises(OSError):
        main(["--debug", *RUN, "--output", str(root)])


def test_plugins_that_do_not_import(tmp_path, capsys):
    root = tmp_path / "run"
    assert main([*RUN, "--output", str(root), "--plugins", "no_such_prunebench_plugin"]) == 2
    _one_line_error(capsys, "--plugins no_such_prunebench_plugin: cannot import it", "ModuleNotFoundError", "PYTHONPATH")
    assert not root.exists()


def test_bogus_dtype(tmp_path, capsys):
    assert main([*RUN, "--output", str(tmp_path / "run"), "--dtype", "bogus"]) == 2
    _one_line_error(capsys, "--dtype must be one of auto, float32, bfloat16, float16")
    assert not (tmp_path / "run").exists()


def test_cuda_on_a_cpu_build(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main([*RUN, "--output", str(tmp_path / "run"), "--device", "cuda"]) == 2
    _one_line_error(capsys, "--device cuda", "no CUDA GPU", "use --device cpu")
    assert main([*RUN, "--output", str(tmp_path / "run"), "--device", "tpu9"]) == 2
    _one_line_error(capsys, "cpu, cuda or cuda:N")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value, expected", [(1.5, None), (0, None), (-2, None), ("nan", None), (True, None), (3.0, 3), ("20", 20), (0.25, 0.25)])
def test_limit_is_a_count_or_a_fraction(value, expected):
    if expected is None:
        with pytest.raises(PruneBenchError, match=r"a whole number >= 1\) or a fraction in \(0, 1\)"):
            resolve_config(None, {"limit": value})
    else:
        limit = resolve_config(None, {"limit": value})["limit"]
        assert limit == expected and type(limit) is type(expected)


def test_an_interpolated_output_is_resolved_once_and_saved_resolved(tmp_path, monkeypatch):
    from prunebench.runner import Sweep

    monkeypatch.setenv("PB_TEST_WHO", "alice")
    config = resolve_config(
        None, {"model": "tiny-llava", "tasks": "shapes_count", "methods": "random", "budgets": "8", "output": str(tmp_path / "${oc.env:PB_TEST_WHO,nobody}")}
    )
    assert config["output"] == str(tmp_path / "alice")
    sweep = Sweep(config, progress=False, echo=lambda _m: None)
    sweep.write_plan()
    monkeypatch.setenv("PB_TEST_WHO", "bob")  # another user replays the saved config
    replay = resolve_config(str(tmp_path / "alice" / "config.yaml"))
    assert replay["output"] == str(tmp_path / "alice")


def test_an_unknown_task_is_refused_before_plan_and_config_are_written(tmp_path, tiny_llava):
    from prunebench.runner import Sweep

    config = resolve_config(
        None, {"model": "tiny-llava", "tasks": "no_such_task_anywhere", "methods": "random", "budgets": "8", "limit": 1, "output": str(tmp_path / "run")}
    )
    sweep = Sweep(config, progress=False, echo=lambda _m: None)
    sweep._adapter = tiny_llava
    with pytest.raises(PruneBenchError, match="does not know task"):
        sweep.run()
    assert not (tmp_path / "run").exists()


# -- 13.5: a different sweep never overwrites a run's plan and config -----------------------------------------------
def test_a_different_sweep_into_a_run_folder_is_refused(tmp_path, capsys):
    from prunebench.runner import Sweep

    root = tmp_path / "run"
    base = {"model": "tiny-llava", "tasks": "shapes_count", "budgets": "8", "limit": 1, "output": str(root)}
    first = Sweep(resolve_config(None, {**base, "methods": "random"}), progress=False, echo=lambda _m: None)
    first.write_plan()
    plan, config = (root / "plan.json").read_text(), (root / "config.yaml").read_text()
    assert main([*RUN[:6], "fastv", *RUN[7:], "--output", str(root)]) == 2
    _one_line_error(capsys, "holds a different sweep", "methods: ['random'] -> ['fastv']", "choose another --output")
    assert (root / "plan.json").read_text() == plan and (root / "config.yaml").read_text() == config
    assert main([*RUN, "--output", str(root), "--dry-run"]) == 0, "the same sweep is welcome"


# -- 13.7: code from configs ------------------------------------------------------------------------------------------
def _config_with_code(tmp_path, plugin="prunebench_trust_probe"):
    (tmp_path / f"{plugin}.py").write_text("import os\nopen(os.environ['PB_TRUST_MARKER'], 'w').write('imported')\n")
    path = tmp_path / "config.yaml"
    path.write_text(
        f"model: tiny-llava\ntasks: [shapes_count]\nmethods: [random]\nbudgets: [8]\nlimit: 1\nplugins: [{plugin}]\n"
        f"include_path: [{tmp_path / 'tasks'}]\noutput: {tmp_path / 'run'}\n"
    )
    return path


def test_replaying_a_config_that_names_code_needs_trust_config(tmp_path, capsys, monkeypatch):
    path = _config_with_code(tmp_path)
    marker = tmp_path / "imported"
    monkeypatch.setenv("PB_TRUST_MARKER", str(marker))
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tasks").mkdir()
    assert main(["run", "--config", str(path), "--dry-run"]) == 2
    _one_line_error(capsys, "would import code", "plugin module prunebench_trust_probe", f"task folder {tmp_path / 'tasks'}", "--trust-config")
    assert not marker.exists(), "nothing was imported"
    assert main(["run", "--config", str(path), "--dry-run", "--trust-config"]) == 0
    assert marker.read_text() == "imported" and "importing the code" in capsys.readouterr().err


def test_values_typed_on_the_command_line_need_no_trust(tmp_path):
    path = _config_with_code(tmp_path)
    assert config_code(None, {"plugins": "x"}) == []
    assert config_code(str(path), {"plugins": "mine", "include_path": ["mine"]}) == []
    assert config_code(str(path), {}) == ["plugin module prunebench_trust_probe", f"task folder {tmp_path / 'tasks'} (the Python of its !function entries)"]
    suite = tmp_path / "suite.yaml"
    suite.write_text(f"suite: {tmp_path / 'my_suite.yaml'}\n")
    assert config_code(str(suite)) == [f"suite file {tmp_path / 'my_suite.yaml'} (the task folders it includes)"]
    (tmp_path / "builtin.yaml").write_text("suite: shapes\nmethods: [fastv]\n")
    assert config_code(str(tmp_path / "builtin.yaml")) == []


# -- 13.7: safetensors only -------------------------------------------------------------------------------------------
@pytest.fixture
def pickled_toy(tmp_path):
    """The toy checkpoint with its weights as a (weights-only, harmless) pytorch_model.bin instead of safetensors."""
    import shutil

    import torch
    from safetensors.torch import load_file

    import prunebench.toy

    folder = tmp_path / "toy-bin"
    shutil.copytree(prunebench.toy.TOY_MODEL_DIR, folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    return folder


def test_toy_eval_loads_safetensors_only(pickled_toy, capsys):
    from prunebench.toy.evaluate import load

    with pytest.raises(PruneBenchError, match="safetensors only"):
        load(pickled_toy)
    assert main(["toy", "eval", "--model", str(pickled_toy), "--limit", "1"]) == 2
    _one_line_error(capsys, "holds no *.safetensors weights")


def test_toy_train_init_from_loads_safetensors_only(pickled_toy, tmp_path):
    from prunebench.toy.train import train

    with pytest.raises(PruneBenchError, match="safetensors only"):
        train(tmp_path / "out", vision_steps=0, steps=1, stop_after=0, init_from=pickled_toy, progress=False)


def test_no_pickle_loading_in_the_package():
    import re
    from pathlib import Path

    import prunebench

    root = Path(prunebench.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        text = path.read_text()
        for match in re.finditer(r"torch\.load\((?![^)]*weights_only=True)|pickle\.loads?\(", text):
            offenders.append(f"{path.relative_to(root)}:{text[: match.start()].count(chr(10)) + 1}")
        for match in re.finditer(r"ForConditionalGeneration\.from_pretrained\(([^)]*)\)", text):
            if "use_safetensors=True" not in match.group(1) and "README" not in path.name:
                offenders.append(f"{path.relative_to(root)}:{text[: match.start()].count(chr(10)) + 1}")
    assert not offenders, offenders
