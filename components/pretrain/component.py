"""KFP component: pretrain BERT with MLM+NSP (``scratchbert.pretrain.pretrain``); the GPU stage."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import make_component


def pretrain(dataset: Input[Dataset], preset: str, max_steps: int, time_budget_minutes: float,
             learning_rate: float, batch_size: int, checkpoint_uri: str,
             model: Output[Model], metrics: Output[Metrics]):
    """Pretrain a BERT model from scratch on the MLM+NSP dataset.

    Args:
        dataset: The dataset folder from the dataset component (it carries its tokenizer).
        preset: Model size: nano, tiny, mini, small, medium or base.
        max_steps: Optimizer steps; -1 trains one epoch, or until the time budget when one is set.
        time_budget_minutes: Stop training after this many minutes (the learning-rate schedule follows the clock); 0 means no budget.
        learning_rate: Peak learning rate (linear warmup, then linear decay to 0).
        batch_size: Examples per optimizer step.
        checkpoint_uri: s3://bucket/prefix where checkpoints are mirrored so a restarted task resumes; empty turns mirroring off.
        model: The pretrained model (BertForPreTraining weights, config, tokenizer), metrics.json and log_history.json.
        metrics: Training loss, steps, time, tokens per second, validation MLM/NSP accuracy and loss.
    """
    from scratchbert.pretrain import PretrainConfig, pretrain as run_pretraining

    config = PretrainConfig(dataset=dataset.path, out=model.path, preset=preset, max_steps=max_steps,
                            time_budget_minutes=time_budget_minutes or None, learning_rate=learning_rate,
                            batch_size=batch_size, logging_steps=logging_interval(max_steps),
                            checkpoint_uri=checkpoint_uri or None)
    log_numbers(metrics, run_stage(run_pretraining, config))


def build(image: str):
    """The pretrain component for ``image`` (the GPU image in the pipeline)."""
    return make_component(pretrain, image)
