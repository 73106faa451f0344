"datatrove's MinhashDedup in the stage: the stable survivor gives the same clusters, counts and kept set with 1, 2 and 8 tasks."
import struct
from collections import defaultdict

import pytest

from sec_nb.data import StableMinhashCluster, minhash_config, run_sec_pipeline
from test_data import read_gz, submission


def corpus(root, n=10, copies=4):
    "n filings; the last `copies` are near copies of the first ones (one word changed) under other accession numbers."
    raw = root / "raw" / "8-K"
    raw.mkdir(parents=True)
    for i in range(n - copies):
        acc = f"0000123456-24-{i:06d}"
        (raw / f"{acc}.txt").write_text(submission(acc, words=3))
    for k in range(copies):
        src, acc = f"0000123456-24-{k:06d}", f"0000999999-24-{k:06d}"
        text = submission(src, words=3).replace(src, acc).replace("Revenue for", "Revenues for", 1)
        (raw / f"{acc}.txt").write_text(text)
    return root / "raw"


def kept_ids(out):
    return sorted(d["id"] for s in ("sec_train", "sec_heldout") for d in read_gz(out / s))


def test_same_kept_set_with_1_2_8_tasks(tmp_path):
    src = corpus(tmp_path)
    runs = {}
    for tasks in (1, 2, 8):
        out = tmp_path / f"out{tasks}"
        acc = run_sec_pipeline(str(src), str(out), tasks=tasks, workers=1, min_words=20)
        cl = StableMinhashCluster(str(out / "scratch/minhash/buckets"), str(tmp_path / "unused"), str(out / "scratch/minhash/signatures"))
        ids = cl.doc_ids([n for g in cl.clusters() for n in g])
        clusters = sorted(sorted(ids[n] for n in g) for g in cl.clusters())
        dups = sorted((d["id"], d["metadata"]["duplicate_of"]) for d in read_gz(out / "rejected" / "dedup"))
        runs[tasks] = (kept_ids(out), clusters, dups, acc["by_reason"]["near_duplicate"]["docs"])
        assert acc["read"] == acc["kept"]["docs"] + acc["rejected"]["docs"]
    assert runs[1] == runs[2] == runs[8]
    kept, clusters, dups, n_dup = runs[1]
    assert n_dup == len(dups) >= 4 and all(len(c) == 2 for c in clusters)
    # the survivor is the smallest id of its cluster: the original filing, not its copy
    assert all(orig.startswith("0000123456") and copy.startswith("0000999999") for copy, orig in dups)


def partition(pairs):
    groups = defaultdict(set)
    for node, cid in pairs: groups[cid].add(node)
    return sorted(sorted(g) for g in groups.values())


def test_clusters_equal_datatrove_cluster_step(tmp_path):
    "Our cluster step groups the documents exactly as datatrove's MinhashDedupCluster (save_cluster_id) does."
    from datatrove.pipeline.dedup.minhash import MinhashDedupCluster
    from datatrove.utils.binaryio import read_tuples_from_file
    src = corpus(tmp_path, n=12, copies=5)
    out = tmp_path / "out"
    run_sec_pipeline(str(src), str(out), tasks=3, workers=1, min_words=20)
    buckets, ref_out = out / "scratch/minhash/buckets", tmp_path / "datatrove_clusters"
    MinhashDedupCluster(str(buckets), str(ref_out), config=minhash_config(), save_cluster_id=True).run()
    ref = []
    for f in sorted(ref_out.glob("*.clusters")):
        task = int(f.name.split(".")[0])
        with open(f, "rb") as fh:
            ref += [((task, doc), cid) for doc, cid in read_tuples_from_file(fh, "2I")]
    ours = StableMinhashCluster(str(buckets), str(tmp_path / "x"), str(out / "scratch/minhash/signatures")).clusters()
    assert len(ours) >= 5 and partition(ref) == ours
    # and the same number of documents removed
    removed = sum(len(f.read_bytes()) // struct.calcsize("<I") for f in ref_out.glob("*.remove"))
    assert removed == sum(len(g) - 1 for g in ours)
