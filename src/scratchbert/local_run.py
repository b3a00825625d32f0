"""``scratchbert run-local``: the whole Kubeflow pipeline on this machine, with an embedded S3 server.

What :func:`run_local` does, in order:

1. makes a run folder ``<workdir>/<run id>/`` (run id: UTC time);
2. with ``synthetic=True``, writes a generated corpus and SQuAD-style train/dev sets there
   (for any of the four inputs not given);
3. starts :class:`scratchbert.objectstore.EmbeddedS3` on 127.0.0.1 (objects kept in
   ``keep_store``, by default ``<workdir>/s3-store``), or uses the S3 endpoint you give
   with the ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` of the environment;
4. sets the ``AWS_*`` variables for the pipeline's task processes and uploads local corpus
   and SQuAD files to ``s3://scratchbert-inputs/<run id>/...``, so the tasks read them from
   ``s3://`` exactly as on a cluster (``hf://`` and ``s3://`` inputs are passed unchanged;
   with no input at all the pipeline's defaults, WikiText-2 and SQuAD from the Hub, apply,
   or their offline stand-ins when the Hub cannot be reached: :func:`stand_in_data`);
5. runs the pipeline, the same function that is compiled for the cluster, through
   ``kfp.local`` (``pipelines/local_run.py``); its publish task publishes the QA model into
   the S3 server;
6. stops the server (always), reads every stage's ``metrics.json`` from the task outputs
   under ``<run>/outputs/``, writes ``<run>/summary.json`` and prints a summary table.

This module never loads the Kubeflow Pipelines SDK itself: that half lives in the checkout's
``pipelines/local_run.py``, loaded when a run starts, so ``run-local`` needs a source
checkout of scratchbert (``pip install -e '.[pipeline]'``) — the pipeline and components are
not part of the installed package.

After the run, the published model stays in the kept store; to read it again::

    from scratchbert.objectstore import EmbeddedS3
    from scratchbert import storage
    with EmbeddedS3(data_dir="runs/local/s3-store") as s3:
        storage.fetch_published("s3://models/scratchbert-qa", "qa-model", client=s3.client())
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from scratchbert.errors import ScratchBertError
from scratchbert.outputs import read_json, write_json

COMMAND = "run-local"
DESCRIPTION = ("Run the whole scratchbert pipeline on this machine through kfp.local, with an embedded "
               "S3 server (or --endpoint); prints a summary and keeps the published model in the store.")
INPUT_BUCKET = "scratchbert-inputs"
STORE_DIRNAME = "s3-store"

# Defaults of a run on generated data: a few minutes on 2 CPU cores, long enough that the
# numbers show learning (the nano learning rates are the ones tests/unit/test_pretrain.py and
# tests/unit/test_qa.py measured to work for this model size).
SYNTHETIC_DEFAULTS: dict[str, Any] = {
    "preset": "nano", "vocab_size": 2000, "max_seq_len": 128, "max_steps": 800, "batch_size": 32,
    "learning_rate": 3e-3, "qa_max_steps": 300, "qa_batch_size": 32, "qa_max_seq_len": 192,
    "qa_learning_rate": 3e-3,
}
SYNTHETIC_SIZES = {"documents": 1500, "squad_train_articles": 300, "squad_dev_articles": 40}
# Defaults of a run on real data (WikiText-2 and SQuAD unless given) on a laptop CPU: a
# tiny model for ten minutes, a short QA fine-tune, scored on 1000 dev questions. Ten minutes
# of tiny is seven to nine passes over 11 MB, so each document is cut and paired five times:
# on this project's 2-core CPU (offline stand-ins, the recipe before the unigram output bias)
# MLM/NSP accuracy 0.149/0.793 against 0.145/0.731 with one cut (the dataset stage: 7.3 s
# against 5.5 s); the README has the current recipe's numbers.
REAL_DEFAULTS: dict[str, Any] = {
    "preset": "tiny", "max_steps": -1, "time_budget_minutes": 10.0, "dupe_factor": 5, "qa_max_steps": 600,
    "qa_max_eval_examples": 1000, "eval_max_examples": 2000,
}

# With no inputs a run trains on the Hub's WikiText-2 and SQuAD (the pipeline's defaults). When
# the Hub cannot be reached, the same kinds of data in ../shared/data beside the checkout (or
# $SCRATCHBERT_SHARED_DATA) stand in for them: that folder's README says it holds offline
# stand-ins for exactly these Hub datasets. 11 MB of the Wikipedia text is WikiText-2's size.
STAND_IN_ENV = "SCRATCHBERT_SHARED_DATA"
STAND_INS = {"corpus": "enwiki/train.txt", "squad_train": "squad/train-v1.1.json", "squad_dev": "squad/dev-v1.1.json"}
STAND_IN_CORPUS_BYTES = 11_000_000

# The pipeline parameters a local run sets: run_local keyword (and run-local --flag) ->
# (pipeline parameter, type, help). Each is passed only when given or defaulted above.
# run_local's signature lists the same keywords; a test keeps the two in step.
_OPTIONS: dict[str, tuple[str, type, str]] = {
    "preset": ("preset", str, "model size: nano, tiny, mini, small, medium, base"),
    "vocab_size": ("vocab_size", int, "WordPiece vocabulary size"),
    "max_seq_len": ("max_seq_len", int, "tokens per pretraining example"),
    "dupe_factor": ("dupe_factor", int, "times each training document is cut into examples (5 or so for a small corpus trained for several epochs)"),
    "max_steps": ("pretrain_max_steps", int, "pretraining steps (-1: one epoch or the time budget)"),
    "time_budget_minutes": ("pretrain_time_budget_minutes", float, "stop pretraining after this many minutes (0: no budget)"),
    "batch_size": ("batch_size", int, "pretraining batch size"),
    "learning_rate": ("learning_rate", float, "pretraining peak learning rate"),
    "max_corpus_bytes": ("max_corpus_bytes", int, "use only the first N bytes of the corpus (0: all)"),
    "eval_max_examples": ("eval_max_examples", int, "evaluate on at most N validation examples (0: all)"),
    "qa_max_steps": ("qa_max_steps", int, "QA fine-tuning steps (-1: 2 epochs)"),
    "qa_batch_size": ("qa_batch_size", int, "QA batch size"),
    "qa_learning_rate": ("qa_learning_rate", float, "QA peak learning rate"),
    "qa_max_seq_len": ("qa_max_seq_len", int, "tokens per QA window"),
    "qa_max_train_examples": ("qa_max_train_examples", int, "use only the first N SQuAD training questions (0: all)"),
    "qa_max_eval_examples": ("qa_max_eval_examples", int, "score only the first N SQuAD evaluation questions (0: all)"),
    "publish_uri": ("publish_uri", str, "s3://bucket/prefix to publish the QA model under"),
    "publish_version": ("publish_version", str, "version folder name (default: the UTC time)"),
    "checkpoint_uri": ("checkpoint_uri", str, "s3:// prefix mirroring pretraining checkpoints"),
}
# Stage -> (local task folder name, output artifact holding the stage's metrics.json).
STAGE_OUTPUTS = {
    "tokenizer": ("tokenizer", "tokenizer"),
    "dataset": ("dataset", "dataset"),
    "pretrain": ("pretrain", "model"),
    "evaluate": ("evaluate", "evaluation"),
    "qa_finetune": ("qa-finetune", "qa_model"),
}
STAGES = (*STAGE_OUTPUTS, "publish")


def run_local(corpus: str | None = None, valid_corpus: str | None = None, squad_train: str | None = None,
              squad_dev: str | None = None, *, synthetic: bool = False, endpoint: str | None = None,
              preset: str | None = None, vocab_size: int | None = None, max_seq_len: int | None = None,
              dupe_factor: int | None = None, max_steps: int | None = None, time_budget_minutes: float | None = None,
              batch_size: int | None = None, learning_rate: float | None = None,
              max_corpus_bytes: int | None = None, eval_max_examples: int | None = None,
              qa_max_steps: int | None = None, qa_batch_size: int | None = None,
              qa_learning_rate: float | None = None, qa_max_seq_len: int | None = None,
              qa_max_train_examples: int | None = None, qa_max_eval_examples: int | None = None,
              publish_uri: str | None = None, publish_version: str | None = None,
              checkpoint_uri: str | None = None, workdir: str | os.PathLike = "runs/local",
              keep_store: str | os.PathLike | None = "", quiet: bool = False) -> dict:
    """Run the whole pipeline locally (see the module docstring) and return its summary.

    Args:
        corpus, valid_corpus: pretraining corpus (and an optional validation corpus): a
            local .txt file or folder (uploaded to the S3 server), ``s3://`` or ``hf://``.
            Default: the pipeline's (WikiText-2 from the Hub), or generated text with
            ``synthetic``.
        squad_train, squad_dev: SQuAD v1.1 JSON files, ``s3://`` or ``hf://``. Default: the
            pipeline's (``hf://rajpurkar/squad``), or generated questions with ``synthetic``.
        synthetic: generate whichever of the four inputs is not given, and default to a
            nano model trained for a few minutes of CPU (:data:`SYNTHETIC_DEFAULTS`).
        endpoint: use this S3 endpoint instead of starting one (credentials from the
            ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` environment variables).
        preset ... checkpoint_uri: pipeline parameters (see ``pipelines/bert_pipeline.py``);
            ``None`` takes the run's default (:data:`SYNTHETIC_DEFAULTS` or
            :data:`REAL_DEFAULTS`, else the pipeline's).
        workdir: folder of the runs; each run gets ``<workdir>/<run id>/``.
        keep_store: data folder of the embedded S3 server, kept after the run so the
            published model can be read later; ``""`` (default) means
            ``<workdir>/s3-store``, ``None`` a temporary store deleted when the run ends.
            Ignored with ``endpoint``.
        quiet: do not print the summary table.

    Returns:
        The summary (also in ``<run>/summary.json``): ``run_id``, ``run_dir``, ``outputs``,
        ``published_uri``, ``store``, ``endpoint``, ``arguments``, ``total_seconds`` and,
        per stage, ``seconds`` (wall time of the task, process start included) and its
        metrics.

    Raises:
        ScratchBertError: a bad input path, no checkout, a missing ``weed``, missing
            credentials for ``endpoint``, or a failed task (its error is in the log above).
    """
    given = {k: v for k, v in locals().items() if k in _OPTIONS and v is not None}  # first: parameters only
    workdir = Path(workdir).resolve()
    sources = {"corpus": corpus, "valid_corpus": valid_corpus, "squad_train": squad_train, "squad_dev": squad_dev}
    for name, value in sources.items():
        if value is not None and not _is_remote(str(value)) and not Path(value).exists():
            raise ScratchBertError(f"{name.replace('_', '-')} {value} does not exist; give a local path, s3://... or hf://...")
    endpoint_env = _endpoint_env(endpoint) if endpoint is not None else None
    run_pipeline = _load_pipeline_runner()
    settings = dict(SYNTHETIC_DEFAULTS if synthetic else REAL_DEFAULTS)
    if not synthetic:
        sources, stand_in_settings = _offline_stand_ins(sources)
        settings.update(stand_in_settings)
    run_id, run_dir = _new_run_dir(workdir)
    if synthetic:
        sources.update(_write_synthetic(run_dir / "inputs", sources))

    settings.update(given)
    arguments = {_OPTIONS[k][0]: v for k, v in settings.items()}
    arguments["qa_on_gpu"] = False  # no GPU branch locally (kfp.local ignores accelerators anyway)

    server = None
    store: Path | None = None
    saved_env = {k: os.environ.get(k) for k in _aws_env_names()}
    try:
        if endpoint is None:
            from scratchbert.objectstore import EmbeddedS3

            store = (workdir / STORE_DIRNAME if keep_store == "" else
                     Path(keep_store).resolve() if keep_store is not None else None)
            server = EmbeddedS3(data_dir=store).start()
            env = server.env()
        else:
            env = endpoint_env
        os.environ.update(env)  # the task subprocesses inherit these (on a cluster: the Secret)
        for name, value in sources.items():
            if value is not None:
                arguments[_source_param(name)] = _stage_input(str(value), name, run_id)
        write_json(run_dir / "arguments.json", arguments)
        started = time.time()
        try:
            published = run_pipeline(arguments, run_dir / "outputs")
        except RuntimeError as e:  # kfp.local: "Pipeline ... finished with status FAILURE. Inner task failed: ..."
            raise ScratchBertError(f"the local pipeline run failed ({_plain(str(e))}); the task's error is in the log above, outputs so far are in {run_dir / 'outputs'}") from None
        endpoint_used = env["AWS_ENDPOINT_URL"]
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if server is not None:
            server.stop()
    summary = {
        "run_id": run_id, "run_dir": str(run_dir), "outputs": str(run_dir / "outputs"),
        "published_uri": published, "endpoint": endpoint_used if endpoint else None,
        "store": str(store) if store else None, "synthetic": synthetic, "arguments": arguments,
        **collect_results(run_dir / "outputs", started),
    }
    write_json(run_dir / "summary.json", summary)
    if not quiet:
        print(format_summary(summary), flush=True)
    return summary


def collect_results(outputs: str | os.PathLike, started: float) -> dict:
    """Per-stage metrics and wall times from a kfp.local output folder.

    Each stage's numbers are its ``metrics.json``; its time runs from the end of the task
    before it (tasks run one after another) to the write of its ``executor_output.json``.
    """
    outputs = Path(outputs)
    ends = sorted((p.stat().st_mtime, _stage_of(p.parent.name)) for p in outputs.rglob("executor_output.json"))
    stages: dict[str, dict] = {}
    previous = started
    for end, stage in ends:
        if stage is not None:
            stages.setdefault(stage, {})["seconds"] = round(end - previous, 1)
        previous = end
    for stage, (task, output) in STAGE_OUTPUTS.items():
        for path in outputs.rglob(f"{output}/metrics.json"):
            if _stage_of(path.parent.parent.name) == stage:
                stages.setdefault(stage, {}).update(read_json(path))
    return {"stages": stages, "total_seconds": round((ends[-1][0] if ends else started) - started, 1)}


def format_summary(summary: dict) -> str:
    """The summary as a short table: stage, wall seconds, headline numbers, then where things are."""
    s = summary["stages"]

    def get(stage, key, fmt="{:.3f}"):
        value = s.get(stage, {}).get(key)
        return "n/a" if value is None else fmt.format(value)

    headline = {
        "tokenizer": f"vocab {get('tokenizer', 'vocab_size', '{}')}, unk rate {get('tokenizer', 'unk_rate', '{:.4f}')}",
        "dataset": f"{get('dataset', 'train_examples', '{}')} train / {get('dataset', 'validation_examples', '{}')} validation examples",
        "pretrain": f"{get('pretrain', 'steps', '{}')} steps, loss {get('pretrain', 'train_loss', '{:.3f}')}, {get('pretrain', 'tokens_per_second', '{:.0f}')} tokens/s",
        "evaluate": f"MLM acc {get('evaluate', 'mlm_accuracy')}, NSP acc {get('evaluate', 'nsp_accuracy')}, perplexity {get('evaluate', 'perplexity', '{:.1f}')}",
        "qa_finetune": f"EM {get('qa_finetune', 'exact_match', '{:.2f}')}, F1 {get('qa_finetune', 'f1', '{:.2f}')}",
        "publish": summary.get("published_uri") or "n/a",
    }
    lines = [f"scratchbert local run {summary['run_id']}" + (" (synthetic data)" if summary.get("synthetic") else ""),
             f"{'stage':<12} {'seconds':>8}  result"]
    for stage in STAGES:
        lines.append(f"{stage:<12} {get(stage, 'seconds', '{:.1f}'):>8}  {headline[stage]}")
    lines.append(f"{'total':<12} {summary['total_seconds']:>8.1f}")
    where = summary["store"] and f"kept in {summary['store']} (server stopped)" or summary.get("endpoint") or "temporary store (deleted)"
    lines += [f"published:  {summary.get('published_uri')}  [{where}]", f"outputs:    {summary['outputs']}"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ helpers


def _new_run_dir(workdir: Path) -> tuple[str, Path]:
    """A fresh ``<workdir>/<UTC time>[-N]`` folder."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        run_id = stamp if n == 1 else f"{stamp}-{n}"
        try:
            (workdir / run_id).mkdir(parents=True)
            return run_id, workdir / run_id
        except FileExistsError:
            continue
    raise ScratchBertError(f"could not create a new run folder in {workdir}; clean it up")


def stand_in_data() -> Path:
    """The folder of offline stand-ins for the Hub's datasets (see :data:`STAND_INS`)."""
    return Path(os.environ.get(STAND_IN_ENV) or _checkout_path().parent / "shared" / "data")


def hub_reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face Hub (``HF_ENDPOINT``) answers at all, with any HTTP status."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except OSError:  # URLError, refused, no DNS, timed out
        return False
    return True


def _offline_stand_ins(sources: dict) -> tuple[dict, dict]:
    """The inputs with the Hub defaults swapped for their stand-ins when the Hub is unreachable,
    and the settings that go with them (the corpus's size); unchanged when nothing defaults
    to the Hub or it answers."""
    from huggingface_hub import constants

    missing = [name for name in STAND_INS if sources[name] is None]
    # HF_HUB_OFFLINE=1: the tasks read the Hub's datasets from its local cache, on purpose
    if not missing or constants.HF_HUB_OFFLINE or hub_reachable():
        return sources, {}
    folder = stand_in_data()
    flags = ", ".join("--" + name.replace("_", "-") for name in missing)
    if not all((folder / STAND_INS[name]).is_file() for name in missing):
        raise ScratchBertError(f"the Hugging Face Hub is unreachable and {flags} default to data on it; give local files or "
                               f"s3:// URIs with {flags}, or pass --synthetic for generated data")
    print(f"{COMMAND}: the Hugging Face Hub is unreachable; using the offline stand-ins in {folder} for {flags}"
          + (f" (by default the corpus's first {STAND_IN_CORPUS_BYTES // 1_000_000} MB, WikiText-2's size)" if "corpus" in missing else ""),
          file=sys.stderr, flush=True)
    sources = dict(sources, **{name: str(folder / STAND_INS[name]) for name in missing})
    return sources, ({"max_corpus_bytes": STAND_IN_CORPUS_BYTES} if "corpus" in missing else {})


def _is_remote(uri: str) -> bool:
    return uri.startswith(("s3://", "hf://"))


def _source_param(name: str) -> str:
    return {"corpus": "corpus_uri", "valid_corpus": "valid_corpus_uri",
            "squad_train": "squad_train_uri", "squad_dev": "squad_dev_uri"}[name]


def _stage_of(task_dir: str) -> str | None:
    """Local task folder (``qa-finetune-2``) -> stage name (``qa_finetune``); None for others."""
    base = task_dir
    if base.rsplit("-", 1)[-1].isdigit():
        base = base.rsplit("-", 1)[0]
    stage = base.replace("-", "_")
    return stage if stage in STAGES else None


def _plain(text: str) -> str:
    """Drop the terminal colour codes kfp.local puts into its messages."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def _aws_env_names() -> list[str]:
    from scratchbert import storage

    return [storage.ENV_ENDPOINT, storage.ENV_ACCESS_KEY, storage.ENV_SECRET_KEY, storage.ENV_REGION]


def _endpoint_env(endpoint: str) -> dict[str, str]:
    from scratchbert import storage

    missing = [k for k in (storage.ENV_ACCESS_KEY, storage.ENV_SECRET_KEY) if not os.environ.get(k)]
    if missing:
        raise ScratchBertError(f"--endpoint {endpoint} needs credentials, but {' and '.join(missing)} is not set; export them or leave --endpoint out to use the embedded server")
    return {storage.ENV_ENDPOINT: endpoint, storage.ENV_ACCESS_KEY: os.environ[storage.ENV_ACCESS_KEY],
            storage.ENV_SECRET_KEY: os.environ[storage.ENV_SECRET_KEY]}


def _stage_input(value: str, name: str, run_id: str) -> str:
    """Upload a local file or folder to ``s3://scratchbert-inputs/<run>/<name>/``; pass URIs through."""
    from scratchbert import storage

    if _is_remote(value):
        return value
    path = Path(value)
    prefix = f"s3://{INPUT_BUCKET}/{run_id}/{name}"
    if path.is_dir():
        storage.upload_dir(path, prefix)
        return prefix
    with tempfile.TemporaryDirectory(prefix="scratchbert-stage-") as tmp:
        shutil.copy2(path, Path(tmp) / path.name)
        storage.upload_dir(tmp, prefix)
    return f"{prefix}/{path.name}"


def _write_synthetic(folder: Path, sources: dict) -> dict:
    """Generated corpus and SQuAD files for the inputs not given."""
    from scratchbert import synthetic

    made = {}
    if sources["corpus"] is None:
        made["corpus"] = str(synthetic.write_corpus(folder / "corpus.txt", SYNTHETIC_SIZES["documents"], seed=0))
    if sources["squad_train"] is None:
        made["squad_train"] = str(synthetic.write_squad(folder / "squad-train.json", SYNTHETIC_SIZES["squad_train_articles"], seed=1))
    if sources["squad_dev"] is None:
        made["squad_dev"] = str(synthetic.write_squad(folder / "squad-dev.json", SYNTHETIC_SIZES["squad_dev_articles"], seed=2))
    return made


def _checkout_path() -> Path:
    return Path(os.environ.get("SCRATCHBERT_CHECKOUT") or Path(__file__).resolve().parents[2])


def checkout_root() -> Path:
    """The source checkout holding ``pipelines/`` and ``components/`` (``SCRATCHBERT_CHECKOUT`` overrides)."""
    root = _checkout_path()
    if not (root / "pipelines" / "bert_pipeline.py").is_file() or not (root / "components").is_dir():
        raise ScratchBertError(f"no scratchbert checkout at {root} (pipelines/bert_pipeline.py and components/ are not there); "
                               "run from a clone installed with `pip install -e '.[pipeline]'` or set SCRATCHBERT_CHECKOUT")
    return root


def _load_pipeline_runner():
    """``pipelines.local_run.run_pipeline`` from the checkout (it imports kfp; this module does not)."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("kfp") is None:
        raise ScratchBertError("run-local needs the Kubeflow Pipelines SDK, which is not installed; pip install 'scratchbert[pipeline]'")
    root = str(checkout_root())
    if root not in sys.path:
        sys.path.insert(0, root)
    return importlib.import_module("pipelines.local_run").run_pipeline


# ------------------------------------------------------------------------------------ command line


def add_parser(sub) -> argparse.ArgumentParser:
    """Register ``run-local`` on a subparsers object (``scratchbert.cli`` EXTRA_COMMANDS)."""
    p = sub.add_parser(COMMAND, help="run the whole pipeline locally (kfp.local + embedded S3)",
                       description=DESCRIPTION)
    _add_arguments(p)
    p.set_defaults(_run=_run_from_args)
    return p


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--corpus", help="corpus: .txt file or folder, s3://... or hf://... (default: WikiText-2 from the Hub; offline, the first 11 MB of ../shared/data/enwiki/train.txt; generated with --synthetic)")
    p.add_argument("--valid-corpus", help="separate validation corpus (default: hold out 2%% of the corpus)")
    p.add_argument("--squad-train", help="SQuAD v1.1 training JSON, s3://... or hf://... (default: hf://rajpurkar/squad/train; offline, ../shared/data/squad/train-v1.1.json)")
    p.add_argument("--squad-dev", help="SQuAD v1.1 evaluation JSON, s3://... or hf://... (default: hf://rajpurkar/squad/validation; offline, ../shared/data/squad/dev-v1.1.json)")
    p.add_argument("--synthetic", action="store_true", help="generate the inputs not given; nano model, a few minutes of CPU")
    p.add_argument("--endpoint", help="use this S3 endpoint (credentials from AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY) instead of an embedded server")
    for name, (_, tp, text) in _OPTIONS.items():
        p.add_argument("--" + name.replace("_", "-"), type=tp, help=f"{text} (default: the run's default)")
    p.add_argument("--workdir", default="runs/local", help="folder of the runs (default: %(default)s)")
    p.add_argument("--keep-store", default="", help="data folder of the embedded S3 server, kept after the run (default: WORKDIR/s3-store)")
    p.add_argument("--temporary-store", action="store_true", help="use a throw-away S3 store instead (the published model is gone after the run)")


def _run_from_args(args) -> dict:
    names = ["corpus", "valid_corpus", "squad_train", "squad_dev"]
    options = {k: getattr(args, k) for k in _OPTIONS}
    summary = run_local(*(getattr(args, n) for n in names), synthetic=args.synthetic, endpoint=args.endpoint,
                        workdir=args.workdir, keep_store=None if args.temporary_store else args.keep_store,
                        **options)
    return {k: summary[k] for k in ("run_dir", "published_uri", "store", "total_seconds")}


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python pipelines/local_run.py``): parse, run, print; exit status 2 on bad input."""
    parser = argparse.ArgumentParser(prog=COMMAND, description=DESCRIPTION)
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        _run_from_args(args)
    except ScratchBertError as e:
        print(f"scratchbert {COMMAND}: error: {e}", file=sys.stderr)
        return 2
    return 0
