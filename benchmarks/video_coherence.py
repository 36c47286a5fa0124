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
with the default options, measured alternately; OpenCV's dense flows (DIS presets, Farneback) on a
known 720p shift, time and end-point error. And the scene-cut check: the pan over ``chelsea.png``
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
    back = photo("coffee", round(height * 1.25))[:, :height]  # wide enough to pan across
    span = BACKGROUND[0] * frames
    if back.shape[-1] < width + span:
        raise ValueError(f"sprite: the photo is too narrow for {frames} frames of width {width}")
    cat = photo("chelsea", round(height * 1.1))  # the face fills the disc
    radius = height // 3
    face_y, face_x = round(cat.shape[-2] * 0.45), round(cat.shape[-1] * 0.55)
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
    big = photo("coffee", 900)  # 1350 px wide
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


def estimators(repeats: int = 3) -> Dict[str, Dict[str, float]]:
    """OpenCV's dense CPU flows at 1280×720 on a known shift of ``coffee.png`` by (5, 3) px:
    median seconds of one flow and the mean end-point error (px) away from the frame's edges."""
    import cv2

    big = (photo("coffee", 900) * 255).round().to(torch.uint8)  # 1350 px wide
    grey = grey_uint8(big[None].float() / 255)[0].numpy()
    source, target = grey[20:740, 20:1300].copy(), grey[23:743, 25:1305].copy()  # target(p) = source(p + (5, 3))
    contenders = {f"dis-{name}": cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{name.upper()}")).calc
                  for name in ("ultrafast", "fast", "medium")}
    contenders["farneback"] = lambda a, b, _: cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    times: Dict[str, List[float]] = {name: [] for name in contenders}
    flows = {}
    for _ in range(repeats):  # alternated, so the machine's load falls on all alike
        for name, calc in contenders.items():
            start = time.perf_counter()
            flows[name] = calc(target, source, None)
            times[name].append(time.perf_counter() - start)
    out = {}
    for name, flow in flows.items():
        error = ((flow[20:-20, 20:-20, 0] - 5) ** 2 + (flow[20:-20, 20:-20, 1] - 3) ** 2) ** 0.5
        out[name] = {"seconds": statistics.median(times[name]), "end_point_error_px": float(error.mean())}
    return out


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


def side_by_side_gif(path: str, left, right, labels: Tuple[str, str], fps: float) -> None:
    """``left | right`` per frame, each labelled in its top-left corner, as a GIF."""
    import numpy as np
    from PIL import Image, ImageDraw

    from fastdream.video import VideoWriter

    gap = torch.ones(3, left[0].shape[1], 4)
    with VideoWriter(path, fps, overwrite=True) as writer:
        for a, b in zip(left, right):
            both = torch.cat([a, gap, b], dim=2).clamp(0, 1).mul(255).round().to(torch.uint8)
            canvas = Image.fromarray(both.permute(1, 2, 0).numpy())
            draw = ImageDraw.Draw(canvas)
            for x, label in ((3, labels[0]), (a.shape[-1] + 7, labels[1])):
                draw.rectangle((x - 2, 1, x + 6 * len(label) + 2, 13), fill=(0, 0, 0))
                draw.text((x, 2), label, fill=(255, 255, 255))
            writer.write(torch.from_numpy(np.array(canvas)).permute(2, 0, 1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--height", type=int, default=160)
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--blends", default="0.5,0.8", help="comma-separated blends to compare at")
    parser.add_argument("--octaves", type=int, default=3)
    parser.add_argument("--iterations", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and OpenCV threads (default 1: on a shared, oversubscribed CPU 2 OpenMP "
                        "threads measured 30x slower than 1)")
    parser.add_argument("--repeats", type=int, default=6, help="flow timings at 720p (dreams: a third as many)")
    parser.add_argument("--skip-720p", action="store_true")
    parser.add_argument("--gif", help="write the sprite clip, plain blend beside flow at --gif-blend, as this GIF")
    parser.add_argument("--gif-blend", type=float, default=0.8, help="one of --blends (default: 0.8)")
    parser.add_argument("--write-clip", help="write the sprite clip itself (for `fastdream video`)")
    parser.add_argument("--out", help="JSON path (default: benchmarks/results/video-coherence-cpu-DATE.json)")
    args = parser.parse_args()
    import cv2

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    blends = [float(b) for b in args.blends.split(",")]
    load = os.getloadavg()
    dreamer = fastdream.Dreamer(octaves=args.octaves, iterations=args.iterations)
    clips = {"pan": pan_clip(args.frames, args.height, args.width), "sprite": sprite_clip(args.frames, args.height, args.width)}
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    kept = {}
    for name, (clip, flows, valid) in clips.items():
        r = results[name] = {"input": measure(clip, clip, flows, valid)}
        runs = [("blend0", 0.0)] + [(v, b) for b in blends for v in ("blend", "flow-detail", "flow-frame")]
        for variant, blend in runs:
            key = variant if variant == "blend0" else f"{variant}@{blend}"
            outs, per_frame = dream_clip(dreamer, clip, variant, blend, seed=0)
            r[key] = dict(measure(outs, clip, flows, valid), seconds_per_frame=per_frame)
            kept[name, key] = outs
            print(name, key, {k: round(v, 3) for k, v in r[key].items()}, flush=True)
        for b in blends:
            r[f"inconsistency_flow_to_blend@{b}"] = r[f"flow-detail@{b}"]["inconsistency"] / r[f"blend@{b}"]["inconsistency"]
            r[f"strength_flow_to_blend@{b}"] = r[f"flow-detail@{b}"]["strength"] / r[f"blend@{b}"]["strength"]
    cuts = scene_cuts(max(4, args.frames // 2), args.height, args.width)
    print("scene cuts", cuts, flush=True)
    flow_estimators = estimators()
    print("estimators at 720p", flow_estimators, flush=True)
    cost = None
    if not args.skip_720p:
        cost = flow_cost(fastdream.Dreamer(), seed=0, repeats=args.repeats)
        print("720p", cost, flush=True)
    if args.gif:
        b = args.gif_blend
        side_by_side_gif(args.gif, kept["sprite", f"blend@{b}"], kept["sprite", f"flow-detail@{b}"],
                         (f"--blend {b}", f"--blend {b} --flow"), fps=8)
        print(f"wrote {args.gif} ({os.path.getsize(args.gif) / 1e6:.2f} MB)")
    if args.write_clip:
        from fastdream.video import VideoWriter

        with VideoWriter(args.write_clip, 8, overwrite=True) as writer:
            for frame in clips["sprite"][0]:
                writer.write(frame)
        print(f"wrote {args.write_clip}")
    data = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "threads": args.threads, "load_before": load, "load_after": os.getloadavg()},
        "torch": torch.__version__, "opencv": cv2.__version__,
        "settings": {k: getattr(args, k) for k in ("frames", "height", "width", "blends", "octaves", "iterations")},
        "units": "inconsistency and strength in uint8 levels (0..255); seconds",
        "clips": results, "scene_cuts": cuts, "estimators_720p": flow_estimators, "cost_720p": cost,
    }
    write_results(data, "video-coherence", "cpu", args.out)


if __name__ == "__main__":
    main()
