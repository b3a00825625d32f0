"""The scratchbert Kubeflow pipeline: corpus -> tokenizer -> dataset -> pretrain [GPU] -> evaluate,
and SQuAD + the pretrained model -> qa_finetune [GPU or CPU] -> publish.

:func:`build_pipeline` creates the components for the images it is given and returns the
``@dsl.pipeline`` function; ``pipelines/compile.py`` compiles it to YAML for a cluster and
``scratchbert run-local`` runs the same function through ``kfp.local``. kfp.local ignores
what only a cluster understands (the kfp-kubernetes platform config: toleration, node
selector, secrets, /dev/shm; and the accelerator and CPU/memory settings), so nothing here
depends on where the pipeline runs.

Decisions that live here (and nowhere else):

* **GPU**: pretrain always asks for one ``nvidia.com/gpu`` and runs the CUDA image, tolerates
  the GPU taint and (unless compiled with ``--no-node-selector``) selects the GPU node label
  from ``pipelines/settings.py``, and gets a memory-backed ``/dev/shm`` for DataLoader
  workers. ``qa_on_gpu`` picks, at run time, between two branches (``dsl.If``/``dsl.Else``):
  the same QA component on the GPU image with the same GPU settings, or on the CPU image.
  Each branch publishes its own result; the pipeline's output is the published URI
  (``dsl.OneOf`` of the two branches, a parameter, which kfp.local also supports;
  kfp.local cannot yet pass a ``dsl.OneOf`` of *artifacts* to a downstream task, hence one
  publish task per branch).
* **Object-store credentials**: the Secret ``S3_SECRET_NAME`` becomes the ``AWS_*``
  variables of every task that may touch object storage itself: required for publish;
  ``optional`` for tokenizer, dataset, qa_finetune (they need it only for ``s3://`` inputs)
  and pretrain (only with ``checkpoint_uri``), so a pipeline that reads only from the Hub
  runs without the Secret. Values never enter the YAML, only the Secret's name and keys.
* **Caching**: on for tokenizer and dataset (same inputs, same output; note that an
  ``s3://`` corpus rewritten in place under the same URI is not noticed: use a new URI);
  off for pretrain, evaluate, qa_finetune and publish (training is not bit-reproducible
  across GPUs, and a publish must really happen).
* **Retries**: pretrain retries twice (a preempted GPU node; with ``checkpoint_uri`` set it
  resumes from the last mirrored checkpoint), publish twice (a flaky object store); the
  deterministic CPU stages fail fast.
* **Defaults** of the hyperparameters come from the library's config dataclasses, so the
  pipeline, the CLI and the library agree.
"""

# No `from __future__ import annotations`: kfp reads the pipeline's annotations as types.
import dataclasses
from typing import Optional

from kfp import dsl, kubernetes

from components.dataset import component as dataset_component
from components.evaluate import component as evaluate_component
from components.pretrain import component as pretrain_component
from components.publish import component as publish_component
from components.qa_finetune import component as qa_component
from components.tokenizer import component as tokenizer_component
from pipelines import settings
from scratchbert.pretrain import PretrainConfig
from scratchbert.pretraining_data import DatasetConfig
from scratchbert.qa import QAConfig
from scratchbert.tokenizer import TokenizerConfig

PIPELINE_NAME = "scratchbert"
PIPELINE_DESCRIPTION = ("Train BERT from scratch: WordPiece tokenizer, MLM+NSP dataset, pretraining on a GPU, "
                        "evaluation, SQuAD v1.1 fine-tuning, and publishing the QA model to S3.")

DEFAULT_CORPUS = "hf://wikitext/wikitext-2-raw-v1"
DEFAULT_SQUAD_TRAIN = "hf://rajpurkar/squad/train"
DEFAULT_SQUAD_DEV = "hf://rajpurkar/squad/validation"
DEFAULT_PUBLISH_URI = f"s3://{settings.PUBLISH_BUCKET}/{settings.PUBLISH_PREFIX}"


@dataclasses.dataclass(frozen=True)
class Resources:
    """CPU and memory of one task (Kubernetes quantities)."""

    cpu_request: str
    cpu_limit: str
    memory_request: str
    memory_limit: str


# Requests are what the scheduler must find free (kept small enough for a kind cluster on a
# workstation); limits are what a stage may burst to.
RESOURCES = {
    "tokenizer": Resources("1", "4", "2Gi", "8Gi"),
    "dataset": Resources("2", "4", "4Gi", "16Gi"),
    "pretrain": Resources("2", "8", "8Gi", "32Gi"),
    "evaluate": Resources("1", "4", "2Gi", "8Gi"),
    "qa_finetune": Resources("2", "8", "8Gi", "32Gi"),
    "publish": Resources("500m", "2", "1Gi", "4Gi"),
}
# Worker processes for the dataset map: the dataset task's CPU limit.
DATASET_NUM_PROC = int(RESOURCES["dataset"].cpu_limit)
# Memory-backed /dev/shm of GPU tasks (DataLoader workers pass batches through it); it
# counts against the task's memory limit.
SHM_SIZE = "4Gi"
PRETRAIN_RETRIES = 2
PUBLISH_RETRIES = 2


def _default(cls, name: str):
    """The default of field ``name`` of the library config dataclass ``cls``."""
    return next(f.default for f in dataclasses.fields(cls) if f.name == name)


def _resources(task: dsl.PipelineTask, stage: str) -> dsl.PipelineTask:
    r = RESOURCES[stage]
    return (task.set_cpu_request(r.cpu_request).set_cpu_limit(r.cpu_limit)
            .set_memory_request(r.memory_request).set_memory_limit(r.memory_limit))


def _s3_credentials(task: dsl.PipelineTask, optional: bool) -> dsl.PipelineTask:
    """Expose the object-store Secret's keys as same-named environment variables."""
    return kubernetes.use_secret_as_env(task, secret_name=settings.S3_SECRET_NAME,
                                        secret_key_to_env={key: key for key in settings.S3_SECRET_KEYS},
                                        optional=optional)


def _on_gpu(task: dsl.PipelineTask, node_selector: bool) -> dsl.PipelineTask:
    """One GPU, the GPU taint tolerated, the GPU node selected, and a RAM-backed /dev/shm."""
    task.set_accelerator_type(settings.GPU_RESOURCE).set_accelerator_limit(1)
    kubernetes.add_toleration(task, key=settings.GPU_TAINT_KEY, operator="Equal", value=settings.GPU_TAINT_VALUE,
                              effect=settings.GPU_TAINT_EFFECT)
    if node_selector:
        kubernetes.add_node_selector(task, label_key=settings.GPU_NODE_LABEL_KEY,
                                     label_value=settings.GPU_NODE_LABEL_VALUE)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE)
    return task


def build_pipeline(image: Optional[str] = None, gpu_image: Optional[str] = None, *, node_selector: bool = True,
                   pipeline_root: Optional[str] = None):
    """Return the ``@dsl.pipeline`` function with its components built for the given images.

    Args:
        image: Image of the CPU tasks; default ``settings.default_image(gpu=False)``.
        gpu_image: Image of pretrain and of QA on the GPU branch; default ``settings.default_image(gpu=True)``.
        node_selector: Pin GPU tasks to nodes labelled ``GPU_NODE_LABEL_KEY=GPU_NODE_LABEL_VALUE``.
            Turn off for clusters whose GPU nodes are not labelled that way (the
            toleration and the GPU request still apply).
        pipeline_root: Where KFP keeps the artifacts; default: the cluster's (``minio://mlpipeline/v2/artifacts``).
    """
    image = image or settings.default_image(gpu=False)
    gpu_image = gpu_image or settings.default_image(gpu=True)
    tokenizer_op = tokenizer_component.build(image)
    dataset_op = dataset_component.build(image)
    pretrain_op = pretrain_component.build(gpu_image)
    evaluate_op = evaluate_component.build(image)
    qa_gpu_op = qa_component.build(gpu_image)
    qa_cpu_op = qa_component.build(image)
    publish_op = publish_component.build(image)

    @dsl.pipeline(name=PIPELINE_NAME, description=PIPELINE_DESCRIPTION, pipeline_root=pipeline_root)
    def bert_pipeline(
        corpus_uri: str = DEFAULT_CORPUS,
        valid_corpus_uri: str = "",
        squad_train_uri: str = DEFAULT_SQUAD_TRAIN,
        squad_dev_uri: str = DEFAULT_SQUAD_DEV,
        max_corpus_bytes: int = 0,
        vocab_size: int = _default(TokenizerConfig, "vocab_size"),
        max_seq_len: int = _default(DatasetConfig, "max_seq_len"),
        dupe_factor: int = _default(DatasetConfig, "dupe_factor"),
        preset: str = _default(PretrainConfig, "preset"),
        pretrain_max_steps: int = _default(PretrainConfig, "max_steps"),
        pretrain_time_budget_minutes: float = 0.0,
        learning_rate: float = _default(PretrainConfig, "learning_rate"),
        batch_size: int = _default(PretrainConfig, "batch_size"),
        checkpoint_uri: str = "",
        eval_max_examples: int = 0,
        qa_max_steps: int = _default(QAConfig, "max_steps"),
        qa_learning_rate: float = _default(QAConfig, "learning_rate"),
        qa_batch_size: int = _default(QAConfig, "batch_size"),
        qa_max_seq_len: int = _default(QAConfig, "max_seq_len"),
        qa_max_train_examples: int = 0,
        qa_max_eval_examples: int = 0,
        qa_on_gpu: bool = True,
        publish_uri: str = DEFAULT_PUBLISH_URI,
        publish_version: str = "",
    ) -> str:
        """Train BERT from scratch and publish a SQuAD question-answering model.

        Args:
            corpus_uri: Pretraining corpus: hf://name[/config], s3://bucket/prefix, or a path inside the image.
            valid_corpus_uri: Separate validation corpus (same forms); empty holds out 2% of the corpus.
            squad_train_uri: SQuAD v1.1 training set: hf://owner/name[/split] or s3://bucket/file.json.
            squad_dev_uri: SQuAD v1.1 evaluation set, same forms.
            max_corpus_bytes: Use only the first N bytes of the corpus; 0 uses all.
            vocab_size: WordPiece vocabulary size.
            max_seq_len: Tokens per pretraining example.
            dupe_factor: Times each training document is cut into examples (new splits and NSP pairings); 5 or so for a small corpus pretrained on for several epochs.
            preset: Model size: nano, tiny, mini, small, medium, base.
            pretrain_max_steps: Pretraining optimizer steps; -1 trains one epoch or until the time budget.
            pretrain_time_budget_minutes: Stop pretraining after this many minutes; 0 means no budget.
            learning_rate: Peak pretraining learning rate.
            batch_size: Pretraining examples per step.
            checkpoint_uri: s3:// prefix mirroring pretraining checkpoints so a retried task resumes; empty is off.
            eval_max_examples: Evaluate on at most N validation examples; 0 uses all.
            qa_max_steps: QA fine-tuning steps; -1 trains 2 epochs.
            qa_learning_rate: Peak QA learning rate.
            qa_batch_size: QA windows per step.
            qa_max_seq_len: Tokens per QA window; 0 uses min(384, the model's positions).
            qa_max_train_examples: Use only the first N SQuAD training questions; 0 uses all.
            qa_max_eval_examples: Score only the first N SQuAD evaluation questions; 0 uses all.
            qa_on_gpu: Fine-tune on a GPU node (the CUDA image) rather than on a CPU node.
            publish_uri: s3://bucket/prefix the QA model is published under (version folder, manifest, LATEST).
            publish_version: Version folder name; empty uses the UTC time.

        Returns:
            The URI of the published model version.
        """
        tok = tokenizer_op(corpus_uri=corpus_uri, vocab_size=vocab_size, max_corpus_bytes=max_corpus_bytes,
                           lowercase=_default(TokenizerConfig, "lowercase"))
        tok.set_display_name("tokenizer: train WordPiece").set_caching_options(True)
        _s3_credentials(_resources(tok, "tokenizer"), optional=True)

        data = dataset_op(corpus_uri=corpus_uri, valid_corpus_uri=valid_corpus_uri,
                          tokenizer=tok.outputs["tokenizer"], max_seq_len=max_seq_len,
                          max_corpus_bytes=max_corpus_bytes, dupe_factor=dupe_factor, num_proc=DATASET_NUM_PROC)
        data.set_display_name("dataset: MLM+NSP examples").set_caching_options(True)
        _s3_credentials(_resources(data, "dataset"), optional=True)

        pre = pretrain_op(dataset=data.outputs["dataset"], preset=preset, max_steps=pretrain_max_steps,
                          time_budget_minutes=pretrain_time_budget_minutes, learning_rate=learning_rate,
                          batch_size=batch_size, checkpoint_uri=checkpoint_uri)
        pre.set_display_name("pretrain BERT (GPU)").set_caching_options(False)
        pre.set_retry(PRETRAIN_RETRIES, backoff_duration="60s", backoff_factor=2)
        _on_gpu(_s3_credentials(_resources(pre, "pretrain"), optional=True), node_selector)

        ev = evaluate_op(model=pre.outputs["model"], dataset=data.outputs["dataset"], max_examples=eval_max_examples)
        ev.set_display_name("evaluate: MLM/NSP, perplexity, fill-mask").set_caching_options(False)
        _resources(ev, "evaluate")

        def finetune_and_publish(qa_op, where: str, gpu: bool):
            qa = qa_op(model=pre.outputs["model"], squad_train_uri=squad_train_uri, squad_dev_uri=squad_dev_uri,
                       max_steps=qa_max_steps, learning_rate=qa_learning_rate, batch_size=qa_batch_size,
                       max_seq_len=qa_max_seq_len, max_train_examples=qa_max_train_examples,
                       max_eval_examples=qa_max_eval_examples)
            qa.set_display_name(f"qa_finetune: SQuAD ({where})").set_caching_options(False)
            _s3_credentials(_resources(qa, "qa_finetune"), optional=True)
            if gpu:
                _on_gpu(qa, node_selector)
            pub = publish_op(model=qa.outputs["qa_model"], publish_uri=publish_uri, version=publish_version)
            pub.set_display_name("publish QA model").set_caching_options(False)
            pub.set_retry(PUBLISH_RETRIES, backoff_duration="30s")
            _s3_credentials(_resources(pub, "publish"), optional=False)
            return pub

        with dsl.If(qa_on_gpu == True, name="qa-on-gpu"):  # noqa: E712 (a pipeline condition, not a Python test)
            published_gpu = finetune_and_publish(qa_gpu_op, "GPU", gpu=True)
        with dsl.Else(name="qa-on-cpu"):
            published_cpu = finetune_and_publish(qa_cpu_op, "CPU", gpu=False)
        return dsl.OneOf(published_gpu.output, published_cpu.output)

    return bert_pipeline


# The pipeline for the default images (what the committed YAML is compiled from).
bert_pipeline = build_pipeline()
