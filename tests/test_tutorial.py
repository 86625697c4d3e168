"""tutorial.ipynb runs headless (nbclient) with tiny parameters and shows metrics and a picture."""

import os

import pytest

from conftest import ROOT, tiny_hparams

pytestmark = pytest.mark.docs


def test_tutorial_notebook_runs_and_shows_metrics_and_a_picture(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(os.path.join(ROOT, "tutorial.ipynb"), as_version=4)
    params = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "the notebook needs one cell tagged 'parameters'"
    slim = tiny_hparams()
    params[0].source = (f"WORK = {str(tmp_path / 'run')!r}\nNUM_TRAIN = 8\nNUM_VAL = 4\n"
                        f"IMAGE_SIZE = 128\nEPOCHS = 1\nBATCH = 4\nSLIM = {slim!r}\n")
    NotebookClient(nb, timeout=900, kernel_name="python3",
                   resources={"metadata": {"path": ROOT}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "trained to step 2 in " in text
    assert "eval at step 2: AP=" in text and "AP50" in text
    assert "FPS" in text  # the benchmark line
    assert "wrote SavedModel" in text and "processed 4 image(s)" in text
    images = [o for c in nb.cells for o in c.get("outputs", [])
              if "image/jpeg" in o.get("data", {}) or "image/png" in o.get("data", {})]
    assert len(images) == 1
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
