"""One evaluation graph and session per run, reused for every checkpoint the run evaluates.

`Estimator.evaluate` builds the eval graph, starts a session (and Grappler's rewrite of the
graph) on every call: tens of seconds per evaluation before the first image is read. An
`Evaluator` builds them once: the eval input pipeline (an initializable iterator over the first
`eval_samples` records), the model_fn's EVAL spec (detections, losses, COCO metric ops) and a
session. `evaluate(checkpoint)` restores the checkpoint through the spec's saver (the EMA
shadows where the model keeps them, as Estimator's eval does), makes one pass over the records
and returns what `Estimator.evaluate` returns: every metric and `global_step`. Summaries of the
metrics go to `<model_dir>/eval`, where the Estimator writes them, with `eval_seconds` (the pass
and the COCO evaluation, restoring excluded).
"""

from __future__ import annotations

import os
import time
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

import sessions

tf1 = tf.compat.v1


class Evaluator:
    """Evaluates checkpoints of one model on one validation set with one graph and session.

    Args:
      model_fn: the detector's model_fn (det_model_fn.make_model_fn), called once in EVAL mode.
      input_fn: returns the eval `tf.data.Dataset` of (images, labels) batches (one pass).
      steps: batches per evaluation (the dataset may end sooner).
      session_config: the `ConfigProto` of the session (default: sessions.session_config()).
      summary_dir: where metric summaries are written (None: none are).
    """

    def __init__(self, model_fn: Callable, input_fn: Callable[[], tf.data.Dataset], steps: int,
                 session_config: Optional[tf1.ConfigProto] = None,
                 summary_dir: Optional[str] = None):
        self.steps = int(steps)
        self.graph = tf.Graph()
        with self.graph.as_default():
            global_step = tf1.train.get_or_create_global_step()
            self._iterator = tf1.data.make_initializable_iterator(input_fn())
            features, labels = self._iterator.get_next()
            spec = model_fn(features, labels, tf.estimator.ModeKeys.EVAL)
            metrics = dict(spec.eval_metric_ops)
            metrics.setdefault("loss", tf1.metrics.mean(spec.loss))  # as Estimator.evaluate
            self._updates = [update for _, update in metrics.values()]
            self._values = {name: value for name, (value, _) in metrics.items()}
            self._values["global_step"] = global_step
            saver = spec.scaffold.saver if spec.scaffold is not None else None
            self._saver = saver or tf1.train.Saver()
            self._reset = tf1.local_variables_initializer()
            self.graph.finalize()
        self._session = tf1.Session(graph=self.graph,
                                    config=session_config or sessions.session_config())
        self._writer = None
        if summary_dir:
            with tf.Graph().as_default():  # the writer is graph-free; this only passes its check
                self._writer = tf1.summary.FileWriter(summary_dir)
        self.evaluations = 0

    def evaluate(self, checkpoint: str) -> Dict[str, np.generic]:
        """Metrics of `checkpoint` (a prefix): every eval metric, `loss` and `global_step`."""
        with self.graph.as_default():  # Saver.restore needs graph mode
            self._session.run([self._reset, self._iterator.initializer])
            self._saver.restore(self._session, checkpoint)
            start = time.perf_counter()
            for _ in range(self.steps):
                try:
                    self._session.run(self._updates)
                except tf.errors.OutOfRangeError:
                    break
            metrics = self._session.run(self._values)
        seconds = time.perf_counter() - start  # the forward passes and COCO eval
        self.evaluations += 1
        if self._writer is not None:
            step = int(metrics["global_step"])
            self._writer.add_summary(tf1.Summary(value=[
                tf1.Summary.Value(tag=name, simple_value=float(value))
                for name, value in sorted(metrics.items()) if name != "global_step"]
                + [tf1.Summary.Value(tag="eval_seconds", simple_value=seconds)]), step)
            self._writer.flush()
        return metrics

    def close(self) -> None:
        self._session.close()
        if self._writer is not None:
            self._writer.close()


def summary_dir(model_dir: str) -> str:
    """Where eval summaries of a model directory go (the Estimator's choice)."""
    return os.path.join(model_dir, "eval")
