#!/usr/bin/env bash
# One-command training on a GPU machine with no network: generate SynthAVS-OV, train for a
# time budget, evaluate on a fresh test seed, and leave the checkpoint, log and evaluation in OUT.
#
#   bash train/device_train.sh [OUT]            # OUT defaults to $OUT
#
# Sized for an H200 with 16 cores to finish within 10 minutes; every knob is an environment
# variable (the defaults in brackets), so a CPU dry run is e.g.
#   TRAIN_CLIPS=24 TEST_CLIPS=6 MINUTES=0.5 STEPS=4 BATCH=4 SIZE=64 bash train/device_train.sh /tmp/dry
#
#   TRAIN_CLIPS [4000]  VAL_CLIPS [200]  TEST_CLIPS [500]  TEST_SEED [9001, used for nothing else]
#   MINUTES [5]  STEPS [6000]  BATCH [64]  LR [1e-3]  SIZE [192]  WORKERS [cores]
#   INIT [none; e.g. "default" to continue the shipped model]  CONFIG [train/configs/continue.yaml]
#   DATA [a folder under OUT]
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-${OUT:?give the output folder as an argument or set OUT}}
workers=${WORKERS:-$(nproc)}
data=${DATA:-$out/data}
mkdir -p "$out"
log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$out/device_train.log"; }

log "generating SynthAVS-OV into $data with $workers workers"
python train/make_synth.py --out "$data/synthavs" --split train --clips "${TRAIN_CLIPS:-4000}" --seed 0 \
  --workers "$workers"
python train/make_synth.py --out "$data/synthavs" --split val --clips "${VAL_CLIPS:-200}" --seed 1 \
  --workers "$workers"
python train/make_synth.py --out "$data/test" --split test --clips "${TEST_CLIPS:-500}" \
  --seed "${TEST_SEED:-9001}" --workers "$workers"

sets=(--set "data.root=$data/synthavs" --set "data.workers=$workers" --set "optim.minutes=${MINUTES:-5}"
      --set "optim.steps=${STEPS:-6000}" --set "optim.batch_size=${BATCH:-64}" --set "optim.lr=${LR:-1e-3}"
      --set "model.image_size=${SIZE:-192}" --set "init=${INIT:-null}")
log "training for at most ${MINUTES:-5} minutes"
python train/train.py --config "${CONFIG:-train/configs/continue.yaml}" --out "$out/run" --quiet "${sets[@]}" \
  | tee -a "$out/device_train.log"

log "calibrating the foreground threshold on val and evaluating on the test seed"
python train/ship.py --checkpoint "$out/run/model.pt" --calibrate "$data/synthavs" --out "$out/model.pt" \
  | tee -a "$out/device_train.log"
python train/evaluate.py --checkpoint "$out/model.pt" --data "$data/test" --scene-text none --quiet \
  --json "$out/eval.json" | tee -a "$out/device_train.log"
cp "$out/run/log.jsonl" "$out/log.jsonl"
log "done: $out/model.pt, $out/log.jsonl, $out/eval.json"
