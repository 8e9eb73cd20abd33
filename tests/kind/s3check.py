"""Run inside the worker-cpu image on the kind cluster: ``create-bucket BUCKET`` or ``verify URI...``.

Why a script and not the mc client: the worker image already has boto3, so the check needs no extra image.
Credentials and endpoint come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, S3_ENDPOINT).
"""

from __future__ import annotations

import json
import os
import sys

import boto3
from botocore.config import Config


def main(argv: list[str]) -> int:
    s3 = boto3.client(
        "s3",
        endpoint_url=os.environ["S3_ENDPOINT"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, signature_version="s3v4"),
    )
    if argv[0] == "create-bucket":
        existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        if argv[1] not in existing:
            s3.create_bucket(Bucket=argv[1])
        print(f"bucket {argv[1]} ready")
        return 0
    uris = json.loads(argv[1])
    assert uris, "the job reported no outputs"
    for uri in uris:
        bucket, _, key = uri.removeprefix("s3://").partition("/")
        head = s3.head_object(Bucket=bucket, Key=key)
        assert head["ContentLength"] > 0, uri
        print(f"ok {uri} {head['ContentLength']} bytes")
    bucket, _, key = uris[0].removeprefix("s3://").partition("/")
    prefix = key.split("/outputs/")[0]
    manifest = json.loads(s3.get_object(Bucket=bucket, Key=f"{prefix}/manifest.json")["Body"].read())
    print(f"ok manifest s3://{bucket}/{prefix}/manifest.json: {len(manifest.get('outputs', []))} outputs")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
