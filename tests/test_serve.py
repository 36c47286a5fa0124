"""``fastdream serve`` (Ray Serve) on a local Ray, over HTTP on 127.0.0.1: dreamed PNG/JPEG out,
the library's answer for a seeded request, 400 with the library's message for bad input, 413 for
oversize uploads, same-size requests batched, and the server still up after all of them."""

import concurrent.futures
import io
import json
import socket
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from PIL import Image

import fastdream
from fastdream import cli
from fastdream.serve import dream_requests, parse_fields

OPTIONS = {"octaves": 2, "iterations": 2}


def png(height, width, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(ray_local):
    from ray import serve

    from fastdream.serve import build_app

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    serve.run(build_app(OPTIONS, max_upload_mb=0.05, max_batch_size=4), name="fastdream", route_prefix="/")
    yield f"http://127.0.0.1:{port}/"
    serve.delete("fastdream")
    serve.shutdown()


def post(url, body, query="", content_type="application/octet-stream"):
    request = urllib.request.Request(url + query, data=body, method="POST", headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read()


def decoded(data: bytes) -> torch.Tensor:
    return torch.from_numpy(np.array(Image.open(io.BytesIO(data)).convert("RGB"))).permute(2, 0, 1)


def test_seeded_request_is_the_library_result(server):
    body = png(64, 80)
    status, kind, data = post(server, body, "?seed=5")
    assert status == 200 and kind == "image/png"
    image = decoded(body)
    assert torch.equal(decoded(data), fastdream.dream(image, seed=5, **OPTIONS))
    status, kind, data = post(server, body, "?seed=5&format=jpeg&iterations=1")
    assert status == 200 and kind == "image/jpeg" and decoded(data).shape == image.shape
    payload = json.dumps({"image": __import__("base64").b64encode(body).decode(), "seed": 5}).encode()
    status, _, via_json = post(server, payload, content_type="application/json")
    assert status == 200 and torch.equal(decoded(via_json), fastdream.dream(image, seed=5, **OPTIONS))


@pytest.mark.parametrize(
    "body, query, status, message",
    [
        (b"not an image", "", 400, "not a readable image"),
        (b"", "", 400, "no image"),
        (None, "?octaves=0", 400, "octaves must be >= 1"),
        (None, "?step_size=abc", 400, "step_size must be a number"),
        (None, "?seed=-1", 400, "seed must be in [0, 2**63)"),
        (None, "?format=gif", 400, "format must be png or jpeg"),
        (None, "?model=vgg16", 400, "unknown option 'model'"),
        (b"x" * 60_000, "", 413, "over the limit"),
    ],
)
def test_bad_requests(server, body, query, status, message):
    got, _, text = post(server, png(64, 80) if body is None else body, query)
    assert got == status and message in text.decode()


def test_tiny_image_gets_the_library_message(server):
    got, _, text = post(server, png(8, 8))
    with pytest.raises(ValueError) as library:
        fastdream.Dreamer(**OPTIONS).check(torch.zeros(3, 8, 8, dtype=torch.uint8))
    assert got == 400 and text.decode() == str(library.value)


def test_concurrent_mixed_sizes_all_answered(server):
    bodies = [png(64, 80, i) if i % 2 else png(72, 96, i) for i in range(8)] + [b"junk"] * 2
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda body: post(server, body), bodies))
    assert [a[0] for a in answers] == [200] * 8 + [400] * 2
    for body, (_, _, data) in zip(bodies[:8], answers):
        assert decoded(data).shape == decoded(body).shape
    with urllib.request.urlopen(server, timeout=30) as response:  # still up
        assert json.load(response)["status"] == "ok"


def test_batches_group_by_size_and_seed():
    dreamer = fastdream.Dreamer(**OPTIONS)
    a, b, c = (decoded(png(*size, i)) for i, size in enumerate([(64, 80), (64, 80), (72, 96)]))
    results = dream_requests([(dreamer, a, None), (dreamer, b, None), (dreamer, c, None), (dreamer, a, 7)])
    assert all(ok for ok, _ in results)
    assert [r.shape for _, r in results] == [a.shape, b.shape, c.shape, a.shape]
    assert torch.equal(results[3][1], dreamer(a, seed=7))  # seeded: alone, the library's answer
    failed = dream_requests([(dreamer, torch.zeros(3, 64, 80), None)])  # float zeros are fine
    assert failed[0][0]
    broken = dream_requests([(dreamer, torch.full((3, 64, 80), 2.0), None)])
    assert broken == [(False, "dreaming failed: image values must lie in [0, 1] for float images, "
                              "got [2, 2] (uint8 images take [0, 255]; clamp or rescale first)")]


def test_fields():
    assert parse_fields({"octaves": "3", "seed": "4", "format": "JPEG"}) == ({"octaves": 3}, 4, "jpeg")
    with pytest.raises(ValueError, match="octaves must be an integer"):
        parse_fields({"octaves": "x"})


def test_serve_command_checks_options_first(capsys):
    assert cli.main(["serve", "--octaves", "0"]) == 2
    assert "--octaves must be >= 1" in capsys.readouterr().err
