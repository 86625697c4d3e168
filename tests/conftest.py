"""Shared pytest fixtures. Puts the repo root on sys.path so the flat layout imports as is."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
FIXTURES = os.path.join(SHARED, "fixtures")


@pytest.fixture
def fixtures_dir() -> str:
    """`../shared/fixtures` beside the checkout (CI lays it there)."""
    if not os.path.isdir(FIXTURES):
        pytest.fail(f"{FIXTURES} is missing: CI and tests expect ../shared beside the checkout")
    return FIXTURES


def tiny_config(model_name: str = "efficientdet-d0", **overrides):
    """A small, fast config: 128x128 input, few filters and repeats."""
    import hparams_config

    base = {"image_size": 128, "fpn_num_filters": 16, "fpn_cell_repeats": 2,
            "box_class_repeats": 1, "num_classes": 3}
    base.update(overrides)
    return hparams_config.get_detection_config(model_name, base)
