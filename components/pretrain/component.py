"""KFP components: pretrain BERT with MLM+NSP (``scratchbert.pretrain.pretrain``), the GPU stage,
in the task's own pod (1 node × 1 GPU) or as a Kubeflow Trainer TrainJob
(``scratchbert_pipelines.trainjob``); and ``pretrain_gpus``, which tells the pipeline how many
GPUs the pretrain task's own pod needs for that choice."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from scratchbert.pretrain import PretrainConfig
from scratchbert_components import make_component
from scratchbert_pipelines.trainjob import TrainJobConfig

# The task's settings that its TrainJob's pods must share; each is applied to the task's own
# pod as well (apply_to_task), which trains itself at 1 node × 1 GPU. Resources: the GPU
# count of the task's pod is set at run time (pretrain_gpus: 0 while it only watches a
# TrainJob); its CPU and memory become the job's per GPU.
TASK_CONFIG_PASSTHROUGHS = [dsl.TaskConfigPassthrough(field=field, apply_to_task=True) for field in (
    dsl.TaskConfigField.RESOURCES, dsl.TaskConfigField.ENV, dsl.TaskConfigField.KUBERNETES_TOLERATIONS,
    dsl.TaskConfigField.KUBERNETES_NODE_SELECTOR)]


def pretrain(dataset: Input[Dataset], preset: str, max_steps: int, time_budget_minutes: float, reserve_steps: float,
             reserve_max_minutes: float, learning_rate: float,
             batch_size: int, checkpoint_uri: str, init_model: str, num_nodes: int, gpus_per_node: int, image: str,
             model: Output[Model], logs: Output[Artifact], metrics: Output[Metrics], task_config: dsl.TaskConfig):
    """Pretrain a BERT model on the MLM+NSP dataset, from scratch or continuing a starting model.

    Args:
        dataset: The dataset folder from the dataset component (it carries its tokenizer).
        model: The pretrained model: BertForPreTraining weights, config, tokenizer and model card.
        logs: The run's records: metrics.json, log_history.json (the loss curve) and TensorBoard runs.
        metrics: Training loss, steps, time, tokens per second, validation MLM/NSP accuracy and loss.
        task_config: The task's resources, environment, tolerations and node selector, for a TrainJob's pods.
    """
    from scratchbert.pretrain import PretrainConfig
    from scratchbert_pipelines.trainjob import TrainJobConfig, pretrain_here_or_as_trainjob

    config = PretrainConfig(dataset=dataset.path, out=model.path, logs=logs.path, preset=preset, max_steps=max_steps,
                            time_budget_minutes=time_budget_minutes, reserve_steps=reserve_steps,
                            reserve_max_minutes=reserve_max_minutes, learning_rate=learning_rate,
                            batch_size=batch_size, checkpoint_uri=checkpoint_uri, init_model=init_model,
                            logging_steps=logging_interval(max_steps))
    job = TrainJobConfig(num_nodes=num_nodes, gpus_per_node=gpus_per_node, image=image)
    log_numbers(metrics, run_stage(pretrain_here_or_as_trainjob, config, job, task_config))


def pretrain_gpus(num_nodes: int, gpus_per_node: int) -> str:
    """The GPUs of the pretrain task's own pod: "1" when it trains itself (1 node × 1 GPU), "0"
    when it launches a TrainJob. A string: the KFP backend reads a GPU count given at run time
    as a string parameter."""
    from scratchbert_pipelines.trainjob import TrainJobConfig, pod_gpus

    return run_stage(pod_gpus, TrainJobConfig(num_nodes=num_nodes, gpus_per_node=gpus_per_node))


def build(image: str):
    """The pretrain component for ``image`` (the GPU image in the pipeline)."""
    return make_component(pretrain, image, (PretrainConfig, TrainJobConfig),
                          task_config_passthroughs=TASK_CONFIG_PASSTHROUGHS)


def build_gpus(image: str):
    """The ``pretrain_gpus`` component for ``image`` (a CPU image)."""
    return make_component(pretrain_gpus, image, TrainJobConfig)
