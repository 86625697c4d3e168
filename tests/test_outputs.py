"""outputs: where a file may be written (locations, existing files, inputs under any spelling),
what outputs made from sources are called, and atomic writes that leave no partial file."""

import os

import pytest

import errors
import outputs
from outputs import Planned


def test_output_problem_says_why_without_writing(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert outputs.output_problem(str(tmp_path / "new" / "dir"), directory=True) is None
    assert outputs.output_problem(str(afile / "sub"), directory=True) == (
        f"cannot be created: '{afile}' is a file, not a directory")
    assert outputs.output_problem(str(afile), directory=True) == "is a file, not a directory"
    assert outputs.output_problem(str(tmp_path), directory=False) == "is a directory, not a file"
    assert outputs.output_problem(str(afile), directory=False) is None
    assert outputs.output_problem("/proc/1/out", directory=True) == (
        "cannot be created: '/proc/1' is not writable")
    assert outputs.output_problem("gs://bucket/out", directory=True) is None
    assert sorted(os.listdir(tmp_path)) == ["afile"]


def test_nonempty_dir_problem(tmp_path):
    assert outputs.nonempty_dir_problem(str(tmp_path / "new")) is None
    assert outputs.nonempty_dir_problem(str(tmp_path)) is None
    (tmp_path / "x").write_text("x")
    assert "already exists and is not empty" in outputs.nonempty_dir_problem(str(tmp_path))
    assert "already exists and is not empty" in outputs.nonempty_dir_problem(
        str(tmp_path / "x"))


@pytest.mark.parametrize("sources,names", [
    (["in/a.png", "in/b.jpg"], ["a.jpg", "b.jpg"]),
    (["a/x.png", "b/x.jpg"], ["x.jpg", "x-1.jpg"]),
    # A plain name another source has is kept for it; the duplicate skips it.
    (["a/x.png", "b/x.jpg", "c/x-1.jpg"], ["x.jpg", "x-2.jpg", "x-1.jpg"]),
    (["a/x.png", "b/x.jpg", "c/x.gif"], ["x.jpg", "x-1.jpg", "x-2.jpg"]),
    # Unique ignoring case: a case-insensitive file system would merge X.jpg and x.jpg.
    (["a/X.png", "b/x.jpg"], ["X.jpg", "x-1.jpg"]),
    (["0.jpg", "1.jpg", "2.jpg"], ["0.jpg", "1.jpg", "2.jpg"]),
    (["archive.tar.gz"], ["archive.tar.jpg"]),
])
def test_outputs_are_named_after_their_sources(sources, names):
    assert outputs.named_after_sources(sources, "out") == [os.path.join("out", n)
                                                            for n in names]
    assert outputs.named_after_sources(sources, "out", ".png")[0].endswith(".png")


def _plan(directory, *names, flag="output_image_dir"):
    return [Planned(flag, str(directory), tuple(str(directory / n) for n in names),
                    directory=True)]


def test_existing_outputs_are_refused_unless_overwrite(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    plan = _plan(out, "a.jpg", "b.jpg", "c.jpg")
    outputs.check_plan(plan)  # nothing there yet
    (out / "b.jpg").write_text("earlier")
    with pytest.raises(errors.OutputError) as e:
        outputs.check_plan(plan)
    assert str(e.value) == (f"--output_image_dir '{out}': '{out}/b.jpg' already exists; pass "
                            f"--overwrite to replace it, or choose another directory (nothing "
                            f"was written)")
    (out / "c.jpg").write_text("earlier")
    with pytest.raises(errors.OutputError, match=f"'{out}/b.jpg' and 1 more already exist; "
                                                 f"pass --overwrite to replace them"):
        outputs.check_plan(plan)
    outputs.check_plan(plan, overwrite=True)
    single = [Planned("onnx_path", str(out / "b.jpg"), (str(out / "b.jpg"),))]
    with pytest.raises(errors.OutputError, match=f"^--onnx_path '{out}/b.jpg' already exists; "
                                                 f".* choose another file name"):
        outputs.check_plan(single)
    assert sorted(os.listdir(out)) == ["b.jpg", "c.jpg"]


def test_an_input_is_refused_under_every_spelling_even_with_overwrite(tmp_path, monkeypatch):
    frames = tmp_path / "frames"
    frames.mkdir()
    for name in ("0.jpg", "1.jpg"):
        (frames / name).write_text(name)
    inputs = [("input_image", str(frames / "0.jpg")), ("input_image", str(frames / "1.jpg"))]
    monkeypatch.chdir(tmp_path)
    os.symlink(frames, tmp_path / "link")
    os.link(frames / "1.jpg", tmp_path / "hard.jpg")
    for spelling in ("frames", "./frames", "link", str(frames) + "/"):
        with pytest.raises(errors.OutputError) as e:
            outputs.check_plan([Planned("output_image_dir", spelling, tuple(
                os.path.join(spelling, n) for n in ("0.jpg", "1.jpg")), True)], inputs,
                overwrite=True)
        assert "and 1 more are inputs of this run (--input_image); choose another directory" \
               in str(e.value)
        assert "not even with --overwrite" in str(e.value)
    with pytest.raises(errors.OutputError, match="^--out 'hard.jpg' is an input of this run"):
        outputs.check_plan([Planned("out", "hard.jpg", ("hard.jpg",))], inputs, overwrite=True)
    # A missing input (it fails by name when read) is no clash; neither is another file.
    outputs.check_plan([Planned("out", "new.jpg", ("new.jpg",))],
                       inputs + [("input_image", "missing.jpg")])


def test_locations_and_duplicates_are_refused_first(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(errors.OutputError) as e:
        outputs.check_plan(_plan(tmp_path / "afile", "a.jpg"))
    assert str(e.value) == (f"--output_image_dir '{tmp_path}/afile' is a file, not a directory; "
                            f"choose another directory")
    (tmp_path / "d" / "a.jpg").mkdir(parents=True)
    with pytest.raises(errors.OutputError, match=f"--output_image_dir '{tmp_path}/d': "
                                                 f"'{tmp_path}/d/a.jpg' is a directory, not a "
                                                 f"file"):
        outputs.check_plan(_plan(tmp_path / "d", "a.jpg"), overwrite=True)
    a = Planned("tflite_path", str(tmp_path / "m.xml"), (str(tmp_path / "m.xml"),))
    b = Planned("openvino_path", str(tmp_path / "./m.xml"), (str(tmp_path / "./m.xml"),))
    with pytest.raises(errors.OutputError, match="which --tflite_path writes too; give each "
                                                 "output its own name"):
        outputs.check_plan([a, b])
    assert sorted(os.listdir(tmp_path)) == ["afile", "d"]


def test_write_file_is_atomic_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "c.txt"
    assert outputs.write_file(str(path), "text ü") == str(path)
    assert path.read_text(encoding="utf-8") == "text ü"
    outputs.write_file(str(path), b"bytes")
    assert path.read_bytes() == b"bytes"
    assert os.listdir(path.parent) == ["c.txt"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("the earlier result")

    class WriterBug(Exception):
        pass

    with pytest.raises(WriterBug):
        with outputs.atomic_path(str(path)) as tmp:
            assert os.path.dirname(tmp) == str(tmp_path) and tmp.endswith(".json")
            assert os.path.basename(tmp).startswith(".result.tmp-")
            with open(tmp, "w") as f:
                f.write("half a res")
            raise WriterBug()
    assert path.read_text() == "the earlier result"
    assert os.listdir(tmp_path) == ["result.json"]


def test_unwritable_places_are_one_error_naming_the_path(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(errors.OutputError, match=f"cannot create directory '{afile}/sub'"):
        outputs.ensure_dir(str(afile / "sub"))
    with pytest.raises(errors.OutputError, match=f"cannot create directory '{afile}'"):
        outputs.write_file(str(afile / "x.pb"), b"data")
    with pytest.raises(errors.OutputError, match="cannot write '/proc/1/x.txt'"):
        outputs.write_file("/proc/1/x.txt", "text")
    assert os.listdir(tmp_path) == ["afile"]
