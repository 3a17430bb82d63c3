"""Suites: every named lmms-eval task exists in lmms-eval 0.7.3's task index (no data downloaded)."""

import pytest

pytest.importorskip("lmms_eval.tasks")

from prunebench.core import PruneBenchError
from prunebench.runner.evaluate import cached_task_manager
from prunebench.suites.registry import builtin_suites, load_suite


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


def test_a_suite_of_its_own_tasks_indexes_only_its_folders(all_tasks):
    """shapes comes from its include path alone: the index holds only that folder's tasks (milliseconds, not the
    seconds of lmms-eval's ~2000 bundled tasks); a bundled task needs the full index; an unknown one is an error."""
    from prunebench.runner.evaluate import task_index
    from prunebench.suites.shapes import TASK_DIR

    own = task_index(["shapes_count", "shapes_exist"], [str(TASK_DIR)])
    assert "shapes_count" in own.all_tasks and "mme" not in own.all_tasks and len(own.all_tasks) < 50
    mixed = task_index(["shapes_count", "mme"], [str(TASK_DIR)])
    assert {"shapes_count", "mme"} <= set(mixed.all_tasks)
    with pytest.raises(PruneBenchError, match="does not know task"):
        task_index(["no_such_task"], [str(TASK_DIR)])
