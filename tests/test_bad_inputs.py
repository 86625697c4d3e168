"""Bad inputs to every command line, as a user makes them: each case asserts the exit status, one
error line naming the cause, and that no file that existed before changed (tests/badinput.py).

The cases are tables; each row is (id, arguments, expected status, pattern of the error line).
Arguments are formatted with `{records}` (the session's VOC sample: tfrecord/pascal-*.tfrecord
and its json), `{model}` (a trained-like checkpoint directory with config.yaml) and `{tmp}` (the
case's own empty directory).
"""

import os

import pytest

from badinput import check, run_inspect, run_main, snapshot
from conftest import tiny_hparams


def _format(args, world):
    return [a.format(**world) for a in args]


TRAIN = ["--mode=train", "--training_file_pattern={records}/pascal*.tfrecord",
         "--train_batch_size=2", "--num_examples_per_epoch=4", "--num_epochs=1",
         f"--hparams={tiny_hparams(num_classes=20)}"]

MAIN_CASES = [
    ("no-model-dir", ["--mode=train", "--training_file_pattern={records}/pascal*.tfrecord"],
     1, r"--model_dir is required"),
    ("unknown-mode", ["--mode=fit", "--model_dir={tmp}/m"], 1, r"--mode"),
    ("batch-not-a-number", TRAIN + ["--model_dir={tmp}/m", "--train_batch_size=abc"],
     1, r"train_batch_size"),
    ("batch-zero", TRAIN + ["--model_dir={tmp}/m", "--train_batch_size=0"],
     1, r"--train_batch_size must be >= 1"),
    ("eval-missing-dir", ["--mode=eval", "--validation_file_pattern={records}/pascal*.tfrecord",
                          "--model_dir={tmp}/never"], 1, r"does not exist"),
]


@pytest.mark.parametrize("case", MAIN_CASES, ids=[c[0] for c in MAIN_CASES])
def test_main_refuses(case, world):
    _, args, status, pattern = case
    before = snapshot(world["root"])
    outcome = run_main(_format(args, world))
    check(outcome, status, pattern, before, world["root"], may_add=False)


INSPECT_CASES = [
    ("unknown-runmode", ["--runmode=fly"], 1, r"runmode"),
    ("infer-without-images", ["--runmode=infer", "--ckpt_path={model}"], 1,
     r"--runmode=infer needs --input_image"),
    ("bm-runs-zero", ["--runmode=bm", "--bm_runs=0"], 1, r"--bm_runs must be >= 1"),
]


@pytest.mark.parametrize("case", INSPECT_CASES, ids=[c[0] for c in INSPECT_CASES])
def test_inspect_refuses(case, world):
    _, args, status, pattern = case
    before = snapshot(world["root"])
    outcome = run_inspect(_format(args, world))
    check(outcome, status, pattern, before, world["root"], may_add=False)


def test_harness_sees_a_traceback(monkeypatch, world):
    """A bug in our code is not swallowed by the harness: it escapes as the exception."""
    import model_inspect

    def broken(opts):
        raise KeyError("a bug")

    monkeypatch.setitem(model_inspect.RUNMODES, "dry", broken)
    with pytest.raises(KeyError):
        run_inspect(["--runmode=dry", f"--logdir={os.path.join(world['tmp'], 'dry')}"])
