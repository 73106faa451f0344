"""Byte-identical reruns: the micro run of test_pipeline.py (the shared `micro_run` fixture, data from the mirror)
is rerun by `sec-nb run --verify` from an empty folder on a machine without a mirror (data fetched from the
local origins by test_fetch_origin.py), and every file of the two runs is compared by sha256."""
import json
import re
import subprocess
from pathlib import Path

import pytest

from conftest import SEC_NB, no_mirror_env, write_stage_nb
from sec_nb import repro
from sec_nb.run import DIGEST_EXCLUDED, DIGEST_TIMING_FIELDS, digest_differences, output_digest, tree_digest

# What two runs of one commit may differ in, and nothing else: timings, logs, caches and the executed notebooks.
EXCLUSIONS = {
    "*/stage.json", "*/stage.tmp",     # the stage records: seconds, start time, library versions
    "notebooks/*",                     # executed notebooks
    "report.html",                     # their HTML rendering
    "report/stage_times.csv",          # seconds per stage
    "eval/timings.json",               # seconds per model and suite
    "merge/timings.json",              # seconds per merge
    "seeds/*",                         # seed runs: runs of their own
    "data/scratch/logs/*", "data/scratch/run.json",   # datatrove's task logs and stats (times), relaunch record
    "*/data_cache/*",                  # Megatron's index cache: file names hash the dataset's absolute path
}
TIMING_FIELDS = {"*metrics.jsonl": ("tokens_per_s",)}   # per-step throughput in the training logs


def test_exclusions_are_only_timings():
    assert set(DIGEST_EXCLUDED) == EXCLUSIONS and DIGEST_TIMING_FIELDS == TIMING_FIELDS


@pytest.fixture(scope="module")
def verified(micro_run, origin_fetch, origin_server):
    """A second micro run from an empty folder, through `sec-nb run --verify --all-stages --keep`, with no mirror
    and the data fetched from the origins."""
    run_dir, _, _ = micro_run
    cache, fetched = origin_fetch
    assert fetched.returncode == 0, fetched.stderr[-3000:]
    res = subprocess.run([SEC_NB, "run", "--verify", "--all-stages", "--keep", "--run-dir", str(run_dir), "--no-progress"],
                         capture_output=True, text=True, timeout=1500, env=no_mirror_env(cache, origin_server[0]))
    m = re.search(r"verify: the rerun is in (\S+)", res.stdout)
    assert m, res.stdout + res.stderr
    return run_dir, res, m.group(1)


def test_two_micro_runs_are_byte_identical(verified):
    first, res, second = verified
    a, b = tree_digest(first), tree_digest(second)
    diffs = digest_differences(a, b)
    by_stage = {}
    for d in diffs: by_stage.setdefault(d.split("/")[0], []).append(d)
    assert not diffs, (f"{len(diffs)} of {len(a)} files differ between two micro runs:\n"
                       + "\n".join(f"[{s}] " + "\n    ".join(v) for s, v in by_stage.items()))
    assert len(a) > 100 and any(k.startswith("cpt/") for k in a) and any(k.startswith("eval/") for k in a)


def test_micro_runs_without_a_mirror(verified):
    "The second run read its data from the origins' copies: no mirror was set, and every stage ran."
    _, res, second = verified
    assert "SEC_NB_MIRROR" not in no_mirror_env("c", "b")
    recs = [json.loads(p.read_text()) for p in sorted(Path(second).glob("*/stage.json"))]
    assert len(recs) >= 7 and all(r["status"] == "ok" for r in recs)


def test_verify_reports_identical_stages(verified):
    _, res, _ = verified
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
    assert "reran byte for byte" in res.stdout


def test_recorded_digests_match_the_files(micro_run):
    run_dir, _, _ = micro_run
    for p in sorted(run_dir.glob("*/stage.json")):
        rec = json.loads(p.read_text())
        assert rec["digest"] == output_digest(run_dir, p.parent.name), p.parent.name


def test_verify_names_the_first_stage_that_differs(stage_nbs, tmp_path, monkeypatch, capsys):
    "On throwaway stages: `sec-nb run --verify` exits 1 and names the stage that writes the time."
    import sec_nb.run as r
    write_stage_nb(stage_nbs / "02_use.ipynb", "import time\nfrom pathlib import Path\n"
                   "p = Path(run_dir) / 'use'; p.mkdir(exist_ok=True); (p / 'when.txt').write_text(str(time.time_ns()))")
    monkeypatch.setattr(r, "project_root", lambda: stage_nbs.parent)
    monkeypatch.setattr(repro, "project_root", lambda: stage_nbs.parent)
    rd = tmp_path / "run"
    assert r.main(["run", "--preset", "micro", "--run-dir", str(rd), "--no-progress"]) == 0
    capsys.readouterr()
    assert r.main(["run", "--verify", "--run-dir", str(rd), "--no-progress"]) == 1
    text = capsys.readouterr().out
    assert "01_make: identical (1 files)" in text and "02_use: 1 files differ:\n  use/when.txt: differs" in text
    assert "verify: use is the first stage whose outputs differ" in text and "03_log" not in text


def test_verify_refuses_a_run_of_other_code(stage_nbs, tmp_path):
    rd = tmp_path / "run"
    from sec_nb.run import run_pipeline
    run_pipeline("micro", rd, nbs_dir=stage_nbs, progress=False, html=False, log=lambda l: None)
    write_stage_nb(stage_nbs / "03_log.ipynb", "pass  # changed")
    lines = []
    assert repro.verify_run(rd, nbs_dir=stage_nbs, log=lines.append) == 2
    assert "stages that would rerun: log" in lines[0]


def test_data_task_count_changes_no_token(micro_run, tmp_path):
    """The data stage with 1 task instead of micro's 2 writes the same documents to other files (its kept set does not
    move with the task count); the token files made from them, a capped sample, are the same bytes."""
    run_dir, _, _ = micro_run
    other = tmp_path / "one_task"
    for stage in ("data", "tokens"):
        r = subprocess.run([SEC_NB, "run", "--preset", "micro", "--run-dir", str(other), "--only", stage,
                            "-p", "data.tasks=1", "--no-progress"], capture_output=True, text=True, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert len(list((other / "data" / "sec_train").glob("*.jsonl.gz"))) == 1
    assert len(list((run_dir / "data" / "sec_train").glob("*.jsonl.gz"))) == 2
    files = sorted(p.name for p in (run_dir / "tokens").glob("*_text_document*"))
    assert files and files == sorted(p.name for p in (other / "tokens").glob("*_text_document*"))
    for name in files:
        assert (run_dir / "tokens" / name).read_bytes() == (other / "tokens" / name).read_bytes(), name
