"""nox sessions: each builds its own virtual environment from a bare Python 3.11 + pip.

    nox -s demo     install, then sweep 4 methods x 3 budgets on the built-in toy model and shapes suite
    nox -s tests    install, then run the test suite (what CI runs, through .ci/run)
    nox -s bench    install, then run the pytest-benchmark micro-benchmarks
    nox -s demo_small  regenerate results/reference/demo-small (the reduced demo tests/test_demo_reference.py checks)
    nox -s lint     ruff lint and format check (what CI runs first; `pre-commit install` runs the same per commit)
    nox -s reference   install, run the demo afresh and copy it to results/reference/demo (a real run folder)

CPU installs go through constraints-cpu.txt, which pins torch to the CPU build; torchvision is never
installed (on CPU only its CUDA build is reachable, and it breaks transformers). lmms-eval declares
torchvision and ~50 heavy packages, so it is installed with --no-deps plus the `eval` extra.
"""

import os
import shutil

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
CONSTRAINTS = "constraints-cpu.txt"
LMMS_EVAL = "lmms-eval==0.7.3"
RUFF = "ruff==0.17.6"
DEMO_ARGS = ["--methods", "learnpruner,vispruner,cdpruner,random", "--budgets", "32,64,128"]  # the demo's sweep (session demo)
# in-LLM methods beside it, in final mode: on the 6-layer toy LLM a cut at layer 2 cannot average below 192 tokens
LLM_DEMO_ARGS = ["--methods", "fastv,dart,pdrop", "--budgets", "32,64,128", "--budget-mode", "final"]
REFERENCES = {"demo": DEMO_ARGS, "demo-final": LLM_DEMO_ARGS}  # results/reference/<name>
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def install(session: nox.Session, extras: str) -> None:
    session.install("-c", CONSTRAINTS, "torch==2.13.0")
    session.install("-c", CONSTRAINTS, "-e", f".[{extras}]")
    session.install("--no-deps", LMMS_EVAL)
    # run_install, not run: the check must also run under `nox --install-only`
    found = session.run_install("python", "-c", "import importlib.util as u; print(bool(u.find_spec('torchvision')))", silent=True)
    if str(found).strip() == "True":
        session.error("torchvision is installed in this environment; it breaks transformers on CPU: uninstall it")


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    install(session, "eval,test")
    # the conformance kit is ~1000 independent (method, family, property) cases: one worker per core, each on one
    # thread (two workers of two threads each on two cores spin against each other: a quarter of the suite in 16 min,
    # against the whole suite in 5 min on one thread each, same machine)
    threads = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS", "1")}
    session.run("pytest", *(session.posargs or ["-q", "-n", "auto"]), env={**OFFLINE, **threads})


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    install(session, "eval")
    args = session.posargs or [*DEMO_ARGS, "--output", "results/demo"]
    session.run("prunebench", "run", *args, env=OFFLINE)


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    install(session, "eval,test")
    session.run(
        "pytest",
        "tests/benchmarks",
        "--benchmark-only",
        "--benchmark-columns=min,median,max,rounds",
        *session.posargs,
        env={**OFFLINE, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")},
    )


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def reference(session: nox.Session) -> None:
    """Regenerate results/reference/demo (the demo's sweep) and results/reference/demo-final (the in-LLM methods in
    final mode): each sweep into a fresh folder (nothing reused from results/demo), then its plan, config, planned
    cells, per-sample logs and leaderboard copied (prunebench.report.export)."""
    install(session, "eval")
    for name, args in REFERENCES.items():
        fresh = os.path.join(session.create_tmp(), f"{name}-reference")
        shutil.rmtree(fresh, ignore_errors=True)
        session.run("prunebench", "run", *args, "--output", fresh, "--baseline-cache", os.path.join(fresh, ".baselines"), env=OFFLINE)
        session.run("python", "-m", "prunebench.report.export", fresh, f"results/reference/{name}", env=OFFLINE)
        session.run("prunebench", "compare", f"results/reference/{name}", fresh, env=OFFLINE)


@nox.session(python="3.11")
def demo_small(session: nox.Session) -> None:
    """The reduced demo (learnpruner, vispruner, random at 64 + baseline, 10 questions per task) into
    results/reference/demo-small/, the reference tests/test_demo_reference.py compares with."""
    install(session, "eval")
    session.run("python", "tests/demo_small.py", env=OFFLINE)
