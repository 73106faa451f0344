"The micro pipeline end to end through `sec-nb run`: every stage notebook that exists runs, and a rerun skips them."
import json
import os
import subprocess

import pytest

from conftest import SEC_NB

from sec_nb.config import project_root
from sec_nb.run import discover_stages

STAGES = [s.name for s in discover_stages(project_root() / "nbs")]


@pytest.fixture(scope="module")
def micro_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("micro")
    cmd = [SEC_NB, "run", "--preset", "micro", "--run-dir", str(run_dir), "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stdout + first.stderr
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return run_dir, first.stdout, second


@pytest.mark.skipif(not STAGES, reason="no stage notebooks yet")
def test_every_stage_runs_and_records(micro_run):
    run_dir, out, _ = micro_run
    for name in STAGES:
        rec = json.loads((run_dir / name / "stage.json").read_text())
        assert rec["status"] == "ok", (name, rec.get("error"))
        assert rec["versions"]["torch"] and rec["seconds"] > 0
        assert (run_dir / rec["notebook"]).exists()
        assert all((run_dir / o).exists() for o in rec["outputs"]), name
    assert out.count("done in") == len(STAGES)


@pytest.mark.skipif(not STAGES, reason="no stage notebooks yet")
def test_rerun_skips_every_stage(micro_run):
    _, _, second = micro_run
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("unchanged, skipped") == len(STAGES), second.stdout
