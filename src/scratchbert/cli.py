"""``scratchbert``: one command, a sub-command per stage.

Each stage sub-command is generated from the stage's config dataclass (field name ->
``--flag``, its ``help`` metadata -> help text, its default -> default), so the command
line, the library and the Kubeflow components cannot disagree about a parameter.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json
import sys
import types
import typing

from scratchbert.errors import ScratchBertError

# sub-command -> (module, config class, stage function, one-line description)
STAGES = {
    "tokenizer": ("scratchbert.tokenizer", "TokenizerConfig", "train_tokenizer", "train a WordPiece tokenizer on a corpus"),
    "dataset": ("scratchbert.pretraining_data", "DatasetConfig", "build_dataset", "build masked-LM + next-sentence examples"),
    "pretrain": ("scratchbert.pretrain", "PretrainConfig", "pretrain", "pretrain BERT from scratch"),
    "evaluate": ("scratchbert.evaluation", "EvalConfig", "evaluate_model", "MLM/NSP accuracy, perplexity, fill-mask report"),
    "qa-finetune": ("scratchbert.qa", "QAConfig", "finetune_qa", "fine-tune on SQuAD-style question answering (EM/F1)"),
}

# Config classes are plain dataclasses; importing their modules is cheap (torch is imported
# inside the stage functions), so --help stays fast.


def _unwrap_optional(tp):
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls) -> None:
    """Add one ``--flag`` per dataclass field; fields without a default become required."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp, optional = _unwrap_optional(hints[f.name])
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if tp is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=None if optional else f.default, help=help_text)
            continue
        kwargs = {"type": tp if tp in (int, float, str) else str, "help": help_text}
        if required:
            kwargs["required"] = True
        else:
            kwargs["default"] = f.default
            kwargs["help"] = f"{help_text} (default: {f.default})"
        parser.add_argument(flag, **kwargs)


def config_from_args(cls, args: argparse.Namespace):
    return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})


def _stage_parser(sub, name: str):
    module, cls_name, _, description = STAGES[name]
    cls = getattr(importlib.import_module(module), cls_name)
    p = sub.add_parser(name, help=description, description=description)
    add_dataclass_arguments(p, cls)
    p.set_defaults(_stage=name)
    return p


def build_parser() -> argparse.ArgumentParser:
    from scratchbert import __version__

    parser = argparse.ArgumentParser(prog="scratchbert", description="Train BERT from scratch: tokenizer -> dataset -> pretrain -> evaluate -> qa-finetune.")
    parser.add_argument("--version", action="version", version=f"scratchbert {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in STAGES:
        _stage_parser(sub, name)
    for name, (module, attr) in EXTRA_COMMANDS.items():
        getattr(importlib.import_module(module), attr)(sub)
    return parser


# Commands that are not library stages register themselves through a function that adds a
# sub-parser and sets ``_run`` (a callable taking the parsed args). They live beside the
# code they drive; modules that are not installed are skipped.
EXTRA_COMMANDS = {
    "run-local": ("scratchbert.local_run", "add_parser"),
    "submit": ("scratchbert.cli", "_add_submit"),
    "ask": ("scratchbert.cli", "_add_ask"),
}


def _add_submit(sub) -> None:
    """``scratchbert submit`` lives with the pipeline in the checkout (``pipelines/submit.py``)."""
    from scratchbert.local_run import checkout_root

    try:
        root = str(checkout_root())
    except ScratchBertError:
        return  # an installed library without the checkout: no pipeline to submit
    if root not in sys.path:
        sys.path.insert(0, root)
    importlib.import_module("pipelines.submit").add_parser(sub)


def _add_ask(sub) -> None:
    p = sub.add_parser("ask", help="answer a question with a fine-tuned QA model")
    p.add_argument("--model", required=True, help="QA model folder (from qa-finetune) or s3:// published URI")
    p.add_argument("--question", required=True)
    p.add_argument("--context", required=True, help="the passage that holds the answer (or @file to read it)")
    p.set_defaults(_run=_run_ask)


def _run_ask(args) -> dict:
    import tempfile

    from scratchbert.qa import answer

    context = open(args.context[1:]).read() if args.context.startswith("@") else args.context
    if args.model.startswith("s3://"):
        from scratchbert import storage

        with tempfile.TemporaryDirectory() as tmp:
            return {"answers": answer(str(storage.fetch_published(args.model, tmp)), args.question, context)}
    return {"answers": answer(args.model, args.question, context)}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        if getattr(args, "_stage", None):
            module, cls_name, fn_name, _ = STAGES[args._stage]
            mod = importlib.import_module(module)
            result = getattr(mod, fn_name)(config_from_args(getattr(mod, cls_name), args))
        else:
            result = args._run(args)
    except ScratchBertError as e:
        print(f"scratchbert {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"scratchbert {args.command}: interrupted", file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, indent=2, sort_keys=True, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
