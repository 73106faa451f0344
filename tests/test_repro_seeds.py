"""The seed band: `sec-nb seeds --preset micro -n 1` repeats a finished micro run (a copy of the shared `micro_run`)
with another seed into RUN/seeds/seed1/, a run folder of the same layout, then redoes RUN's report. One real seed
run shows that a seed changes the trained weights and not the data; `run_seeds` with n = 2 (seed<k> for each k,
each its own seeds, the run's report redone once) is checked on throwaway stages, which cost seconds."""
import json
import shutil
import subprocess

import pytest

from conftest import SEC_NB, write_stage_nb
from sec_nb.run import discover_stages
from sec_nb.config import project_root

STAGES = [s.name for s in discover_stages(project_root() / "nbs")]


@pytest.fixture(scope="module")
def seeded(micro_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("seeded") / "micro"
    shutil.copytree(micro_run[0], run_dir)
    before = json.loads((run_dir / "report" / "stage.json").read_text())
    res = subprocess.run([SEC_NB, "seeds", "--preset", "micro", "-n", "1", "--run-dir", str(run_dir), "--no-progress"],
                         capture_output=True, text=True, timeout=1800)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return run_dir, before, res


def rec(run_dir, stage): return json.loads((run_dir / stage / "stage.json").read_text())


def test_the_seed_run_is_a_full_run_folder(seeded):
    run_dir, _, _ = seeded
    assert sorted(p.name for p in (run_dir / "seeds").iterdir()) == ["seed1"]
    sd = run_dir / "seeds" / "seed1"
    for name in STAGES:
        assert rec(sd, name)["status"] == "ok", name
    assert rec(sd, "cpt")["seeds"] == {"train": 1235, "merge": 1}
    assert (sd / "cpt" / "metrics.jsonl").exists() and (sd / "eval" / "results.csv").exists()


def test_seeds_change_training_not_data(seeded):
    run_dir, _, _ = seeded
    runs = [run_dir, run_dir / "seeds" / "seed1"]
    for stage in ("data", "tokens"):                # no seed: shared with the run, byte for byte
        assert len({rec(r, stage)["digest"]["sha256"] for r in runs}) == 1, stage
    for stage in ("models", "cpt"):                 # other initialisation and sample order: other weights
        assert len({rec(r, stage)["digest"]["sha256"] for r in runs}) == 2, stage
    first_losses = {json.loads((r / "cpt" / "metrics.jsonl").read_text().splitlines()[0])["lm_loss"] for r in runs}
    assert len(first_losses) == 2


def test_report_of_the_run_is_redone(seeded):
    run_dir, before, res = seeded
    after = rec(run_dir, "report")
    assert after["status"] == "ok" and after["started"] > before["started"]
    assert "the report of micro with 1 seed runs beside it" in res.stdout
    assert res.stdout.count("07_report: done") == 2            # the seed run's and the run's own report


# --- n seed runs, on throwaway stages: each stage writes what its seeds are ------------------------------------
SEEDED_STAGES = {"01_data": "'data'", "02_tokens": "'tokens'", "03_models": "str(s.train)",
                 "04_cpt": "f'{s.train} {s.merge}'", "07_report": "'report'"}


@pytest.fixture
def seeded_throwaway(tmp_path, monkeypatch):
    from sec_nb import repro
    from sec_nb.run import run_pipeline
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    for nb, content in SEEDED_STAGES.items():
        name = nb.split("_", 1)[1]
        write_stage_nb(nbs / f"{nb}.ipynb",
                       "from pathlib import Path\nfrom sec_nb.config import load_preset\nfrom sec_nb.run import record_stage\n"
                       f"s = load_preset(preset, overrides).seeds\nout = Path(run_dir) / '{name}'; out.mkdir(exist_ok=True)\n"
                       f"(out / 'x.txt').write_text({content})\nrecord_stage(run_dir, '{name}', outputs=[out / 'x.txt'])")
    run_dir = tmp_path / "run"
    run_pipeline("micro", run_dir, nbs_dir=nbs, progress=False, html=False, log=lambda l: None)
    before = rec(run_dir, "report")
    lines = []
    out = repro.run_seeds("micro", run_dir, 2, nbs_dir=nbs, log=lines.append)
    return run_dir, before, out, "\n".join(lines)


def test_n_seed_runs_each_with_its_seeds(seeded_throwaway):
    run_dir, before, out, log = seeded_throwaway
    assert out == [run_dir.resolve() / "seeds" / f"seed{k}" for k in (1, 2)]
    assert sorted(p.name for p in (run_dir / "seeds").iterdir()) == ["seed1", "seed2"]
    runs = [run_dir, run_dir / "seeds" / "seed1", run_dir / "seeds" / "seed2"]
    for k, r in enumerate(runs):
        for nb in SEEDED_STAGES:
            assert rec(r, nb.split("_", 1)[1])["status"] == "ok", (k, nb)
        assert rec(r, "cpt")["seeds"] == {"train": 1234 + k, "merge": k}
        assert (r / "cpt" / "x.txt").read_text() == f"{1234 + k} {k}"
    for stage in ("data", "tokens"):                # shared with the run, byte for byte
        assert len({rec(r, stage)["digest"]["sha256"] for r in runs}) == 1, stage
    for stage in ("models", "cpt"):                 # each seed its own outputs
        assert len({rec(r, stage)["digest"]["sha256"] for r in runs}) == 3, stage
    after = rec(run_dir, "report")
    assert after["status"] == "ok" and after["started"] > before["started"]
    assert "the report of run with 2 seed runs beside it" in log
    assert log.count("07_report: done") == 3            # two seed runs and the run's own report
