"""The compiled pipeline (pipelines/bert_pipeline.yaml): stages, GPU, platform config, secrets,
images, caching, and that the committed file is exactly what pipelines/compile.py writes.

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
STAGE_FUNCTIONS = {"tokenizer", "dataset", "pretrain", "evaluate", "qa_finetune", "publish"}
# The dataset stage's fan-out: the part numbers to loop over, and the merge of the parts.
FAN_OUT_FUNCTIONS = {"corpus_part_numbers", "dataset_merge"}


def _compile_module():
    from scratchbert_pipelines import compile as compile_module

    return compile_module


def compile_to(path: Path, **kwargs) -> tuple[dict, dict]:
    """Compile in-process; return (pipeline spec, kubernetes platform spec)."""
    _compile_module().compile_pipeline(path, **kwargs)
    return load(path)


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


def test_five_stages_and_publish(compiled):
    spec, _ = compiled
    assert {function_of(ex) for ex in executors(spec).values()} == STAGE_FUNCTIONS | FAN_OUT_FUNCTIONS
    assert spec["pipelineInfo"]["name"] == "scratchbert"
    # One QA fine-tune and one publish per branch (GPU / CPU), one of everything else.
    assert len(executors_of(spec, "qa_finetune")) == 2 and len(executors_of(spec, "publish")) == 2
    for fn in (STAGE_FUNCTIONS | FAN_OUT_FUNCTIONS) - {"qa_finetune", "publish"}:
        assert len(executors_of(spec, fn)) == 1, fn


def test_wiring(compiled):
    """corpus -> tokenizer -> dataset (one task per corpus part) -> merge -> pretrain -> evaluate;
    pretrained model -> qa -> publish."""
    spec, _ = compiled
    tasks = all_tasks(spec)

    def producer(task: str, artifact: str) -> str:
        src = tasks[task]["inputs"]["artifacts"][artifact]
        return src["taskOutputArtifact"]["producerTask"] if "taskOutputArtifact" in src else src["componentInputArtifact"]

    assert producer("dataset", "tokenizer") == "pipelinechannel--tokenizer-tokenizer"  # into the loop
    (loop,) = [name for name, t in tasks.items() if "parameterIterator" in t]
    assert producer(loop, "pipelinechannel--tokenizer-tokenizer") == "tokenizer"
    iterator = tasks[loop]["parameterIterator"]
    assert tasks[loop]["inputs"]["parameters"][iterator["items"]["inputParameter"]]["taskOutputParameter"]["producerTask"] \
        == "corpus-part-numbers"
    assert tasks["dataset"]["inputs"]["parameters"]["corpus_part"]["componentInputParameter"] == iterator["itemInput"]
    assert tasks["corpus-part-numbers"]["inputs"]["parameters"]["corpus_parts"]["componentInputParameter"] == "corpus_parts"
    assert producer("dataset-merge", "parts") == loop  # dsl.Collected over the loop's dataset tasks
    assert producer("pretrain", "dataset") == "dataset-merge"
    assert producer("evaluate", "model") == "pretrain" and producer("evaluate", "dataset") == "dataset-merge"
    for qa in ("qa-finetune", "qa-finetune-2"):
        assert producer(qa, "model") == "pipelinechannel--pretrain-model"  # the pretrained model, via the branch
    assert producer("publish", "model") == "qa-finetune" and producer("publish-2", "model") == "qa-finetune-2"
    assert producer("evaluate", "logs") == "pretrain"
    from scratchbert_pipelines import parameters

    params = spec["root"]["inputDefinitions"]["parameters"]
    assert set(params) == set(parameters.NAMES)
    assert params["checkpoint_uri"]["defaultValue"] == ""
    assert params["corpus"]["defaultValue"].startswith("hf://")
    assert spec["root"]["outputDefinitions"]["parameters"]["Output"]["parameterType"] == "STRING"


def test_pipeline_defaults_follow_settings_and_library(compiled, settings):
    from scratchbert.pretrain import PretrainConfig
    from scratchbert.tokenizer import TokenizerConfig

    params = compiled[0]["root"]["inputDefinitions"]["parameters"]
    assert params["publish_uri"]["defaultValue"] == f"s3://{settings.PUBLISH_BUCKET}/{settings.PUBLISH_PREFIX}"
    assert params["preset"]["defaultValue"] == PretrainConfig.preset
    assert params["vocab_size"]["defaultValue"] == TokenizerConfig.vocab_size


def test_gpu_request_only_on_gpu_tasks(compiled, settings):
    spec, _ = compiled
    gpu = {"exec-pretrain"} | {e for e in executors_of(spec, "qa_finetune")
                               if executors(spec)[e]["container"]["image"] == settings.default_image(gpu=True)}
    assert len(gpu) == 2, "pretrain and the GPU branch of qa_finetune"
    for name, ex in executors(spec).items():
        accel = ex["container"].get("resources", {}).get("accelerator")
        if name in gpu:
            assert accel is not None, name
            assert accel["resourceType"] == settings.GPU_RESOURCE and str(accel["resourceCount"]) == "1", name
        else:
            assert accel is None, f"{name} must not ask for a GPU"
        res = ex["container"]["resources"]
        for key in ("resourceCpuRequest", "resourceCpuLimit", "resourceMemoryRequest", "resourceMemoryLimit"):
            assert key in res, f"{name} has no {key}"


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
    expected = [{"envVar": k, "secretKey": k} for k in settings.S3_SECRET_KEYS]
    for name in executors(spec):
        if function_of(executors(spec)[name]) in {"evaluate"} | FAN_OUT_FUNCTIONS:  # only KFP artifacts: no credentials
            assert "secretAsEnv" not in platform.get(name, {})
            continue
        (secret,) = platform[name]["secretAsEnv"]
        assert secret["secretName"] == settings.S3_SECRET_NAME
        assert secret["keyToEnv"] == expected
        # Publish cannot work without credentials; the others need them only for s3:// inputs.
        assert secret["optional"] is (function_of(executors(spec)[name]) != "publish"), name
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
        assert cache is (name in ("tokenizer", "corpus-part-numbers", "dataset", "dataset-merge")), name
    assert tasks["pretrain"]["retryPolicy"]["maxRetryCount"] >= 1
    assert tasks["publish"]["retryPolicy"]["maxRetryCount"] >= 1


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
