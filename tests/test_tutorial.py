"""tutorial.ipynb runs headless (nbclient) with tiny parameters and shows metrics and a picture;
run again in the same work directory, it reuses what it made and refuses nothing of its own."""

import copy
import os
import re

import pytest

from conftest import ROOT, tiny_hparams

pytestmark = pytest.mark.docs
# The error line of the project's commands (`<prog>: error: ...`, the converters' `error: ...`).
ERROR_LINE = re.compile(r"(^|: )error: ", re.M)


def _execute(nb):
    """Run a copy of `nb`; returns (all printed text, displayed images, error outputs)."""
    from nbclient import NotebookClient

    nb = copy.deepcopy(nb)
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": ROOT}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    text = "".join(o.get("text", "") for o in outputs)
    images = [o for o in outputs
              if "image/jpeg" in o.get("data", {}) or "image/png" in o.get("data", {})]
    errors = [o for o in outputs if o.get("output_type") == "error"]
    return text, images, errors


def test_tutorial_notebook_runs_twice_and_shows_metrics_and_a_picture(tmp_path):
    import nbformat

    nb = nbformat.read(os.path.join(ROOT, "tutorial.ipynb"), as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "the notebook needs one cell tagged 'parameters'"
    slim = tiny_hparams()
    params[0].source = (f"WORK = {str(tmp_path / 'run')!r}\nNUM_TRAIN = 8\nNUM_VAL = 4\n"
                        f"IMAGE_SIZE = 128\nEPOCHS = 1\nBATCH = 4\nSLIM = {slim!r}\n")
    text, images, errors = _execute(nb)
    assert "trained to step 2 in " in text
    assert "eval at step 2: AP=" in text and "AP50" in text
    assert "FPS" in text  # the benchmark line
    assert "wrote SavedModel" in text and "processed 4 image(s)" in text
    assert len(images) == 1 and not errors
    assert not ERROR_LINE.search(text)  # a `!` command that fails raises nothing in the kernel
    # The same directory again: training is done, the export is kept, records and pictures
    # (the notebook's own) are made again; no command is refused.
    text, images, errors = _execute(nb)
    assert "nothing to train" in text and "already at step 2" in text
    assert "eval at step 2: AP=" in text
    assert "wrote SavedModel" not in text and "processed 4 image(s)" in text
    assert len(images) == 1 and not errors
    assert not ERROR_LINE.search(text), text[-3000:]
