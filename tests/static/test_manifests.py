"""manifests/: every kustomization renders, every object validates against the Kubernetes
version of pipelines/settings.py, and the values that matter equal the settings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = sorted(p.parent for p in (ROOT / "manifests").rglob("kustomization.yaml"))
IDS = [str(p.relative_to(ROOT / "manifests")) for p in KUSTOMIZATIONS]

# Custom resources: kubernetes-validate has schemas for built-in kinds only. Each entry is
# checked by hand below (test_inference_service); anything else without a schema fails.
CRD_KINDS_NOT_VALIDATED = {("serving.kserve.io/v1beta1", "InferenceService")}

# Field names the KFP launcher understands in kfp-launcher's `providers` (json tags of
# BucketProviders / S3ProviderConfig / S3Credentials / S3SecretRef, backend/src/v2/config).
PROVIDER_KEYS = {"minio", "s3", "gs"}
PROVIDER_CONFIG_KEYS = {"default", "Overrides"}
PROVIDER_DEFAULT_KEYS = {"endpoint", "credentials", "region", "disableSSL", "forcePathStyle",
                         "maxRetries"}
CREDENTIAL_KEYS = {"fromEnv", "secretRef"}
SECRET_REF_KEYS = {"secretName", "accessKeyKey", "secretKeyKey"}


def objects(render_kustomization, name: str) -> list[dict]:
    return render_kustomization(ROOT / "manifests" / name)


def find(objs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, found {len(hits)}"
    return hits[0]


def test_every_overlay_exists():
    names = set(IDS)
    assert {"base", "overlays/kind-gpu", "overlays/kind-cpu", "serving", "credentials", "trainer"} <= names


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=IDS)
def test_renders_and_validates(directory, render_kustomization, settings):
    """Every rendered object validates (strict: unknown fields fail) for KUBERNETES_VERSION."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    objs = render_kustomization(directory)
    assert objs, f"{directory} renders nothing"
    failures = []
    for obj in objs:
        key = (obj["apiVersion"], obj["kind"])
        if key in CRD_KINDS_NOT_VALIDATED:
            continue
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, settings.KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            failures.append(f"{where}: no schema for {key}; a CRD kind must be added to "
                            "CRD_KINDS_NOT_VALIDATED together with a hand-written check")
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_validation_is_not_a_no_op(settings):
    """The validator must reject a broken object, or the test above proves nothing."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"},
           "data": {"k": "v"}, "dataa": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, settings.KUBERNETES_VERSION, strict=True)


def test_crd_allow_list_is_used(render_kustomization):
    seen = {(o["apiVersion"], o["kind"]) for d in KUSTOMIZATIONS for o in render_kustomization(d)}
    assert CRD_KINDS_NOT_VALIDATED <= seen, "drop kinds that no manifest uses any more"


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=IDS)
def test_namespace_and_images(directory, render_kustomization, containers_of, settings):
    own = f"{settings.IMAGE_REGISTRY}/"
    for obj in render_kustomization(directory):
        where = f"{directory.name}: {obj['kind']}/{obj['metadata']['name']}"
        if obj["kind"] != "DaemonSet":  # the device plugin lives in kube-system
            assert obj["metadata"].get("namespace") == settings.NAMESPACE, where
        for c in containers_of(obj):
            image = c["image"]
            if image.startswith(own):
                name, _, tag = image.rpartition(":")
                assert name in (f"{own}{settings.CPU_IMAGE_NAME}", f"{own}{settings.GPU_IMAGE_NAME}"), where
                assert tag == settings.project_version(), f"{where}: {image} is not tagged with the project version"
            else:
                assert re.search(r":v?\d+\.\d+\.\d+(@sha256:[0-9a-f]{64})?$", image), \
                    f"{where}: third-party image {image} is not pinned to a version"
            assert c.get("resources", {}).get("limits"), f"{where}: container {c['name']} has no limits"
            sc = c.get("securityContext", {})
            assert sc.get("allowPrivilegeEscalation") is False, where
            assert sc.get("capabilities", {}).get("drop") == ["ALL"], where


def test_kfp_launcher_config(render_kustomization, settings):
    cm = find(objects(render_kustomization, "base"), "ConfigMap", "kfp-launcher")
    root = cm["data"]["defaultPipelineRoot"]
    scheme = root.split("://", 1)[0]
    assert scheme in {"minio", "s3"}, root
    providers = yaml.safe_load(cm["data"]["providers"])
    assert set(providers) <= PROVIDER_KEYS and scheme in providers
    for provider in providers.values():
        assert set(provider) <= PROVIDER_CONFIG_KEYS
        default = provider["default"]
        assert set(default) <= PROVIDER_DEFAULT_KEYS, set(default) - PROVIDER_DEFAULT_KEYS
        creds = default["credentials"]
        assert set(creds) <= CREDENTIAL_KEYS
        if not creds.get("fromEnv"):
            assert set(creds["secretRef"]) == SECRET_REF_KEYS
        # the Service a standalone KFP 2.17 install has (kubeflow/pipelines manifests/kustomize/third-party/seaweedfs)
        assert default["endpoint"] == f"{settings.S3_SERVICE}.{settings.NAMESPACE}:{settings.S3_PORT}"


def test_bucket_job(render_kustomization, containers_of, settings):
    job = find(objects(render_kustomization, "base"), "Job")
    pod = job["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    (c,) = containers_of(job)
    env = {e["name"]: e.get("value") for e in c.get("env", [])}
    assert env["BUCKET"] == settings.PUBLISH_BUCKET
    assert [s["secretRef"]["name"] for s in c["envFrom"]] == [settings.S3_SECRET_NAME]
    assert "client_from_env()" in c["args"][0]


def test_secret_keys_are_what_the_library_reads(settings):
    """The Secret's keys (settings) are the variables scratchbert.storage reads."""
    storage = pytest.importorskip("scratchbert.storage")
    assert set(settings.S3_SECRET_KEYS) == {storage.ENV_ENDPOINT, storage.ENV_ACCESS_KEY,
                                            storage.ENV_SECRET_KEY}
    # the keys the docs let a Secret add reach the tasks too (AWS_REGION was dropped on the way)
    assert storage.ENV_REGION in settings.S3_OPTIONAL_KEYS and "AWS_ENDPOINT_URL_STS" in settings.S3_OPTIONAL_KEYS
    assert "AWS_ENDPOINT_URL_STS" in Path(storage.__file__).read_text()


def test_gpu_overlay_device_plugin(render_kustomization, settings):
    gpu = objects(render_kustomization, "overlays/kind-gpu")
    ds = find(gpu, "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {settings.GPU_NODE_LABEL_KEY: settings.GPU_NODE_LABEL_VALUE}
    assert {"key": settings.GPU_TAINT_KEY, "operator": "Equal", "value": settings.GPU_TAINT_VALUE,
            "effect": settings.GPU_TAINT_EFFECT} in pod["tolerations"]
    cpu = objects(render_kustomization, "overlays/kind-cpu")
    assert not [o for o in cpu if o["kind"] == "DaemonSet"], "the CPU overlay must not carry the device plugin"
    # Both overlays carry all of base.
    base = {(o["kind"], o["metadata"]["name"]) for o in objects(render_kustomization, "base")}
    for overlay in (gpu, cpu):
        assert base <= {(o["kind"], o["metadata"]["name"]) for o in overlay}


def test_credentials_template(render_kustomization, settings):
    secret = find(objects(render_kustomization, "credentials"), "Secret", settings.S3_SECRET_NAME)
    assert set(secret["stringData"]) == set(settings.S3_SECRET_KEYS)
    assert set(secret["stringData"].values()) == {"REPLACE_ME"}
    for name in IDS:
        if name != "credentials":
            assert not [o for o in objects(render_kustomization, name) if o["kind"] == "Secret"], \
                f"{name} ships a Secret: applying it would overwrite the real credentials"


def test_inference_service(render_kustomization, containers_of, settings, root):
    objs = objects(render_kustomization, "serving")
    isvc = find(objs, "InferenceService")
    predictor = isvc["spec"]["predictor"]
    assert predictor["securityContext"]["runAsNonRoot"] is True
    (c,) = containers_of(isvc)
    assert c["name"] == "kserve-container"
    assert [s["secretRef"]["name"] for s in c["envFrom"]] == [settings.S3_SECRET_NAME]
    args = dict(a.lstrip("-").split("=", 1) for a in c["args"])
    assert args["model_uri"].rstrip("/").startswith(f"s3://{settings.PUBLISH_BUCKET}/{settings.PUBLISH_PREFIX}")
    # The model folder sits inside a writable volume, not on its mount point (the download
    # is renamed into place).
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    volumes = {v["name"] for v in predictor["volumes"]}
    assert set(mounts) <= volumes
    assert any(args["model_dir"].startswith(p.rstrip("/") + "/") for p in mounts.values())
    # The server script the container runs is the one the images install.
    script = next(a for a in c["command"] if a.endswith(".py"))
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        text = (root / "images" / dockerfile).read_text()
        assert re.search(rf"^COPY images/qa_server.py {re.escape(script)}$", text, re.M), dockerfile
    port = c["ports"][0]["containerPort"]
    assert args["http_port"] == str(port)
    assert c["readinessProbe"]["httpGet"]["port"] == port
    assert c["readinessProbe"]["httpGet"]["path"] == f"/v1/models/{args['model_name']}"
    # PyTorch's threads as many as the CPU limit, not the node's cores (CFS throttling)
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["OMP_NUM_THREADS"] == str(int(float(c["resources"]["limits"]["cpu"])))
