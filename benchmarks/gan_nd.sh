#!/usr/bin/env bash
# EDE-GAN and P-KDGAN one-class novelty benchmarks, resumable (finished runs are skipped).
#   bash benchmarks/gan_nd.sh [DATA_ROOT] [quick|full]      (default: $DISTILAD_DATA, quick)
# quick: what fits a 2-core CPU in about an hour (few epochs, one seed, fewer classes for
#        P-KDGAN); full: the issue's configuration (15 epochs, 3 seeds, 10 classes), for a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-${DISTILAD_DATA:?pass the data root or set DISTILAD_DATA}}
MODE=${2:-quick}
BIN=${DISTILAD_BIN:-.venv/bin/distilad}
if [ "$MODE" = full ]; then
  E=15; SEEDS=0,1,2; PK_CLASSES=0-9; TE=15; S1=10; S2=5; BS_EPOCHS=15; BS_CLASSES=0-9
else
  E=2; SEEDS=0; PK_CLASSES=0-2; TE=2; S1=2; S2=1; BS_EPOCHS=1; BS_CLASSES=0
fi
run() { OMP_NUM_THREADS=1 "$BIN" bench --data-root "$ROOT" --no-markdown "$@"; }
# student sizes giving the paper's computation ratios (methods/pkdgan/README.md)
student() { case $1 in cifar10) echo "--set student_width=10 --set student_nz=32";;
                       mnist) echo "--set student_width=3 --set student_nz=32";;
                       fashion-mnist) echo "--set student_width=1 --set student_nz=100";; esac; }
worker_a() {
  for ds in mnist fashion-mnist cifar10; do
    run --method edegan --dataset $ds --seeds $SEEDS --name e$E --set epochs=$E
  done
}
worker_b() {
  for ds in mnist fashion-mnist; do
    for bs in 64 16 1; do
      run --method edegan --dataset $ds --classes $BS_CLASSES --seeds $SEEDS --name bs$bs-e$BS_EPOCHS \
          --set epochs=$BS_EPOCHS --set batch_size=$bs
    done
  done
  for sch in alone fixed two-step joint; do
    # shellcheck disable=SC2046
    run --method pkdgan --dataset mnist --classes $PK_CLASSES --seeds $SEEDS --name $sch-t$TE-s$S1-$S2 \
        --set schedule=$sch --set teacher_epochs=$TE --set step1_epochs=$S1 --set step2_epochs=$S2 \
        $(student mnist)
  done
}
worker_a & a=$!
worker_b & b=$!
wait $a $b
"${BIN%/distilad}/python" -m distilad.bench.results
