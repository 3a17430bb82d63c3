"""EVS, VidCom² and FastVID on hand-built clips whose kept sets follow from the algorithms by hand.

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
from prunebench.methods.fastvid import segment_ids
from prunebench.methods.vidcom2 import frame_quotas, uniqueness
from prunebench.registry import create_method
from prunebench.views import VisionView, sample_generators


def e(i: int, dim: int = 32) -> torch.Tensor:
    return F.one_hot(torch.tensor(i), dim).float()


def clip_view(*clips: torch.Tensor) -> VisionView:
    """A batch of videos, each (T, P, D), as the adapters hand them over: (B, T * P, D), frames contiguous."""
    video = torch.stack(clips)
    bsz, frames, per_frame, _ = video.shape
    unit_of = (torch.arange(frames * per_frame) // per_frame).expand(bsz, -1)
    return VisionView(
        features=video.flatten(1, 2), grid=(2, per_frame // 2), projector=lambda f: f, has_cls=False, num_units=frames, unit_kind="frame", unit_of=unit_of
    )


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


# -- FastVID -----------------------------------------------------------------------------------------------------
class SalientView(VisionView):
    """A hand-built view whose saliency (``importance()``) is planted instead of computed from captured attention."""

    saliency: torch.Tensor | None = None

    def importance(self, heads="mean"):
        return self.saliency


def fastvid_view(video: torch.Tensor, saliency: torch.Tensor, ids: list[str] | None = None) -> SalientView:
    """``video`` (B, T, P, D) and ``saliency`` (B, T, P): a clip of T frames (T = 1: a one-frame clip)."""
    bsz, frames, per_frame, _ = video.shape
    view = SalientView(
        features=video.flatten(1, 2),
        grid=(1, per_frame),
        projector=lambda f: f,
        has_cls=False,
        generators=sample_generators(0, ids or [f"s{b}" for b in range(bsz)]),
        num_units=frames,
        unit_kind="frame",
        unit_of=(torch.arange(frames * per_frame) // per_frame).expand(bsz, -1),
    )
    view.saliency = saliency.flatten(1)
    return view


def test_fastvid_segments_at_the_planted_scene_cut_and_below_tau():
    scenes = torch.stack([e(0)] * 4 + [e(1)] * 2 + [e(1) + 0.1 * e(2)] * 2)[None]  # (1, 8, D) frame global features
    # two segments: the single cut goes to the least similar transition (the scene cut after frame 3)
    assert segment_ids(scenes, cuts=2, tau=0.0).tolist() == [[0, 0, 0, 0, 1, 1, 1, 1]]
    # no forced cut; tau = 0.999 also cuts after frame 5 (cos(e1, e1 + 0.1 e2) = 0.995)
    assert segment_ids(scenes, cuts=1, tau=0.999).tolist() == [[0, 0, 0, 0, 1, 1, 2, 2]]
    # 2 forced cuts: after 3, then the next least similar transition (after 5)
    assert segment_ids(scenes, cuts=3, tau=0.0).tolist() == [[0, 0, 0, 0, 1, 1, 2, 2]]


def test_fastvid_splits_salient_and_context_tokens_over_frames_and_anchors():
    gen = torch.Generator().manual_seed(4)
    video = torch.randn(1, 8, 16, 12, generator=gen) * 0.01 + torch.randn(1, 1, 16, 12, generator=gen)  # one scene
    saliency = torch.rand(1, 8, 16, generator=gen)
    view = fastvid_view(video, saliency)
    # defaults (c = 8): 8 frames have 7 transitions, all 7 are forced cuts: every frame is its own segment and
    # anchor, R = 4: C = int(1.6) = 1, S = 3
    keep = create_method("fastvid", merge=False).select_vision(view, 32).keep[0]
    assert torch.bincount(keep // 16, minlength=8).tolist() == [4] * 8
    method = create_method("fastvid", merge=False, cuts=1, tau=0.0)
    keep = method.select_vision(view, 32).keep[0]
    # no cut: one segment, R = 32: C = int(32 * 0.4) = 12 context, S = 20 salient = 3, 3, 3, 3, 2, 2, 2, 2 per frame; anchors
    # every 4th frame from the end (7 and 3) take 6 context tokens each
    assert torch.bincount(keep // 16, minlength=8).tolist() == [3, 3, 3, 9, 2, 2, 2, 8]
    top = saliency[0].argsort(dim=-1, descending=True)
    for frame, count in enumerate([3, 3, 3, 3, 2, 2, 2, 2]):  # each frame's most salient tokens are among the kept
        assert set((top[frame, :count] + 16 * frame).tolist()) <= set(keep.tolist())


def test_fastvid_merges_the_pruned_tokens_into_the_density_peak():
    # a one-frame clip of 5 tokens: 0, 1 most salient; of the rest, 2 and 3 lie close together and 2 is nearer the far token
    # 4, so 2 is the density peak; keep 3 = S 2 + C int(1.2) = 1
    tokens = torch.stack([e(0, 8), e(1, 8), e(2, 8), e(2, 8) + 0.1 * e(3, 8), e(2, 8) - 2.0 * e(4, 8) - 0.3 * e(3, 8)])
    saliency = torch.tensor([1.0, 0.9, 0.1, 0.1, 0.1])
    out = create_method("fastvid").select_vision(fastvid_view(tokens[None, None], saliency[None, None]), 3)
    assert out.keep.shape == (1, 0)
    # 3 and 4 merge into 2: w = max(1 / 3, 0.6) = 0.6
    expected = torch.stack([tokens[0], tokens[1], 0.6 * tokens[2] + 0.4 * (tokens[3] + tokens[4]) / 2])
    assert torch.allclose(out.append[0], expected, atol=1e-6)
    assert create_method("fastvid", merge=False).select_vision(fastvid_view(tokens[None, None], saliency[None, None]), 3).keep.tolist() == [[0, 1, 2]]
    image = SalientView(features=tokens[None], grid=(1, 5), projector=lambda f: f, has_cls=False)
    with pytest.raises(UnsupportedModel):
        create_method("fastvid").select_vision(image, 3)


@pytest.mark.parametrize("merge", [True, False])
def test_fastvid_keeps_exactly_the_budget_and_batch_equals_single(merge):
    gen = torch.Generator().manual_seed(5)
    video = torch.randn(2, 8, 16, 12, generator=gen)
    video[0, 4:] += 3.0 * torch.randn(1, 1, 12, generator=gen)  # a scene cut in the first clip only
    saliency = torch.rand(2, 8, 16, generator=gen)
    method = create_method("fastvid", merge=merge, cuts=3)  # 3 segments of different lengths per clip; up to 2 anchors
    for keep in (1, 7, 16, 40, 100, 128):
        out = method.select_vision(fastvid_view(video, saliency, ["a", "b"]), keep)
        out.validate(2, 128, keep, "fastvid")
        for b, sid in enumerate(["a", "b"]):
            single = method.select_vision(fastvid_view(video[b : b + 1], saliency[b : b + 1], [sid]), keep)
            assert torch.equal(out.keep[b], single.keep[0])
            if merge:
                assert torch.allclose(out.append[b], single.append[0], atol=1e-6)
