"The orchestrator's mechanics on throwaway notebooks: order, parameters, skipping, --from, --only, failures."
import json
import subprocess
import sys

import pytest

from conftest import write_stage_nb, SEC_NB
from sec_nb.run import StageFailed, discover_stages, main, parse_params, run_pipeline


def run(nbs, run_dir, **kw):
    "Run the pipeline; return its progress lines about stages (the HTML report line is checked separately)."
    lines = []
    run_pipeline("micro", run_dir, nbs_dir=nbs, progress=False, log=lines.append, **kw)
    return [l for l in lines if not l.startswith("report: ")]


def test_discovers_numbered_stages_in_order(stage_nbs):
    assert [s.name for s in discover_stages(stage_nbs)] == ["make", "use", "log"]


def test_runs_in_order_injects_parameters_and_records(stage_nbs, tmp_path):
    rd = tmp_path / "run"
    lines = run(stage_nbs, rd, params={"word": "filings", "cpt.steps": 3})
    assert [l.split(":")[0] for l in lines if "done" in l] == ["[1/3] 01_make", "[2/3] 02_use", "[3/3] 03_log"]
    assert (rd / "make" / "x.txt").read_text() == "filings"
    rec = json.loads((rd / "make" / "stage.json").read_text())
    assert rec["status"] == "ok" and rec["counts"] == {"chars": 7}
    assert rec["params"] == {"word": "filings", "cpt.steps": 3} and rec["versions"]["papermill"]
    assert rec["outputs"] == ["make/x.txt"] and rec["seconds"] > 0
    use = json.loads((rd / "use" / "stage.json").read_text())
    assert list(use["inputs"]) == ["make/x.txt"]                # inside the run dir: relative, so it can move
    assert rec["digest"]["files"] == {"make/x.txt": __import__("hashlib").sha256(b"filings").hexdigest()}
    assert rec["seeds"] == {"train": 1234, "merge": 0}
    executed = json.loads((rd / "notebooks" / "01_make.ipynb").read_text())
    injected = [c for c in executed["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert "word = \"filings\"" in "".join(injected[0]["source"])


def test_rerun_skips_unchanged_and_reruns_on_change(stage_nbs, tmp_path):
    rd = tmp_path / "run"
    run(stage_nbs, rd)
    assert all("skipped" in l for l in run(stage_nbs, rd))
    assert (rd / "log.txt").read_text() == "micro\n"
    # a changed parameter reruns every stage
    assert not any("skipped" in l for l in run(stage_nbs, rd, params={"word": "other"}))
    # an input file changed behind the orchestrator's back reruns the stage that read it
    (rd / "make" / "x.txt").write_text("tampered")
    with pytest.raises(StageFailed, match="stage 02 'use'"):
        run(stage_nbs, rd, params={"word": "other"})
    (rd / "make" / "x.txt").write_text("other")
    # a changed notebook reruns itself and the stages after it
    write_stage_nb(stage_nbs / "02_use.ipynb", "pass  # changed")
    lines = [l for l in run(stage_nbs, rd, params={"word": "other"}) if "running" not in l]
    assert ["skipped" in l for l in lines] == [True, False, False]


def test_from_forces_rerun_and_only_runs_one(stage_nbs, tmp_path):
    rd = tmp_path / "run"
    run(stage_nbs, rd)                                        # log.txt: 1 line
    lines = run(stage_nbs, rd, from_stage="use")              # reruns use and log: 2 lines
    assert [l.split(":")[0] for l in lines if "done" in l] == ["[2/3] 02_use", "[3/3] 03_log"]
    lines = run(stage_nbs, rd, only="log")                    # reruns log alone: 3 lines
    assert [l.split(":")[0] for l in lines if "done" in l] == ["[3/3] 03_log"] and len(lines) == 2
    assert (rd / "log.txt").read_text().count("micro") == 3
    with pytest.raises(SystemExit, match="unknown stage 'nope'"):
        run(stage_nbs, rd, from_stage="nope")


def test_from_needs_earlier_stages(stage_nbs, tmp_path):
    with pytest.raises(SystemExit, match="has not run"):
        run(stage_nbs, tmp_path / "fresh", from_stage="log")


def test_failure_names_stage_cell_error_and_notebook(stage_nbs, tmp_path):
    write_stage_nb(stage_nbs / "02_use.ipynb", "x = 1\nraise ValueError('filing 42 is corrupt')")
    rd = tmp_path / "run"
    with pytest.raises(StageFailed) as e:
        run(stage_nbs, rd)
    msg = str(e.value)
    assert "stage 02 'use'" in msg and "cell 2" in msg and "ValueError: filing 42 is corrupt" in msg
    assert str(rd / "notebooks" / "02_use.ipynb") in msg
    assert json.loads((rd / "use" / "stage.json").read_text())["status"] == "failed"
    assert not (rd / "log.txt").exists()                     # later stages did not run


def test_cli_exit_code_and_message_on_failure(stage_nbs, tmp_path, monkeypatch):
    write_stage_nb(stage_nbs / "01_make.ipynb", "raise RuntimeError('boom')")
    import sec_nb.run as r
    monkeypatch.setattr(r, "project_root", lambda: stage_nbs.parent)
    code = main(["run", "--preset", "micro", "--run-dir", str(tmp_path / "r"), "--no-progress"])
    assert code == 1


def test_unknown_preset_key_fails_before_running(stage_nbs, tmp_path):
    with pytest.raises(KeyError, match="cpt.stepz"):
        run(stage_nbs, tmp_path / "r", params={"cpt.stepz": 1})
    assert not (tmp_path / "r" / "make").exists()


def test_parse_params_reads_yaml_scalars():
    assert parse_params(["a=1", "b=x", 'c={"m": "p"}', "d=0.5"]) == {"a": 1, "b": "x", "c": {"m": "p"}, "d": 0.5}
    with pytest.raises(SystemExit):
        parse_params(["novalue"])


def test_subcommands_are_registered_in_one_place():
    from sec_nb.run import COMMANDS
    assert {"run", "seeds", "data", "presets"} <= set(COMMANDS)


def test_sec_nb_command_is_installed():
    presets = subprocess.run([SEC_NB, "presets"], capture_output=True, text=True)
    assert presets.returncode == 0 and "llama3-70b" in presets.stdout


def test_html_report_joins_front_page_and_executed_stages(stage_nbs, tmp_path):
    rd = tmp_path / "run"
    lines = []
    run_pipeline("micro", rd, nbs_dir=stage_nbs, progress=False, log=lines.append)
    assert lines[-1] == f"report: {rd / 'report.html'}"
    html = (rd / "report.html").read_text()
    assert "made hello" in html                                   # an executed stage's output
    lines.clear()
    run_pipeline("micro", rd, nbs_dir=stage_nbs, progress=False, log=lines.append)
    assert not any(l.startswith("report: ") for l in lines)      # nothing ran: the report is current
