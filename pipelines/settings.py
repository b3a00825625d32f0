"""Every cluster-side decision of scratchbert, in one place.

The pipeline, ``scratchbert_pipelines.compile``, ``scratchbert submit``, and the static tests
that check ``images/`` and ``manifests/`` all read these values; nothing else spells them out.
The kfp SDK pin in pyproject.toml and KFP_VERSION below must agree (tests/static/test_versions.py).
"""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

# In a checkout, pyproject.toml beside this folder; scripts/lib.sh reads this file with any python3.
_PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def project_version() -> str:
    """The project's version (the checkout's pyproject.toml, else the installed package's): the
    tag of every image we build. Standard library only."""
    if _PYPROJECT.is_file():
        return re.search(r'^version\s*=\s*"([^"]+)"', _PYPROJECT.read_text(), re.M).group(1)
    return version("scratchbert")


# Kubeflow Pipelines: SDK pin (pyproject.toml), backend manifests ref (manifests/, kind script).
KFP_VERSION = "2.17.3"
# Kubernetes version the manifests are validated against (kubernetes-validate) and kind runs.
KUBERNETES_VERSION = "1.33.0"

# Images (repository names; the tag defaults to the project version).
IMAGE_REGISTRY = "ghcr.io/scratchbert"
CPU_IMAGE_NAME = "scratchbert"
GPU_IMAGE_NAME = "scratchbert-cuda"


def default_image(gpu: bool = False) -> str:
    name = GPU_IMAGE_NAME if gpu else CPU_IMAGE_NAME
    return f"{IMAGE_REGISTRY}/{name}:{project_version()}"


# The images' user (images/Dockerfile*: uid 1000, group 0): pipeline tasks, the bucket Job and
# the serving container run as it, never as root.
RUN_AS_USER = 1000
RUN_AS_GROUP = 0

# Namespace of a standalone KFP install, where pipeline pods run.
NAMESPACE = "kubeflow"

# The in-cluster object store of a standalone KFP 2.16+ install: SeaweedFS's S3 gateway, the
# Service `seaweedfs` on port 9000 (KFP 2.16 removed the old `minio-service`).
S3_SERVICE = "seaweedfs"
S3_PORT = 9000

# GPU scheduling: the GPU node is labelled and tainted so that only GPU tasks land there.
GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL_KEY = "nvidia.com/gpu.present"
GPU_NODE_LABEL_VALUE = "true"
GPU_TAINT_KEY = "nvidia.com/gpu"
GPU_TAINT_VALUE = "present"
GPU_TAINT_EFFECT = "NoSchedule"

# Object-store credentials: a Secret whose keys become environment variables of the tasks
# that touch object storage directly (corpus from s3://, publish). Values never appear in
# the pipeline YAML.
S3_SECRET_NAME = "scratchbert-s3"
S3_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")
# Keys a Secret may add (docs/cluster.md), passed the same way where it has them: the store's
# region (AWS wants it to create a bucket) and the STS endpoint of a web identity.
S3_OPTIONAL_KEYS = ("AWS_REGION", "AWS_ENDPOINT_URL_STS")
S3_ENV_KEYS = S3_SECRET_KEYS + S3_OPTIONAL_KEYS

# Where the publish step puts the fine-tuned QA model by default.
PUBLISH_BUCKET = "models"
PUBLISH_PREFIX = "scratchbert-qa"

# Memory-backed /dev/shm of the pods that train (DataLoader workers pass batches through it);
# it counts against the pod's memory limit. A TrainJob node gets it once per GPU.
SHM_SIZE = "4Gi"

# Kubeflow Trainer: pretraining on more than one GPU runs as a TrainJob of this release's
# `torch-distributed` runtime (docs/cluster.md installs it; tests/static validate the TrainJob
# against the CRD vendored from this tag).
TRAINER_VERSION = "v2.3.0"
TRAINER_REPOSITORY = "https://github.com/kubeflow/trainer"
TRAINER_GROUP = "trainer.kubeflow.org"
TRAINER_API_VERSION = "v1alpha1"
TRAINJOB_PLURAL = "trainjobs"
TRAINER_RUNTIME = "torch-distributed"
TRAINER_RUNTIME_KIND = "ClusterTrainingRuntime"
# The runtime's only replicated job and its container (the runtime's YAML names them).
TRAINER_NODE = "node"
# Labels JobSet and the Job controller put on a TrainJob's pods (the JobSet is named after the TrainJob).
JOBSET_NAME_LABEL = "jobset.sigs.k8s.io/jobset-name"
JOBSET_REPLICATED_JOB_LABEL = "jobset.sigs.k8s.io/replicatedjob-name"
JOB_COMPLETION_INDEX_LABEL = "batch.kubernetes.io/job-completion-index"
# The `manager` of our runtime patch (a domain-prefixed path, as the Trainer webhook requires).
TRAINJOB_PATCH_MANAGER = "scratchbert.github.io/pretrain"
# TrainJob names: this prefix and a random suffix (a TrainJob name is an RFC 1035 label).
TRAINJOB_NAME_PREFIX = "scratchbert-pretrain"
# Where a TrainJob's dataset goes in and its model comes out: one prefix per TrainJob below
# this, on the endpoint of the object-store Secret, removed when the task ends. The bucket
# is created when missing.
TRAINJOB_STAGING_URI = "s3://scratchbert-staging/trainjobs"
# Node-local folder of a TrainJob's pods (an emptyDir): the staged dataset and the outputs.
TRAINJOB_WORKDIR = "/home/scratchbert/work"
# Seconds between two looks at a running TrainJob.
TRAINJOB_POLL_SECONDS = 10
# A TrainJob whose pretraining has a time budget gets a deadline (the Trainer's
# activeDeadlineSeconds, counted while it is not suspended): the budget times this factor, and
# at least this many minutes more than the budget, for what surrounds training in its pods
# (pulling the image, fetching the dataset, evaluating, uploading the model). Past it the
# Trainer stops the pods and fails the job, so a hung or never-scheduled job ends the task
# instead of holding it, and its GPUs, forever. Without a time budget the job has no deadline.
TRAINJOB_DEADLINE_FACTOR = 1.5
TRAINJOB_DEADLINE_MIN_MARGIN_MINUTES = 30
# The ServiceAccount that runs the pipeline's pods in NAMESPACE (standalone KFP); the Role of
# manifests/trainer lets it create, watch and delete TrainJobs.
PIPELINE_SERVICE_ACCOUNT = "pipeline-runner"
