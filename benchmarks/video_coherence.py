"""Temporal coherence of dreamed video (issue 18): plain ``blend`` against ``flow=True``.

Two clips made here from the bundled CC0 photos (``fastdream/data``), with their true motion:

- ``pan``: a window panning over ``coffee.png`` (``chelsea.png`` for the scene cut) by ``(dx, dy) = (3, 1)`` px per frame;
- ``sprite``: ``coffee.png`` seen through a window panning right by 2 px per frame (the scene
  moves left on screen) behind a disc cut from ``chelsea.png`` (the cat's face) moving right and
  down by ``(4, 1)``: two motions, with occlusions and disocclusions at the disc's edge.

For every variant (``blend=0``: frames dreamed alone; ``blend=B`` unaligned; ``flow=True`` at the
same ``B``, carrying the dreamed detail or the dreamed frame) and every frame ``t >= 1``:

- inconsistency: mean |out_t(p) - out_{t-1}(p + m(p))| over the pixels p whose true motion m
  comes from inside the previous frame and is not occluded (uint8 levels, 0..255);
- strength: mean |out_t - frame_t| (uint8 levels), how strongly the frame is dreamed.

Then, at 1280×720 on the CPU: the cost of the flow step of one frame (grey, DIS both ways, the
reliability mask, the warp and the blend: ``FlowFeedback.input_for``) against one frame's dream
with the default options, measured alternately. And the scene-cut check: the pan over ``chelsea.png``
followed by ``sprite`` must be cut at exactly the frame where the clip changes.

    python -m benchmarks.video_coherence                       # JSON in benchmarks/results/
    python -m benchmarks.video_coherence --gif docs/images/video_flow.gif --write-clip clip.gif
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from typing import Dict, List, Tuple

import torch
import torch.nn.functional as F

import fastdream
from fastdream.flow import FlowFeedback, grey_uint8, inside, warp
from fastdream.image_io import sample_image_path

from .results_io import write_results

PAN = (3, 1)
BACKGROUND, SPRITE = (2, 0), (4, 1)  # the background window's motion, the disc's on screen


def photo(name: str, height: int) -> torch.Tensor:
    """A bundled photo as float32 Tensor[3, height, W] in [0, 1] (aspect kept)."""
    image = fastdream.load_image(sample_image_path(name)).float()[None] / 255
    width = round(image.shape[-1] * height / image.shape[-2])
    return F.interpolate(image, size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0].clamp(0, 1)


def shift_flow(height: int, width: int, motion: Tuple[int, int]) -> torch.Tensor:
    """The constant flow Tensor[1, 2, H, W] of a window that moved by ``motion``: frame_t(p) = frame_{t-1}(p + motion)."""
    flow = torch.empty(1, 2, height, width)
    flow[:, 0], flow[:, 1] = motion[0], motion[1]
    return flow


def pan_clip(frames: int, height: int, width: int, name: str = "coffee") -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
    """``(frames, flows, valid)``: float Tensor[3, H, W] frames, the true flow t→t-1 and where it is valid."""
    big = photo(name, height + PAN[1] * frames + 8)
    if big.shape[-1] < width + PAN[0] * frames:
        raise ValueError(f"pan: the photo is too narrow for {frames} frames of width {width}")
    clip = [big[:, 4 + PAN[1] * t:4 + PAN[1] * t + height, PAN[0] * t:PAN[0] * t + width] for t in range(frames)]
    flow = shift_flow(height, width, PAN)
    valid = inside(flow)
    return clip, [flow] * frames, [valid] * frames


def sprite_clip(frames: int, height: int, width: int):
    """``(frames, flows, valid)`` of the disc moving over the panning background (see the module)."""
    back = photo("coffee", height)
    span = BACKGROUND[0] * frames
    if back.shape[-1] < width + span:
        raise ValueError(f"sprite: the photo is too narrow for {frames} frames of width {width}")
    cat = photo("chelsea", round(height * 1.6))  # the face fills the disc
    radius = height // 3
    face_y, face_x = round(cat.shape[-2] * 0.33), round(cat.shape[-1] * 0.47)
    disc = cat[:, face_y - radius:face_y + radius, face_x - radius:face_x + radius]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")

    def centre(t):
        return (radius + 4 + SPRITE[0] * t, radius + 2 + SPRITE[1] * t)  # (x, y)

    def in_disc(t, x, y):
        cx, cy = centre(t)
        return (x - cx) ** 2 + (y - cy) ** 2 < (radius - 0.5) ** 2

    clip, flows, valid = [], [], []
    for t in range(frames):
        offset = BACKGROUND[0] * t  # the window's left edge
        frame = back[:, :, offset:offset + width].clone()
        cx, cy = centre(t)
        inside_t = in_disc(t, xs, ys)
        sy, sx = (ys - cy + radius).clamp(0, 2 * radius - 1), (xs - cx + radius).clamp(0, 2 * radius - 1)
        frame[:, inside_t] = disc[:, sy[inside_t], sx[inside_t]]
        clip.append(frame.clamp(0, 1))
        # frame_t(p) = frame_{t-1}(p + m(p)): m = -SPRITE on the disc, the window's motion elsewhere
        flow = torch.empty(1, 2, height, width)
        flow[0, 0] = torch.where(inside_t, -float(SPRITE[0]), float(BACKGROUND[0]))
        flow[0, 1] = torch.where(inside_t, -float(SPRITE[1]), float(BACKGROUND[1]))
        px, py = xs + flow[0, 0], ys + flow[0, 1]
        ok = inside(flow)[0, 0]
        ok &= inside_t | ~in_disc(t - 1, px, py)  # background hidden by the disc in the previous frame
        flows.append(flow)
        valid.append(ok[None, None])
    return clip, flows, valid


def dream_clip(dreamer, clip, variant: str, blend: float, seed: int) -> Tuple[List[torch.Tensor], float]:
    """The dreamed frames (float [0, 1]) and the wall time per frame."""
    start = time.perf_counter()
    if variant.startswith("flow"):
        carry = variant.split("-")[1]
        outs = _flow_stream(dreamer, clip, blend, carry, seed)
    else:
        outs = list(dreamer.stream(clip, blend=blend if variant == "blend" else 0.0, seed=seed))
    return outs, (time.perf_counter() - start) / len(clip)


def _flow_stream(dreamer, clip, blend, carry, seed):
    """``Dreamer.stream(flow=True)``'s loop with the carry chosen (the stream itself uses the default)."""
    if carry == "detail":
        return list(dreamer.stream(clip, blend=blend, flow=True, seed=seed))
    feedback, outs = FlowFeedback(blend, carry=carry), []
    for k, frame in enumerate(clip):
        current = frame[None]
        source, grey = feedback.input_for(current)
        dreamed = dreamer(current if source is None else source, seed=seed + k)
        feedback.dreamed(current, grey, dreamed)
        outs.append(dreamed[0])
    return outs


def measure(outs, clip, flows, valid) -> Dict[str, float]:
    """Inconsistency and strength in uint8 levels (0..255), means over frames t >= 1."""
    bad, strong = [], []
    for t in range(1, len(outs)):
        moved = warp(outs[t - 1][None], flows[t])
        diff = (outs[t][None] - moved).abs().mean(dim=1, keepdim=True)
        bad.append(float(diff[valid[t]].mean()) * 255)
        strong.append(float((outs[t] - clip[t]).abs().mean()) * 255)
    return {"inconsistency": statistics.fmean(bad), "strength": statistics.fmean(strong)}


def flow_cost(dreamer_720, seed: int, repeats: int) -> Dict[str, float]:
    """Seconds of one frame's flow step and of one frame's dream at 1280×720, measured alternately."""
    big = photo("coffee", 760)
    frames = [big[:, 20:740, 20:1300][None], big[:, 23:743, 25:1305][None]]
    flow_s, dream_s = [], []
    feedback = FlowFeedback(0.5)
    feedback.dreamed(frames[0], grey_uint8(frames[0]), frames[0])
    feedback.input_for(frames[1])  # warm-up (DIS buffers)
    dreamer_720(frames[1], seed=seed)  # warm-up (the model's preparation, oneDNN at this size)
    for r in range(repeats):
        start = time.perf_counter()
        feedback.input_for(frames[1])
        flow_s.append(time.perf_counter() - start)
        if r < max(1, repeats // 3):  # a dream takes seconds: fewer of them, interleaved
            start = time.perf_counter()
            dreamer_720(frames[1], seed=seed + r)
            dream_s.append(time.perf_counter() - start)
    flow, dream = statistics.median(flow_s), statistics.median(dream_s)
    return {"flow_s": flow, "dream_s": dream, "flow_share": flow / dream, "flow_runs": len(flow_s), "dream_runs": len(dream_s)}


def scene_cuts(frames: int, height: int, width: int) -> Dict[str, object]:
    """Where ``FlowFeedback`` cuts a pan over chelsea.png followed by ``sprite`` (no dreaming: the frames stand in)."""
    clip = pan_clip(frames, height, width, "chelsea")[0] + sprite_clip(frames, height, width)[0]
    feedback, cuts, shares = FlowFeedback(0.5), [], []
    for k, frame in enumerate(clip):
        current = frame[None]
        _, grey = feedback.input_for(current)
        if feedback.cut is not None:
            shares.append(round(float(feedback.reliable_share[0]), 3))
            if bool(feedback.cut[0]):
                cuts.append(k)
        feedback.dreamed(current, grey, current)
    return {"frames": len(clip), "true_cut": frames, "cuts": cuts, "reliable_share": shares}


def side_by_side_gif(path: str, left, right, fps: float) -> None:
    from fastdream.video import VideoWriter

    gap = torch.ones(3, left[0].shape[1], 4)
    with VideoWriter(path, fps, overwrite=True) as writer:
        for a, b in zip(left, right):
            writer.write(torch.cat([a, gap, b], dim=2).clamp(0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--height", type=int, default=160)
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--blend", type=float, default=0.5)
    parser.add_argument("--octaves", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=6, help="flow timings at 720p (dreams: a third as many)")
    parser.add_argument("--skip-720p", action="store_true")
    parser.add_argument("--gif", help="write the sprite clip, plain blend beside flow, as this GIF")
    parser.add_argument("--write-clip", help="write the sprite clip itself (for `fastdream video`)")
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/video-coherence-cpu-DATE.json)")
    args = parser.parse_args()
    torch.manual_seed(0)
    load = os.getloadavg()
    dreamer = fastdream.Dreamer(octaves=args.octaves, iterations=args.iterations)
    clips = {"pan": pan_clip(args.frames, args.height, args.width), "sprite": sprite_clip(args.frames, args.height, args.width)}
    variants = ["blend0", "blend", "flow-detail", "flow-frame"]
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    kept = {}
    for name, (clip, flows, valid) in clips.items():
        results[name] = {"input": measure(clip, clip, flows, valid)}
        for variant in variants:
            outs, per_frame = dream_clip(dreamer, clip, variant, args.blend, seed=0)
            results[name][variant] = dict(measure(outs, clip, flows, valid), seconds_per_frame=per_frame)
            kept[name, variant] = outs
            print(name, variant, {k: round(v, 3) for k, v in results[name][variant].items()}, flush=True)
        r = results[name]
        r["ratio_flow_to_blend"] = r["flow-detail"]["inconsistency"] / r["blend"]["inconsistency"]
        r["strength_flow_to_blend"] = r["flow-detail"]["strength"] / r["blend"]["strength"]
    cuts = scene_cuts(max(4, args.frames // 2), args.height, args.width)
    print("scene cuts", cuts, flush=True)
    cost = None
    if not args.skip_720p:
        cost = flow_cost(fastdream.Dreamer(), seed=0, repeats=args.repeats)
        print("720p", cost, flush=True)
    if args.gif:
        side_by_side_gif(args.gif, kept["sprite", "blend"], kept["sprite", "flow-detail"], fps=8)
        print(f"wrote {args.gif} ({os.path.getsize(args.gif) / 1e6:.2f} MB)")
    if args.write_clip:
        from fastdream.video import VideoWriter

        with VideoWriter(args.write_clip, 8, overwrite=True) as writer:
            for frame in clips["sprite"][0]:
                writer.write(frame)
        print(f"wrote {args.write_clip}")
    data = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                    "load_before": load, "load_after": os.getloadavg()},
        "torch": torch.__version__, "opencv": __import__("cv2").__version__,
        "settings": {k: getattr(args, k) for k in ("frames", "height", "width", "blend", "octaves", "iterations")},
        "units": "inconsistency and strength in uint8 levels (0..255); seconds",
        "clips": results, "scene_cuts": cuts, "cost_720p": cost,
    }
    write_results(data, "video-coherence", "cpu", args.out)


if __name__ == "__main__":
    main()
