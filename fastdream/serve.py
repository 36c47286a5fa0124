"""Dream over HTTP with Ray Serve (the optional ``[ray]`` extra): ``fastdream serve``.

    >>> from ray import serve
    >>> from fastdream.serve import build_app
    >>> serve.run(build_app({"octaves": 4, "iterations": 10}), route_prefix="/")

``POST /`` with the image file as the body (any format Pillow reads) returns the dreamed image,
``image/png`` (``?format=jpeg``: JPEG). Per-request options, as query fields or, with a JSON body
``{"image": "<base64>", ...}``, as JSON fields: ``seed``, ``format``, ``octaves``, ``octave_scale``,
``iterations``, ``step_size``, ``jitter``; the server's flags fix everything else (model, layers,
...). ``GET /`` answers ``{"status": "ok", ...}``.

Each replica builds its Dreamers once (one per distinct set of per-request options, a few kept)
and dreams requests in batches (``@serve.batch``): those that arrive together with the same size
and options are stacked and dreamed at once. A request with a ``seed`` is dreamed alone, so its
answer is ``fastdream.dream(image, seed=seed, **options)``, byte for byte, whatever else arrives;
requests without one share a batch (and its fresh random seed). One replica per GPU on GPU
clusters (``num_gpus=1``), one on CPU-only ones.

Errors never take the server down: a body that is not an image or an invalid option is answered
400 with the library's message (the same ``TypeError``/``ValueError`` text as the API), an upload
over ``max_upload_mb`` 413, a failure while dreaming 500.

Where this sits in the project: docs/architecture.md, "Clusters and servers".
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import collections
import json
import sys
import time
from typing import Dict, List, Optional, Tuple

from .jobs import UsageError, build_dreamer, decode_limited
from .jobs import one_line as _one_line
from .ray_support import actor_dreamer_options, actor_resources, connect, require_ray

FORMATS = {"png": ("PNG", "image/png"), "jpeg": ("JPEG", "image/jpeg"), "jpg": ("JPEG", "image/jpeg")}
REQUEST_OPTIONS = {"octaves": int, "octave_scale": float, "iterations": int, "step_size": float, "jitter": int}
_FIELDS = ("seed", "format") + tuple(REQUEST_OPTIONS)
_KEPT_DREAMERS = 4


class RequestError(Exception):
    """A request answered with ``status`` and ``message`` (400 or 413)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _convert(name: str, value, kind):
    """A query string (or JSON value) as the option's type; the library checks the value itself."""
    if not isinstance(value, str):
        return value
    try:
        return kind(value)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"{name} must be {what}, got {value!r}") from None


def parse_fields(fields: Dict[str, object]) -> Tuple[dict, Optional[int], str]:
    """``(dreamer options, seed, format)`` from a request's fields; ValueError/TypeError when bad."""
    from .options import check_seed

    unknown = sorted(set(fields) - set(_FIELDS))
    if unknown:
        raise ValueError(f"unknown option {unknown[0]!r}; per-request options: {', '.join(_FIELDS)}")
    options = {name: _convert(name, fields[name], kind) for name, kind in REQUEST_OPTIONS.items() if name in fields}
    seed = check_seed("seed", _convert("seed", fields["seed"], int)) if "seed" in fields else None
    fmt = str(fields.get("format", "png")).lower()
    if fmt not in FORMATS:
        raise ValueError(f"format must be png or jpeg, got {fields['format']!r}")
    return options, seed, fmt


def encode(image, fmt: str) -> bytes:
    """uint8 Tensor[3, H, W] -> PNG or JPEG bytes, as ``save_image`` writes them."""
    from .image_io import encode_image

    return encode_image(image, "." + fmt)


class DreamServer:
    """The Serve deployment's class: one replica. ``options``: ``Dreamer(**options)`` (checked
    once at start-up); ``threads``: torch threads on CPUs (``None``: leave Ray's)."""

    def __init__(self, options: dict, max_upload_bytes: int, max_side: Optional[int] = None,
                 threads: Optional[int] = None):
        self.options = actor_dreamer_options(options, threads)
        self.max_upload_bytes = max_upload_bytes
        self.max_side = max_side
        self._dreamers: "collections.OrderedDict[tuple, object]" = collections.OrderedDict()
        self._dreamer({})  # the server's own options are checked (and the model loaded) now
        self.served = 0

    def _dreamer(self, overrides: dict):
        from .dreamer import Dreamer

        key = tuple(sorted(overrides.items()))
        dreamer = self._dreamers.get(key)
        if dreamer is None:
            dreamer = Dreamer(**dict(self.options, **overrides))
            self._dreamers[key] = dreamer
            while len(self._dreamers) > _KEPT_DREAMERS:
                self._dreamers.popitem(last=False)
        self._dreamers.move_to_end(key)
        return dreamer

    async def _body(self, request) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_upload_bytes:
            raise RequestError(413, f"upload of {int(declared)} bytes is over the limit of {self.max_upload_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_upload_bytes:
                raise RequestError(413, f"upload is over the limit of {self.max_upload_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _parse(self, request):
        body = await self._body(request)
        fields: Dict[str, object] = dict(request.query_params)
        if request.headers.get("content-type", "").split(";")[0].strip() == "application/json":
            try:
                payload = json.loads(body)
                if not isinstance(payload, dict) or not isinstance(payload.get("image"), str):
                    raise ValueError("expected an object with the base64 image in 'image'")
                body = base64.b64decode(payload.pop("image"), validate=True)
            except (ValueError, binascii.Error) as exc:
                raise ValueError(f"bad JSON body: {_one_line(exc)}") from None
            fields.update(payload)
        if not body:
            raise ValueError("the request has no image: POST the image file as the body")
        options, seed, fmt = parse_fields(fields)
        dreamer = self._dreamer(options)  # the library's own checks of the options
        image = decode_limited(body, "upload", self.max_side)
        dreamer.check(image)
        return dreamer, image, seed, fmt

    async def __call__(self, request):
        from starlette.responses import JSONResponse, PlainTextResponse, Response

        if request.method == "GET":
            return JSONResponse({"status": "ok", "served": self.served, "options": sorted(self.options)})
        if request.method != "POST":
            return PlainTextResponse("POST an image file (GET for the status)", status_code=405)
        try:
            dreamer, image, seed, fmt = await self._parse(request)
        except RequestError as exc:
            return PlainTextResponse(str(exc), status_code=exc.status)
        except (ValueError, TypeError, OSError) as exc:
            return PlainTextResponse(_one_line(exc), status_code=400)
        ok, result = await self._batched((dreamer, image, seed))
        if not ok:
            return PlainTextResponse(result, status_code=500)
        self.served += 1
        data = await asyncio.to_thread(encode, result, fmt)
        return Response(data, media_type=FORMATS[fmt][1])

    async def _batched(self, items: List[tuple]) -> List[tuple]:
        # wrapped by serve.batch in build_app (Ray imported only there)
        return await asyncio.to_thread(dream_requests, items)


def dream_requests(items: List[tuple]) -> List[tuple]:
    """``[(dreamer, uint8 Tensor[3, H, W], seed)]`` -> ``[(True, image) | (False, message)]``:
    unseeded requests grouped by Dreamer and size and dreamed as batches, seeded ones alone."""
    import torch

    results: List[Optional[tuple]] = [None] * len(items)
    groups: Dict[tuple, List[int]] = {}
    for i, (dreamer, image, seed) in enumerate(items):
        key = (id(dreamer), tuple(image.shape)) if seed is None else ("alone", i)
        groups.setdefault(key, []).append(i)
    for indices in groups.values():
        dreamer, _, seed = items[indices[0]]
        try:
            out = dreamer(torch.stack([items[i][1] for i in indices]), seed=seed, progress=False)
        except Exception as exc:  # a replica answers every request, whatever failed
            for i in indices:
                results[i] = (False, f"dreaming failed: {_one_line(exc)}")
            continue
        for j, i in enumerate(indices):
            results[i] = (True, out[j])
    return results


def build_app(
    options: dict,
    *,
    max_upload_mb: float = 20.0,
    max_batch_size: int = 8,
    batch_wait_timeout_s: float = 0.02,
    max_side: Optional[int] = None,
    num_replicas: Optional[int] = None,
):
    """The Serve application: ``serve.run(build_app(options), route_prefix="/")``.

    One replica per GPU of the connected cluster (``num_gpus=1`` each), else one CPU replica with
    this process's torch threads (its results are then the library's on this machine, byte for
    byte). ``max_batch_size`` requests are batched at most, waiting ``batch_wait_timeout_s`` for
    a batch to fill.
    """
    ray = require_ray("fastdream.serve")
    from ray import serve

    actor, threads, gpus = actor_resources(ray)
    server = type("DreamServer", (DreamServer,), {
        "_batched": serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)(
            DreamServer._batched
        ),
    })
    deployment = serve.deployment(
        server,
        name="fastdream",
        num_replicas=num_replicas or max(1, gpus),
        ray_actor_options=actor,
        max_ongoing_requests=4 * max_batch_size,
    )
    return deployment.bind(options, int(max_upload_mb * 2**20), max_side, threads)


def serve_forever(args, options: dict) -> int:
    """``fastdream serve [--host H] [--port P] [dream options]``: serves ``Dreamer(**options)``
    until Ctrl-C (``args``: the command line's flags)."""
    require_ray("fastdream serve")
    if args.seed is not None:
        raise UsageError("fastdream serve takes the seed per request (?seed=N), not --seed")
    build_dreamer(options, here=True)  # checked before Ray starts
    ray, started = connect(args.ray)
    from ray import serve

    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        app = build_app(options, max_upload_mb=args.max_upload_mb, max_batch_size=args.max_batch_size,
                        max_side=args.max_side)
        serve.run(app, name="fastdream", route_prefix="/")
        print(f"serving on http://{args.host}:{args.port}/ (POST an image; Ctrl-C stops)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
        return 0
    finally:
        serve.shutdown()
        if started:
            ray.shutdown()

