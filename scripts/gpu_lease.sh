#!/usr/bin/env bash
# A whole GPU lease for the paper study, in at most two device calls (no pip on the device):
#   PHASE=start WATCH=540 bash scripts/gpu_lease.sh   # check CUDA graphs, start the study, watch it
#   PHASE=watch WATCH=150 bash scripts/gpu_lease.sh   # the next call, while the machine is warm
# `start` runs the CUDA-graph tests; if they pass the study trains with --cuda-graphs (a block
# whose graphed task fails is redone eagerly). The study is scripts/paper_study_gpu.py's engine run. The study runs in its own session (setsid), so it
# keeps going between two calls; `watch` packs its tables and curves into $OUT/paper.tgz every 20 s.
# If the study finishes with time to spare, the throughput of both steps is benched.
# Then, here: mkdir -p runs/gpu && tar xzf <files_at>/paper.tgz -C runs/gpu &&
#   .venv/bin/cxvae merge runs/gpu --into results/paper
# REDO_UNKEPT=results/paper retrains, into an empty study folder, only the runs of that folder whose
# model was not kept (so that a new metric can score every seed); bring them back with
#   .venv/bin/cxvae merge runs/gpu --into results/paper --replace
# FRESH=1 makes the whole evaluation in an empty folder (issue #31): every preset's 100 seeds, Figure 4's
# models first (ORDER is then every preset), the oracle, and with STRENGTH=1 chapter 10's strength study
# after it (into runs/gpu_strength, packed under strength/ in paper.tgz); bring it back with
#   mkdir -p runs/gpu && tar xzf <files_at>/paper.tgz -C runs/gpu   (then compare with results/paper)
# CHECK=0 skips the CUDA-graph tests (graphs are then used, and a block whose graphed task fails
# is redone eagerly). CXVAE_GIT_COMMIT names the commit of the copy (it has no .git there).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
DEST=${OUT:-runs/gpu_out}  # $OUT on the device machine
STUDY=runs/gpu
ORDER=${ORDER:-cxvae,ml-vae-corrected,cxvae-none,cxvae-nemeth,cxvae-average,cxvae-product,cxvae-product-corrected,cxvae-unconditional}
T0=$SECONDS
mkdir -p "$DEST" "$STUDY"
if [ "${PHASE:-start}" = start ]; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  REDO=""
  if [ -n "${REDO_UNKEPT:-}" ]; then REDO="--redo-unkept $REDO_UNKEPT"; elif [ "${FRESH:-0}" = 1 ]; then
    ORDER=cxvae,ml-vae,gvae,gvae-ad,ml-vae-corrected,cxvae-none,cxvae-nemeth,cxvae-average,cxvae-product,cxvae-product-corrected,cxvae-unconditional
  else
    cp results/paper/runs.csv results/paper/config.json results/paper/oracle.csv "$STUDY"/
  fi
  STRENGTH_ARGS=""
  if [ "${STRENGTH:-0}" = 1 ]; then STRENGTH_ARGS="--strength runs/gpu_strength"; fi
  GRAPHS=""
  if [ "${CHECK:-1}" = 0 ]; then GRAPHS="--cuda-graphs"; elif timeout 240 $PY -m pytest -q -x -p no:cacheprovider tests/test_seed_stack.py tests/test_noise.py \
      -k "cuda_graphs_trains or gpu_computes or gpu_draws" -rs 2>&1 | tee "$DEST/check.log"; then
    GRAPHS="--cuda-graphs"
  fi
  echo ">> study: ${GRAPHS:-eager} after $((SECONDS - T0)) s"
  # one block after another in the driver's process: two processes sharing the GPU ran 2.9x slower
  # per block (CUDA contexts take turns; results/BENCHMARKS.md). BLOCKS=2 shares it through a local Ray.
  ENGINE="--engine local"
  if [ "${BLOCKS:-1}" -gt 1 ] && $PY -c "import ray" 2>/dev/null; then
    ENGINE="--engine ray --task-gpus $($PY -c "print(1 / ${BLOCKS:-2})")"
  fi
  setsid nohup $PY scripts/paper_study_gpu.py run --out "$STUDY" $ENGINE --quiet --presets "$ORDER" \
    $GRAPHS $REDO $STRENGTH_ARGS >"$STUDY/driver.log" 2>&1 </dev/null &
fi
LEFT=$(( ${WATCH:-540} - (SECONDS - T0) ))
WATCH_STRENGTH=""
if [ "${STRENGTH:-0}" = 1 ]; then WATCH_STRENGTH="--strength runs/gpu_strength"; fi
$PY scripts/paper_study_gpu.py watch --out "$STUDY" --seconds "$LEFT" --every 20 --pack "$DEST" $WATCH_STRENGTH
cat "$STUDY/driver.log"
if grep -q "all jobs finished" "$STUDY/driver.log" && [ $(( ${WATCH:-540} - (SECONDS - T0) )) -gt 100 ]; then
  for flag in --cuda-graphs ""; do
    timeout $(( (${WATCH:-540} - (SECONDS - T0)) / 2 )) $PY -m cxvae.cli bench --presets cxvae,ml-vae --stacks 1,100 \
      --steps 20 --device cuda $flag 2>&1 | tee -a "$DEST/bench.log"
  done
fi
