"""``fastdream serve`` run as a user runs it (a subprocess on 127.0.0.1 with small limits, shared
by the tests of this module and stopped at the end): the library's answer for a seeded request
(raw, multipart and JSON bodies), 400s naming the field for bad requests, 413 for uploads and
pixel counts over the limits, 408 for stalled uploads that never hold the model's slots, the
address errors before Ray starts, no Ray noise in the terminal; and the request parsing, limits
and batching as units."""

import base64
import concurrent.futures
import io
import json
import os
import pathlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

import fastdream
from fastdream import cli
from fastdream.serve import Deadline, DreamModel, dream_batch, dream_requests
from fastdream.serve_requests import Limits, RequestError, check_pixels, parse_fields, split_body

OPTIONS = {"octaves": 2, "iterations": 2}
LIMITS = {"--max-upload-mb": "0.05", "--body-timeout": "10", "--max-megapixels": "0.5", "--max-iterations": "5",
          "--max-octaves": "3"}
STARTUP_S = 300
STOP_S = 120  # the server bounds its own stop (20 s for Serve, then Ray); slack for a loaded CI machine


def png(height, width, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def png_declaring(width, height) -> bytes:
    """A small PNG (~7 KB) whose header declares ``width x height`` pixels (a decompression bomb)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(7_000_000), 9))
            + chunk(b"IEND", b""))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """``fastdream serve`` in a subprocess that imports this fastdream; ``url`` once it said ready."""

    def __init__(self, folder: pathlib.Path, limits: dict = LIMITS):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ, PYTHONPATH=str(pathlib.Path(fastdream.__file__).parent.parent))
        command = [sys.executable, "-m", "fastdream", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                   "--octaves", "2", "--iterations", "2", "--max-batch-size", "4"]
        command += [part for item in limits.items() for part in item]
        if shutil.which("timeout"):  # stops by itself even if this test process dies
            command = ["timeout", "-s", "INT", "-k", str(STOP_S + 30), "900"] + command
        self.stderr_path = folder / "stderr.txt"
        self._stderr = open(self.stderr_path, "w")
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self._stderr, text=True, env=env,
                                        cwd=folder)
        self.stdout: list = []
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.process.stdout:
            self.stdout.append(line)
            if line.startswith("ready at"):
                self._ready.set()
        self._ready.set()

    def wait_ready(self, timeout: float) -> None:
        self._ready.wait(timeout)
        if self.process.poll() is not None or not any(line.startswith("ready at") for line in self.stdout):
            self.stop()
            raise RuntimeError(f"fastdream serve did not start:\n{''.join(self.stdout)}\n{self.stderr_path.read_text()}")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # Ctrl-C: Serve and Ray shut down
            try:
                self.process.wait(STOP_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._stderr.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    pytest.importorskip("ray")  # a guard for users without the [ray] extra; CI installs it
    running = Server(tmp_path_factory.mktemp("serve"))
    running.wait_ready(STARTUP_S)
    yield running
    running.stop()


def post(url, body, query="", content_type="application/octet-stream", timeout=120):
    request = urllib.request.Request(url + query, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def get_status(url: str, timeout: float = 60) -> tuple:
    """``(HTTP status of GET url, seconds it took)``; the body of a 503 checked to name the limit."""
    start = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
        if status == 503:  # Serve's proxy answers it; the number is --max-waiting's
            assert b"max_queued_requests=2" in exc.read()
    return status, time.monotonic() - start


def decoded(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)


def test_ready_line_and_no_ray_noise(server):
    assert server.stdout[0] == f"ready at {server.url} (POST an image; Ctrl-C stops)\n"
    with urllib.request.urlopen(server.url, timeout=10) as response:  # served once it says ready
        status = json.load(response)
    assert status["status"] == "ok" and status["limits"]["max_iterations"] == 5
    assert status["fields"] == ["octaves", "octave_scale", "iterations", "step_size", "jitter", "min_size", "seed",
                                "format"]
    noise = server.stderr_path.read_text()
    for line in ("Token authentication", "Connecting to existing Serve app", "Started Serve", "INFO", "ERROR"):
        assert line not in noise


def test_seeded_request_is_the_library_result(server):
    import requests

    body = png(64, 80)
    image = decoded(body)
    expected = fastdream.dream(image, seed=5, **OPTIONS)
    status, kind, data = post(server.url, body, "?seed=5")
    assert status == 200 and kind == "image/png" and torch.equal(decoded(data), expected)
    answer = requests.post(server.url, files={"image": ("x.png", body, "image/png")}, data={"seed": "5"}, timeout=120)
    assert answer.status_code == 200 and torch.equal(decoded(answer.content), expected)
    payload = json.dumps({"image": base64.b64encode(body).decode(), "seed": 5}).encode()
    status, _, via_json = post(server.url, payload, content_type="application/json")
    assert status == 200 and torch.equal(decoded(via_json), expected)
    status, kind, data = post(server.url, body, "?seed=5&format=jpeg&iterations=1")
    assert status == 200 and kind == "image/jpeg" and decoded(data).shape == image.shape


@pytest.mark.parametrize(
    "body, query, content_type, status, message",
    [
        (b"not an image", "", None, 400, "not a readable image"),
        (b"", "", None, 400, "no image"),
        (None, "?octaves=0", None, 400, "octaves must be >= 1"),
        (None, "?step_size=abc", None, 400, "step_size: expected a number, got 'abc'"),
        (None, "?seed=-1", None, 400, "seed must be in [0, 2**63)"),
        (None, "?format=gif", None, 400, "format must be png or jpeg"),
        (None, "?model=vgg16", None, 400, "unknown field 'model'"),
        (None, "?iterations=6", None, 400, "iterations 6 is over this server's limit of 5 (--max-iterations)"),
        (None, "?octaves=4", None, 400, "octaves 4 is over this server's limit of 3 (--max-octaves)"),
        (b'{"image": "aGk=", "iterations": [1]}', "", "application/json", 400, "iterations must be an int"),
        (b"[" * 20_000 + b"]" * 20_000, "", "application/json", 400, "nested too deep"),
        (b"x" * 60_000, "", None, 413, "over this server's limit of 52428 bytes (--max-upload-mb)"),
        (png_declaring(12000, 12000), "", None, 413, "12000x12000 = 144 megapixels: over this server's limit of "
                                                      "0.5 megapixels (--max-megapixels)"),
    ],
    ids=["junk", "empty", "octaves", "step", "seed", "format", "unknown", "iterations-limit", "octaves-limit",
         "json-list", "json-deep", "upload-limit", "pixel-limit"],
)
def test_bad_requests(server, body, query, content_type, status, message):
    got, _, text = post(server.url, png(64, 80) if body is None else body, query,
                        content_type or "application/octet-stream")
    assert (got, message) == (status, message) and message in text.decode()


def test_tiny_image_gets_the_library_message(server):
    got, _, text = post(server.url, png(8, 8))
    with pytest.raises(ValueError) as library:
        fastdream.Dreamer(**OPTIONS).check(torch.zeros(3, 8, 8, dtype=torch.uint8))
    assert got == 400 and text.decode() == str(library.value)


def test_stalled_uploads_lock_nobody_out(server):
    """40 clients (more than the model's 16 slots) send headers and 3 bytes of a 10 000-byte body,
    then stall: while all of them still stall, the status and a dream are answered; then each
    stalled one gets 408 (--body-timeout 10)."""
    stalled = []
    try:
        for _ in range(40):
            client = socket.create_connection(("127.0.0.1", server.port), timeout=60)
            client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\nabc")
            stalled.append(client)
        with urllib.request.urlopen(server.url, timeout=30) as response:
            assert json.load(response)["status"] == "ok"
        assert post(server.url, png(64, 80), "?seed=1", timeout=60)[0] == 200
        for client in stalled:  # none answered yet: the two requests above passed them all
            client.setblocking(False)
            with pytest.raises(BlockingIOError):
                client.recv(1)
            client.settimeout(60)
        for client in stalled:
            assert client.recv(64).startswith(b"HTTP/1.1 408")
    finally:
        for client in stalled:
            client.close()


def test_concurrent_mixed_sizes_all_answered(server):
    bodies = [png(64, 80, i) if i % 2 else png(72, 96, i) for i in range(8)] + [b"junk"] * 2
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: post(server.url, body), bodies))
    assert [a[0] for a in answers] == [200] * 8 + [400] * 2
    for body, (_, _, data) in zip(bodies[:8], answers):
        assert decoded(data).shape == decoded(body).shape
    with urllib.request.urlopen(server.url, timeout=30) as response:  # still up
        assert json.load(response)["status"] == "ok"


def test_ctrl_c_stops_quietly(server):
    """Last of the server's tests: Ctrl-C ends it with exit code 0 and one line on stderr."""
    server.stop()
    assert server.process.returncode == 0
    assert server.stderr_path.read_text() == "stopping\n" and len(server.stdout) == 1


def test_request_time_limit_and_client_limit(tmp_path):
    """A second server (after the first stopped), ``--request-timeout 5 --max-clients 2
    --max-waiting 2``: a dream asking far more than 5 s of work (800 steps, the last 100 at
    400x400) is stopped at the limit with a 400 naming it, and the replica answers the next
    request; two stalled uploads hold both client slots, so of four more requests the first wait in
    line until ``--body-timeout`` (8 s) answers the stalled ones 408, and the last get 503 at once
    (Serve counts the line loosely: one or two of them wait)."""
    pytest.importorskip("ray")
    running = Server(tmp_path, {"--request-timeout": "5", "--max-clients": "2", "--max-waiting": "2",
                                "--body-timeout": "8"})
    stalled = []
    try:
        running.wait_ready(STARTUP_S)
        status, _, text = post(running.url, png(400, 400), "?iterations=100&octaves=8&seed=0")
        assert status == 400, text
        assert "the dream ran past this server's request time limit of 5 s (--request-timeout)" in text.decode()
        assert post(running.url, png(40, 48), "?iterations=1&octaves=1&seed=0")[0] == 200  # the replica is free
        for _ in range(2):
            client = socket.create_connection(("127.0.0.1", running.port), timeout=60)
            client.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\nabc")
            stalled.append(client)
        time.sleep(3.0)  # both reach the ingress and hold its two slots (slack for a loaded machine)
        with concurrent.futures.ThreadPoolExecutor(4) as pool:  # the first wait in line, the last are past it
            waiting = []
            for _ in range(4):
                waiting.append(pool.submit(get_status, running.url))
                time.sleep(0.5)
            answers = [future.result() for future in waiting]
        served = [seconds for status, seconds in answers if status == 200]
        refused = [seconds for status, seconds in answers if status == 503]
        assert served and refused and len(served) + len(refused) == 4, answers
        assert min(served) > 2.0 and max(refused) < min(served), answers  # in line for a slot; refused at once
        for client in stalled:
            assert client.recv(64).startswith(b"HTTP/1.1 408")
    finally:
        for client in stalled:
            client.close()
        running.stop()
    assert running.process.returncode == 0


# --- the command line: address errors before Ray starts ------------------------------------------


def test_serve_command_checks_first(capsys):
    import ray

    running = ray.is_initialized()  # the session's local Ray (ray_local) may be up already in a full run
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cases = [
            (["--octaves", "0"], "--octaves must be >= 1"),
            (["--port", "99999"], "--port must be in 1..65535, got 99999"),
            (["--port", str(port)], f"--port {port}: 127.0.0.1:{port} is in use"),
            (["--host", "no-such-host.invalid"], "--host 'no-such-host.invalid' is not an address"),
            (["--host", "192.0.2.1"], "--host '192.0.2.1': cannot listen there"),  # TEST-NET: not ours
            (["--iterations", "200"], "--iterations 200 is over the limit of 100 (--max-iterations)"),
            (["--body-timeout", "0"], "--body-timeout: must be > 0"),
        ]
        for argv, message in cases:
            assert cli.main(["serve"] + argv) == 2, argv
            err = capsys.readouterr().err
            assert err.count("\n") == 1 and message in err, (argv, err)
    assert ray.is_initialized() == running  # no Ray started by a command that failed its checks


# --- units: request parsing, limits, the model replica's answers, batching --------------------------


def test_fields_come_from_the_options_schema():
    limits = Limits(max_iterations=50)
    assert parse_fields({"octaves": "3", "seed": "4", "format": "JPEG", "min_size": "40"}, {}, limits) == (
        {"octaves": 3, "min_size": 40}, 4, "jpeg")
    assert parse_fields({"octave_scale": 1.5, "jitter": 0}, {}, limits) == ({"octave_scale": 1.5, "jitter": 0},
                                                                            None, "png")
    bad = [({"iterations": [1]}, "iterations must be an int >= 0, got list"),
           ({"iterations": True}, "iterations must be an int >= 0, got bool"),
           ({"octaves": "x"}, "octaves: expected a whole number, got 'x'"),
           ({"octave_scale": {"a": 1}}, "octave_scale must be a real number, got dict"),
           ({"format": 3}, "format must be png or jpeg, got 3"),
           ({"layers": "conv"}, "unknown field 'layers'"),
           ({"iterations": 51}, "iterations 51 is over this server's limit of 50 (--max-iterations)"),
           ({}, "iterations 60 is over this server's limit of 50")]  # the server's own value counts
    for fields, message in bad:
        with pytest.raises(RequestError, match=message.replace("(", r"\(").replace(")", r"\)")) as error:
            parse_fields(fields, {"iterations": 60} if not fields else {}, limits)
        assert error.value.status == 400


def test_bodies_raw_json_multipart():
    import requests

    image = png(9, 11)
    assert split_body("image/png", image, {"seed": "1"}) == (image, {"seed": "1"})
    with pytest.raises(RequestError, match="seed is given twice in the query"):
        split_body("image/png", image, [("seed", "1"), ("seed", "2")])
    as_json = json.dumps({"image": base64.b64encode(image).decode(), "iterations": 3}).encode()
    assert split_body("application/json; charset=utf-8", as_json, {}) == (image, {"iterations": 3})
    form = requests.Request("POST", "http://x/", files={"upload": ("a.png", image)}, data={"seed": "2"}).prepare()
    assert split_body(form.headers["Content-Type"], form.body, {}) == (image, {"seed": "2"})
    bad = [("application/json", b'{"image": 3}', "image must be the image file as a base64 string, got int"),
           ("application/json", b'{"image": "***"}', "image is not valid base64"),
           ("application/json", b"[1]", "expected an object"),
           ("application/json", b"{", "not valid JSON"),
           ("application/json", b"[" * 100_000 + b"]" * 100_000, "nested too deep"),
           ("multipart/form-data", b"x", "not a multipart/form-data body"),
           ("application/json", b'{"image": "aGk=", "seed": 2}', "seed is given twice")]
    for content_type, body, message in bad:
        with pytest.raises(RequestError, match=message) as error:
            split_body(content_type, body, {"seed": "1"} if "twice" in message else {})
        assert error.value.status == 400
    two = requests.Request("POST", "http://x/", files={"a": ("a.png", image), "b": ("b.png", image)}).prepare()
    with pytest.raises(RequestError, match="expected the image as the file field 'image'"):
        split_body(two.headers["Content-Type"], two.body, {})


def test_pixel_limit_reads_only_the_header():
    limits = Limits(max_megapixels=1.0)
    assert check_pixels(png(30, 40), limits) == (40, 30)
    for bomb, status in [(png_declaring(12000, 12000), 413), (png_declaring(1001, 1000), 413),
                         (png_declaring(60000, 60000), 413), (b"junk", 400)]:
        with pytest.raises(RequestError) as error:
            check_pixels(bomb, limits)
        assert error.value.status == status
    with pytest.raises(ValueError, match="max_iterations must be an int > 0, got 0"):
        Limits(max_iterations=0)


def in_(seconds: float, limit: float = 60.0) -> Deadline:
    return Deadline(time.time() + seconds, limit)


def test_model_replica_answers_each_request():
    import asyncio

    model = DreamModel(OPTIONS)
    model._batched = lambda item: asyncio.to_thread(lambda: dream_batch([item])[0])  # serve.batch's part
    body = png(64, 80)
    items = [(body, {}, 3, "png", in_(60)), (body, {"iterations": 1}, None, "jpeg", in_(60)),
             (body, {}, None, "png", in_(-1, 7)),  # past its deadline: not dreamed
             (b"junk", {}, None, "png", in_(60)), (png(8, 8), {}, None, "png", in_(60))]
    answers = [asyncio.run(model.dream(item)) for item in items]
    assert [a[0] for a in answers] == [200, 200, 503, 400, 400]
    assert torch.equal(decoded(answers[0][2]), fastdream.dream(decoded(body), seed=3, **OPTIONS))
    assert answers[1][1] == "image/jpeg" and "not a readable image" in answers[3][2]
    assert "request time limit of 7 s (--request-timeout): try later" in answers[2][2]
    dreamer, image = model.checked(body, {})
    assert dream_batch([(dreamer, image, None, in_(-1)), (dreamer, image, 4, in_(60))])[0][0] == 503


def test_replica_keeps_one_dreamer_per_resolved_options():
    model = DreamModel(OPTIONS)
    same = model._dreamer({"iterations": OPTIONS["iterations"]})  # the server's own value: no new Dreamer
    assert same is model._dreamer({}) and model._dreamer({"iterations": 1}) is not same
    assert model._dreamer({"iterations": 1}) is model._dreamer({"iterations": 1})


def test_a_dream_past_its_deadline_is_stopped_with_a_400(monkeypatch):
    """A dream still running at the deadline stops at its next step (the replica is freed for
    others) and its requests get a 400 naming the limit; dreams within it are the library's."""
    dreamer = fastdream.Dreamer(octaves=2, iterations=50, min_size=16)
    image = decoded(png(64, 80))
    steps = []
    real_time = time.time
    clock = iter(range(10_000))  # each read of the clock one second later: step k ends at second ~k
    monkeypatch.setattr(time, "time", lambda: real_time() + (steps.append(1) or next(clock)))
    start = len(steps)
    answers = dream_batch([(dreamer, image, None, Deadline(real_time() + 5.5, 5.5)),
                           (dreamer, image, None, Deadline(real_time() + 6.5, 6.5))])
    monkeypatch.setattr(time, "time", real_time)
    assert [a[0] for a in answers] == [400, 400]  # one batch, stopped at the later deadline
    assert "the dream ran past this server's request time limit of 6.5 s (--request-timeout)" in answers[0][1]
    assert 5 <= len(steps) - start <= 10  # stopped after a few of its 100 steps, not at the end
    ok = dream_requests([(dreamer, image, 2)], [Deadline(real_time() + 600, 600)])
    assert ok[0][0] == 200 and torch.equal(ok[0][1], dreamer(image, seed=2))


def test_a_request_whose_deadline_passes_while_another_batch_dreams_is_not_dreamed():
    """Each batch is checked against its own requests' deadlines when it comes: the second one,
    whose deadline passed while the first dreamed, gets 503 (busy), not a dream cut short (400)."""
    dreamer = fastdream.Dreamer(octaves=2, iterations=10, min_size=32)
    first, second = decoded(png(128, 128)), decoded(png(64, 80, 1))
    answers = dream_batch([(dreamer, first, None, in_(600)), (dreamer, second, None, in_(0.05, 3))])
    assert answers[0][0] == 200 and answers[0][1].shape == first.shape
    assert answers[1] == (503, "not answered within this server's request time limit of 3 s "
                               "(--request-timeout): try later")


def test_batches_group_by_size_and_seed():
    dreamer = fastdream.Dreamer(**OPTIONS)
    a, b, c = (decoded(png(*size, i)) for i, size in enumerate([(64, 80), (64, 80), (72, 96)]))
    calls = []
    original = dreamer.__call__
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(dreamer), "__call__", lambda self, x, **kw: calls.append(tuple(x.shape)) or original(x, **kw))
        results = dream_requests([(dreamer, a, None), (dreamer, c, None), (dreamer, b, None), (dreamer, a, 7)])
    assert calls == [(2, 3, 64, 80), (1, 3, 72, 96), (1, 3, 64, 80)]  # a+b together, c, the seeded a alone
    assert [status for status, _ in results] == [200] * 4
    assert [r.shape for _, r in results] == [a.shape, c.shape, b.shape, a.shape]
    assert torch.equal(results[3][1], dreamer(a, seed=7))  # seeded: alone, the library's answer
    broken = dream_requests([(dreamer, torch.full((3, 64, 80), 2.0), None)])
    assert broken == [(500, "dreaming failed: image values must lie in [0, 1] for float images, "
                            "got [2, 2] (uint8 images take [0, 255]; clamp or rescale first)")]


def test_ingress_bounds_the_wait_for_the_model():
    """The ingress without Ray: a stalled body → 408; a model that does not answer within
    --request-timeout → 503 naming it, and the model's call is cancelled."""
    import asyncio

    from starlette.requests import Request

    from fastdream.serve import DreamIngress

    class Pending:  # a DeploymentResponse that never comes
        cancelled = False

        def __await__(self):
            return asyncio.sleep(3600).__await__()

        def cancel(self):
            Pending.cancelled = True

    class Model:
        class dream:
            @staticmethod
            def remote(item):
                assert item[1:4] == ({}, 2, "png")
                return Pending()

    def request(chunks):
        async def receive():
            if not chunks:
                await asyncio.sleep(3600)  # the client stalls
            return {"type": "http.request", "body": chunks.pop(0), "more_body": bool(chunks) or stall}
        scope = {"type": "http", "method": "POST", "path": "/", "query_string": b"seed=2", "headers": []}
        return Request(scope, receive)

    ingress = DreamIngress(Model(), OPTIONS, Limits(request_timeout_s=0.2, body_timeout_s=0.2))
    stall = True
    answer = asyncio.run(ingress(request([b"\x89PNG"])))
    assert answer.status_code == 408 and b"(--body-timeout)" in answer.body
    stall = False
    answer = asyncio.run(ingress(request([png(20, 30)])))
    assert answer.status_code == 503 and b"request time limit of 0.2 s (--request-timeout)" in answer.body
    assert Pending.cancelled

    class Died(Pending):
        def __await__(self):
            raise RuntimeError("the actor died")
            yield

    Model.dream.remote = staticmethod(lambda item: Died())
    answer = asyncio.run(ingress(request([png(20, 30)])))
    assert answer.status_code == 500 and answer.body == b"dreaming failed: the model replica failed (RuntimeError)"


# --- stopping: bounded, and a shared cluster's other applications stay up --------------------------


class _StandInServe:
    def __init__(self, apps, hang=0.0):
        self.apps, self.hang, self.calls = apps, hang, []

    def status(self):
        time.sleep(self.hang)
        return type("Status", (), {"applications": {name: None for name in self.apps}})()

    def delete(self, name):
        self.calls.append(("delete", name))

    def shutdown(self):
        self.calls.append(("shutdown",))


@pytest.mark.parametrize("apps, expected", [(["fastdream"], [("shutdown",)]),
                                            (["fastdream", "theirs"], [("delete", "fastdream")])])
def test_stop_removes_only_what_is_ours(monkeypatch, apps, expected):
    from ray import serve as real_serve

    import fastdream.serve as module

    stand_in = _StandInServe(apps)
    for name in ("status", "delete", "shutdown"):
        monkeypatch.setattr(real_serve, name, getattr(stand_in, name))
    ray = type("Ray", (), {"shutdown": lambda: stand_in.calls.append(("ray.shutdown",))})
    module._stop_serving(ray, started=False)
    assert stand_in.calls == expected
    module._stop_serving(ray, started=True)
    assert stand_in.calls == expected * 2 + [("ray.shutdown",)]


def test_stop_is_bounded(monkeypatch, capsys):
    from ray import serve as real_serve

    import fastdream.serve as module

    stand_in = _StandInServe(["fastdream"], hang=5.0)
    monkeypatch.setattr(real_serve, "status", stand_in.status)
    start = time.monotonic()
    module._stop_serving(None, started=False, timeout=0.5)
    assert time.monotonic() - start < 3.0
    err = capsys.readouterr().err
    assert "did not remove the app 'fastdream' within 0.5 s" in err and err.count("\n") == 1
