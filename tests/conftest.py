"Shared fixtures: throwaway stage notebooks for the orchestrator."
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

KERNEL = {"kernelspec": {"name": "python3", "display_name": "python3", "language": "python"}}


def write_stage_nb(path, body, params="word = 'hello'"):
    "A stage notebook: a papermill `parameters` cell, then `body`."
    p = new_code_cell(f"run_dir = ''\npreset = 'micro'\noverrides = {{}}\n{params}")
    p.metadata["tags"] = ["parameters"]
    nbformat.write(new_notebook(cells=[p, new_code_cell(body)], metadata=KERNEL), path)


@pytest.fixture
def stage_nbs(tmp_path):
    "Three throwaway stages: 01 writes a file from a parameter, 02 reads it, 03 logs its own run."
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    write_stage_nb(nbs / "01_make.ipynb",
                   "from pathlib import Path\nfrom sec_nb.run import record_stage\n"
                   "out = Path(run_dir) / 'make' / 'x.txt'; out.parent.mkdir(parents=True, exist_ok=True)\n"
                   "out.write_text(word)\nrecord_stage(run_dir, 'make', outputs=[out], counts={'chars': len(word)})")
    write_stage_nb(nbs / "02_use.ipynb",
                   "from pathlib import Path\nfrom sec_nb.run import record_stage\n"
                   "src = Path(run_dir) / 'make' / 'x.txt'\nassert src.read_text() == word\n"
                   "record_stage(run_dir, 'use', inputs=[src])")
    write_stage_nb(nbs / "03_log.ipynb",
                   "from pathlib import Path\nwith open(Path(run_dir) / 'log.txt', 'a') as f: f.write(preset + '\\n')")
    (nbs / "00_config.ipynb").write_text((nbs / "03_log.ipynb").read_text())  # not a stage: 00
    (nbs / "index.ipynb").write_text((nbs / "03_log.ipynb").read_text())      # not a stage: no number
    return nbs
