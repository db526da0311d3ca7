#!/usr/bin/env bash
# The GPU rows of issue 18 (item 2) in one command, for a host lent one GPU:
#
#   experiments/gpu_rows.sh            # run them; records under $RESULTS (experiments/results)
#   experiments/gpu_rows.sh --print    # the benchmark.py argument lists, one per line
#   experiments/gpu_rows.sh --dry      # each list through benchmark.py --dry (rows, no compile)
#
# Rows (targets on one H200 in bf16): YOLOv3-608 train and infer at batch 64 (>= 500 and
# >= 1500 img/s), Mask R-CNN R50-FPN train at batch 16 (>= 150 img/s), each with its
# MFU against the card's dense bf16 peak (experiments/bench_peaks.py); RetinaNet R50-FPN
# inference at batch 1 and 8 (float32/TF32 as the README's rows) with a jax.profiler trace
# of each (its batch-scaling question); the loader at 0,1,2,4,8,12 workers on $DATA.
# Model rows also time their input pipeline with 12 workers (--with_loader) when $DATA
# exists. Records are named after the card (jax's device_kind, e.g. nvidia_h200_...).
# Compiles are cold (benchmark.py turns JAX's persistent cache off). Budget: meant to
# finish in under 8 minutes on one H200; not yet run (estimate, no measurement).
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=run
case "${1:-}" in
  --print) MODE=print ;;
  --dry) MODE=dry ;;
  '') ;;
  *) echo "gpu_rows.sh: unknown argument ${1} (use --print or --dry)" >&2; exit 2 ;;
esac
PY=${PYTHON:-python}
DATA=${DATA:-../shared/data/coco_tiny}
RESULTS=${RESULTS:-experiments/results}
if [[ -z "${CARD:-}" ]]; then
  if [[ $MODE == run ]]; then
    CARD=$("$PY" -c 'import jax, re; print(re.sub(r"[^a-z0-9]+", "_", jax.devices()[0].device_kind.lower()).strip("_"))')
  else
    CARD=card
  fi
fi
LOADER=()
if [[ -d "$DATA" ]]; then
  LOADER=(--with_loader=12 --loader_batches=4 "--data_dir=$DATA")
fi

ROWS=(
  "--models=yolov3_darknet --sizes=608 --batch=64 --dtype=bfloat16 --repeats=10 ${LOADER[*]} --json=$RESULTS/${CARD}_yolov3_608_bf16_b64.json"
  "--models=mask_rcnn_r50_fpn_1x --modes=train --batch=16 --dtype=bfloat16 --repeats=10 ${LOADER[*]} --json=$RESULTS/${CARD}_mask_rcnn_train_bf16_b16.json"
  "--models=retinanet_r50_fpn_1x --modes=infer --batch=1,8 --dtype=float32 --repeats=10 --profile=$RESULTS/${CARD}_retinanet_profile --json=$RESULTS/${CARD}_retinanet_infer_b1_b8.json"
)
if [[ -d "$DATA" || $MODE != run ]]; then
  ROWS+=("--loader --loader_workers=0,1,2,4,8,12 --loader_dtypes=uint8,float32 --loader_batches=20 --data_dir=$DATA --json=$RESULTS/${CARD}_loader_workers.json")
else
  echo "gpu_rows.sh: no dataset at $DATA (set DATA=...): loader rows skipped" >&2
fi

for args in "${ROWS[@]}"; do
  case $MODE in
    print) echo "$args" ;;
    dry) "$PY" experiments/benchmark.py $args --dry ;;
    run) echo "== benchmark.py $args" && "$PY" experiments/benchmark.py $args ;;
  esac
done
