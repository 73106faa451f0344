"Data manifests and verified fetching: from the mirror, from an origin over HTTP, and every way it can go wrong."
import gzip
import hashlib
import http.server
import io
import json
import os
import threading
import zipfile
from pathlib import Path

import pytest

from sec_nb import datasets
from sec_nb.datasets import DataError, build_manifest, fetch, load_manifest

MIRROR = datasets.mirror_dir()


def sha(b): return hashlib.sha256(b).hexdigest()


@pytest.fixture
def env(tmp_path, monkeypatch):
    "A private cache and manifests folder."
    monkeypatch.setenv("SEC_NB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("SEC_NB_MANIFESTS", str(tmp_path / "manifests"))
    monkeypatch.delenv("SEC_NB_MIRROR", raising=False)        # tests say which mirror, if any, they use
    (tmp_path / "manifests").mkdir()
    return tmp_path


def write_manifest(env, name, files):
    man = {"name": name, "role": "test", "n_files": len(files), "bytes": 0, "records": 0, "files": files}
    (env / "manifests" / f"{name}.json").write_text(json.dumps(man))


class Server:
    "A local HTTP origin. `routes` maps a path to bytes; `truncate` paths send half their bytes and hang up."
    def __init__(self):
        self.routes, self.truncate, self.hits = {}, set(), []
        outer = self
        class H(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                outer.hits.append(self.path)
                body = outer.routes.get(self.path)
                if body is None: self.send_error(404); return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in outer.truncate else body)
                if self.path in outer.truncate: self.wfile.flush(); self.connection.close()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"


@pytest.fixture
def origin():
    s = Server()
    yield s
    s.httpd.shutdown()


needs_mirror = pytest.mark.skipif(MIRROR is None, reason="needs SEC_NB_MIRROR (set by .ci/run)")


@needs_mirror
def test_every_manifest_matches_the_mirror():
    "Every dataset folder of the mirror has a manifest, and rebuilding it from the mirror gives the same files."
    folders = sorted(d.name for d in MIRROR.iterdir() if d.is_dir())
    assert folders == datasets.dataset_names()
    for name in ("convfinqa", "wikitext"):   # full rebuild of two: hashes of un-gzipped content agree
        assert build_manifest(MIRROR, name)["files"] == load_manifest(name)["files"]
    filings = load_manifest("sec_filings")
    assert sum("form" in f for f in filings["files"]) == 674


@needs_mirror
def test_fetch_from_mirror_verifies_and_ungzips(env, monkeypatch):
    monkeypatch.delenv("SEC_NB_MANIFESTS")
    got = fetch(["convfinqa"], mirror=MIRROR, log=None)["convfinqa"]
    for f in load_manifest("convfinqa")["files"]:
        assert sha((got / f["path"]).read_bytes()) == f["sha256"]
    assert (MIRROR / "convfinqa" / "train_subset_50.json.gz").exists()   # stored gzipped, served plain


def test_fetch_from_origin_over_http_and_zip_members(env, origin):
    a, b = b"alpha\n" * 100, b'{"x": 1}\n'
    zbuf = io.BytesIO()
    with zipfile.ZipFile(zbuf, "w") as z: z.writestr("inner/b.jsonl", b)
    origin.routes = {"/a.txt": a, "/pack.zip": zbuf.getvalue()}
    write_manifest(env, "toy", [
        {"path": "a.txt", "sha256": sha(a), "bytes": len(a), "url": origin.url + "/a.txt", "origin": {}},
        {"path": "b.jsonl", "sha256": sha(b), "bytes": len(b), "url": origin.url + "/pack.zip",
         "origin": {"path": "pack.zip", "zip_member": "inner/b.jsonl"}}])
    folder = fetch(["toy"], mirror=None, log=None)["toy"]
    assert (folder / "a.txt").read_bytes() == a and (folder / "b.jsonl").read_bytes() == b
    fetch(["toy"], mirror=None, log=None)                    # cached and verified: no new download
    assert origin.hits.count("/a.txt") == 1


def test_wrong_hash_stops_with_file_expected_and_actual(env, origin):
    origin.routes = {"/a.txt": b"tampered"}
    write_manifest(env, "toy", [{"path": "a.txt", "sha256": "0" * 64, "bytes": 8, "url": origin.url + "/a.txt"}])
    with pytest.raises(DataError) as e:
        fetch(["toy"], mirror=None, log=None)
    msg = str(e.value)
    assert "toy/a.txt" in msg and "0" * 64 in msg and sha(b"tampered") in msg
    assert not (env / "cache" / "data" / "toy" / "a.txt").exists()


def test_missing_file_in_mirror_and_at_origin(env, origin, tmp_path):
    write_manifest(env, "toy", [{"path": "gone.txt", "sha256": "0" * 64, "bytes": 1, "url": origin.url + "/gone.txt"}])
    (tmp_path / "mirror" / "toy").mkdir(parents=True)
    with pytest.raises(DataError, match=r"toy/gone.txt: not in the mirror"):
        fetch(["toy"], mirror=tmp_path / "mirror", log=None)
    with pytest.raises(DataError, match=r"toy/gone.txt: download from .* failed: 404"):
        fetch(["toy"], mirror=None, log=None)


def test_interrupted_download_never_passes_for_complete(env, origin):
    body = os.urandom(200_000)
    origin.routes, origin.truncate = {"/big.bin": body}, {"/big.bin"}
    write_manifest(env, "toy", [{"path": "big.bin", "sha256": sha(body), "bytes": len(body), "url": origin.url + "/big.bin"}])
    with pytest.raises(DataError, match="toy/big.bin"):
        fetch(["toy"], mirror=None, log=None)
    folder = env / "cache" / "data" / "toy"
    assert not (folder / "big.bin").exists() and not list(folder.glob("*big*"))
    origin.truncate.clear()                                  # the retry completes
    assert (fetch(["toy"], mirror=None, log=None)["toy"] / "big.bin").read_bytes() == body


def test_mirror_gzip_content_is_hashed_uncompressed(env, tmp_path):
    data = b"line\n" * 1000
    (tmp_path / "mirror" / "toy").mkdir(parents=True)
    (tmp_path / "mirror" / "toy" / "t.jsonl.gz").write_bytes(gzip.compress(b'{"a": 1}\n{"a": 2}\n'))
    man = build_manifest(tmp_path / "mirror", "toy")
    assert man["files"][0]["path"] == "t.jsonl" and man["files"][0]["records"] == 2
    assert man["files"][0]["sha256"] == sha(b'{"a": 1}\n{"a": 2}\n')


def test_transformed_files_only_from_a_mirror(env):
    write_manifest(env, "toy", [{"path": "book.txt", "sha256": "0" * 64, "bytes": 1, "url": None,
                                 "transform": "Project Gutenberg header removed"}])
    with pytest.raises(DataError, match="only available from a mirror .*Gutenberg"):
        fetch(["toy"], mirror=None, log=None)


def test_unknown_dataset_names_the_known_ones(env):
    write_manifest(env, "toy", [])
    with pytest.raises(FileNotFoundError, match="no manifest nope.json.*known datasets: toy"):
        load_manifest("nope")


def test_cache_lock_makes_processes_take_turns(tmp_path):
    # two processes filling one cache entry (nbdev_test runs notebooks in parallel) must not overlap
    import os, subprocess, sys, textwrap
    log = tmp_path / "log"
    code = textwrap.dedent(f"""
        import time, sys
        from sec_nb.config import cache_lock
        with cache_lock("entry"):
            open({str(log)!r}, "a").write(sys.argv[1] + " in\\n"); time.sleep(0.5)
            open({str(log)!r}, "a").write(sys.argv[1] + " out\\n")
    """)
    env = {**os.environ, "SEC_NB_CACHE": str(tmp_path / "cache")}
    procs = [subprocess.Popen([sys.executable, "-c", code, w], env=env) for w in "ab"]
    assert [p.wait() for p in procs] == [0, 0]
    lines = log.read_text().split()
    assert lines[0::4] == lines[2::4] and len(lines) == 8, lines   # each "in" is followed by its own "out"
