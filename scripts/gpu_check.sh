#!/usr/bin/env bash
# The first thing to run on a lent GPU (about 3 minutes): the CUDA-only tests, then the training
# throughput of the eager step and of the step replayed from CUDA graphs (cxvae.train.GraphedStep).
# On the device machine (no pip there): PYTHONPATH=$PWD bash scripts/gpu_check.sh
# Decide from its output whether `scripts/paper_study_gpu.py run --cuda-graphs` is safe and faster.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONPATH="${PYTHONPATH:-$PWD}"
PY=${PYTHON:-python3}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
echo ">> CUDA-only tests"
$PY -m pytest -q -p no:cacheprovider tests/test_noise.py tests/test_seed_stack.py -k "gpu or cuda" -rs
echo ">> throughput, eager step"
$PY -m cxvae.cli bench --presets cxvae,ml-vae --stacks 1,100 --steps 20 --device cuda
echo ">> throughput, CUDA graphs"
$PY -m cxvae.cli bench --presets cxvae,ml-vae --stacks 1,100 --steps 20 --device cuda --cuda-graphs
