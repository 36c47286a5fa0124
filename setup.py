"""Build script of the compiled extension ``fastdream._C`` (the project metadata is in pyproject.toml).

The extension is a pybind11 module that does not link libtorch. It always has the C++ CPU kernels
(``csrc/*.cpp``) and, when nvcc is found, the CUDA kernels (``csrc/*.cu``), compiled by nvcc into
objects and linked with the static CUDA runtime, so the module imports on machines with no GPU and
no driver. Whether CUDA is built is decided by the presence of nvcc, never by the presence of a GPU.

Environment switches:
  FASTDREAM_BUILD_EXT=auto|0|1   auto (default): build the extension; if that fails, print a loud
                                 warning and install pure Python (fastdream then runs on the reference
                                 backend and says so once at first use). 1: a failure stops the build.
                                 0: pure-Python install, no compiler needed.
  FASTDREAM_BUILD_CUDA=auto|0|1  auto (default): build the CUDA kernels iff nvcc is found (CUDA_HOME,
                                 CUDA_PATH, PATH, /usr/local/cuda); if nvcc fails, warn and build the
                                 CPU kernels alone. 1: nvcc must be found and must succeed, and so must
                                 the C++ build and the link (1 implies FASTDREAM_BUILD_EXT=1: a CUDA
                                 build that falls back to pure Python is no CUDA build). 0: skip.
  FASTDREAM_CUDA_ARCHS="75;80;86;89;90+PTX"
                                 the SASS targets (and which one also gets PTX); archs this nvcc does
                                 not know (nvcc --list-gpu-arch) are dropped with a note.

pip hides the output of a build that succeeds, so a warning (extension or CUDA kernels skipped or
failed) is also written to the terminal (/dev/tty) when there is one, and what was built and why
not is recorded in ``fastdream/_build.json``, which ``fastdream.backend_info()`` reports.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pybind11.setup_helpers import Pybind11Extension
from pybind11.setup_helpers import build_ext as Pybind11BuildExt
from setuptools import setup
from setuptools.command.build_py import build_py as BuildPyBase

ROOT = Path(__file__).resolve().parent
CSRC = "csrc"
DEFAULT_CUDA_ARCHS = "75;80;86;89;90+PTX"


def _switch(name: str) -> str:
    value = os.environ.get(name, "auto").strip().lower()
    if value not in ("auto", "0", "1"):
        raise SystemExit(f"setup.py: {name} must be auto, 0 or 1, got {value!r}")
    return value


BUILD_EXT = _switch("FASTDREAM_BUILD_EXT")
BUILD_CUDA = _switch("FASTDREAM_BUILD_CUDA")


# What this build made of the extension, written to fastdream/_build.json for backend_info():
# "built", "skipped" or "failed", and why not.
RECORD = {"extension": "skipped", "extension_reason": None, "cuda": "skipped", "cuda_reason": None}
RECORD_NAME = "_build.json"


def _note(message: str) -> None:
    print(f"fastdream setup: {message}", file=sys.stderr, flush=True)


def _loud_warning(message: str) -> None:
    """To stderr and, as pip hides the output of builds that succeed, to the terminal when there is one."""
    bar = "!" * 78
    text = f"\n{bar}\nfastdream setup WARNING: {message}\n{bar}\n"
    print(text, file=sys.stderr, flush=True)
    if sys.stderr.isatty():
        return
    try:
        with open("/dev/tty", "w", encoding="utf-8") as tty:
            tty.write(text + "\n")
    except OSError:  # no terminal (CI, Windows): stderr, pip -v and the record say it
        pass


def _short(error: BaseException) -> str:
    """One line for a failed build step: the program, its exit status and the source it compiled."""
    cause, seen = error, 0
    while cause is not None and seen < 5:  # setuptools wraps the subprocess error in a CompileError
        command, status = getattr(cause, "cmd", None), getattr(cause, "returncode", None)
        if isinstance(command, (list, tuple)) and command and status is not None:
            sources = [arg for arg in command if str(arg).endswith((".cpp", ".cu"))]
            on = f" on {sources[0]}" if sources else ""
            return f"{Path(str(command[0])).name} exited with status {status}{on}"
        cause, seen = cause.__cause__ or cause.__context__, seen + 1
    text = " ".join(str(error).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _write_record(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RECORD_NAME).write_text(json.dumps(RECORD, indent=1) + "\n", encoding="utf-8")


class BuildPy(BuildPyBase):
    """Also records the build (fastdream/_build.json), for installs with no extension to build."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            _write_record(ROOT / "fastdream")
        else:
            _write_record(Path(self.build_lib) / "fastdream")


def find_cuda() -> tuple[str, str] | None:
    """(cuda_home, nvcc) of the first CUDA toolkit found, or None.

    A toolkit root must hold bin/nvcc and include/cuda_runtime.h. Tried in order: CUDA_HOME,
    CUDA_PATH, the parent of the directory of the nvcc on PATH, /usr/local/cuda, and last, for an nvcc
    on PATH that is a wrapper script outside any toolkit, the TOP its own --dryrun reports.
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    on_path = shutil.which("nvcc")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent.parent))
    candidates.append("/usr/local/cuda")
    for home in candidates:
        if not home:
            continue
        nvcc = Path(home) / "bin" / ("nvcc.exe" if os.name == "nt" else "nvcc")
        if nvcc.is_file() and (Path(home) / "include" / "cuda_runtime.h").is_file():
            return str(Path(home)), str(nvcc)
    if on_path:
        try:
            out = subprocess.run([on_path, "--dryrun", "-x", "cu", "-c", os.devnull],
                                 capture_output=True, text=True, timeout=60)
            top = re.search(r"TOP=(\S+)", out.stdout + out.stderr)
            if top and (Path(top.group(1)) / "include" / "cuda_runtime.h").is_file():
                return str(Path(top.group(1)).resolve()), on_path
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def cuda_arch_flags(nvcc: str) -> tuple[list[str], str]:
    """The -gencode flags and a short description such as '75;80;86;89;90+PTX'."""
    spec = os.environ.get("FASTDREAM_CUDA_ARCHS", DEFAULT_CUDA_ARCHS)
    try:
        listed = subprocess.run([nvcc, "--list-gpu-arch"], capture_output=True, text=True, check=True).stdout
        supported = set(re.findall(r"compute_(\d+)", listed))
    except (OSError, subprocess.CalledProcessError):
        supported = None  # old nvcc without --list-gpu-arch: trust the list
    flags, kept = [], []
    for item in filter(None, (s.strip() for s in re.split(r"[;, ]+", spec))):
        ptx = item.upper().endswith("+PTX")
        arch = item[:-4] if ptx else item
        arch = arch.replace("sm_", "").replace("compute_", "").replace(".", "")
        if supported is not None and arch not in supported:
            _note(f"nvcc does not support sm_{arch}; dropped")
            continue
        flags.append(f"-gencode=arch=compute_{arch},code=sm_{arch}")
        if ptx:
            flags.append(f"-gencode=arch=compute_{arch},code=compute_{arch}")
        kept.append(item)
    if not flags:
        raise RuntimeError(f"no CUDA architecture left from FASTDREAM_CUDA_ARCHS={spec!r}")
    return flags, ";".join(kept)


class NvccNotFound(RuntimeError):
    """No CUDA toolkit: the CUDA kernels are skipped (a warning), not failed."""


class CudaBuildError(RuntimeError):
    """FASTDREAM_BUILD_CUDA=1 and the CUDA kernels could not be built: never downgraded to a warning."""


class BuildExt(Pybind11BuildExt):
    """Compiles the ``.cu`` sources with nvcc into objects and links them into the C++ extension."""

    def run(self):
        super().run()
        if self.extensions or RECORD["extension"] == "failed":
            _write_record(Path(self.get_ext_fullpath("fastdream._C")).parent)

    def build_extensions(self):
        try:
            super().build_extensions()
            RECORD["extension"] = "built"
        except CudaBuildError:
            raise
        except Exception as error:  # noqa: BLE001 - any compiler failure, reported below
            if BUILD_EXT == "1" or BUILD_CUDA == "1":
                raise
            RECORD["extension"], RECORD["extension_reason"] = "failed", f"the C++ build failed: {_short(error)}"
            RECORD["cuda"], RECORD["cuda_reason"] = "skipped", "no extension built"
            _loud_warning(
                f"building the compiled extension fastdream._C failed ({_short(error)}). Installing pure "
                "Python: fastdream will use the slow reference kernels. Set FASTDREAM_BUILD_EXT=1 to "
                "make this failure stop the build."
            )
            self.extensions = []

    def build_extension(self, ext):
        cuda_sources = getattr(ext, "cuda_sources", [])
        if cuda_sources and BUILD_CUDA != "0":
            try:
                self._add_cuda(ext, cuda_sources)
                RECORD["cuda"], RECORD["cuda_reason"] = "built", None
            except Exception as error:  # noqa: BLE001
                if BUILD_CUDA == "1":
                    raise CudaBuildError(f"FASTDREAM_BUILD_CUDA=1: {error}") from error
                missing = isinstance(error, NvccNotFound)
                RECORD["cuda"] = "skipped" if missing else "failed"
                RECORD["cuda_reason"] = _short(error) if missing else f"nvcc failed: {_short(error)}"
                _loud_warning(f"CUDA kernels not built ({_short(error)}); building the CPU kernels alone. "
                              "fastdream will use its CPU kernels (and the slow reference path on a GPU).")
        elif BUILD_CUDA == "0":
            RECORD["cuda"], RECORD["cuda_reason"] = "skipped", "FASTDREAM_BUILD_CUDA=0 at build time"
            _note("FASTDREAM_BUILD_CUDA=0: CPU kernels only")
        # setuptools skips an extension whose sources are older than the built module: a build with
        # another configuration (CUDA on/off, other archs) in the same tree must not reuse it
        config = repr((sorted(ext.define_macros), sorted(ext.extra_objects or []), sorted(ext.libraries or [])))
        stamp = Path(self.build_temp) / f"{ext.name}.config"
        if not stamp.is_file() or stamp.read_text() != config:
            self.force = True
        super().build_extension(ext)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(config)

    def _add_cuda(self, ext, sources):
        found = find_cuda()
        if found is None:
            raise NvccNotFound("nvcc not found (looked at CUDA_HOME, CUDA_PATH, PATH and /usr/local/cuda)")
        home, nvcc = found
        gencode, archs = cuda_arch_flags(nvcc)
        _note(f"CUDA kernels with {nvcc} for {archs}")
        flags = ["-O3", "-std=c++17", "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
                 f"-I{ROOT / CSRC}", "-DFASTDREAM_WITH_CUDA", *gencode]
        # objects are reused by later builds (pip install -e) only when compiled with the same nvcc and flags
        key = hashlib.sha1(" ".join([nvcc, *flags]).encode()).hexdigest()[:10]
        out_dir = Path(self.build_temp) / f"cuda-{key}"
        out_dir.mkdir(parents=True, exist_ok=True)
        headers = [p for p in (ROOT / CSRC).iterdir() if p.suffix in (".h", ".cuh")]
        newest_header = max((p.stat().st_mtime for p in headers), default=0.0)

        def compile_one(source: str) -> str:
            src = ROOT / source
            obj = out_dir / (src.stem + ".o")
            if obj.exists() and obj.stat().st_mtime >= max(src.stat().st_mtime, newest_header):
                return str(obj)
            command = [nvcc, "-c", str(src), "-o", str(obj), *flags]
            _note(" ".join(command))
            subprocess.run(command, check=True)
            return str(obj)

        with ThreadPoolExecutor(max_workers=max(1, min(len(sources), os.cpu_count() or 1))) as pool:
            objects = list(pool.map(compile_one, sources))
        ext.extra_objects = list(ext.extra_objects or []) + objects
        lib_dirs = [Path(home) / d for d in ("lib64", "lib", "targets/x86_64-linux/lib", "lib/x64")]
        ext.library_dirs = list(ext.library_dirs or []) + [str(d) for d in lib_dirs if d.is_dir()]
        ext.libraries = list(ext.libraries or []) + ["cudart_static"]
        if sys.platform.startswith("linux"):
            ext.libraries += ["rt", "pthread", "dl"]
        ext.define_macros = list(ext.define_macros or []) + [
            ("FASTDREAM_WITH_CUDA", "1"),
            ("FASTDREAM_CUDA_ARCHS", f'"{archs}"'),
        ]


def extensions():
    if BUILD_EXT == "0":
        RECORD["extension_reason"] = "FASTDREAM_BUILD_EXT=0 at build time (pure-Python install)"
        RECORD["cuda_reason"] = "no extension built"
        _note("FASTDREAM_BUILD_EXT=0: pure-Python install (reference kernels only)")
        return []
    if sys.platform == "win32":
        compile_args, link_args = ["/O2", "/openmp"], []
    elif sys.platform == "darwin":  # Apple clang has no OpenMP by default: the kernels run on one thread
        compile_args, link_args = ["-O3", "-ffp-contract=off"], []
    else:
        compile_args, link_args = ["-O3", "-ffp-contract=off", "-fopenmp"], ["-fopenmp"]
    ext = Pybind11Extension(
        "fastdream._C",
        sources=sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC).glob("*.cpp")),
        include_dirs=[CSRC],
        cxx_std=17,
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    )
    ext.cuda_sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC).glob("*.cu"))
    ext.depends = sorted(str(p.relative_to(ROOT)) for p in (ROOT / CSRC).iterdir() if p.suffix in (".h", ".cuh", ".cu"))
    return [ext]


setup(ext_modules=extensions(), cmdclass={"build_ext": BuildExt, "build_py": BuildPy})
