"""The Estimator `model_fn`: losses, learning-rate schedule, optimizer, EMA, checkpoint init, eval.

Losses follow the EfficientDet paper: focal loss on class logits (alpha 0.25, gamma 1.5)
normalised by the number of positive anchors + 1, Huber loss on box deltas (delta 0.1, weight
50), optional IoU-family loss on decoded boxes, and L2 weight decay on kernels. Losses are
computed in float32 whatever the precision policy.

`make_model_fn(config, run)` closes over the two objects a run is described by: the `Config`
(the model and how it trains; saved as model_dir/config.yaml) and the `RunContext` (where this
run reads and writes, batch sizes, checkpoints to start from). The Estimator's `params` carry
nothing of ours.
"""

from __future__ import annotations

import collections
import dataclasses
import fractions
import math
import re
from typing import Callable, Dict, List, NamedTuple, Optional, Tuple

import tensorflow as tf
from absl import logging

import anchors
import checkpoint_io
import efficientdet_arch
import errors
import train_hooks
import utils
import vfpn_training
from hparams_config import Config

tf1 = tf.compat.v1

# Variables never taken from a --ckpt: the step and optimizer state belong to the new run.
_NEVER_RESTORED = re.compile(r"(^|.*/)(global_step|Momentum|Adam(_\d+)?|beta[12]_power|"
                             r"loss_scale|good_steps)(/.*|$)")

@dataclasses.dataclass(frozen=True)
class RunContext:
    """What one run of the model_fn needs beside the `Config`.

    Attributes:
      model_dir: checkpoints and summaries.
      train_batch_size: global training batch (all replicas together).
      eval_batch_size: evaluation batch.
      num_examples_per_epoch: images per epoch; with the batch it sets the schedule's steps.
      backbone_ckpt: EfficientNet classifier checkpoint to start the backbone from.
      ckpt: detector checkpoint to start from (finetuning).
      val_json_file: COCO ground truth for eval (None: from the records).
      testdev_dir: write test-dev detections here instead of computing metrics.
      num_shards: TPU replicas whose batch norm statistics are shared (1: none).
      use_tpu: wrap the optimizer for TPU.
      log_every_n_steps, log_every_secs: progress line interval (whichever comes first).
      progress: filled by the progress hook, read for the run's closing line.
    """

    model_dir: str
    train_batch_size: int = 64
    eval_batch_size: int = 1
    num_examples_per_epoch: int = 120000
    backbone_ckpt: Optional[str] = None
    ckpt: Optional[str] = None
    val_json_file: Optional[str] = None
    testdev_dir: Optional[str] = None
    num_shards: int = 1
    use_tpu: bool = False
    log_every_n_steps: int = 100
    log_every_secs: float = 30.0
    progress: train_hooks.ProgressState = dataclasses.field(
        default_factory=train_hooks.ProgressState, compare=False)


# -------------------------------------------------------------------------------------------------
# Learning rate
# -------------------------------------------------------------------------------------------------
def epoch_steps(epochs: float, run: RunContext) -> int:
    """Whole training steps in `epochs` epochs: floor(epochs * num_examples_per_epoch /
    train_batch_size), the one rule for the run's length, its warm-up and its LR drops.

    Exact: `epochs` counts as the decimal it is written as (0.29 epochs of 100 images in
    batches of 1 are 29 steps, where float arithmetic gives 28.999...).
    """
    exact = fractions.Fraction(str(epochs)) * run.num_examples_per_epoch / run.train_batch_size
    return math.floor(exact)


def steps_per_epoch(run: RunContext) -> int:
    """Whole steps of one epoch (at least 1): where train_and_eval evaluates, and the default
    checkpoint interval."""
    return max(1, epoch_steps(1, run))


class Schedule(NamedTuple):
    """The learning rate of a run's global batch, its warm-up steps and its total steps."""

    learning_rate: float
    warmup_steps: int
    total_steps: int


def schedule_steps(config: Config, run: RunContext) -> Schedule:
    """(adjusted learning rate, warm-up steps, total steps) of a run: the steps training runs
    (trainer.py) and the steps the LR schedule and VFPN's branch schedule span.

    The learning rate is given for a global batch of 64 and scaled linearly to the run's global
    batch (`run.train_batch_size`, all replicas together). Total steps may be 0 (fewer images
    than one batch): the trainer refuses to train such a run.
    """
    adjusted = config.learning_rate * run.train_batch_size / 64.0
    return Schedule(adjusted, epoch_steps(config.lr_warmup_epoch, run),
                    epoch_steps(config.num_epochs, run))


def learning_rate_schedule(config: Config, run: RunContext, global_step: tf.Tensor) -> tf.Tensor:
    """Linear warm-up from lr_warmup_init, then cosine / stepwise / polynomial / constant.

    Cosine and polynomial decay run over the steps after warm-up, so the rate is continuous at
    the end of warm-up and reaches 0 at the last step.
    """
    adjusted, warmup, total = schedule_steps(config, run)
    step = tf.cast(global_step, tf.float32)
    method = config.lr_decay_method
    progress = tf.clip_by_value((step - warmup) / float(max(1, total - warmup)), 0.0, 1.0)
    if method == "cosine":
        lr = 0.5 * adjusted * (1.0 + tf.cos(math.pi * progress))
    elif method == "polynomial":
        lr = adjusted * tf.pow(1.0 - progress, config.poly_lr_power)
    elif method == "stepwise":
        first = epoch_steps(config.first_lr_drop_epoch, run)
        second = epoch_steps(config.second_lr_drop_epoch, run)
        lr = adjusted * tf.where(step >= first, 0.1, 1.0) * tf.where(step >= second, 0.1, 1.0)
    else:  # 'constant'; hparams_config.validate admits no other value
        lr = tf.constant(adjusted)
    if warmup > 0:
        init = config.lr_warmup_init
        warm = init + (adjusted - init) * step / warmup
        lr = tf.where(step < warmup, warm, tf.cast(lr, tf.float32))
    return tf.cast(lr, tf.float32)


def branch_steps(config: Config, run: RunContext) -> Tuple[int, int]:
    """VFPN's branch schedule over this run's steps (`vfpn_training.branch_steps`)."""
    return vfpn_training.branch_steps(config, schedule_steps(config, run).total_steps)


def branch_update_scale(config: Config, run: RunContext, global_step: tf.Tensor
                        ) -> Tuple[tf.Tensor, tf.Tensor]:
    """VFPN's branch update at `global_step` of this run (`vfpn_training.branch_update_scale`)."""
    return vfpn_training.branch_update_scale(config, schedule_steps(config, run).total_steps,
                                             global_step)


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
                   labels: Dict[str, tf.Tensor], config: Config) -> Dict[str, tf.Tensor]:
    """Total (`det_loss`), class, box and IoU losses of a batch (all float32 scalars).

    `cls_outputs` [B, H_l, W_l, A * C] logits and `box_outputs` [B, H_l, W_l, A * 4] codes per
    level; `labels` hold the dataloader's per-level `cls_targets_<l>` [B, H_l, W_l, A] (class
    index, -1 background), `box_targets_<l>` [B, H_l, W_l, A * 4] and `mean_num_positives`.
    """
    num_classes = config.num_classes
    normalizer = tf.reduce_sum(tf.cast(labels["mean_num_positives"], tf.float32)) + 1.0
    cls_losses, box_losses = [], []
    for level in sorted(cls_outputs):
        logits = tf.cast(cls_outputs[level], tf.float32)
        targets = labels[f"cls_targets_{level}"]
        shape = tf.shape(logits)
        # [B, H, W, A] class indices (-1 background) -> [B, H, W, A * C] one-hot
        onehot = tf.one_hot(targets, num_classes, dtype=tf.float32)
        onehot = tf.reshape(onehot, shape)
        cls_losses.append(focal_loss(logits, onehot, config.alpha, config.gamma, normalizer))
        box_losses.append(huber_box_loss(tf.cast(box_outputs[level], tf.float32),
                                         labels[f"box_targets_{level}"], normalizer,
                                         config.delta))
    cls_loss = tf.add_n(cls_losses)
    box_loss = tf.add_n(box_losses)
    total = cls_loss + config.box_loss_weight * box_loss
    out = {"cls_loss": cls_loss, "box_loss": box_loss}
    if config.iou_loss_type:
        anchor_boxes = tf.constant(anchors.Anchors.from_config(config).boxes)
        flat_pred = tf.concat([tf.reshape(tf.cast(box_outputs[lv], tf.float32),
                                           [tf.shape(box_outputs[lv])[0], -1, 4])
                               for lv in sorted(box_outputs)], axis=1)
        flat_tgt = tf.concat([tf.reshape(labels[f"box_targets_{lv}"],
                                         [tf.shape(box_outputs[lv])[0], -1, 4])
                              for lv in sorted(box_outputs)], axis=1)
        weights = tf.cast(tf.reduce_any(tf.not_equal(flat_tgt, 0.0), axis=-1), tf.float32)
        value = iou_loss(anchors.decode_boxes(flat_pred, anchor_boxes),
                         anchors.decode_boxes(flat_tgt, anchor_boxes), weights,
                         config.iou_loss_type) / normalizer
        out["iou_loss"] = value
        total += config.iou_loss_weight * value
    out["det_loss"] = total
    return out


def reg_l2_loss(weight_decay: float, pattern: str = r".*(kernel|weight):0$",
                branch_scale: float = 1.0) -> tf.Tensor:
    """weight_decay * sum(v^2) / 2 over trainable kernels (not biases, BN or fusion weights).

    `branch_scale` multiplies the term of VFPN's vertical-stage kernels (hparam
    `vfpn_branch_weight_decay_scale`; `vfpn_training.branch_weight_decay`).
    """
    regex = re.compile(pattern)
    kernels = [v for v in tf1.trainable_variables() if regex.match(v.name)]
    terms = vfpn_training.branch_weight_decay(kernels, branch_scale)
    return weight_decay * tf.add_n(terms) if terms else tf.constant(0.0)


# -------------------------------------------------------------------------------------------------
# Checkpoint initialisation
# -------------------------------------------------------------------------------------------------
def init_var_map(ckpt_path: str, variables: List[tf.Variable], var_scope: str = "",
                 ckpt_scope: str = "", exclude: Optional[str] = None
                 ) -> Tuple[collections.ChainMap, List[str]]:
    """Map checkpoint names to `variables` for `tf.train.init_from_checkpoint`.

    Only variables under `var_scope` are candidates; their checkpoint name replaces that prefix
    by `ckpt_scope`, and `checkpoint_io.match_variables` pairs them (a model EMA shadow reads
    the checkpoint's EMA value, else its raw value). Step and optimizer state are never taken;
    variables matching `exclude`, missing from the checkpoint or held with another shape are
    skipped, and the second value lists them as 'name (reason)'. The first is a ChainMap of
    {checkpoint name: variable} maps, one `init_from_checkpoint` each, since a shadow may read
    the name its weight reads (`checkpoint_io.assignment_maps`); looked up by name, the later
    variable of such a pair answers, as in one plain dict.
    """
    names = {checkpoint_io.var_name(v): v for v in variables}
    wanted = [n for n in names if n.startswith(var_scope) and not _NEVER_RESTORED.match(n)]
    regex = re.compile(exclude) if exclude else None
    reasons = {n: "var_exclude_expr" for n in wanted if regex and regex.match(n)}
    matched, missing, mismatched = checkpoint_io.match_variables(
        ckpt_path, [names[n] for n in wanted if n not in reasons],
        rename=lambda name: ckpt_scope + name[len(var_scope):])
    reasons.update({n: "not in checkpoint" for n in missing})
    reasons.update({n: f"checkpoint shape {held}, model {model}" for n, held, model in mismatched})
    skipped = [f"{n} ({reasons[n]})" for n in wanted if n in reasons]
    return collections.ChainMap(*reversed(checkpoint_io.assignment_maps(matched))), skipped


def initialize_from_checkpoints(config: Config, run: RunContext) -> None:
    """Apply --backbone_ckpt or --ckpt with `init_from_checkpoint` and log one summary.

    Variables matching `var_exclude_expr` are never taken. Variables the checkpoint lacks, or
    holds with another shape (e.g. the class head after a num_classes change), are skipped and
    listed when `skip_mismatch` is on; with it off, a shape mismatch is an error.
    """
    if not (run.backbone_ckpt or run.ckpt):
        return
    variables = tf1.global_variables()
    exclude = config.var_exclude_expr or None
    if run.backbone_ckpt:
        path = checkpoint_io.resolve_checkpoint(run.backbone_ckpt, "backbone_ckpt")
        scope = config.backbone_name + "/"
        ckpt_scope = (config.ckpt_var_scope or config.backbone_name) + "/"
        var_map, skipped = init_var_map(path, variables, scope, ckpt_scope, exclude=exclude)
        what = "backbone"
    else:
        path = checkpoint_io.resolve_checkpoint(run.ckpt, "ckpt")
        var_map, skipped = init_var_map(path, variables, exclude=exclude)
        what = "detector"
    reshaped = [s for s in skipped if "(checkpoint shape" in s]
    if reshaped and not config.skip_mismatch:
        raise errors.CheckpointError(
            f"{what} checkpoint '{path}' holds {len(reshaped)} variables with another shape "
            f"(e.g. {reshaped[0]}) and skip_mismatch is off; set skip_mismatch=True to start "
            f"them afresh, or exclude them with var_exclude_expr.")
    # A class head resized by num_classes is a handful of variables; most of the model
    # missing or reshaped means the checkpoint is of another model.
    taken = sum(len(m) for m in var_map.maps)
    if taken < 0.5 * (taken + len(skipped)):
        raise errors.CheckpointError(
            f"{what} checkpoint '{path}' does not fit this model ({config.name}, backbone "
            f"{config.backbone_name}, fpn_name {config.fpn_name}): only {taken} of "
            f"{taken + len(skipped)} variables match, e.g. {'; '.join(skipped[:3])}. "
            f"Use the --model_name and --hparams of the run that wrote it.")
    logging.info("Initialised %d variables from %s checkpoint %s; skipped %d%s", taken,
                 what, path, len(skipped),
                 (": " + "; ".join(skipped[:20]) + (" ..." if len(skipped) > 20 else ""))
                 if skipped else "")
    for assignment_map in filter(None, var_map.maps):
        tf1.train.init_from_checkpoint(path, assignment_map)


# -------------------------------------------------------------------------------------------------
# model_fn
# -------------------------------------------------------------------------------------------------
def _ema(config: Config, global_step: tf.Tensor):
    decay = config.moving_average_decay or 0
    if decay <= 0:
        return None
    return tf1.train.ExponentialMovingAverage(decay=decay, num_updates=global_step)


def ema_variables() -> List[tf.Variable]:
    """Trainable variables plus BN moving statistics: what EMA tracks and eval restores."""
    seen, out = set(), []
    for v in tf1.trainable_variables() + tf1.get_collection(utils.MOVING_VARS):
        if checkpoint_io.var_name(v) not in seen:
            seen.add(checkpoint_io.var_name(v))
            out.append(v)
    return out


def _optimizer(config: Config, run: RunContext, learning_rate: tf.Tensor):
    if config.optimizer == "adam":
        opt = tf1.train.AdamOptimizer(learning_rate)  # vfpn_training.ADAM_BETAS reads its betas
    else:  # 'sgd'; hparams_config.validate admits no other value
        opt = tf1.train.MomentumOptimizer(learning_rate, momentum=config.momentum)
    if run.use_tpu:
        opt = tf1.tpu.CrossShardOptimizer(opt)
    if config.precision == "mixed_float16":
        # Dynamic loss scaling keeps small float16 gradients from flushing to zero.
        opt = tf1.mixed_precision.MixedPrecisionLossScaleOptimizer(opt, "dynamic")
    return opt


def _eval_metric_ops(cls_outputs, box_outputs, labels, config: Config, run: RunContext,
                     losses):
    import coco_json  # eval-only dependencies (pycocotools)
    import coco_metric_ops
    import postprocess
    from dataset import label_maps

    dets = postprocess.generate_detections(
        cls_outputs, box_outputs, config, labels["image_scales"], score_thresh=0.0,
        max_output_size=config.nms_configs.max_output_size)
    rows = coco_json.detection_rows(labels["source_ids"], dets["boxes"], dets["scores"],
                                    dets["classes"])
    metrics = coco_metric_ops.estimator_metric_fn(
        rows, labels["groundtruth_data"], labels["source_ids"],
        val_json_file=run.val_json_file, testdev_dir=run.testdev_dir,
        # Per-class AP names: the model's own (as drawn), else the json's category names.
        label_map=label_maps.for_config(config) or None)
    for name, value in losses.items():
        metrics[name] = tf1.metrics.mean(value)
    return metrics


def _clip(grads_and_vars: List[Tuple[tf.Tensor, tf.Variable]], norm: float
          ) -> List[Tuple[tf.Tensor, tf.Variable]]:
    """Gradients clipped to global norm `norm` (0: as they are); logs the norm before."""
    if norm <= 0:
        return grads_and_vars
    clipped, grad_norm = tf.clip_by_global_norm([g for g, _ in grads_and_vars], norm)
    tf1.summary.scalar("gradient_norm", grad_norm)
    return list(zip(clipped, [v for _, v in grads_and_vars]))


def _train_op(config: Config, run: RunContext, losses: Dict[str, tf.Tensor],
              global_step: tf.Tensor) -> Tuple[tf.Operation, tf.Tensor]:
    """One training step and its learning rate: learning rate -> optimizer -> gradients
    (VFPN's staged branch, if configured) -> clipping -> NaN guard and BN statistics -> apply
    -> EMA."""
    learning_rate = learning_rate_schedule(config, run, global_step)
    optimizer = _optimizer(config, run, learning_rate)
    var_list = efficientdet_arch.freeze_vars(tf1.trainable_variables(), config.var_freeze_expr)
    grads_and_vars = optimizer.compute_gradients(losses["loss"], var_list)
    grads_and_vars, after_apply = vfpn_training.gate_branch_update(
        grads_and_vars, config, schedule_steps(config, run).total_steps, global_step)
    grads_and_vars = _clip(grads_and_vars, config.clip_gradients_norm)
    check = train_hooks.assert_finite_losses(losses, global_step)
    with tf.control_dependencies(tf1.get_collection(tf1.GraphKeys.UPDATE_OPS) + [check]):
        train_op = optimizer.apply_gradients(grads_and_vars, global_step)
    train_op = after_apply(train_op)
    ema = _ema(config, global_step)
    if ema is not None:
        with tf.control_dependencies([train_op]):
            train_op = ema.apply(ema_variables())
    return train_op, learning_rate


ModelFn = Callable[..., tf.estimator.EstimatorSpec]


def make_model_fn(config: Config, run: RunContext) -> ModelFn:
    """The detector's Estimator (or TPUEstimator) model_fn for `config` and `run`.

    The returned function takes `features` (normalised images [B, H, W, 3]), `labels` (see
    `detection_loss`; eval adds `image_scales`, `source_ids`, `groundtruth_data`), `mode` and
    the Estimator's `params` (unused: TPUEstimator requires the argument).

    The graph is built by plain graph code (no Python control flow on tensors), so AutoGraph's
    source conversion, which a distribution strategy applies to each replica's call, is
    skipped: it only made building the graph several times slower.
    """

    def model_fn(features: tf.Tensor, labels: Dict[str, tf.Tensor], mode: str, params=None):
        del params  # the Estimator checks this signature, which do_not_convert would hide
        return build(features, labels, mode)

    @tf.autograph.experimental.do_not_convert
    def build(features: tf.Tensor, labels: Dict[str, tf.Tensor],
              mode: str) -> tf.estimator.EstimatorSpec:
        training = mode == tf.estimator.ModeKeys.TRAIN
        shards = run.num_shards if run.use_tpu and training else 0
        with utils.cross_replica_batch_norm(shards):
            cls_outputs, box_outputs = efficientdet_arch.build_model(
                features, config, training and config.is_training_bn)
        global_step = tf1.train.get_or_create_global_step()

        if mode == tf.estimator.ModeKeys.PREDICT:
            predictions = {f"cls_outputs_{lv}": t for lv, t in cls_outputs.items()}
            predictions.update({f"box_outputs_{lv}": t for lv, t in box_outputs.items()})
            return tf.estimator.EstimatorSpec(mode, predictions=predictions)

        losses = detection_loss(cls_outputs, box_outputs, labels, config)
        l2 = reg_l2_loss(config.weight_decay,
                         branch_scale=config.vfpn_branch_weight_decay_scale)
        total_loss = losses["det_loss"] + l2
        losses = dict(losses, reg_l2_loss=l2, loss=total_loss)

        if mode == tf.estimator.ModeKeys.EVAL:
            scaffold = None
            ema = _ema(config, global_step)
            if ema is not None:
                # Evaluate the EMA weights, as the released checkpoints are used.
                restore_map = ema.variables_to_restore(ema_variables())
                scaffold = tf1.train.Scaffold(saver=tf1.train.Saver(restore_map))
            metrics = _eval_metric_ops(cls_outputs, box_outputs, labels, config, run,
                                       {k: v for k, v in losses.items() if k != "loss"})
            return tf.estimator.EstimatorSpec(mode, loss=total_loss, eval_metric_ops=metrics,
                                              scaffold=scaffold)

        train_op, learning_rate = _train_op(config, run, losses, global_step)
        initialize_from_checkpoints(config, run)
        for name, value in losses.items():
            tf1.summary.scalar(name, value)
            train_hooks.add_progress_tensor(name, value)
        tf1.summary.scalar("learning_rate", learning_rate)
        train_hooks.add_progress_tensor("learning_rate", learning_rate)
        return tf.estimator.EstimatorSpec(mode, loss=total_loss, train_op=train_op)

    return model_fn
