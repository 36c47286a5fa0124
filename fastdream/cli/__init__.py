"""The ``fastdream`` command: dream image files and folders, list models and layers.

``fastdream dream INPUT... -o OUTPUT [options]`` (``--demo`` or ``--noise WxH`` instead of INPUT;
several inputs go through ``Dreamer.dream_many``), ``fastdream zoom IMAGE -o OUTPUT [options]``,
``fastdream video INPUT -o OUTPUT [options]`` (``Dreamer.stream``), ``fastdream models``,
``fastdream layers MODEL``, ``fastdream --version``; on Ray (the ``[ray]`` extra): ``fastdream dream
... --ray [ADDRESS]`` (``fastdream.cluster``) and ``fastdream serve`` (``fastdream.serve``). Run
``fastdream dream --help`` for the options.

Exit codes: 0 success; 1 a runtime failure (missing input, existing output, weights that cannot be
loaded, or any image that failed); 2 a usage error (bad flag value or combination, unknown model,
layer or class); 130 interrupted (Ctrl-C). Errors are one line, ``fastdream: error: ...``, on stderr.

The command line parses (``parser.py``), runs one command (``dream.py``, ``frames.py``, below) and
prints (``printing.py``); what to dream into which file is ``fastdream.jobs``'s. The library (and
so torch) is imported only when a command runs, so ``--help`` stays fast.
"""
from __future__ import annotations

import os
import sys
from typing import Optional, Sequence

from ..errors import NonFiniteError
from ..jobs import UsageError, one_line
from .dream import dream_command
from .frames import video_command, zoom_command
from .parser import PROG, build_parser
from .printing import Interrupted, error_line, options_of

__all__ = ["build_parser", "main"]


def _models_command(args) -> int:
    import fastdream

    for name in fastdream.list_models():
        print(f"{name}  (default)" if name == fastdream.DEFAULT_MODEL else name)
    return 0


def _layers_command(args) -> int:
    import fastdream

    try:
        names = fastdream.list_layers(args.model)
        default = fastdream.default_layer(args.model)
    except (ValueError, TypeError) as exc:  # MODEL is an argument here, not --model
        text = one_line(exc, command_line=True)
        raise UsageError(text.split(": ", 1)[1] if text.startswith(("model: ", "--model: ")) else text) from None
    for name in names:
        print(f"{name}  (default)" if name == default else name)
    return 0


def _serve_command(args) -> int:
    from ..serve import serve_forever

    return serve_forever(args, options_of(args))


COMMANDS = {
    "dream": dream_command,
    "zoom": zoom_command,
    "video": video_command,
    "serve": _serve_command,
    "models": _models_command,
    "layers": _layers_command,
}


def _is_weights_error(exc: BaseException) -> bool:
    errors = sys.modules.get("fastdream.errors")
    return errors is not None and isinstance(exc, errors.WeightsUnavailableError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Runs the ``fastdream`` command with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and argparse's usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        return COMMANDS[args.command](args)
    except KeyboardInterrupt as exc:  # what was finished is kept and said: "N of M images written"
        note = str(exc) if isinstance(exc, Interrupted) else ""
        print(f"\n{PROG}: interrupted" + (f"; {note}" if note else ""), file=sys.stderr)
        return 130
    except BrokenPipeError:  # `fastdream layers vgg16 | head`: the reader left, nothing to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout at exit
        return 141
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, TypeError, OSError, NonFiniteError) as exc:
        print(error_line(exc), file=sys.stderr)
        return 1
    except ImportError as exc:  # an optional package that is missing (the message says how to install it)
        if "pip install" not in str(exc):
            raise
        print(error_line(exc), file=sys.stderr)
        return 1
    except RuntimeError as exc:
        ray_support = sys.modules.get("fastdream.ray_support")
        if ray_support is not None and isinstance(exc, ray_support.WorkerMismatchError):
            print(error_line(str(exc)), file=sys.stderr)
            return 1
        if not _is_weights_error(exc):
            raise
        message = getattr(exc, "command_line", None)
        if message is None:
            message = f"{exc} (on the command line: --weights PATH, or --weights none for random initialisation)"
        print(error_line(" ".join(message.split())), file=sys.stderr)
        return 1
