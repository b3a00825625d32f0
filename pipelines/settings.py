"""Every cluster-side decision of scratchbert, in one place.

The pipeline, ``scratchbert_pipelines.compile``, ``scratchbert submit``, and the static tests
that check ``images/`` and ``manifests/`` all read these values; nothing else spells them out.
The kfp SDK pin in pyproject.toml and KFP_VERSION below must agree (tests/static/test_versions.py).
"""

from __future__ import annotations


def project_version() -> str:
    """The installed package's version: the tag of every image we build."""
    from scratchbert import __version__

    return __version__


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

# Where the publish step puts the fine-tuned QA model by default.
PUBLISH_BUCKET = "models"
PUBLISH_PREFIX = "scratchbert-qa"
