"""The bucket Job of manifests/base runs for real: its script, taken from the rendered
manifest, is executed with the Secret's variables against a SeaweedFS S3 server on 127.0.0.1
(the same store a standalone KFP install runs)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def job_command(render_kustomization, containers_of) -> tuple[list[str], dict[str, str]]:
    job = next(o for o in render_kustomization(ROOT / "manifests" / "base") if o["kind"] == "Job")
    (c,) = containers_of(job)
    return [*c["command"], *c["args"]], {e["name"]: e["value"] for e in c.get("env", [])}


def run_job(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run the container's command here: `python` is this interpreter, the env only the Job's."""
    assert cmd[0] == "python"
    return subprocess.run([sys.executable, *cmd[1:]], capture_output=True, text=True, timeout=120,
                          env={"PATH": os.environ.get("PATH", ""), "PYTHONDONTWRITEBYTECODE": "1", **env})


def secret_env(settings, endpoint: str, access: str, secret: str) -> dict[str, str]:
    """The variables the scratchbert-s3 Secret gives the pod (keys from settings)."""
    values = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": access, "AWS_SECRET_ACCESS_KEY": secret}
    return {key: values[key] for key in settings.S3_SECRET_KEYS}


def test_bucket_job_creates_the_bucket_once(embedded_s3, render_kustomization, containers_of, settings):
    cmd, env = job_command(render_kustomization, containers_of)
    env |= secret_env(settings, embedded_s3.endpoint, embedded_s3.access_key, embedded_s3.secret_key)
    first = run_job(cmd, env)
    assert first.returncode == 0, first.stderr
    assert f"bucket {settings.PUBLISH_BUCKET} created" in first.stdout
    assert embedded_s3.client().bucket_exists(settings.PUBLISH_BUCKET)
    again = run_job(cmd, env)
    assert again.returncode == 0 and "already exists" in again.stdout, again.stderr


def test_bucket_job_rejects_a_bad_endpoint(render_kustomization, containers_of, settings):
    pytest.importorskip("scratchbert.storage")
    cmd, env = job_command(render_kustomization, containers_of)
    env |= secret_env(settings, "seaweedfs:9000", "a", "b")
    proc = run_job(cmd, env)
    assert proc.returncode != 0
    assert "Secret scratchbert-s3" in proc.stderr and "AWS_ENDPOINT_URL" in proc.stderr
    assert "Traceback" not in proc.stderr
