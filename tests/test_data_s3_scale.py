"S3 at scale: the listing streams page by page and each task reads its own share of keys (moto's S3 server over HTTP)."
import json
import os
import subprocess
import sys

N = 10_500


LISTING_MEMORY = """
import json, tracemalloc, itertools
from sec_nb.data import iter_filings
tracemalloc.start()
stream = iter_filings("s3://big/raw")
first = list(itertools.islice(stream, 1000))          # one page: client set up, first request answered
tracemalloc.reset_peak(); base = tracemalloc.get_traced_memory()[0]
n = len(first) + sum(1 for _ in stream)
print(json.dumps({"n": n, "extra_peak": tracemalloc.get_traced_memory()[1] - base}))
"""


def test_listing_streams_and_tasks_share_keys(s3_endpoint, tmp_path):
    import boto3
    from datatrove.io import get_shard_from_paths_file
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends
    from sec_nb.data import write_paths_file
    boto3.client("s3").create_bucket(Bucket="big")
    keys = [f"raw/8-K/{i % 97:02d}/0000{i:06d}-24-{i:06d}.txt" for i in range(N)]
    # the objects go straight into the server's store (10,000 PUTs over HTTP take minutes on 2 cores);
    # everything the stage does below goes over HTTP
    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    for k in keys: backend.put_object("big", k, b"x" * (1 + len(k) % 7))
    listed = [(k[4:], 1 + len(k) % 7) for k in keys]
    # streamed: after the first page, listing the other 9,500 keys holds no more than about a page of objects
    got = json.loads(subprocess.run([sys.executable, "-c", LISTING_MEMORY], capture_output=True, text=True,
                                    check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"}).stdout.splitlines()[-1])
    assert got["n"] == N and got["extra_peak"] < 3 * 2**20, got
    # the paths file goes to S3 too; each of 4 tasks streams its own quarter of it, with datatrove's own sharding
    write_paths_file("s3://big/raw", "s3://big/scratch", tasks=4)
    shares = [list(get_shard_from_paths_file("s3://big/scratch/paths.txt", r, 4)) for r in range(4)]
    assert sorted(p for s in shares for p in s) == sorted(n for n, _ in listed)
    assert all(abs(len(s) - N / 4) <= 1 for s in shares) and not set(shares[0]) & set(shares[1])
    sizes = dict(listed)
    totals = [sum(sizes[p] for p in s) for s in shares]
    assert max(totals) - min(totals) <= 7                       # balanced by bytes (snake order)


def test_even_spread_of_a_streamed_listing(tmp_path):
    from sec_nb.data import iter_filings, select_filings
    for i in range(50): (tmp_path / f"{i:03d}.txt").write_text("x" * i)
    assert [n for n, _ in iter_filings(str(tmp_path))] == [f"{i:03d}.txt" for i in range(50)]
    assert [n for n, _ in select_filings(str(tmp_path), 10)] == [f"{i:03d}.txt" for i in range(0, 50, 5)]
    assert len(list(select_filings(str(tmp_path), 80))) == 50
