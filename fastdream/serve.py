"""Dream over HTTP with Ray Serve (the optional ``[ray]`` extra): ``fastdream serve``.

    >>> from ray import serve
    >>> from fastdream.serve import build_app
    >>> serve.run(build_app({"octaves": 4, "iterations": 10}), route_prefix="/")

``POST /`` with the image file as the body (any format Pillow reads), as a multipart form's
``image`` file (``curl -F image=@x.png``) or as a JSON ``{"image": "<base64>", ...}``, returns the
dreamed image, ``image/png`` (``format=jpeg``: JPEG). Per-request fields, in the query, the form
or the JSON: ``format`` and the options of the ``algorithm`` group (``seed``, ``octaves``,
``octave_scale``, ``iterations``, ``step_size``, ``jitter``, ``min_size``); the server's flags
fix everything else (model, layers, ...). ``GET /`` answers ``{"status": "ok", "fields": [...],
"limits": {...}, ...}``.

Two deployments. The ingress (``DreamIngress``, no CPU reserved, many requests at once) reads
each body within ``--body-timeout`` (408 past it), parses and checks the fields (400), the upload
size and the pixel count declared by the image's header (413), and the work asked
(``--max-iterations``, ``--max-octaves``: 400), then hands the bytes to the model deployment
(``DreamModel``: one replica per GPU, one CPU replica otherwise), which answers within
``--request-timeout``: 503 (busy, try later) for a request still waiting in line then, 400 naming
the limit for one whose dream ran past it (stopped there, the replica freed). A slow or stalled client therefore holds an ingress slot for
a bounded time and never a model slot. The model replica decodes, checks with ``Dreamer.check``
(400 with the library's message), and dreams requests in batches (``@serve.batch``, cut by
``fastdream.batching``): those that arrive together with the same size and options are stacked and
dreamed at once. A request with a ``seed`` is dreamed alone, so its answer is
``fastdream.dream(image, seed=seed, **options)``, byte for byte; requests without one share a
batch (and its fresh random seed). A failure while dreaming is a 500 for that request only.

Where this sits in the project: docs/architecture.md, "Clusters and servers".
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import errno
import io
import logging
import signal
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from typing import List, NamedTuple, Optional, Tuple

from .batching import cpu_batch_size, window_batches
from .jobs import UsageError, build_dreamer, decode_limited, one_line
from .ray_support import actor_dreamer_options, actor_resources, connect, require_ray
from .serve_requests import FIELD_NAMES, FORMATS, Limits, RequestError, check_pixels, parse_fields, read_body, split_body

APP_NAME = "fastdream"
STOP_TIMEOUT_S = 20.0
_ANSWER_SLACK_S = 5.0
# Ctrl-C stops the server now: a request still running gets 2 s (Serve's default of 20 s per
# replica, with checks every 2 s, made a stop take 5 s here and over a minute on a loaded machine).
STOP_QUICKLY = {"graceful_shutdown_timeout_s": 2.0, "graceful_shutdown_wait_loop_s": 0.5}
_TEXT = "text/plain; charset=utf-8"


def encode(image, fmt: str) -> bytes:
    """uint8 Tensor[3, H, W] -> PNG or JPEG bytes, as ``save_image`` writes them."""
    from .image_io import encode_image

    return encode_image(image, "." + fmt)


class DreamIngress:
    """The HTTP deployment: reads and checks each request, then awaits ``model.dream``.

    ``model``: the ``DreamModel`` deployment's handle; ``options``: the server's ``Dreamer``
    options (the defaults of a request's fields); ``limits``: the operator's bounds."""

    def __init__(self, model, options: dict, limits: Limits):
        self.model = model
        self.options = dict(options)
        self.limits = limits
        self.served = 0

    def _checked(self, content_type: str, body: bytes, query) -> tuple:
        image, fields = split_body(content_type, body, query)
        overrides, seed, fmt = parse_fields(fields, self.options, self.limits)
        check_pixels(image, self.limits)
        return image, overrides, seed, fmt

    async def __call__(self, request):
        from starlette.responses import JSONResponse, PlainTextResponse, Response

        if request.method == "GET":
            return JSONResponse({"status": "ok", "served": self.served, "options": sorted(self.options),
                                 "fields": list(FIELD_NAMES), "limits": dataclasses.asdict(self.limits)})
        if request.method != "POST":
            return PlainTextResponse("POST an image file (GET for the status)", status_code=405)
        try:
            body = await read_body(request, self.limits)
            item = await asyncio.to_thread(
                self._checked, request.headers.get("content-type", ""), body, request.query_params.multi_items())
        except RequestError as exc:
            return PlainTextResponse(str(exc), status_code=exc.status)
        timeout = self.limits.request_timeout_s
        response = self.model.dream.remote(item + (Deadline(time.time() + timeout, timeout),))
        try:  # the replica answers at the deadline itself; this wait is for a replica that cannot
            status, kind, payload = await asyncio.wait_for(response, timeout + _ANSWER_SLACK_S)
        except asyncio.TimeoutError:
            response.cancel()
            return PlainTextResponse(_late(timeout), status_code=503)
        except Exception as exc:  # the replica died (Ray restarts it): this request's answer only
            return PlainTextResponse(f"dreaming failed: the model replica failed ({type(exc).__name__})",
                                     status_code=500)
        if status != 200:
            return PlainTextResponse(payload, status_code=status)
        self.served += 1
        return Response(payload, media_type=kind)


def _late(timeout: float) -> str:
    return f"not answered within this server's request time limit of {timeout:g} s (--request-timeout): try later"


class _PastDeadline(Exception):
    """A batch still dreaming at its requests' deadline: stopped, its slot freed for others."""


def _over_time(timeout: float) -> str:
    return (f"the dream ran past this server's request time limit of {timeout:g} s (--request-timeout): "
            "ask fewer iterations, octaves or pixels")


_COMPUTE: Optional[concurrent.futures.ThreadPoolExecutor] = None
_COMPUTE_LOCK = threading.Lock()


def _compute() -> concurrent.futures.ThreadPoolExecutor:
    """The one thread of this process that runs torch (decoding, checks, dreams, encoding).

    Every thread that runs torch's parallel ops keeps an OpenMP pool of its own, and while two
    are alive all parallel work is slower (a dream 1.6-2.4x slower on 2 cores, measured here):
    ``asyncio.to_thread``'s pool would spread a replica's work over several such threads."""
    global _COMPUTE
    with _COMPUTE_LOCK:
        if _COMPUTE is None:
            _COMPUTE = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fastdream-compute")
        return _COMPUTE


async def _on_compute(fn, *args):
    return await asyncio.get_running_loop().run_in_executor(_compute(), fn, *args)


class DreamModel:
    """The model deployment: one replica. ``options``: ``Dreamer(**options)`` (checked once at
    start-up); ``threads``: torch threads on CPUs (``None``: leave Ray's)."""

    def __init__(self, options: dict, max_side: Optional[int] = None, threads: Optional[int] = None):
        self.options = actor_dreamer_options(options, threads)  # the replica's GPU where it has one
        self.max_side = max_side
        self._dreamers = None  # made on the compute thread, with the model
        _compute().submit(self._dreamer, {}).result()  # the server's own options checked, the model loaded, now

    def _dreamer(self, overrides: dict):
        """The Dreamer of the server's options with a request's ``overrides``: the last few kept,
        by the options they resolve to (a field set to the server's own value is no new one)."""
        from .dream_cache import DreamerCache
        from .dreamer import Dreamer
        from .options import Options

        if self._dreamers is None:
            self._dreamers = DreamerCache(lambda options: Dreamer(**options.as_dict()))
        return self._dreamers.get(Options(**dict(self.options, **overrides)))

    async def dream(self, item: tuple) -> Tuple[int, str, object]:
        """``(image bytes, overrides, seed, format, Deadline)`` -> ``(status, content type, body)``.

        Decoded and checked (400 with the library's message), dreamed in a batch (``_batched``)
        and encoded on the process's one torch thread (``_compute``), between batches: 503
        when still waiting at the deadline (not dreamed: the server is busy), 400 when its dream ran
        past it (stopped: the work asked is too much), 500 when the dream failed."""
        data, overrides, seed, fmt, deadline = item
        try:
            dreamer, image = await _on_compute(self.checked, data, overrides)
        except (ValueError, TypeError, OSError) as exc:
            return 400, _TEXT, one_line(exc)
        status, result = await self._batched((dreamer, image, seed, deadline))
        if status != 200:
            return status, _TEXT, result
        return 200, FORMATS[fmt], await _on_compute(encode, result, fmt)

    def checked(self, data: bytes, overrides: dict):
        """``(Dreamer, uint8 Tensor[3, H, W])`` for an upload; ValueError/TypeError/OSError
        (the library's) for an image or options it refuses."""
        dreamer = self._dreamer(overrides)  # on the one compute thread, as every call here
        image = decode_limited(data, "upload", self.max_side)
        dreamer.check(image)
        return dreamer, image

    async def _batched(self, items: List[tuple]) -> List[tuple]:
        # wrapped by serve.batch in build_app (Ray imported only there); one batch at a time
        return await _on_compute(dream_batch, items)


class Deadline(NamedTuple):
    """A request's deadline: ``at`` (``time.time()``), that is ``limit_s`` after it arrived."""

    at: float
    limit_s: float


def dream_batch(items: List[tuple]) -> List[tuple]:
    """``[(dreamer, image, seed, Deadline)]`` -> ``[(200, image) | (status, message)]``, as
    :func:`dream_requests` with each request's deadline."""
    return dream_requests([item[:3] for item in items], [item[3] for item in items])


def dream_requests(items: List[tuple], deadlines: Optional[List[Deadline]] = None) -> List[tuple]:
    """``[(dreamer, uint8 Tensor[3, H, W], seed)]`` -> ``[(200, image) | (status, message)]``:
    unseeded requests with the same Dreamer and size dreamed as one batch (``batching``'s cut; on
    the CPU at most ``cpu_batch_size`` images), seeded ones alone, one batch after another. With
    ``deadlines``: a request already past its deadline when its batch comes is not dreamed (503),
    and a batch still running at the latest deadline of its requests is stopped (400 naming the
    limit); a dream that failed is a 500."""
    import torch

    def batch_size(key) -> int:
        if key[0] == "alone":
            return 1
        dreamer = dreamers[key[0]]
        on_gpu = dreamer.options.device is not None and dreamer.options.device.type == "cuda"
        return len(items) if on_gpu else cpu_batch_size(*key[1][-2:])

    dreamers = {id(dreamer): dreamer for dreamer, _, _ in items}
    keys = [(id(dreamer), tuple(image.shape)) if seed is None else ("alone", i)
            for i, (dreamer, image, seed) in enumerate(items)]
    results: List[Optional[tuple]] = [None] * len(items)
    for indices in window_batches(keys, batch_size):
        until = None
        if deadlines is not None:
            now = time.time()
            for i in [i for i in indices if now > deadlines[i].at]:
                results[i] = (503, _late(deadlines[i].limit_s))
            indices = [i for i in indices if results[i] is None]
            if not indices:
                continue
            until = max((deadlines[i] for i in indices), key=lambda deadline: deadline.at)

        def on_step(steps: int, until=until):  # after each step, on the host: no device sync
            if time.time() > until.at:
                raise _PastDeadline

        dreamer, _, seed = items[indices[0]]
        try:
            out = dreamer(torch.stack([items[i][1] for i in indices]), seed=seed, progress=on_step if until else False)
        except _PastDeadline:
            for i in indices:
                results[i] = (400, _over_time(until.limit_s))
            continue
        except Exception as exc:  # a replica answers every request, whatever failed
            for i in indices:
                results[i] = (500, f"dreaming failed: {one_line(exc)}")
            continue
        for j, i in enumerate(indices):
            results[i] = (200, out[j])
    return results


def build_app(
    options: dict,
    *,
    limits: Limits = Limits(),
    max_batch_size: int = 8,
    batch_wait_timeout_s: float = 0.02,
    max_side: Optional[int] = None,
    num_replicas: Optional[int] = None,
):
    """The Serve application: ``serve.run(build_app(options), route_prefix="/")``.

    The ingress takes up to ``limits.max_clients`` requests at once (``limits.max_waiting`` more wait in
    line at Serve's proxy; past that, 503) and reserves no CPU. The model:
    one replica per GPU of the connected cluster (``num_gpus=1`` each), else one CPU replica with
    this process's torch threads (its results are then the library's on this machine, byte for
    byte); ``max_batch_size`` requests are batched at most, waiting ``batch_wait_timeout_s`` for a
    batch to fill. ValueError when the server's own ``iterations`` or ``octaves`` exceed ``limits``.
    """
    ray = require_ray("fastdream.serve")
    from ray import serve

    try:
        limits.check_options(options)
    except RequestError as exc:
        raise ValueError(f"the server's own options: {exc}") from None
    actor, threads, gpus = actor_resources(ray)
    model = type("DreamModel", (DreamModel,), {
        "_batched": serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_timeout_s)(
            DreamModel._batched
        ),
    })
    model_app = serve.deployment(
        model,
        name="fastdream-model",
        num_replicas=num_replicas or max(1, gpus),
        ray_actor_options=actor,
        max_ongoing_requests=4 * max_batch_size,
        **STOP_QUICKLY,
    ).bind(options, max_side, threads)
    ingress = serve.deployment(
        DreamIngress,
        name="fastdream",
        ray_actor_options={"num_cpus": 0},
        max_ongoing_requests=limits.max_clients,
        max_queued_requests=limits.max_waiting,  # past it, Serve's proxy answers 503 at once
        **STOP_QUICKLY,
    )
    return ingress.bind(model_app, options, limits)


def check_address(host: str, port: int, bind: bool = True) -> None:
    """UsageError (one line) for a port out of range, a host that does not resolve, or (``bind``)
    an address this machine cannot listen on or that is in use: answered before Ray starts."""
    if not 1 <= port <= 65535:
        raise UsageError(f"--port must be in 1..65535, got {port}")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(f"--host {host!r} is not an address or a name this machine resolves ({one_line(exc)})") from None
    if not bind:
        return
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server's own socket
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UsageError(f"--port {port}: {host}:{port} is in use (another server?)") from None
            raise UsageError(f"--host {host!r}: cannot listen there ({one_line(exc)})") from None


def _url(host: str, port: int, local: bool = False) -> str:
    """``http://host:port/``; ``local``: one that reaches it from this machine (a wildcard address:
    the loopback)."""
    if local:
        host = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _wait_until_served(url: str, timeout: float = 120.0) -> bool:
    """Polls ``GET url`` until it answers 200 (the route is up), at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return True
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    return False


def _quiet_ray_loggers() -> None:
    """The driver's copies of Ray's start-up lines ("Started Serve", "Connecting to existing Serve
    app"; the token-authentication notice: ``init_ray``) are not printed: the terminal gets "ready
    at URL" and errors; Serve's own log files (``/tmp/ray/session_latest/logs/serve``) keep theirs."""
    logging.getLogger("ray.serve").setLevel(logging.ERROR)


def serve_forever(args, options: dict) -> int:
    """``fastdream serve [--host H] [--port P] [limits] [dream options]``: serves ``Dreamer(**options)``
    (the options the command line gave) until Ctrl-C."""
    require_ray("fastdream serve")
    if args.seed is not None:
        raise UsageError("fastdream serve takes the seed per request (?seed=N), not --seed")
    check_address(args.host, args.port, bind=args.ray in (None, "local"))
    limits = Limits.from_args(args)
    try:
        limits.check_options(options)
    except RequestError as exc:
        raise UsageError("--" + str(exc).replace("this server's limit", "the limit")) from None
    build_dreamer(options, here=True)  # checked before Ray starts
    from ray import serve

    _quiet_ray_loggers()
    ray, started = connect(args.ray)
    try:
        serve.start(http_options={"host": args.host, "port": args.port})
        app = build_app(options, limits=limits, max_batch_size=args.max_batch_size, max_side=args.max_side)
        serve.run(app, name=APP_NAME, route_prefix="/")
        url = _url(args.host, args.port, local=True)
        # Through Ray Client (ray://) this process is off the cluster: no proxy here to ask.
        if not str(args.ray).startswith("ray://") and not _wait_until_served(url):
            print(f"fastdream: error: the server did not answer at {url}; see Ray's logs "
                  "(/tmp/ray/session_latest/logs/serve)", file=sys.stderr)
            return 1
        where = " on the cluster's nodes" if str(args.ray).startswith("ray://") else ""
        print(f"ready at {_url(args.host, args.port)}{where} (POST an image; Ctrl-C stops)", flush=True)
        _wait_for_ctrl_c()
        print("stopping", file=sys.stderr)
        return 0
    finally:
        _stop_serving(ray, started)


def _stop_serving(ray, started: bool, timeout: float = STOP_TIMEOUT_S) -> None:
    """Removes this server from Serve, bounded by ``timeout`` seconds: Serve as a whole when it
    holds no other application (else only ours: a shared cluster's other apps stay up), then the
    local Ray this process started. Ray's driver prints the errors a shutdown provokes
    ("(raylet) Task ServeController.graceful_shutdown failed ...") to sys.stdout from a thread; they
    stay in Ray's logs, not the terminal."""
    from ray import serve

    def remove():
        try:
            others = [name for name in serve.status().applications if name != APP_NAME]
            serve.delete(APP_NAME) if others else serve.shutdown()
        except Exception:  # a Serve already gone; the local Ray below goes anyway
            pass

    with contextlib.redirect_stdout(io.StringIO()):
        worker = threading.Thread(target=remove, daemon=True)
        worker.start()
        worker.join(timeout)
        if started:
            ray.shutdown()  # ends every process of a Ray this command started, Serve's included
    if worker.is_alive() and not started:
        print(f"fastdream: Serve did not remove the app {APP_NAME!r} within {timeout:g} s; see `serve status`",
              file=sys.stderr)


def _wait_for_ctrl_c() -> None:
    """Returns at the first SIGINT, and leaves the handler that absorbs more in place until the
    process ends: a second Ctrl-C (or the same signal sent to the process and its group, as
    ``timeout`` does) must not cut Serve's and Ray's shutdown short."""
    if threading.current_thread() is not threading.main_thread():  # signals go to the main thread only
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return
    stop = threading.Event()
    signal.signal(signal.SIGINT, lambda signum, frame: stop.set())
    while not stop.wait(1.0):
        pass
