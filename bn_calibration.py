"""Recompute a checkpoint's batch-norm moving statistics from one large batch of images.

Training updates each BN's moving mean and variance as an exponential average of the
statistics of small training batches (`batch_norm_momentum`). Inference then normalises with
those averages. With small batches that estimate is biased in a way that compounds with depth:
a batch's variance misses the spread of the batch means, so at inference every layer's output
is a little wider than in training, the next layer's input is wider still, and through a deep
residual stack the excess can grow by one to two orders of magnitude (measured on the learning
benchmark's failing runs; see benchmarks/results_learning.md).

`recalibrate_checkpoint` replaces every moving mean and variance with the statistics the
inference network itself sees: one forward pass in training mode over a single batch of
`num_images` training images (eval preprocessing, no augmentation), where each BN normalises by
its input's statistics over that batch and its upstream layers already did the same. Stored as
the moving statistics, these make the inference-mode network reproduce that forward pass on
those images. Only moving statistics change; every trained weight, the global step and the
optimizer slots are written back unchanged, and moving statistics never enter a training step
(training-mode BN uses batch statistics), so continuing training is unaffected.
"""
from __future__ import annotations

import os
from typing import Dict, List, Sequence

import numpy as np
import tensorflow as tf

import dataloader
import efficientdet_arch
import errors
import hparams_config
import utils
from hparams_config import Config

tf1 = tf.compat.v1


def _count_records(files: Sequence[str], limit: int) -> int:
    """How many records `files` hold, up to `limit`."""
    with tf.Graph().as_default():
        count = tf.data.TFRecordDataset(list(files)).take(limit).reduce(
            tf.constant(0, tf.int64), lambda n, _: n + 1)
        with tf1.Session() as sess:
            return int(sess.run(count))


def calibration_images(files: Sequence[str], config: Config, num_images: int) -> tf.Tensor:
    """The first `num_images` records of `files` as one batch [n, H, W, 3], float32, with the
    eval preprocessing (resized to fit, normalised, padded; no augmentation). Images only: no
    anchor labels are built, which keeps this graph small."""
    out_hw = hparams_config.image_hw(config)

    def image(serialized):
        d = dataloader.parse_record(serialized, config.num_classes,
                                    config.max_instances_per_image)
        hw = tf.cast(tf.shape(d["image"])[:2], tf.float32)
        return dataloader.preprocess_for_eval(d["image"], d["boxes"] * tf.tile(hw, [2]), out_hw,
                                              config.mean_rgb, config.stddev_rgb)[0]

    ds = tf.data.TFRecordDataset(list(files)).take(num_images).map(image).batch(num_images)
    return tf1.data.make_one_shot_iterator(ds).get_next()


def batch_statistics(checkpoint: str, config: Config, files: Sequence[str],
                     num_images: int) -> Dict[str, np.ndarray]:
    """{moving variable name: value} from one training-mode pass over the first `num_images`
    records of `files` (fewer if the files hold fewer), with the weights of `checkpoint`."""
    n = _count_records(files, num_images)
    if n < 2:
        raise errors.DataError(f"hparam bn_recalibration_images={num_images}: batch-norm "
                               f"recalibration needs at least 2 training images, found {n} in "
                               f"{len(files)} file(s); add images or set it to 0.")
    # Momentum 0: the update ops set each moving statistic to the batch's.
    calib_config = Config(config.as_dict()).override({"batch_norm_momentum": 0.0})
    with tf.Graph().as_default():
        images = calibration_images(files, calib_config, n)
        efficientdet_arch.build_model(images, calib_config, training=True)
        moving = tf1.get_collection(utils.MOVING_VARS)
        updates = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
        weights = [v for v in tf1.global_variables() if v not in moving]
        with tf1.Session() as sess:
            sess.run(tf1.variables_initializer(moving))
            tf1.train.Saver(weights).restore(sess, checkpoint)
            sess.run(updates)
            return sess.run({v.op.name: v for v in moving})


def _write_checkpoint(tensors: Dict[str, np.ndarray], prefix: str) -> List[str]:
    """Write `tensors` as a V2 checkpoint at `prefix`; returns the files written."""
    names = sorted(tensors)
    with tf.Graph().as_default():
        save = tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                                 shape_and_slices=[""] * len(names),
                                 tensors=[tf.constant(tensors[k]) for k in names])
        with tf1.Session() as sess:
            sess.run(save)
    return tf.io.gfile.glob(prefix + ".*")


def recalibrate_checkpoint(checkpoint: str, config: Config, files: Sequence[str],
                           num_images: int) -> int:
    """Replace the moving statistics stored in `checkpoint` (a prefix, e.g.
    `.../model.ckpt-320`) by `batch_statistics`; returns how many BN layers changed.

    The checkpoint is rewritten beside itself under a temporary prefix and then moved over the
    original files, so an interruption leaves either the old or the new checkpoint whole.
    """
    stats = batch_statistics(checkpoint, config, files, num_images)
    reader = tf.train.load_checkpoint(checkpoint)
    stored = reader.get_variable_to_shape_map()
    missing = sorted(set(stats) - set(stored))
    if missing:
        raise errors.CheckpointError(f"{checkpoint} lacks {len(missing)} batch-norm moving "
                                     f"statistics of this config, e.g. {missing[0]}; was it "
                                     f"written by another model?")
    tensors = {name: stats[name] if name in stats else reader.get_tensor(name)
               for name in stored}
    directory, base = os.path.split(checkpoint)
    tmp_prefix = os.path.join(directory, f".recalibrating-{base}")
    old_files = set(tf.io.gfile.glob(checkpoint + ".data-*"))
    for path in _write_checkpoint(tensors, tmp_prefix):
        target = checkpoint + path[len(tmp_prefix):]
        tf.io.gfile.rename(path, target, overwrite=True)
        old_files.discard(target)
    for path in old_files:  # data shards of a differently sharded original
        tf.io.gfile.remove(path)
    return sum(name.endswith("/moving_mean") for name in stats)
