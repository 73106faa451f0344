"""Benchmark (not a test): peak memory of the data stage's MinHash steps, each in a process of its own.

- signatures, buckets and filter at 1x and 4x the corpus (the 674 filings' extracted documents; the 4x corpus adds
  three copies of every document with a third of its words replaced, so they are new documents, not duplicates):
  with the same number of tasks, memory per task should stay flat;
- the cluster step against the number of duplicates (0, 1, 2 and 4 exact copies of a share of the corpus): it holds
  the duplicate pairs, so its memory grows with them; the slope is projected to the paper's corpus.

Memory is the peak of what the step allocates while it runs (Python objects and numpy arrays, traced by
`tracemalloc`), in a process of its own.

    python bench/data_memory.py [--out bench/data_memory.md]
"""
import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

STEP = r"""
import sys, json, tracemalloc
from sec_nb.data import *
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets
step, root, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = minhash_config()
s = f"{root}/minhash"
pipe = {
  "signatures": [StrictJsonlReader(f"{root}/extracted"), SecMinhashSignature(f"{s}/signatures", cfg)],
  "buckets": [MinhashDedupBuckets(f"{s}/signatures", f"{s}/buckets", config=cfg)],
  "clusters": [StableMinhashCluster(f"{s}/buckets", f"{s}/remove", f"{s}/signatures", cfg)],
  "filter": [TaskFileReader(f"{root}/extracted"), SecMinhashFilter(f"{s}/remove"),
             SplitWriter(f"{root}/train", f"{root}/heldout", 10)],
}[step]
n = {"buckets": cfg.num_buckets, "clusters": 1}.get(step, tasks)
ex = LocalPipelineExecutor(pipe, tasks=n, workers=1, logging_dir=f"{root}/logs/{step}", skip_completed=False)
tracemalloc.start()
ex.run()
print(json.dumps({"peak_mb": tracemalloc.get_traced_memory()[1] / 2**20}))
"""


def run_step(step, root, tasks=1) -> float:
    "Peak of the memory the step allocates (Python objects and numpy arrays, `tracemalloc`), MB."
    out = subprocess.run([sys.executable, "-c", STEP, step, str(root), str(tasks)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_mb"]


def perturbed(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    for i in range(0, len(words), 3): words[i] = f"w{rng.randrange(10**9)}"
    return " ".join(words)


def write_corpus(docs, root: Path, tasks: int):
    "`docs` dealt round-robin into `tasks` hand-over files, as the extract executor leaves them."
    (root / "extracted").mkdir(parents=True)
    files = [open(root / "extracted" / f"{r:05d}.jsonl", "w") for r in range(tasks)]
    for i, d in enumerate(docs): files[i % tasks].write(json.dumps(d) + "\n")
    for f in files: f.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).with_name("data_memory.md")))
    ap.add_argument("--work", default="", help="a work folder of an earlier run (its extraction is reused)")
    args = ap.parse_args()
    from sec_nb.data import build_pipeline
    from sec_nb.datasets import dataset_dir
    work = Path(args.work or tempfile.mkdtemp(prefix="sec_nb_mem_"))
    if not (work / "src/scratch/extracted/00000.jsonl").exists():
        build_pipeline(str(dataset_dir("sec_filings") / "raw"), str(work / "src"), tasks=1, workers=1)["extract"].run()
    for old in ("1x", "4x", "dups0", "dups1", "dups2", "dups4"): shutil.rmtree(work / old, ignore_errors=True)
    base = [json.loads(l) for l in open(work / "src/scratch/extracted/00000.jsonl")]
    for d in base: d["metadata"] = {k: d["metadata"].get(k) for k in ("filing", "form")}
    rng = random.Random(0)
    rows, tasks = [], 2
    corpora = {"1x": base, "4x": base + [dict(d, id=f"{d['id']}#{k}", text=perturbed(d["text"], rng))
                                          for k in range(1, 4) for d in base]}
    for name, docs in corpora.items():
        root = work / name
        write_corpus(docs, root, tasks)
        mb = sum(len(d["text"]) for d in docs) / 1e6
        peaks = {s: run_step(s, root, tasks) for s in ("signatures", "buckets", "clusters", "filter")}
        rows.append((name, len(docs), mb, peaks))
        print(name, len(docs), peaks, flush=True)
    dup_rows = []
    share = base[: len(base) // 2]
    for copies in (0, 1, 2, 4):
        docs = base + [dict(d, id=f"{d['id']}#c{k}") for k in range(copies) for d in share]
        root = work / f"dups{copies}"
        write_corpus(docs, root, tasks)
        for s in ("signatures", "buckets"): run_step(s, root, tasks)
        dup_rows.append((copies * len(share), run_step("clusters", root)))
        print("dups", dup_rows[-1], flush=True)
    (d0, m0), (d1, m1) = dup_rows[0], dup_rows[-1]
    per_dup = (m1 - m0) * 2**20 / max(d1 - d0, 1)
    lines = ["# Data stage memory: the MinHash steps\n",
             "Peak memory allocated while each step runs (Python objects and numpy arrays, `tracemalloc`), one process "
             f"per step; {tasks} tasks run one after the other in it (so the figure is the largest task), buckets as 14 "
             "tasks, clusters as one. Shared 2-core machine; memory does not depend on the load.\n",
             "| corpus | documents | text MB | signatures MB | buckets MB | clusters MB | filter MB |", "|---|---|---|---|---|---|---|"]
    for name, n, mb, p in rows:
        lines.append(f"| {name} | {n} | {mb:.1f} | {p['signatures']:.1f} | {p['buckets']:.1f} | {p['clusters']:.1f} | {p['filter']:.1f} |")
    lines += ["", "Cluster step against the number of duplicates (exact copies of half the documents):", "",
              "| duplicates | clusters MB |", "|---|---|"] + [f"| {d} | {m:.1f} |" for d, m in dup_rows]
    lines += ["", f"Slope: {per_dup:.0f} bytes per duplicate. Projected to the paper's corpus (an assumed 10 million "
              f"documents, 30% of them duplicates): {per_dup * 3e6 / 2**30:.1f} GB for the one cluster task; the other "
              "steps stay at their per-task figures above whatever the corpus size, with more tasks."]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
