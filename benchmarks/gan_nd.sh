#!/usr/bin/env bash
# EDE-GAN and P-KDGAN one-class novelty benchmarks, resumable (finished runs are skipped).
#   bash benchmarks/gan_nd.sh [DATA_ROOT] [quick|cpu|full]   (default: $DISTILAD_DATA, quick)
# quick: a smoke run (2 epochs, one seed, few classes), about an hour on 2 cores;
# cpu:   what the 2-core development machine ran for the issue (EDE-GAN 2 epochs, 10 classes x
#        3 seeds; P-KDGAN classes 0-1 x 3 seeds on all three datasets; batch-size study on class 0
#        x 3 seeds, one epoch), ~5 h on 2 cores;
# full:  the issue's configuration (15 epochs, 3 seeds, 10 classes), for a GPU.
# Pretrained P-KDGAN teachers are cached ($DISTILAD_CACHE/gan-teachers), so the schedules of one
# class and seed share one teacher.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${1:-${DISTILAD_DATA:?pass the data root or set DISTILAD_DATA}}
MODE=${2:-quick}
BIN=${DISTILAD_BIN:-.venv/bin/distilad}
case $MODE in
  full)  E=15; E_SEEDS=0,1,2; PK_CLASSES=0-9; PK_SEEDS=0,1,2; TE=15; S1=10; S2=5
         BS_EPOCHS=15; BS_CLASSES=0-9; BS_SEEDS=0,1,2; PK_SETS="mnist fashion-mnist cifar10";;
  cpu)   E=2; E_SEEDS=0,1,2; PK_CLASSES=0,1; PK_SEEDS=0,1,2; TE=2; S1=2; S2=1
         BS_EPOCHS=1; BS_CLASSES=0; BS_SEEDS=0,1,2; PK_SETS="fashion-mnist cifar10 mnist";;
  quick) E=2; E_SEEDS=0; PK_CLASSES=0-2; PK_SEEDS=0; TE=2; S1=2; S2=1
         BS_EPOCHS=1; BS_CLASSES=0; BS_SEEDS=0; PK_SETS="mnist";;
  *) echo "gan_nd.sh: mode must be quick, cpu or full, got '$MODE'" >&2; exit 2;;
esac
run() { OMP_NUM_THREADS=1 "$BIN" bench --data-root "$ROOT" --no-markdown "$@"; }
# student (width, nz) giving the paper's computation ratios in generator FLOPs at 32 px
# (methods/pkdgan/README.md): CIFAR-10 24.2:1 (paper 24.45), MNIST 311.2:1 (311.11),
# Fashion-MNIST 695.5:1 (700)
student_size() { case $1 in cifar10) echo "12 8";; mnist) echo "3 36";;
                            fashion-mnist) echo "2 4";; esac; }
edegan_sweep() {
  for ds in cifar10 mnist fashion-mnist; do
    run --method edegan --dataset $ds --seeds $E_SEEDS --name e$E --set epochs=$E
  done
}
batch_study() {
  for ds in mnist fashion-mnist; do
    for bs in 64 16 1; do
      run --method edegan --dataset $ds --classes $BS_CLASSES --seeds $BS_SEEDS \
          --name bs$bs-e$BS_EPOCHS --set epochs=$BS_EPOCHS --set batch_size=$bs
    done
  done
}
pkdgan_sweep() {  # $1: dataset. "fixed" first: it trains (and caches) the teacher the others reuse
  local sw sz
  read -r sw sz <<< "$(student_size "$1")"
  for sch in fixed two-step alone; do
    run --method pkdgan --dataset "$1" --classes $PK_CLASSES --seeds $PK_SEEDS \
        --name $sch-t$TE-s$S1-$S2-w${sw}z$sz --set schedule=$sch --set teacher_epochs=$TE \
        --set step1_epochs=$S1 --set step2_epochs=$S2 \
        --set student_width=$sw --set student_nz=$sz
  done
}
set -- $PK_SETS
worker_a() { edegan_sweep; batch_study; for ds in "${@:3}"; do pkdgan_sweep "$ds"; done; }
worker_b() { for ds in "${@:1:2}"; do pkdgan_sweep "$ds"; done; }
worker_a "$@" & a=$!
worker_b "$@" & b=$!
wait $a $b
"${BIN%/distilad}/python" -m distilad.bench.results
