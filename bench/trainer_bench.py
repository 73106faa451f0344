"""Tokens/s of the Megatron-Core trainer (sec_nb.trainer) against a plain PyTorch loop training HF
LlamaForCausalLM of the same size on the same batches, and 2 processes data parallel against 1.

    python bench/trainer_bench.py [--preset tiny] [--steps 20] [--repeats 3] [--out bench/trainer_bench.md]
    python bench/trainer_bench.py --preset smol --steps 6 --repeats 3 --no-dp --out bench/trainer_bench_smol.md

Presets that train a model here use their `pretrain` spec; `smol` (pretrain: 0 steps) its `cpt` spec, on the
instruct model's shape (random weights: speed does not depend on them). Beside tokens/s, each configuration's
achieved GFLOP/s (Megatron's model-FLOP count, `sec_nb.cpt.megatron_flops_per_sample`) against this machine's
fp32 matmul peak, measured in the same run (torch.mm of 2048 x 2048 fp32, all threads, median of 20).

Each configuration runs `--repeats` times, interleaved (so machine noise hits all alike); a run's speed is the
median tokens/s of its steps after two warm-up steps; the table reports the median over runs."""
import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def make_data(d: Path, vocab: int):
    from sec_nb.trainer import write_indexed
    rng = np.random.default_rng(0)
    docs = [list(rng.integers(1, vocab, size=int(rng.integers(50, 400)))) + [0] for _ in range(2000)]
    write_indexed(d / "bench", docs, vocab_size=vocab)
    return d / "bench"


def job(cfg, spec, prefix, out):
    from sec_nb.launch import job_dict
    return job_dict(spec, cfg.model, [prefix], None, out, eod=0, log_every=0, resume=False)


def megatron_run(cfg, spec, prefix, out, nproc=1, threads=None):
    "tokens/s of sec_nb.trainer (median over steps 3..), as a subprocess (torchrun when nproc > 1)."
    out.mkdir(parents=True, exist_ok=True)
    jp = out / "job.json"
    jp.write_text(json.dumps(job(cfg, spec, prefix, out)))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(threads or max(1, os.cpu_count() // nproc))}
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"] if nproc > 1
           else [sys.executable]) + ["-m", "sec_nb.trainer", str(jp)]
    subprocess.run(cmd, check=True, env=env, capture_output=True)
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    return statistics.median(r["tokens_per_s"] for r in recs[2:]), [r["lm_loss"] for r in recs]


def hf_run(cfg, spec, prefix, out):
    "tokens/s of a plain loop: HF LlamaForCausalLM, torch AdamW, the same samples in the same order."
    code = f"""
import json, statistics, time, torch
from pathlib import Path
from sec_nb.config import load_preset
from sec_nb.convert import hf_config
from sec_nb.trainer import build_dataset, init_distributed
from transformers import LlamaForCausalLM
cfg = load_preset({cfg.name!r}); spec = cfg.{spec_name(cfg)}
torch.manual_seed(1234)
init_distributed()
ds = build_dataset([{str(prefix)!r}], None, {spec.steps} * spec.global_batch, cfg.model.seq_len, 0, cfg.model.vocab_size, 1234, {str(out / 'cache')!r})
model = LlamaForCausalLM(hf_config(cfg.model))
opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(0.9, 0.95), weight_decay=spec.weight_decay)
speeds, losses = [], []
if cfg.model.tie_embeddings: model.tie_weights()
for step in range({spec.steps}):
    t0 = time.time()
    items = [ds[step * spec.global_batch + j] for j in range(spec.global_batch)]
    x = torch.stack([i["tokens"] for i in items]); y = torch.stack([i["labels"] for i in items])
    logits = model(input_ids=x).logits
    loss = torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), y.view(-1))
    opt.zero_grad(); loss.backward(); opt.step()
    speeds.append(x.numel() / (time.time() - t0)); losses.append(loss.item())
print(json.dumps({{"tps": statistics.median(speeds[2:]), "losses": losses}}))
"""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": str(os.cpu_count())}
    r = subprocess.run([sys.executable, "-c", code], check=True, env=env, capture_output=True, text=True)
    res = json.loads(r.stdout.strip().splitlines()[-1])
    return res["tps"], res["losses"]


def spec_name(cfg) -> str: return "pretrain" if cfg.pretrain.steps else "cpt"


def bench_spec(cfg, steps: int, micro_batch: int = 0):
    """The preset with its benchmarked spec cut to `steps` steps (returned as the preset and the spec);
    `micro_batch` (0: the preset's) sets the trainer's micro-batch, the global batch staying the preset's."""
    name = spec_name(cfg)
    spec = dataclasses.replace(getattr(cfg, name), steps=steps, save_every=10_000, warmup_steps=2)
    if micro_batch: spec = dataclasses.replace(spec, micro_batch=micro_batch)
    return dataclasses.replace(cfg, **{name: spec}), spec


def matmul_peak_gflops(n: int = 2048, reps: int = 20) -> float:
    "fp32 GEMM GFLOP/s of this machine with all threads: the ceiling a training step could reach."
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3): a @ b
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter(); a @ b; ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(ts) / 1e9


BUSY = "while True: pass"      # one core's worth of other work


def under_load(a):
    """Processes x threads with one core busy elsewhere (a spinning process): the case `-p threads=auto` is for.
    Appends its table to the --out file."""
    from sec_nb.config import load_preset
    cfg, spec = bench_spec(load_preset(a.preset), a.steps)
    layouts = {"1 process x 2 threads (the fixed default)": (1, 2), "2 processes x 1 thread (auto when busy)": (2, 1),
               "1 process x 1 thread": (1, 1)}
    res = {k: [] for k in layouts}
    busy = subprocess.Popen([sys.executable, "-c", BUSY])
    try:
        with tempfile.TemporaryDirectory() as t:
            t = Path(t)
            prefix = make_data(t, cfg.model.vocab_size)
            for r in range(a.repeats):
                for k, (n, th) in layouts.items():
                    res[k].append(megatron_run(cfg, spec, prefix, t / f"{n}x{th}_{r}", nproc=n, threads=th)[0])
                print(r, {k: round(v[-1]) for k, v in res.items()}, flush=True)
    finally:
        busy.kill(); busy.wait()
    load = os.getloadavg()[0]
    base = statistics.median(res["1 process x 2 threads (the fixed default)"])
    lines = ["", "## Threads under load", "",
             f"`python bench/trainer_bench.py --under-load --preset {a.preset} --steps {a.steps} --repeats {a.repeats}`, "
             f"{time.strftime('%Y-%m-%d')}: the same runs with one core taken by a spinning process (and, this time, other "
             f"helpers' work on the shared machine: load average {load:.1f} on {os.cpu_count()} cores at the end). "
             "Median (min-max) tokens/s over interleaved rounds.", "",
             "| layout | tokens/s | vs the default |", "|---|---|---|"]
    for k, v in res.items():
        lines.append(f"| {k} | {statistics.median(v):,.0f} ({min(v):,.0f}-{max(v):,.0f}) | {statistics.median(v) / base:.2f}x |")
    lines += ["", "`-p threads=auto` (`sec_nb.launch.thread_choice`) picks one single-threaded data-parallel rank per core "
              "when the load average says other work holds more than half a core, and all cores as threads of one process "
              "otherwise; the default stays fixed (`threads=0`) so that reruns are byte-identical."]
    with open(a.out, "a") as f: f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--under-load", action="store_true", help="processes x threads with one core busy; appends to --out")
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-dp", action="store_true", help="skip the 2-process data-parallel runs")
    ap.add_argument("--micro-batch", type=int, default=0,
                    help="the trainer's micro-batch (0: the preset's); the plain loop always takes the whole batch in one pass")
    ap.add_argument("--also-micro-batch", type=int, default=0,
                    help="in the same rounds, the trainer once more with this micro-batch (e.g. the whole batch, as the loop)")
    ap.add_argument("--out", default=str(Path(__file__).with_suffix(".md")))
    a = ap.parse_args()
    if a.under_load: return under_load(a)
    from sec_nb.config import load_preset
    from sec_nb.cpt import megatron_flops_per_sample
    cfg, spec = bench_spec(load_preset(a.preset), a.steps, a.micro_batch)
    also = f"megatron_1proc_micro{a.also_micro_batch}"
    res = {"megatron_1proc": [], "hf_plain_loop": []} | ({} if a.no_dp else {"megatron_2proc_dp": []}) \
        | ({also: []} if a.also_micro_batch else {})
    peaks = []
    losses = {}
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        prefix = make_data(t, cfg.model.vocab_size)
        for r in range(a.repeats):
            peaks.append(matmul_peak_gflops())
            tps, losses["megatron"] = megatron_run(cfg, spec, prefix, t / f"m1_{r}")
            res["megatron_1proc"].append(tps)
            tps, losses["hf"] = hf_run(cfg, spec, prefix, t / f"hf_{r}")
            res["hf_plain_loop"].append(tps)
            if a.also_micro_batch:
                tps, losses[also] = megatron_run(cfg, dataclasses.replace(spec, micro_batch=a.also_micro_batch), prefix, t / f"mb_{r}")
                res[also].append(tps)
            if not a.no_dp:
                tps, losses["megatron_dp2"] = megatron_run(cfg, spec, prefix, t / f"m2_{r}", nproc=2)
                res["megatron_2proc_dp"].append(tps)
            print(r, {k: round(v[-1]) for k, v in res.items()}, flush=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    m = cfg.model
    peak, flops_tok = statistics.median(peaks), megatron_flops_per_sample(m) / m.seq_len
    lines = [
        "# Trainer benchmark: Megatron-Core trainer vs a plain PyTorch loop",
        "",
        f"Generated by `python bench/trainer_bench.py --preset {a.preset} --steps {a.steps} --repeats {a.repeats}"
        f"{' --no-dp' if a.no_dp else ''}{f' --micro-batch {a.micro_batch}' if a.micro_batch else ''}"
        f"{f' --also-micro-batch {a.also_micro_batch}' if a.also_micro_batch else ''}` "
        f"on {platform.machine()} with {os.cpu_count()} CPU cores, torch {torch.__version__}, fp32, "
        f"{time.strftime('%Y-%m-%d')}, load average {os.getloadavg()[0]:.1f} at the end. Rounds interleave the "
        "configurations, so machine noise hits all alike; treat differences under ~10% as noise.",
        "",
        f"Model: the `{a.preset}` preset's Llama ({m.n_layers} layers, hidden {m.hidden}, {m.n_heads} heads / "
        f"{m.n_kv_heads} KV heads, vocab {m.vocab_size}, seq {m.seq_len}; {m.n_params()/1e6:.2f}M parameters), "
        f"global batch {spec.global_batch} sequences (the trainer in micro-batches of {spec.micro_batch}, the plain loop "
        "in one pass). Same samples in the same order (GPTDataset, seed 1234). "
        "Per run: median tokens/s over steps 3..N; table: median (min-max) over runs. GFLOP/s: tokens/s x "
        f"{flops_tok / 1e9:.3f} GFLOP a token (Megatron's model FLOPs, forward and backward), against the fp32 matmul "
        f"peak measured in the same rounds: {peak:,.1f} GFLOP/s (median of {len(peaks)}, {min(peaks):,.1f}-{max(peaks):,.1f}).",
        "",
        "| configuration | tokens/s | runs | vs plain loop | GFLOP/s | of matmul peak |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in res.items():
        g = med[k] * flops_tok / 1e9
        lines.append(f"| {k} | {med[k]:,.0f} ({min(v):,.0f}-{max(v):,.0f}) | {len(v)} | {med[k] / med['hf_plain_loop']:.2f}x "
                     f"| {g:,.1f} | {g / peak:.0%} |")
    lines += ["", f"Megatron 1 process / plain loop: **{med['megatron_1proc'] / med['hf_plain_loop']:.2f}x** (target >= 0.95x)."]
    if a.also_micro_batch:
        lines += [f"With micro-batches of {a.also_micro_batch} (the loop's one pass): **{med[also] / med['hf_plain_loop']:.2f}x**."]
    if not a.no_dp:
        lines += [f"2 processes data parallel / 1 process: **{med['megatron_2proc_dp'] / med['megatron_1proc']:.2f}x** "
                  f"(2 processes share {os.cpu_count()} cores: each gets {max(1, os.cpu_count() // 2)} thread(s)).",
                  "", f"Last-step losses: megatron {losses['megatron'][-1]:.4f}, megatron 2-proc DP {losses['megatron_dp2'][-1]:.4f}, "
                  f"HF loop {losses['hf'][-1]:.4f} (different initialisations; the DP run should equal the 1-proc run)."]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
