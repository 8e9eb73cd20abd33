"""``python -m asyncdiff_worker.demo`` (``make demo``): one AsyncDiffJob end to end on this machine.

Why: a fresh checkout should show the whole worker path in one command, with nothing to download: it builds a tiny
random-weight SD 1.5 pipeline in ./.demo/, starts an embedded S3 server (moto) on 127.0.0.1, uploads the model to
it, writes an AsyncDiffJob manifest to ./.demo/tiny-sd.yaml, runs it with ``asyncdiff run`` on 2 processes (gloo),
copies the outputs to ./.demo/outputs/ (the embedded server forgets everything when it stops) and prints where
everything is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from asyncdiff_worker.local_run import run_job

BUCKET = "asyncdiff-demo"


def _upload_folder(client: object, folder: Path, bucket: str, prefix: str) -> int:
    count = 0
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            client.upload_file(str(path), bucket, f"{prefix}/{path.relative_to(folder).as_posix()}")  # type: ignore[attr-defined]
            count += 1
    return count


def job_manifest(endpoint_url: str, *, steps: int = 8, prompts: list[str] | None = None) -> dict[str, object]:
    return {
        "apiVersion": "asyncdiff.io/v1alpha1",
        "kind": "AsyncDiffJob",
        "metadata": {"name": "tiny-sd"},
        "spec": {
            "model": {"family": "sd15", "source": f"s3://{BUCKET}/models/tiny-sd15", "dtype": "float32"},
            "parallelism": {"modelN": 2, "stride": 1, "warmUp": 1, "timeShift": False},
            "generation": {
                "prompts": prompts or ["a red cube on a blue table", "a lighthouse at dusk"],
                "negativePrompt": "blurry",
                "steps": steps,
                "guidanceScale": 5.0,
                "height": 64,
                "width": 64,
                "seed": 42,
                "imagesPerPrompt": 2,
            },
            "output": {
                "uri": f"s3://{BUCKET}/results",
                "format": "png",
                "endpointUrl": endpoint_url,
                "region": "us-east-1",
                "forcePathStyle": True,
            },
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m asyncdiff_worker.demo", description=__doc__)
    parser.add_argument("--dir", default=".demo", help="work folder (default ./.demo)")
    args = parser.parse_args(argv)
    work = Path(args.dir).resolve()
    work.mkdir(parents=True, exist_ok=True)

    from asyncdiff_worker.embedded_s3 import start_embedded_s3, use_test_credentials

    print(f"demo: building a tiny sd15 pipeline in {work / 'tiny-sd15'} ...", flush=True)
    from asyncdiff.testing.tiny_pipelines import build_tiny_pipeline

    model_dir = build_tiny_pipeline("sd15", work / "tiny-sd15", layout="minimal", seed=0)

    use_test_credentials()
    s3 = start_embedded_s3()
    try:
        print(f"demo: embedded S3 (moto) at {s3.endpoint_url}, bucket {BUCKET}", flush=True)
        client = s3.client()
        client.create_bucket(Bucket=BUCKET)
        files = _upload_folder(client, model_dir, BUCKET, "models/tiny-sd15")
        print(f"demo: uploaded the model ({files} files) to s3://{BUCKET}/models/tiny-sd15", flush=True)
        job_path = work / "tiny-sd.yaml"
        job_path.write_text(yaml.safe_dump(job_manifest(s3.endpoint_url), sort_keys=False))
        print(f"demo: wrote {job_path}; running: asyncdiff run {job_path}", flush=True)
        code, manifest, _ = run_job(job_path)
        if code != 0 or manifest is None:
            print(f"demo: the job failed with exit code {code}", file=sys.stderr)
            return code or 1
        out_dir = work / "outputs"
        out_dir.mkdir(exist_ok=True)
        for record in manifest.outputs:
            key = record.uri.removeprefix(f"s3://{BUCKET}/")
            dest = out_dir / Path(key).name
            client.download_file(BUCKET, key, str(dest))
        manifest_copy = out_dir / "manifest.json"
        manifest_copy.write_bytes(manifest.to_json())
        print(f"demo: outputs copied to {out_dir} (the embedded S3 server forgets them when it stops):")
        for path in sorted(out_dir.iterdir()):
            print(f"  {path}")
        if manifest.plan_description:
            print(
                "demo: AsyncDiff split plan:\n" + "\n".join("  " + ln for ln in manifest.plan_description.splitlines())
            )
        return 0
    finally:
        s3.stop()
        print("demo: embedded S3 stopped", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
