"""Shared pytest fixtures and helpers. Puts the repo root on sys.path so the flat layout imports
as is.

* `tiny_config()` / `tiny_hparams()`: the one small, fast model (128x128 input, few filters and
  repeats), as a Config or as an --hparams string.
* `voc_records`: a session-wide sample dataset in the seed's VOC layout, converted to
  tfrecord/pascal-*.tfrecord + tfrecord/json_pascal.json (made in-process, once).
"""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
FIXTURES = os.path.join(SHARED, "fixtures")

# The small model every test trains or exports: 128x128 input, narrow and shallow FPN/heads.
TINY = {"image_size": 128, "fpn_num_filters": 16, "fpn_cell_repeats": 2, "box_class_repeats": 1}


@pytest.fixture
def fixtures_dir() -> str:
    """`../shared/fixtures` beside the checkout (CI lays it there)."""
    if not os.path.isdir(FIXTURES):
        pytest.fail(f"{FIXTURES} is missing: CI and tests expect ../shared beside the checkout")
    return FIXTURES


def tiny_config(model_name: str = "efficientdet-d0", **overrides):
    """A small, fast config (TINY, 3 classes) with `overrides`, validated."""
    import hparams_config

    base = dict(TINY, num_classes=3)
    base.update(overrides)
    return hparams_config.get_detection_config(model_name, base)


def tiny_hparams(**overrides) -> str:
    """TINY plus `overrides` as an --hparams string ('image_size=128,...')."""
    values = dict(TINY, **overrides)
    return ",".join(f"{k}={v}" for k, v in values.items())


@pytest.fixture(scope="session")
def voc_records(tmp_path_factory):
    """The seed's layout: VOCdevkit + tfrecord/pascal-*.tfrecord + tfrecord/json_pascal.json.

    24 images of 3 shape classes named after the first VOC classes (aeroplane, bicycle, bird),
    so the converter's built-in VOC map applies; VOC2012 'train' holds 18 of them.
    """
    from dataset import create_pascal_tfrecord, sample_dataset

    work = tmp_path_factory.mktemp("voc")
    sample_dataset.write_voc(str(work), 24, voc_class_names=True)
    (work / "tfrecord").mkdir()
    create_pascal_tfrecord.create_pascal_tfrecord(
        str(work / "VOCdevkit"), str(work / "tfrecord" / "pascal"), year="VOC2012",
        num_shards=2, num_threads=1, progress=False)
    return work
