"The real services the stage tests rely on come up and work: a single-node SLURM and an S3 endpoint over HTTP."
import subprocess
import time


def test_slurm_runs_a_two_task_job(slurm_cluster, tmp_path):
    script = tmp_path / "job.sh"
    script.write_text("#!/bin/bash\nsrun -n2 bash -c 'echo rank=$SLURM_PROCID' > %s/out.txt\n" % tmp_path)
    jid = subprocess.run(["sbatch", "--parsable", "-n2", "-o", str(tmp_path / "slurm.log"), str(script)],
                         capture_output=True, text=True, check=True).stdout.strip()
    for _ in range(600):
        if not subprocess.run(["squeue", "-h", "-j", jid], capture_output=True, text=True).stdout.strip(): break
        time.sleep(0.1)
    assert sorted((tmp_path / "out.txt").read_text().split()) == ["rank=0", "rank=1"]


def test_s3_endpoint_speaks_http(s3_endpoint):
    import boto3
    import s3fs
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="probe")
    s3.put_object(Bucket="probe", Key="raw/a.txt", Body=b"10-K")
    assert s3_endpoint.startswith("http://127.0.0.1:")
    assert s3fs.S3FileSystem().cat("probe/raw/a.txt") == b"10-K"
