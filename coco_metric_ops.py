"""The COCO metric (coco_metric.EvaluationMetric) as Estimator `eval_metric_ops`.

The metric accumulates numpy batches in a Python object; here it is wrapped in two stateful
`tf.compat.v1.numpy_function` ops: one update op that runs `update_state` on each batch, and one
op that runs `result()` once and yields every metric as a float32 scalar. Because the state
lives in Python, an eval runs as one replica (no eval_distribute strategy); on TPU the ops
belong in the host-side metric_fn.

An input error raised by `update_state` (a `errors.DataError`) reaches the caller as a
tf.errors.InvalidArgumentError with a TF stack around it; its line is marked
(`errors.graph_message`) so that `errors.from_tf_error` recovers it.
"""

from __future__ import annotations

import functools
from typing import Callable, Dict, Optional, Tuple, Union

import numpy as np
import tensorflow as tf

import coco_metric
import errors
from coco_metric import EvaluationMetric, LabelMap


def _marked(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """`fn` (run by a numpy_function op) with its data errors marked for errors.from_tf_error:
    they cross TensorFlow as text."""
    @functools.wraps(fn)
    def run(*args: np.ndarray) -> np.ndarray:
        try:
            return fn(*args)
        except errors.DataError as e:
            raise errors.DataError(errors.graph_message("DataError", str(e))) from None

    return run


def metric_ops(metric: EvaluationMetric, detections: tf.Tensor,
               groundtruth_data: Optional[tf.Tensor] = None,
               source_ids: Optional[tf.Tensor] = None
               ) -> Dict[str, Tuple[tf.Tensor, tf.Operation]]:
    """`{name: (value, update_op)}` of `metric` for Estimator `eval_metric_ops` (graph mode).

    Arguments are the tensors of `EvaluationMetric.update_state`. Every value is a float32
    scalar sliced from one op that runs `result()` and then empties the metric; the Estimator
    evaluates all value tensors in one session.run after the last batch, so COCOeval runs once
    per evaluation.
    """
    inputs = [detections]
    if groundtruth_data is not None:
        inputs.append(groundtruth_data)
    if source_ids is not None:
        inputs.append(source_ids)
    has_gt, has_ids = groundtruth_data is not None, source_ids is not None
    names = metric.metric_names

    @_marked
    def update(dets: np.ndarray, *rest: np.ndarray) -> np.ndarray:
        metric.update_state(dets, rest[0] if has_gt else None, rest[-1] if has_ids else None)
        return np.zeros([], np.int32)

    @_marked
    def result() -> np.ndarray:
        values = metric.result()
        # Emptied for the next pass: a graph that is evaluated again (evaluator.Evaluator)
        # starts each evaluation empty, as the Estimator's fresh graph does.
        metric.reset_states()
        return np.asarray([values.get(n, coco_metric.UNDEFINED) for n in names], np.float32)

    with tf.name_scope("coco_metric"):
        update_op = tf.compat.v1.numpy_function(update, inputs, tf.int32, stateful=True,
                                                name="update")
        values = tf.compat.v1.numpy_function(result, [], tf.float32, stateful=True,
                                             name="result")
        values.set_shape([len(names)])
        return {name: (values[i], update_op.op) for i, name in enumerate(names)}


def estimator_metric_fn(detections: tf.Tensor, groundtruth_data: Optional[tf.Tensor] = None,
                        source_ids: Optional[tf.Tensor] = None, *,
                        filename: Optional[str] = None, testdev_dir: Optional[str] = None,
                        label_map: Union[None, str, LabelMap] = None,
                        num_classes: Optional[int] = None,
                        val_json_file: Optional[str] = None
                        ) -> Dict[str, Tuple[tf.Tensor, tf.Operation]]:
    """COCO `eval_metric_ops` for one eval graph: a fresh `EvaluationMetric` per call, so each
    evaluation starts empty.

    Args:
      detections: [B, K, 7] float (source_id, x, y, w, h, score, class), original image pixels.
      groundtruth_data: [B, M, 7] float (ymin, xmin, ymax, xmax, is_crowd, area, class), original
        image pixels, padded with -1; used when `filename` is None.
      source_ids: [B] image ids (float, int or numeric string).
      filename: COCO instances json, or None for ground truth from the records.
      testdev_dir: write the test-dev results json there; metrics are then -1.
      label_map: {class id: name}; gives the per-class 'AP_/<name>' metrics.
      num_classes: per-class metrics for ids 1..num_classes when no label map or json names them.
      val_json_file: the same as `filename`, under the flag's name.

    Returns:
      {metric name: (float32 scalar value tensor, update op)}.
    """
    if filename and val_json_file and filename != val_json_file:
        raise ValueError(f"filename={filename} and val_json_file={val_json_file} disagree")
    metric = EvaluationMetric(filename=filename or val_json_file, testdev_dir=testdev_dir,
                              label_map=label_map, num_classes=num_classes)
    return metric_ops(metric, detections, groundtruth_data, source_ids)

