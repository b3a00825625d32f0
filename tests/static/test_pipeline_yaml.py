"""The compiled pipeline (pipelines/bert_pipeline.yaml): stages, GPU, platform config, secrets,
images, caching, and that the committed file is exactly what pipelines/compile.py writes; and
the pipeline for a cluster without GPUs (pipelines/bert_pipeline_cpu.yaml, compile.py --cpu).

Expected names and values come from pipelines/settings.py (the `settings` fixture), never
spelled out here.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "pipelines" / "bert_pipeline.yaml"
COMMITTED_CPU = ROOT / "pipelines" / "bert_pipeline_cpu.yaml"
STAGE_FUNCTIONS = {"validate", "tokenizer", "dataset", "pretrain", "evaluate", "qa_finetune", "publish", "starting_model"}
# The tiny task that tells pretrain's pod how many GPUs to ask for (0 when it launches a TrainJob).
GPU_COUNT_FUNCTION = "pretrain_gpus"
# The dataset stage's fan-out: the part numbers to loop over, and the merge of the parts.
FAN_OUT_FUNCTIONS = {"corpus_part_numbers", "dataset_merge"}


def _compile_module():
    from scratchbert_pipelines import compile as compile_module

    return compile_module


def compile_to(path: Path, **kwargs) -> tuple[dict, dict]:
    """Compile in-process; return (pipeline spec, kubernetes platform spec)."""
    _compile_module().compile_pipeline(path, **kwargs)
    return load(path)


@pytest.mark.parametrize("name", ["p.json", "out", "p.yaml.txt"])
def test_compile_refuses_an_output_that_is_not_yaml_in_one_line(tmp_path, capsys, name):
    with pytest.raises(SystemExit) as stop:
        _compile_module().main(["--output", str(tmp_path / name)])
    assert stop.value.code == 2
    assert "must name a .yaml file" in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / name).exists()


def load(path: Path) -> tuple[dict, dict]:
    docs = list(yaml.safe_load_all(path.read_text()))
    spec = docs[0]
    platform = next((d for d in docs[1:] if d and "platforms" in d), {})
    return spec, platform.get("platforms", {}).get("kubernetes", {}).get("deploymentSpec", {}).get("executors", {})


@pytest.fixture(scope="module")
def compiled() -> tuple[dict, dict]:
    return load(COMMITTED)


def executors(spec: dict) -> dict[str, dict]:
    return spec["deploymentSpec"]["executors"]


def function_of(executor: dict) -> str:
    args = executor["container"]["args"]
    return args[args.index("--function_to_execute") + 1]


def executors_of(spec: dict, function: str) -> list[str]:
    return sorted(name for name, ex in executors(spec).items() if function_of(ex) == function)


def all_tasks(spec: dict) -> dict[str, dict]:
    """Every task of the root DAG and of the nested (condition, loop) DAGs, by task name."""
    tasks = dict(spec["root"]["dag"]["tasks"])
    for comp in spec["components"].values():
        tasks.update(comp.get("dag", {}).get("tasks", {}))
    return tasks


def test_committed_yaml_is_what_compile_writes(tmp_path):
    """Recompiling with the defaults reproduces the committed YAML byte for byte (no drift)."""
    assert COMMITTED.is_file(), "pipelines/bert_pipeline.yaml is missing; run python pipelines/compile.py"
    out = _compile_module().compile_pipeline(tmp_path / "p.yaml")
    assert out.read_bytes() == COMMITTED.read_bytes(), \
        "pipelines/bert_pipeline.yaml is stale; run `python pipelines/compile.py` and commit the result"


def test_committed_cpu_yaml_is_what_compile_writes(tmp_path):
    """The CPU pipeline's YAML cannot drift from the code either (kind-up.sh --cpu points at it)."""
    assert COMMITTED_CPU.is_file(), "pipelines/bert_pipeline_cpu.yaml is missing; run python pipelines/compile.py --cpu"
    out = _compile_module().compile_pipeline(tmp_path / "p.yaml", gpu=False)
    assert out.read_bytes() == COMMITTED_CPU.read_bytes(), \
        "pipelines/bert_pipeline_cpu.yaml is stale; run `python pipelines/compile.py --cpu` and commit the result"


def test_the_cpu_pipeline_asks_for_no_gpu(settings):
    """A cluster without GPUs (scripts/kind-up.sh --cpu) can run every task of the CPU pipeline:
    no GPU request, toleration, node selector or CUDA image (pretrain had all of them there and
    stayed Pending), pretraining in its own pod, and the CPU recipe's defaults, as run-local's."""
    from scratchbert_pipelines import parameters
    from scratchbert_pipelines.local_run import REAL_DEFAULTS, cpu_pipeline_defaults

    assert settings.GPU_RESOURCE not in COMMITTED_CPU.read_text()
    spec, platform = load(COMMITTED_CPU)
    for name, ex in executors(spec).items():
        assert "accelerator" not in ex["container"].get("resources", {}), name
        assert ex["container"]["image"] == settings.default_image(gpu=False), name
        assert not {"tolerations", "nodeSelector", "emptyDirMounts"} & set(platform.get(name, {})), name
    assert {function_of(ex) for ex in executors(spec).values()} == STAGE_FUNCTIONS | FAN_OUT_FUNCTIONS
    assert len(executors_of(spec, "qa_finetune")) == 2  # one per path, on the CPU image
    pretrain = all_tasks(spec)["pretrain"]["inputs"]["parameters"]
    assert pretrain["image"]["runtimeValue"]["constant"] == settings.default_image(gpu=False)
    assert {pretrain[n]["runtimeValue"]["constant"] for n in ("num_nodes", "gpus_per_node")} == {1}
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(parameters.NAMES) - set(parameters.GPU_ONLY)
    recipe = cpu_pipeline_defaults()
    assert recipe.items() >= REAL_DEFAULTS.items() and set(parameters.GPU_RECIPE) <= set(recipe)
    for name, value in recipe.items():
        assert params[name]["defaultValue"] == value, name
    assert params["vocab_size"]["defaultValue"] == parameters.BY_NAME["vocab_size"].default


def test_compile_cpu_refuses_gpu_options(capsys):
    for gpu_option in (["--gpu-image", "registry.test/sb-gpu:dev"], ["--no-node-selector"]):
        with pytest.raises(SystemExit):
            _compile_module().main(["--cpu", *gpu_option, "--output", os.devnull])
        assert "which --cpu has none of" in capsys.readouterr().err


def test_five_stages_and_publish(compiled):
    spec, _ = compiled
    assert {function_of(ex) for ex in executors(spec).values()} == STAGE_FUNCTIONS | {GPU_COUNT_FUNCTION} | FAN_OUT_FUNCTIONS
    assert spec["pipelineInfo"]["name"] == "scratchbert"
    # Fine-tuning and publishing end both paths (pretrained, or the starting model as it is), each
    # with a GPU and a CPU branch; one of everything else.
    assert len(executors_of(spec, "qa_finetune")) == 4 and len(executors_of(spec, "publish")) == 4
    for fn in (STAGE_FUNCTIONS | FAN_OUT_FUNCTIONS) - {"qa_finetune", "publish"}:
        assert len(executors_of(spec, fn)) == 1, fn


def _dag(spec: dict, component: str) -> dict:
    return spec["root"]["dag"]["tasks"] if component == "root" else spec["components"][component]["dag"]["tasks"]


def _producer(task: dict, artifact: str) -> str:
    src = task["inputs"]["artifacts"][artifact]
    return src["taskOutputArtifact"]["producerTask"] if "taskOutputArtifact" in src else src["componentInputArtifact"]


def test_wiring(compiled):
    """validate first; then either tokenizer -> dataset (one task per corpus part) -> merge ->
    pretrain -> evaluate, and the pretrained model -> fine-tune and publish; or the starting
    model -> fine-tune and publish."""
    spec, _ = compiled
    root = _dag(spec, "root")
    assert set(root) == {"validate", "condition-branches-1"}
    branches = _dag(spec, root["condition-branches-1"]["componentRef"]["name"])
    paths = {name: _dag(spec, task["componentRef"]["name"]) for name, task in branches.items()}
    (pretrain_branch,) = [tasks for tasks in paths.values() if "pretrain-and-fine-tune" in tasks]
    (direct_branch,) = [tasks for tasks in paths.values() if "starting-model" in tasks]
    assert root["condition-branches-1"]["dependentTasks"] == ["validate"]  # both paths wait for the checks
    assert _producer(direct_branch["fine-tune-and-publish"], "model") == "starting-model"

    train = _dag(spec, pretrain_branch["pretrain-and-fine-tune"]["componentRef"]["name"])
    (loop,) = [name for name, task in train.items() if "parameterIterator" in task]
    assert _producer(train[loop], "pipelinechannel--tokenizer-tokenizer") == "tokenizer"
    iterator = train[loop]["parameterIterator"]
    assert train[loop]["inputs"]["parameters"][iterator["items"]["inputParameter"]]["taskOutputParameter"]["producerTask"] \
        == "corpus-part-numbers"
    part = _dag(spec, train[loop]["componentRef"]["name"])["dataset"]
    assert _producer(part, "tokenizer") == "pipelinechannel--tokenizer-tokenizer"  # into the loop
    assert part["inputs"]["parameters"]["corpus_part"]["componentInputParameter"] == iterator["itemInput"]
    assert train["corpus-part-numbers"]["inputs"]["parameters"]["corpus_parts"]["componentInputParameter"] == "corpus_parts"
    assert _producer(train["dataset-merge"], "parts") == loop  # dsl.Collected over the loop's dataset tasks
    assert _producer(train["pretrain"], "dataset") == "dataset-merge"
    assert _producer(train["evaluate"], "model") == "pretrain" and _producer(train["evaluate"], "dataset") == "dataset-merge"
    assert _producer(train["evaluate"], "logs") == "pretrain"
    assert _producer(train["fine-tune-and-publish"], "model") == "pretrain"

    fine_tune = _dag(spec, train["fine-tune-and-publish"]["componentRef"]["name"])
    (qa_branches,) = fine_tune.values()
    for qa_branch in _dag(spec, qa_branches["componentRef"]["name"]).values():
        tasks = _dag(spec, qa_branch["componentRef"]["name"])
        qa = next(name for name in tasks if name.startswith("qa-finetune"))
        pub = next(name for name in tasks if name.startswith("publish"))
        assert _producer(tasks[qa], "model") == "pipelinechannel--model"  # the model the nested pipeline is given
        assert _producer(tasks[pub], "model") == qa
    from scratchbert_pipelines import parameters

    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(parameters.NAMES)
    assert params["checkpoint_uri"]["defaultValue"] == ""
    assert params["corpus"]["defaultValue"].startswith("hf://")
    assert spec["root"]["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "STRING"


def test_pipeline_defaults_follow_settings_and_library(compiled, settings):
    from scratchbert.pretrain import PretrainConfig
    from scratchbert.tokenizer import TokenizerConfig
    from scratchbert_pipelines.parameters import GPU_RECIPE

    params = compiled[0]["root"]["inputDefinitions"]["parameters"]
    assert params["publish_uri"]["defaultValue"] == f"s3://{settings.PUBLISH_BUCKET}/{settings.PUBLISH_PREFIX}"
    # the pipeline's defaults: the GPU recipe where it says, else the library's
    assert params["preset"]["defaultValue"] == GPU_RECIPE["preset"] != PretrainConfig.preset
    assert params["corpus"]["defaultValue"] == GPU_RECIPE["corpus"]
    assert params["vocab_size"]["defaultValue"] == TokenizerConfig.vocab_size


def test_gpu_request_only_on_gpu_tasks(compiled, settings):
    spec, _ = compiled
    gpu = {"exec-pretrain"} | {e for e in executors_of(spec, "qa_finetune")
                               if executors(spec)[e]["container"]["image"] == settings.default_image(gpu=True)}
    assert len(gpu) == 3, "pretrain and the GPU branch of qa_finetune in both paths"
    for name, ex in executors(spec).items():
        accel = ex["container"].get("resources", {}).get("accelerator")
        if name in gpu:
            assert accel is not None, name
            assert accel["resourceType"] == settings.GPU_RESOURCE, name
            if name != "exec-pretrain":  # its count is known at run time: test_pretrain_gpu_count_is_decided_at_run_time
                assert str(accel["resourceCount"]) == "1", name
        else:
            assert accel is None, f"{name} must not ask for a GPU"
        res = ex["container"]["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert key in res, f"{name} has no {key}"


def test_pretrain_gpu_count_is_decided_at_run_time(compiled):
    """pretrain's pod asks for the GPUs the pretrain-gpus task returns ("1" to train in the pod,
    "0" to launch a TrainJob), after that task ran; the count is a STRING output, because the
    KFP driver reads a runtime GPU count with GetStringValue (a number would drop the limit)."""
    spec, _ = compiled
    tasks = all_tasks(spec)
    (gpus_task,) = [n for n, t in tasks.items() if t["componentRef"]["name"] == "comp-pretrain-gpus"]
    accel = executors(spec)["exec-pretrain"]["container"]["resources"]["accelerator"]
    channel = f"pipelinechannel--{gpus_task}-Output"
    assert accel["resourceCount"] == f"{{{{$.inputs.parameters['{channel}']}}}}"
    pre = tasks["pretrain"]
    assert gpus_task in pre["dependentTasks"]
    assert pre["inputs"]["parameters"][channel]["taskOutputParameter"] == {"outputParameterKey": "Output",
                                                                           "producerTask": gpus_task}
    out = spec["components"]["comp-pretrain-gpus"]["outputDefinitions"]["parameters"]["Output"]
    assert out["parameterType"] == "STRING"
    for name in ("num_nodes", "gpus_per_node"):
        assert tasks[gpus_task]["inputs"]["parameters"][name] == {"componentInputParameter": name}
        assert pre["inputs"]["parameters"][name] == {"componentInputParameter": name}


def test_pretrain_passes_its_settings_to_a_trainjob(compiled, settings):
    """The pretrain component gets its task's config (resources, env, tolerations, node selector)
    for a TrainJob's pods and keeps applying it to its own pod; the TrainJob runs the GPU image."""
    spec, _ = compiled
    comp = spec["components"]["comp-pretrain"]
    assert comp["inputDefinitions"]["parameters"]["task_config"]["parameterType"] == "TASK_CONFIG"
    assert {(p["field"], p["applyToTask"]) for p in comp["taskConfigPassthroughs"]} == {
        ("RESOURCES", True), ("ENV", True), ("KUBERNETES_TOLERATIONS", True), ("KUBERNETES_NODE_SELECTOR", True)}
    image = all_tasks(spec)["pretrain"]["inputs"]["parameters"]["image"]["runtimeValue"]["constant"]
    assert image == executors(spec)["exec-pretrain"]["container"]["image"] == settings.default_image(gpu=True)


def test_toleration_node_selector_and_shm(compiled, settings):
    spec, platform = compiled
    gpu_execs = [n for n, ex in executors(spec).items() if ex["container"].get("resources", {}).get("accelerator")]
    for name in gpu_execs:
        cfg = platform[name]
        assert cfg["tolerations"] == [{"key": settings.GPU_TAINT_KEY, "operator": "Equal",
                                       "value": settings.GPU_TAINT_VALUE, "effect": settings.GPU_TAINT_EFFECT}]
        assert cfg["nodeSelector"]["labels"] == {settings.GPU_NODE_LABEL_KEY: settings.GPU_NODE_LABEL_VALUE}
        (shm,) = cfg["emptyDirMounts"]
        assert shm["mountPath"] == "/dev/shm" and shm["medium"] == "Memory"
    for name in set(executors(spec)) - set(gpu_execs):
        cfg = platform.get(name, {})
        assert "tolerations" not in cfg and "nodeSelector" not in cfg, name


def test_secrets_by_name_only(compiled, settings):
    spec, platform = compiled
    expected = [{"envVar": k, "secretKey": k} for k in settings.S3_ENV_KEYS]
    for name in executors(spec):
        if function_of(executors(spec)[name]) in {"evaluate", GPU_COUNT_FUNCTION} | FAN_OUT_FUNCTIONS:  # no object storage
            assert "secretAsEnv" not in platform.get(name, {})
            continue
        (secret,) = platform[name]["secretAsEnv"]
        assert secret["secretName"] == settings.S3_SECRET_NAME
        assert secret["keyToEnv"] == expected
        # a missing key is an unset variable, never a pod held in CreateContainerConfigError: publish then fails in one
        # line, and pods with their own identity (IRSA) need only AWS_ENDPOINT_URL
        assert secret["optional"] is True, name
    for name, ex in executors(spec).items():
        assert not ex["container"].get("env"), f"{name} sets environment variables in the YAML"


def test_no_secret_values_in_yaml(tmp_path, monkeypatch):
    """Credentials in the compiling process's environment never reach the YAML."""
    values = {k: "sb" + secrets.token_hex(12) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    values["AWS_ENDPOINT_URL"] = "http://127.0.0.1:59999"
    for k, v in values.items():
        monkeypatch.setenv(k, v)
    _compile_module().compile_pipeline(tmp_path / "p.yaml")
    text = (tmp_path / "p.yaml").read_text()
    for k, v in values.items():
        assert v not in text, f"the value of {k} leaked into the pipeline YAML"
    assert text == COMMITTED.read_text()


def test_caching_and_retries(compiled):
    spec, _ = compiled
    tasks = all_tasks(spec)
    for name, task in tasks.items():
        if name.startswith(("condition", "for-loop")):
            continue
        cache = task.get("cachingOptions", {}).get("enableCache", False)
        assert cache is (name in ("tokenizer", "corpus-part-numbers", "dataset", "dataset-merge", "pretrain-gpus",
                                  "starting-model")), name
    assert tasks["pretrain"]["retryPolicy"]["maxRetryCount"] >= 1
    assert tasks["publish"]["retryPolicy"]["maxRetryCount"] >= 1


def test_validate_runs_first_with_every_parameter(compiled):
    """The validate task checks every pipeline parameter before any work: the two paths (a
    condition group) wait for it, and within the pretraining path everything waits for the
    tokenizer (by its artifacts)."""
    from scratchbert_pipelines import parameters

    spec, _ = compiled
    root = _dag(spec, "root")
    check = root["validate"]
    assert not check.get("dependentTasks")
    assert {name: src["componentInputParameter"] for name, src in check["inputs"]["parameters"].items()} == \
        {name: name for name in parameters.NAMES}
    assert set(root) == {"validate", "condition-branches-1"} and root["condition-branches-1"]["dependentTasks"] == ["validate"]
    # what it plans (the budget's split, a paced one's reserve) goes on in place of the parameters
    from scratchbert_components.validate.component import PLAN

    branches = root["condition-branches-1"]["inputs"]["parameters"]
    assert set(PLAN) == {"time_budget_minutes", "qa_time_budget_minutes", "reserve_steps", "reserve_max_minutes"}
    for name in PLAN:
        assert branches[f"pipelinechannel--validate-{name}"]["taskOutputParameter"] == \
            {"outputParameterKey": name, "producerTask": "validate"}
    train = _dag(spec, "comp-pretrain-and-fine-tune")

    def upstream(name: str) -> set[str]:
        deps = set(train[name].get("dependentTasks", []))
        for src in train[name].get("inputs", {}).get("artifacts", {}).values():
            producer = src.get("taskOutputArtifact", {}).get("producerTask")
            deps |= {producer} if producer else set()
        return deps | {d for dep in deps if dep in train for d in upstream(dep)}

    for name in ("dataset-merge", "pretrain", "evaluate", "fine-tune-and-publish"):
        assert "tokenizer" in upstream(name), name


def test_every_task_runs_as_the_non_root_user_of_the_images(compiled, settings):
    """What KFP lets a pipeline set of a task's securityContext (kfp-kubernetes set_security_context);
    the backend adds allowPrivilegeEscalation false, drop ALL and seccomp RuntimeDefault itself."""
    spec, platform = compiled
    for name in executors(spec):
        sc = platform[name]["securityContext"]
        assert sc["runAsNonRoot"] is True, name
        assert int(sc["runAsUser"]) == settings.RUN_AS_USER != 0 and int(sc["runAsGroup"]) == settings.RUN_AS_GROUP, name
        for volume in platform[name].get("emptyDirMounts", []):  # the only volumes: emptyDir, allowed by "restricted"
            assert volume["mountPath"] == "/dev/shm", name
        assert not {"pvcMount", "hostPath"} & set(platform[name]), name


def test_a_local_build_has_no_retries(compiled, tmp_path):
    """run-local builds the pipeline with retries=False: a local failure is deterministic."""
    assert all_tasks(compiled[0])["pretrain"]["retryPolicy"]["maxRetryCount"] >= 1
    from kfp import compiler

    from scratchbert_pipelines.bert_pipeline import build_pipeline

    compiler.Compiler().compile(build_pipeline(retries=False), str(tmp_path / "local.yaml"))
    spec, _ = load(tmp_path / "local.yaml")
    assert not [name for name, task in all_tasks(spec).items() if task.get("retryPolicy")]


def test_nothing_is_pip_installed_at_run_time(compiled):
    for name, ex in executors(compiled[0]).items():
        command = " ".join(ex["container"]["command"])
        assert "pip install" not in command and "pip3 install" not in command, name


def test_default_images(compiled, settings):
    spec, _ = compiled
    for name, ex in executors(spec).items():
        gpu = bool(ex["container"].get("resources", {}).get("accelerator"))
        assert ex["container"]["image"] == settings.default_image(gpu=gpu), name


def test_compile_command_line_options(tmp_path, settings):
    """`python pipelines/compile.py --image --gpu-image --pipeline-root --no-node-selector --output`."""
    out = tmp_path / "custom.yaml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHONPATH")}
    proc = subprocess.run([sys.executable, str(ROOT / "pipelines" / "compile.py"), "--image", "registry.test/sb-cpu:dev",
                           "--gpu-image", "registry.test/sb-gpu:dev", "--pipeline-root", "minio://bucket/root",
                           "--no-node-selector", "--output", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    spec, platform = load(out)
    images = {}
    for name, ex in executors(spec).items():
        gpu = bool(ex["container"].get("resources", {}).get("accelerator"))
        images[name] = ex["container"]["image"]
        assert images[name] == ("registry.test/sb-gpu:dev" if gpu else "registry.test/sb-cpu:dev"), name
    assert images["exec-pretrain"] == "registry.test/sb-gpu:dev"
    assert spec["defaultPipelineRoot"] == "minio://bucket/root"
    for name, cfg in platform.items():
        assert "nodeSelector" not in cfg, name
    assert platform["exec-pretrain"]["tolerations"][0]["key"] == settings.GPU_TAINT_KEY  # the toleration stays
