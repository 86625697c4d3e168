"""The Estimator `model_fn`: losses, learning-rate schedule, optimizer, EMA, checkpoint init, eval.

Losses follow the EfficientDet paper (reference §3.10): focal loss on class logits (alpha 0.25,
gamma 1.5) normalised by the number of positive anchors + 1, Huber loss on box deltas (delta 0.1,
weight 50), optional IoU-family loss on decoded boxes, and L2 weight decay on kernels. Losses are
computed in float32 whatever the precision policy.

`params` is a flat dict: every hparam of the run's Config plus the runtime keys listed in
`RUNTIME_KEYS` (set by main.py).
"""

from __future__ import annotations

import math
import re
from typing import Any, Dict, List, Optional, Tuple

import tensorflow as tf
from absl import logging

import anchors
import efficientdet_arch
import errors
import hparams_config
import utils

tf1 = tf.compat.v1

RUNTIME_KEYS = ("batch_size", "model_dir", "num_examples_per_epoch", "backbone_ckpt", "ckpt",
                "val_json_file", "testdev_dir", "num_shards", "eval_batch_size")
EMA_SUFFIX = "/ExponentialMovingAverage"
# Variables never taken from a --ckpt: the step and optimizer state belong to the new run.
_NEVER_RESTORED = re.compile(r"(^|.*/)(global_step|Momentum|Adam(_\d+)?|beta[12]_power|"
                             r"loss_scale|good_steps)(/.*|$)")


class NonFiniteLossError(errors.TrainingError):
    """Training produced a NaN or Inf loss."""


# -------------------------------------------------------------------------------------------------
# Learning rate
# -------------------------------------------------------------------------------------------------
def global_batch_size(params: Dict[str, Any]) -> int:
    """The global batch: TPUEstimator passes the per-shard batch in params['batch_size']."""
    if params.get("use_tpu"):
        return params["batch_size"] * params.get("num_shards", 1)
    return params["batch_size"]


def schedule_steps(params: Dict[str, Any]) -> Tuple[float, int, int]:
    """(adjusted learning rate, warm-up steps, total steps) of a run.

    The learning rate is given for a global batch of 64 and scaled linearly to `batch_size`.
    """
    steps_per_epoch = params["num_examples_per_epoch"] / global_batch_size(params)
    adjusted = params["learning_rate"] * global_batch_size(params) / 64.0
    warmup = int(params["lr_warmup_epoch"] * steps_per_epoch)
    total = max(1, int(params["num_epochs"] * steps_per_epoch))
    return adjusted, warmup, total


def learning_rate_schedule(params: Dict[str, Any], global_step: tf.Tensor) -> tf.Tensor:
    """Linear warm-up from lr_warmup_init, then cosine / stepwise / polynomial / constant.

    Cosine and polynomial decay run over the steps after warm-up, so the rate is continuous at
    the end of warm-up and reaches 0 at the last step.
    """
    adjusted, warmup, total = schedule_steps(params)
    step = tf.cast(global_step, tf.float32)
    method = params["lr_decay_method"]
    progress = tf.clip_by_value((step - warmup) / float(max(1, total - warmup)), 0.0, 1.0)
    if method == "cosine":
        lr = 0.5 * adjusted * (1.0 + tf.cos(math.pi * progress))
    elif method == "polynomial":
        lr = adjusted * tf.pow(1.0 - progress, params["poly_lr_power"])
    elif method == "stepwise":
        steps_per_epoch = params["num_examples_per_epoch"] / global_batch_size(params)
        first = int(params["first_lr_drop_epoch"] * steps_per_epoch)
        second = int(params["second_lr_drop_epoch"] * steps_per_epoch)
        lr = adjusted * tf.where(step >= first, 0.1, 1.0) * tf.where(step >= second, 0.1, 1.0)
    elif method == "constant":
        lr = tf.constant(adjusted)
    else:
        raise ValueError(f"unknown lr_decay_method '{method}'")
    if warmup > 0:
        init = params["lr_warmup_init"]
        warm = init + (adjusted - init) * step / warmup
        lr = tf.where(step < warmup, warm, tf.cast(lr, tf.float32))
    return tf.cast(lr, tf.float32)


# -------------------------------------------------------------------------------------------------
# Losses (float32)
# -------------------------------------------------------------------------------------------------
def focal_loss(logits: tf.Tensor, targets: tf.Tensor, alpha: float, gamma: float,
               normalizer: tf.Tensor) -> tf.Tensor:
    """Sum of sigmoid focal loss / normalizer. `targets` are 0/1 of the shape of `logits`."""
    pos = tf.equal(targets, 1.0)
    ce = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    # (1 - p_t)^gamma written with log-sigmoid so it stays finite for large logits.
    modulator = tf.exp(gamma * targets * -logits - gamma * tf.nn.softplus(-logits))
    weighted = tf.where(pos, alpha * modulator * ce, (1 - alpha) * modulator * ce)
    return tf.reduce_sum(weighted) / normalizer


def huber_box_loss(box_outputs: tf.Tensor, box_targets: tf.Tensor, normalizer: tf.Tensor,
                   delta: float) -> tf.Tensor:
    """Huber loss over non-zero targets, summed, / (4 * normalizer)."""
    mask = tf.cast(tf.not_equal(box_targets, 0.0), tf.float32)
    diff = tf.abs(box_outputs - box_targets)
    loss = tf.where(diff < delta, 0.5 * tf.square(diff), delta * diff - 0.5 * delta ** 2)
    return tf.reduce_sum(loss * mask) / (normalizer * 4.0)


def iou_loss(pred_boxes: tf.Tensor, target_boxes: tf.Tensor, weights: tf.Tensor,
             iou_type: str) -> tf.Tensor:
    """Sum over boxes of (1 - IoU variant) * weights; boxes [..., 4] yxyx.

    iou_type: 'iou', 'giou' (enclosing-box penalty), 'diou' (center distance penalty), 'ciou'
    (diou plus aspect-ratio consistency).
    """
    py1, px1, py2, px2 = tf.unstack(pred_boxes, 4, axis=-1)
    ty1, tx1, ty2, tx2 = tf.unstack(target_boxes, 4, axis=-1)
    pw, ph = tf.maximum(px2 - px1, 0.0), tf.maximum(py2 - py1, 0.0)
    tw, th = tf.maximum(tx2 - tx1, 0.0), tf.maximum(ty2 - ty1, 0.0)
    iw = tf.maximum(tf.minimum(px2, tx2) - tf.maximum(px1, tx1), 0.0)
    ih = tf.maximum(tf.minimum(py2, ty2) - tf.maximum(py1, ty1), 0.0)
    inter = iw * ih
    union = pw * ph + tw * th - inter
    iou = inter / tf.maximum(union, 1e-8)
    ew = tf.maximum(px2, tx2) - tf.minimum(px1, tx1)
    eh = tf.maximum(py2, ty2) - tf.minimum(py1, ty1)
    if iou_type == "iou":
        value = iou
    elif iou_type == "giou":
        enclose = tf.maximum(ew * eh, 1e-8)
        value = iou - (enclose - union) / enclose
    elif iou_type in ("diou", "ciou"):
        center = tf.square((px1 + px2 - tx1 - tx2) / 2) + tf.square((py1 + py2 - ty1 - ty2) / 2)
        diag = tf.maximum(tf.square(ew) + tf.square(eh), 1e-8)
        value = iou - center / diag
        if iou_type == "ciou":
            v = (4 / math.pi ** 2) * tf.square(tf.atan(tw / tf.maximum(th, 1e-8)) -
                                               tf.atan(pw / tf.maximum(ph, 1e-8)))
            alpha = tf.stop_gradient(v / tf.maximum(1 - iou + v, 1e-8))
            value = value - alpha * v
    else:
        raise ValueError(f"unknown iou_loss_type '{iou_type}'")
    return tf.reduce_sum((1.0 - value) * weights)


def detection_loss(cls_outputs: Dict[int, tf.Tensor], box_outputs: Dict[int, tf.Tensor],
                   labels: Dict[str, tf.Tensor], params: Dict[str, Any]
                   ) -> Dict[str, tf.Tensor]:
    """Total, class, box and IoU losses of a batch (all float32 scalars)."""
    num_classes = params["num_classes"]
    normalizer = tf.reduce_sum(tf.cast(labels["mean_num_positives"], tf.float32)) + 1.0
    cls_losses, box_losses = [], []
    for level in sorted(cls_outputs):
        logits = tf.cast(cls_outputs[level], tf.float32)
        targets = labels[f"cls_targets_{level}"]
        shape = tf.shape(logits)
        # [B, H, W, A] class indices (-1 background) -> [B, H, W, A * C] one-hot
        onehot = tf.one_hot(targets, num_classes, dtype=tf.float32)
        onehot = tf.reshape(onehot, shape)
        cls_losses.append(focal_loss(logits, onehot, params["alpha"], params["gamma"],
                                     normalizer))
        box_losses.append(huber_box_loss(tf.cast(box_outputs[level], tf.float32),
                                         labels[f"box_targets_{level}"], normalizer,
                                         params["delta"]))
    cls_loss = tf.add_n(cls_losses)
    box_loss = tf.add_n(box_losses)
    total = cls_loss + params["box_loss_weight"] * box_loss
    out = {"cls_loss": cls_loss, "box_loss": box_loss}
    if params.get("iou_loss_type"):
        anchor_boxes = tf.constant(anchors.Anchors.from_config(
            hparams_config.Config(params)).boxes)
        flat_pred = tf.concat([tf.reshape(tf.cast(box_outputs[lv], tf.float32),
                                           [tf.shape(box_outputs[lv])[0], -1, 4])
                               for lv in sorted(box_outputs)], axis=1)
        flat_tgt = tf.concat([tf.reshape(labels[f"box_targets_{lv}"],
                                         [tf.shape(box_outputs[lv])[0], -1, 4])
                              for lv in sorted(box_outputs)], axis=1)
        weights = tf.cast(tf.reduce_any(tf.not_equal(flat_tgt, 0.0), axis=-1), tf.float32)
        value = iou_loss(anchors.decode_boxes(flat_pred, anchor_boxes),
                         anchors.decode_boxes(flat_tgt, anchor_boxes), weights,
                         params["iou_loss_type"]) / normalizer
        out["iou_loss"] = value
        total += params["iou_loss_weight"] * value
    out["det_loss"] = total
    return out


def reg_l2_loss(weight_decay: float, pattern: str = r".*(kernel|weight):0$") -> tf.Tensor:
    """weight_decay * sum(v^2) / 2 over trainable kernels (not biases, BN or fusion weights)."""
    regex = re.compile(pattern)
    terms = [tf.nn.l2_loss(v) for v in tf1.trainable_variables() if regex.match(v.name)]
    return weight_decay * tf.add_n(terms) if terms else tf.constant(0.0)


# -------------------------------------------------------------------------------------------------
# Checkpoint initialisation
# -------------------------------------------------------------------------------------------------
def init_var_map(ckpt_path: str, variables: List[tf.Variable], var_scope: str = "",
                 ckpt_scope: str = "", exclude: Optional[str] = None
                 ) -> Tuple[Dict[str, tf.Variable], List[str]]:
    """Map checkpoint names to `variables` for `tf.train.init_from_checkpoint`.

    Only variables under `var_scope` are candidates; their checkpoint name replaces that prefix
    by `ckpt_scope`. A model EMA shadow reads the checkpoint's EMA value, else its raw value.
    Variables the checkpoint lacks, has with another shape, that match `exclude`, or that are
    step/optimizer state are skipped; the second value lists them as 'name (reason)'.
    """
    reader = tf.train.load_checkpoint(ckpt_path)
    shapes = reader.get_variable_to_shape_map()
    regex = re.compile(exclude) if exclude else None
    var_map: Dict[str, tf.Variable] = {}
    skipped: List[str] = []
    for v in variables:
        name = var_name(v)
        if not name.startswith(var_scope):
            continue
        if _NEVER_RESTORED.match(name):
            continue
        if regex and regex.match(name):
            skipped.append(f"{name} (var_exclude_expr)")
            continue
        source = ckpt_scope + name[len(var_scope):]
        if source not in shapes and source.endswith(EMA_SUFFIX):
            source = source[:-len(EMA_SUFFIX)]
        if source not in shapes:
            skipped.append(f"{name} (not in checkpoint)")
        elif list(shapes[source]) != v.shape.as_list():
            skipped.append(f"{name} (checkpoint shape {list(shapes[source])}, model "
                           f"{v.shape.as_list()})")
        else:
            var_map[source] = v
    return var_map, skipped


def _resolve_ckpt(path: str, flag: str) -> str:
    if tf.io.gfile.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest:
            return latest
        raise ValueError(f"--{flag}={path}: the directory holds no checkpoint (no 'checkpoint' "
                         f"index file). Give the checkpoint directory or its prefix.")
    if tf.io.gfile.exists(path + ".index"):
        return path
    raise ValueError(f"--{flag}={path}: no checkpoint found. Give a checkpoint directory or a "
                     f"prefix such as dir/model.ckpt-1000.")


def initialize_from_checkpoints(params: Dict[str, Any]) -> None:
    """Apply --backbone_ckpt or --ckpt with `init_from_checkpoint` and log one summary."""
    backbone_ckpt, ckpt = params.get("backbone_ckpt"), params.get("ckpt")
    if backbone_ckpt and ckpt:
        raise ValueError("--backbone_ckpt and --ckpt cannot be used together: --backbone_ckpt "
                         "starts a detector from a classifier, --ckpt from a detector.")
    if not (backbone_ckpt or ckpt):
        return
    variables = tf1.global_variables()
    if backbone_ckpt:
        path = _resolve_ckpt(backbone_ckpt, "backbone_ckpt")
        scope = params["backbone_name"] + "/"
        ckpt_scope = (params.get("ckpt_var_scope") or params["backbone_name"]) + "/"
        var_map, skipped = init_var_map(path, variables, scope, ckpt_scope)
        what = "backbone"
    else:
        path = _resolve_ckpt(ckpt, "ckpt")
        exclude = None if params.get("skip_mismatch", True) else params.get("var_exclude_expr")
        var_map, skipped = init_var_map(path, variables, exclude=exclude)
        what = "detector"
    # A class head resized by num_classes is a handful of variables; most of the model
    # missing or reshaped means the checkpoint is of another model.
    if len(var_map) < 0.5 * (len(var_map) + len(skipped)):
        raise ValueError(f"{what} checkpoint '{path}' does not fit this model ({params['name']}, "
                         f"backbone {params['backbone_name']}, fpn_name {params['fpn_name']}): "
                         f"only {len(var_map)} of {len(var_map) + len(skipped)} variables "
                         f"match, e.g. {'; '.join(skipped[:3])}. Use the --model_name and "
                         f"--hparams of the run that wrote it.")
    logging.warning("Initialised %d variables from %s checkpoint %s; skipped %d%s", len(var_map),
                    what, path, len(skipped),
                    (": " + "; ".join(skipped[:20]) + (" ..." if len(skipped) > 20 else ""))
                    if skipped else "")
    tf1.train.init_from_checkpoint(path, var_map)


# -------------------------------------------------------------------------------------------------
# Hooks
# -------------------------------------------------------------------------------------------------
NONFINITE_TAG = "VFPN_NONFINITE_LOSS"


def assert_finite_losses(losses: Dict[str, tf.Tensor], global_step: tf.Tensor) -> tf.Operation:
    """An op that fails the training step, before any variable changes, when a loss is NaN/Inf.

    The update depends on it, so the step that produced the bad loss applies nothing and is
    never checkpointed: the last checkpoint on disk is the last good one. `parse_nonfinite`
    turns the op's error back into `NonFiniteLossError`.
    """
    names = sorted(losses)
    finite = tf.reduce_all([tf.math.is_finite(losses[n]) for n in names])
    data = [NONFINITE_TAG, "step", global_step]
    for n in names:
        data += [n, losses[n]]
    return tf.debugging.Assert(finite, data, summarize=4 * len(data), name="finite_losses")


def parse_nonfinite(message: str) -> Optional[NonFiniteLossError]:
    """The `NonFiniteLossError` behind an `assert_finite_losses` failure, else None."""
    if NONFINITE_TAG not in message:
        return None
    body = message.split(NONFINITE_TAG, 1)[1].split("\n")[0]
    tokens = [t.strip(" []") for t in body.split("] [")]
    tokens = [t for t in tokens if t]
    step = tokens[1] if len(tokens) > 1 else "?"
    pairs = dict(zip(tokens[2::2], tokens[3::2]))
    bad = [f"{k}={v}" for k, v in pairs.items() if v.lower() in ("nan", "inf", "-inf")]
    return NonFiniteLossError(
        f"non-finite loss at step {step}: {', '.join(bad) or body}. The last good checkpoint "
        f"is kept in model_dir. Bad boxes are the usual cause: check the records with `python "
        f"dataset/validate_tfrecord.py --file_pattern=... --model_name=...`; also consider a "
        f"lower learning_rate for small batches.")


class ExamplesPerSecondHook(tf1.train.SessionRunHook):
    """Writes an 'examples/sec' summary (global batch * steps/sec) every `every_n_steps`."""

    def __init__(self, batch_size: int, every_n_steps: int, output_dir: Optional[str]):
        self._batch_size = batch_size
        self._timer = tf1.train.SecondOrStepTimer(every_steps=every_n_steps)
        self._output_dir = output_dir

    def begin(self):
        self._step_tensor = tf1.train.get_global_step()
        self._writer = (tf1.summary.FileWriterCache.get(self._output_dir)
                        if self._output_dir else None)

    def before_run(self, run_context):
        return tf1.train.SessionRunArgs(self._step_tensor)

    def after_run(self, run_context, run_values):
        step = run_values.results
        if self._timer.should_trigger_for_step(step):
            elapsed, steps = self._timer.update_last_triggered_step(step)
            if elapsed and steps and self._writer is not None:
                value = self._batch_size * steps / elapsed
                summary = tf1.Summary(value=[tf1.Summary.Value(tag="examples/sec",
                                                               simple_value=value)])
                self._writer.add_summary(summary, step)


# -------------------------------------------------------------------------------------------------
# model_fn
# -------------------------------------------------------------------------------------------------
def _ema(params: Dict[str, Any], global_step: tf.Tensor):
    decay = params.get("moving_average_decay") or 0
    if decay <= 0:
        return None
    return tf1.train.ExponentialMovingAverage(decay=decay, num_updates=global_step)


def var_name(v: tf.Variable) -> str:
    """A variable's name without ':0'. Under a distribution strategy `v.op.name` can be a
    replica's component ('.../replica_1'), while `v.name` is the variable's own name."""
    return v.name.split(":")[0]


def ema_variables() -> List[tf.Variable]:
    """Trainable variables plus BN moving statistics: what EMA tracks and eval restores."""
    seen, out = set(), []
    for v in tf1.trainable_variables() + tf1.get_collection(utils.MOVING_VARS):
        if var_name(v) not in seen:
            seen.add(var_name(v))
            out.append(v)
    return out


def _optimizer(params: Dict[str, Any], learning_rate: tf.Tensor):
    if params["optimizer"] == "sgd":
        opt = tf1.train.MomentumOptimizer(learning_rate, momentum=params["momentum"])
    elif params["optimizer"] == "adam":
        opt = tf1.train.AdamOptimizer(learning_rate)
    else:
        raise ValueError(f"unknown optimizer '{params['optimizer']}'")
    if params.get("use_tpu"):
        opt = tf1.tpu.CrossShardOptimizer(opt)
    if params.get("precision") == "mixed_float16":
        # Dynamic loss scaling keeps small float16 gradients from flushing to zero.
        opt = tf1.mixed_precision.MixedPrecisionLossScaleOptimizer(opt, "dynamic")
    return opt


def _eval_metric_ops(cls_outputs, box_outputs, labels, params, losses):
    import coco_metric  # noqa: F401  (eval-only dependencies)
    import postprocess

    config = hparams_config.Config(params)
    dets = postprocess.generate_detections(
        cls_outputs, box_outputs, config, labels["image_scales"], score_thresh=0.0,
        max_output_size=config.nms_configs.max_output_size)
    boxes = dets["boxes"]  # [B, K, 4] yxyx original pixels
    ymin, xmin, ymax, xmax = tf.unstack(boxes, 4, axis=-1)
    k = tf.shape(boxes)[1]
    source = tf.tile(tf.cast(labels["source_ids"], tf.float32)[:, None], [1, k])
    rows = tf.stack([source, xmin, ymin, xmax - xmin, ymax - ymin, dets["scores"],
                     tf.cast(dets["classes"], tf.float32)], axis=-1)
    metrics = coco_metric.estimator_metric_fn(
        rows, labels["groundtruth_data"], labels["source_ids"],
        val_json_file=params.get("val_json_file"), testdev_dir=params.get("testdev_dir"),
        label_map=params.get("label_map_dict"))
    for name, value in losses.items():
        metrics[name] = tf1.metrics.mean(value)
    return metrics


def model_fn(features: tf.Tensor, labels: Dict[str, tf.Tensor], mode: str,
             params: Dict[str, Any], config=None):
    """The detector's Estimator (or TPUEstimator) model_fn; `features` are images [B,H,W,3]."""
    del config
    params = dict(params)
    training = mode == tf.estimator.ModeKeys.TRAIN
    cfg = hparams_config.Config(params)
    shards = params.get("num_shards", 1) if params.get("use_tpu") and training else 0
    with utils.cross_replica_batch_norm(shards), utils.batch_norm_momentum(
            params.get("batch_norm_momentum", utils.BN_MOMENTUM)):
        cls_outputs, box_outputs = efficientdet_arch.build_model(
            features, cfg, training and params.get("is_training_bn", True))
    global_step = tf1.train.get_or_create_global_step()

    if mode == tf.estimator.ModeKeys.PREDICT:
        predictions = {f"cls_outputs_{lv}": t for lv, t in cls_outputs.items()}
        predictions.update({f"box_outputs_{lv}": t for lv, t in box_outputs.items()})
        return tf.estimator.EstimatorSpec(mode, predictions=predictions)

    losses = detection_loss(cls_outputs, box_outputs, labels, params)
    l2 = reg_l2_loss(params["weight_decay"])
    total_loss = losses["det_loss"] + l2
    losses = dict(losses, reg_l2_loss=l2, loss=total_loss)

    ema = _ema(params, global_step)
    if mode == tf.estimator.ModeKeys.EVAL:
        scaffold = None
        if ema is not None:
            # Evaluate the EMA weights, as the released checkpoints are used.
            restore_map = ema.variables_to_restore(ema_variables())
            scaffold = tf1.train.Scaffold(saver=tf1.train.Saver(restore_map))
        metrics = _eval_metric_ops(cls_outputs, box_outputs, labels, params,
                                   {k: v for k, v in losses.items() if k != "loss"})
        return tf.estimator.EstimatorSpec(mode, loss=total_loss, eval_metric_ops=metrics,
                                          scaffold=scaffold)

    learning_rate = learning_rate_schedule(params, global_step)
    optimizer = _optimizer(params, learning_rate)
    var_list = efficientdet_arch.freeze_vars(tf1.trainable_variables(),
                                             params.get("var_freeze_expr"))
    grads_and_vars = optimizer.compute_gradients(total_loss, var_list)
    if params.get("clip_gradients_norm", 0) > 0:
        grads = [g for g, _ in grads_and_vars]
        clipped, grad_norm = tf.clip_by_global_norm(grads, params["clip_gradients_norm"])
        grads_and_vars = list(zip(clipped, [v for _, v in grads_and_vars]))
        tf1.summary.scalar("gradient_norm", grad_norm)
    update_ops = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
    check = assert_finite_losses(losses, global_step)
    with tf.control_dependencies(update_ops + [check]):
        train_op = optimizer.apply_gradients(grads_and_vars, global_step)
    if ema is not None:
        with tf.control_dependencies([train_op]):
            train_op = ema.apply(ema_variables())

    initialize_from_checkpoints(params)
    for name, value in losses.items():
        tf1.summary.scalar(name, value)
    tf1.summary.scalar("learning_rate", learning_rate)
    hooks = [ExamplesPerSecondHook(params["batch_size"], params.get("log_every_n_steps", 100),
                                   params.get("model_dir"))]
    return tf.estimator.EstimatorSpec(mode, loss=total_loss, train_op=train_op,
                                      training_hooks=hooks)
