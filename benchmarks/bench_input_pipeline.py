"""Input pipeline throughput (images/s) of dataloader.InputReader on this machine's CPUs.

    python benchmarks/bench_input_pipeline.py --num_images=300 --image_size=512 --batch_size=8

Generates `num_images` JPEGs (sides in [min_size, max_size], 0..4 shapes each, pixel noise so
they cost about as much to decode as photos) with dataset/sample_dataset.py in a temporary
directory, converts them with create_coco_tfrecord, then times full batches of:

* read + decode: TFRecordDataset -> parse -> decode_image only (the floor any pipeline pays);
* train augmentation only: parse_record + the training augmentation, no anchor labeling (so the
  labeler's share is the difference to the next row);
* train: InputReader(is_training=True): flip, scale jitter in [train_scale_min, train_scale_max],
  crop, normalize, pad, anchor labeling for every level, batching;
* train, cache=True: the same with the serialized records cached in memory;
* eval: InputReader(is_training=False).

Each case runs `--warmup` batches first (tracing, autotuning, file cache), then `--batches`
timed ones. Prints images/s and markdown rows (machine, CPU count, TensorFlow version, tf.data
thread settings) for the README, next to the model's training throughput measured by
benchmarks/bench_model.py. Timings belong here and in the README, never in tests.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Optional, Sequence

import machine  # puts the repository root on sys.path

import cli

tf = cli.import_tensorflow()

import dataloader  # noqa: E402
import hparams_config  # noqa: E402
from dataset import create_coco_tfrecord, sample_dataset  # noqa: E402


def _images_per_second(dataset: tf.data.Dataset, batch_size: int, warmup: int,
                       batches: int) -> float:
    it = iter(dataset)
    for _ in range(warmup):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def _decode_only(pattern: str, batch_size: int) -> tf.data.Dataset:
    files = tf.io.gfile.glob(pattern)

    def decode(serialized):
        ex = tf.io.parse_single_example(
            serialized, {"image/encoded": tf.io.FixedLenFeature((), tf.string)})
        return tf.io.decode_image(ex["image/encoded"], channels=3, expand_animations=False)

    ds = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=len(files), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.repeat().map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    # Images differ in size: batch the sizes only, the decode is what is measured.
    return ds.map(lambda im: tf.shape(im)).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def _augment_only(pattern: str, config, batch_size: int) -> tf.data.Dataset:
    """The training pipeline's parse + augmentation without anchor labeling (its cost split)."""
    out_hw = hparams_config.image_hw(config)

    def augment(serialized, seed):
        d = dataloader.parse_record(serialized, config.num_classes,
                                    config.max_instances_per_image)
        hw = tf.cast(tf.shape(d["image"])[:2], tf.float32)
        params = dataloader.sample_train_params(seed, config.train_scale_min,
                                                config.train_scale_max, config.input_rand_hflip)
        return dataloader.preprocess_for_train(d["image"], d["boxes"] * tf.tile(hw, [2]), out_hw,
                                               config.mean_rgb, config.stddev_rgb, *params)[0]

    files = tf.io.gfile.glob(pattern)
    records = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=len(files), num_parallel_calls=tf.data.AUTOTUNE)
    seeds = tf.data.Dataset.random(seed=0).batch(2)
    ds = tf.data.Dataset.zip((records.repeat(), seeds)).map(
        augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def run(num_images: int, image_size: int, batch_size: int, min_size: int, max_size: int,
        noise: float, warmup: int, batches: int, work_dir: str, model_name: str) -> str:
    """The benchmark's results text (machine, data and thread lines, then the markdown
    table)."""
    coco = sample_dataset.write_coco(work_dir, num_images, seed=0, min_size=min_size,
                                     max_size=max_size, noise=noise)
    prefix = os.path.join(work_dir, "tfrecord", "train")
    create_coco_tfrecord.create_coco_tfrecord(create_coco_tfrecord.ConvertOptions(
        image_dir=coco.image_dir, output_file_prefix=prefix,
        object_annotations_file=coco.instances_file, num_shards=8, num_classes=3),
        progress=False)
    pattern = prefix + "-*.tfrecord"
    config = hparams_config.get_detection_config(
        model_name, {"image_size": image_size, "num_classes": 3})
    cpus = os.cpu_count()
    threads = (f"tf.data AUTOTUNE, private pool default ({cpus}), intra-op default; "
               f"TF inter/intra-op {tf.config.threading.get_inter_op_parallelism_threads()}/"
               f"{tf.config.threading.get_intra_op_parallelism_threads()} (0 = all cores)")
    above = [
        machine.line(),
        f"Data: {num_images} generated JPEGs, sides {min_size}..{max_size} px, noise std "
        f"{noise:g}; {model_name} config at image_size {image_size}, train_scale "
        f"{config.train_scale_min}..{config.train_scale_max}, hflip {config.input_rand_hflip}; "
        f"batch {batch_size}, {warmup} warm-up + {batches} timed batches.",
        f"Threads: {threads}.",
    ]
    rows = []
    cases = [
        ("read + decode only", lambda: _decode_only(pattern, batch_size)),
        ("train augmentation only (no anchor labels)",
         lambda: _augment_only(pattern, config, batch_size)),
        ("train (augment + labels)",
         lambda: dataloader.InputReader(pattern, True, config)(batch_size=batch_size)),
        ("train, cache=True",
         lambda: dataloader.InputReader(pattern, True, config, cache=True)(
             batch_size=batch_size)),
        ("eval", lambda: dataloader.InputReader(pattern, False, config)(
            batch_size=batch_size).repeat()),
    ]
    for name, make in cases:
        rate = _images_per_second(make(), batch_size, warmup, batches)
        print(f"{name}: {rate:.1f} images/s", flush=True)
        rows.append(machine.row(machine.cpu_name(), cpus, tf.__version__, name, image_size,
                                batch_size, f"{rate:.1f}"))
    columns = ("machine", "CPUs", "TF", "pipeline", "image_size", "batch", "images/s")
    return machine.table(above, columns, rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = machine.parser(__doc__, out=False, num_images=300, image_size=512, min_size=480,
                            max_size=640, noise=12.0, warmup=10, model_name="efficientdet-d0",
                            work_dir=None)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--batches", type=int, default=60, help="timed batches per case")
    args = parser.parse_args(argv)
    with machine.work_dir(args.work_dir, "bench_input_pipeline_") as work_dir:
        print(run(args.num_images, args.image_size, args.batch_size, args.min_size,
                  args.max_size, args.noise, args.warmup, args.batches, work_dir,
                  args.model_name), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
