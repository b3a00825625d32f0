"""SQuAD v1.1 extractive question answering: load, validate, featurise, fine-tune, answer, score.

The flow follows Hugging Face ``examples/pytorch/question-answering/run_qa.py`` and
``utils_qa.py`` (the reference way to do this), written as library functions:

1. :func:`load_squad` reads SQuAD v1.1 from a local JSON file, ``s3://`` or ``hf://`` and
   flattens it to the ``datasets`` layout of ``rajpurkar/squad`` (id, title, context,
   question, answers{text, answer_start}), checking every answer against its context.
2. :func:`prepare_train_features` / :func:`prepare_eval_features` cut each (question,
   context) pair into windows of ``max_seq_len`` tokens that overlap by ``doc_stride``
   tokens, and label the answer span (or the [CLS] token when a window misses the answer).
3. :func:`finetune_qa` fine-tunes ``BertForQuestionAnswering`` with the HF ``Trainer``,
   predicts start/end logits on the eval windows, turns them into answers with
   :func:`postprocess_predictions` and scores them with the SQuAD v1.1 metric.
4. :func:`answer` answers one question about one context with a saved model.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import re
import tempfile
import time
import unicodedata
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from scratchbert import progress, starting_model
from scratchbert.allocator import keep_freed_memory
from scratchbert.errors import ScratchBertError, cause
from scratchbert.metrics import squad_metric
from scratchbert.modeling import ATTENTIONS
from scratchbert.outputs import atomic_output_dir, check_distinct, check_output, is_remote, sibling, write_json
from scratchbert.params import SEED_LIMIT, check, check_choices, check_source, finite, param
from scratchbert.schedule import Budget
from scratchbert.tokenizer import casing_of, fingerprint

if TYPE_CHECKING:
    import datasets
    from transformers import PreTrainedTokenizerFast

log = logging.getLogger(__name__)

STAGE = "qa-finetune"
HF_PREFIX = "hf://"
S3_PREFIX = "s3://"
# The columns (and their types) of the Hub's rajpurkar/squad, which every source is turned into.
SQUAD_COLUMNS = ("id", "title", "context", "question", "answers")


# The window rule, used by fine-tuning, scoring and answer(): BERT's 384-token windows (or the
# model's positions, if fewer) that overlap by a third of their length (BERT's 128 of 384).
DEFAULT_WINDOW = 384


# The peak learning rate by the model's width (hidden size), where --learning-rate is 0: the
# widest entry not narrower than the model; wider models get WIDE_LEARNING_RATE. 128 (tiny, tiny4):
# 2e-3, measured best at batch 128 (docs/performance.md, "QA settings at batch 128"); 256 (mini):
# 1e-3, F1 29.1 against 2e-3's 25.0 on one pretrained model ("mini at two hours"); 512 (medium,
# the GPU recipe's): 5e-4, the rate it was chosen with; BERT-base and wider: 5e-5, the top of the
# BERT paper's range for SQuAD (run-local gave every model the CPU recipe's 2e-3 before, 40 times that).
LEARNING_RATE_BY_WIDTH = ((128, 2e-3), (256, 1e-3), (512, 5e-4))
WIDE_LEARNING_RATE = 5e-5


def learning_rate_for(hidden_size: int) -> float:
    """The peak learning rate QA fine-tuning gives a model ``hidden_size`` wide (:data:`LEARNING_RATE_BY_WIDTH`)."""
    return next((rate for width, rate in LEARNING_RATE_BY_WIDTH if hidden_size <= width), WIDE_LEARNING_RATE)


def window_settings(max_seq_len: int, doc_stride: int, model_positions: int,
                    trained: tuple[int, int] | None = None) -> tuple[int, int]:
    """The (window length, overlap) to use: 0 picks the windows a QA model was fine-tuned with
    (``trained``, recorded in its config as ``qa_window``), else ``min(384, model_positions)`` and
    a third of the window; given values are kept (and checked where they are used)."""
    if trained and not max_seq_len:
        max_seq_len, doc_stride = trained[0], doc_stride or trained[1]
    length = max_seq_len or min(DEFAULT_WINDOW, model_positions)
    return length, doc_stride or max(1, length // 3)


def _trained_window(config) -> tuple[int, int] | None:
    window = getattr(config, "qa_window", None)
    return tuple(window) if window else None


# Post-processing, the same in fine-tuning's scoring, qa-score and answer(): spans of at most
# MAX_ANSWER_LEN tokens built from the N_BEST best starts and ends of each window. 15, as in
# transformers' question-answering pipeline, rather than run_qa.py's 30: small models' ends
# drift long (docs/performance.md, "Shorter answers").
MAX_ANSWER_LEN = 15
N_BEST = 20


def _max_answer_len_param():
    return param(MAX_ANSWER_LEN, help="Longest answer, in tokens, that post-processing may return.")


def _n_best_param():
    return param(N_BEST, help="How many start and end candidates post-processing combines per window.")


def postprocess_settings(max_answer_len: int, n_best: int, config) -> tuple[int, int]:
    """The (max_answer_len, n_best) to turn a QA model's logits into answers with: 0 picks what
    the model was fine-tuned (and scored) with, recorded in its config as ``qa_postprocess``,
    else :data:`MAX_ANSWER_LEN` and :data:`N_BEST`; given values are kept."""
    trained = getattr(config, "qa_postprocess", None) or (MAX_ANSWER_LEN, N_BEST)
    return max_answer_len or int(trained[0]), n_best or int(trained[1])


@dataclass
class QAConfig:
    """Settings of the SQuAD v1.1 fine-tuning stage (``scratchbert qa-finetune``)."""

    model: str = param(help="The model to fine-tune: a folder (e.g. from `scratchbert pretrain`), s3://bucket/prefix, "
                            "or a Hub model such as hf://google-bert/bert-base-uncased.")
    squad_train: str = param(help="Training set: a SQuAD v1.1 JSON file, s3://bucket/key.json, or hf://owner/name[?split=train].")
    squad_dev: str = param(help="Evaluation set, in the same forms (hf:// defaults to the validation split).")
    out: str = param(help="Output folder of the fine-tuned model: weights, config, tokenizer and a model card.")
    logs: str = param("", help="Folder for metrics.json, predictions.json, the training log and TensorBoard runs; empty uses OUT-logs.")
    max_seq_len: int = param(0, help="Tokens per (question, context) window; 0 uses min(384, the model's positions).")
    doc_stride: int = param(0, help="Tokens of overlap between consecutive windows of a long context; 0 uses a third of the window.")
    max_answer_len: int = _max_answer_len_param()
    n_best: int = _n_best_param()
    learning_rate: float = param(0.0, help="Peak AdamW learning rate; 0 picks it by the model's width (hidden size): 2e-3 "
                                            "up to 128 and 1e-3 up to 256 (measured best for tiny and mini in "
                                            "docs/performance.md), 5e-4 up to 512, 5e-5 wider (BERT-base's).")
    batch_size: int = param(32, help="Windows per training and prediction batch.")
    group_by_length: bool = param(True, help="Batch windows of similar length together (padded per batch) when there are 20,000 "
                                             "or more: on SQuAD about half the tokens of random batches, so about twice the "
                                             "steps in the same time.")
    epochs: float = param(2.0, help="Passes over the training windows when --max-steps is -1, also under a time budget "
                                    "(the clock may end it sooner): past about two, a small model memorises SQuAD.")
    max_steps: int = param(-1, help="Optimizer steps; -1 trains --epochs (or until the time budget, if that comes first).")
    time_budget_minutes: float = param(0.0, help="Stop training after this many minutes, the learning-rate schedule following "
                                                 "the clock (scoring comes after); 0 means no budget.")
    warmup_ratio: float = param(0.1, help="Fraction of the budget (steps or time) spent warming the learning rate up from 0; it then decays linearly to 0.")
    weight_decay: float = param(0.01, help="AdamW weight decay (not applied to biases and LayerNorm).")
    max_grad_norm: float = param(1.0, help="Clip gradients to this global norm.")
    seed: int = param(42, help="Random seed of the QA head, the data order and dropout.")
    max_train_examples: int = param(0, help="Use only the first N training questions; 0 uses all.")
    max_eval_examples: int = param(0, help="Score only the first N evaluation questions; 0 scores all.")
    repair_answer_starts: bool = param(True, help="Move an answer_start that does not point at its answer text to the nearest "
                                                  "occurrence of that text (counted in metrics.json); off, such an answer is an error.")
    bf16: str = param("auto", help="bfloat16 mixed precision: auto is on where the hardware has it, as in pretraining.",
                      choices=("auto", "true", "false"))
    attention: str = param("auto", help="Attention kernel: auto is SDPA in fp32 on a CPU and eager elsewhere, the faster in each place "
                                        "(with bf16 on a CPU eager's QA steps are about 1.3x as fast), as in pretraining.",
                      choices=ATTENTIONS)
    num_workers: int = param(0, help="Worker processes for tokenisation and data loading; 0 works in the main process.")
    logging_steps: int = param(50, help="Log loss and learning rate every N steps.")
    overwrite: bool = param(False, help="Replace an existing --out and --logs that another stage or a person wrote (a QA model folder is always replaced).")

    def validate(self) -> None:
        """Check every setting (no file is read): one line for the first that is wrong."""
        _validate(self)


# --------------------------------------------------------------------------------------------
# Loading and validating SQuAD
# --------------------------------------------------------------------------------------------


def _squad_features() -> datasets.Features:
    import datasets

    return datasets.Features({
        "id": datasets.Value("string"),
        "title": datasets.Value("string"),
        "context": datasets.Value("string"),
        "question": datasets.Value("string"),
        "answers": {
            "text": datasets.List(datasets.Value("string")),
            "answer_start": datasets.List(datasets.Value("int32")),
        },
    })


def _flatten_squad_json(data: Any, where: str) -> list[dict]:
    """Turn the nested SQuAD v1.1 JSON (data/paragraphs/qas/answers) into flat records."""

    def need(obj: Any, key: str, kind: type | tuple, path: str) -> Any:
        if not isinstance(obj, dict) or key not in obj:
            raise ScratchBertError(
                f"{where} is not SQuAD v1.1 JSON: {path} has no '{key}' key; "
                "give a file laid out like train-v1.1.json (data -> paragraphs -> qas -> answers)")
        value = obj[key]
        if not isinstance(value, kind):
            names = kind.__name__ if isinstance(kind, type) else "/".join(k.__name__ for k in kind)
            raise ScratchBertError(
                f"{where} is not SQuAD v1.1 JSON: {path}['{key}'] is a {type(value).__name__}, "
                f"expected a {names}; fix the file")
        return value

    records = []
    for a, article in enumerate(need(data, "data", list, "the top level")):
        title = (article.get("title") or "") if isinstance(article, dict) else ""
        for p, paragraph in enumerate(need(article, "paragraphs", list, f"data[{a}]")):
            ppath = f"data[{a}].paragraphs[{p}]"
            context = need(paragraph, "context", str, ppath)
            for q, qa in enumerate(need(paragraph, "qas", list, ppath)):
                qpath = f"{ppath}.qas[{q}]"
                qid = str(need(qa, "id", (str, int), qpath))
                question = need(qa, "question", str, qpath)
                # SQuAD v2.0's unanswerable questions have no answers (check_answers refuses them)
                answers = [] if qa.get("is_impossible") else need(qa, "answers", list, qpath)
                texts, starts = [], []
                for n, ans in enumerate(answers):
                    texts.append(need(ans, "text", str, f"{qpath}.answers[{n}]"))
                    starts.append(need(ans, "answer_start", int, f"{qpath}.answers[{n}]"))
                records.append({"id": qid, "title": str(title), "context": context, "question": question,
                                "answers": {"text": texts, "answer_start": starts}})
    return records


def _flat_records(rows, where: str) -> list[dict]:
    """Records of rows laid out as the Hub's rajpurkar/squad is (id, title, context, question,
    answers{text, answer_start}): a Hub dataset's, or a file's in that layout; one line for the
    first row that is not."""
    records = []
    for n, row in enumerate(rows):
        answers = row.get("answers") if isinstance(row, dict) else None
        texts, starts = (answers.get("text"), answers.get("answer_start")) if isinstance(answers, dict) else (None, None)
        if not (isinstance(row, dict) and isinstance(row.get("id"), (str, int)) and isinstance(row.get("context"), str)
                and isinstance(row.get("question"), str) and isinstance(texts, list) and isinstance(starts, list)
                and len(texts) == len(starts) and all(isinstance(t, str) for t in texts)
                and all(isinstance(i, int) and not isinstance(i, bool) for i in starts)):
            raise ScratchBertError(
                f"{where}: row {n} is not a question laid out like rajpurkar/squad ({{\"id\", \"context\", \"question\", "
                "\"answers\": {\"text\": [...], \"answer_start\": [...]}}, one answer_start per text); fix it")
        records.append({"id": str(row["id"]), "title": str(row.get("title") or ""), "context": row["context"],
                        "question": row["question"], "answers": {"text": list(texts), "answer_start": list(starts)}})
    return records


def _squad_records(data: Any, where: str) -> list[dict]:
    """Flat records of a SQuAD file's JSON: SQuAD v1.1 (data -> paragraphs -> qas -> answers), or
    the flat rows of a Hugging Face dataset (``Dataset.to_json``'s JSON lines, a list of them, or
    the list under "data")."""
    if isinstance(data, dict) and "question" in data:  # JSON lines of one question
        data = [data]
    rows = data.get("data") if isinstance(data, dict) else data
    if isinstance(rows, list) and rows and isinstance(rows[0], dict) and "question" in rows[0] and "paragraphs" not in rows[0]:
        return _flat_records(rows, where)
    return _flatten_squad_json(data, where)


def check_text(text: str, what: str) -> None:
    """One line where ``text`` holds a character that is not text: half of a UTF-16 surrogate pair
    (a JSON ``\\ud83d`` of a string cut inside an emoji) or a byte that was not UTF-8 (a command-line
    argument from a Latin-1 terminal); the tokenizer and the metric fail on it with internal errors."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ScratchBertError(
            f"{what} holds {text[e.start:e.end]!r} at character {e.start}, which is not text (half of a UTF-16 "
            "surrogate pair, or a byte that is not UTF-8); give UTF-8 text") from None


def check_answers(records: list[dict], where: str, *, repair: bool = True) -> int:
    """Check that every answer text sits at its ``answer_start`` in the context; return the repair count.

    With ``repair`` an answer whose text is elsewhere in the context is moved (in place) to the
    occurrence nearest to the given ``answer_start``; an answer whose text does not occur in
    the context at all is always an error, as are a question without answers (SQuAD v2.0's
    unanswerable ones) and a duplicate question id. Whitespace at either
    end of an answer text is dropped first (its start moved past it), as it would otherwise
    label the token before or after the answer; the metric ignores it anyway.
    """
    repaired = 0
    seen: set[str] = set()
    for rec in records:
        qid, context = rec["id"], rec["context"]
        if qid in seen:
            raise ScratchBertError(f"{where}: question id {qid} appears twice; give every question a unique id")
        seen.add(qid)
        for part, text in (("context", context), ("question", rec["question"]), *(("answer", t) for t in rec["answers"]["text"])):
            check_text(text, f"{where}: the {part} of question {qid}")
        if all(unicodedata.category(ch)[0] in "CMZ" for ch in rec["question"]):  # spaces, control or zero-width only
            raise ScratchBertError(f"{where}: question {qid} is empty (or only zero-width or control characters); "
                                   "remove it or write the question")
        starts, texts = rec["answers"]["answer_start"], rec["answers"]["text"]
        if not texts:  # from a JSON file or a Hub dataset alike (rajpurkar/squad_v2)
            raise ScratchBertError(
                f"{where}: question {qid} has no answer (a SQuAD v2.0 question?); scratchbert "
                "fine-tunes and scores on SQuAD v1.1 only, so remove unanswerable questions from the data")
        for n, (text, start) in enumerate(zip(texts, starts)):
            if text != text.strip():
                start += len(text) - len(text.lstrip())
                texts[n] = text = text.strip()
                starts[n] = start
            if not text:
                raise ScratchBertError(f"{where}: question {qid} has an empty answer text; remove that answer")
            if 0 <= start and context[start:start + len(text)] == text:
                continue
            occurrences = _find_all(context, text)
            if not occurrences:
                raise ScratchBertError(
                    f"{where}: the answer {text!r} of question {qid} does not occur in its context; "
                    "correct the answer text or remove the question")
            if not repair:
                raise ScratchBertError(
                    f"{where}: the answer {text!r} of question {qid} is not at answer_start {start} of its context "
                    f"(it occurs at {occurrences[:5]}); correct answer_start or turn repair_answer_starts on")
            starts[n] = min(occurrences, key=lambda i: (abs(i - start), i))
            repaired += 1
    return repaired


def _find_all(text: str, sub: str) -> list[int]:
    found, i = [], text.find(sub)
    while i >= 0:
        found.append(i)
        i = text.find(sub, i + 1)
    return found


def _read_json_file(path: Path, where: str) -> Any:
    if path.is_dir():
        files = sorted(path.glob("*.json"))
        if len(files) != 1:
            raise ScratchBertError(
                f"{where} is a folder with {len(files)} .json files; point at one SQuAD v1.1 JSON file")
        path = files[0]
    if not path.is_file():
        raise ScratchBertError(f"SQuAD file {where} does not exist; check the path or give an s3:// or hf:// source")
    from scratchbert.corpus import read_text  # UTF-8 with or without a byte-order mark (as Notepad saves), or UTF-16

    text = read_text(path, what="SQuAD file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        if e.msg != "Extra data":
            raise ScratchBertError(f"{where} is not valid JSON ({e}); give a SQuAD v1.1 JSON file") from None
    rows = []  # JSON lines: a question a line, as datasets' Dataset.to_json writes them
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ScratchBertError(f"{where} is neither JSON nor JSON lines: line {n} is not valid JSON ({e}); "
                                   "give a SQuAD v1.1 JSON file, or JSON lines laid out like rajpurkar/squad") from None
    return rows


def _load_hub_records(source: str, split: str) -> list[dict]:
    """``hf://owner/name[?split=..&config=..]`` -> flat records, through ``datasets.load_dataset``."""
    import datasets

    from scratchbert import hub

    address = hub.parse(source)
    split = address.split or split
    try:
        ds = datasets.load_dataset(address.repo, address.config, split=split, revision=address.revision)
    except Exception as e:  # network, unknown repo, unknown split: one sentence, not a traceback
        raise ScratchBertError(f"could not load {address.repo} split {split} from the Hugging Face Hub "
                               f"({cause(e)}); "
                               "check the name and the network, or pass a local SQuAD JSON file") from None
    missing = set(SQUAD_COLUMNS) - set(ds.column_names) - {"title"}
    if missing:
        raise ScratchBertError(f"{source} has no {sorted(missing)} columns; give a dataset laid out like rajpurkar/squad")
    return _flat_records(ds, source)


def load_squad(source: str, *, split: str = "train", repair_answer_starts: bool = True,
               max_examples: int | None = None) -> tuple[datasets.Dataset, int]:
    """Load SQuAD v1.1 as a flat ``datasets.Dataset`` and return it with the number of repaired answers.

    ``source`` is a local SQuAD v1.1 JSON file (or a folder holding exactly one; or the rows of a
    Hub dataset as ``Dataset.to_json`` saves them, JSON lines laid out like rajpurkar/squad), an
    ``s3://bucket/key`` URI, or ``hf://owner/name[?split=NAME]`` (``split`` is used when the
    address names none). ``max_examples`` keeps the first N questions; every answer kept is
    checked with :func:`check_answers` (the repairs counted are theirs).
    """
    import datasets

    source = str(source)
    if source.startswith(HF_PREFIX):
        records = _load_hub_records(source, split)
    elif source.startswith(S3_PREFIX):
        from scratchbert.storage import download  # imported here: only S3 sources need minio

        with tempfile.TemporaryDirectory(prefix="scratchbert-squad-") as tmp:  # of a prefix, its own .json files
            local = Path(download(source, Path(tmp) / "squad", keep=lambda name: "/" not in name and name.endswith(".json")))
            records = _squad_records(_read_json_file(local, source), source)
    else:
        records = _squad_records(_read_json_file(Path(source), source), source)
    if not records:
        raise ScratchBertError(f"{source} holds no questions; give a SQuAD v1.1 file with at least one question")
    if max_examples is not None:
        records = records[:max_examples]
    repaired = check_answers(records, source, repair=repair_answer_starts)
    columns = {name: [r[name] for r in records] for name in SQUAD_COLUMNS}
    return datasets.Dataset.from_dict(columns, features=_squad_features()), repaired


# --------------------------------------------------------------------------------------------
# Features: (question, context) -> overlapping token windows
# --------------------------------------------------------------------------------------------


def _tokenize_windows(tokenizer: PreTrainedTokenizerFast, examples: dict, max_seq_len: int, doc_stride: int):
    # Leading spaces in questions waste tokens and can push a window out of bounds (as in run_qa.py).
    questions = [q.lstrip() for q in examples["question"]]
    return tokenizer(
        questions,
        examples["context"],
        truncation="only_second",
        max_length=max_seq_len,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding=False,  # padded per batch by the collator: far less waste than padding to max_seq_len
        split_special_tokens=True,  # "[SEP]" written in a question or context is text, as in pretraining
    )


def _context_mask(tokenized, i: int) -> np.ndarray:
    return np.array([s == 1 for s in tokenized.sequence_ids(i)], dtype=bool)


def prepare_train_features(examples: dict, tokenizer: PreTrainedTokenizerFast, max_seq_len: int,
                           doc_stride: int) -> dict:
    """Batched ``datasets.map`` function: SQuAD rows -> training windows with start/end token labels.

    A window that does not contain the whole (first) answer is labelled with the [CLS] index
    for both start and end, as in the BERT paper and ``run_qa.py``. The answer is the context
    tokens it overlaps: characters the tokenizer drops at either end of it (an accent it strips,
    written as a combining mark; a zero-width or direction mark) neither add the token before or
    after it nor keep it out of the last window.
    """
    tokenized = _tokenize_windows(tokenizer, examples, max_seq_len, doc_stride)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    offset_mapping = tokenized.pop("offset_mapping")
    windows, spans = [], {}  # spans: question -> the characters of the context tokens its answer overlaps
    for i, offsets in enumerate(offset_mapping):
        answers = examples["answers"][sample_mapping[i]]
        ctx = np.flatnonzero(_context_mask(tokenized, i))
        offs = np.asarray(offsets, dtype=np.int64)
        start_char = answers["answer_start"][0]
        end_char = start_char + len(answers["text"][0])
        inside = ctx[(offs[ctx, 1] > start_char) & (offs[ctx, 0] < end_char)] if len(ctx) else ctx
        if len(inside):
            first, last = spans.get(sample_mapping[i], (math.inf, -1))
            spans[sample_mapping[i]] = (min(first, int(offs[inside[0], 0])), max(last, int(offs[inside[-1], 1])))
        windows.append((ctx, offs))
    starts, ends = [], []
    for i, (ctx, offs) in enumerate(windows):
        input_ids = tokenized["input_ids"][i]
        cls_index = input_ids.index(tokenizer.cls_token_id) if tokenizer.cls_token_id in input_ids else 0
        start_char, end_char = spans.get(sample_mapping[i], (-1, -1))
        if len(ctx) == 0 or start_char < 0 or not (offs[ctx[0], 0] <= start_char and offs[ctx[-1], 1] >= end_char):
            starts.append(cls_index)
            ends.append(cls_index)
            continue
        # Context offsets are non-decreasing, so two binary searches find the span: the last
        # token starting at or before start_char, and the first token ending at or after end_char.
        starts.append(int(ctx[np.searchsorted(offs[ctx, 0], start_char, side="right") - 1]))
        ends.append(int(ctx[np.searchsorted(offs[ctx, 1], end_char, side="left")]))
    tokenized["start_positions"] = starts
    tokenized["end_positions"] = ends
    return tokenized


def prepare_eval_features(examples: dict, tokenizer: PreTrainedTokenizerFast, max_seq_len: int,
                          doc_stride: int) -> dict:
    """Batched ``datasets.map`` function: SQuAD rows -> prediction windows.

    Each window keeps the id of its question (``example_id``), an ``offset_mapping`` in
    which every token outside the context is ``None``, so post-processing can only pick
    context spans and can map them back to characters, and ``word_offsets``: the characters
    of each context token's whole word (as the tokenizer splits words before WordPiece), so
    that an answer can be widened to whole words.
    """
    tokenized = _tokenize_windows(tokenizer, examples, max_seq_len, doc_stride)
    sample_mapping = tokenized.pop("overflow_to_sample_mapping")
    tokenized["example_id"] = [examples["id"][s] for s in sample_mapping]
    masks = [_context_mask(tokenized, i) for i in range(len(sample_mapping))]
    word_ids = [tokenized.word_ids(i) for i in range(len(sample_mapping))]
    # A window's edge can cut a word, and the tokenizer's word_to_chars sees only the pieces in
    # that window; word ids number the words of the whole context, so a word's characters are
    # the span of its pieces over all windows of its question.
    words: dict[tuple[int, int], tuple[int, int]] = {}
    for i, in_ctx in enumerate(masks):
        for w in {w for w, c in zip(word_ids[i], in_ctx) if c and w is not None}:
            start, end = tokenized.word_to_chars(i, w, sequence_index=1)
            first, last = words.get((sample_mapping[i], w), (start, end))
            words[sample_mapping[i], w] = (min(first, start), max(last, end))
    for (sample, w), (start, end) in words.items():  # a "word" of a script without spaces is often a clause
        if _UNSPACED.search(examples["context"][sample], start, end):
            words[sample, w] = None
    offset_maps, word_maps = [], []
    for i, (offsets, in_ctx) in enumerate(zip(tokenized["offset_mapping"], masks)):
        offset_maps.append([tuple(o) if c else None for o, c in zip(offsets, in_ctx)])
        word_maps.append([(words[sample_mapping[i], w] or tuple(o)) if c and w is not None else None
                          for w, o, c in zip(word_ids[i], offsets, in_ctx)])
    tokenized["offset_mapping"], tokenized["word_offsets"] = offset_maps, word_maps
    return tokenized


# Scripts written without spaces between words (Thai, Lao, Tibetan, Myanmar, Khmer): BERT's
# pre-tokenizer keeps all between two spaces or stops as one "word", often a clause, which
# widening an answer to whole words would return; their answers keep their pieces' own ends.
_UNSPACED = re.compile("[\u0e00-\u0fff\u1000-\u109f\u1780-\u17ff]")


def question_token_limit(tokenizer: PreTrainedTokenizerFast, max_seq_len: int, doc_stride: int) -> int:
    """Most question tokens a window may hold so that long contexts still cut into sane windows.

    The fast tokenizer needs more than ``doc_stride`` context tokens next to the question (it
    panics otherwise), and each window moves on by (context tokens - ``doc_stride``), so a
    long question can make a window per token. With ``room`` = max_seq_len - special tokens
    - doc_stride, a question keeps ``max(room // 2, min(64, room - 16))`` tokens: windows
    always move on by at least min(room / 2, 16) tokens, and questions of up to 64 tokens
    (the original BERT's cap) stay whole wherever the room allows. 384/128 keeps 126.
    """
    room = max_seq_len - tokenizer.num_special_tokens_to_add(pair=True) - doc_stride
    return max(room // 2, min(64, room - 16))


def fit_questions(dataset: datasets.Dataset, tokenizer: PreTrainedTokenizerFast, max_seq_len: int,
                  doc_stride: int) -> tuple[datasets.Dataset, int]:
    """Cut questions longer than :func:`question_token_limit` tokens; return the dataset and how many were cut."""
    limit = question_token_limit(tokenizer, max_seq_len, doc_stride)
    questions, cut = _truncate_questions(tokenizer, dataset["question"], limit)
    if not cut:
        return dataset, 0
    log.warning("cut %d questions to %d tokens to fit %d-token windows with stride %d",
                cut, limit, max_seq_len, doc_stride)
    return dataset.remove_columns("question").add_column("question", questions).select_columns(
        list(dataset.column_names)), cut


def _truncate_questions(tokenizer, questions: list[str], limit: int) -> tuple[list[str], int]:
    if limit < 1:
        raise ScratchBertError("the windows leave no room for the question (max_seq_len minus special tokens minus "
                               "doc_stride is below 2); lower doc_stride or raise max_seq_len")
    questions = [q.lstrip() for q in questions]
    enc = tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
    cut = 0
    for i, offsets in enumerate(enc["offset_mapping"]):
        if len(offsets) > limit:
            questions[i] = questions[i][:offsets[limit - 1][1]]
            cut += 1
    return questions, cut


def build_features(dataset: datasets.Dataset, tokenizer, max_seq_len: int, doc_stride: int, *, train: bool,
                   num_proc: int | None = None) -> datasets.Dataset:
    """Cut a flat SQuAD dataset into training (``train=True``) or prediction windows.

    Questions too long for the windows are cut first (:func:`fit_questions`).
    """
    dataset, _ = fit_questions(dataset, tokenizer, max_seq_len, doc_stride)
    fn = prepare_train_features if train else prepare_eval_features
    return dataset.map(
        fn,
        batched=True,
        remove_columns=dataset.column_names,
        fn_kwargs={"tokenizer": tokenizer, "max_seq_len": max_seq_len, "doc_stride": doc_stride},
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        desc=f"Windows for {'training' if train else 'prediction'}",
    )


# --------------------------------------------------------------------------------------------
# Post-processing: start/end logits per window -> n-best answers per question
# --------------------------------------------------------------------------------------------


def _window_candidates(start_logits: np.ndarray, end_logits: np.ndarray, offsets: list, n_best: int,
                       max_answer_len: int, chars: list | None = None) -> list[tuple[float, int, int]]:
    """(score, start_char, end_char) of the best spans of one window, context tokens only.

    Unlike ``utils_qa.py``, tokens outside the context are masked *before* taking the top
    ``n_best`` starts and ends, so the question tokens never crowd out valid candidates.
    ``chars`` maps a token to the characters a span starting or ending there covers (its
    word's, to answer in whole words); by default the token's own ``offsets``.
    """
    chars = offsets if chars is None else chars
    n = len(offsets)  # logits of a batch are padded beyond the window's own length
    in_ctx = np.array([o is not None for o in offsets], dtype=bool)
    if not in_ctx.any():
        return []
    s_log = np.asarray(start_logits[:n], dtype=np.float64)
    e_log = np.asarray(end_logits[:n], dtype=np.float64)
    ctx = np.flatnonzero(in_ctx)
    k = min(n_best, len(ctx))
    top_s = ctx[np.argsort(-s_log[ctx], kind="stable")[:k]]
    top_e = ctx[np.argsort(-e_log[ctx], kind="stable")[:k]]
    length = top_e[None, :] - top_s[:, None] + 1
    valid = (length >= 1) & (length <= max_answer_len)
    si, ei = np.nonzero(valid)
    scores = s_log[top_s[si]] + e_log[top_e[ei]]
    return [(float(sc), chars[s][0], chars[e][1]) for sc, s, e in zip(scores, top_s[si], top_e[ei])]


def postprocess_predictions(examples: datasets.Dataset | dict, features: datasets.Dataset | dict,
                            start_logits: np.ndarray, end_logits: np.ndarray, *, n_best: int = N_BEST,
                            max_answer_len: int = MAX_ANSWER_LEN, align_to_words: bool = True,
                            ) -> tuple[dict[str, str], dict[str, list[dict]]]:
    """Turn window logits into answers, as ``utils_qa.postprocess_qa_predictions`` does for SQuAD v1.

    ``examples`` (a Dataset or a dict of columns) have ``id`` and ``context``; ``features``
    (from :func:`prepare_eval_features`) have ``example_id``, ``offset_mapping`` and, to align
    to words, ``word_offsets``; ``start_logits``/``end_logits`` are
    ``[n_features, seq_len]`` (rows may be padded past a window's length). Every span with
    start <= end, at most ``max_answer_len`` tokens, built from the top ``n_best`` starts and
    ends of each window, is scored by start + end logit; spans found in several overlapping
    windows keep their best score. With ``align_to_words`` (as in transformers'
    question-answering pipeline) a span covers the whole words of its first and last tokens,
    so that an answer never ends inside a word ("Gustave Eiff"); an answer never ends before the
    combining marks of its last letter either (an accent written as a character of its own).

    Returns ``(predictions, nbest)``: ``predictions`` maps each id to its best answer text
    (empty when no valid span exists); ``nbest`` maps each id to up to ``n_best`` dicts
    ``text, score`` (softmax over the kept candidates), ``logit``, ``start``, ``end``
    (character offsets in the context), best first.
    """
    feature_ids = features["example_id"]
    offset_maps = features["offset_mapping"]
    char_maps = features["word_offsets"] if align_to_words else offset_maps
    by_example: dict[str, list[int]] = {}
    for i, eid in enumerate(feature_ids):
        by_example.setdefault(eid, []).append(i)
    if len(start_logits) != len(feature_ids) or len(end_logits) != len(feature_ids):
        raise ValueError(f"{len(feature_ids)} features but {len(start_logits)}/{len(end_logits)} rows of logits")

    predictions: dict[str, str] = {}
    nbest: dict[str, list[dict]] = {}
    ids, contexts = examples["id"], examples["context"]
    for eid, context in zip(ids, contexts):
        best: dict[tuple[int, int], float] = {}
        for i in by_example.get(eid, []):
            for score, s, e in _window_candidates(start_logits[i], end_logits[i], offset_maps[i], n_best,
                                                  max_answer_len, char_maps[i]):
                if score > best.get((s, e), -math.inf):
                    best[(s, e)] = score
        ranked = sorted(best.items(), key=lambda kv: -kv[1])[:n_best]
        if not ranked:  # no valid span in any window (a tiny max_answer_len, say): answer nothing
            nbest[eid] = [{"text": "", "score": 1.0, "logit": 0.0, "start": 0, "end": 0}]
            predictions[eid] = ""
            continue
        logits = np.array([sc for _, sc in ranked])
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        spans = [(s, _past_combining_marks(context, e)) for (s, e), _ in ranked]
        nbest[eid] = [{"text": context[s:e], "score": float(p), "logit": float(sc), "start": int(s), "end": int(e)}
                      for (s, e), (_, sc), p in zip(spans, ranked, probs)]
        predictions[eid] = nbest[eid][0]["text"]
    return predictions, nbest


def _past_combining_marks(context: str, end: int) -> int:
    """``end`` moved past the combining marks that follow it (an accent written as a character of
    its own, Arabic vowel marks): they belong to the letter before them, and a tokenizer that
    strips accents leaves them out of its tokens' characters, so that an answer lost them."""
    while end < len(context) and unicodedata.category(context[end])[0] == "M":
        end += 1
    return end


def squad_scores(predictions: dict[str, str], references: datasets.Dataset | list[dict]) -> dict[str, float]:
    """Exact match and F1 (0-100, official SQuAD v1.1 semantics) of ``predictions`` (id -> text)."""
    refs = references.to_list() if hasattr(references, "to_list") else references
    metric = squad_metric()
    return metric.compute(
        predictions=[{"id": r["id"], "prediction_text": predictions.get(r["id"], "")} for r in refs],
        references=[{"id": r["id"], "answers": r["answers"]} for r in refs],
    )


# --------------------------------------------------------------------------------------------
# Model folder checks and fine-tuning
# --------------------------------------------------------------------------------------------


def _load_tokenizer_and_config(model_dir: str | Path, what: str = "model folder", name: str = "",
                               writer: str = "the pretrain stage"):
    """The tokenizer and config of a model folder, or one line saying what it lacks; ``name`` is
    the model as the user gave it (an ``s3://`` address fetched into ``model_dir``), for messages,
    and ``writer`` the stage whose out folder to pass instead."""
    from transformers import AutoConfig, AutoTokenizer

    path = Path(model_dir)
    name = name or str(path)
    if not path.is_dir():
        raise ScratchBertError(f"{what} {name} does not exist; pass the folder written by {writer}")
    if not (path / "config.json").is_file():
        raise ScratchBertError(f"{what} {name} has no config.json; pass a folder saved with save_pretrained")
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt")):
        raise ScratchBertError(
            f"{what} {name} has no tokenizer (tokenizer.json or vocab.txt); save the tokenizer into the model folder")
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:  # not JSON, or no model_type: transformers' own words, first line
        raise ScratchBertError(f"{what} {name} has an unreadable config.json ({cause(e)}); save the model again with "
                               f"save_pretrained, or pass the folder written by {writer}") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True, **casing_of(path))
    except Exception as e:  # the tokenizers library raises a bare Exception for a broken tokenizer.json
        raise ScratchBertError(f"{what} {name} has an unreadable tokenizer ({cause(e)}); save the tokenizer again with "
                               f"save_pretrained, or pass the folder written by {writer}") from None
    if not getattr(tokenizer, "is_fast", False):
        raise ScratchBertError(
            f"the tokenizer in {name} is not a fast tokenizer, which SQuAD windows need for character offsets; "
            "save a tokenizers-backed tokenizer (tokenizer.json) into the folder")
    return tokenizer, config


def _validate(cfg: QAConfig) -> None:
    if not str(cfg.model).strip():
        raise ScratchBertError("QA fine-tuning: --model is empty; give the folder written by `scratchbert pretrain`")
    check_source(cfg.squad_train, "--squad-train")
    check_source(cfg.squad_dev, "--squad-dev")
    checks = [
        (cfg.max_seq_len == 0 or cfg.max_seq_len >= 16, f"--max-seq-len {cfg.max_seq_len} is too small; use at least 16, or 0 for 384"),
        (cfg.doc_stride >= 0, f"--doc-stride {cfg.doc_stride} must not be negative (0 uses a third of the window)"),
        (cfg.max_answer_len >= 1, f"--max-answer-len {cfg.max_answer_len} must be at least 1"),
        (cfg.n_best >= 1, f"--n-best {cfg.n_best} must be at least 1"),
        (finite(cfg.learning_rate) and cfg.learning_rate >= 0,
         f"--learning-rate {cfg.learning_rate} must be positive, or 0 for the rate of the model's width"),
        (finite(cfg.max_grad_norm) and cfg.max_grad_norm >= 0, f"--max-grad-norm {cfg.max_grad_norm} must not be negative"),
        (cfg.batch_size >= 1, f"--batch-size {cfg.batch_size} must be at least 1"),
        (cfg.max_steps == -1 or cfg.max_steps > 0, f"--max-steps {cfg.max_steps} must be positive, or -1 to train --epochs"),
        (cfg.max_steps > 0 or (finite(cfg.epochs) and cfg.epochs > 0),
         f"--epochs {cfg.epochs} must be positive when --max-steps is -1; set one of them"),
        (finite(cfg.time_budget_minutes) and cfg.time_budget_minutes >= 0,
         f"--time-budget-minutes {cfg.time_budget_minutes} must be a number of minutes, 0 or more (0: no budget)"),
        (finite(cfg.warmup_ratio) and 0 <= cfg.warmup_ratio < 1, f"--warmup-ratio {cfg.warmup_ratio} must be in [0, 1)"),
        (finite(cfg.weight_decay) and cfg.weight_decay >= 0, f"--weight-decay {cfg.weight_decay} must not be negative"),
        (cfg.max_train_examples >= 0, "--max-train-examples must not be negative (0 uses all)"),
        (cfg.max_eval_examples >= 0, "--max-eval-examples must not be negative (0 uses all)"),
        (cfg.num_workers >= 0, f"--num-workers {cfg.num_workers} must not be negative"),
        (cfg.logging_steps >= 1, f"--logging-steps {cfg.logging_steps} must be at least 1"),
        (0 <= cfg.seed < SEED_LIMIT, f"--seed {cfg.seed} must lie in [0, 2**32), as NumPy's seeds do"),
    ]
    for ok, message in checks:
        if not ok:
            raise ScratchBertError(f"QA fine-tuning: {message}")
    check_choices(cfg)


def _check_windows(tokenizer, max_seq_len: int, doc_stride: int, max_pos: int, model: str) -> None:
    """The windows must fit the model and leave the question room (one message per way to fail)."""
    if max_seq_len > max_pos:
        raise ScratchBertError(f"max_seq_len {max_seq_len} is longer than the {max_pos} positions of the model in {model}; "
                               f"use --max-seq-len {max_pos} or less")
    if doc_stride >= max_seq_len:
        raise ScratchBertError(f"doc_stride {doc_stride} must be smaller than max_seq_len {max_seq_len}; "
                               "use about a third of it, or 0 for exactly that")
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    if question_token_limit(tokenizer, max_seq_len, doc_stride) < 8:
        most = max_seq_len - specials - 16  # the largest overlap that leaves 8 question tokens (question_token_limit)
        if most < 1:
            raise ScratchBertError(f"a {max_seq_len}-token window has no room for a question and its context with any "
                                   f"doc_stride; use max_seq_len {specials + 17} or more (0 for {DEFAULT_WINDOW})")
        third = question_token_limit(tokenizer, max_seq_len, max(1, max_seq_len // 3)) >= 8
        raise ScratchBertError(
            f"doc_stride {doc_stride} leaves room for fewer than 8 question tokens in a {max_seq_len}-token "
            f"window; use doc_stride at most {most}" + (", or 0 for a third of the window" if third else
                                                        " (a third of it is too much), or a longer max_seq_len"))


def use_bf16(setting: str) -> bool:
    """Whether QA fine-tuning runs with bf16 autocast: ``true``, ``false``, or ``auto``, which
    follows pretraining's rule (:func:`scratchbert.pretrain.resolve_precision`): GPUs with
    bf16, CPUs with bf16 matrix instructions (AMX or AVX512-BF16)."""

    from scratchbert.pretrain import refuse_emulated_bf16, resolve_precision

    setting = str(setting).lower()
    if setting == "true":
        refuse_emulated_bf16("--bf16 true", "use --bf16 auto or false")
    return setting == "true" or (setting == "auto" and resolve_precision("auto") == "bf16")


def finetune_qa(cfg: QAConfig) -> dict:
    """Fine-tune a pretrained BERT on SQuAD v1.1, score it, and write the model and its records.

    ``cfg.model`` is a model folder, or a starting model on the Hub or in object storage
    (:mod:`scratchbert.starting_model`: ``hf://google-bert/bert-base-uncased``, ``s3://...``).

    ``cfg.out`` receives (atomically: all of it or nothing) a clean Hugging Face folder: the
    fine-tuned ``BertForQuestionAnswering``, its config and tokenizer, and a model card
    (``README.md``) with the EM/F1 results; ``from_pretrained(out)`` loads it. The run's
    records go to ``cfg.logs`` (default ``OUT-logs``): ``metrics.json`` (exact_match, f1,
    counts, timings, train_loss, answer_starts_repaired, ...), ``predictions.json``
    (question id -> answer), ``log_history.json`` (the Trainer's log), ``qa_config.json``
    and TensorBoard runs under ``runs/``. Returns the metrics.
    """
    # every setting and every output place is checked before the slow imports and any work
    _validate(cfg)
    logs = Path(cfg.logs or sibling(cfg.out, "logs"))
    inputs = [cfg.model, cfg.squad_train, cfg.squad_dev]
    check_distinct({"--out": cfg.out, "--logs": logs})
    check_output(cfg.out, stage=STAGE, inputs=inputs, overwrite=cfg.overwrite)
    check_output(logs, stage=f"{STAGE}-logs", inputs=inputs, overwrite=cfg.overwrite, what="--logs")
    with tempfile.TemporaryDirectory(prefix="scratchbert-qa-model-") as tmp:
        model_dir = _model_folder(cfg.model, tmp)
        return _finetune(cfg, model_dir, logs, inputs)


def training_step_seconds(preset: str, *, vocab_size: int, batch_size: int, length: int, seconds: float = 10.0,
                          bf16: bool | None = None) -> float:
    """Seconds one QA training step of a new ``preset`` model takes on this machine now: the
    median over about ``seconds`` of steps (after two unmeasured ones) on random batches of
    ``batch_size`` windows of ``length`` tokens, with the stage's model class, kernel, precision
    (``bf16``: the stage's ``auto`` when None) and optimizer. How fast QA fine-tuning will run
    here, known before its data exists: a time budget's split needs it (``run-local``)."""
    import statistics

    import torch

    from scratchbert.modeling import build_config, qa_model_class, resolve_attention

    bf16 = use_bf16("auto") if bf16 is None else bf16
    config = build_config(preset, vocab_size, length, dropout=0.0,
                          attn_implementation=resolve_attention("auto", "bf16" if bf16 else "fp32"))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = qa_model_class()(config).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    batch = {"input_ids": torch.randint(5, vocab_size, (batch_size, length), generator=generator),
             "attention_mask": torch.ones(batch_size, length, dtype=torch.long),
             "token_type_ids": torch.zeros(batch_size, length, dtype=torch.long),
             "start_positions": torch.randint(0, length, (batch_size,), generator=generator),
             "end_positions": torch.randint(0, length, (batch_size,), generator=generator)}
    batch = {name: tensor.to(device) for name, tensor in batch.items()}
    times: list[float] = []
    with keep_freed_memory():
        for _ in range(2):  # the first steps allocate: untimed
            _probe_step(model, optimizer, batch, device, bf16)
        started = time.perf_counter()
        while len(times) < 3 or time.perf_counter() - started < seconds:
            t0 = time.perf_counter()
            _probe_step(model, optimizer, batch, device, bf16)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _probe_step(model, optimizer, batch: dict, device, bf16: bool) -> None:
    import torch

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize()


def _model_folder(model: str, workdir: str) -> Path:
    """A local folder holding ``model``: ``s3://`` and ``hf://`` fetched under ``workdir``, a path
    as it is (its own checks then say what is missing from it)."""
    return starting_model.fetch(model, workdir) if is_remote(model) else Path(model)


def _finetune(cfg: QAConfig, model_dir: Path, logs: Path, inputs: list) -> dict:
    import torch
    from transformers import DataCollatorWithPadding, TrainingArguments, set_seed

    from scratchbert.modelcard import write_model_card
    from scratchbert.modeling import check_tokenizer_matches, qa_model_class, resolve_attention
    from scratchbert.pretrain import report_to

    tokenizer, config = _load_tokenizer_and_config(model_dir, name=cfg.model)
    if getattr(config, "model_type", None) != "bert":
        raise ScratchBertError(f"{cfg.model} holds a {getattr(config, 'model_type', 'unknown')} model; QA fine-tuning takes a BERT "
                               "model folder, e.g. from `scratchbert pretrain`")
    check_tokenizer_matches(config, tokenizer, cfg.model, str(model_dir))
    starting_model.require_weights(model_dir, cfg.model)  # not after the SQuAD features are built
    max_pos = getattr(config, "max_position_embeddings", DEFAULT_WINDOW)
    max_seq_len, doc_stride = window_settings(cfg.max_seq_len, cfg.doc_stride, max_pos, _trained_window(config))
    _check_windows(tokenizer, max_seq_len, doc_stride, max_pos, cfg.model)
    # A QA model's head is trained already: fine-tuning continues it; any other BERT starts a new head.
    starts_from = "qa_model" if "BertForQuestionAnswering" in (config.architectures or []) else "pretrained_model"
    log.info("QA fine-tuning %s %s (%s)", "continues the QA model" if starts_from == "qa_model" else "starts from the pretrained model",
             cfg.model, ", ".join(config.architectures or ["no architecture recorded"]))
    bf16 = use_bf16(cfg.bf16)
    if not cfg.learning_rate:  # 0: the rate of the model's width; the run's records say which
        cfg = replace(cfg, learning_rate=learning_rate_for(config.hidden_size))
        log.info("peak learning rate %g, the rate of a model %d wide", cfg.learning_rate, config.hidden_size)

    train_set, train_repaired = load_squad(cfg.squad_train, split="train", repair_answer_starts=cfg.repair_answer_starts,
                                           max_examples=cfg.max_train_examples or None)
    eval_set, eval_repaired = load_squad(cfg.squad_dev, split="validation", repair_answer_starts=cfg.repair_answer_starts,
                                         max_examples=cfg.max_eval_examples or None)
    if train_repaired or eval_repaired:
        log.warning("moved answer_start of %d training and %d evaluation answers to where their text is",
                    train_repaired, eval_repaired)
    num_proc = cfg.num_workers or None
    if cfg.num_workers > 0:  # forked data-loader workers and the tokenizer's own thread pool do not mix
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    train_set, train_cut = fit_questions(train_set, tokenizer, max_seq_len, doc_stride)
    eval_set, eval_cut = fit_questions(eval_set, tokenizer, max_seq_len, doc_stride)
    train_features = build_features(train_set, tokenizer, max_seq_len, doc_stride, train=True, num_proc=num_proc)
    eval_features = build_features(eval_set, tokenizer, max_seq_len, doc_stride, train=False, num_proc=num_proc)
    budget = Budget(_step_limit(cfg, len(train_features)), cfg.time_budget_minutes, cfg.warmup_ratio, label="qa-finetune")

    set_seed(cfg.seed)  # before the model: the new QA head is initialised from the seed
    # float32 weights whatever the checkpoint was saved in (a bf16 or fp16 one would be trained in
    # that dtype, its updates rounded away); bf16 is autocast's, as in pretraining
    model = qa_model_class().from_pretrained(model_dir, local_files_only=True, dtype=torch.float32,
                                             attn_implementation=resolve_attention(cfg.attention, "bf16" if bf16 else "fp32"))

    with (atomic_output_dir(cfg.out, stage=STAGE, inputs=inputs, overwrite=cfg.overwrite,
                            marker={"tokenizer_fingerprint": fingerprint(tokenizer), "starts_from": starts_from}) as tmp,
          atomic_output_dir(logs, stage=f"{STAGE}-logs", inputs=inputs, overwrite=cfg.overwrite, what="--logs") as tmp_logs):
        args = TrainingArguments(
            # The run lives in temporary folders that only become `out` and `logs` at the end,
            # so mid-run checkpoints there could not be resumed from anyway: none are saved.
            output_dir=str(tmp_logs),
            per_device_train_batch_size=cfg.batch_size,
            per_device_eval_batch_size=cfg.batch_size,
            learning_rate=cfg.learning_rate,
            num_train_epochs=cfg.epochs,
            max_steps=budget.trainer_max_steps(),
            weight_decay=cfg.weight_decay,
            max_grad_norm=cfg.max_grad_norm,
            bf16=bf16,
            use_cpu=not torch.cuda.is_available(),  # the Trainer refuses bf16 on a CPU without it
            logging_strategy="steps",
            logging_steps=cfg.logging_steps,
            logging_first_step=True,
            report_to=report_to(),
            save_strategy="no",
            eval_strategy="no",
            seed=cfg.seed,
            dataloader_num_workers=cfg.num_workers,
            dataloader_pin_memory=torch.cuda.is_available(),
            disable_tqdm=progress.hidden(),
        )
        if args.n_gpu > 1:  # one process seeing several GPUs: the Trainer would run DataParallel, --batch-size windows
            args._n_gpu = 1  # on each (a step of several batches, a time budget's epochs as many times); one GPU, as in the pipeline
        trainer = budget.trainer_class(_trainer_base(cfg.group_by_length))(
            model=model,
            args=args,
            train_dataset=train_features,
            data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if bf16 else None),
            processing_class=tokenizer,
        )
        budget.install(trainer)
        progress.keep_stdout_for_the_result(trainer)
        t0 = time.perf_counter()
        with keep_freed_memory():  # on a CPU, reuse freed memory (scratchbert.allocator)
            train_result = trainer.train()
        train_seconds = time.perf_counter() - t0
        epochs_done = float(trainer.state.epoch or 0.0)
        epoch_minutes = train_seconds / 60 / epochs_done if epochs_done else 0.0
        if budget.seconds:  # how long an epoch takes here is what a budget's split needs to know
            log.info("QA fine-tuning trained %.2f of its %g epochs in %.1f of its %.1f minutes (%.2f minutes an epoch)",
                     epochs_done, cfg.epochs, train_seconds / 60, budget.seconds / 60, epoch_minutes)

        t0 = time.perf_counter()
        predictions, scores = _predict_and_score(trainer, eval_set, eval_features, cfg.n_best, cfg.max_answer_len)
        eval_seconds = time.perf_counter() - t0

        metrics = {
            "exact_match": float(scores["exact_match"]),
            "f1": float(scores["f1"]),
            "train_examples": len(train_set),
            "eval_examples": len(eval_set),
            "train_features": len(train_features),
            "eval_features": len(eval_features),
            "max_seq_len": max_seq_len,
            "doc_stride": doc_stride,
            "learning_rate": cfg.learning_rate,
            "train_seconds": round(train_seconds, 3),
            "eval_seconds": round(eval_seconds, 3),
            "train_loss": float(train_result.training_loss),
            "train_steps": int(trainer.state.global_step),
            "epochs": round(epochs_done, 3),
            "epoch_minutes": round(epoch_minutes, 3),
            "answer_starts_repaired": train_repaired + eval_repaired,
            "questions_truncated": train_cut + eval_cut,
            "train_answer_starts_repaired": train_repaired,
            "eval_answer_starts_repaired": eval_repaired,
            "bf16": int(bf16),
            "attention": model.config._attn_implementation,
            "starts_from": starts_from,
            "parameters": int(sum(p.numel() for p in model.parameters())),
        }
        trainer.model.config.qa_window = [max_seq_len, doc_stride]  # scoring and answering use the same windows
        trainer.model.config.qa_postprocess = [cfg.max_answer_len, cfg.n_best]  # and the same answers
        trainer.model.save_pretrained(str(tmp))
        # as pretrain's folders (a starting model's tokenizer may have none): pipelines cut to the positions
        tokenizer.model_max_length = max_pos
        tokenizer.save_pretrained(str(tmp))
        write_model_card(tmp, task="question-answering", base_model=cfg.model,
                         datasets=[cfg.squad_train, cfg.squad_dev], metrics=metrics, eval_data=cfg.squad_dev)
        write_json(tmp_logs / "metrics.json", metrics)
        write_json(tmp_logs / "predictions.json", predictions)
        (tmp_logs / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2) + "\n")
        write_json(tmp_logs / "qa_config.json", asdict(cfg))
        del trainer
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    log.info("SQuAD fine-tuning done: EM %.2f, F1 %.2f -> %s", metrics["exact_match"], metrics["f1"], cfg.out)
    return metrics


# Length buckets only from this many training windows: a small set's pools hold much of it, and
# their sorted batches keep the questions on one paragraph (windows of one length) together. On
# the synthetic set of the learning test (984 windows, sorted as one pool) buckets learned less in
# 450 steps (F1 33 against 41 with random batches); on SQuAD (80k windows, pools of 50 batches)
# as much (16.8 vs 16.5).
MIN_BUCKETED_WINDOWS = 20_000


def _trainer_base(group_by_length: bool):
    """The Trainer class QA fine-tuning builds on: with ``group_by_length``, its training batches
    come from :class:`LengthBuckets` when there are at least ``MIN_BUCKETED_WINDOWS``."""
    from transformers import Trainer

    if not group_by_length:
        return Trainer

    class LengthBucketTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            dataset = self.train_dataset if train_dataset is None else train_dataset
            if len(dataset) < MIN_BUCKETED_WINDOWS:
                return super()._get_train_sampler(train_dataset)
            return LengthBuckets([len(ids) for ids in dataset["input_ids"]], self.args.train_batch_size, self.args.seed)

    return LengthBucketTrainer


class LengthBuckets:
    """A sampler of batches of windows of similar length, in random order.

    The windows, in a random order, are grouped by length as pretraining's shards are
    (``scratchbert.shards``: pools of up to 50 batches' worth, each sorted by length) and cut into
    batches; the batches are then shuffled together. Padded per batch, SQuAD's windows (171
    tokens on average, many contexts short, some long) then cost about half the tokens of random
    batches. The Trainer's own ``group_by_length`` serves each pool's batches in length order, a
    drift in the batch length every 50 steps that cost F1 (docs/performance.md), and it also
    reorders prediction batches, whose results ``Trainer.predict`` does not put back in order;
    hence this class.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int):
        self.lengths, self.batch_size, self.seed, self.epoch = np.asarray(lengths), batch_size, seed, 0

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self):
        from scratchbert.shards import group_by_length

        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1  # a new order each pass
        order = rng.permutation(len(self.lengths))
        grouped = group_by_length(order, self.lengths[order], self.batch_size, longest_first=False)
        batches = [grouped[i:i + self.batch_size] for i in range(0, len(grouped), self.batch_size)]
        # pools are whole batches, so only the last batch can be short: it stays last, so no batch straddles two
        last = [batches.pop()] if batches and len(batches[-1]) < self.batch_size else []
        for i in rng.permutation(len(batches)):
            yield from batches[i].tolist()
        for batch in last:
            yield from batch.tolist()


def _step_limit(cfg: QAConfig, train_windows: int) -> int:
    """``--max-steps``, or under a time budget the steps of ``--epochs`` (the clock may end the run
    first; the schedule follows whichever is further along); -1 leaves ``--epochs`` to the Trainer.

    Measured: ``tiny`` fine-tuned for 5.5 epochs in a 120-minute run memorised SQuAD (its training
    loss fell at each epoch boundary, 3.0 to 1.3) and scored lower than at 2.5 (docs/performance.md).
    """
    if cfg.max_steps > 0 or not cfg.time_budget_minutes:
        return cfg.max_steps
    return max(1, math.ceil(cfg.epochs * math.ceil(train_windows / cfg.batch_size)))  # one process (cli.check_launch)


def _predict_and_score(trainer, eval_set, eval_features, n_best: int, max_answer_len: int) -> tuple[dict, dict]:
    """Answers to the evaluation questions (id -> text) and their EM/F1, with ``trainer``'s model."""
    start_logits, end_logits = _window_logits(trainer, eval_features)
    predictions, _ = postprocess_predictions(eval_set, eval_features, start_logits, end_logits,
                                             n_best=n_best, max_answer_len=max_answer_len)
    return predictions, squad_scores(predictions, eval_set)


@dataclass
class QAScoreConfig:
    """Settings of ``scratchbert qa-score``: a QA model scored on a SQuAD file, without training."""

    model: str = param(help="The QA model: a folder (from `scratchbert qa-finetune`), s3://bucket/prefix (a published "
                            "model) or hf://owner/name.")
    squad_dev: str = param(help="Evaluation set: a SQuAD v1.1 JSON file, s3://bucket/key.json, or hf://owner/name[?split=validation].")
    out: str = param(help="Output folder for metrics.json and predictions.json.")
    max_seq_len: int = param(0, help="Tokens per window; 0 uses the windows the model was fine-tuned with.")
    doc_stride: int = param(0, help="Tokens of overlap between windows; 0 as the model was fine-tuned (or a third of the window).")
    max_answer_len: int = param(0, help="Longest answer, in tokens; 0 as the model was fine-tuned (15 if it does not say).")
    n_best: int = param(0, help="Start and end candidates combined per window; 0 as the model was fine-tuned (20 if it does not say).")
    batch_size: int = param(32, help="Windows per prediction batch.")
    max_eval_examples: int = param(0, help="Score only the first N questions; 0 scores all.")
    bf16: str = param("auto", help="bfloat16 mixed precision: auto is on where the hardware has it, as in fine-tuning.",
                      choices=("auto", "true", "false"))
    repair_answer_starts: bool = param(True, help="Move an answer_start that does not point at its answer text to the nearest occurrence.")
    overwrite: bool = param(False, help="Replace an existing --out that another stage or a person wrote.")

    def validate(self) -> None:
        check_source(self.model, "--model")
        check_source(self.squad_dev, "--squad-dev")
        check((self.max_seq_len == 0 or self.max_seq_len >= 16, f"--max-seq-len {self.max_seq_len} is too small; use at least 16, or 0"),
              (self.doc_stride >= 0, f"--doc-stride {self.doc_stride} must not be negative"),
              (self.max_answer_len >= 0, f"--max-answer-len {self.max_answer_len} must be at least 1, or 0 as fine-tuned"),
              (self.n_best >= 0, f"--n-best {self.n_best} must be at least 1, or 0 as fine-tuned"),
              (self.batch_size >= 1, f"--batch-size {self.batch_size} must be at least 1"),
              (self.max_eval_examples >= 0, "--max-eval-examples must not be negative (0 scores all)"))
        check_choices(self)


def score_qa(cfg: QAScoreConfig) -> dict:
    """Score a QA model on a SQuAD v1.1 file: the same windows, post-processing and EM/F1 as at
    the end of its fine-tuning; ``metrics.json`` and ``predictions.json`` go to ``cfg.out``."""
    cfg.validate()
    check_output(cfg.out, stage="qa-score", inputs=[cfg.model, cfg.squad_dev], overwrite=cfg.overwrite)
    with tempfile.TemporaryDirectory(prefix="scratchbert-qa-model-") as tmp:
        model_dir = _model_folder(cfg.model, tmp)
        return _score(cfg, model_dir)


def _score(cfg: QAScoreConfig, model_dir: Path) -> dict:
    t0 = time.perf_counter()
    with atomic_output_dir(cfg.out, stage="qa-score", inputs=[cfg.model, cfg.squad_dev], overwrite=cfg.overwrite) as out:
        windows = predict_windows(model_dir, cfg.squad_dev, max_seq_len=cfg.max_seq_len, doc_stride=cfg.doc_stride,
                                  batch_size=cfg.batch_size, max_examples=cfg.max_eval_examples, bf16=cfg.bf16,
                                  repair_answer_starts=cfg.repair_answer_starts, name=cfg.model)
        max_answer_len, n_best = postprocess_settings(cfg.max_answer_len, cfg.n_best, windows.config)
        predictions, _ = postprocess_predictions(windows.eval_set, windows.features, windows.start_logits,
                                                 windows.end_logits, n_best=n_best, max_answer_len=max_answer_len)
        scores = squad_scores(predictions, windows.eval_set)
        metrics = {"exact_match": float(scores["exact_match"]), "f1": float(scores["f1"]),
                   "eval_examples": len(windows.eval_set), "eval_features": len(windows.features),
                   "max_seq_len": windows.max_seq_len, "doc_stride": windows.doc_stride,
                   "max_answer_len": max_answer_len, "n_best": n_best,
                   "eval_seconds": round(time.perf_counter() - t0, 3), "answer_starts_repaired": windows.answer_starts_repaired,
                   "questions_truncated": windows.questions_truncated, "bf16": int(windows.bf16)}
        write_json(out / "metrics.json", metrics)
        write_json(out / "predictions.json", predictions)
    log.info("SQuAD scores of %s: EM %.2f, F1 %.2f", cfg.model, metrics["exact_match"], metrics["f1"])
    return metrics


@dataclass
class WindowLogits:
    """A QA model's start and end logits on every window of a SQuAD file, and what they came from."""

    eval_set: datasets.Dataset  # the questions, as load_squad and fit_questions left them
    features: datasets.Dataset  # their windows (build_features, train=False)
    start_logits: np.ndarray  # (windows, tokens), float32
    end_logits: np.ndarray
    max_seq_len: int
    doc_stride: int
    answer_starts_repaired: int
    questions_truncated: int
    bf16: bool
    config: Any = None  # the model's config: what it was fine-tuned with (postprocess_settings)


def predict_windows(model_dir: str | os.PathLike, squad: str, *, max_seq_len: int = 0, doc_stride: int = 0,
                    batch_size: int = 32, max_examples: int = 0, bf16: str = "auto", repair_answer_starts: bool = True,
                    name: str = "") -> WindowLogits:
    """A QA model folder's logits on the windows of ``squad`` (a SQuAD source, as :func:`load_squad`
    reads): the windows the model was fine-tuned with unless given, predicted as fine-tuning's
    scoring does (the Trainer, bf16 where the hardware has it). ``name`` is the model as the
    user gave it, for messages. Post-processing is left to the caller, so that one prediction can
    be turned into answers in several ways (``benchmarks/qa_postprocess.py``)."""
    import torch
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from scratchbert.modeling import check_model_kind, check_tokenizer_matches, qa_model_class, resolve_attention

    name = name or str(model_dir)
    tokenizer, config = _load_tokenizer_and_config(model_dir, "QA model folder", name, "qa-finetune")
    check_model_kind(Path(model_dir), config, "question-answering",
                     f"fine-tune it first (`scratchbert qa-finetune --model {name} ...`) and score the model that writes", name)
    check_tokenizer_matches(config, tokenizer, name, str(model_dir))
    max_pos = getattr(config, "max_position_embeddings", DEFAULT_WINDOW)
    max_seq_len, doc_stride = window_settings(max_seq_len, doc_stride, max_pos, _trained_window(config))
    _check_windows(tokenizer, max_seq_len, doc_stride, max_pos, name)
    on = use_bf16(bf16)
    eval_set, repaired = load_squad(squad, split="validation", repair_answer_starts=repair_answer_starts,
                                    max_examples=max_examples or None)
    eval_set, cut = fit_questions(eval_set, tokenizer, max_seq_len, doc_stride)
    features = build_features(eval_set, tokenizer, max_seq_len, doc_stride, train=False)
    model = qa_model_class().from_pretrained(model_dir, local_files_only=True, attn_implementation=resolve_attention("auto", "bf16" if on else "fp32"))
    with tempfile.TemporaryDirectory(prefix="scratchbert-qa-predict-") as tmp:
        args = TrainingArguments(output_dir=tmp, per_device_eval_batch_size=batch_size, bf16=on,
                                 use_cpu=not torch.cuda.is_available(), report_to=["none"], disable_tqdm=progress.hidden())
        trainer = Trainer(model=model, args=args, processing_class=tokenizer,
                          data_collator=DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if on else None))
        start_logits, end_logits = _window_logits(trainer, features)
    return WindowLogits(eval_set, features, start_logits, end_logits, max_seq_len, doc_stride, repaired, cut, on, config)


def _window_logits(trainer, features) -> tuple[np.ndarray, np.ndarray]:
    """Start and end logits (float32) of ``trainer``'s model on every window of ``features``."""
    output = trainer.predict(features.remove_columns(["example_id", "offset_mapping", "word_offsets"]))
    return tuple(np.asarray(x, dtype=np.float32) for x in output.predictions[:2])


# --------------------------------------------------------------------------------------------
# Answering with a fine-tuned model
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _cached_qa_model(path: str, _stamp: float, name: str):
    """Load model and tokenizer once per folder version (``_stamp``: config.json's mtime); ``name``
    is the model as the user gave it, for messages."""
    from transformers import BertForQuestionAnswering

    from scratchbert.modeling import check_model_kind, check_tokenizer_matches

    tokenizer, config = _load_tokenizer_and_config(path, "QA model folder", name, "qa-finetune")
    check_model_kind(path, config, "question-answering",
                     f"fine-tune it first (`scratchbert qa-finetune --model {name} ...`) and ask the model that writes", name)
    check_tokenizer_matches(config, tokenizer, name, path)
    import torch

    with progress.no_loading_bar():
        model = BertForQuestionAnswering.from_pretrained(path, local_files_only=True)
    if torch.cuda.is_available():  # a GPU answers a book-long context in a fraction of a CPU's time
        model = model.to("cuda")
    model.eval()
    return tokenizer, model


ANSWER_BATCH = 32  # windows that answer() puts through the model at once


def answer(model_dir: str | os.PathLike, question: str, context: str, top_k: int = 1, *, max_seq_len: int = 0,
           doc_stride: int = 0, max_answer_len: int = 0, n_best: int = 0) -> list[dict]:
    """Answer ``question`` from ``context`` with a fine-tuned QA model: a folder (e.g.
    ``finetune_qa``'s out), or ``s3://`` / ``hf://`` as ``qa-score`` takes it, fetched only once
    the question, context and ``top_k`` are known to be good.

    Returns up to ``top_k`` dicts ``text`` (a span of ``context``), ``score`` (probability
    among the candidates), ``start`` and ``end`` (character offsets: ``context[start:end] ==
    text``), best first (the first is the model's answer, as ``qa-score`` scores it). Each
    answer comes once, at its best-scored place: spans that the SQuAD metric would count as the
    same answer (a name that occurs twice, "the Nile" and "Nile") are not listed again. Long
    contexts are cut into overlapping windows as in training, and the windows and
    post-processing left at 0 are those the model was fine-tuned with.
    """
    import torch

    if not question.strip():
        raise ScratchBertError("the question (--question) is empty; ask something")
    if not context.strip():
        raise ScratchBertError("the context (--context) is empty; pass the passage that holds the answer")
    if top_k < 1:
        raise ScratchBertError(f"--top-k {top_k} must be at least 1")
    check_text(question, "the question (--question)")
    check_text(context, "the context (--context)")
    where = str(model_dir)
    with tempfile.TemporaryDirectory(prefix="scratchbert-qa-model-") as tmp:
        path = _model_folder(where, tmp)
        config = path / "config.json"  # its time keys the cache; a folder without it is refused by the loading
        tokenizer, model = _cached_qa_model(str(path.resolve()), config.stat().st_mtime if config.is_file() else 0.0, where)
    max_seq_len, doc_stride = window_settings(max_seq_len, doc_stride, model.config.max_position_embeddings,
                                              _trained_window(model.config))
    _check_windows(tokenizer, max_seq_len, doc_stride, model.config.max_position_embeddings, where)
    if not tokenizer(question, add_special_tokens=False, split_special_tokens=True)["input_ids"]:  # only control or zero-width characters
        raise ScratchBertError(f"--question {question!r} holds nothing the model's tokenizer reads; ask in words")
    questions, _ = _truncate_questions(tokenizer, [question], question_token_limit(tokenizer, max_seq_len, doc_stride))
    examples = {"id": ["q"], "question": questions, "context": [context]}
    max_answer_len, n_best = postprocess_settings(max_answer_len, n_best, model.config)
    features = prepare_eval_features(examples, tokenizer, max_seq_len, doc_stride)
    if not any(o is not None for offsets in features["offset_mapping"] for o in offsets):
        raise ScratchBertError(f"--context {context[:40]!r} holds nothing the model's tokenizer reads "
                               "(only control or zero-width characters); pass the passage that holds the answer")
    names = [k for k in ("input_ids", "token_type_ids", "attention_mask") if k in features]
    width = max(len(ids) for ids in features["input_ids"])
    logits: list[tuple[np.ndarray, np.ndarray]] = []
    with torch.inference_mode():  # a few windows at a time: a book-long context must not need its memory at once
        for i in range(0, len(features["input_ids"]), ANSWER_BATCH):
            batch = tokenizer.pad({k: features[k][i:i + ANSWER_BATCH] for k in names}, padding="max_length",
                                  max_length=width, return_tensors="pt")
            out = model(**{k: v.to(model.device) for k, v in batch.items()})
            logits.append((out.start_logits.float().cpu().numpy(), out.end_logits.float().cpu().numpy()))
    start_logits, end_logits = np.concatenate([s for s, _ in logits]), np.concatenate([e for _, e in logits])

    def candidates(pool: int) -> list[dict]:  # spans only, not the empty answer scoring gives where a pool has none
        return [c for c in postprocess_predictions(examples, features, start_logits, end_logits, n_best=pool,
                                                   max_answer_len=max_answer_len)[1]["q"] if c["end"] > c["start"]]

    # The model's n_best candidates come as fine-tuning scored them: the best answer is the same
    # however many answers are asked for. Beyond them, wider searches add spans until top_k
    # different answers (repeats of one answer took places: 13 answers of 20 asked for), or until
    # there are no more spans; the spans they find rank among the candidates by score (a start
    # outside the n_best starts can still make a span that beats some of them), after the best
    # answer, which stays the one qa-score scores. Where the n_best candidates hold no span (a
    # model fine-tuned with a tiny n_best), scoring's empty answer is no answer: the search widens.
    ranked = candidates(n_best)
    answers, found, pool = _distinct_answers(ranked, top_k), ranked, n_best
    seen = {(c["start"], c["end"]) for c in ranked}
    # a search found every span there is once it took each window's every start and end (pool >=
    # width) and kept all it found (fewer than pool)
    while len(answers) < top_k and (pool < width or len(found) == pool):
        pool = max(2 * pool, top_k)
        found = candidates(pool)
        more = sorted(ranked[1:] + [c for c in found if (c["start"], c["end"]) not in seen], key=lambda c: -c["logit"])
        answers = _distinct_answers(ranked[:1] + more, top_k)
    if not answers:
        return []
    # each score is a probability among every candidate considered: the n_best, and all a wider
    # search found (scored against the n_best alone, a span that beat them had 'scores' above 1000)
    kept = np.array([c["logit"] for c in {(c["start"], c["end"]): c for c in ranked + found}.values()])
    top, total = kept.max(), np.exp(kept - kept.max()).sum()
    return [{"text": a["text"], "score": float(np.exp(a["logit"] - top) / total), "start": a["start"], "end": a["end"]}
            for a in answers]


def _distinct_answers(candidates: list[dict], top_k: int) -> list[dict]:
    """The first ``top_k`` of ``candidates`` (best first) that are different answers by the SQuAD
    v1.1 metric's own normalisation, each at its best-scored place."""
    from scratchbert.metrics.squad_v1.squad_v1 import normalize_answer

    answers, seen = [], set()
    for c in candidates:
        same = normalize_answer(c["text"]) or c["text"]  # punctuation alone normalises to nothing
        if same not in seen:
            seen.add(same)
            answers.append({k: c[k] for k in ("text", "logit", "start", "end")})
    return answers[:top_k]


__all__ = [
    "QAConfig", "QAScoreConfig", "answer", "score_qa", "build_features", "check_answers", "finetune_qa", "fit_questions", "load_squad",
    "postprocess_predictions", "postprocess_settings", "prepare_eval_features", "prepare_train_features", "question_token_limit",
    "squad_metric", "squad_scores",
]
