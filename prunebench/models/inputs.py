"""What a task document's visuals become for the engine: one :class:`~prunebench.adapters.base.Sample`.

Shared by the lmms-eval model (each request) and the sweep's latency probe (its fixed samples), so both hand
the engine the same inputs.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

from prunebench.adapters.base import ModelAdapter, Sample
from prunebench.core import PruneBenchError
from prunebench.models.video import video_frames


def flatten_visuals(visuals: Any) -> list[Any]:
    """A task's ``doc_to_visual`` result (one visual, a list, nested lists, None) as a flat list."""
    if visuals is None:
        return []
    if not isinstance(visuals, (list, tuple)):
        return [visuals]
    flat: list[Any] = []
    for v in visuals:
        flat.extend(flatten_visuals(v) if isinstance(v, (list, tuple)) else [v])
    return flat


def question_text(context: Any) -> str:
    """The prompt without lmms-eval's ``<image>`` / ``<video>`` placeholders (the adapter places the visuals)."""
    return str(context).replace("<image>", "").replace("<video>", "").strip()


def sample_from_visuals(adapter: ModelAdapter, task: str, doc_id: int, question: str, visuals: list[Any]) -> Sample:
    """One engine sample from a request's visuals: one image, or a video (a file path or a list of frames)."""
    meta = {"task": task, "doc_id": doc_id}
    sid = f"{task}/{doc_id}"
    video_ok = "video" in getattr(adapter, "budget_scopes", ())
    if len(visuals) == 1 and isinstance(visuals[0], Image.Image):
        return Sample(id=sid, question=question, image=visuals[0], meta=meta)
    if video_ok and len(visuals) == 1 and isinstance(visuals[0], str):
        frames, fps = video_frames(visuals[0])
        return Sample(id=sid, question=question, video=frames, meta={**meta, "fps": fps})
    if video_ok and len(visuals) > 1 and all(isinstance(v, Image.Image) for v in visuals):
        return Sample(id=sid, question=question, video=list(visuals), meta=meta)
    kinds = sorted({type(v).__name__ for v in visuals}) or ["nothing"]
    raise PruneBenchError(
        f"task {task} doc {doc_id} gives {len(visuals)} visual(s) ({', '.join(kinds)}); the {adapter.family} adapter takes "
        + (
            "one image or one video per request"
            if video_ok
            else "exactly one image per request (use a video-capable model such as Video-LLaVA for video tasks)"
        )
    )
