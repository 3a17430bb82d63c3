"""Suites: every named lmms-eval task exists in lmms-eval 0.7.3's task index (no data downloaded)."""

import pytest

pytest.importorskip("lmms_eval.tasks")

from prunebench.core import PruneBenchError  # noqa: E402
from prunebench.runner.evaluate import cached_task_manager  # noqa: E402
from prunebench.suites.registry import builtin_suites, load_suite  # noqa: E402


@pytest.fixture(scope="module")
def all_tasks():
    from prunebench.suites.shapes import TASK_DIR

    return set(cached_task_manager((str(TASK_DIR),)).all_tasks)


@pytest.mark.parametrize("name", ["image", "video", "shapes"])
def test_every_task_of_a_suite_is_known_to_lmms_eval(name, all_tasks):
    suite = load_suite(name)
    assert suite.tasks and suite.description
    missing = [t for t in suite.tasks if t not in all_tasks]
    assert not missing, f"suite {name}: lmms-eval 0.7.3 has no task(s) {missing}"


def test_image_suite_covers_the_papers_benchmarks():
    tasks = load_suite("image").tasks
    for expected in ("gqa", "mmbench_en_dev", "mme", "pope", "scienceqa_img", "textvqa_val", "vqav2_val", "seedbench", "mmvet"):
        assert expected in tasks
    assert load_suite("image").gen_kwargs_string() == "do_sample=False,temperature=0"


def test_suite_files_and_errors(tmp_path):
    assert {"image", "video", "shapes"} <= set(builtin_suites())
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ntasks: [shapes_count]\ninclude_path: tasks\ndescription: d\n")
    suite = load_suite(str(path))
    assert suite.include_path == [str((tmp_path / "tasks").resolve())] and suite.tasks == ["shapes_count"]
    assert load_suite("shapes", tasks=["shapes_exist"]).tasks == ["shapes_exist"]
    with pytest.raises(PruneBenchError, match="unknown suite"):
        load_suite("nope")
    path.write_text("tasks: [a]\nbogus: 1\n")
    with pytest.raises(PruneBenchError, match="unknown keys"):
        load_suite(str(path))
