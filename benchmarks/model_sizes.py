"""Parameters and FLOPs of efficientdet-d0..d7 with VFPN and with BiFPN (README's model table).

    python benchmarks/model_sizes.py --out=benchmarks/results_model_sizes.md --overwrite

Counts come from the graphs the code builds (inference mode, batch 1, 90 classes, each preset's
image size): trainable parameters, and FLOPs as multiply-adds (TF profiler float ops / 2).
Nothing is timed, so the machine does not matter.
"""

from __future__ import annotations

import machine  # puts the repository root on sys.path

import cli

tf = cli.import_tensorflow()  # first, so that TF's start-up noise is filtered

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
    args = machine.parser(__doc__, models=",".join(MODELS)).parse_args()
    machine.check_outputs(args)
    rows = []
    for model in args.models.split(","):
        vp, vf, (h, w) = count(model, "vfpn")
        bp, bf, _ = count(model, "bifpn")
        rows.append(machine.row(model, f"{w}x{h}", f"{vp / 1e6:.2f}M", f"{vf / 1e9:.2f}B",
                                f"{bp / 1e6:.2f}M", f"{bf / 1e9:.2f}B", f"{vf / bf:.3f}"))
        print(rows[-1], flush=True)
    columns = ("model", "input", "VFPN params", "VFPN FLOPs", "BiFPN params", "BiFPN FLOPs",
               "VFPN / BiFPN FLOPs")
    # No machine line: counts do not depend on the machine (the table leads, as in the README).
    table = machine.table([], columns, rows)
    note = ("\nTrainable parameters at 90 classes; FLOPs are multiply-adds (TF profiler float "
            "ops / 2) for one image at the preset's input size. Made with "
            "`python benchmarks/model_sizes.py`.\n")
    machine.print_and_save(table + note, args.out)


if __name__ == "__main__":
    main()
