"""Pretraining as a Kubeflow Trainer TrainJob (scratchbert_pipelines.trainjob), without a cluster.

* The TrainJob the pretrain task creates for 2 nodes x 8 GPUs validates against the OpenAPI v3
  schema of the TrainJob CRD vendored from the pinned release (tests/static/schemas/), made
  strict (an unknown field fails, as the API server's strict field validation does), plus the
  CRD's CEL rules on the name and the Trainer webhook's rules we can check offline.
* Its pods get the task's settings (what KFP's TaskConfig carries), its command runs
  ``scratchbert pretrain`` under torchrun with the same configuration.
* The task's TrainJob path runs against a fake API server (:class:`FakeCluster`: the real
  ``kubernetes`` client, answered at its HTTP layer) and the embedded S3 server: success (node 0
  really runs the job's command, torchrun and all), job failure, cancellation (SIGTERM) and API
  refusals each end as they should, and the job and its staged data are always deleted.
* The Role of manifests/trainer allows exactly the (group, resource, verb) the task uses.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from scratchbert.errors import RunFailed, ScratchBertError
from scratchbert.pretrain import PretrainConfig
from scratchbert_pipelines import bert_pipeline, trainjob
from scratchbert_pipelines import settings as pipeline_settings
from scratchbert_pipelines.trainjob import TrainJobConfig

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = Path(__file__).resolve().parent / "schemas"


# ------------------------------------------------------------------------------------ the schema


def crd_file(settings) -> Path:
    return SCHEMAS / f"kubeflow-trainer-{settings.TRAINER_VERSION}" / "trainer.kubeflow.org_trainjobs.yaml"


def strict(schema):
    """The schema with ``additionalProperties: false`` on every object that lists its properties
    (a structural schema drops unknown fields; with strict field validation, as kubectl sends
    by default, the API server refuses them). ``x-kubernetes-*`` keywords are left in place:
    jsonschema ignores keywords it does not know; the CEL rules are checked by hand."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(x) for x in schema]
    return schema


@pytest.fixture(scope="module")
def crd(settings) -> dict:
    return yaml.safe_load(crd_file(settings).read_text())


@pytest.fixture(scope="module")
def validator(crd, settings):
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == settings.TRAINER_API_VERSION]
    schema = strict(version["schema"]["openAPIV3Schema"])
    # metadata is {type: object} in a CRD (the API server validates it itself): ObjectMeta's
    # fields that we set, typed, and nothing else.
    schema["properties"]["metadata"] = {
        "type": "object", "additionalProperties": False, "required": ["name"],
        "properties": {"name": {"type": "string"}, "namespace": {"type": "string"},
                       "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                       "ownerReferences": {"type": "array", "items": {
                           "type": "object", "additionalProperties": False,
                           "required": ["apiVersion", "kind", "name", "uid"],
                           "properties": {k: {"type": "string"} for k in ("apiVersion", "kind", "name", "uid")}}}}}
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def cel_name_rules(crd) -> list[tuple[str, str]]:
    """The CEL rules on the TrainJob's root: each is `size(self.metadata.name) <= N` or
    `self.metadata.name.matches('REGEX')` (an unknown form fails the test, to be translated)."""
    (version,) = crd["spec"]["versions"]
    rules = []
    for rule in version["schema"]["openAPIV3Schema"].get("x-kubernetes-validations", []):
        text = rule["rule"]
        if m := re.fullmatch(r"size\(self\.metadata\.name\) <= (\d+)", text):
            rules.append(("max", m.group(1)))
        elif m := re.fullmatch(r"self\.metadata\.name\.matches\('(.+)'\)", text):
            rules.append(("regex", m.group(1)))
        else:
            pytest.fail(f"a new CEL rule on the TrainJob root, to check here by hand: {text}")
    return rules


def errors_of(validator, crd, obj: dict) -> list[str]:
    """Schema errors, the root CEL rules, and the Trainer webhook's checks on runtimePatches
    and the torchrun environment (pkg/runtime/framework/plugins/{jobset,torch} at the release)."""
    found = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(obj)]
    name = obj["metadata"]["name"]
    for kind, value in cel_name_rules(crd):
        if kind == "max" and len(name) > int(value) or kind == "regex" and not re.search(value, name):
            found.append(f"metadata.name {name!r} breaks the CEL rule {kind} {value}")
    spec = obj.get("spec", {})
    for env in spec.get("trainer", {}).get("env", []):
        if env["name"] in trainjob.RESERVED_ENV:
            found.append(f"trainer.env sets {env['name']}, which the torch plugin reserves")
    for patch in spec.get("runtimePatches", []):
        if not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9/._-]+",
                            patch["manager"]):
            found.append(f"runtimePatches manager {patch['manager']!r} is not a domain-prefixed path")
        for rjob in patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]:
            if rjob["name"] != pipeline_settings.TRAINER_NODE:
                found.append(f"replicated job {rjob['name']!r} is not in the {pipeline_settings.TRAINER_RUNTIME} runtime")
            for c in rjob["template"]["spec"]["template"]["spec"].get("containers", []):
                if c["name"] != pipeline_settings.TRAINER_NODE:
                    found.append(f"container {c['name']!r} is not in the runtime")
                if c.get("env"):
                    found.append("a runtime patch may not set the env of the node container")
    return found


def kfp_task_config(optional_secret: bool = True):
    """What the KFP backend puts in the pretrain task's TaskConfig, from the pipeline's own
    settings: its CPU and memory, its GPU count (0: it launches a TrainJob), the toleration,
    the node selector and the object-store Secret's keys (Kubernetes JSON, quantities as strings)."""
    from kfp import dsl

    r = bert_pipeline.RESOURCES["pretrain"]
    s = pipeline_settings
    return dsl.TaskConfig(
        resources={"limits": {"cpu": r.cpu_limit, "memory": r.memory_limit, s.GPU_RESOURCE: "0"},
                   "requests": {"cpu": r.cpu_request, "memory": r.memory_request}},
        env=[{"name": k, "valueFrom": {"secretKeyRef": {"name": s.S3_SECRET_NAME, "key": k, "optional": optional_secret}}}
             for k in s.S3_ENV_KEYS],
        tolerations=[{"key": s.GPU_TAINT_KEY, "operator": "Equal", "value": s.GPU_TAINT_VALUE,
                      "effect": s.GPU_TAINT_EFFECT}],
        node_selector={s.GPU_NODE_LABEL_KEY: s.GPU_NODE_LABEL_VALUE})


def pretrain_config(**overrides) -> PretrainConfig:
    values = {"dataset": "/kfp/inputs/dataset", "out": "/kfp/outputs/model", "logs": "/kfp/outputs/logs",
              "preset": "base", "max_steps": 100000, "learning_rate": 1e-4, "batch_size": 32,
              "checkpoint_uri": "s3://ckpt/run-1", "logging_steps": 50}
    return PretrainConfig(**{**values, **overrides})


OWNER = {"apiVersion": "v1", "kind": "Pod", "name": "scratchbert-abc-pretrain-123", "uid": str(uuid.uuid4())}


@pytest.fixture(scope="module")
def job_2x8():
    return trainjob.manifest("scratchbert-pretrain-0a1b2c3d", "kubeflow", pretrain_config(),
                             TrainJobConfig(num_nodes=2, gpus_per_node=8), kfp_task_config(),
                             "s3://scratchbert-staging/trainjobs/scratchbert-pretrain-0a1b2c3d/", owner=OWNER)


def test_the_vendored_crd_is_the_pinned_release(settings, crd):
    assert crd_file(settings).is_file(), f"vendor the TrainJob CRD of {settings.TRAINER_VERSION} (see its README)"
    readme = (crd_file(settings).parent / "README.md").read_text()
    assert f"/{settings.TRAINER_VERSION}/manifests/base/crds/trainer.kubeflow.org_trainjobs.yaml" in readme
    assert crd["spec"]["group"] == settings.TRAINER_GROUP
    assert crd["spec"]["names"]["plural"] == settings.TRAINJOB_PLURAL and crd["spec"]["names"]["kind"] == "TrainJob"
    assert [v["name"] for v in crd["spec"]["versions"]] == [settings.TRAINER_API_VERSION]


def test_trainjob_for_2_nodes_x_8_gpus_validates_against_the_crd(job_2x8, validator, crd):
    assert errors_of(validator, crd, job_2x8) == []


@pytest.mark.parametrize("breakage", ["typo", "type", "name", "reserved_env", "patch_env", "manager"])
def test_validation_is_not_a_no_op(job_2x8, validator, crd, breakage):
    """Each kind of mistake the checks above exist for is caught."""
    bad = json.loads(json.dumps(job_2x8))
    pod = bad["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0]
    if breakage == "typo":
        bad["spec"]["trainer"]["numNode"] = bad["spec"]["trainer"].pop("numNodes")
    elif breakage == "type":
        bad["spec"]["trainer"]["numProcPerNode"] = "auto"  # an int since v2.2
    elif breakage == "name":
        bad["metadata"]["name"] = "Scratchbert_pretrain"
    elif breakage == "reserved_env":
        bad["spec"]["trainer"]["env"].append({"name": "PET_NNODES", "value": "2"})
    elif breakage == "patch_env":
        pod["template"]["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "X", "value": "1"}]
    elif breakage == "manager":
        bad["spec"]["runtimePatches"][0]["manager"] = "scratchbert"
    assert errors_of(validator, crd, bad)


def test_trainjob_pods_get_the_tasks_settings(job_2x8, settings):
    spec = job_2x8["spec"]
    assert job_2x8["apiVersion"] == f"{settings.TRAINER_GROUP}/{settings.TRAINER_API_VERSION}"
    assert spec["runtimeRef"] == {"apiGroup": settings.TRAINER_GROUP, "kind": settings.TRAINER_RUNTIME_KIND,
                                  "name": settings.TRAINER_RUNTIME}
    trainer = spec["trainer"]
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    assert trainer["image"] == settings.default_image(gpu=True)
    # 8 GPUs per node; the task's CPU and memory are per GPU.
    r = bert_pipeline.RESOURCES["pretrain"]
    assert trainer["resourcesPerNode"]["limits"][settings.GPU_RESOURCE] == "8"
    assert trainer["resourcesPerNode"]["requests"] == {"cpu": str(8 * int(r.cpu_request)),
                                                       "memory": f"{8 * int(r.memory_request[:-2])}Gi"}
    assert trainer["resourcesPerNode"]["limits"]["memory"] == f"{8 * int(r.memory_limit[:-2])}Gi"
    # The object-store Secret, by reference only.
    env = {e["name"]: e for e in trainer["env"]}
    assert set(env) == set(settings.S3_ENV_KEYS)
    assert {e["valueFrom"]["secretKeyRef"]["name"] for e in env.values()} == {settings.S3_SECRET_NAME}
    assert not [e for e in env.values() if "value" in e]
    (patch,) = spec["runtimePatches"]
    (rjob,) = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    pod = rjob["template"]["spec"]["template"]["spec"]
    assert pod["tolerations"] == kfp_task_config().tolerations
    assert pod["nodeSelector"] == {settings.GPU_NODE_LABEL_KEY: settings.GPU_NODE_LABEL_VALUE}
    shm = {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": f"{8 * int(settings.SHM_SIZE[:-2])}Gi"}
    mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {"/dev/shm", settings.TRAINJOB_WORKDIR} <= mounts
    assert job_2x8["metadata"]["ownerReferences"] == [OWNER]


def test_without_a_task_config_the_settings_place_the_pods(settings):
    """kfp.local, or a KFP backend before 2.15: no TaskConfig; the GPU settings and the Secret apply."""
    job = trainjob.manifest("scratchbert-pretrain-00000000", "kubeflow", pretrain_config(),
                            TrainJobConfig(num_nodes=2, gpus_per_node=1), None, "s3://b/p/")
    trainer = job["spec"]["trainer"]
    assert trainer["resourcesPerNode"] == {"limits": {settings.GPU_RESOURCE: "1"}}
    assert {e["name"] for e in trainer["env"]} == set(settings.S3_ENV_KEYS)
    # optional, as on the task (a Secret without static keys would hold the pods in CreateContainerConfigError)
    assert all(e["valueFrom"]["secretKeyRef"]["optional"] is True for e in trainer["env"])
    pod = job["spec"]["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"][0][
        "template"]["spec"]["template"]["spec"]
    assert pod["tolerations"][0]["key"] == settings.GPU_TAINT_KEY
    assert pod["nodeSelector"] == {settings.GPU_NODE_LABEL_KEY: settings.GPU_NODE_LABEL_VALUE}
    assert "ownerReferences" not in job["metadata"]


def test_a_compile_without_node_selector_reaches_the_job_too():
    """The task's settings win over the defaults: no node selector on the task, none on the job."""
    tc = kfp_task_config()
    tc.node_selector = {}
    where = trainjob.placement(TrainJobConfig(num_nodes=2, gpus_per_node=1), tc)
    assert where["node_selector"] == {}


def test_the_job_runs_the_same_pretrain_under_torchrun(job_2x8, settings):
    """Its args are `torchrun --no-python -- scratchbert pretrain FLAGS`; torchrun's own parser
    hands all of FLAGS to `scratchbert`, and scratchbert's parser turns them back into the
    task's configuration, with the node's local folders."""
    from torch.distributed.run import get_args_parser

    from scratchbert import cli

    trainer = job_2x8["spec"]["trainer"]
    assert trainer["command"][:3] == ["python", "-m", "scratchbert_pipelines.trainjob"]
    args = trainer["args"]
    assert args[0] == "torchrun"
    parsed = get_args_parser().parse_args(args[1:])
    assert parsed.no_python and parsed.training_script == "scratchbert"
    assert parsed.training_script_args[0] == "pretrain"
    ns = cli.build_parser().parse_args(parsed.training_script_args)
    got = cli.config_from_args(PretrainConfig, ns)
    work = settings.TRAINJOB_WORKDIR
    assert got == pretrain_config(dataset=f"{work}/dataset", out=f"{work}/model", logs=f"{work}/logs")
    # The data goes in and out through the staging prefix.
    command = trainer["command"]
    stage_in = command[command.index("--stage-in") + 1:command.index("--stage-in") + 3]
    assert stage_in == ["s3://scratchbert-staging/trainjobs/scratchbert-pretrain-0a1b2c3d/dataset/", f"{work}/dataset"]
    assert command[-1] == "--"


def test_every_flag_of_pretrain_round_trips():
    """Non-default values of every type (bools both ways) survive the trip through the command line."""
    from scratchbert import cli

    cfg = pretrain_config(unigram_bias=False, torch_compile=True, hidden_size=96, epochs=2.5, tokenizer="/t",
                          precision="fp32")
    ns = cli.build_parser().parse_args(["pretrain", *trainjob.pretrain_argv(cfg)])
    assert cli.config_from_args(PretrainConfig, ns) == cfg


@pytest.mark.parametrize(("nodes", "gpus", "pod_gpus"), [(1, 1, "1"), (2, 1, "0"), (1, 2, "0"), (2, 8, "0")])
def test_the_task_pod_asks_for_a_gpu_only_to_train_itself(nodes, gpus, pod_gpus):
    job = TrainJobConfig(num_nodes=nodes, gpus_per_node=gpus)
    assert trainjob.pod_gpus(job) == pod_gpus
    assert trainjob.distributed(job) is (pod_gpus == "0")


@pytest.mark.parametrize(("nodes", "gpus"), [(0, 1), (1, 0), (-2, 8)])
def test_bad_sizes_are_one_sentence(nodes, gpus):
    with pytest.raises(ScratchBertError, match="must both be at least 1"):
        trainjob.pod_gpus(TrainJobConfig(num_nodes=nodes, gpus_per_node=gpus))


# ------------------------------------------------------------------------ a fake API server


class _Response:
    """What the kubernetes client reads of an HTTP response (urllib3's, as its REST layer returns it)."""

    def __init__(self, status: int, data: str = "", chunks: list[bytes] | None = None, reason: str = "OK"):
        self.status, self.reason, self.data = status, reason, data
        self._chunks = chunks if chunks is not None else [data.encode()]

    def getheaders(self):
        return {}

    def getheader(self, name, default=None):
        return default

    def stream(self, amt=None, decode_content=False):
        yield from self._chunks

    def close(self):
        pass

    def release_conn(self):
        pass


def request_info(method: str, url: str, query: dict) -> tuple[str, str, str, str | None]:
    """(group, resource[/subresource], verb, name) of a request, as the API server's authorizer
    names them (k8s.io/apiserver RequestInfoFactory)."""
    parts = urlsplit(url).path.strip("/").split("/")
    if parts[0] == "api":
        group, rest = "", parts[2:]
    else:
        group, rest = parts[1], parts[3:]
    assert rest[0] == "namespaces", f"a cluster-wide request: {url}"
    resource, name, sub = rest[2], (rest[3] if len(rest) > 3 else None), (rest[4] if len(rest) > 4 else None)
    verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete" if name else "deletecollection",
            "GET": "get" if name else ("watch" if query.get("watch") in ("true", True) else "list")}[method]
    return group, resource + (f"/{sub}" if sub else ""), verb, name


class FakeCluster:
    """TrainJobs, their node-0 pod and its log, driven by a script: each read of the TrainJob
    takes the next step (the last one repeats). Steps: ``pending`` (the pod cannot be
    scheduled), ``running`` (the pod runs and logs ``lines``), ``node`` (node 0 runs:
    ``node(job)`` returns its log), ``complete``, ``failed``, ``sigterm`` (this process gets
    SIGTERM, as when the run is cancelled)."""

    def __init__(self, script: list[str], *, node=None, lines=("step 1", "step 2"), refuse: int | None = None):
        from kubernetes import client

        self.api = client.ApiClient()
        self.api.request = self.request
        self.script, self.node, self.lines, self.refuse = list(script), node, list(lines), refuse
        self.jobs: dict[str, dict] = {}
        self.created: list[dict] = []
        self.calls: list[tuple[str, str, str]] = []
        self.pod: dict | None = None
        self.log: list[str] = []
        self.namespace = "kubeflow"

    def request(self, method, url, query_params=None, headers=None, post_params=None, body=None,
                _preload_content=True, _request_timeout=None):
        query = dict(query_params or [])
        group, resource, verb, name = request_info(method, url, query)
        self.calls.append((group, resource, verb))
        assert f"/namespaces/{self.namespace}/" in url
        if resource == "trainjobs":
            return self._trainjobs(verb, name, body)
        if resource == "pods" and verb == "list":
            return self._pods(query["labelSelector"])
        if resource == "pods/log" and verb == "get":
            assert query.get("container") == pipeline_settings.TRAINER_NODE
            text = "".join(line + "\n" for line in self.log)
            return _Response(200, text, chunks=[line.encode() + b"\n" for line in self.log])
        raise AssertionError(f"unexpected request {method} {url}")

    def _error(self, status: int, reason: str, message: str):
        from kubernetes.client.exceptions import ApiException

        raise ApiException(http_resp=_Response(status, json.dumps({"kind": "Status", "message": message}), reason=reason))

    def _trainjobs(self, verb, name, body):
        if verb == "create":
            if self.refuse:
                self._error(self.refuse, "Refused", "refused by the fake")
            assert body["metadata"]["namespace"] == self.namespace
            self.created.append(body)
            self.jobs[body["metadata"]["name"]] = dict(body, status={})
            return _Response(201, json.dumps(self.jobs[body["metadata"]["name"]]))
        if name not in self.jobs:
            self._error(404, "NotFound", f"trainjobs {name} not found")
        if verb == "delete":
            del self.jobs[name]
            return _Response(200, json.dumps({"kind": "Status", "status": "Success"}))
        assert verb == "get", verb
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        job = self.jobs[name]
        if step == "pending":
            self.pod = self._pod_json(name, "Pending")
        elif step == "running":
            self.pod, self.log = self._pod_json(name, "Running"), self.lines
        elif step == "node":
            self.log = self.node(job)
            self.pod = self._pod_json(name, "Succeeded")
        elif step == "complete":
            job["status"] = {"conditions": [{"type": "Complete", "status": "True", "reason": "Completed",
                                             "message": "jobset completed successfully"}]}
        elif step == "failed":
            self.pod = self._pod_json(name, "Failed")
            job["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "FailedJobs",
                                             "message": "jobset failed: backoff limit exceeded"}]}
        elif step == "deadline":  # the Trainer's reason and message at v2.3.0
            job["status"] = {"conditions": [{"type": "Failed", "status": "True", "reason": "DeadlineExceeded",
                                             "message": "TrainJob exceeded its active deadline"}]}
        elif step == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)
        return _Response(200, json.dumps(job))

    def _pod_json(self, job: str, phase: str) -> dict:
        s = pipeline_settings
        status = {"phase": phase, "containerStatuses": [{
            "name": s.TRAINER_NODE, "ready": phase == "Running", "restartCount": 0, "image": "img", "imageID": "",
            "state": {"running": {}} if phase == "Running" else {"waiting": {"reason": "ContainerCreating"}}}]}
        if phase == "Pending":  # not scheduled yet: no container has a status
            del status["containerStatuses"]
            status["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                     "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]
        return {"metadata": {"name": f"{job}-node-0-0-x7k2p", "uid": f"uid-{job}", "creationTimestamp": "2026-01-01T00:00:00Z",
                             "labels": {s.JOBSET_NAME_LABEL: job, s.JOBSET_REPLICATED_JOB_LABEL: s.TRAINER_NODE,
                                        s.JOB_COMPLETION_INDEX_LABEL: "0"}},
                "status": status}

    def _pods(self, selector: str):
        wanted = dict(term.split("=", 1) for term in selector.split(","))
        pods = [self.pod] if self.pod and all(self.pod["metadata"]["labels"].get(k) == v for k, v in wanted.items()) else []
        return _Response(200, json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": pods}))


def stage_uri_of(job: dict, folder: str) -> str:
    command = job["spec"]["trainer"]["command"]
    for i, arg in enumerate(command):
        if arg == "--stage-out" and command[i + 1].endswith("/" + folder):
            return command[i + 2]
    raise AssertionError(f"no --stage-out of {folder}")


def stub_node(tmp_path: Path):
    """Node 0 as a stand-in: uploads a model folder and metrics.json where the job says."""
    from scratchbert import storage

    def node(job: dict) -> list[str]:
        out, logs = tmp_path / "node-model", tmp_path / "node-logs"
        out.mkdir(exist_ok=True)
        logs.mkdir(exist_ok=True)
        (out / "config.json").write_text("{}")
        (logs / "metrics.json").write_text(json.dumps({"steps": 7, "train_loss": 2.5}))
        storage.upload_dir(out, stage_uri_of(job, "model"))
        storage.upload_dir(logs, stage_uri_of(job, "logs"))
        return ["stub node 0 done"]

    return node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def real_node(tmp_path: Path, s3_env: dict):
    """Node 0 for real: the job's own command line (this module, then torchrun and
    `scratchbert pretrain`), with the node-local folder under tmp_path, the Secret's keys
    resolved to the embedded S3 server, and the PET_* variables the torch runtime sets (one
    node, one process: the fake cluster runs node 0 alone)."""

    def node(job: dict) -> list[str]:
        s = pipeline_settings
        trainer = job["spec"]["trainer"]
        refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in trainer["env"]}
        assert {r["name"] for r in refs.values()} == {s.S3_SECRET_NAME}
        env = {**os.environ, **{name: s3_env[ref["key"]] for name, ref in refs.items() if ref["key"] in s3_env},  # optional keys
               "PET_NNODES": "1", "PET_NPROC_PER_NODE": "1", "PET_NODE_RANK": "0",
               "PET_MASTER_ADDR": "127.0.0.1", "PET_MASTER_PORT": str(free_port()), "SCRATCHBERT_TENSORBOARD": "0"}
        work = tmp_path / "node-work"
        argv = [a.replace(s.TRAINJOB_WORKDIR, str(work)) for a in trainer["command"] + trainer["args"]]
        assert argv[0] == "python"
        proc = subprocess.run([sys.executable, *argv[1:]], env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        return (proc.stdout + proc.stderr).splitlines()

    return node


def staged_objects(s3_server, bucket: str) -> list[str]:
    return [o.object_name for o in s3_server.client().list_objects(bucket, recursive=True)]


@pytest.fixture
def staging(s3_env, s3_bucket) -> str:
    return f"s3://{s3_bucket}/trainjobs"


def launch(fake: FakeCluster, config, job=None, staging: str = "", said=None, task_config=None):
    said = [] if said is None else said
    return trainjob.run_trainjob(config, job or TrainJobConfig(num_nodes=2, gpus_per_node=1), task_config,
                                 api_client=fake.api, namespace=fake.namespace, staging_uri=staging,
                                 poll_seconds=0, say=said.append, sleep=lambda s: None)


def test_success_runs_the_job_and_brings_the_model_back(built_dataset, tmp_path, staging, s3_env, s3_server,
                                                        s3_bucket, monkeypatch):
    """Node 0 really runs the TrainJob's command; the model comes back into the task's folders."""
    monkeypatch.setenv("KFP_POD_NAME", OWNER["name"])
    monkeypatch.setenv("KFP_POD_UID", OWNER["uid"])
    fake = FakeCluster(["pending", "node", "complete"], node=real_node(tmp_path, s3_env))
    config = PretrainConfig(dataset=str(built_dataset), out=str(tmp_path / "task" / "model"),
                            logs=str(tmp_path / "task" / "logs"), preset="nano", max_steps=2, batch_size=8,
                            eval_steps=0, eval_examples=16, logging_steps=1)
    handler = signal.getsignal(signal.SIGTERM)
    said = []
    metrics = launch(fake, config, staging=staging, said=said, task_config=kfp_task_config())
    assert metrics["steps"] == 2 and metrics["train_tokens"] > 0
    assert json.loads((tmp_path / "task" / "logs" / "metrics.json").read_text()) == metrics
    assert (tmp_path / "task" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "task" / "model" / "tokenizer.json").is_file()
    (body,) = fake.created
    assert body["metadata"]["ownerReferences"] == [OWNER]
    assert fake.jobs == {}, "the TrainJob was not deleted"
    assert staged_objects(s3_server, s3_bucket) == [], "the staged data was not removed"
    assert any("Unschedulable" in line for line in said), "a pending pod is reported with its reason"
    assert any(line.startswith("[node-0]") and "train_loss" in line for line in said), "node 0's log is streamed"
    assert signal.getsignal(signal.SIGTERM) is handler


def test_a_failed_job_fails_the_task_and_is_deleted(built_dataset, tmp_path, staging, s3_server, s3_bucket):
    fake = FakeCluster(["running", "failed"], lines=["Traceback (most recent call last):", "RuntimeError: boom"])
    said = []
    config = pretrain_config(dataset=str(built_dataset), out=str(tmp_path / "m"), logs=str(tmp_path / "l"))
    with pytest.raises(RunFailed, match=r"failed \(FailedJobs: jobset failed: backoff limit exceeded\)"):
        launch(fake, config, staging=staging, said=said)
    assert "[node-0] RuntimeError: boom" in said
    assert fake.jobs == {} and len(fake.created) == 1
    assert ("trainer.kubeflow.org", "trainjobs", "delete") in fake.calls
    assert not (tmp_path / "m").exists()
    assert staged_objects(s3_server, s3_bucket) == []


@pytest.mark.parametrize(("budget", "deadline"), [(0.0, None), (10.0, 40 * 60), (60.0, 90 * 60), (600.0, 900 * 60)])
def test_a_budgeted_job_has_a_deadline(budget, deadline, validator, crd):
    """A job with a time budget is failed by the Trainer once it has run 1.5 times its budget (at
    least 30 minutes more than it), so a hung job, or one never scheduled, does not hold the task forever."""
    body = trainjob.manifest("scratchbert-pretrain-0a1b2c3d", "kubeflow", pretrain_config(time_budget_minutes=budget),
                             TrainJobConfig(num_nodes=2, gpus_per_node=8), kfp_task_config())
    assert body["spec"].get("activeDeadlineSeconds") == deadline
    assert errors_of(validator, crd, body) == []


def test_a_job_past_its_deadline_fails_the_task_and_says_why(built_dataset, tmp_path, staging, s3_server, s3_bucket):
    fake = FakeCluster(["pending", "pending", "deadline"])
    config = pretrain_config(dataset=str(built_dataset), out=str(tmp_path / "m"), logs=str(tmp_path / "l"),
                             time_budget_minutes=60.0)
    with pytest.raises(RunFailed, match=r"failed \(DeadlineExceeded: TrainJob exceeded its active deadline\); it ran "
                                        r"past its deadline of 90 minutes \(pretraining's time budget of 60 "):
        launch(fake, config, staging=staging, said=[])
    assert fake.created[0]["spec"]["activeDeadlineSeconds"] == 5400
    assert fake.jobs == {} and staged_objects(s3_server, s3_bucket) == []


def test_cancelling_the_task_deletes_the_job(built_dataset, tmp_path, staging, s3_server, s3_bucket):
    """SIGTERM (KFP cancels the run; Argo passes the signal to the task's process) while the job
    runs: the task deletes the job and its staged data and ends with one sentence."""
    fake = FakeCluster(["running", "sigterm", "complete"])
    handler = signal.getsignal(signal.SIGTERM)
    said = []
    config = pretrain_config(dataset=str(built_dataset), out=str(tmp_path / "m"), logs=str(tmp_path / "l"))
    with pytest.raises(RunFailed, match="cancelled"):
        launch(fake, config, staging=staging, said=said)
    assert fake.jobs == {} and len(fake.created) == 1
    assert staged_objects(s3_server, s3_bucket) == []
    assert not (tmp_path / "m").exists()
    assert signal.getsignal(signal.SIGTERM) is handler, "the task's own SIGTERM handling is restored"


@pytest.mark.parametrize(("status", "hint"), [(404, "is Kubeflow Trainer v"), (403, "apply manifests/trainer"),
                                              (422, "422 Refused: refused by the fake")])
def test_a_refused_trainjob_is_one_sentence(built_dataset, tmp_path, staging, s3_server, s3_bucket, status, hint):
    fake = FakeCluster(["complete"], refuse=status)
    config = pretrain_config(dataset=str(built_dataset), out=str(tmp_path / "m"), logs=str(tmp_path / "l"))
    with pytest.raises(ScratchBertError, match=re.escape(hint)) as info:
        launch(fake, config, staging=staging)
    assert "\n" not in str(info.value)
    assert staged_objects(s3_server, s3_bucket) == []


def test_no_cluster_is_one_sentence(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    with pytest.raises(ScratchBertError, match="needs a Kubernetes cluster"):
        trainjob.run_trainjob(pretrain_config(), TrainJobConfig(num_nodes=2, gpus_per_node=1))


def test_node_0_uploads_only_after_success(tmp_path, s3_env, s3_server, s3_bucket):
    """Inside a job pod: stage in, run, and stage out only on node 0 and only if the command succeeded."""
    from scratchbert import storage

    src = tmp_path / "src"
    src.mkdir()
    (src / "data.txt").write_text("hello")
    storage.upload_dir(src, f"s3://{s3_bucket}/in/")
    write = [sys.executable, "-c", f"import pathlib; p = pathlib.Path({str(tmp_path / 'out')!r}); p.mkdir(); "
             f"(p / 'copy.txt').write_text(pathlib.Path({str(tmp_path / 'in' / 'data.txt')!r}).read_text())"]
    stage_in = [(f"s3://{s3_bucket}/in/", str(tmp_path / "in"))]
    stage_out = [(str(tmp_path / "out"), f"s3://{s3_bucket}/out/")]
    assert trainjob.node_main(stage_in, stage_out, write, env={"PET_NODE_RANK": "1"}) == 0
    assert [n for n in staged_objects(s3_server, s3_bucket) if n.startswith("out/")] == []
    (tmp_path / "out" / "copy.txt").unlink()
    (tmp_path / "out").rmdir()
    assert trainjob.node_main(stage_in, stage_out, write, env={"PET_NODE_RANK": "0"}) == 0
    assert "out/copy.txt" in staged_objects(s3_server, s3_bucket)
    fail = [sys.executable, "-c", "raise SystemExit(3)"]
    assert trainjob.node_main(stage_in, [(str(tmp_path / "none"), f"s3://{s3_bucket}/x/")], fail, env={}) == 3


# ----------------------------------------------------------------------------------------- RBAC


def role_permissions(render_kustomization, settings) -> set[tuple[str, str, str]]:
    objs = render_kustomization(ROOT / "manifests" / "trainer")
    (role,) = [o for o in objs if o["kind"] == "Role"]
    (binding,) = [o for o in objs if o["kind"] == "RoleBinding"]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == settings.NAMESPACE
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": settings.PIPELINE_SERVICE_ACCOUNT,
                                    "namespace": settings.NAMESPACE}]
    allowed = set()
    for rule in role["rules"]:
        assert not rule.get("resourceNames") and not rule.get("nonResourceURLs")
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    assert "*" not in (group, resource, verb), "no wildcards"
                    allowed.add((group, resource, verb))
    return allowed


def test_the_role_allows_exactly_what_the_task_calls(render_kustomization, settings, built_dataset, tmp_path,
                                                     staging, s3_server, s3_bucket):
    """Every request of a success, a failure and a cancellation (recorded at the client's HTTP
    layer) is allowed by the Role, and the Role allows nothing that none of them needs."""
    calls = set()
    for script in (["pending", "node", "complete"], ["running", "failed"], ["running", "sigterm"]):
        fake = FakeCluster(script, node=stub_node(tmp_path))
        config = pretrain_config(dataset=str(built_dataset), out=str(tmp_path / "task-model"),
                                 logs=str(tmp_path / "task-logs"))
        with pytest.raises(RunFailed) if script[-1] != "complete" else _nothing():
            launch(fake, config, staging=staging)
        calls |= set(fake.calls)
    assert calls == role_permissions(render_kustomization, settings)
    assert {c[0] for c in calls} == {"", settings.TRAINER_GROUP}


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_docs_install_the_pinned_trainer_and_the_role(settings):
    """docs/cluster.md installs the Trainer at TRAINER_VERSION (read from settings), applies
    manifests/trainer, and starts a 2 x 1 run with the pipeline's own parameter names."""
    from scratchbert_pipelines import parameters

    text = (ROOT / "docs" / "cluster.md").read_text()
    assert "print(settings.TRAINER_VERSION)" in text
    for m in re.finditer(r"Trainer\b[^\n]{0,120}?\b(v\d+\.\d+\.\d+)", text):
        assert m.group(1) == settings.TRAINER_VERSION, m.group(0)
    for overlay in ("manager", "runtimes"):
        assert f"github.com/kubeflow/trainer.git/manifests/overlays/{overlay}?ref=${{TRAINER_VERSION}}" in text
    assert "kubectl apply -k manifests/trainer" in text
    assert "-p num_nodes=2 -p gpus_per_node=1" in text
    assert {"num_nodes", "gpus_per_node"} <= set(parameters.NAMES)
    assert settings.TRAINER_RUNTIME in text and settings.TRAINJOB_STAGING_URI in text


def test_submit_takes_the_sizes():
    from scratchbert_pipelines import submit

    assert submit._parse_params(["num_nodes=2", "gpus_per_node=1"]) == {"num_nodes": 2, "gpus_per_node": 1}
    with pytest.raises(ScratchBertError, match="takes a int"):
        submit._parse_params(["num_nodes=two"])
