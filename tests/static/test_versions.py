"""One platform version everywhere: the kfp SDK pin, the kfp-kubernetes pin, the installed SDK,
the KFP manifests ref the scripts and docs install, and the image tags (project version)."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
# Where a KFP manifests ref or an image reference may be written down.
SEARCHED = ["manifests", "scripts", "docs", "images", ".ci", "README.md", "Makefile"]
TEXT_SUFFIXES = {".yaml", ".yml", ".sh", ".md", ".txt", ".toml", ".cfg", ".env", ""}


def searched_files() -> list[Path]:
    files = []
    for name in SEARCHED:
        path = ROOT / name
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += [p for p in path.rglob("*") if p.is_file() and (p.suffix in TEXT_SUFFIXES
                                                                   or p.name.startswith("Dockerfile"))]
    return files


def pins() -> dict[str, str]:
    """name -> version of every `name==version` requirement in pyproject.toml."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        reqs += extra
    out = {}
    for req in reqs:
        m = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?==([^;\s]+).*", req.strip())
        if m:
            out[m.group(1).lower().replace("_", "-")] = m.group(2)
    return out


def test_sdk_pins_equal_platform_version(settings):
    p = pins()
    assert p.get("kfp") == settings.KFP_VERSION, "pyproject's kfp pin != settings.KFP_VERSION"
    assert p.get("kfp-kubernetes") == settings.KFP_VERSION, "kfp-kubernetes pin != settings.KFP_VERSION"


@pytest.mark.parametrize("dist", ["kfp", "kfp-kubernetes"])
def test_installed_sdk_is_the_pinned_one(dist, settings):
    try:
        installed = importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed (pip install -e .[pipeline])")
    assert installed == settings.KFP_VERSION, (
        f"{dist} {installed} is installed but the platform is {settings.KFP_VERSION}: GPU and "
        "other task settings can be silently dropped (kubeflow/pipelines#11374)")


def test_kfp_version_attribute(settings):
    kfp = pytest.importorskip("kfp")
    assert kfp.__version__ == settings.KFP_VERSION


def test_every_manifests_ref_follows_settings(settings):
    """Every `?ref=` of a remote kustomization we apply is the version of settings: the KFP
    manifests' $KFP_VERSION, Kubeflow Trainer's $TRAINER_VERSION (read from settings), or the
    literal version."""
    found = {"KFP": [], "TRAINER": []}
    for path in searched_files():
        for m in re.finditer(r"(\S*)\?ref=([^\s\"')]+)", path.read_text()):
            url, ref = m.groups()
            name = "TRAINER" if "kubeflow/trainer" in url else "KFP"
            version = getattr(settings, f"{name}_VERSION")
            found[name].append(ref)
            assert ref in (version, f"${name}_VERSION", f"${{{name}_VERSION}}"), \
                f"{path.relative_to(ROOT)}: {url} at ref={ref}, settings say {name}_VERSION={version}"
    assert found["KFP"], "no KFP manifests ref found at all: scripts/kind-up.sh should install KFP"
    assert found["TRAINER"], "no Kubeflow Trainer ref found: docs/cluster.md should install it"


def test_scripts_read_kfp_version_from_settings():
    text = (ROOT / "scripts" / "kind-up.sh").read_text()
    assert re.search(r"settings\s+KFP_VERSION\b", text), "kind-up.sh must take KFP_VERSION from settings"


def test_image_tags_follow_project_version(settings):
    version = settings.project_version()
    own = re.escape(settings.IMAGE_REGISTRY)
    names = "|".join(re.escape(n) for n in (settings.CPU_IMAGE_NAME, settings.GPU_IMAGE_NAME))
    rx = re.compile(rf"{own}/(?:{names}):([^\s\"'`,)]+)")
    for path in searched_files():
        for m in rx.finditer(path.read_text()):
            tag = m.group(1)
            assert tag == version or tag.startswith("$"), \
                f"{path.relative_to(ROOT)}: image tag {tag} is neither the project version {version} nor derived"
    # kustomize `images:` entries for our images carry the version too.
    import yaml

    entries = 0
    for kfile in (ROOT / "manifests").rglob("kustomization.yaml"):
        for img in yaml.safe_load(kfile.read_text()).get("images", []):
            if img["name"].startswith(settings.IMAGE_REGISTRY + "/"):
                entries += 1
                assert str(img["newTag"]) == version, f"{kfile.relative_to(ROOT)}: newTag {img['newTag']} != {version}"
    assert entries, "no kustomization sets our image tag"


def test_default_image_helper(settings):
    assert settings.default_image() == f"{settings.IMAGE_REGISTRY}/{settings.CPU_IMAGE_NAME}:{settings.project_version()}"
    assert settings.default_image(gpu=True).endswith(f"/{settings.GPU_IMAGE_NAME}:{settings.project_version()}")
