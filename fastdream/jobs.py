"""The job layer under the command line, the Ray driver and the server: which files to dream into
which outputs, whether an output may be written, the ``Dreamer`` options and one-line messages.

Pure planning (no torch import: the command line answers bad paths before it pays for torch).
Paths are local (``pathlib``) or, for the Ray path, URIs such as ``s3://bucket/in/`` (read and
written through ``pyarrow.fs``). Where this sits: docs/architecture.md, "Command line".
"""
from __future__ import annotations

import io
import os
import pathlib
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from . import options as _options
from ._atomic import open_temp, stale_temps
from .image_io import IMAGE_FORMATS, IMAGE_SUFFIXES

OUTPUT_FORMATS = tuple(suffix[1:] for suffix in IMAGE_SUFFIXES)
"""What ``--format`` offers: every suffix :func:`fastdream.save_image` writes, without the dot."""


class UsageError(ValueError):
    """A bad request (flags that contradict each other, an option the Dreamer refuses): the
    command line reports it as ``fastdream: error: ...`` with exit code 2."""


def one_line(exc: BaseException, *, command_line: bool = False) -> str:
    """The error's message on one line. ``command_line=True``: an option named in flag syntax
    (``--octave-scale``) and the models' command-line wording (``fastdream layers MODEL``)."""
    if command_line and isinstance(exc, _options.OptionError):
        text = exc.for_command_line()
    elif command_line:
        text = getattr(exc, "command_line", None) or str(exc)
    else:
        text = str(exc)
    return " ".join(text.split()) or type(exc).__name__


# --- inputs --------------------------------------------------------------------------------------


def is_uri(path) -> bool:
    """``s3://...``, ``gs://...``, ``file:///...``: read and written through ``pyarrow.fs``."""
    return "://" in str(path)


def scan_folder(folder: pathlib.Path) -> List[pathlib.Path]:
    """The image files of a local folder: every known image suffix, sorted, not recursive, hidden
    files skipped."""
    suffixes = IMAGE_SUFFIXES
    return sorted(
        entry for entry in folder.iterdir()
        if entry.suffix.lower() in suffixes and not entry.name.startswith(".") and entry.is_file()
    )


def list_images(folder: str) -> List[str]:
    """:func:`scan_folder` for a local path or a URI."""
    if not is_uri(folder):
        return [str(path) for path in scan_folder(pathlib.Path(folder))]
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(folder)
    scheme = folder.split("://", 1)[0]
    suffixes = IMAGE_SUFFIXES
    names = sorted(
        info.path
        for info in filesystem.get_file_info(fs.FileSelector(root, recursive=False))
        if info.type == fs.FileType.File
        and pathlib.PurePosixPath(info.path).suffix.lower() in suffixes
        and not pathlib.PurePosixPath(info.path).name.startswith(".")
    )
    return [f"{scheme}://{name}" for name in names]


def collect_inputs(inputs: Sequence[str]) -> Tuple[List[pathlib.Path], bool]:
    """The input files of ``inputs`` (files and folders; deduplicated, in order) and whether the
    output must be a folder (several inputs, or a folder among them)."""
    files: List[pathlib.Path] = []
    many = len(inputs) > 1
    for text in inputs:
        path = pathlib.Path(text)
        if path.is_dir():
            many = True
            found = scan_folder(path)
            if not found and len(inputs) == 1:
                raise FileNotFoundError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in folder {text}")
            files.extend(found)
        elif path.exists():
            files.append(path)
        else:
            raise FileNotFoundError(f"input not found: {text}")
    if not files:
        raise FileNotFoundError(f"no image files in {', '.join(inputs)}")
    seen, unique = set(), []
    for path in files:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique, many


# --- outputs -------------------------------------------------------------------------------------


@dataclass
class Job:
    """One input file and the output it is dreamed into (paths, or URI strings on the Ray path)."""

    source: pathlib.Path
    dest: pathlib.Path
    replace: bool = False  # the output exists but is no complete image (--resume): written over


@dataclass
class Plan:
    """What a run will do: ``jobs`` to dream, the output ``folder`` to create (``None``: one output
    file), ``skipped``: outputs kept as they are (``--resume``: complete images), ``redone``:
    outputs that exist but do not decode fully, dreamed again (``--resume``)."""

    jobs: List[Job]
    folder: Optional[pathlib.Path] = None
    skipped: List[str] = field(default_factory=list)
    redone: List[str] = field(default_factory=list)


def check_file_output(output: str, fmt: Optional[str] = None, noise: bool = False) -> None:
    """``-o FILE``: a known image suffix that agrees with ``fmt``, in a folder that exists."""
    path = pathlib.Path(output)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        what = "(--noise needs -o FILE)" if noise else "(or an existing folder)"
        raise UsageError(
            f"cannot tell the output format from {output!r}; use one of {', '.join(IMAGE_SUFFIXES)} {what}"
        )
    if fmt and IMAGE_FORMATS["." + fmt] != IMAGE_FORMATS[suffix]:
        raise UsageError(f"--format {fmt} contradicts the suffix of -o {output}")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise FileNotFoundError(f"output folder does not exist: {parent}")


def plan_files(
    sources: Sequence[pathlib.Path], output: str, *, to_folder: bool, fmt: Optional[str] = None,
    resume: bool = False, overwrite: bool = False,
) -> Plan:
    """Local inputs -> their outputs, every rule checked before anything is dreamed: ``output`` is
    a folder (``<stem>.<fmt>`` per input, created later; its parent must exist) or one file; no
    output is an input (by path or by inode: hard links) or shared by two inputs; an existing
    output is an error unless ``overwrite`` (replace it) or ``resume`` (keep it, :attr:`Plan.skipped`)."""
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other: skip existing outputs or replace them")
    path = pathlib.Path(output)
    to_folder = to_folder or path.is_dir() or output.endswith(("/", os.sep))
    if to_folder:
        if path.exists() and not path.is_dir():
            raise UsageError(f"-o must be a folder when dreaming several images; {output} is a file")
        if not path.exists():
            if path.suffix.lower() in IMAGE_SUFFIXES:
                raise UsageError(f"-o must be a folder when dreaming several images; {output} looks like a file name")
            if not path.absolute().parent.is_dir():
                raise FileNotFoundError(f"parent folder of -o does not exist: {path.absolute().parent}")
        suffix = "." + (fmt or "png")
        if resume:  # -o is the input folder: x.png written for x.jpg by an earlier run is an output
            produced = {(path / (src.stem + suffix)).resolve() for src in sources
                        if (path / (src.stem + suffix)).resolve() != src.resolve()}
            sources = [src for src in sources if src.resolve() not in produced]
        jobs = [Job(src, path / (src.stem + suffix)) for src in sources]
        folder: Optional[pathlib.Path] = path
    else:
        check_file_output(output, fmt)
        jobs = [Job(sources[0], path)]
        folder = None
    return _checked(jobs, sources, folder, resume, overwrite)


def _inode(path: pathlib.Path) -> tuple:
    info = path.stat()
    return info.st_dev, info.st_ino


def _checked(jobs: List[Job], sources: Sequence[pathlib.Path], folder, resume: bool, overwrite: bool) -> Plan:
    inputs = {src.resolve(): src for src in sources}
    inodes = {_inode(src): src for src in sources}
    claimed: Dict[pathlib.Path, pathlib.Path] = {}
    existing = []
    for job in jobs:
        dest = job.dest.resolve()
        hit = inputs.get(dest)
        if hit is None and job.dest.exists():
            hit = inodes.get(_inode(job.dest))
        if hit is not None:
            raise FileExistsError(f"output {job.dest} would overwrite the input {hit}; choose another -o")
        if dest in claimed:
            raise FileExistsError(
                f"inputs {claimed[dest]} and {job.source} would both be written to {job.dest}; "
                "rename one or dream them separately"
            )
        claimed[dest] = job.source
        if job.dest.exists():
            existing.append(job.dest)
    if existing and resume:
        broken = {dest for dest in existing if not is_complete_image(dest)}
        for job in jobs:
            job.replace = job.dest in broken
        kept = [dest for dest in existing if dest not in broken]
        keep = set(kept)
        return Plan([job for job in jobs if job.dest not in keep], folder, [str(d) for d in kept],
                    [str(d) for d in existing if d in broken])
    if existing and not overwrite:
        raise _exists_error([str(d) for d in existing])
    return Plan(list(jobs), folder)


def _exists_error(existing: Sequence[str]) -> FileExistsError:
    if len(existing) == 1:
        return FileExistsError(f"output exists: {existing[0]} (use --overwrite to replace it, --resume to skip it)")
    return FileExistsError(
        f"{len(existing)} outputs exist, first {existing[0]} (use --overwrite to replace them, --resume to skip them)"
    )


def plan_folder(folder: str, output: str, *, fmt: Optional[str] = None, resume: bool = False,
                overwrite: bool = False) -> Plan:
    """Every image of ``folder`` -> ``output/<stem>.<fmt>``, local paths or URIs, with the rules of
    :func:`plan_files` (for URIs: an existing output without ``resume``/``overwrite`` is an error;
    inputs and outputs are not compared)."""
    if not (is_uri(folder) or is_uri(output)):
        sources, _ = collect_inputs([folder])
        return plan_files(sources, output, to_folder=True, fmt=fmt, resume=resume, overwrite=overwrite)
    if resume and overwrite:
        raise UsageError("--resume and --overwrite exclude each other: skip existing outputs or replace them")
    sources = list_images(folder)
    suffix = "." + (fmt or "png")
    dests = [join(output, pathlib.PurePosixPath(source).stem + suffix) for source in sources]
    exists = exists_many(dests)
    existing = [dest for dest, there in zip(dests, exists) if there]
    if existing and not (resume or overwrite):
        raise _exists_error(existing)
    broken = set()
    if resume and existing:  # kept only where complete, as for local outputs
        broken = {dest for dest, ok in zip(existing, complete_many(existing)) if not ok}
    jobs = [Job(s, d, replace=d in broken) for s, d, there in zip(sources, dests, exists)
            if not (resume and there) or d in broken]
    kept = [dest for dest in existing if dest not in broken] if resume else []
    return Plan(jobs, None if is_uri(output) else pathlib.Path(output), kept, [d for d in existing if d in broken])


def join(folder: str, name: str) -> str:
    """``folder/name`` for a local path or a URI."""
    return folder.rstrip("/") + "/" + name if is_uri(folder) else str(pathlib.Path(folder) / name)


def exists_many(paths: Sequence[str]) -> List[bool]:
    """Whether each path exists (local paths, or URIs of one file system)."""
    if not paths or not is_uri(paths[0]):
        return [os.path.exists(path) for path in paths]
    from pyarrow import fs

    filesystem, _ = fs.FileSystem.from_uri(paths[0])
    infos = filesystem.get_file_info([fs.FileSystem.from_uri(path)[1] for path in paths])
    return [info.type != fs.FileType.NotFound for info in infos]


def complete_many(paths: Sequence[str]) -> List[bool]:
    """:func:`is_complete_image` of each path; URIs (of one file system) read 8 at a time."""
    if not paths or not is_uri(paths[0]):
        return [is_complete_image(path) for path in paths]
    from concurrent.futures import ThreadPoolExecutor

    from pyarrow import fs

    filesystem, _ = fs.FileSystem.from_uri(paths[0])

    def complete(uri: str) -> bool:
        try:
            with filesystem.open_input_stream(fs.FileSystem.from_uri(uri)[1]) as stream:
                data = stream.read()
        except OSError:
            return False
        return is_complete_image(io.BytesIO(data))

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(complete, paths))


def is_complete_image(path) -> bool:
    """Whether ``path`` (a file, or a binary file object) is an image file that decodes fully (a
    file cut short by a crash, a full disk or an interrupted copy is not)."""
    from PIL import Image

    try:
        with Image.open(path) as image:  # the file's structure to its end (PNG: every chunk and IEND)
            image.verify()
        if hasattr(path, "seek"):
            path.seek(0)
        with Image.open(path) as image:  # and every pixel
            image.load()
    except Exception:  # noqa: BLE001 - anything that stops the decode: not a complete image
        return False
    return True


def check_writable(folder: pathlib.Path) -> None:
    """PermissionError (or the OSError) naming ``folder`` unless a file can be created in it:
    found before anything is dreamed, not at the first write."""
    try:
        handle, temp = open_temp(str(folder), "fastdream-check", "fastdream")
    except OSError as exc:
        raise type(exc)(f"cannot write to the output folder {folder}: {exc.strerror or exc}") from None
    os.close(handle)
    os.unlink(temp)


def remove_stale_temps(plan: Plan) -> List[str]:
    """Removes the temporary files that an earlier, killed run left for this plan's outputs (and
    only those, ``fastdream._atomic``'s naming); returns their paths."""
    folders: Dict[str, List[str]] = {}
    for dest in [job.dest for job in plan.jobs] + [pathlib.Path(d) for d in plan.skipped]:
        if not is_uri(dest):
            folders.setdefault(str(pathlib.Path(dest).absolute().parent), []).append(pathlib.Path(dest).name)
    removed = []
    for folder, names in folders.items():
        for temp in stale_temps(folder, names):
            try:
                os.unlink(temp)
            except FileNotFoundError:  # another run cleaned it up
                continue
            removed.append(temp)
    return removed


def skipped_note(count: int) -> str:
    """The one line that says what ``--resume`` kept."""
    return f"skipped {count} {'image' if count == 1 else 'images'} whose output exists (--resume)"


# --- the Dreamer ---------------------------------------------------------------------------------


def load_limited(path, max_side: Optional[int]):
    """uint8 Tensor[3, H, W] of an image file, downscaled to ``max_side`` on its long side."""
    from .image_io import load_image
    from .transforms import limit_side

    image = load_image(path)
    return image if max_side is None else limit_side(image, max_side)


def decode_limited(data: bytes, name: str, max_side: Optional[int]):
    """:func:`load_limited` of a file's bytes (``name`` for messages)."""
    from .image_io import decode_image
    from .transforms import limit_side

    image = decode_image(data, name)
    return image if max_side is None else limit_side(image, max_side)


def dreamer_options(given: Mapping[str, object], max_side: Optional[int] = None) -> dict:
    """The ``Dreamer(...)`` keyword arguments of the options a user gave (by name; the others keep
    the API's defaults): per-call options (the seed) left out, ``guide`` a path loaded (downscaled
    to ``max_side``)."""
    given = dict(given)
    for spec in _options.fields():
        if spec.metadata["per_call"]:
            given.pop(spec.name, None)  # passed to each call instead (seed)
    if given.get("channel_count") is not None and given.get("channel_mode") is None:
        raise UsageError(f"{_options.flag('channel_count')} needs {_options.flag('channel_mode')}")
    check_option_paths(given)
    if isinstance(given.get("guide"), (str, os.PathLike)):
        try:
            given["guide"] = load_limited(pathlib.Path(given["guide"]), max_side)
        except (ValueError, OSError) as exc:
            raise OSError(f"{_options.flag('guide')}: {one_line(exc)}") from None
    return given


def check_option_paths(given: Mapping[str, object]) -> None:
    """FileNotFoundError for a ``guide`` or ``weights`` path that is not a file: answered before
    torch is imported (the model and the guide are loaded much later)."""
    for name in ("guide", "weights"):
        value = given.get(name)
        if isinstance(value, (str, os.PathLike)) and not (name == "weights" and value == "default"):
            if not os.path.isfile(value):
                what = "no such file" if not os.path.exists(value) else "not a file"
                raise FileNotFoundError(f"{_options.flag(name)}: {what}: {os.fspath(value)}")


def build_dreamer(options: Mapping[str, object], *, here: bool = False):
    """``fastdream.Dreamer(**options)``, a refused option as a :class:`UsageError` in flag syntax.
    ``here=True``: without ``device``, to check the options in a driver that dreams elsewhere
    (Ray workers, a server's replicas) before they start."""
    import fastdream

    if here:
        options = {name: value for name, value in options.items() if name != "device"}
    try:
        return fastdream.Dreamer(**options)
    except (ValueError, TypeError) as exc:
        raise UsageError(one_line(exc, command_line=True)) from None


def check_video_output(output: str, source: pathlib.Path, overwrite: bool) -> None:
    """A video, GIF or numbered-image output of ``zoom``/``video``: refused when it is (or, for
    numbered images, shares files or a folder with) the input, whatever ``overwrite`` says, and
    when it exists without ``overwrite``."""
    import fnmatch
    import glob

    from .video import is_sequence_path, sequence_folder, sequence_glob

    dest = pathlib.Path(output)
    sequence = is_sequence_path(output)
    if sequence:
        pattern = sequence_glob(output)
        if is_sequence_path(str(source)):
            same = os.path.dirname(pattern) == os.path.dirname(sequence_glob(str(source)))
        else:
            same = fnmatch.fnmatchcase(str(source.resolve()), pattern)
        existing = glob.glob(pattern)
    else:
        same = dest.resolve() == source.resolve() or (
            dest.is_file() and source.exists() and _inode(dest) == _inode(source)
        )
        existing = [output] if os.path.lexists(output) else []
    if same:
        raise FileExistsError(f"output {output} would overwrite the input {source}; choose another -o")
    if existing and not overwrite:
        raise FileExistsError(f"output exists: {existing[0]} (use --overwrite to replace it)")
    # Where it goes must exist and take files (numbered frames: their folder is made if its parent
    # exists), found now rather than after the first frame was dreamed.
    folder = pathlib.Path(sequence_folder(output) if sequence else os.path.dirname(os.path.abspath(output)))
    made = sequence and not folder.is_dir()
    if not (folder.parent if made else folder).is_dir():
        raise FileNotFoundError(f"parent folder of -o does not exist: {folder.parent if made else folder}")
    check_writable(folder.parent if made else folder)
