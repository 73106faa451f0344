"""Benchmark (not a test): the data stage's SEC pipeline on all raw filings with 1 and 2 datatrove workers,
against a plain single-process loop doing the same extraction on the same documents. Median of N runs,
measured side by side (interleaved, so the machine's load affects every configuration alike).

A last configuration runs the plain loop in 2 processes on the pipeline's 2 shards: the ceiling for 2 workers.

The plain loop reads each file, splits it into documents with `sec_nb.edgar.documents_from_bytes` (the
EdgarReader's own code) and extracts every document the reader does not reject, with the pipeline's own
call (`html_to_markdown`: trafilatura, Markdown, tables kept; `clean_plain_text` for plain text). It has no
time limit, no filters, no dedup and writes nothing. The datatrove runs do all of the stage's SEC work:
read, extract under the per-document time limit, reject with reasons, quality filters, dedup, split, write,
and account for every document.

    python bench/data_bench.py [--repeats 3] [--out bench/data_bench.md]
"""
import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path


def plain_loop(root: Path, files: list[Path]) -> dict:
    "The baseline: the same documents and extraction call as the pipeline, in one process, nothing else."
    from sec_nb.data import html_to_markdown
    from sec_nb.edgar import clean_plain_text, documents_from_bytes
    read = extracted = 0
    for p in files:
        for doc in documents_from_bytes(p.read_bytes(), str(p.relative_to(root))):
            read += 1
            if doc.metadata.get("reject"): continue
            text = html_to_markdown(doc.text) if doc.metadata["payload"] == "html" else clean_plain_text(doc.text)
            extracted += bool(text.strip())
    return {"read": read, "kept": extracted}


def plain_loop_in_processes(root: Path, files: list[Path], n: int = 2) -> dict:
    "The ceiling for n workers: the plain loop in n processes, on the n shards the pipeline's tasks would read."
    from multiprocessing import get_context
    from sec_nb.data import balanced_order
    order = balanced_order({str(p.relative_to(root)): p.stat().st_size for p in files}, n)
    with get_context("fork").Pool(n) as pool:
        parts = pool.starmap(plain_loop, [(root, [root / f for f in order[r::n]]) for r in range(n)])
    return {k: sum(p[k] for p in parts) for k in ("read", "kept")}


def datatrove_run(root: Path, workers: int) -> dict:
    from sec_nb.data import run_sec_pipeline
    with tempfile.TemporaryDirectory() as out:
        acc = run_sec_pipeline(str(root), out, tasks=workers, workers=workers)
    return {"read": acc["read"], "kept": acc["kept"]["docs"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).with_name("data_bench.md")))
    args = ap.parse_args()
    from sec_nb.datasets import dataset_dir
    root = dataset_dir("sec_filings") / "raw"
    files = sorted(p for p in root.rglob("*") if p.is_file())
    mb = sum(p.stat().st_size for p in files) / 1e6
    configs = [("plain loop: reader + trafilatura (1 process)", lambda: plain_loop(root, files)),
               ("datatrove, 1 worker", lambda: datatrove_run(root, 1)),
               ("datatrove, 2 workers", lambda: datatrove_run(root, 2)),
               ("ceiling: plain loop in 2 processes (the 2 tasks' shards)", lambda: plain_loop_in_processes(root, files))]
    results = {}
    for rep in range(args.repeats):
        for name, fn in configs:
            t0 = time.perf_counter()
            r = fn()
            r["s"] = time.perf_counter() - t0
            results.setdefault(name, []).append(r)
            print(f"run {rep + 1}: {name}: {r['s']:.1f} s, read {r['read']}, kept {r['kept']}", flush=True)
    base = statistics.median(r["s"] for r in results[configs[0][0]])
    load = os.getloadavg()
    lines = ["# Data stage benchmark\n",
             f"{len(files)} raw filings, {mb:.1f} MB, on a machine with {os.cpu_count()} CPU cores; median of "
             f"{args.repeats} run(s) of each configuration, interleaved. Load average at the end: "
             f"{load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (1/5/15 min).\n",
             "| pipeline | seconds (median) | all runs (s) | documents read | docs/s | MB/s | documents kept "
             "| speed vs plain loop (ratio of medians) | paired ratios, run by run | median paired ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, _ in configs:
        rs = results[name]
        t = statistics.median(r["s"] for r in rs)
        runs = ", ".join(f"{r['s']:.1f}" for r in rs)
        # each run against the loop run just before it: the two saw the same moment of a noisy machine
        paired = [b["s"] / r["s"] for b, r in zip(results[configs[0][0]], rs)]
        lines.append(f"| {name} | {t:.1f} | {runs} | {rs[0]['read']} | "
                     f"{rs[0]['read'] / t:.1f} | {mb / t:.2f} | {rs[0]['kept']} | {base / t:.2f}x | "
                     f"{', '.join(f'{x:.2f}' for x in paired)} | {statistics.median(paired):.2f}x |")
    lines.append("\nPlain loop: `documents_from_bytes` (the EdgarReader's splitting) and the pipeline's extraction call on "
                 "every document the reader does not reject; kept = documents with non-empty text after extraction (no "
                 "filters). datatrove: the whole SEC pipeline of the stage (`run_sec_pipeline`, tasks = workers), "
                 "kept = documents in sec_train + sec_heldout after quality filters and dedup. "
                 "Paired ratios: the loop's time divided by the configuration's in the same round; the rounds are "
                 "interleaved, so each pair shares the machine's load of that minute. "
                 "Targets (issue 3): 1 worker within 10% of the loop (>= 0.90x); 2 workers >= 1.70x. "
                 "Ceiling: the plain loop run as 2 processes (a pool of 2) on the 2 shards the pipeline's tasks read: "
                 "what 2 workers would take if the stage did nothing but read and extract.")
    out = Path(args.out)      # the notes a person wrote under the table stay
    notes = out.read_text().partition("\n## Notes")[2] if out.exists() else ""
    out.write_text("\n".join(lines) + "\n" + (f"\n## Notes{notes}" if notes else ""))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
