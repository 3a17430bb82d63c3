"""Selection micro-benchmarks (pytest-benchmark), collected only under ``--benchmark-only``.

``nox -s bench`` (or ``pytest tests/benchmarks --benchmark-only``) runs them; the default test run, whose
addopts hold ``--benchmark-skip``, does not even collect these files, so it never builds their CLIP-L-sized
inputs. After a run the terminal summary lists every method's median as a ratio of random's median in the
same group, measured in the same run (absolute times depend on the machine; ratios travel better).
"""

from __future__ import annotations

from collections import defaultdict


def pytest_ignore_collect(collection_path, config):
    if not config.getoption("benchmark_only", False) and collection_path.suffix == ".py" and collection_path.name != "conftest.py":
        return True
    return None


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not getattr(session, "benchmarks", None):
        return
    groups: dict[str, dict[str, float]] = defaultdict(dict)
    for bench in session.benchmarks:
        if bench.stats and "method" in bench.extra_info:
            groups[bench.group][bench.extra_info["method"]] = bench.stats.median
    terminalreporter.section("selection time: median, and ratio to random's median in the same group and run")
    for group in sorted(groups):
        medians = groups[group]
        base = medians.get("random")
        terminalreporter.write_line(f"[{group}]")
        for method, median in sorted(medians.items(), key=lambda kv: kv[1]):
            ratio = f"{median / base:9.1f}x" if base else "      n/a"
            terminalreporter.write_line(f"  {method:<22} {median * 1e3:10.3f} ms  {ratio}")
