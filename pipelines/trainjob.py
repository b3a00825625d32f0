"""Pretraining on N nodes × M GPUs: the pretrain task launches a Kubeflow Trainer ``TrainJob``.

With ``num_nodes × gpus_per_node`` above 1, the pretrain component does not train in its own
pod; it calls :func:`run_trainjob`, which

1. uploads the dataset to a per-job prefix under ``settings.TRAINJOB_STAGING_URI`` (on the
   endpoint of the object-store Secret);
2. creates a ``TrainJob`` (:func:`manifest`) of the pinned Kubeflow Trainer's
   ``torch-distributed`` runtime: ``num_nodes`` pods, ``gpus_per_node`` GPUs and as many
   training processes each. Every pod runs this module (:func:`main`): it downloads the
   dataset, runs ``torchrun --no-python scratchbert pretrain ...`` (torchrun reads the
   ``PET_*`` variables the runtime sets: nodes, processes per node, node rank, master
   address), and on node 0, which holds rank 0, uploads the model and records;
3. streams node 0's log into the task's log and waits for the job's ``Complete`` or
   ``Failed`` condition (a job with a time budget fails at its deadline, :func:`deadline_seconds`);
4. downloads the model and records into the task's ``model`` and ``logs`` artifacts, and
   returns the metrics ``scratchbert pretrain`` wrote;
5. always (success, failure, an error here, or SIGTERM when the run is cancelled) deletes the
   TrainJob and the staged objects. The TrainJob also names the task's pod as its owner, so
   Kubernetes removes it with the pod if this process never gets to.

Where the job's pods run and what they get comes from the task (kfp's ``dsl.TaskConfig``,
filled by the KFP backend from the task's settings in the pipeline): its tolerations, node
selector and environment (the object-store Secret's keys), and its CPU and memory per GPU
(a node with M GPUs gets M times them, and its GPU request is M). When the task config is
empty (``kfp.local``, or a KFP backend older than 2.15), the GPU toleration and node label
and the Secret come from :mod:`scratchbert_pipelines.settings` instead.

The Kubernetes calls go through the ``kubernetes`` client (``CustomObjectsApi`` for the
TrainJob, ``CoreV1Api`` for node 0's pod and its log): creating, reading and deleting
TrainJobs, listing pods and reading a pod's log is all the Role in ``manifests/trainer``
allows, and all this module needs.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from scratchbert.errors import RunFailed, ScratchBertError
from scratchbert.params import param
from scratchbert_pipelines import settings

# Environment variables the torch plugin of the Trainer sets itself (its webhook rejects a
# TrainJob that sets them).
RESERVED_ENV = ("PET_NNODES", "PET_NPROC_PER_NODE", "PET_NODE_RANK", "PET_MASTER_ADDR", "PET_MASTER_PORT")
SERVICE_ACCOUNT_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
COMPLETE, FAILED, SUSPENDED = "Complete", "Failed", "Suspended"
DEADLINE_EXCEEDED = "DeadlineExceeded"  # the reason of a Failed TrainJob past its activeDeadlineSeconds
LOG_TAIL_LINES = 200  # of a node-0 pod that ended before its log could be followed


@dataclasses.dataclass
class TrainJobConfig:
    """How many nodes and GPUs pretrain on, and the image of their pods (the pipeline's side of
    the pretrain task; the library's ``scratchbert pretrain`` knows nothing of it)."""

    num_nodes: int = param(1, help="Nodes to pretrain on; with more than one GPU in all, pretraining runs as a Kubeflow Trainer TrainJob under torchrun, one process per GPU.")
    gpus_per_node: int = param(1, help="GPUs per pretraining node, one training process each.")
    image: str = param("", help="Image of the TrainJob's pods; empty uses the CUDA image of this version.")

    def validate(self) -> None:
        check(self)


def check(job: TrainJobConfig) -> None:
    if job.num_nodes < 1 or job.gpus_per_node < 1:
        raise ScratchBertError(f"num_nodes {job.num_nodes} and gpus_per_node {job.gpus_per_node} must both be at least 1; "
                               "1 and 1 train in the pretrain task's own pod")


def distributed(job: TrainJobConfig) -> bool:
    """Whether pretraining runs as a TrainJob (more than one GPU in all) rather than in the task's pod."""
    check(job)
    return job.num_nodes * job.gpus_per_node > 1


def pod_gpus(job: TrainJobConfig) -> str:
    """The GPUs the pretrain task's own pod asks for: "1" when it trains itself, "0" when it
    only launches and watches a TrainJob. A string: the KFP backend reads a runtime GPU count
    as a string parameter (a number would be dropped, and the pod would get no GPU limit)."""
    return "0" if distributed(job) else "1"


def pretrain_here_or_as_trainjob(config, job: TrainJobConfig, task_config=None) -> dict:
    """The pretrain task's body: ``scratchbert pretrain`` in this process at 1 node × 1 GPU,
    else :func:`run_trainjob`; returns the metrics either way."""
    if distributed(job):
        return run_trainjob(config, job, task_config)
    from scratchbert.pretrain import pretrain

    return pretrain(config)


# ------------------------------------------------------------------------------------------
# The TrainJob
# ------------------------------------------------------------------------------------------


def new_name() -> str:
    return f"{settings.TRAINJOB_NAME_PREFIX}-{uuid.uuid4().hex[:8]}"


def pretrain_argv(config) -> list[str]:
    """``scratchbert pretrain`` flags that reproduce ``config`` (a ``PretrainConfig``): the
    required fields, and every other field that differs from its default."""
    from scratchbert import params

    argv = []
    for name, f in params.fields(type(config)).items():
        value = getattr(config, name)
        if value is None or (f.default is not params.REQUIRED and value == f.default and type(value) is type(f.default)):
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, str(value)]
    return argv


def node_command(config, stage_uri: str) -> tuple[list[str], list[str]]:
    """The TrainJob's ``command`` (this module, staging data in and out) and ``args`` (the
    training command line it runs: ``torchrun --no-python -- scratchbert pretrain ...`` on the
    node's local copies)."""
    work = settings.TRAINJOB_WORKDIR
    local = dataclasses.replace(config, dataset=f"{work}/dataset", out=f"{work}/model", logs=f"{work}/logs")
    command = ["python", "-m", "scratchbert_pipelines.trainjob",
               "--stage-in", stage_uri + "dataset/", local.dataset,
               "--stage-out", local.out, stage_uri + "model/",
               "--stage-out", local.logs, stage_uri + "logs/", "--"]
    # "--" ends torchrun's own options: its parser would otherwise take pretrain's flags for
    # abbreviations of its own ("--logs" is ambiguous with "--logs-specs", and fails).
    return command, ["torchrun", "--no-python", "--", "scratchbert", "pretrain", *pretrain_argv(local)]


def _scale(quantity: Any, factor: int) -> str:
    """A Kubernetes quantity times ``factor``, in the same unit ("500m" x 8 = "4000m", "8Gi" x 8 = "64Gi")."""
    from kubernetes.utils import parse_quantity

    text = str(quantity)
    parse_quantity(text)  # raises ValueError on anything that is not a quantity
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", text)
    if m is None:  # exponent forms (1e3): plain units
        return str(parse_quantity(text) * factor)
    return f"{Decimal(m.group(1)) * factor}{m.group(2)}"


def _field(task_config, name: str):
    return getattr(task_config, name, None) if task_config is not None else None


def placement(job: TrainJobConfig, task_config=None) -> dict[str, Any]:
    """Resources, environment, tolerations and node selector of the TrainJob's pods, from the
    task's config (see the module docstring), with the GPU settings and the object-store
    Secret of :mod:`settings` where the task config has nothing."""
    resources = _field(task_config, "resources") or {}
    per_node: dict[str, dict[str, str]] = {}
    for kind in ("requests", "limits"):
        values = {k: _scale(v, job.gpus_per_node) for k, v in (resources.get(kind) or {}).items()
                  if k != settings.GPU_RESOURCE}
        if values:
            per_node[kind] = values
    per_node.setdefault("limits", {})[settings.GPU_RESOURCE] = str(job.gpus_per_node)

    env = [e for e in (_field(task_config, "env") or []) if e.get("name") not in RESERVED_ENV]
    have = {e.get("name") for e in env}
    # optional, as on the pipeline's tasks: a Secret without static keys (IRSA) leaves the pods their identity
    env += [{"name": key, "valueFrom": {"secretKeyRef": {"name": settings.S3_SECRET_NAME, "key": key, "optional": True}}}
            for key in settings.S3_ENV_KEYS if key not in have]

    tolerations = _field(task_config, "tolerations")
    if tolerations is None:
        tolerations = [{"key": settings.GPU_TAINT_KEY, "operator": "Equal", "value": settings.GPU_TAINT_VALUE,
                        "effect": settings.GPU_TAINT_EFFECT}]
    node_selector = _field(task_config, "node_selector")
    if node_selector is None:
        node_selector = {settings.GPU_NODE_LABEL_KEY: settings.GPU_NODE_LABEL_VALUE}
    return {"resources": per_node, "env": env, "tolerations": tolerations, "node_selector": node_selector}


def deadline_seconds(config) -> int | None:
    """The TrainJob's ``activeDeadlineSeconds`` for ``config`` (a ``PretrainConfig``): its
    time budget with room for the work around training (``settings.TRAINJOB_DEADLINE_*``), or
    None (no deadline) when pretraining has no time budget."""
    budget = config.time_budget_minutes
    if not budget > 0:
        return None
    minutes = max(budget * settings.TRAINJOB_DEADLINE_FACTOR, budget + settings.TRAINJOB_DEADLINE_MIN_MARGIN_MINUTES)
    return math.ceil(minutes * 60)


def manifest(name: str, namespace: str, config, job: TrainJobConfig, task_config=None, stage_uri: str = "",
             owner: dict | None = None) -> dict[str, Any]:
    """The TrainJob that pretrains ``config`` on ``job.num_nodes`` × ``job.gpus_per_node`` GPUs,
    exchanging data through ``stage_uri`` (``s3://.../<name>/``); ``owner``: an ownerReference."""
    check(job)
    where = placement(job, task_config)
    command, args = node_command(config, stage_uri or f"{settings.TRAINJOB_STAGING_URI.rstrip('/')}/{name}/")
    labels = {"app.kubernetes.io/part-of": "scratchbert", "app.kubernetes.io/component": "pretrain"}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "labels": labels}
    if owner:
        metadata["ownerReferences"] = [owner]
    shm = _scale(settings.SHM_SIZE, job.gpus_per_node)
    pod = {
        "tolerations": where["tolerations"],
        "nodeSelector": where["node_selector"],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": shm}},
                    {"name": "work", "emptyDir": {}}],
        "containers": [{
            "name": settings.TRAINER_NODE,
            "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"},
                             {"name": "work", "mountPath": settings.TRAINJOB_WORKDIR}],
            "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        }],
        "securityContext": {"runAsNonRoot": True},
    }
    spec: dict[str, Any] = {
        "runtimeRef": {"apiGroup": settings.TRAINER_GROUP, "kind": settings.TRAINER_RUNTIME_KIND,
                       "name": settings.TRAINER_RUNTIME},
        "trainer": {
            "image": job.image or settings.default_image(gpu=True),
            "command": command,
            "args": args,
            "numNodes": job.num_nodes,
            "numProcPerNode": job.gpus_per_node,
            "resourcesPerNode": where["resources"],
            "env": where["env"],
        },
        "runtimePatches": [{
            "manager": settings.TRAINJOB_PATCH_MANAGER,
            "trainingRuntimeSpec": {"template": {"spec": {"replicatedJobs": [{
                "name": settings.TRAINER_NODE,
                "template": {"spec": {"template": {"metadata": {"labels": labels}, "spec": pod}}},
            }]}}},
        }],
    }
    deadline = deadline_seconds(config)
    if deadline is not None:
        spec["activeDeadlineSeconds"] = deadline
    return {"apiVersion": f"{settings.TRAINER_GROUP}/{settings.TRAINER_API_VERSION}", "kind": "TrainJob",
            "metadata": metadata, "spec": spec}


# ------------------------------------------------------------------------------------------
# Running it from the pretrain task
# ------------------------------------------------------------------------------------------


def job_state(obj: dict) -> tuple[str | None, str]:
    """(``Complete`` | ``Failed`` | ``Suspended`` | None, the condition's reason and message)."""
    found: tuple[str | None, str] = (None, "")
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("status") == "True" and c.get("type") in (COMPLETE, FAILED, SUSPENDED):
            detail = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
            if c["type"] != SUSPENDED:
                return c["type"], detail
            found = (SUSPENDED, detail)
    return found


class _Cluster:
    """The few Kubernetes calls of a TrainJob run, with API errors turned into one sentence."""

    def __init__(self, api_client, namespace: str):
        from kubernetes import client

        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.where = f"{settings.TRAINER_GROUP}/{settings.TRAINER_API_VERSION} {settings.TRAINJOB_PLURAL} in namespace {namespace}"

    def _job_args(self) -> dict:
        return {"group": settings.TRAINER_GROUP, "version": settings.TRAINER_API_VERSION,
                "namespace": self.namespace, "plural": settings.TRAINJOB_PLURAL}

    def create(self, body: dict) -> dict:
        with self._errors("create", f"is Kubeflow Trainer {settings.TRAINER_VERSION} installed (docs/cluster.md)?"):
            return self.custom.create_namespaced_custom_object(body=body, **self._job_args())

    def get(self, name: str) -> dict:
        with self._errors("read", f"TrainJob {name} is gone: something else deleted it"):
            return self.custom.get_namespaced_custom_object(name=name, **self._job_args())

    def delete(self, name: str) -> bool:
        """Delete the TrainJob (its JobSet and pods follow); False if it was already gone."""
        from kubernetes.client.exceptions import ApiException

        try:
            self.custom.delete_namespaced_custom_object(name=name, propagation_policy="Background", **self._job_args())
            return True
        except ApiException as e:
            if e.status == 404:
                return False
            raise

    def node0_pod(self, name: str):
        """The newest pod of node 0 of TrainJob ``name`` (None before it exists)."""
        selector = ",".join((f"{settings.JOBSET_NAME_LABEL}={name}",
                             f"{settings.JOBSET_REPLICATED_JOB_LABEL}={settings.TRAINER_NODE}",
                             f"{settings.JOB_COMPLETION_INDEX_LABEL}=0"))
        with self._errors("list the pods of", "no such namespace"):
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=selector).items
        return max(pods, key=lambda p: p.metadata.creation_timestamp.timestamp() if p.metadata.creation_timestamp else 0.0,
                   default=None)

    def follow_log(self, pod: str) -> Iterator[str]:
        from kubernetes import watch

        yield from watch.Watch().stream(self.core.read_namespaced_pod_log, name=pod, namespace=self.namespace,
                                        container=settings.TRAINER_NODE, follow=True)

    def log_tail(self, pod: str) -> list[str]:
        text = self.core.read_namespaced_pod_log(name=pod, namespace=self.namespace, container=settings.TRAINER_NODE,
                                                 tail_lines=LOG_TAIL_LINES)
        return text.splitlines()

    @contextlib.contextmanager
    def _errors(self, verb: str, not_found: str):
        from kubernetes.client.exceptions import ApiException

        try:
            yield
        except ApiException as e:
            hint = {403: f"the pipeline's ServiceAccount may not {verb} them: apply manifests/trainer (docs/cluster.md)",
                    404: not_found}.get(e.status)
            if hint is None:
                hint = f"the API server answered {e.status} {e.reason}: {_api_message(e)}"
            raise ScratchBertError(f"could not {verb} {self.where}; {hint}") from None


def _api_message(e) -> str:
    try:
        return json.loads(e.body).get("message", "") or str(e.reason)
    except (TypeError, ValueError, AttributeError):
        return str(e.reason)


def _kube_client():
    """An API client for the cluster this runs in (or the kubeconfig's current context)."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError, TypeError):
            raise ScratchBertError(
                "num_nodes × gpus_per_node above 1 runs pretraining as a Kubeflow Trainer TrainJob, which needs a "
                "Kubernetes cluster, and none is reachable from here (no in-cluster account, no kubeconfig); run the "
                "pipeline on a cluster, or use num_nodes=1 and gpus_per_node=1") from None
    return client.ApiClient()


def _namespace() -> str:
    path = Path(SERVICE_ACCOUNT_NAMESPACE)
    return path.read_text().strip() if path.is_file() else settings.NAMESPACE


def _owner_from_env() -> dict | None:
    """An ownerReference to the KFP task's pod (KFP sets KFP_POD_NAME and KFP_POD_UID), so that
    deleting the pod deletes the TrainJob too."""
    name, uid = os.environ.get("KFP_POD_NAME"), os.environ.get("KFP_POD_UID")
    if not (name and uid):
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid}


class Cancelled(BaseException):
    """SIGTERM arrived: the run is being cancelled, or the task's pod deleted. A BaseException,
    so that no ``except Exception`` on the way swallows it."""


class _Sigterm:
    """While armed, the first SIGTERM raises :class:`Cancelled` in the main thread (so that the
    TrainJob gets deleted on the way out); once disarmed, SIGTERM is ignored until the block
    ends, so that the clean-up itself is not cut short."""

    def __init__(self):
        self.armed = False
        self.previous = None

    def _handler(self, signum, frame):
        if self.armed:
            self.armed = False
            raise Cancelled()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._handler)
            self.armed = True
        return self

    def disarm(self) -> None:
        self.armed = False

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
        return False


def _pod_note(pod) -> str:
    """One line on where node 0's pod is, for the task's log while nothing else happens."""
    if pod is None:
        return "waiting for the pod of node 0"
    phase = pod.status.phase if pod.status else "Unknown"
    why = ""
    for c in (pod.status.conditions or []) if pod.status else []:
        if c.type == "PodScheduled" and c.status == "False":
            why = f" ({c.reason}: {c.message})"
    for s in (pod.status.container_statuses or []) if pod.status and not why else []:
        if s.state and s.state.waiting and s.state.waiting.reason:
            why = f" ({s.state.waiting.reason}{': ' + s.state.waiting.message if s.state.waiting.message else ''})"
    return f"node 0 pod {pod.metadata.name} is {phase}{why}"


def _pod_key(pod) -> tuple[str, int]:
    restarts = sum(s.restart_count or 0 for s in (pod.status.container_statuses or [])) if pod.status else 0
    return pod.metadata.uid, restarts


def _watch(cluster: _Cluster, name: str, poll_seconds: float, say: Callable[[str], None],
           sleep: Callable[[float], None]) -> tuple[str, str]:
    """Follow node 0's log (each pod, and each restart of it, once) until the TrainJob ends."""
    followed: set[tuple[str, int]] = set()
    last_note = None
    while True:
        state, detail = job_state(cluster.get(name))
        if state in (COMPLETE, FAILED):
            if state == FAILED:  # show how node 0 ended if its log was never followed
                pod = cluster.node0_pod(name)
                if pod is not None and _pod_key(pod) not in followed:
                    with contextlib.suppress(Exception):
                        for line in cluster.log_tail(pod.metadata.name):
                            say(f"[node-0] {line}")
            return state, detail
        pod = cluster.node0_pod(name)
        if pod is not None and pod.status and pod.status.phase in ("Running", "Succeeded", "Failed") \
                and _pod_key(pod) not in followed:
            followed.add(_pod_key(pod))
            say(f"TrainJob {name}: following the log of {pod.metadata.name}")
            lines = 0
            try:
                for line in cluster.follow_log(pod.metadata.name):
                    say(f"[node-0] {line}")
                    lines += 1
            except Exception as e:  # a broken log stream must not end the run: the job's state decides
                say(f"TrainJob {name}: the log of {pod.metadata.name} broke off ({type(e).__name__}); still waiting")
                if not lines:  # nothing shown yet: try again on a later round
                    followed.discard(_pod_key(pod))
                sleep(poll_seconds)
            continue
        note = f"TrainJob {name} is suspended ({detail})" if state == SUSPENDED else f"TrainJob {name}: {_pod_note(pod)}"
        if note != last_note:
            say(note)
            last_note = note
        sleep(poll_seconds)


def run_trainjob(config, job: TrainJobConfig, task_config=None, *, api_client=None, namespace: str | None = None,
                 staging_uri: str | None = None, poll_seconds: float | None = None,
                 say: Callable[[str], None] | None = None, sleep: Callable[[float], None] = time.sleep) -> dict:
    """Pretrain ``config`` (a ``PretrainConfig`` whose ``out`` and ``logs`` are the task's
    artifact folders) as a TrainJob of ``job.num_nodes`` × ``job.gpus_per_node`` GPUs; return
    the metrics (see the module docstring).

    Raises:
        ScratchBertError: bad sizes, no cluster, the TrainJob API refused (not installed, no
            permission, invalid).
        RunFailed: the TrainJob failed, left no model, or the run was cancelled (SIGTERM).
    """
    from scratchbert import storage
    from scratchbert.outputs import read_json

    say = say or (lambda line: print(line, flush=True))
    check(job)
    cluster = _Cluster(api_client or _kube_client(), namespace or _namespace())
    name = new_name()
    stage = f"{(staging_uri or settings.TRAINJOB_STAGING_URI).rstrip('/')}/{name}/"
    poll = settings.TRAINJOB_POLL_SECONDS if poll_seconds is None else poll_seconds
    created = False
    with _Sigterm() as sigterm:
        try:
            say(f"TrainJob {name}: staging the dataset at {stage}dataset/")
            storage.upload_dir(config.dataset, stage + "dataset/")
            body = manifest(name, cluster.namespace, config, job, task_config, stage, owner=_owner_from_env())
            created = True  # from here on, delete it whatever happens
            cluster.create(body)
            say(f"TrainJob {name}: created in namespace {cluster.namespace}: {job.num_nodes} node(s) × "
                f"{job.gpus_per_node} GPU(s), runtime {settings.TRAINER_RUNTIME}")
            state, detail = _watch(cluster, name, poll, say, sleep)
            if state == FAILED:
                deadline = body["spec"].get("activeDeadlineSeconds")
                why = (f"; it ran past its deadline of {deadline / 60:g} minutes (pretraining's time budget of "
                       f"{config.time_budget_minutes:g} and room for the work around it), pending or training"
                       if detail.startswith(DEADLINE_EXCEEDED) and deadline else "")
                raise RunFailed(f"TrainJob {name} failed ({detail or 'no reason given'}){why}; node 0's log is above")
            say(f"TrainJob {name}: complete; fetching the model from {stage}model/")
            try:
                storage.download(stage + "model/", config.out, overwrite=True)
                storage.download(stage + "logs/", config.logs, overwrite=True)
            except ScratchBertError as e:
                raise RunFailed(f"TrainJob {name} completed but left no complete outputs at {stage} ({e})") from None
            metrics = Path(config.logs) / "metrics.json"
            if not metrics.is_file():
                raise RunFailed(f"TrainJob {name} completed but its records at {stage}logs/ hold no metrics.json")
            return read_json(metrics)
        except Cancelled:
            raise RunFailed(f"the task was cancelled (SIGTERM) while TrainJob {name} ran; the TrainJob is deleted") from None
        finally:
            sigterm.disarm()
            if created:
                try:
                    say(f"TrainJob {name}: {'deleted' if cluster.delete(name) else 'already gone'}")
                except Exception as e:  # report, and let the run's own outcome stand
                    say(f"TrainJob {name}: could not delete it ({type(e).__name__}: {str(e).splitlines()[0]}); "
                        f"kubectl -n {cluster.namespace} delete trainjob {name}")
            _remove_prefix(stage, say)


def _remove_prefix(uri: str, say: Callable[[str], None]) -> None:
    """Remove every object under ``uri`` (the job's staged data); a failure is only reported."""
    from scratchbert import storage

    try:
        client = storage.client_from_env()
        bucket, prefix = storage.parse_s3_uri(uri)
        from minio.deleteobjects import DeleteObject

        names = [DeleteObject(o.object_name) for o in client.list_objects(bucket, prefix=prefix, recursive=True)]
        errors = list(client.remove_objects(bucket, names)) if names else []
        if errors:
            say(f"could not remove {len(errors)} staged object(s) under {uri}: {errors[0]}")
    except Exception as e:  # cleaning up must never hide the outcome of the run
        say(f"could not remove the staged objects under {uri}: {type(e).__name__}: {e}")


# ------------------------------------------------------------------------------------------
# Inside the TrainJob's pods: stage in, torchrun, stage out
# ------------------------------------------------------------------------------------------


def node_main(stage_in: list[tuple[str, str]], stage_out: list[tuple[str, str]], command: list[str],
              env: dict[str, str] | None = None) -> int:
    """Download every ``(uri, folder)`` of ``stage_in``, run ``command``, and if it succeeded
    on node 0 (``PET_NODE_RANK``, which holds rank 0 under torchrun's static rendezvous)
    upload every ``(folder, uri)`` of ``stage_out``; return the command's exit status.

    SIGTERM and SIGINT (the pod being deleted) are passed on to the command (torchrun passes
    them to its workers)."""
    from scratchbert import storage

    env = os.environ if env is None else env
    for uri, folder in stage_in:
        storage.download(uri, folder, overwrite=True)
    proc = subprocess.Popen(command)
    previous = {s: signal.signal(s, lambda signum, frame: proc.send_signal(signum)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        status = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if status == 0 and env.get("PET_NODE_RANK", "0") == "0":
        for folder, uri in stage_out:
            storage.upload_dir(folder, uri)
    return status


def main(argv: list[str] | None = None) -> int:
    """``python -m scratchbert_pipelines.trainjob [--stage-in URI DIR]... [--stage-out DIR URI]... -- COMMAND...``"""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" not in argv:
        print("scratchbert trainjob: error: give the command to run after --", file=sys.stderr)
        return 2
    split = argv.index("--")
    parser = argparse.ArgumentParser(prog="python -m scratchbert_pipelines.trainjob",
                                     description="Stage data in, run a command, stage its outputs out (a TrainJob pod).")
    parser.add_argument("--stage-in", nargs=2, action="append", default=[], metavar=("URI", "DIR"))
    parser.add_argument("--stage-out", nargs=2, action="append", default=[], metavar=("DIR", "URI"))
    args = parser.parse_args(argv[:split])
    try:
        return node_main([tuple(x) for x in args.stage_in], [tuple(x) for x in args.stage_out], argv[split + 1:])
    except ScratchBertError as e:
        print(f"scratchbert trainjob: error: {e}", file=sys.stderr, flush=True)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
