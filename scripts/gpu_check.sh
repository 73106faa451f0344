#!/usr/bin/env bash
# The one prepared GPU check (issue 14): on ONE GPU, within 5 minutes,
#   1. the `small` preset in bf16 for STEPS steps with the project's Megatron-Core trainer: tokens/s, MFU against the
#      device's dense bf16 peak, peak memory; the Transformer-Engine layer spec where TE is importable, else the local
#      spec (recorded);
#   2. one CPT step of a SmolLM2-135M-shaped model (tied embeddings, 9 heads on 3 kv heads; random weights: the
#      device machine has no network to fetch the real ones), converted HF -> Megatron first;
#   3. one lm-eval suite on that model with the hf backend in bf16 and in fp32 (and vLLM where importable).
# Writes bench/gpu.json. On a machine without a CUDA GPU it says so, leaves bench/gpu.json alone and exits 0.
# Installs nothing: it uses the Python it finds (PYTHON=...), which needs this package's requirements
# (pyproject.toml; the GPU extras are in requirements-gpu.txt). Usage: bash scripts/gpu_check.sh  (env: STEPS=40 LIMIT_S=290)
# A CPU dry run of the same code (tiny sizes, fp32, JSON to a temporary folder): GPU_CHECK_CPU=1 bash scripts/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONWARNINGS=ignore PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "${GPU_CHECK_CPU:-0}" != 1 ] && ! "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  echo "gpu_check: no CUDA GPU visible to $PY (or no torch): nothing measured; bench/gpu.json left as it is"
  exit 0
fi
timeout "${LIMIT_S:-290}" "$PY" scripts/gpu_check.py
rc=$?
[ $rc -eq 124 ] && echo "gpu_check: stopped at the ${LIMIT_S:-290} s limit; the JSON holds the sections that finished"
exit $rc
