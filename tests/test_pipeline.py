"The micro pipeline end to end through `sec-nb run`: every stage notebook that exists runs, and a rerun skips them."
import json

import pytest

from sec_nb.config import project_root
from sec_nb.run import discover_stages

STAGES = [s.name for s in discover_stages(project_root() / "nbs")]

# the `micro_run` fixture (conftest.py) is shared with test_repro.py, which reruns it to compare bytes


@pytest.mark.skipif(not STAGES, reason="no stage notebooks yet")
def test_every_stage_runs_and_records(micro_run):
    run_dir, out, _ = micro_run
    for name in STAGES:
        rec = json.loads((run_dir / name / "stage.json").read_text())
        assert rec["status"] == "ok", (name, rec.get("error"))
        assert rec["versions"]["torch"] and rec["seconds"] > 0
        assert rec["cpu"]["torch_cpu_capability"] in ("DEFAULT", "VSX", "Z VECTOR", "NO AVX", "AVX2", "AVX512", "SVE256"), rec["cpu"]
        assert (run_dir / rec["notebook"]).exists()
        assert all((run_dir / o).exists() for o in rec["outputs"]), name
        assert rec["digest"]["n_files"] == len(rec["digest"]["files"]) > 0, name
        assert rec["seeds"] == {"train": 1234, "merge": 0} and rec["threads"]["cpu_count"], name
        assert not any(k.startswith("/") for k in rec.get("inputs", {})), (name, "inputs inside the run dir are relative")
    assert out.count("done in") == len(STAGES)


@pytest.mark.skipif(not STAGES, reason="no stage notebooks yet")
def test_rerun_skips_every_stage(micro_run):
    _, _, second = micro_run
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("unchanged, skipped") == len(STAGES), second.stdout
