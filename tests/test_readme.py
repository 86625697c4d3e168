"""Every command of README.md and of the docs/ pages, run as a user would after `./demo.sh`,
at a tiny scale.

The ```sh blocks of README.md, then of each docs/*.md page (by name), are read in order and run
in one work directory laid out like the checkout (its files linked in), after `./demo.sh
--quick` has run twice (so `demo/...` exists, and a re-run is shown to work); ```python blocks
run as scripts there. Sizes and step counts are made small (`SIZES`); flags are never changed.
Data the commands expect from the user is made from the sample dataset under the names the
README uses (COCO val2017 and test2017, VOCdevkit, img.png, input.mov), and the public
checkpoints have stand-ins of the same layout. Commands that download, need a TPU/GPUs or run
this test are skipped, by name (`SKIPPED`). ```yaml blocks whose first line is `# <path>` are
written to that path first.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, make_classifier_checkpoint

pytestmark = pytest.mark.docs

# Command prefixes that are not run here, and why.
SKIPPED = {
    "wget ": "downloads (nothing is downloaded in tests; the files get stand-ins)",
    "tar xf": "unpacks a download",
    "unzip": "unpacks a download",
    "python3 -m venv": "set-up: the test runs inside the installed .venv",
    "pip install": "set-up: the test runs inside the installed .venv",
    "./test.sh": "is what runs this test",
    "./demo.sh": "runs first, with --quick",
    "python main.py --tpu=": "needs a Cloud TPU",
    "python main.py --mode=train --strategy=mirrored": "needs GPUs (CPU replicas: test_main)",
}
# Sizes and step counts only (pattern, replacement); never a flag.
SIZES = [
    (r"--num_examples_per_epoch=\d+", "--num_examples_per_epoch=8"),
    (r"--num_epochs=\d+", "--num_epochs=1"),
    (r"--train_batch_size=\d+", "--train_batch_size=4"),
    (r"--eval_batch_size=\d+", "--eval_batch_size=4"),
    (r"--eval_samples=\d+", "--eval_samples=8"),
    (r"--num_shards=\d+", "--num_shards=1"),
    (r"--num_images=\d+", "--num_images=12"),
    (r"image_size=1920x1280", "image_size=256x128"),
    (r"(?<![\w.])/tmp/", "tmp/"),  # the README's /tmp/ paths stay inside the work directory
]
# Lines of the layout that `./demo.sh --quick` does not make.
LINKED = ("demo", "demo-quick", ".git", "tmp")


DOCUMENTS = ["README.md"] + sorted(
    os.path.join("docs", n) for n in os.listdir(os.path.join(ROOT, "docs")) if n.endswith(".md"))


def readme_blocks(name: str = "README.md"):
    """(language, text) of every fenced block of the document `name`, in order."""
    with open(os.path.join(ROOT, name)) as f:
        text = f.read()
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def commands(block: str):
    """The block's commands: continuation lines joined, comments and blank lines dropped."""
    out, pending = [], ""
    for line in block.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip()
        if pending.endswith("\\"):
            pending = pending[:-1] + " "
            continue
        out.append(" ".join(pending.split()))
        pending = ""
    return out


def skip_reason(command: str):
    return next((why for prefix, why in SKIPPED.items() if command.startswith(prefix)), None)


def small(command: str) -> str:
    for pattern, replacement in SIZES:
        command = re.sub(pattern, replacement, command)
    return command


def _sh(script: str, cwd, timeout=900):
    # `python` is this interpreter (its virtualenv), as for a user who activated .venv.
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
    return subprocess.run(["bash", "-ec", script], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, DEMO_DIR="demo", PATH=path))


def _user_data(work):
    """What the README expects the user to have downloaded, made from the sample dataset."""
    from dataset import sample_dataset

    coco = work / "shapes-coco"
    sample_dataset.write_coco(str(coco), 12, seed=5)
    shutil.copytree(coco / "coco" / "images", work / "val2017")
    shutil.copytree(coco / "coco" / "images", work / "test2017")
    (work / "annotations").mkdir()
    names = {"captions_sample.json": "captions_val2017.json",
             "instances_sample.json": "instances_val2017.json",
             "image_info_sample.json": "image_info_test-dev2017.json"}
    for src, dst in names.items():
        shutil.copy(coco / "coco" / "annotations" / src, work / "annotations" / dst)
    sample_dataset.write_voc(str(work), 12, seed=6, voc_class_names=True)
    (work / "efficientnet-b0").mkdir()
    make_classifier_checkpoint(work / "efficientnet-b0")
    image = sorted((coco / "coco" / "images").glob("*.jpg"))[0]
    from PIL import Image

    Image.open(image).save(work / "img.png")
    _video(work / "input.mov", sorted((coco / "coco" / "images").glob("*.jpg"))[:6])


def _video(path, images):
    import cv2
    import numpy as np
    from PIL import Image

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 5, (160, 128))
    for image in images:
        frame = np.asarray(Image.open(image).convert("RGB").resize((160, 128)))
        writer.write(np.ascontiguousarray(frame[..., ::-1]))
    writer.release()


def test_every_readme_command_runs(tmp_path):
    work = tmp_path / "checkout"
    work.mkdir()
    for name in os.listdir(ROOT):
        if name not in LINKED:
            os.symlink(os.path.join(ROOT, name), work / name)
    r = _sh("./demo.sh --quick", work)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    # Run again, as the README says a user may: it reuses what the first run finished.
    r = _sh("./demo.sh --quick", work)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "reusing what an earlier run finished" in r.stdout
    _user_data(work)
    # The public EfficientDet-D0 checkpoint's stand-in: a d0 detector checkpoint, 90 classes.
    r = _sh(f"{sys.executable} model_inspect.py --runmode=dry --model_name=efficientdet-d0 "
            "--logdir=efficientdet-d0", work)
    assert r.returncode == 0, r.stderr[-3000:]

    ran, skipped = [], []
    blocks = [(name, language, block) for name in DOCUMENTS
              for language, block in readme_blocks(name)]
    for name, language, block in blocks:
        if language == "yaml":
            first = block.splitlines()[0]
            assert first.startswith("# "), f"a yaml block needs '# <path>' first: {block}"
            target = work / first[2:].strip()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block)
            continue
        if language == "python":  # a Python example: run as a script, as a user would
            script_path = work / f"example_{len(ran)}.py"
            script_path.write_text(block)
            r = _sh(f"python {script_path.name}", work)
            assert r.returncode == 0, f"{name}:\n{block}\n{r.stdout[-2000:]}{r.stderr[-3000:]}"
            ran.append(f"python example from {name}")
            continue
        if language != "sh":
            continue
        script = []
        for command in commands(block):
            why = skip_reason(command)
            if why:
                skipped.append((command, why))
            else:
                script.append(small(command))
        if not script:
            continue
        r = _sh("\n".join(script), work)
        assert r.returncode == 0, (f"{name}:\n" + "\n".join(script) + "\n" + r.stdout[-2000:]
                                   + r.stderr[-3000:])
        ran.extend(script)
    assert len(ran) >= 25, ran
    assert {why for _, why in skipped} <= set(SKIPPED.values())
    # what the commands should have made
    assert (work / "demo" / "out" / "2012_000001.jpg").exists()  # named after the image
    assert (work / "demo" / "output.mov").exists()
    assert (work / "testdev_output" / "detections_test-dev2017_test_results.json").exists()
    assert (work / "mydata" / "detections" / "000000000100.jpg").exists()
