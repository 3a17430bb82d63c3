"""A cell's costs: latency probe (with its spread and the CPU load while it ran), FLOPs, KV bytes, peak memory,
and the machine they were measured on."""

from __future__ import annotations

import math
import re
import resource
import sys
from typing import Any

import torch

from prunebench.costs import kv_cache_bytes
from prunebench.engine import Pruner, measure_prefill_flops
from prunebench.environment import cpu_count, git_commit, host, load_average, versions
from prunebench.spec import CellSpec

__all__ = [
    "FLOPS_NOTE",
    "LATENCY_PARTS",
    "LLM_FLOPS_TOLERANCE",
    "PeakMemory",
    "environment",
    "flops_record",
    "kv_record",
    "latency_probe",
    "prefill_flops",
    "sample_latency",
    "spread",
]

FLOPS_NOTE = (
    "per sample: first probe sample, batch 1, prefill up to the first token (vision + the method's selection + LLM + "
    "lm_head at 1 position); analytic counts model compute only"
)
LLM_FLOPS_TOLERANCE = 1e-3  # measured vs analytic LLM prefill FLOPs (relative); the method's in-LLM scoring is the only gap
LATENCY_PARTS = (
    "per probe sample (batch 1, from the prepared batch to the first generated token): "
    "ttft = vision + select_vision + assemble + select_llm + llm_prefill, where vision = the vision tower, "
    "select_vision = the vision stage's selection and the projection of the kept tokens, assemble = planning and building "
    "the LLM input, select_llm = the method's LLM-stage selection (inside the prefill), llm_prefill = the LLM prefill without it; "
    "prefill = select_llm + llm_prefill (the engine's generate window up to the first token), select = select_vision + select_llm; "
    "decode_per_token = mean time per further token, total = ttft + decoding, generate = prefill + decoding. "
    "Each part: median, p90, min, max, q1, q3, iqr over the probe samples (n); the medians need not add up exactly. "
    "load_average (beside latency_ms): the 1-minute load average before and after the probe; cpu_count: the CPUs the process may use"
)


def environment(adapter: Any) -> dict[str, Any]:
    """The machine and code of a cell's record (``env``)."""
    info = adapter.describe()
    return {
        "attn_implementation": info.get("attn_implementation"),
        "device": info.get("device"),
        "dtype": info.get("dtype"),
        "versions": versions(),
        "git": git_commit(),
        **host(),
    }


# -- latency -------------------------------------------------------------------------------------------------------
def spread(values: list[float]) -> dict[str, float] | None:
    """Median, p90, min, max, quartiles and IQR of ``values`` (linear interpolation), with their count ``n``."""
    values = sorted(v for v in values if v is not None and not math.isnan(v))
    if not values:
        return None

    def q(p: float) -> float:
        pos = (len(values) - 1) * p
        lo, hi = math.floor(pos), math.ceil(pos)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)

    return {"median": q(0.5), "p90": q(0.9), "min": values[0], "max": values[-1], "q1": q(0.25), "q3": q(0.75), "iqr": q(0.75) - q(0.25), "n": len(values)}


def sample_latency(timings: dict[str, float]) -> dict[str, float]:
    """One generate call's engine timings as the entries of ``latency_ms`` (see :data:`LATENCY_PARTS`).

    ttft = vision + select_vision + assemble + prefill, and the prefill window holds the LLM-stage selection
    (select_llm) besides the LLM's own prefill (llm_prefill = prefill - select_llm).
    """
    t = timings
    out = {
        "prefill": t.get("prefill_ms"),
        "decode_per_token": t.get("decode_ms_per_token"),
        "total": t.get("total_ms"),
        "vision": t.get("vision_ms"),
        "select": t.get("select_ms"),
        "generate": t.get("generate_ms"),
        "ttft": t.get("ttft_ms"),
        "select_vision": t.get("select_vision_ms"),
        "select_llm": t.get("select_llm_ms"),
        "assemble": t.get("assemble_ms"),
    }
    if None not in (out["prefill"], out["select_llm"]):
        out["llm_prefill"] = out["prefill"] - out["select_llm"]
    return {k: v for k, v in out.items() if v is not None}


def latency_probe(adapter: Any, spec: CellSpec, samples: list[Any], warmup: int, new_tokens: int) -> tuple[dict[str, Any], list[Any], dict[str, Any]]:
    """Batch-1 timings over ``samples`` after ``warmup`` calls.

    Returns (``latency_ms`` record, per-sample Stats, the conditions of the measurement: ``load_average`` (the
    1-minute load average before and after the probe) and ``cpu_count`` (the CPUs this process may use), so a
    reader can tell a loaded machine's figures)."""
    batches = [adapter.prepare([s]) for s in samples]
    stats, parts = [], []
    before = load_average()
    with Pruner(adapter, spec.method, spec.budget, **spec.pruner_options()) as pruner:
        for i in range(warmup):
            pruner.generate(batches[i % len(batches)], max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        for batch in batches:
            out = pruner.generate(batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
            stats.append(out.stats)
            parts.append(sample_latency(out.stats.timings_ms))
    conditions = {"load_average": {"before": before, "after": load_average()}, "cpu_count": cpu_count()}
    names = dict.fromkeys(k for p in parts for k in p)
    record = {name: spread([p.get(name, float("nan")) for p in parts]) for name in names}
    return record, stats, conditions


# -- FLOPs and KV ------------------------------------------------------------------------------------------------------
def prefill_flops(adapter: Any, spec: CellSpec, batch: Any) -> Any:
    """FLOPs of one pruned prefill of ``batch`` (one sample) for this cell (:func:`prunebench.engine.measure_prefill_flops`)."""
    return measure_prefill_flops(adapter, spec.method, spec.budget, batch, **spec.pruner_options())


def flops_record(count: Any) -> dict[str, Any]:
    record = {k: v for k, v in count.as_record().items() if v is None or isinstance(v, (int, float))}
    record["llm_agree"] = count.llm_rel_diff <= LLM_FLOPS_TOLERANCE
    return record


def kv_record(adapter: Any, stats: Any) -> dict[str, Any]:
    """The KV cache of one probe sample, measured and analytic, in MB."""
    analytic = kv_cache_bytes(adapter.llm_shape, [stats.text_tokens + v for v in stats.tokens_per_layer], adapter.dtype.itemsize)
    return {"measured_mb": stats.kv_bytes / 2**20, "analytic_mb": analytic / 2**20}


# -- peak memory -----------------------------------------------------------------------------------------------------
class PeakMemory:
    """Peak memory while one cell runs (latency probe, FLOP count and evaluation at ``--batch_size``).

    CUDA: ``torch.cuda.max_memory_allocated`` after a reset at the start of the cell (tensors only, weights
    included). CPU on Linux: the process's peak resident set (``VmHWM``) after resetting it at the start of the
    cell (``/proc/self/clear_refs``), so the figure includes the resident weights and libraries but no earlier
    cell. ``growth_mb`` is the peak minus the footprint at the start of the cell: what the cell itself added.
    Elsewhere only the process-wide ``ru_maxrss`` exists, and ``kind`` says so. A cell resumed after a kill
    reports the part that ran in the resuming process.
    """

    def __init__(self, device: Any):
        self.device = device
        self.is_cuda = getattr(device, "type", str(device)) == "cuda"
        self.start_mb: float | None = None
        self._peak: float | None = None
        self.kind = ""

    def __enter__(self) -> PeakMemory:
        if self.is_cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mb = torch.cuda.memory_allocated(self.device) / 2**20
            self.kind = "cuda max_memory_allocated during this cell (tensors, weights included)"
        elif _reset_peak_rss():
            self.start_mb = _proc_status_mb("VmRSS")
            self.kind = "peak RSS during this cell (VmHWM after a reset; resident weights included)"
        else:
            self.kind = "process peak RSS (ru_maxrss, whole run so far: this platform cannot reset it)"
        return self

    def __exit__(self, *exc: Any) -> None:
        self._peak = self._read_peak()  # before anything resets the counter again (the next cell)

    def _read_peak(self) -> float:
        if self.is_cuda:
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        if self.start_mb is not None:
            return _proc_status_mb("VmHWM")
        rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return rss_kb / 1024 if sys.platform != "darwin" else rss_kb / 2**20

    def result(self) -> tuple[float, float | None, str]:
        """(peak MB, growth over the start of the cell in MB or None, what the number means)."""
        peak = self._peak if self._peak is not None else self._read_peak()
        growth = None if self.start_mb is None or peak is None else max(peak - self.start_mb, 0.0)
        return peak, growth, self.kind


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # Linux >= 4.0: reset the peak RSS (VmHWM) to the current RSS
        return _proc_status_mb("VmHWM") is not None
    except OSError:
        return False


def _proc_status_mb(field: str) -> float | None:
    try:
        with open("/proc/self/status") as handle:
            text = handle.read()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.M)
    return int(match.group(1)) / 1024 if match else None
