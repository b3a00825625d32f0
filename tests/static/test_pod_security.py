"""Pod security: every pod of our own workloads in manifests/ passes the Pod Security Standards
"restricted" profile, checked by :func:`restricted_violations`, a small implementation of the
official rules (https://kubernetes.io/docs/concepts/security/pod-security-standards/, the
"baseline" controls and the "restricted" ones on top, as of Kubernetes 1.33). Our containers
also run with a read-only root filesystem, their caches pointed at a writable volume.

The pipeline's task pods are checked in test_pipeline_yaml.py as far as KFP lets a pipeline
set them (runAsNonRoot and the user; the backend adds the rest; no read-only root filesystem:
docs/reliability.md). Third-party workloads we only deploy are listed with the reason they
are exempt.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KUSTOMIZATIONS = sorted(p.parent for p in (ROOT / "manifests").rglob("kustomization.yaml"))

# Workloads that are not ours: what they need is their vendor's decision.
EXEMPT = {
    "nvidia-device-plugin-daemonset": "NVIDIA's device plugin needs the kubelet's device-plugins hostPath; it runs in "
                                      "kube-system, which Pod Security admission leaves at privileged",
}

# --- the profile ---------------------------------------------------------------------------------

BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
POD_FIELDS = {"containers", "initContainers", "ephemeralContainers", "volumes", "securityContext", "hostNetwork",
              "hostPID", "hostIPC"}


def restricted_violations(pod: dict, annotations: dict | None = None) -> list[str]:
    """Every way ``pod`` (a PodSpec, or anything with its fields) breaks the "restricted" profile."""
    bad: list[str] = []
    psc = pod.get("securityContext") or {}
    containers = [("container " + c.get("name", "?"), c) for key in ("containers", "initContainers", "ephemeralContainers")
                  for c in pod.get(key) or []]
    contexts = [(where, c.get("securityContext") or {}) for where, c in containers]

    # baseline
    for name in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(name):
            bad.append(f"{name} is set")
    for where, sc in [("pod", psc), *contexts]:
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            bad.append(f"{where}: windowsOptions.hostProcess")
        se = sc.get("seLinuxOptions") or {}
        if se.get("type", "") not in SELINUX_TYPES or se.get("user") or se.get("role"):
            bad.append(f"{where}: seLinuxOptions {se}")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            bad.append(f"{where}: seccompProfile Unconfined")
        if (sc.get("appArmorProfile") or {}).get("type") not in (None, "RuntimeDefault", "Localhost"):
            bad.append(f"{where}: appArmorProfile {sc['appArmorProfile']}")
        if sc.get("runAsUser") == 0:
            bad.append(f"{where}: runAsUser 0")
    for key, value in (annotations or {}).items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and value not in ("runtime/default",) \
                and not value.startswith("localhost/"):
            bad.append(f"annotation {key}={value}")
    for sysctl in psc.get("sysctls") or []:
        if sysctl.get("name") not in SAFE_SYSCTLS:
            bad.append(f"pod: sysctl {sysctl.get('name')}")
    for where, c in containers:
        sc = c.get("securityContext") or {}
        if sc.get("privileged"):
            bad.append(f"{where}: privileged")
        if sc.get("procMount", "Default") != "Default":
            bad.append(f"{where}: procMount {sc['procMount']}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                bad.append(f"{where}: hostPort {port['hostPort']}")
        added = set((sc.get("capabilities") or {}).get("add") or [])
        if added - BASELINE_CAPABILITIES:
            bad.append(f"{where}: adds capabilities {sorted(added - BASELINE_CAPABILITIES)}")
        # restricted
        if sc.get("allowPrivilegeEscalation") is not False:
            bad.append(f"{where}: allowPrivilegeEscalation is not false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            bad.append(f"{where}: capabilities.drop lacks ALL")
        if added - {"NET_BIND_SERVICE"}:
            bad.append(f"{where}: adds capabilities other than NET_BIND_SERVICE")
        if sc.get("runAsNonRoot") is False or not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            bad.append(f"{where}: runAsNonRoot is not true (pod or container)")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            bad.append(f"{where}: seccompProfile is not RuntimeDefault or Localhost (pod or container)")
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if kinds - RESTRICTED_VOLUMES:
            bad.append(f"volume {volume.get('name')}: {sorted(kinds - RESTRICTED_VOLUMES)} is not allowed")
    return bad


def pods_of(obj: dict) -> list[tuple[dict, dict]]:
    """(pod spec, pod annotations) of a workload object; an InferenceService's predictor is a pod spec."""
    spec = obj.get("spec") or {}
    if obj["kind"] in ("Job", "Deployment", "DaemonSet", "StatefulSet", "ReplicaSet"):
        template = spec["template"]
        return [(template["spec"], (template.get("metadata") or {}).get("annotations") or {})]
    if obj["kind"] == "CronJob":
        template = spec["jobTemplate"]["spec"]["template"]
        return [(template["spec"], (template.get("metadata") or {}).get("annotations") or {})]
    if obj["kind"] == "Pod":
        return [(spec, obj["metadata"].get("annotations") or {})]
    if obj["kind"] == "InferenceService":
        return [({k: v for k, v in component.items() if k in POD_FIELDS}, obj["metadata"].get("annotations") or {})
                for name, component in spec.items() if name in ("predictor", "transformer", "explainer")]
    return []


def our_workloads(render) -> list[tuple[str, dict, dict]]:
    found = {}
    for directory in KUSTOMIZATIONS:
        for obj in render(directory):
            for pod, notes in pods_of(obj):
                found[f"{obj['kind']}/{obj['metadata']['name']}"] = (obj, pod, notes)
    return [(key, pod, notes) for key, (obj, pod, notes) in sorted(found.items())
            if obj["metadata"]["name"] not in EXEMPT]


# --- the checks ------------------------------------------------------------------------------------


def test_our_workloads_pass_the_restricted_profile(render_kustomization):
    workloads = our_workloads(render_kustomization)
    assert {key for key, _, _ in workloads} >= {"Job/scratchbert-create-bucket", "InferenceService/scratchbert-qa"}
    failures = [f"{key}: {v}" for key, pod, notes in workloads for v in restricted_violations(pod, notes)]
    assert not failures, "\n".join(failures)


def test_exempt_workloads_exist_and_are_third_party(render_kustomization, settings):
    seen = {}
    for directory in KUSTOMIZATIONS:
        for obj in render_kustomization(directory):
            if obj["metadata"]["name"] in EXEMPT:
                seen[obj["metadata"]["name"]] = obj
    assert set(seen) == set(EXEMPT), "drop exemptions that no manifest uses any more"
    for obj in seen.values():
        for pod, _ in pods_of(obj):
            assert not any(c["image"].startswith(settings.IMAGE_REGISTRY) for c in pod["containers"])


def _image_cache_variables(root: Path) -> dict[str, str]:
    """The Dockerfile's ENV variables that point into the image's home (where caches are written)."""
    text = (root / "images" / "Dockerfile").read_text()
    home = re.search(r"^\s*HOME=(\S+)", text, re.M).group(1)
    return {k: v for k, v in re.findall(r"^\s*(?:ENV\s+)?([A-Z_]+)=(\S+?)\s*\\?$", text, re.M) if v.startswith(home)}


def test_our_containers_have_a_read_only_root_filesystem_and_writable_caches(render_kustomization, root):
    """readOnlyRootFilesystem, with every cache the image points into its home moved to a writable
    emptyDir volume (HF, torch, XDG), so a library that writes a cache does not fail at run time."""
    cache_vars = _image_cache_variables(root)
    assert {"HOME", "HF_HOME", "XDG_CACHE_HOME", "TORCH_HOME"} <= set(cache_vars)
    for key, pod, _ in our_workloads(render_kustomization):
        volumes = {v["name"]: v for v in pod.get("volumes") or []}
        for c in pod["containers"]:
            assert (c.get("securityContext") or {}).get("readOnlyRootFilesystem") is True, key
            writable = [m["mountPath"] for m in c.get("volumeMounts") or []
                        if not m.get("readOnly") and "emptyDir" in volumes.get(m["name"], {})]
            env = {e["name"]: e.get("value", "") for e in c.get("env") or []}
            for name in cache_vars:
                assert any(env.get(name, "").startswith(p.rstrip("/") + "/") for p in writable), \
                    f"{key}: {name} must point into a writable volume ({writable}), not the read-only image"
            assert "/tmp" in writable, f"{key}: /tmp (tempfile) must be writable"


BASE_POD = {
    "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
    "containers": [{"name": "c", "image": "x", "securityContext": {"allowPrivilegeEscalation": False,
                                                                    "capabilities": {"drop": ["ALL"]}}}],
    "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "s"}}],
}


def _with(change) -> dict:
    import copy

    pod = copy.deepcopy(BASE_POD)
    change(pod)
    return pod


def _container_sc(pod) -> dict:
    return pod["containers"][0]["securityContext"]


@pytest.mark.parametrize("change, words", [
    (lambda p: p.update(hostNetwork=True), "hostNetwork"),
    (lambda p: p.update(hostPID=True), "hostPID"),
    (lambda p: _container_sc(p).update(privileged=True), "privileged"),
    (lambda p: _container_sc(p).update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
    (lambda p: _container_sc(p).pop("allowPrivilegeEscalation"), "allowPrivilegeEscalation"),
    (lambda p: _container_sc(p).update(capabilities={"drop": ["NET_RAW"]}), "drop lacks ALL"),
    (lambda p: _container_sc(p).update(capabilities={"drop": ["ALL"], "add": ["SYS_ADMIN"]}), "SYS_ADMIN"),
    (lambda p: _container_sc(p).update(capabilities={"drop": ["ALL"], "add": ["CHOWN"]}), "other than NET_BIND_SERVICE"),
    (lambda p: p["securityContext"].pop("runAsNonRoot"), "runAsNonRoot"),
    (lambda p: _container_sc(p).update(runAsNonRoot=False), "runAsNonRoot"),
    (lambda p: _container_sc(p).update(runAsUser=0), "runAsUser 0"),
    (lambda p: p["securityContext"].pop("seccompProfile"), "seccompProfile is not RuntimeDefault"),
    (lambda p: _container_sc(p).update(seccompProfile={"type": "Unconfined"}), "Unconfined"),
    (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
    (lambda p: p["containers"][0].update(ports=[{"containerPort": 80, "hostPort": 80}]), "hostPort"),
    (lambda p: p["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]), "kernel.msgmax"),
    (lambda p: _container_sc(p).update(seLinuxOptions={"type": "spc_t"}), "seLinuxOptions"),
    (lambda p: _container_sc(p).update(procMount="Unmasked"), "procMount"),
    (lambda p: p.setdefault("initContainers", []).append({"name": "init", "image": "x"}), "container init"),
])
def test_the_check_is_not_a_no_op(change, words):
    """Each rule rejects what it forbids (and the base pod passes), or the test above proves nothing."""
    assert restricted_violations(BASE_POD) == []
    found = restricted_violations(_with(change))
    assert any(words in v for v in found), found
