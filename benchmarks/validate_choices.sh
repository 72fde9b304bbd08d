#!/usr/bin/env bash
# Re-make, on the validation split only, the RD configuration choices that were once made by
# looking at test data (issue 10): the default teacher (MVTec AD bottle: held-out normals vs
# synthetic defects), the novelty learning-rate schedule and pooling (held-out normals vs other
# classes' training images), then the novelty input size. Every run also evaluates on the test
# split, but the choice reads only the `validation` block of the result files (see
# methods/rd/README.md, "Choices made on validation").
#   bash benchmarks/validate_choices.sh [DATA_ROOT] [SEEDS_NOVELTY]   (default: $DISTILAD_DATA, 0)
# Two workers with one thread each; they share the sweeps through the bench's run locks, and
# finished runs are skipped, so running it again after an interruption completes it.
# On a bigger machine: SEEDS_NOVELTY=0,1,2 and more workers.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-${DISTILAD_DATA:?pass the data root or set DISTILAD_DATA}}
NSEEDS=${2:-0}
BIN=${DISTILAD_BIN:-.venv/bin/distilad}
ND=(--set backbone=efficientnet_lite0 --set image_size=32 --set batch_size=64 --set image_score=mean --set epochs=5)
run() { OMP_NUM_THREADS=1 "$BIN" bench --method rd --data-root "$ROOT" --no-markdown -q "$@"; }
bottle() {  # seed by seed, so that an interrupted sweep still compares the teachers on equal seeds
  for s in 0 1 2; do
    for t in 1 0 2; do
      run --dataset mvtec --classes bottle --seeds $s --name v-lite$t-e20 \
          --set epochs=20 --set backbone=efficientnet_lite$t
    done
  done
}
novelty() {  # class by class, both schedules, for the same reason
  for ds in mnist cifar10 fashion-mnist; do
    for c in 0 1 2 3 4 5 6 7 8 9; do
      run --dataset $ds --classes $c --seeds "$NSEEDS" --name v-nd32-e5 "${ND[@]}"
      run --dataset $ds --classes $c --seeds "$NSEEDS" --name v-nd32-e5-cos "${ND[@]}" \
          --set lr_schedule='"cosine"'
    done
  done
}
# image size (after the schedule choice above, which it uses): 64 px against 32 px, 4x the cost,
# so on classes 0-4 here (SIZE_CLASSES="0 1 2 3 4 5 6 7 8 9" on a bigger machine)
SIZE_CLASSES=${SIZE_CLASSES:-0 1 2 3 4}
size_study() {
  for ds in mnist cifar10 fashion-mnist; do
    for c in $SIZE_CLASSES; do
      run --dataset $ds --classes $c --seeds "$NSEEDS" --name v-nd64-e5-cos "${ND[@]}" \
          --set image_size=64 --set lr_schedule='"cosine"'
    done
  done
}
{ bottle; novelty; size_study; } & a=$!
{ novelty; size_study; } & b=$!
wait $a $b
"${BIN%/distilad}/python" -m distilad.bench.results
