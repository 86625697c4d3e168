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
    steps: Optional[int] = cli.field(None, "Steps.", bounds="[1, inf)")
    dims: List[int] = cli.field([1, 4, 2, 1], "Dims.", bounds="[1, 8]")
    fast: bool = cli.field(False, "Go fast.")
    rate: float = cli.field(0.5, "Rate.", bounds="[0, 1]")


def test_flags_come_from_the_dataclass_with_its_defaults():
    values = flags.FlagValues()
    cli.define_flags(_Options, values)
    values(["prog", "--mode=eval", "--steps=3", "--dims=2", "--dims=3", "--fast"])
    opts = cli.options_from_flags(_Options, values)
    assert opts == _Options(mode="eval", steps=3, dims=[2, 3], fast=True, rate=0.5)
    assert values["rate"].help == "Rate. Allowed: [0, 1]." and "What to run." in values["mode"].help
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


def test_bounds_are_checked_in_one_place_naming_flag_value_and_range():
    cli.check_bounds(_Options())  # defaults lie inside; None (unset) is always allowed
    cli.check_bounds(_Options(steps=1, dims=[8], rate=0.0))
    for options, line in [
            (_Options(steps=0), "--steps must be >= 1, got 0."),
            (_Options(rate=1.5), "--rate must be <= 1, got 1.5 (allowed: [0, 1])."),
            (_Options(dims=[1, 9]), "--dims must be <= 8, got 9 (allowed: [1, 8])."),
            (_Options(rate=float("nan")), "--rate must be a number, got nan")]:
        with pytest.raises(errors.UsageError) as e:
            cli.check_bounds(options)
        assert str(e.value).startswith(line), str(e.value)


def test_every_number_flag_of_both_clis_has_bounds():
    import typing

    import model_inspect
    import run_options

    for options_cls in (run_options.RunOptions, model_inspect.InspectOptions):
        hints = typing.get_type_hints(options_cls)
        for f in dataclasses.fields(options_cls):
            kind = cli._base_type(hints[f.name])
            if kind in (int, float) or kind == List[int]:
                assert "bounds" in f.metadata, f"{options_cls.__name__}.{f.name} has no bounds"
                cli.check_bounds(options_cls())  # and its default lies inside
