"""What a training run shows and guards: progress lines, throughput summaries, the NaN guard.

* `assert_finite_losses` makes the update depend on finite losses, so a NaN/Inf step changes
  nothing and is never checkpointed; its failure is a TrainingError naming the step and the bad
  loss (errors.from_tf_error).
* `ProgressHook` logs one line every `every_n_steps` steps or `every_secs` seconds, whichever
  comes first: step / total, total loss, class and box loss, learning rate, images/s and ETA; it
  writes the TensorBoard summaries every `every_n_steps` steps and an `examples/sec` summary
  with each line, and keeps the last values for the run's closing line. The tensors it shows
  are registered by the model_fn with `add_progress_tensor`.
* `QuietCheckpointSaverHook` saves checkpoints as the Estimator's own hook does, without adding
  the graph and meta graph to the events file each time a session starts.

Both write through one graph-less summary writer per model directory, so the events file grows
by the scalars only; the training graph is added once, by the first run in a directory.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Dict, Optional, Sequence

import tensorflow as tf
from absl import logging

import errors

tf1 = tf.compat.v1

PROGRESS_COLLECTION = "vfpn_progress_tensors"
# What follows the bad losses in the NaN guard's message.
_NONFINITE_ADVICE = (
    ". The last good checkpoint is kept in model_dir. Bad boxes are the usual cause: check the "
    "records with `python dataset/validate_tfrecord.py --file_pattern=... --model_name=...`; "
    "also consider a lower learning_rate for small batches.")


def assert_finite_losses(losses: Dict[str, tf.Tensor], global_step: tf.Tensor) -> tf.Operation:
    """An op that fails the training step, before any variable changes, when a loss is NaN/Inf.

    The update depends on it, so the step that produced the bad loss applies nothing and is
    never checkpointed: the last checkpoint on disk is the last good one. Its message, a
    TrainingError for errors.from_tf_error, names the step and the bad losses
    ('non-finite loss at step 7: box_loss=nan. ...'); it is built only when a loss is bad.
    """
    names = sorted(losses)
    values = [tf.cast(losses[n], tf.float32) for n in names]
    finite = tf.stack([tf.math.is_finite(v) for v in values])

    def message() -> tf.Tensor:
        shown = tf.strings.join([tf.constant([f"{n}=" for n in names]),
                                 tf.strings.as_string(tf.stack(values), shortest=True)])
        return tf.strings.join([
            errors.graph_message("TrainingError", "non-finite loss at step "),
            tf.strings.as_string(global_step), ": ",
            tf.strings.reduce_join(tf.boolean_mask(shown, tf.logical_not(finite)),
                                   separator=", "),
            _NONFINITE_ADVICE])

    def fail() -> tf.Tensor:
        with tf.control_dependencies([tf.debugging.Assert(False, [message()])]):
            return tf.constant(False)

    ok = tf.cond(tf.reduce_all(finite), lambda: tf.constant(True), fail)
    return tf.identity(ok, name="finite_losses").op


def add_progress_tensor(name: str, tensor: tf.Tensor) -> None:
    """Register a scalar for the progress line (the first registration of a name wins, so
    under a distribution strategy the first replica's value is shown)."""
    tf1.add_to_collection(PROGRESS_COLLECTION, (name, tensor))


def format_seconds(seconds: float) -> str:
    """'42s', '3m05s' or '2h07m'."""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


@dataclasses.dataclass
class ProgressState:
    """What the run's closing line needs: first and last step seen, last values, wall time."""

    first_step: Optional[int] = None
    last_step: Optional[int] = None
    values: Dict[str, float] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0


class ProgressHook(tf1.train.SessionRunHook):
    """Logs `step S/T: loss L (class C, box B), lr R, X img/s, ETA E` lines (see module doc)."""

    def __init__(self, batch_size: int, total_steps: int, every_n_steps: int = 100,
                 every_secs: float = 30.0, summary_writer=None,
                 state: Optional[ProgressState] = None,
                 log: Callable[[str], None] = logging.info,
                 eta_extra: Optional[Callable[[int], float]] = None):
        """`eta_extra(step)`: seconds the run will spend after `step` besides training steps
        (e.g. the evaluations still to come); added to the ETA."""
        self._batch_size = batch_size
        self._eta_extra = eta_extra
        self._excluded = 0.0
        self._total = total_steps
        self._every_n = max(1, every_n_steps)
        self._every_secs = every_secs
        self._writer = summary_writer
        self.state = state if state is not None else ProgressState()
        self._log = log

    def begin(self):
        self._step_tensor = tf1.train.get_global_step()
        tensors: Dict[str, tf.Tensor] = {}
        for name, tensor in tf1.get_collection(PROGRESS_COLLECTION):
            tensors.setdefault(name, tensor)
        self._tensors = tensors
        self._summary_op = tf1.summary.merge_all() if self._writer is not None else None
        self._start = time.perf_counter()
        self._last_time: Optional[float] = None
        self._last_step: Optional[int] = None

    def before_run(self, run_context):
        fetches = {"step": self._step_tensor, "values": self._tensors}
        upcoming = (self.state.last_step or 0) + 1
        if self._summary_op is not None and upcoming % self._every_n == 0:
            fetches["summary"] = self._summary_op
        return tf1.train.SessionRunArgs(fetches)

    def after_run(self, run_context, run_values):
        step = int(run_values.results["step"])  # the step before this run's update
        values = {k: float(v) for k, v in run_values.results["values"].items()}
        if "summary" in run_values.results:
            self._writer.add_summary(run_values.results["summary"], step + 1)
        now = time.perf_counter()
        done = step + 1
        if self.state.first_step is None:
            self.state.first_step = step
        self.state.last_step = done
        self.state.values = values
        self.state.seconds = now - self._start
        if self._last_time is None:
            # The first step includes graph start-up: show it at once, as a sign of life.
            self._line(done, values, None, f"first step {now - self._start:.1f}s")
            self._write_scalar("first_step_seconds", now - self._start, done)
            self._last_time, self._last_step = now, done
            return
        steps = done - self._last_step
        elapsed = now - self._last_time - self._excluded
        if steps >= self._every_n or elapsed >= self._every_secs or done >= self._total:
            rate = steps / elapsed if elapsed > 0 else 0.0
            self._line(done, values, rate, None)
            self._write_speed(done, rate)
            self._last_time, self._last_step, self._excluded = now, done, 0.0

    def exclude(self, seconds: float) -> None:
        """Leave `seconds` spent between two steps on something else (an evaluation) out of
        the next speed and ETA."""
        self._excluded += seconds

    def _line(self, step: int, values: Dict[str, float], steps_per_sec: Optional[float],
              note: Optional[str]) -> None:
        parts = [f"step {step}/{self._total}"]
        if "loss" in values:
            detail = ", ".join(f"{label} {values[key]:.4g}" for key, label in
                               (("cls_loss", "class"), ("box_loss", "box")) if key in values)
            parts.append(f"loss {values['loss']:.4g}" + (f" ({detail})" if detail else ""))
        if "learning_rate" in values:
            parts.append(f"lr {values['learning_rate']:.3g}")
        if steps_per_sec:
            parts.append(f"{steps_per_sec * self._batch_size:.1f} img/s")
            if step < self._total:
                extra = self._eta_extra(step) if self._eta_extra else 0.0
                parts.append(f"ETA {format_seconds((self._total - step) / steps_per_sec + extra)}")
        if note:
            parts.append(note)
        self._log(", ".join(parts))

    def _write_scalar(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_summary(tf1.Summary(value=[tf1.Summary.Value(
                tag=tag, simple_value=value)]), step)

    def _write_speed(self, step: int, steps_per_sec: float) -> None:
        if self._writer is None or not math.isfinite(steps_per_sec) or steps_per_sec <= 0:
            return
        summary = tf1.Summary(value=[tf1.Summary.Value(
            tag="examples/sec", simple_value=steps_per_sec * self._batch_size)])
        self._writer.add_summary(summary, step)


class QuietCheckpointSaverHook(tf1.train.CheckpointSaverHook):
    """The Estimator's checkpoint saving (a checkpoint when the session starts, every
    `save_steps` steps and at the end) through `summary_writer`, without the graph.

    The base class adds the whole graph and meta graph (tens of MB for d0) to the events file
    every time a session starts, i.e. once per epoch in train_and_eval; this subclass replaces
    the two methods that do so. It relies on the base class's private `_save`, `_timer` and
    `_listeners`, which is safe with the pinned TensorFlow (2.15).
    """

    def __init__(self, model_dir: str, save_steps: int, summary_writer,
                 also_at: Sequence[int] = (),
                 listeners: Optional[Sequence[tf1.train.CheckpointSaverListener]] = None):
        """Also saves at every step of `also_at` (train_and_eval's epoch ends); `listeners`
        run after each save (`after_save(session, step)`), e.g. an evaluation."""
        super().__init__(model_dir, save_steps=save_steps, save_graph_def=False,
                         listeners=list(listeners or []))
        self._writer = summary_writer
        self._also_at = frozenset(int(s) for s in also_at)

    def after_run(self, run_context, run_values):
        # results: the global step before this run's update (the base class's fetch).
        if run_values.results + 1 in self._also_at:
            step = run_context.session.run(self._global_step_tensor)
            if step in self._also_at and step != self._timer.last_triggered_step():
                self._timer.update_last_triggered_step(step)
                if self._save(run_context.session, step):
                    run_context.request_stop()
                return
        super().after_run(run_context, run_values)

    def begin(self):
        self._summary_writer = self._writer
        self._global_step_tensor = tf1.train.get_global_step()
        for listener in self._listeners:
            listener.begin()

    def after_create_session(self, session, coord):
        step = session.run(self._global_step_tensor)
        self._save(session, step)
        self._timer.update_last_triggered_step(step)
