"""Recompute a checkpoint's batch-norm moving statistics from one large batch of images.

Training updates each BN's moving mean and variance as an exponential average of the
statistics of small training batches (`batch_norm_momentum`). Inference then normalises with
those averages. With small batches that estimate is biased in a way that compounds with depth:
a batch's variance misses the spread of the batch means, so at inference every layer's output
is a little wider than in training, the next layer's input is wider still, and through a deep
residual stack the excess can grow by one to two orders of magnitude (measured on the learning
benchmark's failing runs; see benchmarks/results_learning.md).

`Recalibrator.recalibrate` (or `recalibrate_checkpoint`, once) replaces every moving mean and
variance with the statistics the
inference network itself sees: one forward pass in training mode over a single batch of
`num_images` training images (eval preprocessing, no augmentation), where each BN normalises by
its input's statistics over that batch and its upstream layers already did the same. Stored as
the moving statistics, these make the inference-mode network reproduce that forward pass on
those images. Only moving statistics change; every trained weight, the global step and the
optimizer slots are written back unchanged, and moving statistics never enter a training step
(training-mode BN uses batch statistics), so continuing training is unaffected. A
`Recalibrator` builds its graph and session once and recalibrates any number of checkpoints of
its model (train_and_eval does so before every evaluation).
"""
from __future__ import annotations

import os
from typing import Dict, Sequence

import numpy as np
import tensorflow as tf

import checkpoint_io
import dataloader
import efficientdet_arch
import errors
import hparams_config
import sessions
import utils
from hparams_config import Config

tf1 = tf.compat.v1


def _count_records(files: Sequence[str], limit: int) -> int:
    """How many records `files` hold, up to `limit`."""
    with tf.Graph().as_default():
        count = tf.data.TFRecordDataset(list(files)).take(limit).reduce(
            tf.constant(0, tf.int64), lambda n, _: n + 1)
        with sessions.new_session() as sess:
            return int(sess.run(count))


def calibration_dataset(files: Sequence[str], config: Config, num_images: int
                        ) -> tf.data.Dataset:
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

    return tf.data.TFRecordDataset(list(files)).take(num_images).map(image).batch(num_images)


def calibration_images(files: Sequence[str], config: Config, num_images: int) -> tf.Tensor:
    """`calibration_dataset`'s one batch as a tensor (a one-shot iterator)."""
    return tf1.data.make_one_shot_iterator(
        calibration_dataset(files, config, num_images)).get_next()


class Recalibrator:
    """Recomputes the moving statistics of checkpoints of one model from the same training
    images, with one graph and session for all of them (train_and_eval recalibrates before
    every evaluation).

    Raises errors.DataError when `files` hold fewer than 2 images.
    """

    def __init__(self, config: Config, files: Sequence[str], num_images: int):
        n = _count_records(files, num_images)
        if n < 2:
            raise errors.DataError(f"hparam bn_recalibration_images={num_images}: batch-norm "
                                   f"recalibration needs at least 2 training images, found {n} "
                                   f"in {len(files)} file(s); add images or set it to 0.")
        self.num_images = n
        # Momentum 0: the update ops set each moving statistic to the batch's.
        calib_config = Config(config.as_dict()).override({"batch_norm_momentum": 0.0})
        self.graph = tf.Graph()
        with self.graph.as_default():
            self._iterator = tf1.data.make_initializable_iterator(
                calibration_dataset(files, calib_config, n))
            efficientdet_arch.build_model(self._iterator.get_next(), calib_config,
                                          training=True)
            moving = tf1.get_collection(utils.MOVING_VARS)
            self._updates = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
            self._stats = {v.op.name: v for v in moving}
            self._reset = tf1.variables_initializer(moving)
            self._saver = tf1.train.Saver([v for v in tf1.global_variables()
                                           if v not in moving])
            self.graph.finalize()
        self._session = sessions.new_session(self.graph)

    def statistics(self, checkpoint: str) -> Dict[str, np.ndarray]:
        """{moving variable name: value} from one training-mode pass over the images, with the
        weights of `checkpoint`."""
        with self.graph.as_default():  # Saver.restore needs graph mode
            self._session.run([self._reset, self._iterator.initializer])
            self._saver.restore(self._session, checkpoint)
            self._session.run(self._updates)
            return self._session.run(self._stats)

    def recalibrate(self, checkpoint: str) -> int:
        """Replace the moving statistics stored in `checkpoint` (a prefix, e.g.
        `.../model.ckpt-320`) by `statistics`; returns how many BN layers changed.

        The checkpoint is rewritten beside itself under a temporary prefix and then moved over
        the original files, so an interruption leaves either the old or the new checkpoint whole.
        """
        stats = self.statistics(checkpoint)
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
        for path in checkpoint_io.write_checkpoint(tensors, tmp_prefix):
            target = checkpoint + path[len(tmp_prefix):]
            tf.io.gfile.rename(path, target, overwrite=True)
            old_files.discard(target)
        for path in old_files:  # data shards of a differently sharded original
            tf.io.gfile.remove(path)
        return sum(name.endswith("/moving_mean") for name in stats)

    def close(self) -> None:
        self._session.close()


def batch_statistics(checkpoint: str, config: Config, files: Sequence[str],
                     num_images: int) -> Dict[str, np.ndarray]:
    """{moving variable name: value} from one training-mode pass over the first `num_images`
    records of `files` (fewer if the files hold fewer), with the weights of `checkpoint`."""
    recalibrator = Recalibrator(config, files, num_images)
    try:
        return recalibrator.statistics(checkpoint)
    finally:
        recalibrator.close()


def recalibrate_checkpoint(checkpoint: str, config: Config, files: Sequence[str],
                           num_images: int) -> int:
    """`Recalibrator.recalibrate` once: `checkpoint`'s moving statistics replaced by those of
    the first `num_images` records of `files`; returns how many BN layers changed."""
    recalibrator = Recalibrator(config, files, num_images)
    try:
        return recalibrator.recalibrate(checkpoint)
    finally:
        recalibrator.close()
