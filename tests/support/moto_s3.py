"""An S3-protocol server for tests: moto's, on 127.0.0.1 with a port the
kernel picks. Creates the buckets named on the command line, prints the
port on one line, and serves until its stdin closes (so it never outlives
the test process that started it, even one killed with SIGKILL).

    PYTHONPATH=.cache/mlmesh/py/moto python3 tests/support/moto_s3.py BUCKET...
"""

import sys

import boto3
from moto.server import ThreadedMotoServer


def main() -> None:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    port = server._server.server_port
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )
    for bucket in sys.argv[1:]:
        s3.create_bucket(Bucket=bucket)
    print(port, flush=True)
    sys.stdin.read()
    server.stop()


if __name__ == "__main__":
    main()
