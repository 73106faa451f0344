"""Tensor and pipeline parallelism on CPU (gloo): the losses of one process, and checkpoints that reshard.

Micro CPT (2 layers, hidden 64, 4 heads on 2 kv heads) for 4 steps: TP2, PP2 and TP2 x PP2 (4 processes) against
one process, relative difference <= 1e-5 (the layouts change only the order of fp32 sums). A checkpoint saved at
TP2 x PP2 resumes at TP1 x PP1, and one saved at TP1 x PP1 resumes at TP2 x PP2, with the next losses of the
uninterrupted run."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sec_nb.config import load_preset

MICRO = load_preset("micro")
STEPS = 4
REL = 1e-5


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from sec_nb.trainer import write_indexed
    d = tmp_path_factory.mktemp("par")
    # a "counting" language (each token predicts the next), so that 4 steps visibly lower the loss
    write_indexed(d / "a", ([(s0 + 3 * i) % 400 + 1 for i in range(100)] + [0] for s0 in range(120)), vocab_size=512)
    # CPT starts from a model: a random HF Llama of the micro shape, converted once; every layout loads it
    import torch
    from transformers import LlamaForCausalLM
    from sec_nb.convert import hf_config
    from sec_nb.trainer import hf_to_checkpoint
    torch.manual_seed(0)
    LlamaForCausalLM(hf_config(MICRO.model)).save_pretrained(d / "hf")
    hf_to_checkpoint(d / "hf", MICRO.model, d / "init")
    return d


def _run(data, out, nproc, tp=1, pp=1, steps=STEPS, **spec):
    "One training job under torchrun (gloo); returns {iteration: loss}."
    from sec_nb.launch import job_dict, torchrun_cmd
    from sec_nb.trainer import Parallel
    s = dataclasses.replace(MICRO.cpt, steps=steps, warmup_steps=1, save_every=2, lr=1e-2, **spec)
    job = job_dict(s, MICRO.model, [data / "a"], None, out, eod=0, log_every=0, parallel=Parallel(tp=tp, pp=pp),
                   init_checkpoint=data / "init")
    path = Path(str(out) + f".tp{tp}pp{pp}.json")
    path.write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    r = subprocess.run(torchrun_cmd(nproc, path), capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return {x["iteration"]: x["lm_loss"] for x in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


def _close(a: dict, b: dict, keys):
    return all(abs(a[k] - b[k]) <= REL * abs(a[k]) for k in keys)


@pytest.fixture(scope="module")
def reference(runs):
    return _run(runs, runs / "ref", 1)


@pytest.mark.parametrize("tp,pp", [(2, 1), (1, 2)])
def test_two_way_model_parallel_equals_one_process(runs, reference, tp, pp):
    got = _run(runs, runs / f"tp{tp}pp{pp}", 2, tp, pp)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert _close(reference, got, got), (reference, got)
    assert reference[STEPS] < reference[1]                      # it trained


def _resume_copy(src: Path, dst: Path, it: int):
    "A copy of run `src` as it was right after its checkpoint at `it`."
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("data_cache"))
    for d in (dst / "checkpoints").glob("iter_*"):
        if int(d.name[5:]) > it: shutil.rmtree(d)
    (dst / "checkpoints" / "latest").write_text(f"iter_{it:07d}")


def test_tp2_pp2_and_resharded_resume(runs, reference):
    got = _run(runs, runs / "tp2pp2", 4, 2, 2)
    assert _close(reference, got, range(1, STEPS + 1)), (reference, got)
    # saved at TP2 x PP2, resumed at TP1 x PP1
    _resume_copy(runs / "tp2pp2", runs / "to_tp1", 2)
    down = _run(runs, runs / "to_tp1", 1)
    assert _close(reference, down, range(3, STEPS + 1)), (reference, down)
    # and the reverse: saved by the one-process run, resumed at TP2 x PP2
    _resume_copy(runs / "ref", runs / "to_tp2pp2", 2)
    up = _run(runs, runs / "to_tp2pp2", 4, 2, 2)
    assert _close(reference, up, range(3, STEPS + 1)), (reference, up)


def test_local_spec_refuses_what_needs_transformer_engine():
    "Sequence/context parallelism and FP8 with the local layer spec: a clear error before any model is built."
    from sec_nb.trainer import Parallel, check_parallel, use_te
    assert use_te("auto") is False                       # no CUDA here: the local spec
    with pytest.raises(RuntimeError, match="needs CUDA and transformer_engine"):
        use_te("te")
    for p, what in ((Parallel(tp=2, sp=True), "sequence parallelism"), (Parallel(cp=2), "context parallelism"),
                    (Parallel(fp8="hybrid"), "FP8")):
        with pytest.raises(ValueError, match=f"{what}.*Transformer-Engine layer spec"):
            check_parallel(p, te=False)
        check_parallel(p, te=True)                       # the TE spec takes them
    check_parallel(Parallel(tp=2, sp=False, recompute="selective"), te=False)
    with pytest.raises(ValueError, match="virtual pipeline"):
        check_parallel(Parallel(vp=2), te=False)


def test_preset_switches_reach_the_trainer():
    "recompute, FP8, virtual pipeline, context parallel: from the preset's cluster section to the trainer's flags."
    from sec_nb.launch import parallel_of, sbatch_script
    p = load_preset("llama3-70b", {"cluster.recompute": "selective", "cluster.fp8": "hybrid"})
    par = parallel_of(p.cluster)
    assert (par.tp, par.pp, par.cp, par.vp, par.sp, par.recompute, par.fp8) == (4, 4, 2, 5, True, "selective", "hybrid")
    gpus = p.cluster.nodes * p.cluster.gpus_per_node
    assert gpus == 32 and gpus // (par.tp * par.pp) == 2    # distributed optimizer shards over DP x CP = 2 ranks
    assert p.model.n_layers % (par.pp * par.vp) == 0
    s = sbatch_script(p.cluster, "job.json", "w")
    assert "--tp 4 --pp 4 --cp 2 --vp 5" in s and "--recompute selective" in s and "--fp8 hybrid" in s and "--sp" in s
