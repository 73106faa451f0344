"Accounting by construction: reader skips become rejections, the hand-over count is checked, outputs are reproducible."
import gzip
import hashlib
import json
from pathlib import Path

import pytest

from sec_nb.data import account, build_pipeline, run_sec_pipeline, write_documents
from test_data import prose, read_gz, write_filings


def test_reader_skips_are_counted(tmp_path):
    src = write_filings(tmp_path, n=2)
    extra = tmp_path / "extra"
    extra.mkdir()
    rows = [{"id": "x/1", "text": prose("extra", 120), "metadata": {"form": "10-K", "filing": "x1"}},
            {"id": "x/2", "text": "", "metadata": {"form": "10-K", "filing": "x2"}}]
    with gzip.open(extra / "a.jsonl.gz", "wt") as f:
        f.write("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    acc = run_sec_pipeline(str(src), str(tmp_path / "out"), tasks=1, workers=1, min_words=20, extra_folders=[str(extra)])
    assert acc["read"] == 8 + 3 and acc["read"] == acc["kept"]["docs"] + acc["rejected"]["docs"]
    assert acc["by_reason"]["empty_text"]["docs"] == 1 and acc["by_reason"]["unparsable_line"]["docs"] == 1
    kept = read_gz(tmp_path / "out" / "sec_train") + read_gz(tmp_path / "out" / "sec_heldout")
    assert "x/1" in {d["id"] for d in kept} and not any("file_path" in d["metadata"] for d in kept)


def test_handover_loss_fails_loudly(tmp_path):
    src = write_filings(tmp_path, n=2)
    out = tmp_path / "out"
    stages = build_pipeline(str(src), str(out), tasks=1, workers=1, min_words=20)
    stages["extract"].run()
    f = next((out / "scratch" / "extracted").glob("*.jsonl"))
    lines = f.read_text().splitlines(True)
    f.write_text("".join(lines[:-1]))                 # one document lost between the two executors
    stages["buckets"].depends = None                # the rest of the stage, without running the extraction again
    stages["filter"].run()
    with pytest.raises(RuntimeError, match="hand-over mismatch.*4 documents written, 3 read"):
        account(str(out))


def test_tallies_equal_what_is_on_disk(tmp_path):
    "The accounting sums the writers' per-task tallies; they equal a count of the written files, read back (2 tasks)."
    from collections import Counter
    src = write_filings(tmp_path, n=4)
    out = tmp_path / "out"
    acc = run_sec_pipeline(str(src), str(out), tasks=2, workers=1, min_words=20, heldout_pct=50)
    kept = {s: read_gz(out / s) for s in ("sec_train", "sec_heldout")}
    assert acc["kept"]["docs"] == sum(map(len, kept.values())) > 0
    for s, docs in kept.items():
        assert acc["kept"][f"docs_{s}"] == len(docs) and acc["filings_kept"][s] == len({d["metadata"]["filing"] for d in docs})
        assert acc["kept"][f"words_{s}"] == sum(len(d["text"].split()) for d in docs)
    rejected = [d for step in ("format", "quality", "dedup") for d in read_gz(out / "rejected" / step)]
    assert acc["rejected"]["docs"] == len(rejected) > 0
    assert {r: v["docs"] for r, v in acc["by_reason"].items()} == dict(Counter(d["metadata"]["filter_reason"] for d in rejected))
    forms = Counter(d["metadata"].get("form", "") for docs in kept.values() for d in docs)
    assert {f: v["kept"] for f, v in acc["by_form"].items() if v.get("kept")} == dict(forms)


def digests(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*.jsonl.gz"))}


def test_two_runs_give_identical_bytes(tmp_path):
    "Same input, two empty run dirs in different places: byte-identical outputs, no absolute path inside."
    src = write_filings(tmp_path, n=3)
    a, b = tmp_path / "a" / "out", tmp_path / "elsewhere" / "b" / "out"
    for out in (a, b):
        run_sec_pipeline(str(src), str(out), tasks=2, workers=1, min_words=20, heldout_pct=50)
    da, db = digests(a), digests(b)
    assert da and da == db
    for p in a.rglob("*.jsonl.gz"):
        if "scratch" in p.parts: continue
        raw = p.read_bytes()
        assert raw[4:8] == b"\0\0\0\0"                 # gzip mtime 0
        assert str(tmp_path).encode() not in gzip.decompress(raw), p
