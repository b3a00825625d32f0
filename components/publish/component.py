"""KFP component: publish the fine-tuned model to object storage (``scratchbert.storage.publish``)."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp.dsl import Input, Model

from components import make_component


def publish(model: Input[Model], publish_uri: str, version: str) -> str:
    """Upload a model folder as publish_uri/<version>/ with a manifest of checksums, then point LATEST at it.

    Args:
        model: The model folder to publish (the fine-tuned QA model).
        publish_uri: s3://bucket/prefix; the endpoint and keys come from the AWS_* variables (the S3 secret).
        version: Version name; empty uses the UTC time (e.g. 20261125T140501Z). A published version is never overwritten.

    Returns:
        The published version's URI, e.g. s3://models/scratchbert-qa/20261125T140501Z/.
    """
    from scratchbert import storage

    uri = run_stage(storage.publish, model.path, publish_uri, version or None)
    print(f"published {uri}")
    return uri


def build(image: str):
    """The publish component for ``image``."""
    return make_component(publish, image)
