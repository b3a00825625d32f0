"""One source for every parameter: each component's parameters are fields of its stage's config
(same name, same type, described from the config's help), every value a component is given
reaches that field, and the pipeline's parameters, ``run-local``'s flags and ``submit``'s
check all come from one table (``scratchbert_pipelines.parameters``)."""

from __future__ import annotations

import argparse
import importlib
import inspect
from types import SimpleNamespace

import pytest

from scratchbert import params
from scratchbert.errors import ScratchBertError
from scratchbert_components import STAGES
from scratchbert_pipelines import local_run, parameters
from scratchbert_pipelines.bert_pipeline import DATASET_NUM_PROC, build_pipeline

# Component parameters the pipeline sets itself rather than through a pipeline parameter.
PIPELINE_CONSTANTS = {"dataset": {"num_proc": DATASET_NUM_PROC, "corpus_part": "the dsl.ParallelFor item"}}


def _module(stage: str):
    return importlib.import_module(f"scratchbert_components.{stage}.component")


def _function(stage: str):
    return getattr(_module(stage), stage)


def _is_artifact(annotation) -> bool:
    return "Input[" in str(annotation) or "Output[" in str(annotation) or "kfp.dsl" in str(annotation)


def _value_parameters(stage: str) -> dict[str, inspect.Parameter]:
    return {name: p for name, p in inspect.signature(_function(stage)).parameters.items()
            if not _is_artifact(p.annotation)}


@pytest.mark.parametrize("stage", STAGES)
def test_component_parameters_are_config_fields_of_the_same_type(stage):
    cls = parameters.STAGE_CONFIGS[stage]
    for name, p in _value_parameters(stage).items():
        assert name in params.fields(cls), f"{stage}: {name} is not a field of {cls.__name__}"
        assert p.annotation is params.field_type(cls, name)[0], name


@pytest.mark.parametrize("stage", STAGES)
def test_the_pipeline_feeds_exactly_the_component_parameters(stage):
    fed = {field for p in parameters.PARAMETERS for s, field in p.targets if s == stage}
    assert fed | set(PIPELINE_CONSTANTS.get(stage, {})) == set(_value_parameters(stage))


def _distinct_value(tp: type, i: int, default):
    if tp is bool:
        return not default if isinstance(default, bool) else True
    if tp is int:
        return 1000 + i if default != 1000 + i else 2000 + i
    if tp is float:
        return 0.25 + i
    return f"value-{i}"


@pytest.mark.parametrize("stage", STAGES)
def test_every_value_a_component_is_given_reaches_the_config(stage, monkeypatch, tmp_path):
    cls = parameters.STAGE_CONFIGS[stage]
    module = _module(stage)
    seen = {}

    class Stop(Exception):
        pass

    def run_stage(fn, config):  # the helper KFP pastes into the component: here a recorder
        seen["config"] = config
        raise Stop

    for name, fn in (("run_stage", run_stage), ("log_numbers", lambda m, v: 0), ("logging_interval", lambda n: 7)):
        monkeypatch.setattr(module, name, fn, raising=False)
    values = {}
    for i, name in enumerate(_value_parameters(stage)):
        tp = params.field_type(cls, name)[0]
        values[name] = 1 if name == "num_proc" else _distinct_value(tp, i, params.default(cls, name))
    artifacts = {name: SimpleNamespace(path=str(tmp_path / name), metadata={})
                 for name, p in inspect.signature(_function(stage)).parameters.items() if _is_artifact(p.annotation)}
    with pytest.raises(Stop):
        _function(stage)(**values, **artifacts)
    config = seen["config"]
    assert isinstance(config, cls)
    for name, value in values.items():
        assert getattr(config, name) == value, f"{stage}: {name}"


@pytest.mark.parametrize("stage", STAGES)
def test_component_inputs_are_described_from_the_config(stage):
    component = _module(stage).build("python:3.11")
    inputs = component.component_spec.inputs
    cls = parameters.STAGE_CONFIGS[stage]
    for name in _value_parameters(stage):
        assert inputs[name].description == params.help_text(cls, name, with_default=False), name


def test_pipeline_parameters_are_the_table_with_its_defaults_and_help():
    spec = build_pipeline("python:3.11", "python:3.11").component_spec
    assert set(spec.inputs) == set(parameters.NAMES)
    for p in parameters.PARAMETERS:
        got = spec.inputs[p.name]
        assert got.default == p.default, p.name
        assert got.description.startswith(p.help), p.name


def test_table_names_are_unique_and_targets_agree_on_type():
    assert len(parameters.NAMES) == len(set(parameters.NAMES))
    for p in parameters.PARAMETERS:
        for stage, field in p.targets:
            assert params.field_type(parameters.STAGE_CONFIGS[stage], field)[0] is p.type, (p.name, stage, field)


def test_run_local_has_a_flag_for_every_parameter_but_the_gpu_switch():
    parser = argparse.ArgumentParser()
    local_run.add_arguments(parser)
    dests = {a.dest for a in parser._actions}
    assert set(parameters.NAMES) - {"qa_on_gpu"} <= dests
    for name in set(local_run.REAL_DEFAULTS) | set(local_run.SYNTHETIC_DEFAULTS):
        assert name in parameters.BY_NAME, f"run-local defaults name an unknown parameter {name}"
    parameters.check(local_run.REAL_DEFAULTS)
    parameters.check(local_run.SYNTHETIC_DEFAULTS)


def test_parameter_values_are_checked_in_one_line():
    assert parameters.check({"max_steps": 5, "learning_rate": 1}) == {"max_steps": 5, "learning_rate": 1.0}
    with pytest.raises(ScratchBertError, match="no parameter 'pretrain_max_steps'"):
        parameters.check({"pretrain_max_steps": 5})
    with pytest.raises(ScratchBertError, match="takes a int"):
        parameters.check({"max_steps": "many"})
    with pytest.raises(ScratchBertError, match="not one of nano, tiny"):
        parameters.check({"preset": "huge"})


def test_the_committed_yaml_compiles_with_the_standard_kfp_command(tmp_path):
    """`kfp dsl compile --py pipelines/bert_pipeline.py` works from the checkout, no sys.path help."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    kfp_cli = Path(sys.executable).parent / "kfp"
    out = tmp_path / "p.yaml"
    done = subprocess.run([str(kfp_cli), "dsl", "compile", "--py", "pipelines/bert_pipeline.py", "--function",
                           "bert_pipeline", "--output", str(out)], cwd=root, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert out.read_text() == (root / "pipelines" / "bert_pipeline.yaml").read_text()
