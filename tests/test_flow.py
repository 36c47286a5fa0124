"""Optical-flow-guided video (``fastdream.flow``, ``Dreamer.stream(flow=True)``): the warp against its
twin and known shifts, the reliability masks, the estimator's convention, scene cuts, the missing
extra, and ``flow=False`` byte-identical to the stream recorded from main before flow came in."""
import importlib.util

import pytest
import torch

import fastdream
import stream_record
from fastdream._reference import warp_ref
from fastdream.flow import DISFlow, FlowFeedback, consistent, estimate_flow, grey_uint8, inside, reliable, warp

needs_cv2 = pytest.mark.skipif(importlib.util.find_spec("cv2") is None, reason="needs OpenCV (the [video] extra; [test] has it)")

def gen(seed):
    return torch.Generator().manual_seed(seed)


def textured(batch, height, width, seed=0):
    """Smooth random texture in [0, 1] (what optical flow can track), float32 Tensor[B, 3, H, W]."""
    coarse = torch.rand(batch, 3, height // 4 + 2, width // 4 + 2, generator=gen(seed))
    return torch.nn.functional.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 1)


def shifted(image, dx, dy):
    """``out[y, x] = image[y + dy, x + dx]`` where that is in the frame (0 elsewhere), and the mask."""
    out, mask = torch.zeros_like(image), torch.zeros_like(image[:, :1], dtype=torch.bool)
    h, w = image.shape[-2:]
    y0, y1, x0, x1 = max(0, -dy), min(h, h - dy), max(0, -dx), min(w, w - dx)
    out[..., y0:y1, x0:x1] = image[..., y0 + dy:y1 + dy, x0 + dx:x1 + dx]
    mask[..., y0:y1, x0:x1] = True
    return out, mask


def constant_flow(batch, height, width, dx, dy, device="cpu"):
    flow = torch.empty(batch, 2, height, width, device=device)
    flow[:, 0], flow[:, 1] = dx, dy
    return flow


# -- warp ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("batch,height,width", [(1, 7, 9), (3, 24, 33), (2, 1, 5), (1, 37, 1)])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_warp_matches_its_twin(device, batch, height, width, layout):
    g = gen(batch * 100 + height)
    step = 2 if layout == "strided" else 1  # every other channel of a larger tensor: a strided view
    image = torch.rand(batch, 3 * step, height, width, generator=g)[:, ::step]
    flow = ((torch.rand(batch, 2 * step, height, width, generator=g) - 0.5) * 6)[:, ::step]  # some outside
    assert image.is_contiguous() == flow.is_contiguous() == (layout == "contiguous")
    image, flow = image.to(device), flow.to(device)
    got = warp(image, flow)
    assert got.shape == image.shape and got.dtype == image.dtype and got.device == image.device
    # float32 grid coordinates (normalised to [-1, 1]) carry ~1e-7·size px of error
    torch.testing.assert_close(got, warp_ref(image, flow), atol=2e-6 * max(height, width) + 1e-6, rtol=0)


@pytest.mark.parametrize("dx,dy", [(3, -2), (-5, 4), (1, 0), (0, 7)])
def test_an_integer_shift_moves_the_image_by_that_shift(device, dx, dy):
    image = (torch.randint(0, 256, (2, 3, 29, 41), generator=gen(dx * 10 + dy)).float() / 255).to(device)
    flow = constant_flow(2, 29, 41, dx, dy, device)
    want, mask = shifted(image, dx, dy)
    got = warp(image, flow)
    assert torch.equal(inside(flow), mask)
    assert (got - want)[mask.expand_as(got)].abs().max() < 1e-5
    # images of uint8 levels come back bit-exact once rounded to uint8
    assert torch.equal((got * 255).round()[mask.expand_as(got)], (want * 255).round()[mask.expand_as(got)])


def test_identity_flow_is_the_identity(device):
    image = torch.rand(3, 3, 17, 23, generator=gen(1)).to(device)
    zero = torch.zeros(3, 2, 17, 23, device=device)
    torch.testing.assert_close(warp(image, zero), image, atol=1e-5, rtol=0)
    assert bool(inside(zero).all())
    uint8_levels = (image * 255).round() / 255
    assert torch.equal((warp(uint8_levels, zero) * 255).round(), uint8_levels * 255)


def test_warp_rejects_bad_arguments():
    image = torch.rand(1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"warp: expected image Tensor\[B, C, H, W\] and flow Tensor\[B, 2, H, W\]"):
        warp(image, torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match="warp: flow must have image's batch and size"):
        warp(image, torch.zeros(1, 2, 8, 9))
    with pytest.raises(TypeError, match="warp: image must be a floating tensor"):
        warp(image.to(torch.uint8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(TypeError, match="warp: flow must be a torch.Tensor"):
        warp(image, [[0.0]])


# -- where the flow is trusted --------------------------------------------------------------------


def test_consistent_flows_pass_and_a_failed_round_trip_is_occluded():
    backward = constant_flow(2, 20, 30, 2.5, -1.0)
    forward = -backward
    assert bool(consistent(backward, forward).all())
    broken = forward.clone()
    broken[1, :, 5:10, 10:20] += 3.0  # the way back misses by 3 px there
    mask = consistent(backward, broken)
    assert bool(mask[0].all())
    # target pixels whose source position p + b lands in the broken block (rows 6..10, columns 8..17)
    hit = torch.zeros(20, 30, dtype=torch.bool)
    hit[6:11, 8:18] = True
    assert not bool(mask[1, 0][hit][None].any())
    assert bool(mask[1, 0][~torch.nn.functional.max_pool2d(hit[None, None].float(), 3, 1, 1)[0, 0].bool()].all())


def test_a_motion_boundary_is_not_trusted():
    backward = torch.zeros(1, 2, 16, 16)
    backward[:, 0, :, 8:] = 4.0  # the right half moved: its edge blurs in any estimated flow
    forward = torch.zeros(1, 2, 16, 16)
    forward[:, 0, :, 12:] = -4.0
    mask = consistent(backward, forward)[0, 0]
    assert not bool(mask[:, 7:9].any())  # the columns at the step
    assert bool(mask[:, :6].all()) and bool(mask[:, 10:].all())


def test_reliable_needs_the_frame_the_flows_and_the_colours():
    source = textured(1, 24, 32)
    target, _ = shifted(source, 3, 0)
    backward, forward = constant_flow(1, 24, 32, 3, 0), constant_flow(1, 24, 32, -3, 0)
    target[..., :, 29:] = source[..., :, 29:]  # not in the source's view: anything
    mask = reliable(target, source, backward, forward)[0, 0]
    assert bool(mask[:, :29].all()) and not bool(mask[:, 29:].any())  # p + 3 leaves the frame there
    target[..., 4:8, 4:8] = 1 - target[..., 4:8, 4:8]  # a change the flow does not explain
    mask = reliable(target, source, backward, forward)[0, 0]
    assert not bool(mask[4:8, 4:8].any()) and bool(mask[10:, :29].all())


@needs_cv2
def test_estimate_flow_follows_the_warp_convention():
    source = textured(2, 64, 80, seed=3)
    target, _ = shifted(source, 4, -2)  # target[y, x] = source[y - 2, x + 4]
    flow = estimate_flow(grey_uint8(target), grey_uint8(source))
    assert flow.shape == (2, 2, 64, 80) and flow.dtype == torch.float32
    interior = flow[:, :, 8:-8, 8:-8]
    estimator = DISFlow()  # kept for many frames: the same flows
    assert torch.equal(estimator(grey_uint8(target), grey_uint8(source)), flow)
    assert (interior[:, 0] - 4).abs().median() < 0.25 and (interior[:, 1] + 2).abs().median() < 0.25
    with pytest.raises(TypeError, match=r"DISFlow: target must be a uint8 Tensor\[B, H, W\] on the CPU"):
        estimate_flow(target[:, 0], grey_uint8(source))
    with pytest.raises(ValueError, match="DISFlow: target and source must have one shape"):
        estimate_flow(grey_uint8(target)[:, 1:], grey_uint8(source))
    for h, w in ((11, 11), (7, 40)):
        tiny = grey_uint8(source)[:, :h, :w]
        with pytest.raises(ValueError, match=f"DISFlow: optical flow needs frames of at least 8 px on the short "
                                             f"side and 12 px on the long side, got {h}×{w}"):
            estimate_flow(tiny, tiny)
    small = grey_uint8(source)[:, :8, :12]
    assert estimate_flow(small, small).shape == (2, 2, 8, 12)
    with pytest.raises(ValueError, match=r"DISFlow: preset must be one of \('ultrafast', 'fast', 'medium'\), got 'slow'"):
        estimate_flow(small, small, preset="slow")


def test_grey_uint8_is_bt601_luma():
    frames = torch.rand(2, 3, 5, 6, generator=gen(4))
    want = (0.299 * frames[:, 0] + 0.587 * frames[:, 1] + 0.114 * frames[:, 2]) * 255
    assert (grey_uint8(frames).float() - want).abs().max() <= 0.5 + 1e-4
    assert torch.equal(grey_uint8(frames[:, :1]), (frames[:, 0] * 255).round().to(torch.uint8))


# -- the feedback ---------------------------------------------------------------------------------


@needs_cv2
def test_feedback_adds_the_moved_detail_where_reliable_only():
    frames = textured(1, 48, 64, seed=5)
    second, _ = shifted(frames, 3, 0)
    second[..., :, 61:] = textured(1, 48, 3, seed=6)  # new content enters at the right edge
    dreamed = (frames + 0.2 * (textured(1, 48, 64, seed=7) - 0.5)).clamp(0, 1)
    feedback = FlowFeedback(0.5)
    source, grey = feedback.input_for(frames)
    assert source is None and feedback.cut is None
    feedback.dreamed(frames, grey, dreamed)
    source, _ = feedback.input_for(second)
    share = float(feedback.reliable_share[0])
    assert 0.8 < share < 1.0 and not bool(feedback.cut[0])
    detail, _ = shifted(dreamed - frames, 3, 0)
    want = (second + 0.5 * detail).clamp(0, 1)
    # where the flow holds the input is frame + blend · moved detail, elsewhere the frame itself
    close = (source - want).abs().amax(dim=1) < 0.02
    same = (source == second).all(dim=1)
    assert bool((close | same).all())
    assert float(close.float().mean()) > 0.7 and bool(same[0, :, 62:].all())


@needs_cv2
def test_feedback_starts_afresh_at_a_scene_cut():
    feedback = FlowFeedback(0.5)
    a, b = textured(1, 40, 48, seed=8), fastdream.sample_image()[None, :, 100:140, 200:248].float() / 255
    _, grey = feedback.input_for(a)
    feedback.dreamed(a, grey, a.flip(-1))
    source, _ = feedback.input_for(b)
    assert source is None and bool(feedback.cut[0]) and float(feedback.reliable_share[0]) < 0.3


@needs_cv2
def test_feedback_rejects_bad_arguments():
    with pytest.raises(ValueError, match="carry must be 'detail' or 'frame'"):
        FlowFeedback(0.5, carry="dream")
    for blend in (0, 1.0, -0.5, float("nan")):
        with pytest.raises(ValueError, match=r"FlowFeedback: blend must be in \(0, 1\)"):
            FlowFeedback(blend)
    for blend in ("0.5", True):
        with pytest.raises(TypeError, match="FlowFeedback: blend must be a real number"):
            FlowFeedback(blend)
    with pytest.raises(ValueError, match="FlowFeedback: optical flow needs frames of at least 8 px"):
        FlowFeedback(0.5).input_for(torch.rand(1, 3, 6, 40))  # refused at the first frame


# -- Dreamer.stream(flow=...) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def recorded():
    return torch.load(stream_record.PATH, weights_only=True)


@pytest.mark.parametrize("case", sorted(stream_record.CASES))
def test_flow_false_is_byte_identical_to_main(recorded, case):
    """The outputs of ``stream`` without flow, recorded from main's code before flow came in."""
    if not fastdream.backend_info()["extension"]:
        pytest.skip("recorded with the compiled CPU step (the reference twin rounds its mean otherwise)")
    dtype, blend = stream_record.CASES[case]
    d = stream_record.dreamer()
    for flow in ({}, {"flow": False}):
        got = stream_record.run(d, recorded["frames"], dtype, blend, **flow)
        assert len(got) == len(recorded[case])
        for k, (a, b) in enumerate(zip(got, recorded[case])):
            assert a.dtype == b.dtype and torch.equal(a, b), (case, k)


@pytest.fixture(scope="module")
def d():
    """A cheap Dreamer (per-pixel model, 1 octave) for frames of ``stream_record.SIZE``."""
    return stream_record.dreamer()


def pan(frames, height=stream_record.SIZE[0], width=stream_record.SIZE[1], step=2):
    photo = fastdream.sample_image()[:, 80:80 + height, 150:150 + width + step * frames]
    return [photo[:, :, step * k:step * k + width].contiguous() for k in range(frames)]


@needs_cv2
def test_stream_with_flow_is_the_feedback_loop(d):
    """``stream(flow=True)`` = dream frame 0 alone, then each input from ``FlowFeedback``, frame k
    seeded ``seed + k``; the first frame is exactly the plain call's."""
    frames = pan(3)
    kept = [f.clone() for f in frames]
    outs = list(d.stream(frames, blend=0.6, flow=True, seed=4))
    assert all(torch.equal(f, k) for f, k in zip(frames, kept))  # the caller's frames are left as they were
    assert all(o.dtype == torch.uint8 and o.shape == (3, *stream_record.SIZE) for o in outs)
    assert torch.equal(outs[0], d(frames[0], seed=4))
    feedback = FlowFeedback(0.6)
    for k, frame in enumerate(frames):
        current = frame[None].float() / 255
        source, grey = feedback.input_for(current)
        assert (source is None) == (k == 0)
        dreamed = d(current if source is None else source, seed=4 + k)
        feedback.dreamed(current, grey, dreamed)
        assert torch.equal(outs[k], (dreamed[0] * 255).round().clamp(0, 255).to(torch.uint8)), k
    plain = list(d.stream(frames, blend=0.6, seed=4))
    assert not torch.equal(plain[1], outs[1])  # the flow changes what is blended


@needs_cv2
def test_stream_with_flow_restarts_at_a_scene_cut(d):
    other = fastdream.sample_image("coffee")[:, 150:183, 300:337].contiguous()
    frames = pan(2) + [other]
    outs = list(d.stream(frames, blend=0.5, flow=True, seed=1))
    assert torch.equal(outs[2], d(other, seed=3))  # dreamed alone, as a first frame


@needs_cv2
def test_stream_with_flow_keeps_batches_grey_and_floats(d):
    frames = torch.stack(pan(3))  # Tensor[3 frames, 3, H, W]
    batch = [torch.stack([f, f.flip(-1)]) for f in frames]  # B = 2 per frame
    outs = list(d.stream(batch, blend=0.5, flow=True, seed=0))
    assert all(o.shape == (2, 3, *stream_record.SIZE) and o.dtype == torch.uint8 for o in outs)
    grey = [f.float().mean(dim=0, keepdim=True) / 255 for f in frames]
    outs = list(d.stream(grey, blend=0.5, flow=True, seed=0))
    assert all(o.shape == (1, *stream_record.SIZE) and o.dtype == torch.float32 for o in outs)


@needs_cv2
def test_stream_flow_arguments(d):
    frame = torch.rand(3, *stream_record.SIZE)
    with pytest.raises(ValueError, match="flow moves the previous dreamed frame into the next: it needs blend > 0"):
        list(d.stream([frame], flow=True))
    with pytest.raises(TypeError, match="flow must be a bool"):
        list(d.stream([frame], blend=0.5, flow=1))
    with pytest.raises(ValueError, match="frames must all have one shape"):
        list(d.stream([frame, torch.rand(3, 34, 37)], blend=0.5, flow=True))


def test_missing_opencv_names_the_extra(hide_import, d):
    hide_import("cv2")
    with pytest.raises(ImportError, match=r"flow=True needs OpenCV: pip install 'fastdream\[video\]'"):
        list(d.stream([torch.rand(3, *stream_record.SIZE)], blend=0.5, flow=True))
    assert len(list(d.stream([torch.rand(3, *stream_record.SIZE)], blend=0.5))) == 1  # without flow, nothing needs it


@pytest.mark.cuda
@needs_cv2
def test_stream_with_flow_on_cuda():
    """The warp and the blend on the GPU, the frames where the caller has them."""
    d = fastdream.Dreamer(octaves=1, iterations=1, device="cuda")
    frames = pan(3, 40, 48)
    outs = list(d.stream(frames, blend=0.6, flow=True, seed=4))
    assert all(o.device.type == "cpu" and o.dtype == torch.uint8 and o.shape == (3, 40, 48) for o in outs)
    assert torch.equal(outs[0], d(frames[0], seed=4))
    feedback = FlowFeedback(0.6)
    for k, frame in enumerate(frames):
        current = frame[None].cuda().float() / 255
        source, grey = feedback.input_for(current)
        dreamed = d(current if source is None else source, seed=4 + k)
        assert dreamed.device.type == "cuda"
        feedback.dreamed(current, grey, dreamed)
        assert torch.equal(outs[k], (dreamed[0] * 255).round().clamp(0, 255).to(torch.uint8).cpu()), k
    on_gpu = list(d.stream([f.cuda() for f in frames], blend=0.6, flow=True, seed=4))
    assert all(o.device.type == "cuda" for o in on_gpu)
