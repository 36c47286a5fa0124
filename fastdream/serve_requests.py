"""What one HTTP request to ``fastdream serve`` carries, read and checked before any model work:
the operator's limits (:class:`Limits`, each with its ``fastdream serve`` flag), the body read
within a time limit, raw / JSON / multipart bodies, the per-request fields (the options of the
``algorithm`` group of :mod:`fastdream.options`, plus ``format``) and the image's pixel count from
its header. No torch and no Ray: the server's ingress runs it (docs/architecture.md, "Clusters
and servers").
"""
from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import io
import json
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Mapping, Optional, Tuple, Union

from . import options as options_schema
from .jobs import one_line

FORMATS = {"png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg"}
REQUEST_GROUP = "algorithm"
REQUEST_FIELDS: Dict[str, dataclasses.Field] = {
    f.name: f for f in options_schema.fields() if f.metadata["group"] == REQUEST_GROUP
}
"""The options a request may set (``seed``, ``octaves``, ``iterations``, ...): the ``algorithm``
group of the options schema, with its parsers (query strings) and checks (every value)."""
FIELD_NAMES = tuple(REQUEST_FIELDS) + ("format",)


class RequestError(Exception):
    """A request answered with HTTP ``status`` (400, 408, 413, 503) and ``str(error)`` as the text."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


# ------------------------------------------------------------------------------------------ limits


def _limit(default, kind, flag: str, metavar: str, help: str):
    return field(default=default, metadata=dict(kind=kind, flag=flag, metavar=metavar, help=help))


@dataclass(frozen=True)
class Limits:
    """The operator's bounds on what one request may cost; each is a ``fastdream serve`` flag."""

    max_upload_mb: float = _limit(20.0, float, "--max-upload-mb", "MB", "larger uploads get HTTP 413")
    max_megapixels: float = _limit(
        16.0, float, "--max-megapixels", "MP",
        "images whose header declares more pixels get HTTP 413, before they are decoded")
    max_iterations: int = _limit(100, int, "--max-iterations", "N", "a request asking more iterations gets HTTP 400")
    max_octaves: int = _limit(8, int, "--max-octaves", "N", "a request asking more octaves gets HTTP 400")
    body_timeout_s: float = _limit(
        30.0, float, "--body-timeout", "S", "an upload not received in S seconds gets HTTP 408 (slow clients)")
    request_timeout_s: float = _limit(
        300.0, float, "--request-timeout", "S", "a request still waiting after S seconds gets HTTP 503, one still dreaming is stopped: 400")
    max_clients: int = _limit(
        256, int, "--max-clients", "N", "requests being received or waited on at once; more wait in line")
    max_waiting: int = _limit(
        1024, int, "--max-waiting", "N", "requests waiting in line for one of the --max-clients; more get HTTP 503 at once")

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 \
                    or value == float("inf") or (f.metadata["kind"] is int and value != int(value)):
                what = "an int" if f.metadata["kind"] is int else "a number"
                raise ValueError(f"{f.name} must be {what} > 0, got {value!r}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 2**20)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1e6)

    def check_work(self, iterations: int, octaves: int) -> None:
        """RequestError 400 when ``iterations`` or ``octaves`` is over its limit."""
        for name, value, bound in (("iterations", iterations, self.max_iterations),
                                   ("octaves", octaves, self.max_octaves)):
            if value > bound:
                raise RequestError(400, f"{name} {value} is over this server's limit of {bound} "
                                        f"({_FLAGS[f'max_{name}']})")

    def check_options(self, options: Mapping[str, Any]) -> None:
        """:meth:`check_work` for the ``Dreamer`` options ``options`` (absent: the defaults)."""
        self.check_work(*(options.get(name, REQUEST_FIELDS[name].default) for name in ("iterations", "octaves")))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Limits":
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


_FLAGS = {f.name: f.metadata["flag"] for f in dataclasses.fields(Limits)}


def add_limit_flags(parser: argparse.ArgumentParser) -> None:
    """``--max-upload-mb``, ``--max-megapixels``, ... on ``fastdream serve``'s parser."""
    group = parser.add_argument_group("limits per request")
    for f in dataclasses.fields(Limits):
        meta = f.metadata
        group.add_argument(meta["flag"], dest=f.name, type=_positive(meta["kind"]), default=f.default,
                           metavar=meta["metavar"], help=f"{meta['help']} (default: {f.default:g})")


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'a whole number' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if not (value > 0 and value != float("inf")):
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value

    return parse


# ---------------------------------------------------------------------------------- body and fields


async def read_body(request, limits: Limits) -> bytes:
    """The body of a Starlette ``request``: 413 past ``max_upload_bytes`` (declared, then counted),
    408 when it has not all arrived within ``body_timeout_s``."""
    import asyncio  # here, like email below: the command line's start-up imports this module

    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_upload_bytes:
        raise RequestError(413, f"upload of {int(declared)} bytes is over this server's limit of "
                                f"{limits.max_upload_bytes} bytes ({_FLAGS['max_upload_mb']})")

    async def chunks() -> bytes:
        parts, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_upload_bytes:
                raise RequestError(413, f"upload is over this server's limit of {limits.max_upload_bytes} "
                                        f"bytes ({_FLAGS['max_upload_mb']})")
            parts.append(chunk)
        return b"".join(parts)

    try:
        return await asyncio.wait_for(chunks(), limits.body_timeout_s)
    except asyncio.TimeoutError:
        raise RequestError(408, f"the upload did not arrive within {limits.body_timeout_s:g} s "
                                f"({_FLAGS['body_timeout_s']})") from None


def split_body(content_type: str, body: bytes, query: Union[Mapping[str, str], Iterable[Tuple[str, str]]]
               ) -> Tuple[bytes, Dict[str, Any]]:
    """``(image bytes, fields)`` of a request: the raw body with the query's fields (a mapping or
    ``(name, value)`` pairs), a JSON object ``{"image": "<base64>", field: value, ...}``, or a
    multipart form with an ``image`` file part and text fields. RequestError 400 naming what is
    wrong (a field given twice included)."""
    kind = content_type.split(";")[0].strip().lower()
    fields: Dict[str, Any] = {}
    for name, value in (query.items() if isinstance(query, Mapping) else query):
        if name in fields:
            raise RequestError(400, f"{name} is given twice in the query")
        fields[name] = value
    if kind == "application/json":
        image, sent = _json_body(body)
    elif kind == "multipart/form-data":
        image, sent = _multipart_body(content_type, body)
    else:
        image, sent = body, {}
    for name in sent:
        if name in fields:
            raise RequestError(400, f"{name} is given twice (in the query and in the body)")
    fields.update(sent)
    if not image:
        raise RequestError(400, "the request has no image: POST the image file as the body, as a JSON "
                                "{\"image\": \"<base64>\"} or as the multipart field 'image'")
    return image, fields


def _json_body(body: bytes) -> Tuple[bytes, Dict[str, Any]]:
    try:
        payload = json.loads(body)
    except RecursionError:
        raise RequestError(400, "JSON body: nested too deep (expected an object of fields)") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(400, f"JSON body: not valid JSON ({one_line(exc)})") from None
    if not isinstance(payload, dict):
        raise RequestError(400, f"JSON body: expected an object {{\"image\": \"<base64>\", ...}}, "
                                f"got {type(payload).__name__}")
    image = payload.pop("image", None)
    if not isinstance(image, str):
        raise RequestError(400, f"JSON body: image must be the image file as a base64 string, "
                                f"got {'nothing' if image is None else type(image).__name__}")
    try:
        data = base64.b64decode(image, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise RequestError(400, f"JSON body: image is not valid base64 ({one_line(exc)})") from None
    return data, payload


def _multipart_body(content_type: str, body: bytes) -> Tuple[bytes, Dict[str, Any]]:
    import email.parser
    import email.policy

    head = f"Content-Type: {content_type}\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    if not message.is_multipart():
        raise RequestError(400, "multipart body: not a multipart/form-data body with a boundary")
    image, files, fields = None, [], {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        data = part.get_payload(decode=True) or b""
        if name == "image":
            image = data
        elif part.get_filename() is not None:
            files.append((name, data))
        elif name:
            try:
                fields[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestError(400, f"multipart body: field {name!r} is not UTF-8 text") from None
    if image is None and len(files) == 1:
        image = files[0][1]  # one file under another name: it is the image
    if image is None:
        named = ", ".join(repr(n) for n, _ in files) or "none"
        raise RequestError(400, f"multipart body: expected the image as the file field 'image' (file fields: {named})")
    return image, fields


def parse_fields(fields: Mapping[str, Any], server_options: Mapping[str, Any], limits: Limits
                 ) -> Tuple[Dict[str, Any], Optional[int], str]:
    """``(dreamer options, seed, format)`` of a request's fields (query strings or JSON values),
    each parsed and checked as the options schema declares it, then held to ``limits``.
    ``server_options``: the server's own options (what a request does not set)."""
    unknown = sorted(set(fields) - set(FIELD_NAMES))
    if unknown:
        raise RequestError(400, f"unknown field {unknown[0]!r}; per-request fields: {', '.join(FIELD_NAMES)}")
    chosen: Dict[str, Any] = {}
    for name, value in fields.items():
        if name == "format":
            continue
        meta = REQUEST_FIELDS[name].metadata
        if isinstance(value, str) and meta["parse"] is not None:
            try:
                value = meta["parse"](value)
            except ValueError as exc:
                raise RequestError(400, f"{name}: {_expected(exc, value)}") from None
        try:
            chosen[name] = meta["check"](name, value)
        except (ValueError, TypeError) as exc:
            raise RequestError(400, one_line(exc)) from None
    fmt = fields.get("format", "png")
    if not isinstance(fmt, str) or fmt.lower() not in FORMATS:
        raise RequestError(400, f"format must be png or jpeg, got {fmt!r}")

    def effective(name):
        return chosen.get(name, server_options.get(name, REQUEST_FIELDS[name].default))

    limits.check_work(effective("iterations"), effective("octaves"))
    seed = chosen.pop("seed", None)
    return chosen, seed, fmt.lower()


def _expected(exc: ValueError, text: str) -> str:
    message = one_line(exc)
    if message.startswith("invalid literal"):  # int()
        return f"expected a whole number, got {text!r}"
    if message.startswith("could not convert"):  # float()
        return f"expected a number, got {text!r}"
    return message


# ------------------------------------------------------------------------------------------ pixels


def check_pixels(image: bytes, limits: Limits) -> Tuple[int, int]:
    """``(width, height)`` that the image file's header declares, read without decoding the pixels;
    RequestError 413 past ``limits.max_pixels``, 400 when it is no image Pillow reads."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(image)) as im:
                width, height = im.size
    except Image.DecompressionBombError:
        width = height = None
    except Image.UnidentifiedImageError:
        raise RequestError(400, "the upload is not a readable image (no image format Pillow reads)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise RequestError(400, f"the upload is not a readable image ({type(exc).__name__}: {one_line(exc)})") from None
    if width is None or width * height > limits.max_pixels:
        size = "" if width is None else f"{width}x{height} = {width * height / 1e6:.3g} megapixels: "
        raise RequestError(413, f"image of {size}over this server's limit of {limits.max_megapixels:g} "
                                f"megapixels ({_FLAGS['max_megapixels']})")
    return width, height
