"Relaunch: completions honoured; after a killed task a rerun runs only the missing tasks and gives the same output."
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sec_nb.data import run_sec_pipeline
from test_data import submission


def corpus(root, n=8):
    raw = root / "raw" / "8-K"
    raw.mkdir(parents=True)
    for i in range(n):
        acc = f"0000123456-24-{i:06d}"
        (raw / f"{acc}.txt").write_text(submission(acc, words=12))
    return root / "raw"


def digests(out: Path) -> dict:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in ("sec_train", "sec_heldout", "rejected") for p in sorted((out / d).rglob("*")) if p.is_file()}


KW = dict(tasks=4, workers=1, min_words=20)


def test_killed_run_resumes_missing_tasks_only(tmp_path):
    src = corpus(tmp_path)
    whole = tmp_path / "whole"
    run_sec_pipeline(str(src), str(whole), **KW)
    out = tmp_path / "killed"
    code = (f"from sec_nb.data import run_sec_pipeline; run_sec_pipeline({str(src)!r}, {str(out)!r}, **{KW!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONWARNINGS": "ignore"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    done = out / "scratch" / "logs" / "extract" / "completions"
    t0 = time.time()
    while not (done.is_dir() and any(done.iterdir())):          # kill it as soon as one extract task has finished
        assert proc.poll() is None and time.time() - t0 < 120, "the run ended before it could be killed"
        time.sleep(0.005)
    # the whole process group, as a lost node or the OOM killer ends a run: the extractor's sandbox process
    # would otherwise outlive its killed parent (it did, one orphan per test run)
    os.killpg(proc.pid, signal.SIGKILL); proc.wait()
    finished = sorted(p.name for p in done.iterdir())
    assert 1 <= len(finished) < 4, finished
    stamps = {p.name: p.stat().st_mtime_ns for p in done.iterdir()}
    acc = run_sec_pipeline(str(src), str(out), **KW)                    # the rerun
    assert acc["resumed"] and acc["read"] == acc["kept"]["docs"] + acc["rejected"]["docs"]
    # the tasks that had finished did not run again; the others did
    assert all((done / n).stat().st_mtime_ns == t for n, t in stamps.items())
    assert sorted(p.name for p in done.iterdir()) == ["00000", "00001", "00002", "00003"]
    assert digests(out) == digests(whole)
    # a third run with nothing left to do changes nothing
    assert run_sec_pipeline(str(src), str(out), **KW)["kept"] == acc["kept"] and digests(out) == digests(whole)


def test_other_code_starts_afresh(tmp_path, monkeypatch):
    "Completed tasks are resumed only for the same code: a rerun after a change of the package reruns every task "
    "(the tallies of an older writer once failed the accounting of a resumed run)."
    import sec_nb.run
    src = corpus(tmp_path)
    out = tmp_path / "out"
    run_sec_pipeline(str(src), str(out), **KW)
    assert run_sec_pipeline(str(src), str(out), **KW)["resumed"]
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "scratch" / "logs" / "extract" / "completions").iterdir()}
    monkeypatch.setattr(sec_nb.run, "package_hash", lambda: "other code")
    acc = run_sec_pipeline(str(src), str(out), **KW)
    assert not acc["resumed"] and acc["read"] == acc["kept"]["docs"] + acc["rejected"]["docs"]
    now = {p.name: p.stat().st_mtime_ns for p in (out / "scratch" / "logs" / "extract" / "completions").iterdir()}
    assert now.keys() == stamps.keys() and all(now[n] != t for n, t in stamps.items())


def test_rerun_refuses_while_a_run_is_going(tmp_path):
    src = corpus(tmp_path, n=2)
    out = tmp_path / "out"
    run_sec_pipeline(str(src), str(out), tasks=1, workers=1, min_words=20)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / "scratch" / "lock").write_text(str(sleeper.pid))          # as if that process were running the stage
        with pytest.raises(RuntimeError, match=f"running in process {sleeper.pid}"):
            run_sec_pipeline(str(src), str(out), tasks=2, workers=1, min_words=20)   # other settings: would clear
        assert (out / "sec_train").exists()
    finally:
        sleeper.kill(); sleeper.wait()
    acc = run_sec_pipeline(str(src), str(out), tasks=2, workers=1, min_words=20)  # a dead process holds nothing
    assert not acc["resumed"] and acc["kept"]["docs"] > 0


def test_slurm_killed_run_resumes_missing_tasks_only(slurm_cluster, tmp_path):
    "On the single-node SLURM: jobs cancelled after the first extract task; the rerun submits only what is missing."
    import json
    from sec_nb.data import slurm_job_state
    src = corpus(tmp_path, n=4)
    kw = dict(tasks=2, workers=1, min_words=20, bands=2)        # 2 bucket tasks, not 14 jobs one after another
    whole = tmp_path / "whole"
    run_sec_pipeline(str(src), str(whole), **kw)                            # local, uninterrupted
    out = tmp_path / "killed"
    slurm = {"logs": str(tmp_path / "slurm_logs")}
    code = (f"from sec_nb.data import run_sec_pipeline; run_sec_pipeline({str(src)!r}, {str(out)!r}, "
            f"executor='slurm', slurm={slurm!r}, **{kw!r})")
    proc = subprocess.Popen([sys.executable, "-c", code], env={**os.environ, "PYTHONWARNINGS": "ignore"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done = out / "scratch" / "logs" / "extract" / "completions"
    jobs_file = out / "scratch" / "slurm_jobs.json"
    t0 = time.time()
    while not (done.is_dir() and any(done.iterdir()) and jobs_file.exists()):
        assert time.time() - t0 < 300, "the first SLURM task did not finish"
        time.sleep(0.05)
    jobs = json.loads(jobs_file.read_text())
    subprocess.run(["scancel", *[str(j) for j in jobs.values() if j not in (None, -1)]], check=True)
    proc.kill(); proc.wait()
    while any(slurm_job_state(j) for j in jobs.values() if j not in (None, -1)): time.sleep(0.1)
    finished = sorted(p.name for p in done.iterdir())
    assert finished == ["00000"], finished
    stamp = (done / "00000").stat().st_mtime_ns
    acc = run_sec_pipeline(str(src), str(out), executor="slurm", slurm=slurm, **kw)
    assert acc["resumed"] and acc["read"] == acc["kept"]["docs"] + acc["rejected"]["docs"]
    assert (done / "00000").stat().st_mtime_ns == stamp and sorted(p.name for p in done.iterdir()) == ["00000", "00001"]
    ranks = json.loads((out / "scratch" / "logs" / "extract" / "ranks_to_run.json").read_text())
    assert ranks == [1]                                                    # only the missing task was submitted
    assert digests(out) == digests(whole)
