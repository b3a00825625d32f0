"""Each component run for real through kfp.local (SubprocessRunner, this virtual environment) on tiny
generated data: tokenizer (corpus from the embedded S3 server), dataset (fanned out over corpus
parts and merged), evaluate (HTML report),
publish (into the S3 server, read back with its manifest), and bad input that ends a task with
the library's one-sentence error. Plus the report helpers as plain functions.

Components with input artifacts run inside a two-task pipeline whose first task is a
``dsl.importer`` of a folder built here with the library (kfp.local runs single components
only without input artifacts).
"""

# No `from __future__ import annotations`: the test pipelines below need real annotations for kfp.

import json
import math
import warnings
from pathlib import Path

import pytest
from kfp import dsl, local

from scratchbert_components import helpers
from scratchbert_components.dataset import component as dataset_component
from scratchbert_components.evaluate import component as evaluate_component
from scratchbert_components.publish import component as publish_component
from scratchbert_components.tokenizer import component as tokenizer_component
from scratchbert_components.validate import component as validate_component

# The label only (the subprocess runner runs this Python); "python" in it keeps kfp.local quiet.
IMAGE = "python-scratchbert:test"


@pytest.fixture(autouse=True)
def kfp_local(tmp_path):
    """A fresh kfp.local session per test, its outputs under the test's tmp_path."""
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path / "kfp"),
               raise_on_error=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        yield tmp_path / "kfp"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    """Generated corpus, plus a tokenizer, dataset and 5-step nano model built with the library."""
    from scratchbert import synthetic
    from scratchbert.pretrain import PretrainConfig, pretrain
    from scratchbert.pretraining_data import DatasetConfig, build_dataset
    from scratchbert.tokenizer import TokenizerConfig, train_tokenizer

    d = tmp_path_factory.mktemp("data")
    corpus = synthetic.write_corpus(d / "corpus.txt", 120)
    train_tokenizer(TokenizerConfig(corpus=str(corpus), out=str(d / "tok"), vocab_size=400))
    build_dataset(DatasetConfig(corpus=str(corpus), tokenizer=str(d / "tok"), out=str(d / "ds"), max_seq_len=64,
                                num_proc=1))
    pretrain(PretrainConfig(dataset=str(d / "ds"), out=str(d / "model"), preset="nano", max_steps=5, batch_size=8,
                            logging_steps=1, eval_steps=0, num_workers=0))
    return {"corpus": corpus, "tokenizer": d / "tok", "dataset": d / "ds", "model": d / "model",
            "logs": d / "model-logs"}


def imported(path: Path, cls):
    return dsl.importer(artifact_uri=str(path), artifact_class=cls, reimport=True).output


# ------------------------------------------------------------------------------------- components


def test_tokenizer_component_reads_corpus_from_s3(data, s3_env):
    from scratchbert import storage
    from scratchbert.tokenizer import load_tokenizer

    storage.upload_dir(data["corpus"].parent, "s3://corpora/synthetic")  # corpus.txt and the built folders
    op = tokenizer_component.build(IMAGE)
    task = op(corpus="s3://corpora/synthetic/corpus.txt", vocab_size=300, max_corpus_bytes=0, lowercase=True,
              sample_bytes=0, init_model="")
    out = Path(task.outputs["tokenizer"].path)
    tok = load_tokenizer(out)
    assert len(tok) == 300
    report = json.loads((out / "metrics.json").read_text())
    logged = task.outputs["metrics"].metadata
    assert logged["vocab_size"] == report["vocab_size"] == 300
    assert logged["unk_rate"] == pytest.approx(report["unk_rate"])
    assert logged["train_documents"] > 0


def test_dataset_fan_out_over_corpus_parts_and_merge(data, tmp_path):
    """The pipeline's dataset stage as it runs there: the part numbers, one dataset task per part
    (dsl.ParallelFor), their outputs gathered (dsl.Collected) and merged; the same examples as one
    dataset task makes of the whole corpus."""
    from scratchbert import synthetic
    from scratchbert.pretraining_data import DatasetConfig, build_dataset, load_pretraining_dataset

    corpus = synthetic.write_corpus(tmp_path / "corpus.txt", 700, seed=5)  # three groups of documents
    dataset_op = dataset_component.build(IMAGE)
    parts_op = dataset_component.build_part_numbers(IMAGE)
    merge_op = dataset_component.build_merge(IMAGE)

    @dsl.pipeline(name="dataset-fan-out-test")
    def pipe(corpus_parts: int = 2) -> dsl.Dataset:
        tokenizer = imported(data["tokenizer"], dsl.Artifact)
        numbers = parts_op(corpus_parts=corpus_parts)
        with dsl.ParallelFor(numbers.output) as part:
            built = dataset_op(corpus=str(corpus), valid_corpus="", tokenizer=tokenizer, max_seq_len=64,
                               max_corpus_bytes=0, dupe_factor=2, num_proc=8, corpus_parts=corpus_parts, corpus_part=part)
        return merge_op(parts=dsl.Collected(built.outputs["dataset"])).outputs["dataset"]

    dataset = pipe().output
    ds, info = load_pretraining_dataset(dataset.path)
    build_dataset(DatasetConfig(corpus=str(corpus), tokenizer=str(data["tokenizer"]), out=str(tmp_path / "one"),
                                max_seq_len=64, dupe_factor=2, num_proc=1))
    one, _ = load_pretraining_dataset(tmp_path / "one")
    assert info["max_seq_len"] == 64 and info["build"]["corpus_parts"] == 2
    assert {e["file"].split("/")[1][:10] for e in info["splits"]["train"]["shards"]} == {"part-00000", "part-00001"}
    for split in ("train", "validation"):
        assert len(ds[split]) == len(one[split]) > 0
        assert sorted(map(tuple, ds[split]["input_ids"])) == sorted(map(tuple, one[split]["input_ids"]))
    stats = json.loads((Path(dataset.path) / "metrics.json").read_text())
    assert stats["train_examples"] == len(ds["train"]) and stats["dupe_factor"] == 2


def test_evaluate_component_writes_metrics_and_report(data):
    from scratchbert.evaluation import FILL_MASK_SENTENCES

    op = evaluate_component.build(IMAGE)

    @dsl.pipeline(name="evaluate-test")
    def pipe() -> dsl.HTML:
        return op(model=imported(data["model"], dsl.Model), logs=imported(data["logs"], dsl.Artifact),
                  dataset=imported(data["dataset"], dsl.Dataset), max_examples=0).outputs["report"]

    task = pipe()
    report = Path(task.output.path).read_text()
    evaluation = Path(task.output.path).parent / "evaluation"
    metrics = json.loads((evaluation / "metrics.json").read_text())
    assert 0 <= metrics["mlm_accuracy"] <= 1 and metrics["perplexity"] > 1
    assert report.startswith("<!DOCTYPE html>") and report.count("<svg") == 2 and "<polyline" in report
    for sentence in FILL_MASK_SENTENCES:
        assert sentence in report
    assert f"{metrics['perplexity']:.4g}" in report
    assert (evaluation / "fill_mask.json").is_file() and (evaluation / "report.md").is_file()


def test_publish_component(data, s3_env, tmp_path):
    from scratchbert import storage

    op = publish_component.build(IMAGE)

    @dsl.pipeline(name="publish-test")
    def pipe() -> str:
        return op(model=imported(data["model"], dsl.Model), publish_uri="s3://models/test-publish",
                  publish_version="v1").output

    uri = pipe().output
    assert uri == "s3://models/test-publish/v1/"
    fetched = storage.fetch_published("s3://models/test-publish", tmp_path / "fetched")  # LATEST, checksums
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        assert (fetched / name).read_bytes() == (data["model"] / name).read_bytes()
    assert storage.read_manifest("s3://models/test-publish")["version"] == "v1"


def test_bad_input_ends_the_task_with_one_clear_sentence(capfd):
    op = tokenizer_component.build(IMAGE)
    with pytest.raises(RuntimeError, match="FAILURE"):
        op(corpus="/nonexistent/corpus.txt", vocab_size=300, max_corpus_bytes=0, lowercase=True, sample_bytes=0,
           init_model="")
    out = capfd.readouterr()
    log = out.out + out.err
    assert "scratchbert error: corpus /nonexistent/corpus.txt does not exist" in log
    assert "Traceback" not in log


def test_validate_fails_a_bad_preset_in_one_line_and_passes_good_values(capfd):
    """The pipeline's first task: a bad value is one line within seconds, before any stage runs."""
    from scratchbert_pipelines import parameters

    op = validate_component.build(IMAGE)
    op(**parameters.defaults())  # the defaults pass
    with pytest.raises(RuntimeError, match="FAILURE"):
        op(**dict(parameters.defaults(), preset="huge"))
    out = capfd.readouterr()
    log = out.out + out.err
    assert "scratchbert error: pipeline parameter preset is 'huge', not one of nano, tiny" in log
    assert "Traceback" not in log and "every pipeline parameter is valid" in log


def test_validate_refuses_a_publish_version_that_is_published(s3_env, tmp_path, capfd):
    """A rerun with the publish_version of a run that published trained the whole pipeline, then
    failed at its last task ("version v1 is already published"); the validate task refuses it."""
    from scratchbert import storage
    from scratchbert_pipelines import parameters

    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    storage.publish(tmp_path / "model", "s3://models/rerun", version="v1")
    op = validate_component.build(IMAGE)
    op(**dict(parameters.defaults(), publish_uri="s3://models/rerun", publish_version="v2"))  # a new version passes
    capfd.readouterr()
    with pytest.raises(RuntimeError, match="FAILURE"):
        op(**dict(parameters.defaults(), publish_uri="s3://models/rerun", publish_version="v1"))
    log = "".join(capfd.readouterr())
    assert "scratchbert error: pipeline parameters: publish_version v1 is already published at s3://models/rerun/v1/" in log
    assert "Traceback" not in log


def test_validate_refuses_qa_windows_longer_than_the_starting_models_positions(tmp_path):
    """init_model with 128 positions and qa_max_seq_len 256: the tokenizer, dataset and pretrain
    tasks ran, then QA fine-tuning refused the windows; the validate task reads the model's config."""
    from scratchbert.errors import ScratchBertError
    from scratchbert_pipelines import parameters

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 128}))
    values = dict(parameters.defaults(), init_model=str(model))
    for fits in (0, 64, 128):  # 0: the default windows, which fit the model
        parameters.check_starting_positions(dict(values, qa_max_seq_len=fits))
    parameters.check_starting_positions(dict(values, init_model=str(tmp_path / "missing"), qa_max_seq_len=256))  # the stages say it
    with pytest.raises(ScratchBertError, match=r"qa_max_seq_len 256 is longer than the 128 positions of the starting model "):
        parameters.check_starting_positions(dict(values, qa_max_seq_len=256))


def test_validate_refuses_examples_longer_than_the_starting_models_positions(tmp_path):
    """init_model with 128 positions and max_seq_len 256: the tokenizer and dataset tasks ran (the
    dataset cut the whole corpus into 256-token examples), then pretraining refused the model; the
    validate task reads the model's config. Fine-tuning it directly builds no such examples."""
    from scratchbert.errors import ScratchBertError
    from scratchbert_pipelines import parameters

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "bert", "max_position_embeddings": 128}))
    values = dict(parameters.defaults(), init_model=str(model), qa_max_seq_len=0)
    parameters.check_starting_positions(dict(values, max_seq_len=128))
    parameters.check_starting_positions(dict(values, max_seq_len=256, skip_pretraining=True))
    with pytest.raises(ScratchBertError, match=r"max_seq_len 256 is longer than the 128 positions of the starting model "
                                               r".*; use 128 or less$"):
        parameters.check_starting_positions(dict(values, max_seq_len=256))


def test_validate_plans_the_budget_with_the_size_of_an_s3_corpus_read_whole(s3_env, tmp_path, capfd):
    """max_corpus_bytes 0 reads all of the corpus: the validate task sizes it in the object store (a
    .gz by its trailer: 48 MB of text in a small object) and keeps its time out of the training budgets."""
    import gzip

    from scratchbert import storage
    from scratchbert_pipelines import parameters

    folder = tmp_path / "whole"
    folder.mkdir()
    with gzip.open(folder / "corpus.txt.gz", "wb", compresslevel=1) as f:
        for _ in range(48):
            f.write(b"A sentence of the corpus.\n\n" * 37_449)  # about a MB
    size = 48 * 37_449 * 27
    storage.upload_dir(folder, "s3://corpora/whole")
    values = dict(parameters.defaults(), corpus="s3://corpora/whole", max_corpus_bytes=0, budget_minutes=30.0,
                  budget_qa_epoch_minutes=0.0, budget_qa_epoch_pretrain_steps=1000.0)
    task = validate_component.build(IMAGE)(**values)
    planned = {name: task.outputs[name] for name in validate_component.PLAN}  # paced: pretraining keeps 2,000 steps
    assert planned == parameters.split_budget(values, size) != parameters.split_budget(values)
    assert planned["reserve_steps"] == 2000.0 and 0 < planned["reserve_max_minutes"] < planned["time_budget_minutes"]
    out = capfd.readouterr().out
    assert f"whose corpus holds {size:,} bytes" in out and "is short" not in out
    # 5 minutes: the 2.95 that its text and the rest take are more than the half that training keeps
    validate_component.build(IMAGE)(**dict(values, budget_minutes=5.0))
    assert "warning: budget_minutes 5 is short for this run: the work around training (49 MB of text) should take " \
        "about 3.0 of its minutes" in (log := capfd.readouterr().out), log[-3000:]


def test_publish_refuses_a_non_s3_destination(data, capfd):
    op = publish_component.build(IMAGE)

    @dsl.pipeline(name="publish-bad")
    def pipe() -> str:
        return op(model=imported(data["model"], dsl.Model), publish_uri="models/no-scheme", publish_version="").output

    with pytest.raises(RuntimeError, match="FAILURE"):
        pipe()
    out = capfd.readouterr()
    log = out.out + out.err
    assert "scratchbert error:" in log and "models/no-scheme" in log
    assert "Traceback" not in log


# ------------------------------------------------------------------------------------- helpers


class _Metrics:
    def __init__(self):
        self.logged = {}

    def log_metric(self, key, value):
        self.logged[key] = value


def test_log_numbers_keeps_only_finite_numbers():
    m = _Metrics()
    n = helpers.log_numbers(m, {"a": 1, "b": 0.5, "flag": True, "precision": "fp32", "nan": math.nan, "inf": math.inf})
    assert m.logged == {"a": 1, "b": 0.5, "flag": 1} and n == 3


def test_logging_interval():
    assert helpers.logging_interval(100) == 5
    assert helpers.logging_interval(10) == 1
    assert helpers.logging_interval(100_000) == 50
    assert helpers.logging_interval(-1) == 50


def test_svg_line_chart_scales_points_into_the_plot():
    svg = helpers.svg_line_chart({"loss <train>": [(0, 4.0), (50, 2.0), (100, 1.0)], "eval": [(100, 1.5)]}, "Loss & more")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "loss &lt;train&gt;" in svg and "Loss &amp; more" in svg  # escaped
    import re

    (points,) = re.findall(r'points="([^"]+)"', svg)
    coords = [tuple(map(float, p.split(","))) for p in points.split()]
    xs, ys = zip(*coords)
    assert list(xs) == sorted(xs) and xs[0] == 64 and xs[-1] == 640 - 16  # x spans the plot area
    assert ys[0] < ys[1] < ys[2]  # a falling loss is drawn going down (SVG y grows downwards)
    assert all(28 <= y <= 300 - 44 for y in ys)
    assert "<circle" in svg  # a single-point series is a dot
    assert "nothing was logged" in helpers.svg_line_chart({"x": []}, "Empty")


def test_read_log_history_accepts_both_layouts(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"log_history": [{"step": 1, "loss": 2.0}]}))
    (tmp_path / "b.json").write_text(json.dumps([{"step": 1, "loss": 2.0}, {"step": 2, "eval_loss": 1.0}]))
    assert helpers.history_series(helpers.read_log_history(str(tmp_path / "a.json")), "loss") == [(1, 2.0)]
    assert helpers.history_series(helpers.read_log_history(str(tmp_path / "b.json")), "eval_loss") == [(2, 1.0)]
    assert helpers.read_log_history(str(tmp_path / "missing.json")) == []
