"""Reference figures come from the code beside them: figures/tiny/FINGERPRINT.json must match the current modules,
stage notebooks, data manifests and preset. When this fails, regenerate with `sec-nb run --preset tiny` and
commit the figures with the change that moved them."""
import json
import shutil

import pytest

from conftest import write_stage_nb
from sec_nb import repro
from sec_nb.config import project_root


def test_tiny_reference_figures_match_the_code():
    status = repro.reference_status(project_root() / "figures" / "tiny")
    assert status["status"] == "current", status["message"]
    assert sorted(p.name for p in (project_root() / "figures" / "tiny").glob("*.png")), "no figures"


@pytest.fixture
def checkout(tmp_path):
    "A copy of the checkout's stage notebooks and data manifests, with a reference folder fingerprinted now."
    root = tmp_path / "root"
    shutil.copytree(project_root() / "nbs", root / "nbs")
    shutil.copytree(project_root() / "data_manifests", root / "data_manifests")
    parts = repro.fingerprint_parts("tiny", root)
    (root / "ref").mkdir()
    (root / "ref" / "FINGERPRINT.json").write_text(json.dumps(
        {"preset": "tiny", "fingerprint": repro.combine(parts), "commit": "abc123", "parts": parts}))
    return root


def test_fingerprint_follows_code_data_and_preset(checkout):
    parts = repro.fingerprint_parts("tiny", checkout)
    assert any(k.startswith("sec_nb/") for k in parts) and "sec_nb/run.py" not in parts   # orchestration left out
    assert {"nbs/04_cpt.ipynb", "data_manifests/sec_filings.json", "preset/tiny"} <= set(parts)
    assert repro.fingerprint_parts("micro", checkout)["preset/micro"] != parts["preset/tiny"]
    assert repro.reference_status(checkout / "ref", checkout)["status"] == "current"
    # prose may change without making figures stale ...
    nb = json.loads((checkout / "nbs" / "04_cpt.ipynb").read_text())
    next(c for c in nb["cells"] if c["cell_type"] == "markdown")["source"].append("\nA new sentence.")
    (checkout / "nbs" / "04_cpt.ipynb").write_text(json.dumps(nb))
    assert repro.reference_status(checkout / "ref", checkout)["status"] == "current"
    # ... code and data may not
    next(c for c in nb["cells"] if c["cell_type"] == "code")["source"].append("\nx = 1")
    (checkout / "nbs" / "04_cpt.ipynb").write_text(json.dumps(nb))
    man = json.loads((checkout / "data_manifests" / "pretrain_text.json").read_text())
    man["files"][0]["sha256"] = "0" * 64
    (checkout / "data_manifests" / "pretrain_text.json").write_text(json.dumps(man))
    st = repro.reference_status(checkout / "ref", checkout)
    assert st["status"] == "stale" and st["changed"] == ["data_manifests/pretrain_text.json", "nbs/04_cpt.ipynb"]
    assert st["message"].startswith("ref/: stale since abc123") and "sec-nb run --preset tiny" in st["message"]
    assert repro.reference_status(checkout / "nope")["status"] == "not yet produced"


def test_run_publishes_the_reference_folder_with_its_fingerprint(stage_nbs, tmp_path, monkeypatch):
    "`sec-nb run` of a reference preset copies the report stage's files and writes FINGERPRINT.json; -p does not."
    import sec_nb.run as r
    write_stage_nb(stage_nbs / "04_report.ipynb",
                   "from pathlib import Path\nfrom sec_nb.run import record_stage\n"
                   "out = Path(run_dir) / 'report'; out.mkdir(exist_ok=True); (out / 'figure1.csv').write_text('a,b\\n1,2\\n')\n"
                   "record_stage(run_dir, 'report', outputs=[out / 'figure1.csv'])")
    root = stage_nbs.parent
    (root / "data_manifests").mkdir()
    monkeypatch.setattr(r, "project_root", lambda: root)
    monkeypatch.setattr(repro, "project_root", lambda: root)
    monkeypatch.setitem(repro.REFERENCE_DIRS, "micro", "figures/micro")
    rd = tmp_path / "run"
    assert r.main(["run", "--preset", "micro", "--run-dir", str(rd), "--no-progress", "-p", "word=other"]) == 0
    assert not (root / "figures" / "micro").exists()                 # a changed preset is not the reference
    assert r.main(["run", "--preset", "micro", "--run-dir", str(rd), "--no-progress"]) == 0
    ref = root / "figures" / "micro"
    assert (ref / "figure1.csv").read_text() == "a,b\n1,2\n"
    assert repro.reference_status(ref, root)["status"] == "current"
    assert json.loads((ref / "FINGERPRINT.json").read_text())["files"] == ["figure1.csv"]
    # a run with seed runs beside it publishes the band into seeds/; the main job's folder stays as it was
    main_bytes = {p.name: p.read_bytes() for p in ref.iterdir() if p.is_file()}
    (rd / "seeds" / "seed1" / "eval").mkdir(parents=True)
    (rd / "report" / "figure1.csv").write_text("a,b\n1,3\n")
    assert repro.publish_reference("micro", rd, log=lambda m: None, root=root) == ref / "seeds"
    assert (ref / "seeds" / "figure1.csv").read_text() == "a,b\n1,3\n"
    assert json.loads((ref / "seeds" / "FINGERPRINT.json").read_text())["seed_runs"] == ["seed1"]
    assert {p.name: p.read_bytes() for p in ref.iterdir() if p.is_file()} == main_bytes
