"""Tests for cli.py: flags from options dataclasses and the one error policy."""

import dataclasses
from typing import List, Optional

import pytest
from absl import flags

import cli
import errors


@dataclasses.dataclass
class _Options:
    mode: str = cli.field("train", "What to run.", choices=("train", "eval"))
    steps: Optional[int] = cli.field(None, "Steps.")
    dims: List[int] = cli.field([1, 4, 2, 1], "Dims.")
    fast: bool = cli.field(False, "Go fast.")
    rate: float = cli.field(0.5, "Rate.")


def test_flags_come_from_the_dataclass_with_its_defaults():
    values = flags.FlagValues()
    cli.define_flags(_Options, values)
    values(["prog", "--mode=eval", "--steps=3", "--dims=2", "--dims=3", "--fast"])
    opts = cli.options_from_flags(_Options, values)
    assert opts == _Options(mode="eval", steps=3, dims=[2, 3], fast=True, rate=0.5)
    assert values["rate"].help == "Rate." and "What to run." in values["mode"].help
    fresh = flags.FlagValues()
    cli.define_flags(_Options, fresh)
    fresh(["prog"])
    assert cli.options_from_flags(_Options, fresh) == _Options()
    with pytest.raises(flags.IllegalFlagValueError):
        fresh(["prog", "--mode=predict"])


def test_user_errors_are_one_line_and_bugs_keep_their_traceback():
    def fail(exc):
        raise exc

    with pytest.raises(SystemExit) as e:
        cli.run_and_report("prog.py", fail, errors.DataError("records.tfrecord: truncated"))
    assert e.value.code == "prog.py: error: records.tfrecord: truncated"
    with pytest.raises(ValueError, match="boom"):
        cli.run_and_report("prog.py", fail, ValueError("boom"))
    with pytest.raises(KeyError):
        cli.run_and_report("prog.py", fail, KeyError("k"))


def test_tensorflow_start_up_noise_is_recognised():
    noise = ("E external/local_xla/xla/stream_executor/cuda/cuda_dnn.cc:9261] Unable to register "
             "cuDNN factory: Attempting to register factory for plugin cuDNN when one has "
             "already been registered")
    assert cli._STARTUP_NOISE.search(noise)
    assert not cli._STARTUP_NOISE.search("main.py: error: --model_dir is required")
