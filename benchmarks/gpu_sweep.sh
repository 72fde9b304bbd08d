#!/usr/bin/env bash
# The GAN and Transformaly sweeps of issues 11 and 13 on one GPU machine, in lanes of parallel
# `distilad bench` workers that share one results folder (finished runs are skipped, running ones
# are locked), stopped at a deadline; resumable like any bench sweep.
#
#   bash benchmarks/gpu_sweep.sh PART DATA_ROOT RESULTS DEADLINE_S [GAN_WORKERS] [TF_WORKERS]
#
# PART gans:              EDE-GAN and P-KDGAN on MNIST, Fashion-MNIST and CIFAR-10 (GAN lane);
#      transformaly[:DS]: Transformaly on DS (fashion-mnist (default) or cifar10): unimodal 3
#                         seeds, multimodal 1 seed, one class at 384 px.
#      transformaly-teacher[:DS]: Transformaly on DS with the teacher the study of issue 11
#                         recommends on validation (Lite2, 224 px), 10 classes, seed 0: its
#                         records' validation blocks decide whether it becomes the default.
# RESULTS may start as a copy of benchmarks/results: runs already there are skipped.
# Data: the GPU machines lent here take 64 MiB per call, so the idx files travel xz-compressed
# and CIFAR-10's JPEG tree as one tar.xz (18.6 MB; its JPEGs share headers), unpacked there.
# Each lane lists its work in priority order: what matters most is finished first when the
# deadline cuts the sweep short. Order inside the GAN lane keeps P-KDGAN's "fixed" runs (which
# train and cache the pretrained teacher) well ahead of the "two-step" runs that reuse it;
# every two-step record says whether its teacher came from the cache (fit_info.teacher_from_cache).
# Settings: methods' defaults (15 epochs for EDE-GAN, teacher 15 / step 1 10 / step 2 5 for
# P-KDGAN; Transformaly's CPU-chosen defaults) with validation_curve on for the GANs.
# AM_FIRST=N: the first N GAN workers start with the EDE-GAN AdaptiveMix ablation (issue 12)
# instead of P-KDGAN, so one short call yields both.
# SMOKE=1 shrinks every run (1 epoch, class 0) to test the script itself on a CPU.
set -uo pipefail
PART=${1:?part: gans or transformaly[:DATASET]}
ROOT=${2:?data root}
RESULTS=${3:?results folder}
DEADLINE=${4:?seconds}
GAN_WORKERS=${5:-15}
TF_WORKERS=${6:-15}
PY=${PYTHON:-python3}
END=$(( $(date +%s) + DEADLINE ))
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
# a snapshot of the tree (e.g. `git archive` of a commit, named by $DISTILAD_COMMIT) run from
# inside another checkout must not be taken for that checkout's code
if [ -n "${DISTILAD_COMMIT:-}" ]; then export GIT_CEILING_DIRECTORIES=$(dirname "$PWD"); fi
LOGS=${LOGS:-$RESULTS/logs}
mkdir -p "$RESULTS" "$LOGS"

E=15; TE=15; S1=10; S2=5; BS_E=5; CLASSES=0-9; AM_CLASSES=0-2
if [ "${SMOKE:-0}" = 1 ]; then E=1; TE=1; S1=1; S2=1; BS_E=1; CLASSES=0; AM_CLASSES=0; fi

bench() {  # runs until done or the deadline; a run cut off leaves nothing behind
  local left=$(( END - $(date +%s) ))
  [ "$left" -gt 5 ] || return 1
  timeout -s TERM "$left" "$PY" -m distilad.cli bench --data-root "$ROOT" --results "$RESULTS" \
      --no-markdown -q "$@"
  return 0
}
# student (width, nz): the paper's generator-FLOPs ratios (methods/pkdgan/README.md)
student() { case $1 in cifar10) echo "12 8";; mnist) echo "3 36";; fashion-mnist) echo "2 4";; esac; }
edegan() {  # $1 dataset, $2 seeds, [$3 classes]
  bench --method edegan --dataset "$1" --classes "${3:-$CLASSES}" --seeds "$2" --name e$E \
      --set epochs=$E --set validation_curve=true
}
pkdgan() {  # $1 dataset, $2 schedule, $3 seeds
  local sw sz
  read -r sw sz <<< "$(student "$1")"
  bench --method pkdgan --dataset "$1" --classes $CLASSES --seeds "$3" \
      --name "$2-t$TE-s$S1-$S2-w${sw}z$sz" --set schedule="$2" --set teacher_epochs=$TE \
      --set step1_epochs=$S1 --set step2_epochs=$S2 --set student_width="$sw" \
      --set student_nz="$sz" --set validation_curve=true
}
adaptivemix() {  # $1 dataset: EDE-GAN with AdaptiveMix, paired with the e$E runs (same seeds)
  "$PY" -c "from distilad.methods.edegan.detector import GAN_SPECS as s; assert 'adaptivemix' in s" \
      2>/dev/null || return 0
  bench --method edegan --dataset "$1" --classes $AM_CLASSES --seeds 0,1,2 --name e$E-adaptivemix \
      --set epochs=$E --set validation_curve=true --set adaptivemix=true
}
pkdgan_adaptivemix() {  # $1 dataset: two-step P-KDGAN with AdaptiveMix in every phase
  local sw sz
  read -r sw sz <<< "$(student "$1")"
  bench --method pkdgan --dataset "$1" --classes $AM_CLASSES --seeds 0,1,2 \
      --name "two-step-t$TE-s$S1-$S2-w${sw}z$sz-adaptivemix" --set schedule=two-step \
      --set teacher_epochs=$TE --set step1_epochs=$S1 --set step2_epochs=$S2 \
      --set student_width="$sw" --set student_nz="$sz" --set validation_curve=true \
      --set adaptivemix=true
}
validated_length() {  # $1 dataset: EDE-GAN at the epoch its validation curve peaked (e15 sweep)
  local e
  case $1 in mnist) e=4;; fashion-mnist) e=2;; cifar10) e=3;; esac
  [ "${SMOKE:-0}" = 1 ] && e=1
  bench --method edegan --dataset "$1" --classes $CLASSES --seeds 0,1,2 --name e$e-dcgan \
      --set epochs=$e
}
batch_study() {  # $1 dataset: batch 1 / 16 / 64 at BS_E epochs, classes 0-1, 3 seeds
  for bs in 64 16 1; do
    bench --method edegan --dataset "$1" --classes 0,1 --seeds 0,1,2 --name bs$bs-e$BS_E \
        --set epochs=$BS_E --set batch_size=$bs || return
  done
}
am_lane() {  # $@ datasets: the EDE-GAN AdaptiveMix ablation first, then the main lane
  for ds in "$@"; do adaptivemix "$ds" || return; done
  gan_lane "$@"
}
gan_lane() {  # $@ datasets
  for ds in "$@"; do edegan "$ds" 0,1,2 || return; done
  for seed in 0 1 2; do
    for ds in "$@"; do pkdgan "$ds" fixed $seed || return; done
    for ds in "$@"; do pkdgan "$ds" alone $seed || return; done
    for ds in "$@"; do pkdgan "$ds" two-step $seed || return; done
    if [ $seed = 0 ]; then for ds in "$@"; do adaptivemix "$ds" || return; done; fi
  done
  for ds in "$@"; do pkdgan_adaptivemix "$ds" || return; done
  for ds in "$@"; do batch_study "$ds" || return; done
  for ds in "$@"; do validated_length "$ds" || return; done
}
# Transformaly's max_cached_mb per worker: its "auto" default sizes one process by the memory
# free when it starts, so workers started together would each count all of it (15 multimodal or
# Lite2 runs: over 128 GB); a fixed share keeps the sum bounded (teacher boundaries over it are
# recomputed per batch, cheap on a GPU; the scores do not depend on it)
TF_CACHE_MB=${TF_CACHE_MB:-2048}
tf_lane() {  # $1 dataset: unimodal 3 seeds, multimodal 1 seed, paper size (384 px) on class 0
  for seed in 0 1 2; do
    bench --method transformaly --dataset "$1" --classes $CLASSES --seeds $seed \
        --name default --set max_cached_mb=$TF_CACHE_MB || return
  done
  # 1 epoch: chosen on validation (methods/transformaly/README.md, "Epochs for the multimodal
  # protocol")
  bench --method transformaly --dataset "$1" --protocol one-class-anomalous \
      --classes $CLASSES --seeds 0 --name e1 --set epochs=1 \
      --set max_cached_mb=$TF_CACHE_MB || return
  bench --method transformaly --dataset "$1" --classes 0 --seeds 0 --name s384 \
      --set image_size=384 --set max_cached_mb=$TF_CACHE_MB || return
}

tf_teacher_lane() {  # $1 dataset (methods/transformaly/README.md, "Teacher and size, second round")
  bench --method transformaly --dataset "$1" --classes $CLASSES --seeds 0 --name lite2-s224 \
      --set backbone='"efficientnet_lite2"' --set image_size=224 \
      --set max_cached_mb=$TF_CACHE_MB || return
}

decode_cifar() {  # decode CIFAR-10's JPEG tree once into the shared array cache, before workers
  "$PY" -c "from distilad.data.novelty import load_split as l; l('cifar10','train',root='$ROOT'); l('cifar10','test',root='$ROOT')"
}

TF_SET=fashion-mnist
TF_LANE=tf_lane
case $PART in
  gans) GAN_SETS="mnist fashion-mnist cifar10"; TF_WORKERS=0; decode_cifar;;
  transformaly|transformaly:fashion-mnist) GAN_WORKERS=0;;
  transformaly:cifar10) GAN_WORKERS=0; TF_SET=cifar10; decode_cifar;;
  transformaly-teacher|transformaly-teacher:fashion-mnist) GAN_WORKERS=0; TF_LANE=tf_teacher_lane;;
  transformaly-teacher:cifar10) GAN_WORKERS=0; TF_SET=cifar10; TF_LANE=tf_teacher_lane
                                decode_cifar;;
  *) echo "gpu_sweep.sh: part must be gans, transformaly[:fashion-mnist|:cifar10] or" \
          "transformaly-teacher[:fashion-mnist|:cifar10], got '$PART'" >&2
     exit 2;;
esac
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
    > "$LOGS/gpu.txt" || true
pids=()
for w in $(seq 1 "$GAN_WORKERS"); do
  lane=gan_lane; [ "$w" -le "${AM_FIRST:-0}" ] && lane=am_lane
  ($lane $GAN_SETS) > "$LOGS/gan_$w.log" 2>&1 & pids+=($!)
  sleep 1  # staggered, so the workers claim different runs from the start
done
for w in $(seq 1 "$TF_WORKERS"); do
  $TF_LANE "$TF_SET" > "$LOGS/tf_$w.log" 2>&1 & pids+=($!)
  sleep 1
done
wait "${pids[@]}"
echo "gpu_sweep: $(ls "$RESULTS"/*.json 2>/dev/null | wc -l) result files; $(( $(date +%s) - END + DEADLINE )) s"
