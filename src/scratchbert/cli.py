"""``scratchbert``: one command, a sub-command per stage.

Each stage sub-command is generated from the stage's config dataclass (field name ->
``--flag``, type, default, help and allowed values: :mod:`scratchbert.params`), so the command
line, the library and the Kubeflow components cannot disagree about a parameter. Commands
that live outside the library (``run-local``, ``submit``: the Kubeflow side) are found
through the ``scratchbert.commands`` entry points, so the library never imports them.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from scratchbert import params
from scratchbert.distributed import check_launch, is_main_process
from scratchbert.errors import ScratchBertError

log = logging.getLogger("scratchbert")

# sub-command -> (module, config class, stage function, one-line description)
STAGES = {
    "tokenizer": ("scratchbert.tokenizer", "TokenizerConfig", "train_tokenizer", "train a WordPiece tokenizer on a corpus"),
    "dataset": ("scratchbert.pretraining_data", "DatasetConfig", "build_dataset", "build masked-LM + next-sentence examples"),
    "dataset-merge": ("scratchbert.pretraining_data", "DatasetMergeConfig", "merge_datasets", "merge the parts of a dataset built with --corpus-parts"),
    "pretrain": ("scratchbert.pretrain", "PretrainConfig", "pretrain", "pretrain BERT from scratch"),
    "evaluate": ("scratchbert.evaluation", "EvalConfig", "evaluate_model", "MLM/NSP accuracy, perplexity, fill-mask report"),
    "qa-finetune": ("scratchbert.qa", "QAConfig", "finetune_qa", "fine-tune on SQuAD-style question answering (EM/F1)"),
    "qa-score": ("scratchbert.qa", "QAScoreConfig", "score_qa", "score a QA model on a SQuAD file (EM/F1), without training"),
}
# Config classes are plain dataclasses; importing their modules is cheap (torch is imported
# inside the stage functions), so --help stays fast.

COMMANDS_GROUP = "scratchbert.commands"  # entry points: name -> function(subparsers) adding the command


def stage_config_class(command: str):
    module, cls_name, _, _ = STAGES[command]
    return getattr(importlib.import_module(module), cls_name)


class OneLineParser(argparse.ArgumentParser):
    """argparse with its usage errors on one line: the usage of a stage runs to 30 lines,
    which buries the one that says what was wrong."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """Add one ``--flag`` per dataclass field; fields without a default become required."""
    for name, f in params.fields(cls).items():
        tp, optional = params.field_type(cls, name)
        flag = "--" + name.replace("_", "-")
        help_text = params.help_text(cls, name, with_choices=False).replace("%", "%%")  # argparse shows the choices
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=help_text)
            continue
        kwargs = {"type": params.int64 if tp is int else tp if tp in (float, str) else str, "help": help_text,
                  "metavar": name.upper()}
        if f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
            kwargs["metavar"] = "{" + ",".join(map(str, f.metadata["choices"])) + "}"
        if f.default is params.REQUIRED:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
        parser.add_argument(flag, **kwargs)


def config_from_args(cls, args: argparse.Namespace):
    return cls(**{name: getattr(args, name) for name in params.fields(cls)})


def add_verbosity_arguments(parser: argparse.ArgumentParser) -> None:
    """``-v/--verbose`` and ``-q/--quiet``, accepted before or after the sub-command."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="log debug messages and every library's info")
    group.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="only warnings and errors; no progress bars")


def _stage_parser(sub, name: str):
    description = STAGES[name][3]
    p = sub.add_parser(name, help=description, description=description[0].upper() + description[1:] + ".")
    add_dataclass_arguments(p, stage_config_class(name))
    add_verbosity_arguments(p)
    p.set_defaults(_stage=name)
    return p


def build_parser() -> argparse.ArgumentParser:
    from scratchbert import __version__

    parser = OneLineParser(prog="scratchbert", description="Train BERT from scratch: tokenizer -> dataset -> pretrain -> evaluate -> qa-finetune.")
    parser.add_argument("--version", action="version", version=f"scratchbert {__version__}")
    add_verbosity_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGES:
        _stage_parser(sub, name)
    _add_ask(sub)
    for add in plugin_commands().values():
        before = set(sub.choices)
        add(sub)
        for added in set(sub.choices) - before:
            add_verbosity_arguments(sub.choices[added])
    return parser


def plugin_commands() -> dict:
    """The commands registered under the ``scratchbert.commands`` entry points, by name.

    A command whose module cannot be imported (its package is not installed) is left out
    with a debug message, so the rest of the command line keeps working.
    """
    from importlib.metadata import entry_points

    found = {}
    for ep in sorted(entry_points(group=COMMANDS_GROUP), key=lambda e: e.name):
        try:
            found[ep.name] = ep.load()
        except ImportError as e:
            log.debug("command %s is not available: %s", ep.name, e)
    return found


def _add_ask(sub) -> None:
    p = sub.add_parser("ask", help="answer a question with a fine-tuned QA model",
                       description="Answer a question from a passage with a fine-tuned QA model.")
    p.add_argument("--model", required=True, help="QA model folder (from qa-finetune), the s3:// URI it was published under, "
                                                "or a Hub model (hf://owner/name)")
    p.add_argument("--question", required=True, help="the question")
    p.add_argument("--context", required=True, help="the passage that holds the answer, or @FILE to read it from a file")
    p.add_argument("--top-k", type=params.int64, default=1, help="how many different answers to return, best first (default: 1)")
    add_verbosity_arguments(p)
    p.set_defaults(_run=_run_ask)


def _run_ask(args) -> dict:
    from pathlib import Path

    from scratchbert.corpus import read_text
    from scratchbert.qa import answer

    # "@~/f.txt": the shell expands no ~ after an @, so the path is expanded here
    context = read_text(Path(args.context[1:]).expanduser(), what="context file") if args.context.startswith("@") else args.context
    return {"answers": answer(args.model, args.question, context, args.top_k)}


def setup_logging(verbose: bool = False, quiet: bool = False) -> None:
    """Log to stderr: INFO by default, DEBUG with ``verbose``, WARNING (and no progress bars)
    with ``quiet``. Set through environment variables before the libraries load, so that the
    dataset stage's worker processes and the pipeline's task processes follow too."""
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s" if verbose else "%(message)s")
    log.setLevel(level)
    # urllib3 logs each retry of a refused connection: lines before the one error that says it all
    logging.getLogger("urllib3").setLevel(logging.DEBUG if verbose else logging.ERROR)
    hf_level = "info" if verbose else "error" if quiet else "warning"
    os.environ["TRANSFORMERS_VERBOSITY"] = hf_level
    os.environ["DATASETS_VERBOSITY"] = hf_level
    if quiet:
        os.environ["TQDM_DISABLE"] = "1"
        os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # also transformers' own (loading weights)
    os.environ["SCRATCHBERT_VERBOSITY"] = "verbose" if verbose else "quiet" if quiet else "normal"


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # loads every stage's settings: a second on a busy machine
    except KeyboardInterrupt:
        print("scratchbert: interrupted", file=sys.stderr)
        return 130
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    setup_logging(getattr(args, "verbose", False), getattr(args, "quiet", False))
    try:
        check_launch(args.command, processes=args.command == "pretrain")
        if getattr(args, "_stage", None):
            module, cls_name, fn_name, _ = STAGES[args._stage]
            mod = importlib.import_module(module)
            result = getattr(mod, fn_name)(config_from_args(getattr(mod, cls_name), args))
        else:
            result = args._run(args)
    except ScratchBertError as e:
        print(f"scratchbert {args.command}: error: {_one_line(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"scratchbert {args.command}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # the file system or the network said no: not a bug of ours, but keep the details
        where = f" {e.filename}" if getattr(e, "filename", None) else ""
        reason = e.strerror or _one_line(str(e)) or type(e).__name__
        print(f"scratchbert {args.command}: error:{where} {reason} ({type(e).__name__}); "
              f"details in {write_crash_log(args.command, e)}", file=sys.stderr)
        return 2
    except Exception as e:  # a bug: one line for the user, the traceback in a file for the report
        refusal = _write_refused(e)
        if refusal:  # the file system said no, through a library's own exception: not a bug either
            print(f"scratchbert {args.command}: error: {refusal} ({type(e).__name__}); "
                  f"details in {write_crash_log(args.command, e)}", file=sys.stderr)
            return 2
        print(f"scratchbert {args.command}: internal error: {type(e).__name__}: {_one_line(str(e))}; "
              f"the traceback is in {write_crash_log(args.command, e)} (please report it)", file=sys.stderr)
        return 1
    if result is not None and is_main_process():  # under torchrun, rank 0 prints the job's result
        # answers and paths as written (Привет, 東京), unless the terminal cannot show them
        ascii_only = "utf" not in (getattr(sys.stdout, "encoding", None) or "").lower()
        print(json.dumps(result, indent=2, sort_keys=True, default=str, ensure_ascii=ascii_only))
    return 0


# The file system's refusals as the writers of weights and checkpoints report them: safetensors
# names the OS error in its SafetensorError; torch.save's RuntimeError says only that its stream
# stopped short of what it wrote ("unexpected pos"), or that a write failed.
_REFUSALS = ("No space left on device", "Disk quota exceeded", "File too large", "Read-only file system")
_TORCH_WRITE_FAILED = ("unexpected pos", "PytorchStreamWriter failed writing")


def _write_refused(e: Exception) -> str | None:
    """One line for an exception that is a write the file system refused (a full disk, a file
    size limit), or None for any other."""
    text = _one_line(str(e))
    if any(phrase in text for phrase in _REFUSALS):
        return text
    if "inline_container" in text and any(phrase in text for phrase in _TORCH_WRITE_FAILED):
        return (f"a file could not be written whole ({text.split('] ', 1)[-1].strip(' .')}): the disk is full or a "
                "file size limit was reached; free some space, or write to another disk")
    return None


def _one_line(text: str, limit: int = 500) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


LOG_DIR_ENV = "SCRATCHBERT_LOG_DIR"


def crash_log_dir() -> Path:
    """Where tracebacks of failed commands go: $SCRATCHBERT_LOG_DIR, else ~/.cache/scratchbert/logs."""
    if os.environ.get(LOG_DIR_ENV):
        return Path(os.environ[LOG_DIR_ENV])
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "scratchbert" / "logs"


def write_crash_log(command: str, exc: BaseException) -> Path:
    """Write the traceback of ``exc`` with the command line to a new log file and return its path."""
    import tempfile
    import traceback
    from datetime import datetime

    from scratchbert import __version__

    stamp = datetime.now().strftime("%Y%m%dT%H%M%S")
    text = (f"scratchbert {__version__}, python {sys.version.split()[0]}\ncommand: {' '.join(sys.argv)}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    for folder in (crash_log_dir(), Path(tempfile.gettempdir())):
        path = folder / f"scratchbert-{command}-{stamp}-{os.getpid()}.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, errors="backslashreplace")  # a command line's bytes that were not UTF-8
            return path
        except OSError:
            continue
    return Path("(no writable log folder)")


if __name__ == "__main__":
    sys.exit(main())
