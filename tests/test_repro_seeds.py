"""The seed band: `sec-nb seeds --preset micro -n 2` repeats a finished micro run (a copy of the shared `micro_run`)
with other seeds into RUN/seeds/seed<k>/, each a run folder of the same layout, then redoes RUN's report."""
import json
import shutil
import subprocess

import pytest

from conftest import SEC_NB
from sec_nb.run import discover_stages
from sec_nb.config import project_root

STAGES = [s.name for s in discover_stages(project_root() / "nbs")]


@pytest.fixture(scope="module")
def seeded(micro_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("seeded") / "micro"
    shutil.copytree(micro_run[0], run_dir)
    before = json.loads((run_dir / "report" / "stage.json").read_text())
    res = subprocess.run([SEC_NB, "seeds", "--preset", "micro", "-n", "2", "--run-dir", str(run_dir), "--no-progress"],
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return run_dir, before, res


def rec(run_dir, stage): return json.loads((run_dir / stage / "stage.json").read_text())


def test_each_seed_run_is_a_full_run_folder(seeded):
    run_dir, _, _ = seeded
    assert sorted(p.name for p in (run_dir / "seeds").iterdir()) == ["seed1", "seed2"]
    for k in (1, 2):
        sd = run_dir / "seeds" / f"seed{k}"
        for name in STAGES:
            r = rec(sd, name)
            assert r["status"] == "ok", (k, name)
        assert rec(sd, "cpt")["seeds"] == {"train": 1234 + k, "merge": k}
        assert (sd / "cpt" / "metrics.jsonl").exists() and (sd / "eval" / "results.csv").exists()


def test_seeds_change_training_not_data(seeded):
    run_dir, _, _ = seeded
    runs = [run_dir, run_dir / "seeds" / "seed1", run_dir / "seeds" / "seed2"]
    for stage in ("data", "tokens"):                # no seed: shared with the run, byte for byte
        assert len({rec(r, stage)["digest"]["sha256"] for r in runs}) == 1, stage
    for stage in ("models", "cpt"):                 # other initialisation and sample order: other weights
        assert len({rec(r, stage)["digest"]["sha256"] for r in runs}) == 3, stage
    first_losses = {json.loads((r / "cpt" / "metrics.jsonl").read_text().splitlines()[0])["lm_loss"] for r in runs}
    assert len(first_losses) == 3


def test_report_of_the_run_is_redone(seeded):
    run_dir, before, res = seeded
    after = rec(run_dir, "report")
    assert after["status"] == "ok" and after["started"] > before["started"]
    assert "the report of micro with 2 seed runs beside it" in res.stdout
    assert res.stdout.count("07_report: done") == 3            # two seed runs and the run's own report
