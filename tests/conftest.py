"Shared fixtures: throwaway stage notebooks for the orchestrator, the micro run, the datasets' origins, services."
import json
import os

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
    (nbs / "02a_lib.ipynb").write_text((nbs / "03_log.ipynb").read_text())    # not a stage: a library beside 02
    (nbs / "index.ipynb").write_text((nbs / "03_log.ipynb").read_text())      # not a stage: no number
    return nbs


# --- the micro pipeline, run once per session ---------------------------------------------------------------
@pytest.fixture(scope="session")
def micro_run(tmp_path_factory):
    """`sec-nb run --preset micro` from an empty folder, then the same command again (it must skip every stage).
    Used by test_pipeline.py (what each stage records) and test_repro.py (a second run gives the same bytes)."""
    import subprocess
    run_dir = tmp_path_factory.mktemp("micro")
    cmd = [SEC_NB, "run", "--preset", "micro", "--run-dir", str(run_dir), "--no-progress"]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=1500)
    assert first.returncode == 0, first.stdout + first.stderr
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return run_dir, first.stdout, second


# --- the datasets' origins, served from a local HTTP server (no mirror) ---------------------------------------
def origin_routes(mirror):
    """{URL path under the server: bytes} for every file of the default datasets, at the place its origin URL
    names (BASE/<host>/<path>): files as the mirror holds them (verified against the manifests' sha256 by fetch),
    zip archives rebuilt from their members, and the source files an assembled JSONL is made of."""
    import io, zipfile
    from sec_nb import datasets
    routes, zips = {}, {}
    def place(url): return "/" + url.split("://", 1)[1]
    for name in datasets.default_datasets():
        for f in datasets.load_manifest(name)["files"]:
            origin = f.get("origin") or {}
            if not f.get("url"): continue                       # documentation only the mirror holds
            data = datasets.read_mirror_file(mirror, name, f["path"])
            if origin.get("zip_member"): zips.setdefault(f["url"], {})[origin["zip_member"]] = data
            elif "assembled_from_files" in origin:
                for line in data.splitlines():
                    r = json.loads(line)
                    routes[f"/raw.githubusercontent.com/{r['repo']}/{r['commit']}/{r['path']}"] = r["content"].encode()
            else: routes[place(f["url"])] = data
    for url, members in zips.items():
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
            for member, data in sorted(members.items()): z.writestr(member, data)
        routes[place(url)] = buf.getvalue()
    return routes


@pytest.fixture(scope="session")
def origin_server():
    "The default datasets' origins on loopback HTTP; yields (base URL, requests seen, paths not found)."
    import http.server, threading, urllib.parse
    from sec_nb import datasets
    mirror = datasets.mirror_dir()
    if mirror is None: pytest.skip("building the local origins needs SEC_NB_MIRROR (set by .ci/run)")
    routes, hits, missing = origin_routes(mirror), [], []
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *a): pass
        def do_GET(self):
            path = urllib.parse.unquote(self.path)         # requests quotes spaces in origin paths
            hits.append(path)
            body = routes.get(path)
            if body is None: missing.append(path); self.send_error(404); return
            self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits, missing
    httpd.shutdown()


def no_mirror_env(cache, base):
    "The environment of a machine with no mirror whose internet is the local origin server."
    env = {k: v for k, v in os.environ.items() if k != "SEC_NB_MIRROR"}
    return {**env, "SEC_NB_CACHE": str(cache), "SEC_NB_ORIGIN_BASE": base}


@pytest.fixture(scope="session")
def origin_fetch(origin_server, tmp_path_factory):
    "`sec-nb data fetch` with no mirror into a fresh cache, from the local origins: (cache, result)."
    import subprocess
    cache = tmp_path_factory.mktemp("origin_cache")
    res = subprocess.run([SEC_NB, "data", "fetch"], capture_output=True, text=True, timeout=900,
                         env=no_mirror_env(cache, origin_server[0]))
    return cache, res


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
    import random
    base = tmp_path_factory.mktemp("slurm")
    # ports and job ids of its own: another session's test SLURM on this machine neither blocks nor shares it
    # (job ids also seed the trainer's MASTER_PORT)
    env = {**os.environ, "BASE": str(base), "CTLD_PORT": str(_free_port()), "SLURMD_PORT": str(_free_port()),
           "FIRST_JOB_ID": str(random.randrange(1000, 1_000_000))}
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
