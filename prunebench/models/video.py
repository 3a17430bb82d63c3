"""Video decoding for the video-capable adapters (Video-LLaVA, Qwen2.5-VL): uniform frames with PyAV."""

from __future__ import annotations

from typing import Any

from prunebench.core import PruneBenchError


def video_frames(path: str, count: int = 8) -> tuple[list[Any], float | None]:
    """``count`` uniformly spaced RGB frames of a video file (PyAV) and the rate of those sampled frames
    (``count`` / clip seconds, what qwen-vl-utils hands Qwen2.5-VL for its temporal M-RoPE positions; None
    when the container gives no duration)."""
    try:
        import av  # lazy: PyAV is optional, needed only by video tasks
    except ImportError:
        raise PruneBenchError(f"video {path!r} needs PyAV to decode: pip install av") from None
    with av.open(path) as container:
        stream = container.streams.video[0]
        frames = [f.to_image() for f in container.decode(video=0)]
        rate = float(stream.average_rate) if stream.average_rate else None
    if not frames:
        raise PruneBenchError(f"no frames decoded from {path!r}")
    step = len(frames) / count
    picked = [frames[min(int(i * step), len(frames) - 1)].convert("RGB") for i in range(count)]
    return picked, (count * rate / len(frames) if rate else None)
