"""KFP component: pretrain BERT with MLM+NSP (``scratchbert.pretrain.pretrain``); the GPU stage."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from scratchbert.pretrain import PretrainConfig
from scratchbert_components import make_component


def pretrain(dataset: Input[Dataset], preset: str, max_steps: int, time_budget_minutes: float, learning_rate: float,
             batch_size: int, checkpoint_uri: str, model: Output[Model], logs: Output[Artifact],
             metrics: Output[Metrics]):
    """Pretrain a BERT model from scratch on the MLM+NSP dataset.

    Args:
        dataset: The dataset folder from the dataset component (it carries its tokenizer).
        model: The pretrained model: BertForPreTraining weights, config, tokenizer and model card.
        logs: The run's records: metrics.json, log_history.json (the loss curve) and TensorBoard runs.
        metrics: Training loss, steps, time, tokens per second, validation MLM/NSP accuracy and loss.
    """
    from scratchbert.pretrain import PretrainConfig
    from scratchbert.pretrain import pretrain as run_pretraining

    config = PretrainConfig(dataset=dataset.path, out=model.path, logs=logs.path, preset=preset, max_steps=max_steps,
                            time_budget_minutes=time_budget_minutes, learning_rate=learning_rate,
                            batch_size=batch_size, checkpoint_uri=checkpoint_uri,
                            logging_steps=logging_interval(max_steps))
    log_numbers(metrics, run_stage(run_pretraining, config))


def build(image: str):
    """The pretrain component for ``image`` (the GPU image in the pipeline)."""
    return make_component(pretrain, image, PretrainConfig)
