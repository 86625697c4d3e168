#!/usr/bin/env bash
# The whole job on the bundled sample dataset, from a fresh clone:
#   generate shapes -> TFRecords (COCO converter for train, VOC converter for val)
#   -> train VFPN-d0 from scratch -> COCO eval -> export a SavedModel -> draw detections
#
#   ./demo.sh            the real thing (about 11 minutes on 2 CPU cores, after the install)
#   ./demo.sh --quick    the same steps at a tiny size (a minute or two; used by the tests)
#
# Outputs go to $DEMO_DIR (default: demo/ in this checkout, or demo-quick/ with --quick). A
# re-run reuses what an earlier run finished (delete the directory to start over); it never
# deletes anything, and replaces only its own files in $DEMO_DIR (see steps 2 and 6).
set -euo pipefail
cd "$(dirname "$0")"

QUICK=${DEMO_QUICK:-0}
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
        *) echo "demo.sh: unknown argument '$arg' (only --quick)" >&2; exit 2 ;;
    esac
done

if [ "$QUICK" = 1 ]; then
    OUT=${DEMO_DIR:-demo-quick}
    NUM_TRAIN=16; NUM_VAL=8; BATCH=4; EPOCHS=1; SHARDS=2
    SIZE="image_size=128,fpn_num_filters=16,fpn_cell_repeats=2,box_class_repeats=1"
else
    OUT=${DEMO_DIR:-demo}
    NUM_TRAIN=512; NUM_VAL=64; BATCH=8; EPOCHS=5; SHARDS=4
    SIZE="image_size=256"
fi
# The short-run recipe (docs/configuration.md, "A recipe for short runs from scratch"): a short
# from-scratch run needs a quick warm-up, Adam and batch-norm statistics that keep up.
HPARAMS="num_classes=3,$SIZE,moving_average_decay=0,batch_norm_momentum=0.9"
HPARAMS="$HPARAMS,train_scale_min=0.8,train_scale_max=1.2,optimizer=adam,learning_rate=0.032"
HPARAMS="$HPARAMS,lr_warmup_init=0.0001,lr_warmup_epoch=0.5"

start=$(date +%s)
# shellcheck source=/dev/null
. ./tools/venv.sh
installed=$(date +%s)

if [ -d "$OUT" ]; then
    echo "demo: $OUT exists: reusing what an earlier run finished (delete it to start over)"
fi
mkdir -p "$OUT"
DATA="$OUT/data"
MODEL="$OUT/model"
EXPORT="$OUT/saved_model"
PICTURES="$OUT/pictures"

step() { echo; echo "== $* =="; }

step "1/6 generate the sample dataset ($NUM_TRAIN train, $NUM_VAL held-out images)"
if [ ! -f "$DATA/train/coco/annotations/instances_sample.json" ]; then
    python dataset/sample_dataset.py --output_dir="$DATA/train" --num_images="$NUM_TRAIN" \
        --format=coco --seed=0
fi
if [ ! -f "$DATA/val/VOCdevkit/label_map.json" ]; then
    python dataset/sample_dataset.py --output_dir="$DATA/val" --num_images="$NUM_VAL" \
        --format=voc --seed=1
fi

step "2/6 convert: COCO converter (train), VOC converter (held-out val)"
if ! ls "$DATA"/rec/train-*.tfrecord >/dev/null 2>&1; then
    python dataset/create_coco_tfrecord.py --image_dir="$DATA/train/coco/images" \
        --object_annotations_file="$DATA/train/coco/annotations/instances_sample.json" \
        --output_file_prefix="$DATA/rec/train" --num_shards="$SHARDS" --num_classes=3
fi
# The json is written last: without it, the val shards (if any) are a stopped run's, the
# demo's own, so --overwrite replaces them.
if [ ! -f "$DATA/rec/json_val.json" ]; then
    python dataset/create_pascal_tfrecord.py --data_dir="$DATA/val/VOCdevkit" \
        --year=VOC2012 --set=trainval --output_path="$DATA/rec/val" --num_shards=1 \
        --label_map_json_path="$DATA/val/VOCdevkit/label_map.json" --overwrite
fi

step "3/6 train VFPN-d0 from scratch ($EPOCHS epochs of $NUM_TRAIN images, batch $BATCH)"
python main.py --mode=train --training_file_pattern="$DATA/rec/train-*" \
    --model_name=efficientdet-d0 --model_dir="$MODEL" --train_batch_size="$BATCH" \
    --num_examples_per_epoch="$NUM_TRAIN" --num_epochs="$EPOCHS" --tf_random_seed=1 \
    --hparams="$HPARAMS,label_map=$DATA/train/coco/label_map.yaml"

step "4/6 evaluate on the held-out images (COCO metrics)"
python main.py --mode=eval --model_dir="$MODEL" --validation_file_pattern="$DATA/rec/val-*" \
    --val_json_file="$DATA/rec/json_val.json" --eval_batch_size="$BATCH" \
    --eval_samples="$NUM_VAL"

step "5/6 export a SavedModel (plus a frozen graph)"
if [ ! -f "$EXPORT/saved_model.pb" ]; then
    python model_inspect.py --runmode=saved_model --ckpt_path="$MODEL" \
        --saved_model_dir="$EXPORT"
fi

step "6/6 draw detections on held-out images"
# The pictures (named after the images) are the demo's own: a re-run draws them again with
# --overwrite rather than skipping the step, so a stopped run's partial set is completed and
# every picture shows the current export.
python model_inspect.py --runmode=saved_model_infer --saved_model_dir="$EXPORT" \
    --input_image="$DATA/val/VOCdevkit/VOC2012/JPEGImages/*.jpg" \
    --output_image_dir="$PICTURES" --min_score_thresh=0.3 --max_boxes_to_draw=10 \
    --overwrite | tail -n 3

end=$(date +%s)
echo
echo "demo finished in $((end - installed)) s ($((end - start)) s with the set-up)"
echo "  model directory: $MODEL"
echo "  SavedModel:      $EXPORT"
echo "  pictures:        $PICTURES"
