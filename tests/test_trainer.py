"""The Megatron-Core trainer: exact resume after a real kill, async saves, the blend weights, SLURM submission, the tokenizer."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sec_nb.config import load_preset

MICRO = load_preset("micro")


def _docs(n, lo, seed):
    rng = np.random.default_rng(seed)
    for _ in range(n):
        yield list(rng.integers(lo, lo + 100, size=int(rng.integers(20, 200)))) + [0]   # 0 = EOD


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    "Two small indexed datasets with disjoint token ranges: a (ids 1-100) and b (ids 300-400)."
    from sec_nb.trainer import write_indexed
    d = tmp_path_factory.mktemp("idx")
    write_indexed(d / "a", _docs(200, 1, 0), vocab_size=512)
    write_indexed(d / "b", _docs(200, 300, 1), vocab_size=512)
    return d


def _job(data, out, steps=12, save_every=4, **spec):
    from sec_nb.launch import job_dict
    spec = dataclasses.replace(MICRO.pretrain, steps=steps, save_every=save_every, warmup_steps=2, **spec)
    job = job_dict(spec, MICRO.model, [data / "a", data / "b"], [70, 1], out, eod=0, log_every=0)
    path = Path(str(out) + ".json")
    path.write_text(json.dumps(job))
    return path


def _losses(out):
    return {r["iteration"]: r["lm_loss"] for r in map(json.loads, (Path(out) / "metrics.jsonl").read_text().splitlines())}


def _start(job):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "sec_nb.trainer", str(job)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_resume_after_kill_equals_uninterrupted(data, tmp_path):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    p_ref = _start(_job(data, ref))
    p = _start(_job(data, killed))
    metrics = killed / "metrics.jsonl"
    t0 = time.time()
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 6):   # past the checkpoint at 4
        assert p.poll() is None, p.stdout.read()
        assert time.time() - t0 < 90, "the run did not reach step 6"
        time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert (killed / "checkpoints" / "latest").read_text() == "iter_0000004"
    assert max(_losses(killed)) < 12
    out, _ = _start(_job(data, killed)).communicate(timeout=120)    # the rerun resumes at step 4
    assert '"start": 4' in out, out
    out_ref, _ = p_ref.communicate(timeout=120)
    assert p_ref.returncode == 0, out_ref
    a, b = _losses(ref), _losses(killed)
    assert sorted(b) == list(range(1, 13))
    assert all(a[i] == b[i] for i in range(1, 13)), (a, b)   # bit-equal losses after the resume
    assert a[12] < a[1]


HOLD_SCRIPT = r"""
import os, sys, time
import megatron.core.dist_checkpointing.strategies.filesystem_async as fa
job, hold, go = sys.argv[1:4]
write = fa.FileSystemWriterAsync.write_preloaded_data
def held(transform_list, local_proc_idx, write_bucket, *a, **k):
    # the files of checkpoint `hold` are written only once the file `go` exists (at most 300 s later)
    t0 = time.time()
    while hold in write_bucket[0] and not os.path.exists(go) and time.time() - t0 < 300: time.sleep(0.05)
    return write(transform_list, local_proc_idx, write_bucket, *a, **k)
fa.FileSystemWriterAsync.write_preloaded_data = staticmethod(held)
from sec_nb.launch import main
main([job])
"""


def test_async_save_trains_on_and_writes_the_same_checkpoint(data, tmp_path):
    """`async_save`: the checkpoint of step 8 is held back in its writer while steps 9 and 10 run; until it is written
    `latest` names step 4's and keep=1 prunes nothing; then the losses, and the last checkpoint's files byte for byte,
    are those of the synchronous run, and the run has waited for its last save before it exited."""
    ref, run, go = tmp_path / "ref", tmp_path / "async", tmp_path / "go"
    p_ref = _start(_job(data, ref, keep_checkpoints=1))
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen([sys.executable, "-c", HOLD_SCRIPT, str(_job(data, run, keep_checkpoints=1, async_save=True)),
                          "iter_0000008", str(go)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics, ck = run / "metrics.jsonl", run / "checkpoints"
    t0 = time.time()
    try:
        while not (metrics.exists() and len(metrics.read_text().splitlines()) >= 10):
            assert p.poll() is None, p.stdout.read()
            assert time.time() - t0 < 180, "training did not go on past step 8 while its checkpoint was being written"
            time.sleep(0.05)
        assert (ck / "latest").read_text() == "iter_0000004"                # never the checkpoint in flight
        assert (ck / "iter_0000004" / "metadata.json").exists()             # not pruned before 8 is complete
        assert (ck / "iter_0000008").is_dir() and not (ck / "iter_0000008" / "metadata.json").exists()
        go.touch()
        out, _ = p.communicate(timeout=180)
        out_ref, _ = p_ref.communicate(timeout=180)
    finally:
        for q in (p, p_ref):
            if q.poll() is None: q.kill(); q.wait()
    assert p.returncode == 0 and p_ref.returncode == 0, out + out_ref
    assert json.loads(out.strip().splitlines()[-1])["iteration"] == 12
    assert _losses(run) == _losses(ref) and sorted(_losses(run)) == list(range(1, 13))
    assert sorted(d.name for d in ck.glob("iter_*")) == ["iter_0000012"] and (ck / "latest").read_text() == "iter_0000012"
    files = sorted(f.name for f in (ref / "checkpoints" / "iter_0000012").iterdir())
    assert files == sorted(f.name for f in (ck / "iter_0000012").iterdir()) and "metadata.json" in files
    for f in files: assert (ref / "checkpoints" / "iter_0000012" / f).read_bytes() == (ck / "iter_0000012" / f).read_bytes(), f


def test_blend_follows_weights(data, tmp_path):
    from sec_nb.trainer import build_dataset, init_distributed
    init_distributed()   # a one-process group, as in a notebook
    ds = build_dataset([data / "a", data / "b"], [70, 1], 3550, 64, 0, 512, 1234, tmp_path / "cache")
    from_b = np.mean([int(ds[i]["tokens"].max()) >= 300 for i in range(len(ds))])
    assert abs(from_b - 1 / 71) < 0.003, from_b
    counts = np.bincount(ds.dataset_index, minlength=2)
    assert abs(counts[0] / counts[1] - 70) < 1.5, counts


def test_slurm_two_task_job(data, tmp_path, slurm_cluster):
    "A real sbatch job: 2 tasks of the micro preset (srun + torchrun, gloo), submitted, waited for, picked up again."
    from sec_nb.config import ClusterSpec
    from sec_nb.launch import job_dict, launch
    cluster = ClusterSpec(launcher="slurm", nodes=1, procs_per_node=2, time_limit="00:20:00")
    spec = dataclasses.replace(MICRO.pretrain, steps=4, save_every=4)
    job = job_dict(spec, MICRO.model, [data / "a", data / "b"], [70, 1], tmp_path / "run", eod=0, log_every=0)
    r = launch(job, cluster)
    assert r["state"] == "COMPLETED" and r["iteration"] == 4 and r["checkpoint"].endswith("iter_0000004"), r
    script = (tmp_path / "run" / "train.sbatch").read_text()
    assert "--cpus-per-task=2" in script and "--nproc_per_node=2" in script and "MASTER_ADDR=" in script
    assert "--requeue" in script and "--signal=B:USR1@600" in script
    log = next((tmp_path / "run").glob("slurm-*.out")).read_text()
    assert '"iteration": 4' in log
    again = launch(job, cluster)          # a rerun picks up the recorded job instead of submitting another
    assert again["job_id"] == r["job_id"] and again["losses"] == r["losses"]


def test_tokenizer_round_trip_and_masks(tmp_path):
    from transformers import AutoTokenizer
    from sec_nb.tokens import encode_instruct, train_tokenizer
    texts = ["Item 7. Management's Discussion and Analysis of Financial Condition.", "Net income was $4.2 million."] * 40
    train_tokenizer(texts, 320, tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    for t in texts[:2] + ["unseen: ünïcödé 10-K ✓"]:
        assert tok.decode(tok(t, add_special_tokens=False)["input_ids"]) == t
    assert (tok.eos_token, tok.pad_token, len(tok)) == ("<|end_of_text|>", "<|pad|>", 320)
    ids, mask = encode_instruct(tok, "Define EBITDA.", "Earnings before interest.")
    assert ids[-1] == tok.eos_token_id and mask[0] == 0 and mask[-2] == 1
    assert tok.decode([i for i, m in zip(ids, mask) if m]) == "Earnings before interest.<|eot_id|>"
    assert tok.decode([i for i, m in zip(ids, mask) if not m]).startswith("<|begin_of_text|><|start_header_id|>user")


def test_prompt_mask_reaches_the_loss_mask(tmp_path):
    "MaskedGPTDataset multiplies GPTDataset's loss mask by the `_mask` companion, window for window."
    from sec_nb.trainer import build_dataset, init_distributed, write_indexed
    init_distributed()
    docs = [[5] * 10 + [7] * 10 + [0] for _ in range(50)]             # prompt 5s, response 7s, EOD
    masks = [[0] * 10 + [1] * 10 + [0] for _ in range(50)]
    write_indexed(tmp_path / "sft", docs, vocab_size=512)
    write_indexed(tmp_path / "sft_mask", masks, dtype=np.uint8)
    ds = build_dataset([tmp_path / "sft"], None, 20, 32, 0, 512, 1, tmp_path / "cache")
    for i in range(len(ds)):
        s = ds[i]
        assert bool(((s["labels"] == 7) == (s["loss_mask"] == 1)).all()), s


def test_launch_resumes_only_the_job_it_recorded(data, tmp_path):
    "The same job resumes (here: nothing left to do); new tokens under the same folder start from step 0."
    from sec_nb.launch import job_dict, launch
    from sec_nb.trainer import write_indexed
    cluster = dataclasses.replace(MICRO.cluster, launcher="inprocess")
    spec = dataclasses.replace(MICRO.pretrain, steps=3, save_every=3, warmup_steps=1)
    job = lambda prefixes: job_dict(spec, MICRO.model, prefixes, None, tmp_path / "run", eod=0, log_every=0)
    assert launch(job([data / "a"]), cluster)["start"] == 0
    assert launch(job([data / "a"]), cluster)["start"] == 3
    write_indexed(tmp_path / "c", _docs(200, 1, 7), vocab_size=512)        # other tokens
    rerun = launch(job([tmp_path / "c"]), cluster)
    assert rerun["start"] == 0 and rerun["iteration"] == 3
    assert (tmp_path / "run" / "previous" / "1" / "checkpoints" / "iter_0000003").is_dir()   # moved aside, not deleted


def test_documents_end_in_end_of_text_with_an_instruct_eos(tmp_path):
    "Meta's Llama-3 Instruct tokenizer has eos <|eot_id|>; CPT documents must still be separated by <|end_of_text|>."
    from transformers import AutoTokenizer
    from sec_nb.tokens import encode_instruct, encode_texts, end_of_text_id, train_tokenizer
    train_tokenizer(["Net income rose."] * 20, 300, tmp_path / "tok")
    tok = AutoTokenizer.from_pretrained(tmp_path / "tok")
    tok.eos_token = "<|eot_id|>"                                           # as Meta's Instruct tokenizer_config has it
    eot, end = tok.convert_tokens_to_ids("<|eot_id|>"), tok.convert_tokens_to_ids("<|end_of_text|>")
    assert tok.eos_token_id == eot != end and end_of_text_id(tok) == end
    assert all(ids[-1] == end for ids in encode_texts(tok, ["Net income rose.", "Revenue fell."]))
    ids, _ = encode_instruct(tok, "Q?", "A.")
    assert ids[-2:] == [eot, end]                                           # the turn ends, then the document


def test_thread_choice():
    "threads=0 keeps the preset (and records nothing that varies); n threads; auto uses every core one way or another."
    import torch
    from sec_nb.launch import thread_choice
    cpu, gpu = MICRO.cluster, load_preset("small").cluster
    assert thread_choice(0, cpu) == (cpu, {"requested": 0, "procs": 1, "threads": None})
    n0 = torch.get_num_threads()
    try:
        c, r = thread_choice(1, cpu)
        assert c == cpu and r["threads"] == 1 and torch.get_num_threads() == 1
        c, r = thread_choice("auto", cpu)
        assert r["procs"] * r["threads"] == r["cores"] and "load_avg_1min" in r
        assert c.launcher == ("torchrun" if r["procs"] > 1 else "inprocess") and c.procs_per_node == r["procs"]
        assert thread_choice("auto", gpu)[0] == gpu
    finally:
        torch.set_num_threads(n0); os.environ.pop("OMP_NUM_THREADS", None)


def test_job_file_holds_relative_paths(tmp_path):
    "job.json names its data, output and start checkpoint relative to its folder: a moved run dir reads the same job."
    import shutil
    from sec_nb.launch import job_dict, job_from_file, job_to_file
    run = tmp_path / "a"
    job = job_dict(MICRO.cpt, MICRO.model, [run / "tokens" / "x"], None, run / "cpt", eod=0,
                   init_checkpoint=str(run / "models" / "ck"))
    (run / "cpt").mkdir(parents=True)
    (run / "cpt" / "job.json").write_text(json.dumps(job_to_file(job, run / "cpt")))
    assert str(tmp_path) not in (run / "cpt" / "job.json").read_text()
    assert job_from_file(run / "cpt" / "job.json") == job
    shutil.move(run, tmp_path / "b")
    moved = job_from_file(tmp_path / "b" / "cpt" / "job.json")
    assert moved["out_dir"] == str(tmp_path / "b" / "cpt") and moved["init_checkpoint"] == str(tmp_path / "b" / "models" / "ck")
