"""scripts/gpu_check.sh: on a machine without a GPU it says so and exits 0; its code path runs as a CPU dry run."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(env_extra, timeout=280):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1", **env_extra}
    return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh")], env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_without_a_gpu_it_says_so_and_exits_0():
    import torch
    if torch.cuda.is_available(): return        # a GPU machine runs the real check instead
    before = (ROOT / "bench" / "gpu.json").read_bytes() if (ROOT / "bench" / "gpu.json").exists() else None
    r = _run({})
    assert r.returncode == 0 and "no CUDA GPU" in r.stdout, r.stdout + r.stderr
    after = (ROOT / "bench" / "gpu.json").read_bytes() if (ROOT / "bench" / "gpu.json").exists() else None
    assert before == after


def test_cpu_dry_run_of_every_section(tmp_path):
    out = tmp_path / "gpu.json"
    r = _run({"GPU_CHECK_CPU": "1", "GPU_JSON": str(out)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["measured"] is False and set(res["sections"]) == {"small_bf16", "smol_cpt_step", "lm_eval"}
    assert all(s["ok"] for s in res["sections"].values()), res
    assert res["sections"]["small_bf16"]["layer_spec"] == "local" and res["sections"]["small_bf16"]["tokens_per_s"] > 0
    assert res["sections"]["smol_cpt_step"]["shape"]["tie_embeddings"] is True
    assert 0 <= res["sections"]["lm_eval"]["hf_float32"]["acc"] <= 1
