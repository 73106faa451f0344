"Shared fixtures: throwaway stage notebooks for the orchestrator."
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import sys as _sys
from pathlib import Path as _Path

SEC_NB = str(_Path(_sys.executable).parent / "sec-nb")   # the installed command, whether or not the venv is on PATH
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
                   "out.write_text(word)\nprint('made', word)\nrecord_stage(run_dir, 'make', outputs=[out], counts={'chars': len(word)})")
    write_stage_nb(nbs / "02_use.ipynb",
                   "from pathlib import Path\nfrom sec_nb.run import record_stage\n"
                   "src = Path(run_dir) / 'make' / 'x.txt'\nassert src.read_text() == word\n"
                   "record_stage(run_dir, 'use', inputs=[src])")
    write_stage_nb(nbs / "03_log.ipynb",
                   "from pathlib import Path\nwith open(Path(run_dir) / 'log.txt', 'a') as f: f.write(preset + '\\n')")
    (nbs / "00_config.ipynb").write_text((nbs / "03_log.ipynb").read_text())  # not a stage: 00
    (nbs / "index.ipynb").write_text((nbs / "03_log.ipynb").read_text())      # not a stage: no number
    return nbs


# --- real services -------------------------------------------------------------------------------------
import os
import shutil
import socket
import subprocess
from pathlib import Path

INFRA = Path(__file__).parent / "infra"


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real single-node SLURM (slurmctld + slurmd + munge) on this machine; SLURM_CONF is set for the session.
    Skipped only where SLURM is not installed (CI installs it; see .ci/run)."""
    if not shutil.which("slurmctld") or os.geteuid() != 0:
        pytest.skip("needs root and Debian's slurmctld/slurmd/munge (installed by .ci/run)")
    base = tmp_path_factory.mktemp("slurm")
    env = {**os.environ, "BASE": str(base)}
    conf = subprocess.run(["bash", str(INFRA / "slurm_up.sh")], env=env, capture_output=True, text=True)
    assert conf.returncode == 0, conf.stderr
    old = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = conf.stdout.strip().splitlines()[-1]
    yield {"conf": os.environ["SLURM_CONF"], "base": base}
    subprocess.run(["bash", str(INFRA / "slurm_down.sh")], env=env)
    if old is None: os.environ.pop("SLURM_CONF", None)
    else: os.environ["SLURM_CONF"] = old


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3 endpoint over HTTP on loopback (moto's server mode, in a thread). Yields its URL; boto3, s3fs
    and datatrove reach it through AWS_ENDPOINT_URL_S3 with dummy credentials."""
    from moto.server import ThreadedMotoServer
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    saved = {k: os.environ.get(k) for k in ("AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")}
    os.environ.update(AWS_ENDPOINT_URL_S3=url, AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
    yield url
    server.stop()
    for k, v in saved.items():
        if v is None: os.environ.pop(k, None)
        else: os.environ[k] = v
