"SEC text that keeps its numbers: inline XBRL, Markdown tables, old plain text, viewer files, per-document limits (real filings)."
import re

import pytest

from sec_nb.data import html_to_markdown, markdown_tables, numbers_kept
from sec_nb.edgar import cell_text, clean_plain_text, documents_from_bytes, unwrap_ixbrl


@pytest.fixture(scope="module")
def raw_root():
    try:
        from sec_nb.datasets import dataset_dir
        return dataset_dir("sec_filings") / "raw"
    except Exception as e:
        pytest.skip(f"sec_filings not available: {e}")


def primary(root, rel):
    d, = documents_from_bytes((root / rel).read_bytes(), rel)
    return d.text


AAPL_10K = "10-K/alphanome_ai__10-K__AAPL__0000320193-24-000123__primary-document.html"
PG_10Q = "10-Q/alphanome_ai__10-Q__PG__0000080424-23-000103__primary-document.html"   # trafilatura flattened its statements


@pytest.mark.parametrize("rel", [AAPL_10K, PG_10Q])
def test_ixbrl_numbers_kept_in_their_rows(raw_root, rel):
    html = primary(raw_root, rel)
    kept = numbers_kept(html, html_to_markdown(html))
    assert kept["facts"] > 400 and kept["share"] >= 0.98, (kept["share"], kept["missing"][:10])
    assert "<ix:" not in unwrap_ixbrl(html) and "ix:header" not in unwrap_ixbrl(html).lower()


def label_of(row):
    return next((t for t in row if re.search("[A-Za-z]{2,}", t)), "")


def html_statement(html: str, must: tuple):
    "The rows (cell texts) of the first HTML table with rows for all line items `must`, read with lxml only."
    from trafilatura.utils import load_html
    for t in load_html(unwrap_ixbrl(html)).iter("table"):
        rows = [[cell_text(td) for td in tr if td.tag in ("td", "th")] for tr in t.iter("tr")]
        if set(must) <= {label_of(r) for r in rows}: return rows


@pytest.mark.parametrize("rel,must", [(AAPL_10K, ("Research and development", "Provision for income taxes")),
                                      (PG_10Q, ("Cost of products sold", "Income taxes"))])
def test_statement_is_a_gfm_table_matching_the_html(raw_root, rel, must):
    html = primary(raw_root, rel)
    table = next(t for t in markdown_tables(html_to_markdown(html)) if set(must) <= {r[0] for r in t})
    header, body = table[0], table[1:]
    assert len({len(r) for r in table}) == 1 and len(header) >= 3          # a real GFM table: header + separator
    assert all(any(r[c] for r in table) for c in range(len(header)))        # no padding column
    assert not any(c in ("$", ")", "%", "(") for r in body for c in r)      # symbols joined to their numbers
    squash = lambda cells: re.sub(r"\s+", "", "".join(cells))
    n, at = 0, 0
    for row in html_statement(html, must):
        label = label_of(row)
        if not label or not any(re.search(r"\d", t) for t in row): continue
        # the next Markdown row with this line item (rows keep their order)
        k = next((k for k in range(at, len(body)) if body[k][0] == label), None)
        if k is None:                                   # a heading with a year: it is in the header row
            assert squash([label]) in squash(header), (label, row)
            continue
        at = k
        # the same characters, in the same order, once padding cells are gone and '$' / ')' have moved
        assert squash(body[at]) == squash(row), (label, body[at], row)
        n, at = n + 1, at + 1
    assert n >= 10
    assert any(re.fullmatch(r"\(\d[\d,]*\)", c) for r in body for c in r) # negative parentheses kept


def test_old_edgar_text_keeps_its_words(raw_root):
    rel = next(str(p.relative_to(raw_root)) for p in raw_root.rglob("1000685_8K_1997_0001036050-97-000815.txt"))
    doc = next(d for d in documents_from_bytes((raw_root / rel).read_bytes(), rel) if d.metadata["sequence"] == "2")
    assert doc.metadata["payload"] == "text" and "<TABLE>" in doc.text
    words = len(clean_plain_text(doc.text).split())
    assert words > 30000 and "<S>" not in clean_plain_text(doc.text)


def test_viewer_files_rejected(raw_root):
    rel = next(str(p.relative_to(raw_root)) for p in raw_root.rglob("*0001493152-25-001317.nc"))
    docs = {d.metadata["filename"]: d for d in documents_from_bytes((raw_root / rel).read_bytes(), rel)}
    for name in ("R1.htm", "Show.js", "report.css", "MetaLinks.json", "FilingSummary.xml"):
        assert docs[name].metadata["reject"] == "viewer_file" and docs[name].text == "", name
    kept = [d for d in docs.values() if not d.metadata.get("reject")]
    assert kept and all(not re.match(r"R\d+\.htm", d.metadata["filename"]) for d in kept)


def test_large_submission_read_past_its_big_document(tmp_path):
    "A file over the limit: its small documents are kept, the big one is rejected alone, with its size."
    from sec_nb.edgar import EdgarReader
    hdr = "<SEC-DOCUMENT>x\n<SEC-HEADER>\nACCESSION NUMBER:\t0000123456-24-000001\nCONFORMED SUBMISSION TYPE:\t8-K\n</SEC-HEADER>\n"
    doc = lambda seq, name, body: f"<DOCUMENT>\n<TYPE>EX\n<SEQUENCE>{seq}\n<FILENAME>{name}\n<TEXT>\n{body}\n</TEXT>\n</DOCUMENT>\n"
    pdf = "begin 644 big.pdf\n" + ("M" + "A" * 60 + "\n") * 2000 + "end"
    (tmp_path / "8-K").mkdir()
    (tmp_path / "8-K" / "0000123456-24-000001.txt").write_text(
        hdr + doc(1, "a.htm", "<html><body><p>First</p></body></html>") + doc(2, "big.pdf", pdf) + doc(3, "c.txt", "Third"))
    got = list(EdgarReader(str(tmp_path), max_bytes=20_000).read_file("8-K/0000123456-24-000001.txt"))
    assert [(d.metadata["sequence"], d.metadata.get("reject")) for d in got] == [("1", None), ("2", "too_large"), ("3", None)]
    assert got[1].metadata["bytes"] > 120_000 and got[1].metadata["filename"] == "big.pdf" and got[2].text == "Third"
