"""Converter throughput (images/s) for COCO and VOC on a generated sample dataset.

    python benchmarks/bench_converters.py --num_images=300 --threads=1,2,4

Generates `num_images` images of about 512 px (sides in [min_size, max_size]) with
dataset/sample_dataset.py into a temporary directory, converts them with
create_coco_tfrecord (boxes; and boxes + masks) and create_pascal_tfrecord at each worker count,
and prints a markdown table with the machine, Python, TensorFlow and Pillow versions. Each time
covers the whole conversion (json/xml parsing, decode + check of every image, record writing,
pool start-up); the first run at each setting also warms the file cache, so `--repeats` > 1
reports the best of several runs. Timings belong here and in the README, never in tests.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Sequence

import machine  # puts the repository root on sys.path

from dataset import create_coco_tfrecord, create_pascal_tfrecord, sample_dataset


def _best_time(fn: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(num_images: int, threads: Sequence[int], min_size: int, max_size: int, repeats: int,
        work_dir: str, noise: float) -> str:
    """The benchmark's results text (machine and data lines, then the markdown table)."""
    import PIL

    # Pixel noise makes the JPEGs cost about as much to decode as photos of that size.
    coco = sample_dataset.write_coco(work_dir, num_images, seed=0, min_size=min_size,
                                     max_size=max_size, noise=noise)
    voc = sample_dataset.write_voc(work_dir, num_images, seed=0, min_size=min_size,
                                   max_size=max_size, noise=noise)
    sizes = [os.path.getsize(os.path.join(coco.image_dir, i.file_name)) for i in coco.images]
    out = os.path.join(work_dir, "out")
    above = [
        machine.line(f"Pillow {PIL.__version__}"),
        f"Data: {num_images} generated JPEG images, sides {min_size}..{max_size} px, pixel "
        f"noise std {noise:g}, mean file {sum(sizes) / max(1, len(sizes)) / 1024:.0f} KiB, "
        f"0-4 objects each; best of {repeats} run(s).",
    ]
    rows = []
    for n in threads:
        cases = {
            "COCO (boxes)": lambda n=n: create_coco_tfrecord.create_coco_tfrecord(
                create_coco_tfrecord.ConvertOptions(
                    image_dir=coco.image_dir, output_file_prefix=os.path.join(out, "coco"),
                    object_annotations_file=coco.instances_file, num_shards=8,
                    num_threads=n), progress=False),
            "COCO (boxes + masks)": lambda n=n: create_coco_tfrecord.create_coco_tfrecord(
                create_coco_tfrecord.ConvertOptions(
                    image_dir=coco.image_dir, output_file_prefix=os.path.join(out, "coco_masks"),
                    object_annotations_file=coco.instances_file, num_shards=8, num_threads=n,
                    include_masks=True), progress=False),
            "VOC": lambda n=n: create_pascal_tfrecord.create_pascal_tfrecord(
                create_pascal_tfrecord.ConvertOptions(
                    data_dir=voc.data_dir, output_path=os.path.join(out, "pascal"),
                    set="trainval", year="VOC2012", label_map_json_path=voc.label_map_file,
                    num_shards=8, num_threads=n), progress=False),
        }
        for name, fn in cases.items():
            seconds = _best_time(fn, repeats)
            rows.append(machine.row(name, n, num_images, f"{seconds:.2f}",
                                    f"{num_images / seconds:.1f}"))
    return machine.table(above, ("converter", "workers (--num_threads)", "images", "seconds",
                                 "images/s"), rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = machine.parser(__doc__, out=False, num_images=300, min_size=448, max_size=576,
                            noise=12.0, work_dir=None)
    parser.add_argument("--threads", default=f"1,{os.cpu_count() or 1}",
                        help="comma-separated worker counts (--num_threads)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per setting; the best "
                        "counts (the first also warms the file cache)")
    args = parser.parse_args(argv)
    threads = sorted({int(t) for t in args.threads.split(",") if t.strip()})
    with machine.work_dir(args.work_dir, "bench_converters_") as work_dir:
        print(run(args.num_images, threads, args.min_size, args.max_size, args.repeats,
                  work_dir, args.noise), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
