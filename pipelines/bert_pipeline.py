"""The scratchbert Kubeflow pipeline: corpus -> tokenizer -> dataset -> pretrain [GPU] -> evaluate,
and SQuAD + the pretrained model -> qa_finetune [GPU or CPU] -> publish.

:func:`build_pipeline` creates the components for the images it is given and returns the
``@dsl.pipeline`` function; ``pipelines/compile.py`` compiles it to YAML for a cluster and
``scratchbert run-local`` runs the same function through ``kfp.local``. kfp.local ignores
what only a cluster understands (the kfp-kubernetes platform config: toleration, node
selector, secrets, /dev/shm; and the accelerator and CPU/memory settings), so nothing here
depends on where the pipeline runs.

Decisions that live here (and nowhere else):

* **GPU**: pretrain runs the CUDA image, tolerates the GPU taint and (unless compiled with
  ``--no-node-selector``) selects the GPU node label from ``pipelines/settings.py``, and gets
  a memory-backed ``/dev/shm`` for DataLoader workers. It asks for one ``nvidia.com/gpu`` when
  it trains in its own pod (``num_nodes`` × ``gpus_per_node`` = 1) and for none when it
  launches a Kubeflow Trainer TrainJob instead (``scratchbert_pipelines.trainjob``): a tiny
  ``pretrain_gpus`` task decides the count at run time (KFP conditions cannot multiply, and
  one pretrain task, rather than a branch per case, hands its model to evaluate and QA, which
  kfp.local needs). The TrainJob's pods get the task's toleration, node selector, Secret and,
  per GPU, its CPU and memory, through kfp's ``dsl.TaskConfig``. ``qa_on_gpu`` picks, at run
  time, between two branches (``dsl.If``/``dsl.Else``): the same QA component on the GPU
  image with the same GPU settings, or on the CPU image. Each branch publishes its own
  result; the pipeline's output is the published URI
  (``dsl.OneOf`` of the two branches, a parameter, which kfp.local also supports;
  kfp.local cannot yet pass a ``dsl.OneOf`` of *artifacts* to a downstream task, hence one
  publish task per branch).
* **No GPU**: built with ``gpu=False`` (``compile.py --cpu``, for a cluster without GPUs such
  as ``scripts/kind-up.sh --cpu``) every task runs on the CPU image with none of the above: no
  ``pretrain_gpus`` task and no GPU branch of QA, the parameters of ``parameters.GPU_ONLY``
  left out and fixed at one pod on CPUs, and the CPU recipe's defaults
  (``local_run.cpu_pipeline_defaults``, run-local's) in place of the GPU recipe's.
* **Object-store credentials**: the Secret ``S3_SECRET_NAME`` becomes the ``AWS_*``
  variables of every task that may touch object storage itself (publish; the others only for
  ``s3://`` inputs, a ``checkpoint_uri`` or a TrainJob). Each key is ``optional``: a pipeline
  that reads only from the Hub runs without the Secret, a Secret without keys leaves the pods
  their own identity (IRSA, docs/cluster.md), and a publish without an endpoint fails in one
  line where a required key would hold its pod in CreateContainerConfigError. Values never
  enter the YAML, only the Secret's name and keys.
* **Dataset fan-out**: ``corpus_parts`` dataset tasks run side by side (``dsl.ParallelFor``
  over the part numbers, which a small task lists: a loop cannot range over an int), each
  turning every ``corpus_parts``-th group of documents into examples, and one task merges
  their shards (``dsl.Collected``) into the dataset that pretraining and evaluation read.
  With the default of one part the same tasks run with one dataset task, so the local run
  and the cluster run the same pipeline shape whatever the part count.
* **Caching**: on for tokenizer and dataset (same inputs, same output; note that an
  ``s3://`` corpus rewritten in place under the same URI is not noticed: use a new URI);
  off for pretrain, evaluate, qa_finetune and publish (training is not bit-reproducible
  across GPUs, and a publish must really happen).
* **Validation first**: the ``validate`` task checks every parameter the way the stages will
  before the tokenizer starts, so a bad value fails in seconds, never after training.
* **Retries**: pretrain retries twice (a preempted GPU node; with ``checkpoint_uri`` set it
  resumes from the last mirrored checkpoint, of the same run only), publish twice (a flaky
  object store); the deterministic CPU stages fail fast. KFP retries every failure of a task
  (no condition on the exit code), so deterministic errors are caught by ``validate`` and by
  each stage's checks at its start (seconds, not a training run). ``retries=False`` for local
  runs, where nothing is preempted.
* **Security**: every task runs as the images' non-root user (``settings.RUN_AS_USER``).
* **Parameters**: their names, types, defaults and descriptions come from
  ``scratchbert_pipelines.parameters``, which derives them from the library's config
  dataclasses, so the pipeline, the CLI, ``run-local`` and the library agree.
"""

# No `from __future__ import annotations`: kfp reads the pipeline's annotations as types.
import dataclasses

from kfp import dsl, kubernetes
from kfp.dsl import Input, Model

from scratchbert_components.dataset import component as dataset_component
from scratchbert_components.evaluate import component as evaluate_component
from scratchbert_components.pretrain import component as pretrain_component
from scratchbert_components.publish import component as publish_component
from scratchbert_components.qa_finetune import component as qa_component
from scratchbert_components.starting_model import component as starting_model_component
from scratchbert_components.tokenizer import component as tokenizer_component
from scratchbert_components.validate import component as validate_component
from scratchbert_pipelines import parameters, settings

# The parameters of the two nested pipelines: fine-tuning and publishing (both paths end with
# it), and everything but the switch between the paths (the pretraining path).
FINE_TUNE_NAMES = tuple(n for n in parameters.NAMES
                        if parameters.stages_of(n) & {"qa_finetune", "publish"} or n == "qa_on_gpu")
PRETRAIN_NAMES = tuple(n for n in parameters.NAMES if n not in ("skip_pretraining", "budget_minutes", "budget_pretrain_share",
                                                                "budget_qa_epoch_minutes", "budget_qa_epoch_pretrain_steps"))

PIPELINE_NAME = "scratchbert"
PIPELINE_DESCRIPTION = ("Train BERT from scratch: WordPiece tokenizer, MLM+NSP dataset, pretraining on {where}, "
                        "evaluation, SQuAD v1.1 fine-tuning, and publishing the QA model to S3.")


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
    "validate": Resources("100m", "500m", "256Mi", "1Gi"),
    "tokenizer": Resources("1", "4", "2Gi", "8Gi"),
    "dataset": Resources("2", "4", "4Gi", "16Gi"),
    "corpus_parts": Resources("100m", "500m", "256Mi", "512Mi"),
    "dataset_merge": Resources("500m", "1", "1Gi", "2Gi"),
    "pretrain": Resources("2", "8", "8Gi", "32Gi"),
    "evaluate": Resources("1", "4", "2Gi", "8Gi"),
    "qa_finetune": Resources("2", "8", "8Gi", "32Gi"),
    "publish": Resources("500m", "2", "1Gi", "4Gi"),
    "pretrain_gpus": Resources("100m", "1", "256Mi", "1Gi"),
    "starting_model": Resources("500m", "2", "2Gi", "8Gi"),
}
# Worker processes for the dataset map: the dataset task's CPU limit.
DATASET_NUM_PROC = int(RESOURCES["dataset"].cpu_limit)
# Memory-backed /dev/shm of GPU tasks (DataLoader workers pass batches through it); it
# counts against the task's memory limit.
SHM_SIZE = settings.SHM_SIZE
PRETRAIN_RETRIES = 2
PUBLISH_RETRIES = 2


def _resources(task: dsl.PipelineTask, stage: str) -> dsl.PipelineTask:
    r = RESOURCES[stage]
    # Every task runs as the images' non-root user; the KFP backend adds the rest of a
    # restricted security context itself (no privilege escalation, all capabilities dropped,
    # seccomp RuntimeDefault). A read-only root filesystem cannot be asked for (docs/reliability.md).
    kubernetes.set_security_context(task, run_as_user=settings.RUN_AS_USER, run_as_group=settings.RUN_AS_GROUP,
                                    run_as_non_root=True)
    return (task.set_cpu_request(r.cpu_request).set_cpu_limit(r.cpu_limit)
            .set_memory_request(r.memory_request).set_memory_limit(r.memory_limit))


def _s3_credentials(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Expose the object-store Secret's keys, each where the Secret has it, as same-named environment variables."""
    return kubernetes.use_secret_as_env(task, secret_name=settings.S3_SECRET_NAME,
                                        secret_key_to_env={key: key for key in settings.S3_ENV_KEYS}, optional=True)


def _on_gpu(task: dsl.PipelineTask, node_selector: bool, gpus=1) -> dsl.PipelineTask:
    """``gpus`` GPUs (one, or a count known at run time), the GPU taint tolerated, the GPU node
    selected, and a RAM-backed /dev/shm."""
    task.set_accelerator_type(settings.GPU_RESOURCE).set_accelerator_limit(gpus)
    kubernetes.add_toleration(task, key=settings.GPU_TAINT_KEY, operator="Equal", value=settings.GPU_TAINT_VALUE,
                              effect=settings.GPU_TAINT_EFFECT)
    if node_selector:
        kubernetes.add_node_selector(task, label_key=settings.GPU_NODE_LABEL_KEY,
                                     label_value=settings.GPU_NODE_LABEL_VALUE)
    kubernetes.empty_dir_mount(task, volume_name="dshm", mount_path="/dev/shm", medium="Memory", size_limit=SHM_SIZE)
    return task


def build_pipeline(image: str | None = None, gpu_image: str | None = None, *, gpu: bool = True,
                   node_selector: bool = True, pipeline_root: str | None = None, retries: bool = True):
    """Return the ``@dsl.pipeline`` function with its components built for the given images.

    Args:
        image: Image of the CPU tasks; default ``settings.default_image(gpu=False)``.
        gpu_image: Image of pretrain and of QA on the GPU branch; default ``settings.default_image(gpu=True)``.
        gpu: Pretrain (and QA where ``qa_on_gpu``) on a GPU node. ``False`` builds the pipeline for
            a cluster without GPUs: every task on ``image`` with no GPU settings, no parameter of
            :data:`parameters.GPU_ONLY <scratchbert_pipelines.parameters.GPU_ONLY>`, and the CPU
            recipe's defaults (``local_run.cpu_pipeline_defaults``) in place of the GPU recipe's.
        node_selector: Pin GPU tasks to nodes labelled ``GPU_NODE_LABEL_KEY=GPU_NODE_LABEL_VALUE``.
            Turn off for clusters whose GPU nodes are not labelled that way (the
            toleration and the GPU request still apply).
        pipeline_root: Where KFP keeps the artifacts; default: the cluster's (``minio://mlpipeline/v2/artifacts``).
        retries: Retry pretrain and publish (preemption, a flaky store). Off for a local run, where
            no node is preempted and every failure is deterministic.
    """
    image = image or settings.default_image(gpu=False)
    if gpu:
        gpu_image = gpu_image or settings.default_image(gpu=True)
        names, fixed, defaults = parameters.NAMES, {}, None
    else:
        from scratchbert_pipelines.local_run import cpu_pipeline_defaults

        if gpu_image is not None:
            raise ValueError("a pipeline without GPUs has no GPU image")
        gpu_image = image
        names = tuple(n for n in parameters.NAMES if n not in parameters.GPU_ONLY)
        fixed, defaults = parameters.GPU_ONLY, cpu_pipeline_defaults()
    fine_tune_names = tuple(n for n in FINE_TUNE_NAMES if n in names)
    pretrain_names = tuple(n for n in PRETRAIN_NAMES if n in names)
    validate_op = validate_component.build(image)
    starting_model_op = starting_model_component.build(image)
    tokenizer_op = tokenizer_component.build(image)
    dataset_op = dataset_component.build(image)
    part_numbers_op = dataset_component.build_part_numbers(image)
    dataset_merge_op = dataset_component.build_merge(image)
    pretrain_op = pretrain_component.build(gpu_image)
    pretrain_gpus_op = pretrain_component.build_gpus(image)
    evaluate_op = evaluate_component.build(image)
    qa_gpu_op = qa_component.build(gpu_image)
    qa_cpu_op = qa_component.build(image)
    publish_op = publish_component.build(image)

    def fine_tune_and_publish(model, *values) -> str:
        p = {**dict(zip(fine_tune_names, values)), **fixed}

        def branch(qa_op, where: str, gpu: bool):
            qa = qa_op(model=model, **parameters.stage_arguments("qa_finetune", p))
            qa.set_display_name(f"qa_finetune: SQuAD ({where})").set_caching_options(False)
            _s3_credentials(_resources(qa, "qa_finetune"))
            if gpu:
                _on_gpu(qa, node_selector)
            pub = publish_op(model=qa.outputs["qa_model"], **parameters.stage_arguments("publish", p))
            pub.set_display_name("publish QA model").set_caching_options(False)
            if retries:
                pub.set_retry(PUBLISH_RETRIES, backoff_duration="30s")
            _s3_credentials(_resources(pub, "publish"))
            return pub

        if not gpu:
            return branch(qa_cpu_op, "CPU", gpu=False).output
        with dsl.If(p["qa_on_gpu"] == True, name="qa-on-gpu"):  # noqa: E712 (a pipeline condition, not a Python test)
            published_gpu = branch(qa_gpu_op, "GPU", gpu=True)
        with dsl.Else(name="qa-on-cpu"):
            published_cpu = branch(qa_cpu_op, "CPU", gpu=False)
        return dsl.OneOf(published_gpu.output, published_cpu.output)

    fine_tune = _sub_pipeline(fine_tune_and_publish, "fine-tune-and-publish", fine_tune_names,
                              "Fine-tune a model for SQuAD question answering and publish it.",
                              artifacts={"model": (Input[Model], "The model to fine-tune (with its tokenizer).")},
                              defaults=defaults)

    def pretrain_and_fine_tune(*values) -> str:
        p = {**dict(zip(pretrain_names, values)), **fixed}

        def args(stage: str) -> dict:
            return parameters.stage_arguments(stage, p)

        tok = tokenizer_op(**args("tokenizer"))
        tok.set_display_name("tokenizer: train WordPiece, or take the starting model's").set_caching_options(True)
        _s3_credentials(_resources(tok, "tokenizer"))

        part_numbers = part_numbers_op(corpus_parts=p["corpus_parts"])
        part_numbers.set_display_name("dataset: corpus parts").set_caching_options(True)
        _resources(part_numbers, "corpus_parts")
        with dsl.ParallelFor(part_numbers.output, name="dataset-parts") as part:
            part_data = dataset_op(tokenizer=tok.outputs["tokenizer"], num_proc=DATASET_NUM_PROC, corpus_part=part,
                                   **args("dataset"))
            part_data.set_display_name("dataset: MLM+NSP examples of one part").set_caching_options(True)
            _s3_credentials(_resources(part_data, "dataset"))
        data = dataset_merge_op(parts=dsl.Collected(part_data.outputs["dataset"]))
        data.set_display_name("dataset: merge the parts").set_caching_options(True)
        _resources(data, "dataset_merge")

        if gpu:
            # After the dataset, so that the stages run one after the other (as run-local reports them).
            gpus = pretrain_gpus_op(num_nodes=p["num_nodes"], gpus_per_node=p["gpus_per_node"]).after(data)
            gpus.set_display_name("pretrain: its pod's GPUs (0 with a TrainJob)").set_caching_options(True)
            _resources(gpus, "pretrain_gpus")

        pre = pretrain_op(dataset=data.outputs["dataset"], image=gpu_image, **args("pretrain"))
        if gpu:
            # a task output used as a GPU count is no dependency to kfp (none in the compiled
            # YAML, no ordering in kfp.local), so say it.
            pre.after(gpus)
        pre.set_display_name(f"pretrain BERT ({'GPU' if gpu else 'CPU'})").set_caching_options(False)
        if retries:
            pre.set_retry(PRETRAIN_RETRIES, backoff_duration="60s", backoff_factor=2)
        _s3_credentials(_resources(pre, "pretrain"))
        if gpu:
            _on_gpu(pre, node_selector, gpus=gpus.output)

        ev = evaluate_op(model=pre.outputs["model"], logs=pre.outputs["logs"], dataset=data.outputs["dataset"],
                         **args("evaluate"))
        ev.set_display_name("evaluate: MLM/NSP, perplexity, fill-mask").set_caching_options(False)
        _resources(ev, "evaluate")

        published = fine_tune(model=pre.outputs["model"], **{name: p[name] for name in fine_tune_names})
        published.set_display_name("fine-tune and publish").set_caching_options(False)
        return published.output

    pretrain_then_fine_tune = _sub_pipeline(
        pretrain_and_fine_tune, "pretrain-and-fine-tune", pretrain_names,
        "Pretrain BERT (from scratch, or continuing a starting model) on the corpus, evaluate it, fine-tune and publish.",
        defaults=defaults)

    def bert_pipeline(*values) -> str:
        p = {**dict(zip(names, values)), **fixed}  # kfp passes the parameters in signature order

        check = validate_op(**p)
        check.set_display_name("validate the parameters, plan the time budget").set_caching_options(False)
        _s3_credentials(_resources(check, "validate"))  # to size an s3:// corpus for the budget
        # the stages' time budgets as the validate task planned them (budget_minutes split)
        planned = {name: check.outputs[name] for name in validate_component.PLAN}

        def given(names: tuple[str, ...]) -> dict:
            return {name: planned.get(name, p[name]) for name in names}

        # Two paths, and the graph shows which one ran: pretrain (from scratch, or continuing
        # init_model), or fine-tune the starting model as it is.
        with dsl.If(p["skip_pretraining"] == False, name="pretrain-then-fine-tune"):  # noqa: E712
            trained = pretrain_then_fine_tune(**given(pretrain_names))
            trained.set_display_name("pretrain, evaluate, fine-tune and publish").set_caching_options(False)
        with dsl.Else(name="fine-tune-the-starting-model"):
            start = starting_model_op(**parameters.stage_arguments("starting_model", p)).after(check)
            start.set_display_name("starting model: fetch and check").set_caching_options(True)
            _s3_credentials(_resources(start, "starting_model"))
            direct = fine_tune(model=start.outputs["model"], **given(fine_tune_names))
            direct.set_display_name("fine-tune and publish").set_caching_options(False)
        return dsl.OneOf(trained.output, direct.output)

    # The signature and the docstring (the UI's parameter descriptions) come from the parameter table.
    bert_pipeline.__signature__ = parameters.signature(names, return_annotation=str, defaults=defaults)
    bert_pipeline.__doc__ = parameters.docstring(
        "Train BERT (from scratch or from a starting model) and publish a SQuAD question-answering model.",
        "The URI of the published model version.", names)
    description = PIPELINE_DESCRIPTION.format(where="a GPU" if gpu else "CPU nodes")
    return dsl.pipeline(name=PIPELINE_NAME, description=description, pipeline_root=pipeline_root)(bert_pipeline)


def _sub_pipeline(func, name: str, names: tuple[str, ...], summary: str, artifacts: dict | None = None,
                  defaults: dict | None = None):
    """``func(*artifacts, *parameters)`` as a nested ``@dsl.pipeline`` taking the parameters ``names``
    (signature and descriptions from the parameter table, defaults from ``defaults`` where it has
    them) after the input ``artifacts`` (name -> (annotation, description))."""
    artifacts = artifacts or {}
    func.__signature__ = parameters.signature(names, artifacts={k: a for k, (a, _) in artifacts.items()},
                                              return_annotation=str, defaults=defaults)
    func.__doc__ = parameters.docstring(summary, "The URI of the published model version.", names,
                                        artifacts={k: d for k, (_, d) in artifacts.items()})
    return dsl.pipeline(name=name)(func)


# The pipeline for the default images (what the committed YAML is compiled from).
bert_pipeline = build_pipeline()
