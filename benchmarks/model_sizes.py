"""Parameters and FLOPs of efficientdet-d0..d7 with VFPN and with BiFPN (README's model table).

    python benchmarks/model_sizes.py --out=benchmarks/results_model_sizes.md --overwrite

Counts come from the graphs the code builds (inference mode, batch 1, 90 classes, each preset's
image size): trainable parameters, and FLOPs as multiply-adds (TF profiler float ops / 2).
Nothing is timed, so the machine does not matter.
"""

from __future__ import annotations

import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import cli  # noqa: E402

tf = cli.import_tensorflow()  # first, so that TF's start-up noise is filtered

from machine import add_overwrite_flag, check_outputs, print_and_save  # noqa: E402

import efficientdet_arch  # noqa: E402
import hparams_config  # noqa: E402
import utils  # noqa: E402

MODELS = [f"efficientdet-d{i}" for i in range(8)]


def count(model_name: str, fpn_name: str):
    """(params, multiply-adds, (height, width)) of one model."""
    config = hparams_config.get_detection_config(model_name, {"fpn_name": fpn_name})
    height, width = utils.parse_image_size(config.image_size)
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, height, width, 3])
        efficientdet_arch.build_model(images, config, training=False)
    return utils.num_trainable_params(graph), utils.num_flops(graph), (height, width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--out", default=None)
    add_overwrite_flag(parser)
    args = parser.parse_args()
    check_outputs(args)
    rows = ["| model | input | VFPN params | VFPN FLOPs | BiFPN params | BiFPN FLOPs | "
            "VFPN / BiFPN FLOPs |", "|---|---|---|---|---|---|---|"]
    for model in args.models.split(","):
        vp, vf, (h, w) = count(model, "vfpn")
        bp, bf, _ = count(model, "bifpn")
        rows.append(f"| {model} | {w}x{h} | {vp / 1e6:.2f}M | {vf / 1e9:.2f}B | "
                    f"{bp / 1e6:.2f}M | {bf / 1e9:.2f}B | {vf / bf:.3f} |")
        print(rows[-1], flush=True)
    note = ("\nTrainable parameters at 90 classes; FLOPs are multiply-adds (TF profiler float "
            "ops / 2) for one image at the preset's input size. Made with "
            "`python benchmarks/model_sizes.py`.\n")
    print_and_save("\n".join(rows) + "\n" + note, args.out)


if __name__ == "__main__":
    main()
