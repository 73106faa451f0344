"""No mirror needed: every preset's default inputs come byte for byte from their origins. The origins are served
by a local HTTP server (`origin_server` in conftest.py) that `$SEC_NB_ORIGIN_BASE` points the manifests'
URLs at; the fetch code runs as on a fresh machine with internet. test_repro.py runs the micro preset from
the cache filled here."""
import subprocess

from conftest import SEC_NB, no_mirror_env
from sec_nb import datasets

MIRROR_ONLY = {"pretrain_general", "instruct_more", "sec_domain_more"}


def test_default_inputs_are_exact_copies_of_their_origins():
    "Every dataset the presets read by default, the evaluation sets included, has an origin for each data file."
    assert set(datasets.dataset_names()) - set(datasets.default_datasets()) == MIRROR_ONLY
    for role, (exact, more) in datasets.INPUT_DATASETS.items():
        assert set(exact) <= set(datasets.default_datasets()) and set(more) <= MIRROR_ONLY, role
    for name in datasets.default_datasets():
        for f in datasets.load_manifest(name)["files"]:
            assert f.get("url") or f.get("documentation"), (name, f["path"])


def test_fetch_without_a_mirror_from_the_origins(origin_fetch, origin_server):
    cache, res = origin_fetch
    _, hits, missing = origin_server
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert not missing, missing[:10]
    for name in datasets.default_datasets():
        man = datasets.load_manifest(name)
        assert f"{name}: " in res.stdout and (cache / "data" / name / ".manifest.sha256").exists(), name
        for f in man["files"]:
            assert (cache / "data" / name / f["path"]).exists() != bool(f.get("documentation")), (name, f["path"])
    assert "sec_filings: 674 files" in res.stdout and "documentation files only a mirror holds left out" in res.stdout
    assert not any((cache / "data" / n).exists() for n in MIRROR_ONLY)
    assert len(hits) > 1771                                  # the code sample is rebuilt from its 1,771 source files


def test_mirror_only_datasets_are_an_opt_in_that_says_so(origin_server, tmp_path):
    env = no_mirror_env(tmp_path / "cache", origin_server[0])
    for cmd in (["data", "fetch", "pretrain_general"], ["data", "fetch", "--with-mirror-only"]):
        res = subprocess.run([SEC_NB, *cmd], capture_output=True, text=True, timeout=900, env=env)
        assert res.returncode == 1 and "only a mirror serves this dataset" in res.stderr, res.stderr
        assert "set SEC_NB_MIRROR or pass --mirror" in res.stderr
