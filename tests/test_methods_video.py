"""EVS and VidCom² on hand-built clips whose kept sets follow from the algorithms by hand.

Clips are hand-made :class:`VisionView` s with ``unit_kind="frame"`` (T frames of P tokens, frame-major raster
order, identity projector): planted static frames, a planted scene cut and duplicated frames make the temporal
dissimilarities and the frame uniqueness known exactly, so a wrong algorithm (comparing with the first frame
instead of the previous one, giving duplicated frames the larger budget, ...) fails.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prunebench.core import UnsupportedModel
from prunebench.methods.evs import pruning_rate_for, retained_tokens_count, temporal_dissimilarity
from prunebench.methods.vidcom2 import frame_quotas, uniqueness
from prunebench.registry import create_method
from prunebench.views import VisionView


def e(i: int, dim: int = 32) -> torch.Tensor:
    return F.one_hot(torch.tensor(i), dim).float()


def clip_view(*clips: torch.Tensor) -> VisionView:
    """A batch of videos, each (T, P, D), as the adapters hand them over: (B, T * P, D), frames contiguous."""
    video = torch.stack(clips)
    bsz, frames, per_frame, _ = video.shape
    unit_of = (torch.arange(frames * per_frame) // per_frame).expand(bsz, -1)
    return VisionView(features=video.flatten(1, 2), grid=(2, per_frame // 2), projector=lambda f: f, has_cls=False,
                      num_units=frames, unit_kind="frame", unit_of=unit_of)


# -- EVS ---------------------------------------------------------------------------------------------------------
def static_and_cut_clip() -> torch.Tensor:
    """4 frames of 6 tokens. Frame 0: e_p; frame 1 = frame 0 (static, d = 0); frame 2: -e_p (scene cut, d = 2);
    frame 3: tokens 0..2 new (e_{6+p}, orthogonal to frame 2: d = 1), tokens 3..5 = frame 2 (static, d = 0) but
    anti-parallel to frame 0 (a rule comparing with the first frame would keep them)."""
    clip = torch.zeros(4, 6, 32)
    for p in range(6):
        clip[0, p] = clip[1, p] = e(p)
        clip[2, p] = -e(p)
        clip[3, p] = e(6 + p) if p < 3 else -e(p)
    return clip


def test_evs_dissimilarity_is_to_the_previous_frame_and_the_first_frame_ranks_first():
    d = temporal_dissimilarity(static_and_cut_clip()[None].flatten(1, 2), 4).view(4, 6)
    assert d[0].tolist() == [255.0] * 6
    assert d[1].tolist() == pytest.approx([0.0] * 6)
    assert d[2].tolist() == pytest.approx([2.0] * 6)
    assert d[3].tolist() == pytest.approx([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])


def test_evs_drops_static_tokens_and_keeps_the_scene_cut():
    view = clip_view(static_and_cut_clip())
    evs = create_method("evs")
    # frame 0 (reference), then the whole cut frame 2, then the 3 changed tokens of frame 3; no static token
    assert evs.select_vision(view, 15).keep[0].tolist() == list(range(6)) + list(range(12, 18)) + [18, 19, 20]
    # one changed token of frame 3 fits: the lowest raster index of the tie
    assert evs.select_vision(view, 13).keep[0].tolist() == list(range(6)) + list(range(12, 18)) + [18]
    # part of the cut frame: equal dissimilarities, raster order
    assert evs.select_vision(view, 8).keep[0].tolist() == list(range(6)) + [12, 13]
    # below one frame (the engine would keep a whole frame): the exact budget, the first tokens of frame 0
    assert evs.select_vision(view, 4).keep[0].tolist() == [0, 1, 2, 3]


def test_evs_batch_equals_single_samples_with_different_clips():
    first = static_and_cut_clip()
    second = torch.randn(4, 6, 32, generator=torch.Generator().manual_seed(3))
    second[2] = second[1]  # a static frame in the second clip
    evs = create_method("evs")
    batched = evs.select_vision(clip_view(first, second), 11).keep
    assert torch.equal(batched[0], evs.select_vision(clip_view(first), 11).keep[0])
    assert torch.equal(batched[1], evs.select_vision(clip_view(second), 11).keep[0])
    assert not set(range(12, 18)) & set(batched[1].tolist())  # the static frame 2 of the second clip is dropped


def test_evs_refuses_images_and_maps_budgets_to_the_engines_pruning_rate():
    image = VisionView(features=torch.randn(1, 6, 8), grid=(2, 3), projector=lambda f: f)
    with pytest.raises(UnsupportedModel):
        create_method("evs").select_vision(image, 3)
    for frames, per_frame in ((8, 256), (32, 196), (2, 49)):
        total = frames * per_frame
        assert all(retained_tokens_count(frames, per_frame, pruning_rate_for(b, total)) == b for b in range(per_frame, total + 1))
    assert retained_tokens_count(8, 256, 0.99) == 256  # the engine's floor: one frame


# -- VidCom² -----------------------------------------------------------------------------------------------------
def duplicated_clip(unique: int = 3, frames: int = 4, per_frame: int = 8) -> torch.Tensor:
    """``frames`` frames of 16 channels; all but frame ``unique`` are copies of one frame. Channels 8..15 carry
    loud per-token noise (variance ~100: VidCom² drops these high-variance channels); on the quiet channels 0..7
    the copies point along e0 and frame ``unique`` along e1, so after normalisation it lies far from the video
    mean (0.75 e0 + 0.25 e1) and takes the larger budget."""
    gen = torch.Generator().manual_seed(0)
    clip = torch.zeros(frames, per_frame, 16)
    clip[..., 8:] = (torch.randn(per_frame, 8, generator=gen) * 10.0).expand(frames, -1, -1)
    clip[..., 0] = 0.1
    clip[unique, :, 0], clip[unique, :, 1] = 0.0, 0.1
    clip[unique, :, 8:] = torch.randn(per_frame, 8, generator=gen) * 10.0
    return clip


def test_vidcom2_gives_the_unique_frame_the_larger_budget():
    video, _ = uniqueness(duplicated_clip()[None].flatten(1, 2), 4)
    # p is one-hot on frame 3 (temperature 0.01): scale = R (1 + 1 - 1/4) = 3.5 / 8 for it, R (3/4) = 1.5 / 8 for the
    # copies; floors 3, 1, 1, 1 leave 2 tokens for the equal remainders 0.5, which go to the earlier frames 0 and 1
    assert frame_quotas(video, 8).tolist() == [[2, 2, 1, 3]]
    view = clip_view(duplicated_clip())
    keep = create_method("vidcom2").select_vision(view, 8).keep[0]
    assert torch.bincount(view.unit_of[0, keep], minlength=4).tolist() == [2, 2, 1, 3]
    # the unique frame in the middle: the larger budget follows it
    video, _ = uniqueness(duplicated_clip(unique=1)[None].flatten(1, 2), 4)
    assert frame_quotas(video, 8).tolist() == [[2, 4, 1, 1]]  # floors 1, 3, 1, 1; the ties go to frames 0 and 1


def quiet_outliers(frames: int, per_frame: int, outliers: dict[int, int]) -> torch.Tensor:
    """(frames, per_frame, 8): loud per-token noise on channels 4..7 (dropped for its variance); on the quiet
    channels 0..3 every token is 0.1 e0 except the planted outliers (frame -> token), 0.1 e1."""
    gen = torch.Generator().manual_seed(2)
    clip = torch.zeros(frames, per_frame, 8)
    clip[..., 4:] = torch.randn(frames, per_frame, 4, generator=gen) * 10.0
    clip[..., 0] = 0.1
    for frame, token in outliers.items():
        clip[frame, token, :2] = torch.tensor([0.0, 0.1])
    return clip


def test_vidcom2_keeps_the_most_distinct_tokens_of_each_frame():
    # an image (the per-image reading, T = 1): six tokens alike, one outlier; a quota of 1 keeps the outlier
    image = VisionView(features=quiet_outliers(1, 6, {0: 4})[0][None], grid=(2, 3), projector=lambda f: f)
    assert create_method("vidcom2").select_vision(image, 1).keep.tolist() == [[4]]
    # a video of two alike frames: one token per frame, each frame's own outlier
    assert create_method("vidcom2").select_vision(clip_view(quiet_outliers(2, 6, {0: 2, 1: 5})), 2).keep.tolist() == [[2, 11]]


def test_vidcom2_quotas_sum_exactly_to_the_budget_and_batch_equals_single():
    gen = torch.Generator().manual_seed(1)
    clips = [torch.randn(8, 12, 16, generator=gen) * s for s in (1.0, 4.0)]
    method = create_method("vidcom2")
    for keep in (1, 5, 8, 30, 60, 90, 95):
        batched = method.select_vision(clip_view(*clips), keep).keep
        assert batched.shape == (2, keep)
        for b, clip in enumerate(clips):
            assert torch.equal(batched[b], method.select_vision(clip_view(clip), keep).keep[0])
    # the clamp: at R = 0.75 the unique frame's share 0.75 * 1.75 * 8 is cut to its 8 tokens; the copies' 4.5 each
    # floor to 4, the first round gives frames 0, 1, 2 one more (23), the clamp's leftover token goes to frame 0
    video, _ = uniqueness(duplicated_clip()[None].flatten(1, 2), 4)
    assert frame_quotas(video, 24).tolist() == [[6, 5, 5, 8]]
