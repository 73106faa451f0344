"""The SLURM lifecycle on the real single-node SLURM: a job sent USR1 (what --signal=B:USR1@600 sends before the
time limit) saves and stops; the job requeues itself and continues to the losses of an uninterrupted run; a job
that stopped early without requeue is not a success; states come from sacct where accounting is on."""
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sec_nb.config import ClusterSpec, load_preset

MICRO = load_preset("micro")
STEPS = 150          # long enough (about 10 s here) that the signal lands mid-run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from sec_nb.trainer import write_indexed
    d = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    write_indexed(d / "a", ([*rng.integers(1, 400, size=int(rng.integers(20, 200))), 0] for _ in range(300)), vocab_size=512)
    return d


def _job(data, out):
    from sec_nb.launch import job_dict
    spec = dataclasses.replace(MICRO.pretrain, steps=STEPS, save_every=0, warmup_steps=2)
    return job_dict(spec, MICRO.model, [data / "a"], None, out, eod=0, log_every=0)


def _losses(out):
    return [json.loads(l)["lm_loss"] for l in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def _reference(data, tmp_path):
    """The uninterrupted run, as the batch job runs it: one process, one thread. Started in the background (it
    runs beside the SLURM job, on the other core); `.result()` waits for it and gives its losses."""
    job = _job(data, tmp_path / "ref")
    (tmp_path / "ref.json").write_text(json.dumps(job))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    log = tmp_path / "ref.log"
    with open(log, "w") as f:
        p = subprocess.Popen([sys.executable, "-m", "sec_nb.trainer", str(tmp_path / "ref.json")], env=env,
                             stdout=f, stderr=subprocess.STDOUT)
    class Ref:
        def result(self):
            assert p.wait(timeout=300) == 0, log.read_text()[-3000:]
            return _losses(tmp_path / "ref")
    return Ref()


def _signal_when_running(job_id, out, min_steps=3, timeout=180):
    "Wait for the run to log `min_steps` steps, then send USR1 to the batch shell, as SLURM does before the limit."
    metrics, t0 = out / "metrics.jsonl", time.time()
    while not (metrics.exists() and len(metrics.read_text().splitlines()) >= min_steps):
        assert time.time() - t0 < timeout, "the job did not start training"
        time.sleep(0.2)
    subprocess.run(["scancel", "--batch", "--signal=USR1", str(job_id)], check=True)


def test_usr1_saves_and_the_requeued_job_continues(data, tmp_path, slurm_cluster):
    from sec_nb.launch import launch, slurm_launch
    ref = _reference(data, tmp_path)
    cluster = ClusterSpec(launcher="slurm", procs_per_node=1, time_limit="00:30:00", requeue=True)
    out = tmp_path / "run"
    first = launch(_job(data, out), cluster, wait=False)
    _signal_when_running(first["job_id"], out)
    # SLURM starts a requeued batch job again after its credential expiry: the real delay (15 s on the test SLURM,
    # AuthInfo=cred_expire in tests/infra/slurm_up.sh; 120 s by default)
    r = slurm_launch(out / "job.json", cluster, out)
    assert r["state"] == "COMPLETED" and r["iteration"] == STEPS and r["job_id"] == first["job_id"], r
    log = (out / f"slurm-{r['job_id']}.out").read_text()
    assert "USR1: save and exit" in log and "stop requested: saving at iteration" in log and "requeue" in log, log
    stopped_at = int(log.split("stop requested: saving at iteration ")[1].split()[0])
    assert 3 <= stopped_at < STEPS and f'"start": {stopped_at}' in log        # the requeued job resumed there
    assert _losses(out) == ref.result()                                        # bit-equal to the uninterrupted run
    assert log.count("USR1: save and exit") == 1 and log.count(f"job {r['job_id']} start") == 2


def test_signal_must_come_before_the_limit():
    from sec_nb.launch import sbatch_script, slurm_seconds
    assert [slurm_seconds(t) for t in ("10", "10:30", "01:00:00", "1-00:00:00", "2-12")] == [600, 630, 3600, 86400, 216000]
    with pytest.raises(ValueError, match="signal_s=600 s is not shorter than time_limit 00:10:00"):
        sbatch_script(ClusterSpec(launcher="slurm", time_limit="00:10:00"), "job.json", "w")


def test_stopped_without_requeue_is_not_success(data, tmp_path, slurm_cluster):
    "COMPLETED is not enough: the run must have reached its last step. A rerun resubmits and resumes."
    from sec_nb.launch import launch
    cluster = ClusterSpec(launcher="slurm", procs_per_node=1, time_limit="00:30:00", requeue=False)
    out, job = tmp_path / "run", _job(data, tmp_path / "run")
    first = launch(job, cluster, wait=False)
    assert "#SBATCH --no-requeue" in (out / "train.sbatch").read_text()
    _signal_when_running(first["job_id"], out)
    with pytest.raises(RuntimeError, match=r"ended COMPLETED .* at iteration \d+ of 150: not a finished run"):
        launch(job, cluster)
    done = launch(job, cluster)                                              # resubmitted, resumed, finished
    assert done["job_id"] != first["job_id"] and done["state"] == "COMPLETED" and done["iteration"] == STEPS


def test_states_that_are_not_success():
    from sec_nb.launch import SLURM_ACTIVE, SLURM_FAILED, parse_sacct_state
    assert parse_sacct_state("CANCELLED by 0\n") == "CANCELLED" and parse_sacct_state("") is None
    assert parse_sacct_state("REQUEUED\nRUNNING\n") == "RUNNING"
    for s in ("PREEMPTED", "BOOT_FAIL", "DEADLINE", "UNKNOWN", "NODE_FAIL", "OUT_OF_MEMORY", "TIMEOUT"):
        assert s in SLURM_FAILED and s not in SLURM_ACTIVE
    assert "REQUEUED" in SLURM_ACTIVE and "COMPLETED" not in SLURM_ACTIVE | SLURM_FAILED


@pytest.mark.parametrize("async_save", [False, True], ids=["sync", "async"])
def test_time_based_checkpoints_keep_the_last_k(data, tmp_path, async_save):
    "A save at every step (by the clock), the newest 2 kept; the same with async saves, in this process."
    from sec_nb.launch import job_dict, launch
    spec = dataclasses.replace(MICRO.pretrain, steps=5, save_every=0, save_minutes=1e-6, keep_checkpoints=2, warmup_steps=1,
                               async_save=async_save)
    job = job_dict(spec, MICRO.model, [data / "a"], None, tmp_path / "run", eod=0, log_every=0)
    launch(job, dataclasses.replace(MICRO.cluster, launcher="inprocess"))
    ck = tmp_path / "run" / "checkpoints"
    assert sorted(d.name for d in ck.glob("iter_*")) == ["iter_0000004", "iter_0000005"]
    assert (ck / "latest").read_text() == "iter_0000005"
    assert str(tmp_path).encode() not in (ck / "iter_0000005" / ".metadata").read_bytes()    # no absolute path
    # a changed job moves the old run aside instead of deleting it
    job2 = job_dict(dataclasses.replace(spec, steps=2), MICRO.model, [data / "a"], None, tmp_path / "run", eod=0, log_every=0)
    launch(job2, dataclasses.replace(MICRO.cluster, launcher="inprocess"))
    assert (tmp_path / "run" / "previous" / "1" / "checkpoints" / "iter_0000005").is_dir()
    assert (tmp_path / "run" / "checkpoints" / "latest").read_text() == "iter_0000002"
