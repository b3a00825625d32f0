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
PIPELINE_CONSTANTS = {"dataset": {"num_proc": DATASET_NUM_PROC, "corpus_part": "the dsl.ParallelFor item"},
                      "pretrain": {"image": "the GPU image"}}


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
    for name, p in _value_parameters(stage).items():
        cls = parameters.config_class(stage, name)  # KeyError: a parameter that no config of the stage has
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
    module = _module(stage)
    seen = {}

    class Stop(Exception):
        pass

    def run_stage(fn, *args):  # the helper KFP pastes into the component: here a recorder
        seen["configs"] = {type(a): a for a in args if type(a) in parameters.stage_configs(stage)}
        raise Stop

    for name, fn in (("run_stage", run_stage), ("log_numbers", lambda m, v: 0), ("logging_interval", lambda n: 7)):
        monkeypatch.setattr(module, name, fn, raising=False)
    values = {}
    for i, name in enumerate(_value_parameters(stage)):
        cls = parameters.config_class(stage, name)
        tp = params.field_type(cls, name)[0]
        values[name] = 1 if name == "num_proc" else _distinct_value(tp, i, params.default(cls, name))
    artifacts = {name: SimpleNamespace(path=str(tmp_path / name), metadata={})
                 for name, p in inspect.signature(_function(stage)).parameters.items() if _is_artifact(p.annotation)}
    with pytest.raises(Stop):
        _function(stage)(**values, **artifacts)
    configs = seen["configs"]
    assert parameters.STAGE_CONFIGS[stage] in configs
    for name, value in values.items():
        assert getattr(configs[parameters.config_class(stage, name)], name) == value, f"{stage}: {name}"


@pytest.mark.parametrize("stage", STAGES)
def test_component_inputs_are_described_from_the_config(stage):
    component = _module(stage).build("python:3.11")
    inputs = component.component_spec.inputs
    for name in _value_parameters(stage):
        cls = parameters.config_class(stage, name)
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
            assert params.field_type(parameters.config_class(stage, field), field)[0] is p.type, (p.name, stage, field)


def test_run_local_has_a_flag_for_every_parameter_but_the_cluster_ones():
    parser = argparse.ArgumentParser()
    local_run.add_arguments(parser)
    dests = {a.dest for a in parser._actions}
    assert set(parameters.NAMES) - set(local_run.CLUSTER_ONLY) <= dests
    assert not set(local_run.CLUSTER_ONLY) & dests
    assert set(local_run.CLUSTER_ONLY) <= set(parameters.NAMES)
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
    # KFP carries a run's numbers as doubles: 2**53 + 1 would reach the task as 2**53, 2**63 - 1 as 2**63
    for big in (2 ** 53 + 1, -2 ** 53 - 1, 2 ** 63 - 1):
        with pytest.raises(ScratchBertError, match=f"max_steps is {big}, beyond the integers a pipeline carries exactly"):
            parameters.check({"max_steps": big})
    assert parameters.check({"max_steps": 2 ** 53 - 1}) == {"max_steps": 2 ** 53 - 1}
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


def test_the_validate_component_takes_every_pipeline_parameter_by_name_and_type(monkeypatch):
    """The validate task gets every pipeline parameter under the same name and type, hands all
    of them, unchanged, to the pipeline's check, and returns the time budgets it planned."""
    from scratchbert_components.validate import component as validate_component

    sig = inspect.signature(validate_component.validate).parameters
    assert list(sig) == list(parameters.NAMES)
    for p in parameters.PARAMETERS:
        assert sig[p.name].annotation is p.type, p.name
    seen = {}
    def run_stage(fn, values, text_bytes=None):
        if fn is parameters.check_unpublished:  # then the object store: publish_version not yet published
            return seen.setdefault("unpublished", values)
        if fn is parameters.check_starting_positions:  # and the starting model's positions
            return seen.setdefault("positions", values)
        seen.update(fn=fn, values=values, text_bytes=text_bytes)
        return {**values, "time_budget_minutes": 7.5, "qa_time_budget_minutes": 2.5}

    monkeypatch.setattr(validate_component, "run_stage", run_stage, raising=False)
    values = {p.name: _distinct_value(p.type, i, p.default) for i, p in enumerate(parameters.PARAMETERS)}
    plan = validate_component.validate(**values)
    assert seen["fn"] is parameters.validate and seen["values"] == values
    assert seen["unpublished"]["publish_version"] == values["publish_version"]
    assert seen["positions"]["init_model"] == values["init_model"]
    assert seen["text_bytes"] == parameters.corpus_size(values)  # the corpus's size, for the budget's split
    assert (plan.time_budget_minutes, plan.qa_time_budget_minutes) == (7.5, 2.5)  # the planned time budgets


@pytest.mark.parametrize("values, words", [
    ({"preset": "huge"}, "preset is 'huge', not one of"),
    ({"max_steps": 0}, "pretrain stage: max_steps 0 trains nothing"),
    ({"time_budget_minutes": -5.0}, "pretrain stage: time_budget_minutes -5.0 must be"),
    ({"qa_max_steps": 0}, "qa_finetune stage: QA fine-tuning: qa_max_steps 0 must be positive"),
    ({"qa_learning_rate": -1.0}, "qa_learning_rate -1.0 must be positive, or 0 for the rate of the model's width"),
    ({"qa_batch_size": 0}, "qa_batch_size 0 must be at least 1"),
    ({"qa_epochs": 0.0}, "qa_epochs 0.0 must be positive when qa_max_steps is -1"),
    ({"batch_size": 0}, "pretrain stage: batch_size 0 must be at least 1"),
    ({"max_seq_len": 100000}, "dataset stage: max_seq_len 100000 must lie between"),
    ({"dupe_factor": 0}, "dupe_factor 0 must be 1 or more"),
    ({"vocab_size": 10}, "tokenizer stage: vocab_size 10 is too small"),
    ({"max_corpus_bytes": -1}, "max_corpus_bytes -1 must not be negative"),
    ({"eval_max_examples": -1}, "evaluate stage: eval_max_examples -1 must not be negative"),
    ({"corpus": "ftp://x/y"}, "scheme scratchbert does not read"),
    ({"squad_train": "hf://a/b/c/d"}, "does not name a Hub repository"),
    ({"checkpoint_uri": "s3://A/b"}, "invalid bucket name"),
    ({"publish_uri": "models/x"}, "not an S3 address"),
    ({"publish_version": "has space"}, "publish_version 'has space' is not a valid name"),
    ({"qa_max_seq_len": 1024}, "qa_max_seq_len 1024 is longer than the 512 positions"),
    ({"learning_rate": "fast"}, "takes a float"),
    ({"pretrain_steps": 5}, "no parameter 'pretrain_steps'"),
])
def test_pipeline_parameters_are_validated_as_the_stages_will(values, words):
    with pytest.raises(ScratchBertError, match=words) as e:
        parameters.validate(values)
    assert "\n" not in str(e.value)


def test_the_defaults_and_run_local_presets_are_valid():
    planned = parameters.split_budget(parameters.defaults())  # the GPU recipe's budget, split
    assert planned["time_budget_minutes"] > 0 and planned["qa_time_budget_minutes"] > 0
    assert parameters.validate({}) == {**parameters.defaults(), **planned}
    parameters.validate(local_run.REAL_DEFAULTS)
    parameters.validate(local_run.SYNTHETIC_DEFAULTS)


@pytest.fixture
def bf16_machine(monkeypatch):
    """A machine that trains in bf16 (the AMX CPUs the recipe's QA epochs were first timed on)."""
    monkeypatch.setattr(local_run, "machine_precision", lambda: "bf16")


def test_run_local_times_qa_epochs_only_for_its_own_recipe(bf16_machine):
    none = dict.fromkeys(local_run.SOURCES)
    recipe = local_run.run_settings(False, {"budget_minutes": 60.0, "preset": "tiny"}, none)
    assert recipe["budget_qa_epoch_minutes"] == local_run.REAL_DEFAULTS["budget_qa_epoch_minutes"] > 0
    assert recipe["budget_qa_epoch_pretrain_steps"] == local_run.REAL_DEFAULTS["budget_qa_epoch_pretrain_steps"] > 0
    planned = parameters.validate({**recipe, "budget_minutes": 60.0})
    training = 60.0 - parameters.fixed_minutes(planned)
    # paced: pretraining holds all of the training time but QA's epochs, in its own steps, at
    # most QA's share, which is QA's limit
    assert planned["time_budget_minutes"] == pytest.approx(training, abs=0.01)
    assert planned["reserve_steps"] == planned["qa_epochs"] * recipe["budget_qa_epoch_pretrain_steps"]
    assert planned["reserve_max_minutes"] == planned["qa_time_budget_minutes"] == pytest.approx(training * 0.6, abs=0.01)
    # unpaced: the recipe's QA epochs, pretraining the rest
    unpaced = parameters.validate({**recipe, "budget_minutes": 60.0, "budget_qa_epoch_pretrain_steps": 0})
    assert unpaced["qa_time_budget_minutes"] == pytest.approx(planned["qa_epochs"] * recipe["budget_qa_epoch_minutes"])
    assert unpaced["reserve_steps"] == unpaced["reserve_max_minutes"] == 0
    # a model whose epoch was timed too: its own time (mini's is five times tiny's)
    mini = local_run.run_settings(False, {"budget_minutes": 120.0, "preset": "mini"}, none)
    assert mini["budget_qa_epoch_minutes"] == local_run.QA_EPOCH_MINUTES["bf16"]["mini"] > 4 * recipe["budget_qa_epoch_minutes"]
    # another model or other QA data: no epoch time holds, the share alone splits the budget
    for given, sources in (({"preset": "small"}, none), ({"preset": "mini", "qa_batch_size": 64}, none),
                           ({"qa_batch_size": 64}, none), ({}, {**none, "squad_train": "my.json"})):
        settings = local_run.run_settings(False, {"budget_minutes": 60.0, **given}, sources)
        assert "budget_qa_epoch_minutes" not in settings and "budget_qa_epoch_pretrain_steps" not in settings
        assert parameters.validate({**settings, "budget_minutes": 60.0, **given})["qa_time_budget_minutes"] == \
            pytest.approx((60.0 - parameters.fixed_minutes(settings)) * (1 - settings["budget_pretrain_share"]), abs=0.01)


def test_run_local_trains_deeper_models_from_30_minutes_and_two_hours_of_budget(bf16_machine):
    none = dict.fromkeys(local_run.SOURCES)
    for minutes, preset in ((15.0, "tiny"), (29.0, "tiny"), (30.0, "tiny4"), (60.0, "tiny4"), (119.0, "tiny4"),
                            (120.0, "mini"), (240.0, "mini")):
        settings = local_run.run_settings(False, {"budget_minutes": minutes}, none)
        assert (settings["preset"], settings["budget_qa_epoch_minutes"]) == (preset, local_run.QA_EPOCH_MINUTES["bf16"][preset])
    assert local_run.run_settings(False, {}, none)["preset"] == "tiny"  # the main job
    # the run's own model wins, with its own epoch time; generated data keeps its nano model
    assert local_run.run_settings(False, {"budget_minutes": 120.0, "preset": "tiny"}, none)["budget_qa_epoch_minutes"] == 4.2
    assert local_run.run_settings(True, {"budget_minutes": 120.0}, none)["preset"] == "nano"
    two_hours = {**local_run.run_settings(False, {"budget_minutes": 120.0}, none), "budget_minutes": 120.0}
    planned = parameters.validate(two_hours)
    # 120 minutes less 2.5 fixed and 0.64 for 64 MB of text: pretraining until mini's two QA epochs
    # are left in its own steps, at least 40% of them
    assert (planned["preset"], planned["time_budget_minutes"], planned["reserve_steps"], planned["reserve_max_minutes"],
            planned["qa_time_budget_minutes"]) == ("mini", 116.86, 2 * 2638, 70.12, 70.12)
    # unpaced: QA's two epochs by the table, pretraining the rest
    planned = parameters.validate({**two_hours, "budget_qa_epoch_pretrain_steps": 0})
    assert (planned["time_budget_minutes"], planned["qa_time_budget_minutes"]) == (73.06, 43.8)
    # and --help says so, from the same tables
    parser = argparse.ArgumentParser()
    local_run.add_arguments(parser)
    flags = {a.dest: a.help for a in parser._actions}
    assert ("Default: tiny; tiny4 from --budget-minutes 30 (63 where training runs in fp32); mini from --budget-minutes 120 "
            "(251 where training runs in fp32); each where a few steps timed at the start say it gets the pretraining steps "
            "it needs (tiny4 4,500), else the one below; with --synthetic nano.") in flags["preset"]
    assert ("Default: timed at the start of a run with a budget (6 seconds of QA steps of its model) for tiny, tiny4, mini "
            "with the recipe's QA data; else 0.") in flags["budget_qa_epoch_minutes"]


def test_run_local_gives_thirty_minutes_more_of_the_text(bf16_machine):
    none = dict.fromkeys(local_run.SOURCES)
    for given, size in (({}, 11_000_000), ({"budget_minutes": 15.0}, 11_000_000), ({"budget_minutes": 29.0}, 11_000_000),
                        ({"budget_minutes": 30.0}, 64_000_000), ({"budget_minutes": 120.0}, 64_000_000)):
        assert local_run.run_settings(False, given, none)["max_corpus_bytes"] == size
    # a run's own corpus is cut the same way while the budget bounds pretraining, else used whole;
    # generated data is small anyway
    own = {**none, "corpus": "my.txt"}
    assert local_run.run_settings(False, {}, own)["max_corpus_bytes"] == 11_000_000
    assert local_run.run_settings(False, {"budget_minutes": 120.0}, own)["max_corpus_bytes"] == 64_000_000
    for unbounded in ({"budget_minutes": 0.0}, {"budget_minutes": 30.0, "max_steps": 5000}):
        assert "max_corpus_bytes" not in local_run.run_settings(False, unbounded, own)
    assert "max_corpus_bytes" not in local_run.run_settings(True, {"budget_minutes": 120.0}, none)
    # on the Hub, WikiText-2 holds 11 MB; more, or all there is, comes from WikiText-103
    assert local_run.hub_corpus(11_000_000) == local_run.CPU_CORPUS != local_run.WIKITEXT_103
    assert local_run.hub_corpus(64_000_000) == local_run.hub_corpus(0) == local_run.WIKITEXT_103
    parser = argparse.ArgumentParser()
    local_run.add_arguments(parser)
    assert ("Default: 11000000; 64000000 from --budget-minutes 30 (63 where training runs in fp32); 0 (all of it) for a "
            "--corpus you give with --budget-minutes 0 or a --max-steps.") in {a.dest: a.help for a in parser._actions}["max_corpus_bytes"]


def test_run_local_says_when_a_budget_reads_only_part_of_the_corpus_given(tmp_path, capsys):
    """A line on stderr where the corpus holds more than the budget's text, or its size is unknown."""
    text = tmp_path / "my-text"
    text.mkdir()
    for n in range(3):
        (text / f"part-{n}.txt").write_text("word " * 200_000 + "\n")  # 1 MB each
    local_run._say_corpus_cut(str(text), 2_000_000, 15.0)
    assert capsys.readouterr().err == ("run-local: --budget-minutes 15 reads the first 2 MB of --corpus (of 3 MB), what its "
                                       "pretraining can use; --max-corpus-bytes 0 reads all of it\n")
    (text / "part-3.txt").write_text("word " * 20_000_000 + "\n")  # 100 MB more: 1.1 minutes more than the first 2 MB
    local_run._say_corpus_cut(str(text), 2_000_000, 15.0)
    assert capsys.readouterr().err.endswith("--max-corpus-bytes 0 reads all of it, keeping 1.1 more minutes of the budget "
                                            "for the text\n")
    (text / "part-3.txt").unlink()
    local_run._say_corpus_cut(str(text), 3_000_003, 15.0)  # it all fits: nothing to say
    assert capsys.readouterr().err == ""
    local_run._say_corpus_cut(str(tmp_path / "gone"), 2_000_000, 15.0, 3_000_000)  # a size the run looked up: not read again
    assert "reads the first 2 MB of --corpus (of 3 MB)" in capsys.readouterr().err
    local_run._say_corpus_cut("s3://bucket/text/", 64_000_000, 30.0)  # not known before the run
    assert capsys.readouterr().err.startswith("run-local: --budget-minutes 30 reads the first 64 MB of --corpus, what")


def test_run_local_scales_the_model_by_budget_to_a_machine_without_bf16(monkeypatch):
    """In fp32 a QA epoch takes about twice as long, so 64 MB, tiny4 and mini wait for about twice the budget."""
    monkeypatch.setattr(local_run, "machine_precision", lambda: "fp32")
    none = dict.fromkeys(local_run.SOURCES)
    for minutes, preset, size in ((62.0, "tiny", 11e6), (63.0, "tiny4", 64e6), (125.0, "tiny4", 64e6), (126.0, "tiny4", 64e6),
                                  (250.0, "tiny4", 64e6), (251.0, "mini", 64e6), (480.0, "mini", 64e6)):
        settings = local_run.run_settings(False, {"budget_minutes": minutes}, none)
        assert (settings["preset"], settings["budget_qa_epoch_minutes"]) == (preset, local_run.QA_EPOCH_MINUTES["fp32"][preset])
        assert settings["max_corpus_bytes"] == size  # and the text with it
    # two hours there: tiny4's two epochs, the rest pretraining, as an hour of a bf16 machine
    planned = parameters.validate({**local_run.run_settings(False, {"budget_minutes": 120.0}, none), "budget_minutes": 120.0})
    assert (planned["preset"], planned["qa_time_budget_minutes"]) == ("tiny4", 2 * 14.8)
    assert planned["time_budget_minutes"] == pytest.approx(120.0 - 2.5 - 0.64 - 2 * 14.8, abs=0.01)  # 0.64: 64 MB of text


@pytest.mark.parametrize("precision", ["bf16", "fp32", "fp16"])
def test_run_local_reserves_the_qa_epochs_a_machine_like_this_one_takes(monkeypatch, precision):
    # a CPU without bf16 trains in fp32 and takes about twice as long for a QA epoch (8.38 to 9.34 minutes
    # against 4.2 on 2 cores): 30 minutes keep its two epochs (16.5 minutes, the share's most) instead of one
    monkeypatch.setattr(local_run, "machine_precision", lambda: precision)
    none = dict.fromkeys(local_run.SOURCES)
    settings = local_run.run_settings(False, {"budget_minutes": 30.0, "preset": "tiny"}, none)
    # unpaced (a QA epoch in pretraining steps is known in bf16 alone)
    assert ("budget_qa_epoch_pretrain_steps" in settings) == (precision == "bf16")
    planned = parameters.validate({**settings, "budget_minutes": 30.0, "preset": "tiny", "budget_qa_epoch_pretrain_steps": 0})
    split = planned["time_budget_minutes"], planned["qa_time_budget_minutes"]
    # (64 MB of text from 30 minutes where the scale is bf16's: 0.64 minutes of its 30 kept for it)
    assert split == {"bf16": (18.46, 8.4), "fp32": (11.0, 16.5), "fp16": (10.75, 16.12)}[precision]
    # a model not timed on such a machine (anything in fp16): the share alone splits
    mini = local_run.run_settings(False, {"budget_minutes": 120.0, "preset": "mini"}, none)
    assert ("budget_qa_epoch_minutes" in mini) == (precision != "fp16")
    assert local_run.qa_epoch_minutes("tiny") == {"bf16": 4.2, "fp32": 8.8}.get(precision)


def test_a_budget_trains_its_model_only_where_this_machine_pretrains_it_enough_steps(bf16_machine, monkeypatch, capsys):
    """tiny4 from 30 minutes needs about 4,500 pretraining steps to beat tiny: a slow machine's
    30 minutes (timed at the start) train tiny instead; an hour, or a model the run names, keep it."""
    steps = {"tiny4": 1.0, "tiny": 0.5}  # seconds a QA probe step takes: a slow day
    timed = []
    monkeypatch.setattr(local_run, "probe_qa_step_seconds", lambda preset, vocab, batch: timed.append(preset) or steps[preset])
    none = dict.fromkeys(local_run.SOURCES)

    def fit(given: dict, sources: dict = none, text_bytes: int | None = None) -> dict:
        timed.clear()
        settings = local_run.run_settings(False, given, sources)
        return {**local_run.fit_to_machine(settings, given, sources, quiet=False, text_bytes=text_bytes), **given}

    slow = fit({"budget_minutes": 30.0})
    # tiny4's epochs (11.6 minutes each) outgrow QA's share, which leaves pretraining 10.75 minutes (2.5 fixed,
    # 0.64 for 64 MB of text): 2,150 steps of 0.3 s
    assert (slow["preset"], slow["budget_qa_epoch_minutes"], timed) == ("tiny", 5.8, ["tiny4", "tiny"])
    err = capsys.readouterr().err
    assert "about 2,150 pretraining steps in 10.75 minutes, fewer than the 4,500 it needs; training tiny instead" in err
    # the split paced by tiny's own QA epoch in its pretraining steps (2 x 1,633), and the probe's epoch for
    # scoring's time
    assert slow["budget_qa_epoch_pretrain_steps"] == local_run.QA_EPOCH_PRETRAIN_STEPS["bf16"]["tiny"]
    assert "timed tiny here now: a QA epoch should take 5.8 minutes; 26.86 minutes of training: pretraining until the time " \
        "of 3,266 of its own steps is left, at the pace it measures (at least 10.74 minutes), then QA fine-tuning for its " \
        "epochs (at most 16.12 minutes), 3.14 for the rest of the run" in err
    hour = fit({"budget_minutes": 60.0})  # 33.66 minutes of pretraining by the probe: about 6,732 steps
    assert (hour["preset"], hour["budget_qa_epoch_minutes"], timed) == ("tiny4", 11.6, ["tiny4"])
    assert hour["budget_qa_epoch_pretrain_steps"] == local_run.QA_EPOCH_PRETRAIN_STEPS["bf16"]["tiny4"]
    assert "about 6,732 steps at the pace timed now" in capsys.readouterr().err
    # the same hour reading a 1 GB corpus whole keeps 12 minutes for its text: 22.3 of pretraining, too few for tiny4
    whole = fit({"budget_minutes": 60.0, "max_corpus_bytes": 0}, text_bytes=1_011_000_000)
    assert (whole["preset"], timed) == ("tiny", ["tiny4", "tiny"])
    assert "about 4,460 pretraining steps in 22.3 minutes" in capsys.readouterr().err
    named = fit({"budget_minutes": 30.0, "preset": "tiny4"})  # the run's own choice
    assert (named["preset"], timed) == ("tiny4", ["tiny4"])
    given_epoch = fit({"budget_minutes": 30.0, "budget_qa_epoch_minutes": 7.1})  # the model is still fitted
    assert (given_epoch["preset"], given_epoch["budget_qa_epoch_minutes"], timed) == ("tiny", 7.1, ["tiny4"])
    started = fit({"budget_minutes": 30.0}, {**none, "init_model": "hf://google/bert_uncased_L-4_H-128_A-2"})
    assert timed == [] and "budget_qa_epoch_minutes" not in started  # a starting model's size is its own
    assert fit({"budget_minutes": 30.0, "max_steps": 1000})["preset"] == "tiny4"  # its steps are the run's own
    steps["tiny4"] = 0.5  # a fast day: 30 minutes pretrain tiny4 (15.9 minutes, 6,360 steps)
    assert fit({"budget_minutes": 30.0})["preset"] == "tiny4"
    assert local_run.smaller_preset("mini") == "tiny4" and local_run.smaller_preset("tiny4") == "tiny"


@pytest.mark.parametrize("minutes", [-1.0, float("nan")])
def test_a_bad_budget_is_named_before_anything_starts(minutes, tmp_path):
    """A budget below 0 or not a number is refused with its own line (it once failed as
    max_corpus_bytes None, the text size it picks), before a folder or a server exists."""
    with pytest.raises(ScratchBertError, match=f"budget_minutes {minutes} must be 0 or more"):
        local_run.run_local(workdir=tmp_path / "runs", quiet=True, budget_minutes=minutes)
    assert not (tmp_path / "runs").exists()


def test_run_local_knows_the_precision_it_trains_in():
    import torch

    from scratchbert.pretrain import cpu_has_bf16

    if torch.cuda.is_available():
        pytest.skip("a GPU machine trains in what its GPU has")
    assert local_run.machine_precision() == ("bf16" if cpu_has_bf16() else "fp32")


def test_run_local_says_what_a_qa_epoch_took_when_that_would_split_the_budget_otherwise(bf16_machine):
    recipe = local_run.run_settings(False, {"budget_minutes": 120.0, "preset": "tiny"}, dict.fromkeys(local_run.SOURCES))
    # a split paced by pretraining's steps gives QA the time its epochs take: nothing to advise
    assert local_run.qa_epoch_advice({**recipe, "budget_minutes": 120.0}, {"epoch_minutes": 21.87}) is None
    recipe["budget_qa_epoch_pretrain_steps"] = 0.0  # unpaced, as where that is not known
    # tiny's reservation (4.2) and an epoch that took 21.87 minutes (mini at two hours)
    note = local_run.qa_epoch_advice({**recipe, "budget_minutes": 120.0}, {"epoch_minutes": 21.87})
    assert "a QA epoch took 21.87 minutes here (4.2 were reserved); --budget-qa-epoch-minutes 21.9" in note
    assert "73.06 minutes of pretraining and 43.8 of QA fine-tuning, not 108.46 minutes of pretraining and 8.4" in note
    # and the advice holds: the measured time splits the budget as the note says
    planned = parameters.validate({**recipe, "budget_minutes": 120.0, "budget_qa_epoch_minutes": 21.9})
    assert (planned["time_budget_minutes"], planned["qa_time_budget_minutes"]) == (73.06, 43.8)
    # no epoch time known: the share split it
    shared = local_run.qa_epoch_advice({"budget_minutes": 120.0, "budget_pretrain_share": 0.4}, {"epoch_minutes": 21.87})
    assert "(not known beforehand: the share split the budget)" in shared and "not 47 minutes of pretraining" in shared
    # nothing to say: the reservation was right within a run's spread (4.74 and 4.20 minutes in two 30-minute
    # runs of one day), the share gives less than the epochs anyway (15 minutes), a stage's own budget or steps,
    # no budget at all, or no epoch measured
    for arguments, epoch_minutes in (({**recipe, "budget_minutes": 120.0}, 4.4),
                                     ({**recipe, "budget_minutes": 30.0}, 4.74),
                                     ({**recipe, "budget_minutes": 30.0, "budget_qa_epoch_minutes": 4.8}, 4.20),
                                     ({**recipe, "budget_minutes": 15.0}, 5.0),
                                     ({**recipe, "budget_minutes": 120.0, "qa_time_budget_minutes": 10.0}, 21.87),
                                     ({**recipe, "budget_minutes": 120.0, "qa_max_steps": 500}, 21.87),
                                     ({**recipe, "budget_minutes": 0.0}, 21.87),
                                     ({**recipe, "budget_minutes": 120.0}, 0.0)):
        assert local_run.qa_epoch_advice(arguments, {"epoch_minutes": epoch_minutes}) is None
    summary = {"run_id": "r", "stages": {}, "total_seconds": 1.0, "store": None, "published_uri": None, "outputs": "o",
               "log": "l", "notes": [note]}
    assert local_run.format_summary(summary).endswith(f"note:       {note}")


def test_a_starting_model_keeps_its_own_tokenizer_in_run_local_and_the_pipeline():
    """--synthetic's 2,000-word vocabulary is not passed beside a starting model (its tokenizer is
    taken as it is), and the pipeline refuses a vocabulary size given beside one."""
    sources = {**dict.fromkeys(local_run.SOURCES), "init_model": "hf://owner/bert"}
    settings = local_run.run_settings(True, {}, sources)
    assert "vocab_size" not in settings and "lowercase" not in settings
    assert local_run.run_settings(True, {}, dict.fromkeys(local_run.SOURCES))["vocab_size"] == 2000
    parameters.validate({**settings, "init_model": "hf://owner/bert"})
    with pytest.raises(ScratchBertError, match="tokenizer stage: vocab_size has no effect with init_model"):
        parameters.validate({**settings, "init_model": "hf://owner/bert", "vocab_size": 2000})


def test_a_paced_split_gives_way_to_what_a_run_sets_itself():
    """A QA epoch's cost in pretraining steps paces the split (pretraining holds all of the training
    time and keeps QA's epochs of its own steps); a stage's own time budget or step count, a reserve
    of the run's own, no QA epochs or no pretraining share leave the split fixed before training."""
    paced = {"budget_minutes": 60.0, "budget_pretrain_share": 0.4, "budget_qa_epoch_minutes": 8.0,
             "budget_qa_epoch_pretrain_steps": 1500.0, "max_corpus_bytes": 11_000_000, "qa_max_eval_examples": 1000}
    assert parameters.split_budget(paced) == {"time_budget_minutes": 57.5, "qa_time_budget_minutes": 34.5,
                                              "reserve_steps": 3000.0, "reserve_max_minutes": 34.5}
    assert parameters.split_budget({**paced, "qa_epochs": 1.5})["reserve_steps"] == 2250.0
    fixed = {"time_budget_minutes": 41.5, "qa_time_budget_minutes": 16.0}  # QA's two epochs of 8 minutes, pretraining the rest
    for own, split in (({"time_budget_minutes": 30.0}, {**fixed, "time_budget_minutes": 30.0}),
                       ({"max_steps": 1000}, {**fixed, "time_budget_minutes": 0.0}),
                       ({"qa_time_budget_minutes": 10.0}, {**fixed, "qa_time_budget_minutes": 10.0}),
                       ({"qa_max_steps": 500}, {**fixed, "qa_time_budget_minutes": 0.0}),
                       ({"budget_pretrain_share": 0.0}, {"time_budget_minutes": 0.0, "qa_time_budget_minutes": 57.5}),
                       # all to pretraining: QA has no share to keep (its reserve would read as "half")
                       ({"budget_pretrain_share": 1.0}, {"time_budget_minutes": 57.5, "qa_time_budget_minutes": 0.0}),
                       ({"budget_qa_epoch_pretrain_steps": 0.0}, fixed)):
        assert parameters.split_budget({**paced, **own}) == split, own
    # the run's own reserve paces the split in place of the epochs', its own limit in place of QA's share
    assert parameters.split_budget({**paced, "reserve_steps": 100.0, "reserve_max_minutes": 20.0}) == \
        {"time_budget_minutes": 57.5, "qa_time_budget_minutes": 34.5, "reserve_steps": 100.0, "reserve_max_minutes": 20.0}
    assert parameters.split_budget({**paced, "budget_qa_epoch_pretrain_steps": 0.0, "reserve_steps": 100.0})["reserve_steps"] == 100
    # what the pipeline checks, with the split in place: the stage's own limit beside a budget is a pretraining setting
    assert parameters.validate({**paced, "reserve_max_minutes": 20.0})["reserve_max_minutes"] == 20.0
    with pytest.raises(ScratchBertError, match="reserve_max_minutes 60.0 must be 0 or more and less than time_budget_minutes 57.5"):
        parameters.validate({**paced, "reserve_max_minutes": 60.0})
    with pytest.raises(ScratchBertError, match=r"budget_qa_epoch_pretrain_steps -1.0 must be 0 or more \(0: unknown\)$"):
        parameters.validate({**paced, "budget_qa_epoch_pretrain_steps": -1.0})
    with pytest.raises(ScratchBertError, match="pretrain stage: reserve_max_minutes 30.0 must be 0 or more and less than "
                                               "time_budget_minutes 20.0"):
        parameters.validate({"time_budget_minutes": 20.0, "reserve_steps": 10.0, "reserve_max_minutes": 30.0})


def test_a_budget_keeps_the_time_that_more_text_and_more_dev_questions_take(monkeypatch):
    """The fixed 2.5 minutes were measured reading 11 MB and scoring 1,000 questions: a run that reads
    64 MB or scores all 10,570 keeps their time out of training, else it ends past its budget."""
    main = {"budget_minutes": 60.0, "budget_pretrain_share": 0.4, "budget_qa_epoch_minutes": 8.0,
            "max_corpus_bytes": 11_000_000, "qa_max_eval_examples": 1000}
    assert parameters.fixed_minutes(main) == 2.5
    assert parameters.split_budget(main) == {"time_budget_minutes": 41.5, "qa_time_budget_minutes": 16.0}
    # 12 minutes a GB of text beyond 11 MB; scoring a question about what training on one does (an 8-minute epoch
    # of 80,000 questions); pretraining pays, QA fine-tuning keeps its two epochs
    for change, fixed in (({"max_corpus_bytes": 64_000_000}, 2.5 + 0.636), ({"max_corpus_bytes": 1_011_000_000}, 2.5 + 12.0),
                          ({"qa_max_eval_examples": 0}, 2.5 + 8.0 * 9570 / 80_000), ({"qa_max_eval_examples": 5000}, 2.5 + 0.4),
                          ({"qa_max_eval_examples": 0, "budget_qa_epoch_minutes": 16.0}, 2.5 + 16.0 * 9570 / 80_000)):
        values = {**main, **change}
        assert parameters.fixed_minutes(values) == pytest.approx(fixed)
        split = parameters.split_budget(values)
        assert split["time_budget_minutes"] + split["qa_time_budget_minutes"] == pytest.approx(60.0 - fixed, abs=0.011)
        assert split["qa_time_budget_minutes"] == 2 * values["budget_qa_epoch_minutes"]
    # less than the main job's, or sizes and times not known before the run (all of the text, no epoch time): 2.5
    for change in ({"max_corpus_bytes": 5_000_000, "qa_max_eval_examples": 200}, {"max_corpus_bytes": 0},
                   {"qa_max_eval_examples": 0, "budget_qa_epoch_minutes": 0.0}):
        assert parameters.fixed_minutes({**main, **change}) == 2.5
    # the main job keeps its split (paced where training runs in bf16: pretraining at least its 5 minutes), and
    # the fixed work never takes more than half of a budget
    for precision, split in (("bf16", {"time_budget_minutes": 12.5, "reserve_steps": 3266.0, "reserve_max_minutes": 7.5}),
                             ("fp32", {"time_budget_minutes": 5.0})):
        monkeypatch.setattr(local_run, "machine_precision", lambda precision=precision: precision)
        settings = local_run.run_settings(False, {}, dict.fromkeys(local_run.SOURCES))
        assert parameters.split_budget(settings) == {**split, "qa_time_budget_minutes": 7.5}
    tiny = parameters.split_budget({**main, "budget_minutes": 10.0, "max_corpus_bytes": 2_000_000_000, "budget_qa_epoch_minutes": 0})
    assert tiny == {"time_budget_minutes": 2.0, "qa_time_budget_minutes": 3.0}
    # a budget of seconds still limits both stages: a share rounded to 0 minutes would mean no limit
    assert parameters.split_budget({**main, "budget_minutes": 0.01}) == {"time_budget_minutes": 0.01, "qa_time_budget_minutes": 0.01}


def test_a_budget_too_short_for_the_work_around_training_says_how_late_the_run_will_end():
    """Training keeps half of a budget whatever its text and scoring take, so a run whose fixed work
    takes more ends past its budget: the plan says by how much, and what ends in time; a budget
    that fits says nothing."""
    main = {"budget_minutes": 15.0, "budget_pretrain_share": 0.4, "budget_qa_epoch_minutes": 8.0,
            "max_corpus_bytes": 0, "qa_max_eval_examples": 1000}
    # 513 MB read whole: 2.5 + 6.02 minutes, 1.02 more than the 7.5 training leaves
    late = parameters.budget_overrun(main, 512_974_072, lambda name: "--" + name.replace("_", "-"))
    assert late == ("--budget-minutes 15 is short for this run: the work around training (513 MB of text) should take "
                    "about 8.5 of its minutes, more than the half that training keeps, so the run should end about 1.0 "
                    "minutes late; --budget-minutes 18 ends in time, as does a smaller --max-corpus-bytes")
    split = parameters.split_budget(main, 512_974_072)
    assert split["time_budget_minutes"] + split["qa_time_budget_minutes"] == 7.5
    # all 10,570 dev questions scored in 4 minutes: 2.5 + 8.0 * 9570 / 80,000 = 3.46 minutes, 1.46 past 4 minutes' half
    scoring = parameters.budget_overrun({**main, "budget_minutes": 4.0, "max_corpus_bytes": 11_000_000, "qa_max_eval_examples": 0})
    assert scoring.startswith("budget_minutes 4 is short for this run: the work around training (10,570 dev questions) "
                              "should take about 3.5 of its minutes") and "end about 1.5 minutes late; budget_minutes 7 " \
        "ends in time" in scoring and "max_corpus_bytes" not in scoring
    for fits in ({**main, "budget_minutes": 18.0}, {**main, "budget_minutes": 0.0}, {**main, "max_corpus_bytes": 64_000_000},
                 {**main, "time_budget_minutes": 5.0, "qa_max_steps": 100}):  # each stage's own: the budget splits nothing
        assert parameters.budget_overrun(fits, 512_974_072) is None


def test_a_budget_keeps_the_time_of_the_text_the_corpus_holds(tmp_path):
    """max_corpus_bytes 0 reads the whole corpus: its size, looked up from the files, keeps the time
    of a cut of that size (a 1 GB corpus read whole used to run 12 minutes past its budget), and a
    cut larger than the corpus keeps only the corpus's time."""
    main = {"budget_minutes": 60.0, "budget_pretrain_share": 0.4, "budget_qa_epoch_minutes": 8.0,
            "max_corpus_bytes": 0, "qa_max_eval_examples": 1000}
    for max_bytes, text_bytes, fixed in ((0, None, 2.5), (0, 1_011_000_000, 2.5 + 12.0), (64_000_000, 1_011_000_000, 2.5 + 0.636),
                                         (1_011_000_000, 64_000_000, 2.5 + 0.636), (1_011_000_000, None, 2.5 + 12.0)):
        values = {**main, "max_corpus_bytes": max_bytes}
        assert parameters.fixed_minutes(values, text_bytes) == pytest.approx(fixed)
        split = parameters.split_budget(values, text_bytes)
        assert split["time_budget_minutes"] + split["qa_time_budget_minutes"] == pytest.approx(60.0 - fixed, abs=0.011)
        planned = parameters.validate(values, text_bytes)
        assert {name: planned[name] for name in split} == split
    # the size comes from the files (a folder: all of them), wherever a budget's split needs it
    folder = tmp_path / "corpus"
    folder.mkdir()
    (folder / "a.txt").write_text("One sentence here.\n\n" * 1000)
    (folder / "b.txt").write_text("Another one there.\n\n" * 500)
    size = sum(f.stat().st_size for f in folder.iterdir())
    assert parameters.corpus_size({**main, "corpus": str(folder)}) == size
    assert parameters.corpus_size({**main, "corpus": str(folder / "a.txt"), "max_corpus_bytes": 2_000_000_000}) == 20_000
    for change in ({"budget_minutes": 0.0}, {"max_corpus_bytes": 11_000_000}, {"corpus": ""},  # no budget, a small cut: not needed
                   {"corpus": str(tmp_path / "missing")}, {"max_corpus_bytes": "many"}):  # the tokenizer / validate say why
        assert parameters.corpus_size({**main, "corpus": str(folder), **change}) is None


def test_help_texts_name_the_pipeline_parameters_not_the_stage_flags_they_feed():
    for p in parameters.PARAMETERS:
        if p.targets:
            stage = p.targets[0][0]
            fed = {"--" + field.replace("_", "-") for q in parameters.PARAMETERS for s, field in q.targets if s == stage}
            assert not [flag for flag in fed if flag in p.help], p.name
    assert "when qa_max_steps is -1" in parameters.BY_NAME["qa_epochs"].help
    assert "-1 trains qa_epochs" in parameters.BY_NAME["qa_max_steps"].help


def test_run_local_pretrains_on_short_examples_only_from_scratch():
    none = dict.fromkeys(local_run.SOURCES)
    assert local_run.run_settings(False, {}, none)["max_seq_len"] == 64 < parameters.BY_NAME["max_seq_len"].default
    for given, sources in (({}, {**none, "init_model": "/models/bert"}), ({"init_model": "hf://a/b"}, none)):
        settings = local_run.run_settings(False, given, sources)
        assert "max_seq_len" not in settings  # a starting model continues with the pipeline's 128-token examples
        assert parameters.validate({**settings, **given})["max_seq_len"] == parameters.BY_NAME["max_seq_len"].default


def test_one_budget_is_split_between_the_training_stages():
    full = parameters.validate({"budget_minutes": 15.0, "budget_pretrain_share": 0.4})
    training = 15.0 - parameters.BUDGET_FIXED_MINUTES
    assert full["time_budget_minutes"] == pytest.approx(training * 0.4, abs=0.01)
    assert full["qa_time_budget_minutes"] == pytest.approx(training * 0.6, abs=0.01)
    gpu = parameters.validate({"budget_minutes": 15.0})  # the GPU recipe's share
    assert gpu["time_budget_minutes"] == pytest.approx(training * parameters.GPU_RECIPE["budget_pretrain_share"], abs=0.01)
    # a stage's own budget or step count wins; fine-tuning the starting model directly gets all the training time
    assert parameters.validate({"budget_minutes": 15.0, "qa_time_budget_minutes": 1.0})["qa_time_budget_minutes"] == 1.0
    counted = parameters.validate({"budget_minutes": 15.0, "max_steps": 5000})
    assert counted["time_budget_minutes"] == 0 and counted["qa_time_budget_minutes"] == gpu["qa_time_budget_minutes"]
    direct = parameters.validate({"budget_minutes": 15.0, "skip_pretraining": True, "init_model": "hf://a/b"})
    assert direct["qa_time_budget_minutes"] == pytest.approx(training, abs=0.01) and direct["time_budget_minutes"] == 0
    # knowing how long a QA epoch takes, the split gives QA fine-tuning no more than its qa_epochs (2 unless given)
    # and pretraining the rest (less 0.84 minutes for scoring all 10,570 dev questions, the pipeline's default,
    # at 7 minutes an epoch of 80,000)
    long = parameters.validate({"budget_minutes": 60.0, "budget_pretrain_share": 0.4, "budget_qa_epoch_minutes": 7.0})
    assert long["qa_time_budget_minutes"] == 14.0
    assert long["time_budget_minutes"] == pytest.approx(60.0 - 2.5 - 0.84 - 14.0, abs=0.01)
    three = parameters.validate({"budget_minutes": 60.0, "budget_pretrain_share": 0.4, "budget_qa_epoch_minutes": 7.0,
                                 "qa_epochs": 3.0})
    assert three["qa_time_budget_minutes"] == 21.0
    assert three["time_budget_minutes"] == pytest.approx(60.0 - 2.5 - 0.84 - 21.0, abs=0.01)
    short = parameters.validate({"budget_minutes": 15.0, "budget_pretrain_share": 0.4, "budget_qa_epoch_minutes": 7.0})
    assert short["qa_time_budget_minutes"] == pytest.approx((15.0 - 2.5 - 0.84) * 0.6, abs=0.01)  # the share: less than two epochs
    assert short["time_budget_minutes"] == pytest.approx((15.0 - 2.5 - 0.84) * 0.4, abs=0.01)
    # no budget: nothing changes
    assert parameters.validate({"budget_minutes": 0.0, "time_budget_minutes": 3.0})["time_budget_minutes"] == 3.0
    with pytest.raises(ScratchBertError, match="budget_qa_epoch_minutes -2.0 must be 0 or more"):
        parameters.validate({"budget_minutes": 15.0, "budget_qa_epoch_minutes": -2.0})
    with pytest.raises(ScratchBertError, match="budget_minutes -1.0 must be 0 or more"):
        parameters.validate({"budget_minutes": -1.0})
    with pytest.raises(ScratchBertError, match=r"budget_pretrain_share 1.5 must lie in \[0, 1\]"):
        parameters.validate({"budget_minutes": 15.0, "budget_pretrain_share": 1.5})


def test_run_local_help_names_only_flags_it_has():
    """The parameters' help comes from the stages' options: a stage's flag no parameter feeds
    (`--epochs`, `--validation-fraction`) and a parameter's name (`qa_max_steps`) named flags
    and words that run-local does not have."""
    import argparse
    import re

    from scratchbert import cli

    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    actions = sub.choices["run-local"]._actions
    flags = {s for a in actions for s in a.option_strings}
    text = " ".join(a.help or "" for a in actions)
    assert set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) <= flags
    assert not [n for n in parameters.NAMES if "_" in n and re.search(rf"(?<![\w-]){n}(?!\w)", text)]


def test_run_local_help_names_every_default_that_synthetic_changes():
    """--help's "with --synthetic X" for each run-local default that a --synthetic run replaces: a
    value the synthetic recipe does not set is the pipeline's, not the CPU recipe's (the help said
    --dupe-factor 5, --budget-pretrain-share 0.4, --eval-max-examples 2000 and --qa-max-eval-examples
    1000 where a --synthetic run used 1, 0.9, 0 and 0)."""
    parser = argparse.ArgumentParser()
    local_run.add_arguments(parser)
    flags = {a.dest: a.help for a in parser._actions}
    real, synthetic = ({**parameters.defaults(), **recipe} for recipe in (local_run.REAL_DEFAULTS, local_run.SYNTHETIC_DEFAULTS))
    differ = [name for name in flags if name in real and real[name] != synthetic[name]
              and name not in ("budget_qa_epoch_minutes", "budget_qa_epoch_pretrain_steps")]
    assert {"dupe_factor", "budget_pretrain_share", "eval_max_examples", "qa_max_eval_examples", "preset"} <= set(differ)
    for name in differ:
        assert f"; with --synthetic {params.show(synthetic[name])}." in flags[name], name
