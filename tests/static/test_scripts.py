"""scripts/: valid bash, strict mode, usage text, and (through --dry-run) the commands they
would run, with every name and version taken from pipelines/settings.py."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
IDS = [p.name for p in SCRIPTS]


def sh(*args: str, root: Path = ROOT, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    full_env.pop("DRY_RUN", None)
    full_env.update(env or {})
    return subprocess.run(["bash", *args], cwd=root, capture_output=True, text=True,
                          timeout=60, env=full_env)


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_bash_syntax(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=IDS)
def test_shellcheck(script):
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is not installed")
    proc = subprocess.run([shellcheck, "-x", "-P", str(ROOT), str(script)], capture_output=True,
                          text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s.name != "lib.sh"],
                         ids=[n for n in IDS if n != "lib.sh"])
def test_strict_mode_and_usage(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash"), "shebang"
    assert "set -euo pipefail" in text
    assert os.access(script, os.X_OK), f"{script.name} is not executable"
    proc = sh(str(script), "--help")
    assert proc.returncode == 0 and "Usage:" in proc.stdout, proc.stderr
    bad = sh(str(script), "--no-such-flag")
    assert bad.returncode != 0 and "unknown argument" in bad.stderr


def test_build_images_dry_run(settings):
    version = settings.project_version()
    cpu = f"{settings.IMAGE_REGISTRY}/{settings.CPU_IMAGE_NAME}:{version}"
    gpu = f"{settings.IMAGE_REGISTRY}/{settings.GPU_IMAGE_NAME}:{version}"
    proc = sh("scripts/build-images.sh", "--kind-load", "test-cluster", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    lines = [line for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert lines == [
        f"+ docker build --file images/Dockerfile --build-arg VERSION={version} --tag {cpu} .",
        f"+ kind load docker-image --name test-cluster {cpu}",
        f"+ docker build --file images/Dockerfile.cuda --build-arg VERSION={version} --tag {gpu} .",
        f"+ kind load docker-image --name test-cluster {gpu}",
    ]
    # the CUDA image only onto the GPU workers (it went onto the control plane and CPU worker too)
    nodes = sh("scripts/build-images.sh", "--kind-load", "test-cluster", "--gpu-nodes", "w1,w2", "--dry-run")
    assert [line for line in nodes.stdout.splitlines() if line.startswith("+ kind load")] == [
        f"+ kind load docker-image --name test-cluster {cpu}", f"+ kind load docker-image --name test-cluster --nodes w1,w2 {gpu}"]
    push = sh("scripts/build-images.sh", "--push", "--only", "cuda", "--dry-run")
    assert push.returncode == 0
    assert [line for line in push.stdout.splitlines() if line.startswith("+ ")][-1] == f"+ docker push {gpu}"
    assert sh("scripts/build-images.sh", "--kind-load").returncode != 0


def kind_up(*args: str, root: Path = ROOT) -> tuple[list[str], str]:
    """The commands a dry run prints (first lines) and its whole output."""
    proc = sh("scripts/kind-up.sh", *args, "--dry-run", "--no-port-forward", root=root)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout + proc.stderr
    return [line[2:] for line in out.splitlines() if line.startswith("+ ")], out


def test_kind_up_gpu_dry_run(settings):
    cmds, out = kind_up("--gpu", "--name", "t")
    text = "\n".join(cmds)
    assert cmds[0].startswith("kind create cluster --name t --config ") and cmds[0].split()[6].endswith(
        "manifests/kind/kind-gpu.yaml")
    refs = re.findall(r"kubeflow/pipelines/manifests/kustomize/(\S+)\?ref=(\S+)", text)
    assert refs == [("cluster-scoped-resources", settings.KFP_VERSION),
                    ("env/platform-agnostic", settings.KFP_VERSION)]
    # CRDs are waited for between the two applies.
    i = next(n for n, c in enumerate(cmds) if "cluster-scoped-resources" in c)
    assert "wait --for condition=established" in cmds[i + 1]
    assert f"-l {settings.GPU_NODE_LABEL_KEY}={settings.GPU_NODE_LABEL_VALUE}" in text
    assert "nvidia-ctk runtime configure --runtime=containerd --set-as-default" in out
    assert "scripts/build-images.sh --kind-load t --gpu-nodes dry-run" in text and "--only cpu" not in text
    assert re.search(r"apply -k \S+/manifests/overlays/kind-gpu$", text, re.M)
    assert f"-n {settings.NAMESPACE} wait --for=condition=complete job/scratchbert-create-bucket" in text
    assert "rollout status daemonset/nvidia-device-plugin-daemonset" in text
    assert "--context kind-t" in text


def test_kind_up_cpu_dry_run(settings):
    cmds, out = kind_up("--cpu", "--no-build")
    text = "\n".join(cmds)
    assert "kind-cpu.yaml" in cmds[0]
    assert "nvidia" not in out
    assert f"kind load docker-image --name scratchbert {settings.default_image()}" in text
    assert re.search(r"apply -k \S+/manifests/overlays/kind-cpu$", text, re.M)
    # the default pipeline pretrains on a GPU node: the script points at the CPU pipeline
    assert "--package pipelines/bert_pipeline_cpu.yaml" in out and (ROOT / "pipelines" / "bert_pipeline_cpu.yaml").is_file()
    assert "bert_pipeline_cpu" not in kind_up("--gpu", "--no-build")[1]
    proc = sh("scripts/kind-up.sh", "--dry-run")
    assert proc.returncode != 0 and "choose --gpu or --cpu" in proc.stderr


def test_kind_up_follows_settings(tmp_path, settings):
    """Change KFP_VERSION and the namespace in a copy of settings.py: the script follows."""
    for part in ("scripts", "manifests"):
        shutil.copytree(ROOT / part, tmp_path / part)
    (tmp_path / "pipelines").mkdir()
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    text = (ROOT / "pipelines" / "settings.py").read_text()
    text = re.sub(r'^KFP_VERSION = "[^"]+"', 'KFP_VERSION = "9.8.7"', text, flags=re.M)
    text = re.sub(r'^NAMESPACE = "[^"]+"', 'NAMESPACE = "elsewhere"', text, flags=re.M)
    (tmp_path / "pipelines" / "settings.py").write_text(text)
    joined = kind_up("--cpu", root=tmp_path)[1]
    assert "?ref=9.8.7" in joined and f"?ref={settings.KFP_VERSION}" not in joined
    assert "-n elsewhere wait" in joined
