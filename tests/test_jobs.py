"""The job layer (``fastdream.jobs``): planning inputs into outputs with the command line's rules, for
local paths and URIs, one message formatter; and the shape of the front: the command line is
imported by nobody, no module takes another's private names, no file of the command line is long."""
import ast
import pathlib

import pytest
from PIL import Image

from fastdream import jobs, options

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "fastdream"
FRONT = {"jobs", "ray_support", "cluster", "serve", "cli", "image_io", "video"}  # the modules at the edges


@pytest.fixture
def folder(tmp_path):
    source = tmp_path / "in"
    source.mkdir()
    for name in ("b.png", "a.jpg", ".hidden.png", "notes.txt"):
        (source / name).write_bytes(b"x")
    return source


def test_plan_folder_local_and_uri_agree(folder, tmp_path):
    out = tmp_path / "out"
    local = jobs.plan_folder(str(folder), str(out))
    assert [(j.source.name, j.dest.name) for j in local.jobs] == [("a.jpg", "a.png"), ("b.png", "b.png")]
    assert local.folder == out and local.skipped == []
    uri = jobs.plan_folder(folder.as_uri(), str(out), fmt="jpg")
    assert [pathlib.Path(j.dest).name for j in uri.jobs] == ["a.jpg", "b.jpg"]
    assert [str(j.source) for j in uri.jobs] == [(folder / "a.jpg").as_uri(), (folder / "b.png").as_uri()]


@pytest.mark.parametrize("uri", [False, True])
def test_existing_outputs_refused_kept_or_replaced(folder, tmp_path, uri):
    out = tmp_path / "out"
    out.mkdir()
    Image.new("RGB", (4, 3), (9, 8, 7)).save(out / "a.png")
    mine = (out / "a.png").read_bytes()
    source = folder.as_uri() if uri else str(folder)
    with pytest.raises(FileExistsError, match=r"output exists: .*a\.png .*--overwrite.*--resume"):
        jobs.plan_folder(source, str(out))
    kept = jobs.plan_folder(source, str(out), resume=True)
    assert [pathlib.Path(j.dest).name for j in kept.jobs] == ["b.png"]
    assert [pathlib.Path(s).name for s in kept.skipped] == ["a.png"]
    replaced = jobs.plan_folder(source, str(out), overwrite=True)
    assert len(replaced.jobs) == 2 and replaced.skipped == []
    with pytest.raises(jobs.UsageError, match="exclude each other"):
        jobs.plan_folder(source, str(out), resume=True, overwrite=True)
    assert (out / "a.png").read_bytes() == mine


@pytest.mark.parametrize("uri", [False, True])
def test_resume_dreams_again_an_output_that_does_not_decode(folder, tmp_path, uri):
    out = tmp_path / "out"
    out.mkdir()
    Image.effect_noise((40, 30), 50).convert("RGB").save(out / "a.png")
    data = (out / "a.png").read_bytes()
    (out / "a.png").write_bytes(data[: len(data) - 12])  # cut short: the end chunk missing
    Image.new("RGB", (4, 3)).save(out / "b.png")
    name = (lambda path: path.as_uri()) if uri else str
    plan = jobs.plan_folder(name(folder), name(out), resume=True)
    assert [(pathlib.PurePosixPath(str(j.dest)).name, j.replace) for j in plan.jobs] == [("a.png", True)]
    assert plan.redone == [name(out / "a.png")] and plan.skipped == [name(out / "b.png")]
    assert (out / "a.png").read_bytes() == data[: len(data) - 12]  # nothing written by planning


def test_plan_files_never_writes_an_input(folder):
    with pytest.raises(FileExistsError, match="would overwrite the input"):
        jobs.plan_files([folder / "b.png"], str(folder), to_folder=True, overwrite=True)
    with pytest.raises(jobs.UsageError, match="contradicts the suffix"):
        jobs.plan_files([folder / "b.png"], str(folder / "x.png"), to_folder=False, fmt="jpeg")
    plan = jobs.plan_files([folder / "a.jpg"], str(folder / "x.jpeg"), to_folder=False, fmt="jpg")
    assert plan.folder is None and plan.jobs[0].dest == folder / "x.jpeg"


def test_one_line_in_python_and_command_line_wording():
    error = options.OptionError("{0} must be > 1.0, got {value}", "octave_scale", value=0.5)
    assert jobs.one_line(error) == "octave_scale must be > 1.0, got 0.5"
    assert jobs.one_line(error, command_line=True) == "--octave-scale must be > 1.0, got 0.5"
    assert jobs.one_line(OSError("two\n  lines")) == "two lines"
    assert jobs.one_line(ValueError()) == "ValueError"


def test_dreamer_options_drops_per_call_and_checks_pairs():
    assert jobs.dreamer_options({"octaves": 2, "seed": 3}) == {"octaves": 2}
    with pytest.raises(jobs.UsageError, match="--channel-count needs --channel-mode"):
        jobs.dreamer_options({"channel_count": 2})


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        yield path, name, ast.parse(path.read_text())


def test_nobody_imports_the_command_line_or_a_private_name():
    for path, name, tree in _modules():
        is_package = path.name == "__init__.py"
        parts = name.split(".")
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom):
                continue
            base = parts if is_package else parts[:-1]
            base = base[: len(base) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            taken = [alias.name for alias in node.names]
            if not name.startswith(("fastdream.cli", "fastdream.__main__")):  # the entry points
                assert not (target == "fastdream.cli" or target.startswith("fastdream.cli.")
                            or (target == "fastdream" and "cli" in taken)), f"{path} imports the command line"
            if target.startswith("fastdream") and target != name and name.split(".")[1:2] in ([f] for f in FRONT):
                private = [t for t in taken if t.startswith("_") and not t.startswith("__")]
                # a package's own private modules (fastdream._atomic, the compiled _C) are modules
                folder = PACKAGE.parent / target.replace(".", "/")
                assert all(any(folder.glob(f"{t}.*")) for t in private), f"{path} takes {private} from {target}"


def test_no_command_line_file_over_500_lines():
    sizes = {path.name: len(path.read_text().splitlines()) for path in (PACKAGE / "cli").glob("*.py")}
    assert sizes and max(sizes.values()) <= 500, sizes
