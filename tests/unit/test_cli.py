"""scratchbert.cli: generated sub-commands, one-line errors, and the stages chained end to end."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from scratchbert import cli, synthetic


def _run(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**(os.environ if env is None else env), "SCRATCHBERT_TENSORBOARD": "0"}
    return subprocess.run(list(args), capture_output=True, text=True, env=env, timeout=300, **kw)


def test_scratchbert_help_and_version_from_the_installed_command():
    bin_dir = Path(sys.executable).parent
    exe = str(bin_dir / "scratchbert") if (bin_dir / "scratchbert").exists() else "scratchbert"
    done = _run(exe, "--help")
    assert done.returncode == 0, done.stderr
    for stage in cli.STAGES:
        assert stage in done.stdout
    version = _run(exe, "--version")
    assert version.returncode == 0 and version.stdout.startswith("scratchbert ")


@pytest.mark.parametrize("command", [*cli.STAGES, "ask", "run-local", "submit"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    help_text = capsys.readouterr().out
    assert help_text.startswith(f"usage: scratchbert {command}")
    if command in cli.STAGES:
        module, cls_name, _, _ = cli.STAGES[command]
        cls = getattr(importlib.import_module(module), cls_name)
        for f in dataclasses.fields(cls):  # one flag per config field: the CLI cannot drift from the library
            assert "--" + f.name.replace("_", "-") in help_text


def test_help_shows_allowed_values_and_each_default_once(capsys):
    with pytest.raises(SystemExit):
        cli.main(["pretrain", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    text = text[text.index("options:"):]  # the option list, past the usage line
    assert "--preset {nano,tiny,tiny4,mini,small,medium,base}" in text
    assert "--precision {auto,bf16,fp16,fp32}" in text and "--attention {auto,eager,sdpa}" in text
    # one "Default:" per option that has one, never two
    learning_rate = text[text.index("--learning-rate LEARNING_RATE"):text.index("--warmup-fraction WARMUP_FRACTION", text.index("--learning-rate LEARNING_RATE"))]
    assert learning_rate.count("Default:") == 1 and "Default: 0.0." in learning_rate
    assert text.count("(default:") == 0


def test_a_command_whose_package_is_missing_is_left_out(monkeypatch):
    """An entry point that cannot be imported (its package not installed) leaves the rest working."""
    from importlib import metadata

    real = metadata.entry_points
    broken = metadata.EntryPoint("from-nowhere", "no_such_package.module:add_parser", cli.COMMANDS_GROUP)

    def entry_points(**kw):
        found = real(**kw)
        return metadata.EntryPoints([*found, broken]) if kw.get("group") == cli.COMMANDS_GROUP else found

    monkeypatch.setattr(metadata, "entry_points", entry_points)
    commands = cli.plugin_commands()
    assert "from-nowhere" not in commands and {"run-local", "submit"} <= set(commands)
    parser = cli.build_parser()
    assert parser.parse_args(["tokenizer", "--corpus", "c", "--out", "o"]).command == "tokenizer"


def test_verbosity_flags_set_the_log_level(monkeypatch):
    import logging

    for name in ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY", "TQDM_DISABLE", "HF_DATASETS_DISABLE_PROGRESS_BARS",
                 "HF_HUB_DISABLE_PROGRESS_BARS", "SCRATCHBERT_VERBOSITY"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    monkeypatch.setattr(logging.getLogger("scratchbert"), "level", logging.NOTSET)
    for flags, level in (([], logging.INFO), (["-v"], logging.DEBUG), (["--quiet"], logging.WARNING)):
        parser = cli.build_parser()
        args = parser.parse_args(["ask", "--model", "m", "--question", "q", "--context", "c", *flags])
        monkeypatch.setattr(logging.root, "handlers", [])
        cli.setup_logging(getattr(args, "verbose", False), getattr(args, "quiet", False))
        assert logging.getLogger("scratchbert").level == level
    assert os.environ["TQDM_DISABLE"] == "1"  # the last one, --quiet, turns progress bars off


def test_quiet_stages_print_the_result_and_nothing_on_stderr(synthetic_corpus, trained_tokenizer, built_dataset,
                                                            tmp_path):
    """`-q`: no progress bars (the stages' own, the Trainer's, transformers' weight loading) and no
    log lines; the result still comes on stdout."""
    exe = str(Path(sys.executable).parent / "scratchbert")
    done = _run(exe, "dataset", "--corpus", str(synthetic_corpus), "--tokenizer", str(trained_tokenizer),
                "--max-seq-len", "64", "--num-proc", "1", "--out", str(tmp_path / "d"), "-q")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and json.loads(done.stdout)["train_examples"] > 0
    done = _run(exe, "pretrain", "--dataset", str(built_dataset), "--preset", "nano", "--max-steps", "3",
                "--eval-steps", "0", "--num-workers", "0", "--out", str(tmp_path / "m"), "-q")
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and json.loads(done.stdout)["steps"] == 3


def test_no_command_prints_help_and_exits_2(capsys):
    assert cli.main([]) == 2
    assert "usage: scratchbert" in capsys.readouterr().out


def test_flags_become_typed_config_values():
    from scratchbert.pretrain import PretrainConfig
    from scratchbert.tokenizer import TokenizerConfig

    parser = cli.build_parser()
    args = parser.parse_args(["tokenizer", "--corpus", "c.txt", "--out", "o", "--no-lowercase", "--vocab-size", "500"])
    cfg = cli.config_from_args(TokenizerConfig, args)
    assert (cfg.corpus, cfg.out, cfg.lowercase, cfg.vocab_size, cfg.strip_accents, cfg.max_corpus_bytes) == (
        "c.txt", "o", False, 500, None, 0)
    args = parser.parse_args(["pretrain", "--dataset", "d", "--out", "o", "--time-budget-minutes", "0.5",
                              "--keep-checkpoints", "--learning-rate", "2e-3"])
    cfg = cli.config_from_args(PretrainConfig, args)
    assert cfg.time_budget_minutes == 0.5 and cfg.keep_checkpoints is True and cfg.learning_rate == 0.002
    assert cfg.preset == PretrainConfig.__dataclass_fields__["preset"].default
    with pytest.raises(SystemExit):
        parser.parse_args(["tokenizer", "--corpus", "c.txt", "--out", "o", "--vocab-size", "many"])


@pytest.fixture
def one_document(tmp_path):
    path = tmp_path / "one-doc.txt"
    path.write_text("A single document. It has two sentences.\n")
    return path


# Bad input as a new user types it: each case exits 2 with one line on stderr (no traceback),
# prints nothing on stdout, creates no output and leaves every input as it was.
BAD_INPUT = [
    ("tokenizer", ["--corpus", "{tmp}/missing.txt", "--out", "{tmp}/out"], "does not exist"),
    ("tokenizer", ["--corpus", "{corpus}", "--out", "{corpus}"], "is the input"),
    ("tokenizer", ["--corpus", "{tmp}", "--out", "{tmp}/out"], "is inside the input"),
    ("tokenizer", ["--corpus", "{corpus}", "--out", "{notes}"], "not written by scratchbert"),
    ("tokenizer", ["--corpus", "{corpus}", "--out", "/proc/scratchbert-tok"], "no folder can be created in /proc"),
    ("tokenizer", ["--corpus", "{corpus}", "--out", "{notes}/mine.txt/tok"], "is a file, not a folder"),
    ("tokenizer", ["--corpus", "{corpus}", "--out", "{tmp}/out", "--vocab-size", "10"], "--vocab-size 10 is too small"),
    ("tokenizer", ["--corpus", "{corpus}", "--out", "{tmp}/out", "--vocab-size", "99999999999999999999"],
     "argument --vocab-size: 99999999999999999999 is out of range"),
    ("tokenizer", ["--corpus", "{binary}", "--out", "{tmp}/out"], "looks binary"),
    ("tokenizer", ["--corpus", "{latin1}", "--out", "{tmp}/out"], "is not UTF-8 text"),
    ("tokenizer", ["--corpus", "ftp://host/corpus.txt", "--out", "{tmp}/out"], "scheme scratchbert does not read"),
    ("dataset", ["--corpus", "{one_doc}", "--tokenizer", "{tok}", "--out", "{tmp}/out"], "has 1 document"),
    ("dataset", ["--corpus", "{corpus}", "--tokenizer", "{tok}", "--out", "{tmp}/out", "--max-seq-len", "100000"],
     "--max-seq-len 100000 must lie between"),
    ("dataset", ["--corpus", "{corpus}", "--tokenizer", "{tok}", "--out", "{tmp}/out", "--num-proc", "-1"],
     "--num-proc -1 must not be negative"),
    ("dataset", ["--corpus", "{corpus}", "--tokenizer", "{tok}", "--out", "{tmp}/out", "--validation-fraction", "1.5"],
     "--validation-fraction 1.5 must lie in"),
    ("dataset", ["--corpus", "{corpus}", "--tokenizer", "{tok}", "--out", "{tok}"], "is the input"),
    ("pretrain", ["--dataset", "{tmp}/no-data", "--out", "{tmp}/out"], "is not a scratchbert dataset"),
    ("pretrain", ["--dataset", "{tmp}/d", "--out", "{tmp}/out", "--max-steps", "0"], "--max-steps 0 trains nothing"),
    ("pretrain", ["--dataset", "{tmp}/d", "--out", "{tmp}/out", "--time-budget-minutes", "-5"],
     "--time-budget-minutes -5.0 must be"),
    ("pretrain", ["--dataset", "{tmp}/d", "--out", "{tmp}/out", "--num-hidden-layers", "0"],
     "--num-hidden-layers 0 must be a positive number"),
    ("pretrain", ["--dataset", "{tmp}/d", "--out", "{tmp}/out", "--preset", "huge"], "invalid choice: 'huge'"),
    ("pretrain", ["--dataset", "{tmp}/d", "--out", "{tmp}/out", "--max-steps", "abc"], "invalid int value: 'abc'"),
    ("pretrain", ["--dataset", "{tmp}/d", "--out", "{tmp}/out", "--logs", "{tmp}/out"], "overlap"),
    ("evaluate", ["--model", "{tmp}/no-model", "--dataset", "{tmp}/d", "--out", "{tmp}/out"], "is not a model folder"),
    ("evaluate", ["--model", "{tmp}/m", "--dataset", "{tmp}/d", "--out", "{tmp}/out", "--batch-size", "0"],
     "--batch-size 0 must be at least 1"),
    ("evaluate", ["--model", "{tmp}/m", "--dataset", "{tmp}/d", "--out", "{tmp}/m"], "is the input"),
    ("qa-finetune", ["--model", "{tmp}/m", "--squad-train", "{tmp}/t.json", "--squad-dev", "{tmp}/d.json", "--out", "{tmp}/out",
                     "--max-steps", "0"], "--max-steps 0 must be positive"),
    ("ask", ["--model", "{tmp}/m", "--question", "Who?", "--context", "@{tmp}/missing.txt"], "context file"),
    ("ask", ["--model", "{tmp}/m", "--question", "Who?", "--context", "@{latin1}"], "is not UTF-8 text"),
    ("ask", ["--model", "{tmp}/m", "--question", "Who?", "--context", "@{tmp}"], "is a folder"),
    ("ask", ["--model", "{tmp}/no-model", "--question", "Who?", "--context", "Ada did."], "does not exist; pass the folder written by qa-finetune"),
    ("ask", ["--model", "{tmp}/no-model", "--question", "  ", "--context", "Ada did."], "the question (--question) is empty"),
    # checked before the model is fetched: here a fetch would fail first (the tests set no S3 endpoint)
    ("ask", ["--model", "s3://models/scratchbert-qa", "--question", "  ", "--context", "Ada did."],
     "the question (--question) is empty"),
    ("ask", ["--model", "{tmp}/no-model", "--question", "Who?", "--context", "@{empty}"], "the context (--context) is empty"),
    ("ask", ["--model", "{tmp}/no-model", "--question", "Who?", "--context", "Ada did.", "--top-k", "0"],
     "--top-k 0 must be at least 1"),
    # the stages read and write folders on this machine: an address was a local folder "s3:/..."
    ("tokenizer", ["--corpus", "{corpus}", "--out", "s3://corp/tok", "--vocab-size", "100"],
     "--out s3://corp/tok is an address, but --out takes a folder on this machine"),
    ("dataset", ["--corpus", "{corpus}", "--tokenizer", "s3://corp/tok", "--out", "{tmp}/out"],
     "--tokenizer s3://corp/tok is an address"),
    ("pretrain", ["--dataset", "s3://corp/ds", "--out", "{tmp}/out"], "--dataset s3://corp/ds is an address"),
    ("evaluate", ["--model", "hf://google/bert", "--dataset", "{tmp}/d", "--out", "{tmp}/out"], "--model hf://google/bert is an address"),
    ("qa-score", ["--model", "{tmp}/m", "--squad-dev", "{tmp}/d.json", "--out", "s3://corp/score"], "--out s3://corp/score is an address"),
    ("nonsense", [], "invalid choice: 'nonsense'"),
]


@pytest.fixture
def bad_input_files(tmp_path, one_document):
    corpus = synthetic.write_corpus(tmp_path / "corpus.txt", 30, seed=3)
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "mine.txt").write_text("a user's notes")
    (tmp_path / "binary.txt").write_bytes(b"text\x00\x01\x02 more")
    (tmp_path / "latin1.txt").write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    (tmp_path / "empty.txt").write_text("\n\n")
    return {"corpus": corpus, "notes": tmp_path / "notes", "binary": tmp_path / "binary.txt",
            "latin1": tmp_path / "latin1.txt", "empty": tmp_path / "empty.txt", "one_doc": one_document}


def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() if p.is_file() else None for p in sorted(root.rglob("*"))}


@pytest.mark.parametrize("command, args, words", BAD_INPUT, ids=[f"{c}-{w[:40]}" for c, _, w in BAD_INPUT])
def test_bad_input_exits_2_with_one_line_and_no_traceback(command, args, words, tmp_path, bad_input_files,
                                                          trained_tokenizer):
    tok = tmp_path / "tok"
    shutil.copytree(trained_tokenizer, tok)
    args = [a.format(tmp=tmp_path, tok=tok, **bad_input_files) for a in args]
    before = _tree(tmp_path)
    # progress bars off: a stage that fails mid-stream (one document) has drawn its bar by then,
    # and whether an earlier in-process test left TQDM_DISABLE set must not decide this test
    env = {**os.environ, "TQDM_DISABLE": "1"}
    done = _run(sys.executable, "-m", "scratchbert.cli", *([command] if command != "nonsense" else ["nonsense"]), *args,
                env=env)
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    prefix = f"scratchbert {command}: error: " if command != "nonsense" else "scratchbert: error: "
    assert lines[0].startswith(prefix) and words in lines[0], lines[0]
    assert "Traceback" not in done.stderr and done.stdout == ""
    assert _tree(tmp_path) == before  # no output, no temporary folder, every input as it was


def test_every_integer_option_refuses_a_value_beyond_64_bits(capsys):
    """Beyond the signed 64-bit range an integer ended in an internal OverflowError inside a stage
    (numpy, torch, the tokenizers library); every command refuses it as it parses, in one line."""
    import argparse

    from scratchbert import params

    parser = cli.build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    checked = []
    for command, command_parser in sub.choices.items():
        for action in command_parser._actions:
            if action.type not in (int, params.int64):
                continue
            flag = action.option_strings[-1]
            assert action.type(str(2**63 - 1)) == 2**63 - 1 and action.type(str(-2**63)) == -2**63
            for value in (str(2**63), str(-2**63 - 1)):
                with pytest.raises(SystemExit) as e:
                    parser.parse_args([command, flag, value])
                err = capsys.readouterr().err
                assert e.value.code == 2 and err.count("\n") == 1, err
                assert err.startswith(f"scratchbert {command}: error: argument {flag}: {value} is out of range"), err
            checked.append((command, flag))
    assert {("tokenizer", "--vocab-size"), ("tokenizer", "--min-frequency"), ("pretrain", "--max-steps"),
            ("ask", "--top-k")} <= set(checked)
    assert {command for command, _ in checked} >= {*cli.STAGES, "ask", "run-local"} - {"dataset-merge"}  # it has none


def test_an_internal_error_is_one_line_naming_a_log_with_the_traceback(monkeypatch, tmp_path, capsys):
    """A bug (any exception that is not a ScratchBertError) exits 1 with one line; the traceback
    goes to a log file that the line names. A refusal of the file system exits 2, also named."""
    import scratchbert.tokenizer

    monkeypatch.setenv("SCRATCHBERT_LOG_DIR", str(tmp_path / "logs"))

    def bug(cfg):
        raise RuntimeError("the sky fell\nin two lines")

    monkeypatch.setattr(scratchbert.tokenizer, "train_tokenizer", bug)
    assert cli.main(["tokenizer", "--corpus", "c.txt", "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: the sky fell in two lines" in err
    (log,) = (tmp_path / "logs").glob("scratchbert-tokenizer-*.log")
    assert str(log) in err and "Traceback" in log.read_text() and "in bug" in log.read_text()

    def full_disk(cfg):
        raise OSError(28, "No space left on device", str(tmp_path / "o"))

    monkeypatch.setattr(scratchbert.tokenizer, "train_tokenizer", full_disk)
    assert cli.main(["tokenizer", "--corpus", "c.txt", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'o'} No space left on device" in err and "details in" in err


def test_a_crash_log_keeps_a_command_line_that_is_not_utf8(monkeypatch, tmp_path, capsys):
    """A byte that is not UTF-8 on the command line (Python keeps it as \\udce9: a Latin-1 terminal)
    made the crash log's own writing fail: a second traceback instead of the one line and no log."""
    import scratchbert.tokenizer

    monkeypatch.setenv("SCRATCHBERT_LOG_DIR", str(tmp_path / "logs"))
    argv = ["tokenizer", "--corpus", "caf\udce9.txt", "--out", str(tmp_path / "o")]
    monkeypatch.setattr(sys, "argv", ["scratchbert", *argv])

    def bug(cfg):
        raise RuntimeError("the sky fell")

    monkeypatch.setattr(scratchbert.tokenizer, "train_tokenizer", bug)
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: RuntimeError: the sky fell" in err
    (log,) = (tmp_path / "logs").glob("scratchbert-tokenizer-*.log")
    assert "--corpus caf\\udce9.txt" in log.read_text() and "Traceback" in log.read_text()


@pytest.mark.parametrize("writer", ["torch.save", "safetensors"])
def test_a_write_the_file_system_refuses_inside_a_library_is_not_a_bug(monkeypatch, tmp_path, capsys, writer):
    """A full disk (here a file size limit) while torch.save writes a checkpoint or safetensors a
    model: their own exceptions (RuntimeError "unexpected pos", SafetensorError) were reported as
    internal errors (exit 1, "please report it"); now they are the file system's refusal, exit 2."""
    import resource

    import torch
    from safetensors.torch import save_file

    import scratchbert.tokenizer

    monkeypatch.setenv("SCRATCHBERT_LOG_DIR", str(tmp_path / "logs"))

    def write(cfg):
        weights = {"w": torch.zeros(200_000)}
        if writer == "torch.save":
            torch.save(weights, tmp_path / "optimizer.pt")
        else:
            save_file(weights, tmp_path / "model.safetensors")

    monkeypatch.setattr(scratchbert.tokenizer, "train_tokenizer", write)
    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, limits[1]))  # Python ignores SIGXFSZ: writes fail with EFBIG
    try:
        code = cli.main(["tokenizer", "--corpus", "c.txt", "--out", str(tmp_path / "o")])
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, limits)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "internal error" not in err, err
    assert ("the disk is full" if writer == "torch.save" else "File too large") in err and "details in" in err


def test_ctrl_c_while_the_command_line_is_read_is_one_line():
    """Ctrl-C in the first moments of a command, while the stages' settings load to build its
    options, printed a traceback through build_parser; now it is one line, exit 130, as later."""
    code = ("import sys\n"
            "from scratchbert import cli\n"
            "def interrupted():\n"
            "    raise KeyboardInterrupt\n"
            "cli.build_parser = interrupted\n"
            "sys.exit(cli.main(['pretrain', '--dataset', 'd', '--out', 'o']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130 and done.stderr == "scratchbert: interrupted\n", done.stderr


def test_utf16_context_file_is_read(tmp_path, capsys, monkeypatch):
    """`ask --context @file` reads the file as the corpus reader does (UTF-16 with a BOM included), ~ too."""
    import scratchbert.qa

    seen = {}
    monkeypatch.setattr(scratchbert.qa, "answer", lambda model, q, context, k: seen.setdefault("context", context) and [])
    (tmp_path / "ctx.txt").write_bytes("Ada founded the town in 1820.\n".encode("utf-16"))
    assert cli.main(["ask", "--model", str(tmp_path), "--question", "Who?", "--context", f"@{tmp_path / 'ctx.txt'}"]) == 0
    assert seen["context"] == "Ada founded the town in 1820.\n"
    monkeypatch.setenv("HOME", str(tmp_path))  # "@~/ctx.txt": the shell leaves a ~ after an @ to us
    seen.clear()
    assert cli.main(["ask", "--model", str(tmp_path), "--question", "Who?", "--context", "@~/ctx.txt"]) == 0
    assert seen["context"] == "Ada founded the town in 1820.\n"


def test_answers_print_as_written_where_the_terminal_takes_utf8(tmp_path, capsys, monkeypatch):
    """A CJK answer printed as \\u6771\\u4eac cannot be read; one that the terminal cannot show is escaped."""
    import io

    import scratchbert.qa

    monkeypatch.setattr(scratchbert.qa, "answer", lambda model, q, context, k: [{"text": "東京", "score": 0.9}])
    args = ["ask", "--model", str(tmp_path), "--question", "首都は？", "--context", "日本の首都は東京です。"]
    assert cli.main(args) == 0
    assert '"text": "東京"' in capsys.readouterr().out
    ascii_out = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
    monkeypatch.setattr("sys.stdout", ascii_out)
    assert cli.main(args) == 0
    ascii_out.seek(0)
    assert '"text": "\\u6771\\u4eac"' in ascii_out.read()


def test_stages_chained_through_main_write_the_documented_metrics(tmp_path, capsys):
    corpus = synthetic.write_corpus(tmp_path / "corpus.txt", 200, seed=5)
    tok, data, model, ev = (str(tmp_path / n) for n in ("tok", "data", "model", "eval"))

    assert cli.main(["tokenizer", "--corpus", str(corpus), "--out", tok, "--vocab-size", "800"]) == 0
    assert cli.main(["dataset", "--corpus", str(corpus), "--tokenizer", tok, "--out", data, "--max-seq-len", "64",
                     "--validation-fraction", "0.1", "--num-proc", "1"]) == 0
    assert cli.main(["pretrain", "--dataset", data, "--out", model, "--preset", "nano", "--max-steps", "6",
                     "--batch-size", "8", "--eval-steps", "0", "--num-workers", "0", "--logging-steps", "2"]) == 0
    capsys.readouterr()
    assert cli.main(["evaluate", "--model", model, "--dataset", data, "--out", ev, "--max-examples", "32"]) == 0
    printed = json.loads(capsys.readouterr().out)

    def metrics(folder):
        return json.loads((Path(folder) / "metrics.json").read_text())

    # the keys the README's stage table promises
    assert {"vocab_size", "unk_rate", "tokens_per_word"} <= metrics(tok).keys()
    assert metrics(tok)["vocab_size"] == 800
    assert {f"{s}_{k}" for s in ("train", "validation") for k in ("examples", "tokens", "random_next_fraction")} \
        <= metrics(data).keys()
    assert {"train_loss", "steps", "tokens_per_second", "val_mlm_accuracy", "val_nsp_accuracy"} <= metrics(model + "-logs").keys()
    assert metrics(model + "-logs")["steps"] == 6
    assert {"mlm_accuracy", "nsp_accuracy", "perplexity"} <= metrics(ev).keys()
    assert printed == metrics(ev) and metrics(ev)["examples"] == 32
    assert (Path(ev) / "report.md").is_file()
    # the model folder is a standard Hugging Face folder with its tokenizer
    from transformers import AutoTokenizer, BertForMaskedLM

    assert len(AutoTokenizer.from_pretrained(model)) == 800
    assert BertForMaskedLM.from_pretrained(model).config.vocab_size == 800
    from huggingface_hub import ModelCard

    card = ModelCard.load(Path(model) / "README.md")
    assert card.data.pipeline_tag == "fill-mask" and str(corpus) in card.text


def test_a_launch_a_command_cannot_run_as_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    """A stray LOCAL_RANK (the Trainer took it for a process group and failed with an internal
    error), and a one-process command under torchrun (each rank wrote the same output folder)."""
    from scratchbert import distributed

    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LOCAL_RANK", "0")
    out = tmp_path / "model"
    assert cli.main(["pretrain", "--dataset", str(tmp_path), "--out", str(out)]) == 2
    assert "LOCAL_RANK is set but RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT not: run under torchrun" in capsys.readouterr().err
    # a job of one process is rank 0 whatever RANK says: it checks and writes its output as one
    monkeypatch.delenv("LOCAL_RANK")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.world() == (0, 0, 1) and distributed.is_main_process()
    # all of torchrun's variables, two processes: pretrain goes on (to its own check of the
    # dataset), the one-process commands stop
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    distributed.check_launch("pretrain", processes=True)
    for command in (["qa-finetune", "--model", "m", "--squad-train", "t", "--squad-dev", "d", "--out", str(out)],
                    ["evaluate", "--model", "m", "--dataset", "d", "--out", str(out)]):
        assert cli.main(command) == 2
        assert f"{command[0]} runs in one process, not under torchrun (2 processes)" in capsys.readouterr().err
    assert not out.exists()
