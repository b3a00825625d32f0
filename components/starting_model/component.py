"""KFP component: bring the starting model into the pipeline (``scratchbert.starting_model``)."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp.dsl import Metrics, Model, Output

from scratchbert.starting_model import StartingModelConfig
from scratchbert_components import make_component


def starting_model(init_model: str, max_seq_len: int, model: Output[Model], metrics: Output[Metrics]):
    """Fetch the starting model (Hub, object storage or a path), check it is a BERT that fits, and hand it on.

    Args:
        model: The starting model folder: config, weights and tokenizer.
        metrics: Its size: layers, hidden size, vocabulary, positions.
    """
    from scratchbert.starting_model import StartingModelConfig, prepare_starting_model

    config = StartingModelConfig(init_model=init_model, out=model.path, max_seq_len=max_seq_len)
    log_numbers(metrics, run_stage(prepare_starting_model, config))


def build(image: str):
    """The starting_model component for ``image``."""
    return make_component(starting_model, image, StartingModelConfig)
