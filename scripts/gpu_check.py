"""The sections of scripts/gpu_check.sh. Each section records its result or its error in the JSON, which is written
after every section, so that a timeout or a failure leaves what finished."""
import dataclasses
import importlib.metadata
import importlib.util
import json
import os
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

CPU = os.environ.get("GPU_CHECK_CPU") == "1"          # dry run of the code path on a CPU, tiny sizes
OUT = Path(tempfile.mkdtemp(prefix="gpu_check_"))
RESULT = Path(os.environ.get("GPU_JSON") or (OUT / "gpu.json" if CPU else "bench/gpu.json"))
STEPS = int(os.environ.get("STEPS", 4 if CPU else 40))
DENSE_BF16_PEAK = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "GH200": 989e12, "A100": 312e12, "L40S": 362e12,
                   "B200": 2250e12}           # NVIDIA datasheets, dense (no sparsity)
res = {"measured": not CPU, "note": "CPU dry run of the script, not a measurement" if CPU else "", "sections": {}}


def version(name):
    try: return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError: return None


def save():
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    RESULT.write_text(json.dumps(res, indent=1) + "\n")


def section(name):
    def run(fn):
        t0 = time.time()
        try: res["sections"][name] = {"ok": True, **fn()}
        except Exception as e:
            res["sections"][name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
        res["sections"][name]["seconds"] = round(time.time() - t0, 1)
        print(f"gpu_check: {name}: {'ok' if res['sections'][name]['ok'] else res['sections'][name]['error']}", flush=True)
        save()
        return fn
    return run


name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
peak = next((v for k, v in DENSE_BF16_PEAK.items() if k in name), None)
res["env"] = {"device": name, "dense_bf16_peak_flops": peak, "torch": torch.__version__, "cuda": torch.version.cuda,
              **{k: version(k) for k in ("megatron-core", "transformer-engine", "transformer_engine", "vllm",
                                         "transformers", "lm_eval", "flash-attn")},
              "transformer_engine_importable": importlib.util.find_spec("transformer_engine") is not None,
              "vllm_importable": importlib.util.find_spec("vllm") is not None}
save()

from sec_nb.config import ModelShape, load_preset            # noqa: E402  (after the environment is recorded)
from sec_nb.cpt import megatron_flops_per_sample             # noqa: E402

DTYPE = "fp32" if CPU else "bf16"


@section("small_bf16")
def small():
    from sec_nb.trainer import Parallel, train, use_te, write_indexed
    cfg = load_preset("small")
    shape = dataclasses.replace(cfg.model, n_layers=2, hidden=128, ffn_hidden=256, n_heads=4, n_kv_heads=2,
                                vocab_size=1024, seq_len=128) if CPU else cfg.model
    rng = np.random.default_rng(0)
    docs = (list(rng.integers(1, shape.vocab_size, size=int(rng.integers(200, 4000)))) + [0]
            for _ in range(300 if CPU else 6000))
    write_indexed(OUT / "synthetic", docs, vocab_size=shape.vocab_size)
    spec = dataclasses.replace(cfg.pretrain, steps=STEPS, save_every=0, warmup_steps=2,
                               **({"global_batch": 4, "micro_batch": 4} if CPU else {}))
    if torch.cuda.is_available(): torch.cuda.reset_peak_memory_stats()
    train(spec, shape, [OUT / "synthetic"], None, OUT / "small", eod=0, log_every=10, resume=False,
          parallel=Parallel(dtype=DTYPE))
    recs = [json.loads(l) for l in (OUT / "small" / "metrics.jsonl").read_text().splitlines()]
    tps = statistics.median(x["tokens_per_s"] for x in recs[min(5, len(recs) - 1):])   # past the warm-up steps
    fpt = megatron_flops_per_sample(shape) / shape.seq_len
    return {"layer_spec": "te" if use_te("auto") else "local", "dtype": DTYPE, "params": shape.n_params(),
            "steps": len(recs), "tokens_per_s": round(tps), "flops_per_token": fpt,
            "mfu": round(tps * fpt / peak, 4) if peak else None,
            "peak_memory_gb": round(torch.cuda.max_memory_allocated() / 1e9, 2) if torch.cuda.is_available() else None,
            "loss_first": recs[0]["lm_loss"], "loss_last": recs[-1]["lm_loss"]}


SMOL = ModelShape(n_layers=30, hidden=576, ffn_hidden=1536, n_heads=9, n_kv_heads=3, vocab_size=49152, seq_len=2048,
                  rope_theta=100_000.0, tie_embeddings=True)   # SmolLM2-135M's config


@section("smol_cpt_step")
def smol():
    from transformers import LlamaForCausalLM
    from sec_nb.convert import hf_config
    from sec_nb.tokens import train_tokenizer
    from sec_nb.trainer import Parallel, hf_to_checkpoint, train, write_indexed
    shape = dataclasses.replace(SMOL, n_layers=2, seq_len=256) if CPU else SMOL
    torch.manual_seed(0)
    LlamaForCausalLM(hf_config(shape)).save_pretrained(OUT / "smol_hf")
    texts = ["Item 7. Management's discussion of financial condition and results of operations."] * 200
    train_tokenizer(texts, 300, OUT / "smol_hf")             # for the lm-eval section (the model's vocab is larger)
    hf_to_checkpoint(OUT / "smol_hf", shape, OUT / "smol_init")
    rng = np.random.default_rng(1)
    write_indexed(OUT / "smol_tok", (list(rng.integers(1, 300, size=3000)) + [0] for _ in range(64)),
                  vocab_size=shape.vocab_size)
    spec = dataclasses.replace(load_preset("micro").cpt, steps=1, save_every=0, micro_batch=4, global_batch=4)
    r = train(spec, shape, [OUT / "smol_tok"], None, OUT / "smol_cpt", init_checkpoint=OUT / "smol_init", eod=0,
              log_every=1, resume=False, parallel=Parallel(dtype=DTYPE))
    return {"shape": dataclasses.asdict(shape), "weights": "random (SmolLM2-135M's shape)", "loss": r["losses"][-1],
            "seconds_train_call": r["seconds"]}


@section("lm_eval")
def lm_eval_suite():
    from lm_eval.api.registry import get_model
    from sec_nb.lmeval import evaluate, load_tasks, mc_task, offline_env, write_tasks
    offline_env()
    data = OUT / "mc.jsonl"
    with open(data, "w") as f:
        for i in range(16):
            f.write(json.dumps({"query": f"Question {i}: is revenue up?", "choices": [" yes", " no", " unclear"],
                                "gold": i % 3}) + "\n")
    write_tasks(OUT / "tasks", {"gpucheck_mc": mc_task("gpucheck_mc", data, "gpucheck")})
    tasks = load_tasks(["secnb_gpucheck_mc"], OUT / "tasks")
    out = {}
    backends = [("hf", "bfloat16"), ("hf", "float32")] + ([("vllm", "bfloat16")] if res["env"]["vllm_importable"] else [])
    for backend, dtype in backends:
        if CPU and dtype == "bfloat16": continue
        t0 = time.time()
        args = {"pretrained": str(OUT / "smol_hf"), "dtype": dtype}
        args.update({"device": "cuda" if torch.cuda.is_available() else "cpu"} if backend == "hf"
                    else {"gpu_memory_utilization": 0.5})
        lm = get_model(backend).create_from_arg_obj(args, {"batch_size": 8})
        r = evaluate(lm, tasks)
        out[f"{backend}_{dtype}"] = {"acc": r["results"]["secnb_gpucheck_mc"]["acc,none"],
                                     "seconds": round(time.time() - t0, 1)}
        del lm
    return {"task": "16 three-way multiple-choice items on the random smol model (timing and plumbing, not a score)", **out}


ok = all(s["ok"] for s in res["sections"].values())
print(f"gpu_check: wrote {RESULT}" + ("" if ok else " (with failed sections)"))
sys.exit(0 if ok else 1)
