"The data stage: EDGAR readers, extraction, filters, accounting, bad input, S3 over HTTP and SLURM."
import gzip
import json
import os
import subprocess

import pytest

from sec_nb.data import account, copy_corpus, is_heldout, quality_reason, run_sec_pipeline, write_instruct
from sec_nb.edgar import documents_from_bytes, split_submission

PARA = ("The Company entered into a definitive agreement to acquire the assets of a regional distributor. "
        "Revenue for the quarter increased compared with the prior year, driven by higher volumes. ")
WORDS = ("company revenue quarter agreement assets lease director officer shares stock market credit loan bank "
         "interest rate income expense cash flow debt notes board committee audit risk factor customer product "
         "segment operating margin growth decline acquisition merger filing report annual period fiscal year").split()


def prose(seed, n=120) -> str:
    "Distinct sentence-like text per seed, so documents are not near-duplicates of each other."
    import random
    rng = random.Random(seed)
    return " ".join(" ".join(rng.choice(WORDS) for _ in range(11)).capitalize() + "." for _ in range(n // 11 + 1))


HEADER = """<SEC-DOCUMENT>{acc}.txt : 20240102
<SEC-HEADER>{acc}.hdr.sgml : 20240102
ACCESSION NUMBER:		{acc}
CONFORMED SUBMISSION TYPE:	8-K
CONFORMED PERIOD OF REPORT:	20231229
FILED AS OF DATE:		20240102
FILER:
	COMPANY DATA:
		COMPANY CONFORMED NAME:			EXAMPLE HOLDINGS INC
		CENTRAL INDEX KEY:			0000123456
</SEC-HEADER>
"""


def submission(acc: str, words: int = 1, closed: bool = True) -> str:
    "An 8-K submission: an HTML main document, a plain-text exhibit, a uuencoded image and an XML form."
    body = f"<html><body><h1>Item 2.01 {acc}</h1>" + "".join(f"<p>{prose(acc + str(i), 40)}</p>" for i in range(words * 4)) + \
           "<table><tr><td>Revenue</td><td>$12.5</td></tr><tr><td>Net income</td><td>$1.2</td></tr></table></body></html>"
    docs = [("8-K", 1, "form8k.htm", "CURRENT REPORT", body),
            ("EX-99.1", 2, "ex99.txt", "PRESS RELEASE", "<PAGE>\n" + f"Press release {acc}. " + prose(acc + "ex", 100)),
            ("GRAPHIC", 3, "logo.jpg", "", "begin 644 logo.jpg\nM_]C_X``02D9)1@`!`0$`8`!@``#_VP!#``@&!@<&!0@'!P<)\n`\nend"),
            ("XML", 4, "form.xml", "", "<XML>\n<?xml version='1.0'?>\n<edgarSubmission><x>1</x></edgarSubmission>\n</XML>")]
    text = HEADER.format(acc=acc) + "".join(
        f"<DOCUMENT>\n<TYPE>{t}\n<SEQUENCE>{s}\n<FILENAME>{f}\n<DESCRIPTION>{d}\n<TEXT>\n{b}\n</TEXT>\n</DOCUMENT>\n"
        for t, s, f, d, b in docs)
    return text if closed else text[:text.rfind("</TEXT>")]


def write_filings(root, n=3):
    for i in range(n):
        acc = f"0000123456-24-{i:06d}"
        p = root / "raw" / "8-K" / f"{acc}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(submission(acc))
    return root / "raw"


def read_gz(folder):
    return [json.loads(l) for p in sorted(folder.glob("*.jsonl.gz")) for l in gzip.open(p, "rt")]


# --- readers --------------------------------------------------------------------------------------------
def test_submission_split_and_metadata():
    header, docs = split_submission(submission("0000123456-24-000001"))
    assert header == {"accession": "0000123456-24-000001", "form": "8-K", "period": "20231229",
                      "filing_date": "20240102", "company": "EXAMPLE HOLDINGS INC", "cik": "0000123456"}
    assert [(d["type"], d["sequence"], d["filename"]) for d in docs] == [
        ("8-K", "1", "form8k.htm"), ("EX-99.1", "2", "ex99.txt"), ("GRAPHIC", "3", "logo.jpg"), ("XML", "4", "form.xml")]
    assert docs[1]["description"] == "PRESS RELEASE" and not any(d["truncated"] for d in docs)
    out = documents_from_bytes(submission("0000123456-24-000001").encode(), "raw/8-K/x.txt")
    assert [d.metadata["payload"] for d in out] == ["html", "text", "image", "xml"]
    assert [d.metadata.get("reject") for d in out] == [None, None, "image", "xml_form"]
    assert out[0].id == "0000123456-24-000001/1" and out[0].metadata["cik"] == "0000123456"


def test_new_style_nc_header_and_standalone_html():
    nc = ("<SUBMISSION>\n<ACCESSION-NUMBER>0001562180-25-000280<TYPE>4<PERIOD>20250106<FILING-DATE>20250108"
          "<FILER><COMPANY-DATA><CONFORMED-NAME>Snow Jessica<CIK>0002009134</COMPANY-DATA></FILER>"
          "<DOCUMENT><TYPE>4<SEQUENCE>1<FILENAME>p.xml<TEXT><XML><?xml version='1.0'?><ownershipDocument/></XML></TEXT></DOCUMENT>")
    d, = documents_from_bytes(nc.encode(), "raw/4/x.nc")
    assert d.metadata["accession"] == "0001562180-25-000280" and d.metadata["form"] == "4"
    assert d.metadata["reject"] == "xml_form"
    h, = documents_from_bytes(b"<html><body><p>Hello</p></body></html>", "raw/10-K/0000320193-24-000123.htm")
    assert h.metadata["payload"] == "html" and h.metadata["form"] == "10-K" and h.metadata["filing"] == "0000320193-24-000123"


def test_real_filings_all_read(tmp_path):
    "Every real filing of the mirror yields documents (skipped where the dataset is not available)."
    try:
        from sec_nb.datasets import dataset_dir
        root = dataset_dir("sec_filings") / "raw"
    except Exception as e:
        pytest.skip(f"sec_filings not available: {e}")
    files = sorted(p for p in root.rglob("*") if p.is_file())
    assert len(files) == 674
    docs = [d for p in files for d in documents_from_bytes(p.read_bytes(), str(p.relative_to(root)))]
    kinds = {d.metadata["payload"] for d in docs}
    assert len(docs) > 674 and {"html", "text", "xml", "image"} <= kinds
    assert all(d.metadata["form"] for d in docs)


# --- filters, split, instructions ----------------------------------------------------------------------
def test_quality_and_split():
    assert quality_reason("too few words") == "too_short"
    assert quality_reason(PARA * 3) is None
    assert quality_reason("\n".join(["Same line repeated here."] * 40) + "\n" + PARA) == "repetitive"
    assert is_heldout("0000123456-24-000001", 100) and not is_heldout("0000123456-24-000001", 0)


def test_instruct_format(tmp_path):
    src = tmp_path / "ins"
    src.mkdir()
    rows = [{"instruction": "Add.", "input": "1+1", "output": "2<|endoftext|>"}] * 2 + [{"instruction": "Hi", "input": "", "output": "Hello"}]
    (src / "a.json").write_text(json.dumps(rows))
    n = write_instruct([src], tmp_path / "train.jsonl")
    got = [json.loads(l) for l in open(tmp_path / "train.jsonl")]
    assert n == 2 and {g["prompt"] for g in got} == {"Add.\n\n1+1", "Hi"} and {g["response"] for g in got} == {"2", "Hello"}
    assert all(set(g) == {"id", "prompt", "response"} for g in got)


# --- the pipeline, accounting and bad input ------------------------------------------------------------
def test_pipeline_accounts_for_every_document(tmp_path):
    src = write_filings(tmp_path, n=3)
    dup = src / "8-K" / "0000123456-24-000099.txt"          # an exact copy of a filing under another accession
    dup.write_text(submission("0000123456-24-000000").replace("0000123456-24-000000", "0000123456-24-000099"))
    acc = run_sec_pipeline(str(src), str(tmp_path / "out"), tasks=2, workers=1, min_words=20, heldout_pct=50)
    assert acc["read"] == 16 and acc["kept"]["docs"] + acc["rejected"]["docs"] == 16
    assert acc["by_reason"]["image"]["docs"] == 4 and acc["by_reason"]["xml_form"]["docs"] == 4
    assert acc["by_reason"]["near_duplicate"]["docs"] + acc["by_reason"].get("exact_duplicate", {}).get("docs", 0) >= 1
    train, held = read_gz(tmp_path / "out" / "sec_train"), read_gz(tmp_path / "out" / "sec_heldout")
    # split by filing: no filing on both sides
    assert not {d["metadata"]["filing"] for d in train} & {d["metadata"]["filing"] for d in held}
    md = next(d for d in train + held if d["metadata"]["payload"] == "html")
    assert "| Revenue | $12.5 |" in md["text"] and md["metadata"]["format"] == "markdown"
    assert all("<PAGE>" not in d["text"] for d in train + held)


def test_bad_inputs_are_reported_and_counted(tmp_path):
    raw = tmp_path / "raw" / "8-K"
    raw.mkdir(parents=True)
    good = submission("0000123456-24-000001")
    (raw / "0000123456-24-000001.txt").write_text(good)
    (raw / "0000123456-24-000002.txt").write_text(submission("0000123456-24-000002", closed=False))    # truncated
    (raw / "0000123456-24-000003.txt").write_text(good.replace("0000123456-24-000001", "0000123456-24-000003")
                                                  .replace("</DOCUMENT>\n<DOCUMENT>\n<TYPE>EX-99.1", "<DOCUMENT>\n<TYPE>EX-99.1"))
    (raw / "0000123456-24-000004.txt").write_bytes(
        HEADER.format(acc="0000123456-24-000004").encode() + b"<DOCUMENT>\n<TYPE>8-K\n<SEQUENCE>1\n<TEXT>\n"
        + ("Caf\xe9 \u201cquoted\u201d " + prose("cp", 80)).encode("cp1252") + b"\n</TEXT>\n</DOCUMENT>\n")
    (raw / "latin1.txt").write_bytes(("Soci\xe9t\xe9 g\xe9n\xe9rale \x81 " + prose("latin", 80)).encode("latin-1"))
    (raw / "empty.htm").write_bytes(b"")
    (raw / "binary.htm").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 10)
    (raw / "script.htm").write_text("<html><head><script>var x = 1;</script></head><body><script>go()</script></body></html>")
    (raw / "huge.htm").write_bytes(b"<html><body>" + b"<p>" + PARA.encode() * 200_000 + b"</p></body></html>")  # > 32 MB
    acc = run_sec_pipeline(str(tmp_path / "raw"), str(tmp_path / "out"), tasks=1, workers=1, min_words=20)
    r = acc["by_reason"]
    assert r["empty_file"]["docs"] == 1 and r["binary"]["docs"] == 1 and r["too_large"]["docs"] == 1
    assert r["extract_empty"]["docs"] == 1                             # HTML holding only scripts
    kept = read_gz(tmp_path / "out" / "sec_train") + read_gz(tmp_path / "out" / "sec_heldout")
    by_file = {}
    for d in kept: by_file.setdefault(d["metadata"]["source_file"].split("/")[-1], []).append(d["metadata"])
    assert by_file["0000123456-24-000004.txt"][0]["encoding"] == "cp1252"
    assert by_file["latin1.txt"][0]["encoding"] == "latin-1"
    rej = [d for step in ("format", "quality", "dedup") for d in read_gz(tmp_path / "out" / "rejected" / step)]
    truncated = [m for m in [d["metadata"] for d in kept] + [d["metadata"] for d in rej] if m.get("truncated")]
    assert {m["filing"] for m in truncated} == {"0000123456-24-000002", "0000123456-24-000003"}
    assert acc["read"] == acc["kept"]["docs"] + acc["rejected"]["docs"]


# --- S3 over HTTP ---------------------------------------------------------------------------------------
def test_s3_in_and_out(s3_endpoint, tmp_path):
    import boto3
    import s3fs
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="sec")
    for i in range(3):
        acc = f"0000123456-24-{i:06d}"
        s3.put_object(Bucket="sec", Key=f"raw/8-K/{acc}.txt", Body=submission(acc).encode())
    acc = run_sec_pipeline("s3://sec/raw", "s3://sec/clean", tasks=2, workers=1, min_words=20, heldout_pct=34)
    assert acc["read"] == 12 and acc["kept"]["docs"] == 6
    fs = s3fs.S3FileSystem()
    fs.invalidate_cache()
    written = fs.find("sec/clean/sec_train") + fs.find("sec/clean/sec_heldout")
    assert written and all(p.endswith(".jsonl.gz") for p in written)
    rows = [json.loads(l) for p in written for l in gzip.decompress(fs.cat(p)).decode().splitlines()]
    assert len(rows) == 6 and all(r["text"] and r["id"] for r in rows)
    # the next stages read local copies of what the pipeline wrote to S3
    copied = copy_corpus("s3://sec/clean", tmp_path / "run_data")
    local = read_gz(copied[0]) + read_gz(copied[1])
    assert sorted(r["id"] for r in local) == sorted(r["id"] for r in rows)


# --- SLURM ----------------------------------------------------------------------------------------------
def test_slurm_executor(slurm_cluster, tmp_path):
    src = write_filings(tmp_path, n=2)
    acc = run_sec_pipeline(str(src), str(tmp_path / "out"), tasks=2, workers=2, min_words=20, executor="slurm",
                           slurm={"logs": str(tmp_path / "slurm_logs")})
    assert acc["read"] == 8 and acc["kept"]["docs"] == 4
    assert (tmp_path / "out" / "scratch" / "logs" / "extract" / "completions").is_dir()
