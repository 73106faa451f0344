#!/usr/bin/env bash
# Train the `small` preset (12 layers, hidden 768, vocab 32000, seq 1024) in bf16 on ONE GPU with the project's
# Megatron-Core trainer, on synthetic tokens, for STEPS steps; print tokens/s and MFU as JSON (also written to
# bench/gpu_small.json). Usage: bash scripts/gpu_small.sh   (env: STEPS=300 OUT=/tmp/gpu_small PEAK_TFLOPS=989)
set -euo pipefail
cd "$(dirname "$0")/.."
export STEPS="${STEPS:-300}" OUT="${OUT:-$(mktemp -d)}" PYTHONWARNINGS=ignore
python - <<'PY'
import dataclasses, json, os
import numpy as np
from pathlib import Path
from sec_nb.config import load_preset
from sec_nb.trainer import Parallel, job_dict, write_indexed
cfg = load_preset("small")
out = Path(os.environ["OUT"])
rng = np.random.default_rng(0)
docs = (list(rng.integers(1, cfg.model.vocab_size, size=int(rng.integers(200, 4000)))) + [0] for _ in range(20000))
write_indexed(out / "synthetic", docs, vocab_size=cfg.model.vocab_size)
spec = dataclasses.replace(cfg.pretrain, steps=int(os.environ["STEPS"]), save_every=0, warmup_steps=20)
job = job_dict(spec, cfg.model, [out / "synthetic"], None, out / "run", eod=0, log_every=25, resume=False,
               parallel=Parallel(dtype="bf16"))
(out / "job.json").write_text(json.dumps(job))
PY
torchrun --standalone --nproc_per_node=1 -m sec_nb.trainer "$OUT/job.json"
python - <<'PY'
import json, os, statistics, torch
from pathlib import Path
from sec_nb.config import load_preset
m = load_preset("small").model
recs = [json.loads(l) for l in (Path(os.environ["OUT"]) / "run" / "metrics.jsonl").read_text().splitlines()]
tps = statistics.median(r["tokens_per_s"] for r in recs[10:])
flops_per_token = 6 * m.n_params() + 12 * m.n_layers * m.hidden * m.seq_len   # matmuls fwd+bwd + attention scores
name = torch.cuda.get_device_name(0)
peak = float(os.environ.get("PEAK_TFLOPS") or (989 if ("H100" in name or "H200" in name) else 312 if "A100" in name else 0)) * 1e12
res = {"gpu": name, "preset": "small", "dtype": "bf16", "params": m.n_params(), "steps": len(recs),
       "tokens_per_s": round(tps), "flops_per_token": flops_per_token,
       "mfu": round(tps * flops_per_token / peak, 4) if peak else None, "peak_tflops": peak / 1e12,
       "loss_first": recs[0]["lm_loss"], "loss_last": recs[-1]["lm_loss"]}
print(json.dumps(res))
Path("bench/gpu_small.json").write_text(json.dumps(res, indent=1) + "\n")
PY
