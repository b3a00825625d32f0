"""KFP component: publish the fine-tuned model to object storage (``scratchbert.storage.publish``)."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp.dsl import Input, Model

from scratchbert.storage import PublishConfig
from scratchbert_components import make_component


def publish(model: Input[Model], publish_uri: str, publish_version: str) -> str:
    """Upload a model folder as publish_uri/<version>/ with a manifest of checksums, then point LATEST at it.

    The endpoint and keys come from the AWS_* variables (the S3 Secret).

    Args:
        model: The model folder to publish (the fine-tuned QA model).

    Returns:
        The published version's URI, e.g. s3://models/scratchbert-qa/20261125T140501Z/.
    """
    from scratchbert.storage import PublishConfig, publish_model

    uri = run_stage(publish_model, PublishConfig(model=model.path, publish_uri=publish_uri,
                                                 publish_version=publish_version))
    print(f"published {uri}")
    return uri


def build(image: str):
    """The publish component for ``image``."""
    return make_component(publish, image, PublishConfig)
