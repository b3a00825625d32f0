"""manifests/kind/: the kind cluster configs agree with pipelines/settings.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KIND = ROOT / "manifests" / "kind"
GPU_MOUNT = {"hostPath": "/dev/null", "containerPath": "/var/run/nvidia-container-devices/all"}


def load(name: str) -> dict:
    config = yaml.safe_load((KIND / name).read_text())
    assert config["kind"] == "Cluster" and config["apiVersion"] == "kind.x-k8s.io/v1alpha4"
    return config


def join_taints(node: dict) -> list[dict]:
    """Taints a node gets from its kubeadm JoinConfiguration patches."""
    taints = []
    for patch in node.get("kubeadmConfigPatches", []):
        doc = yaml.safe_load(patch)
        if doc.get("kind") == "JoinConfiguration":
            taints += doc.get("nodeRegistration", {}).get("taints", [])
    return taints


def is_gpu(node: dict) -> bool:
    return GPU_MOUNT in node.get("extraMounts", [])


@pytest.mark.parametrize("name", ["kind-gpu.yaml", "kind-cpu.yaml"])
def test_node_image_matches_kubernetes_version(name, settings):
    """Every node runs the Kubernetes version the manifests are validated against."""
    images = {n.get("image") for n in load(name)["nodes"]}
    assert len(images) == 1, f"{name}: nodes run different images {images}"
    (image,) = images
    version = re.escape(settings.KUBERNETES_VERSION)
    assert re.fullmatch(rf"kindest/node:v{version}@sha256:[0-9a-f]{{64}}", image or ""), \
        f"{name}: {image} is not kindest/node:v{settings.KUBERNETES_VERSION} pinned by digest"


def test_gpu_cluster(settings):
    nodes = load("kind-gpu.yaml")["nodes"]
    assert [n["role"] for n in nodes].count("control-plane") == 1
    gpu = [n for n in nodes if is_gpu(n)]
    assert len(gpu) == 1, "exactly one worker gets the GPUs"
    (node,) = gpu
    assert node["role"] == "worker"
    assert node["labels"] == {settings.GPU_NODE_LABEL_KEY: settings.GPU_NODE_LABEL_VALUE}
    assert join_taints(node) == [{"key": settings.GPU_TAINT_KEY, "value": settings.GPU_TAINT_VALUE,
                                  "effect": settings.GPU_TAINT_EFFECT}]
    # kind taints the control-plane of a multi-node cluster, so KFP itself needs a worker
    # without the GPU taint.
    plain = [n for n in nodes if n["role"] == "worker" and not is_gpu(n) and not join_taints(n)]
    assert plain, "no untainted worker for KFP and the CPU tasks"
    assert not any(settings.GPU_NODE_LABEL_KEY in n.get("labels", {}) for n in plain)


def test_cpu_cluster(settings):
    nodes = load("kind-cpu.yaml")["nodes"]
    assert not any(is_gpu(n) or n.get("labels") or join_taints(n) for n in nodes)
    assert any(n["role"] == "worker" for n in nodes)


def test_kubernetes_version_has_schemas(settings):
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    from kubernetes_validate.utils import all_versions

    minor = ".".join(settings.KUBERNETES_VERSION.split(".")[:2])
    assert any(v.startswith(minor + ".") for v in all_versions()), \
        f"kubernetes-validate {kubernetes_validate.__version__} has no schemas for {minor}"
