"""Documents -> masked-LM + next-sentence-prediction examples, the way BERT built them, for a
corpus of any size.

The examples follow ``create_instances_from_document`` of Google's ``create_pretraining_data.py``:
sentences of one document are gathered into segments until a target length is reached
(shorter with probability ``short_seq_prob``), split at a random sentence boundary into A
and B; half of the time B is replaced by sentences from a *different* document (label 1),
and the longer side is truncated (alternating front and back) to fit. Masking is *not*
stored: :class:`MlmNspCollator` masks dynamically at batch time (80/10/10), so each epoch
sees new masks and the stored dataset holds only ``input_ids``, ``token_type_ids``,
``next_sentence_label`` and ``length``.

How a corpus of any size goes through in constant memory:

* the corpus is read as a stream (:func:`scratchbert.corpus.iter_documents`) and cut into
  **groups** of consecutive documents (about 1 MiB of text, or 256 documents, at least 8);
  every ``1 / validation_fraction``-th document goes to the validation split instead;
* each group becomes examples on its own, in a worker process (``num_proc``), with a random
  generator seeded by the group's number: the random next segments of NSP come from the
  *other documents of the same group*, as BERT's came from the other documents of the same
  input file, and the examples do not depend on the number of workers or parts;
* a few groups are in flight at a time; their examples go, in group order, into Arrow
  shards of bounded size with an index (:mod:`scratchbert.shards`);
* **parts** (``corpus_parts`` > 1): part k keeps the groups whose number is k modulo the
  part count, so N tasks build a corpus in parallel (each reads the stream, and turns only
  its groups into examples), and :func:`merge_datasets` gathers their shards into one
  dataset, the same examples as one task would have made.

transformers 5 no longer ships ``TextDatasetForNextSentencePrediction``; this stage is ours.
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from scratchbert import progress, shards
from scratchbert.errors import ScratchBertError
from scratchbert.modeling import masked_positions
from scratchbert.outputs import atomic_output_dir, check_output, local_folder, local_path, write_json
from scratchbert.params import check, check_source, finite, param

DATASET_INFO = shards.INDEX
STAGE = "dataset"
# The shortest example that holds two segments, and the longest BERT position table this
# project builds (the `length` column is int16, so it must stay below 32,768 anyway).
MIN_SEQ_LEN = 8
MAX_SEQ_LEN = 8192
GROUP_BYTES = 1 << 20  # a group closes at about this much text ...
GROUP_DOCUMENTS = 256  # ... or this many documents,
MIN_GROUP_DOCUMENTS = 8  # but never with fewer than this (NSP draws its negatives within the group)
ENCODE_BATCH = 10_000  # sentences encoded together in a worker
IN_FLIGHT_PER_WORKER = 2  # groups queued per worker: enough to keep it busy, few enough to bound memory
MAX_PARTS = 1000


@dataclass
class DatasetConfig:
    """Settings of the dataset stage (``scratchbert dataset``)."""

    corpus: str = param(help="The training corpus, in any form the tokenizer stage takes.")
    tokenizer: str = param(help="Tokenizer folder (from `scratchbert tokenizer`).")
    out: str = param(help="Output folder: the train/validation shards and their index, the tokenizer and metrics.json.")
    max_seq_len: int = param(128, help="Tokens per example, [CLS] and [SEP]s included.")
    short_seq_prob: float = param(0.1, help="Probability that an example aims at a shorter length (BERT's 0.1).")
    random_next_prob: float = param(0.5, help="Probability that segment B comes from another document.")
    dupe_factor: int = param(1, help="Times each training document is cut into examples, with new splits and pairings; "
                                     "more than 1 for a small corpus trained on for several epochs.")
    valid_corpus: str = param("", help="A separate validation corpus; empty holds out --validation-fraction of the documents.")
    validation_fraction: float = param(0.02, help="Fraction of the documents held out for validation (evenly spread) when there is no --valid-corpus.")
    max_corpus_bytes: int = param(0, help="Use only the first N bytes of the corpus, cut at a paragraph boundary; 0 uses all of it.")
    max_valid_corpus_bytes: int = param(0, help="Use only the first N bytes of the validation corpus; 0 uses all of it.")
    num_proc: int = param(0, help="Worker processes; 0 uses every core.")
    seed: int = param(12345, help="Random seed of the cuts, pairings and held-out documents.")
    corpus_parts: int = param(1, help="Split the corpus into N parts built separately (in the pipeline: by N parallel tasks) "
                                      "and merged with `scratchbert dataset-merge`; 1 builds the whole dataset.")
    corpus_part: int = param(0, help="Which part (0 .. corpus_parts - 1) this run builds.")
    shard_bytes: int = param(128_000_000, help="Size of each Arrow shard of examples, in bytes.")
    overwrite: bool = param(False, help="Replace an existing --out that another stage or a person wrote (a dataset folder is always replaced).")

    def validate(self) -> None:
        """Check every setting (no file is read): one line for the first that is wrong."""
        check_source(self.corpus, "--corpus")
        check_source(self.valid_corpus, "--valid-corpus", required=False)
        check((bool(str(self.tokenizer).strip()), "--tokenizer is empty; give the folder written by `scratchbert tokenizer`"),
              (MIN_SEQ_LEN <= self.max_seq_len <= MAX_SEQ_LEN,
               f"--max-seq-len {self.max_seq_len} must lie between {MIN_SEQ_LEN} (two segments need room) and {MAX_SEQ_LEN} "
               "(BERT uses 128 or 512)"),
              (finite(self.short_seq_prob) and 0 <= self.short_seq_prob <= 1, f"--short-seq-prob {self.short_seq_prob} must lie in [0, 1]"),
              (finite(self.random_next_prob) and 0 <= self.random_next_prob <= 1,
               f"--random-next-prob {self.random_next_prob} must lie in [0, 1]"),
              (self.dupe_factor >= 1, f"--dupe-factor {self.dupe_factor} must be 1 or more (times each document is turned into examples)"),
              (finite(self.validation_fraction) and 0 <= self.validation_fraction < 1,
               f"--validation-fraction {self.validation_fraction} must lie in [0, 1) (the fraction of documents held out)"),
              (self.valid_corpus or not self.validation_fraction == 0,
               "--validation-fraction 0 holds no documents out for validation; give a fraction above 0, or --valid-corpus"),
              (self.max_corpus_bytes >= 0, f"--max-corpus-bytes {self.max_corpus_bytes} must not be negative (0 uses the whole corpus)"),
              (self.max_valid_corpus_bytes >= 0,
               f"--max-valid-corpus-bytes {self.max_valid_corpus_bytes} must not be negative (0 uses all of it)"),
              (self.num_proc >= 0, f"--num-proc {self.num_proc} must not be negative; give a number of processes, or 0 for every core"),
              (1 <= self.corpus_parts <= MAX_PARTS, f"--corpus-parts {self.corpus_parts} must lie in [1, {MAX_PARTS}]"),
              (0 <= self.corpus_part < max(self.corpus_parts, 1),
               f"--corpus-part {self.corpus_part} must lie in [0, {self.corpus_parts - 1}] (there are {self.corpus_parts} parts)"),
              (self.shard_bytes >= 4096, f"--shard-bytes {self.shard_bytes} must be at least 4096 (128000000 is usual)"))
        overlap = self.valid_corpus and _overlap(str(self.valid_corpus), str(self.corpus))
        if overlap:
            raise ScratchBertError(f"--valid-corpus {self.valid_corpus} {overlap} --corpus {self.corpus}: its text would be "
                                   "trained on as well as held out; give held-out text apart from the corpus, or leave "
                                   "--valid-corpus out to hold out --validation-fraction of the corpus's documents")


def _overlap(valid: str, corpus: str) -> str | None:
    """How ``valid`` stands to ``corpus`` ("is", "is inside", "contains"), where one holds the
    other's text (local paths resolved, s3:// addresses by their keys); None when apart."""
    from pathlib import PurePosixPath

    from scratchbert.outputs import relation_to

    a, b = local_path(valid), local_path(corpus)
    if a and b:
        return relation_to(a, b)
    if valid.startswith("s3://") and corpus.startswith("s3://"):  # keys compare as paths (a trailing / dropped)
        return relation_to(PurePosixPath(valid), PurePosixPath(corpus))
    return None  # hf:// datasets, or one local and one remote: apart


def tokenizer_fingerprint(tokenizer) -> str:
    """A short hash of the vocabulary: a model, dataset and tokenizer must agree on it."""
    from scratchbert.tokenizer import fingerprint

    return fingerprint(tokenizer)


def _truncate_pair(a: list[int], b: list[int], max_tokens: int, rng: random.Random) -> None:
    while len(a) + len(b) > max_tokens:
        longer = a if len(a) > len(b) else b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


def _pieces(ids: list[int], max_tokens: int) -> list[list[int]]:
    """A sentence as examples take it: whole up to two examples' ``max_tokens``, else cut in pieces
    of half an example. Text without stops the splitter knows (a transcript, Thai) is a sentence a
    paragraph: whole, each example held one sentence, so every next sentence was a random one and
    the rest of the paragraph was cut away, a token at a time. Sentences of one or two examples
    stay whole, as in BERT's recipe (1.1% of the tokens of enwiki at 64-token examples are in
    longer ones, 11% in sentences longer than one example)."""
    if len(ids) <= 2 * max_tokens:
        return [ids]
    half = max_tokens // 2
    return [ids[i:i + half] for i in range(0, len(ids), half)]


def _instances(doc_index: int, docs: list[list[list[int]]], max_seq_len: int, short_seq_prob: float,
               random_next_prob: float, rng: random.Random, cls_id: int, sep_id: int):
    """Yield (input_ids, length of [CLS] A [SEP], is_random_next) for one document (BERT's algorithm)."""
    document = docs[doc_index]
    max_tokens = max_seq_len - 3
    target = rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens
    chunk: list[list[int]] = []
    length = 0
    i = 0
    while i < len(document):
        chunk.append(document[i])
        length += len(document[i])
        if i == len(document) - 1 or length >= target:
            if chunk:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                a = [t for s in chunk[:a_end] for t in s]
                b: list[int] = []
                is_random = len(chunk) == 1 or rng.random() < random_next_prob
                if is_random:
                    b_target = target - len(a)
                    if len(docs) < 2:
                        return  # no other document to draw a negative from
                    other = rng.randrange(len(docs) - 1)
                    other += other >= doc_index  # any document but this one
                    rdoc = docs[other]
                    for j in range(rng.randrange(len(rdoc)), len(rdoc)):  # indexed: a slice would copy the rest of a long document
                        b.extend(rdoc[j])
                        if len(b) >= b_target:
                            break
                    i -= len(chunk) - a_end  # the unused sentences go back into the stream
                else:
                    b = [t for s in chunk[a_end:] for t in s]
                if a and b:
                    _truncate_pair(a, b, max_tokens, rng)
                    yield [cls_id, *a, sep_id, *b, sep_id], len(a) + 2, int(is_random)
            chunk, length = [], 0
        i += 1


# --- one group of documents -> examples (run in the worker processes) -------------------------

@dataclass(frozen=True)
class _Settings:
    """What every worker needs: the tokenizer (as JSON) and the example parameters."""

    tokenizer_json: str
    cls_id: int
    sep_id: int
    vocab_size: int
    max_seq_len: int
    short_seq_prob: float
    random_next_prob: float
    seed: int


_WORKER: dict = {}


def _init_worker(settings: _Settings) -> None:
    """Pool initializer: one single-threaded tokenizer per worker process (the workers are the parallelism)."""
    from tokenizers import Tokenizer

    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    tokenizer = Tokenizer.from_str(settings.tokenizer_json)
    tokenizer.encode_special_tokens = True  # "[SEP]" or "[MASK]" written in the text is text, not a special token
    _WORKER.update(settings=settings, tokenizer=tokenizer)


def _group_examples(task: tuple[str, int, list[str], int]) -> dict:
    """(split, group number, texts, dupe factor) -> the group's examples as flat arrays, and counts.

    The random generator is seeded by the group's number (and the split), so a group's
    examples are the same in whichever worker, task or part it is made.
    """
    from scratchbert.corpus import split_sentences

    split, group, texts, dupe = task
    s, tok = _WORKER["settings"], _WORKER["tokenizer"]
    sentences = [split_sentences(text) for text in texts]
    flat = [x for doc in sentences for x in doc]
    # The Rust tokenizer's ``encode_batch_fast`` skips the character offsets that the
    # transformers wrapper computes and converts: a quarter of this stage's time. Its encodings
    # (about a KB each) are kept only for a batch: a group of many short lines holds millions.
    encoded = [e.ids for i in range(0, len(flat), ENCODE_BATCH)
               for e in tok.encode_batch_fast(flat[i:i + ENCODE_BATCH], add_special_tokens=False)]
    docs, k = [], 0
    for doc in sentences:
        ids = [piece for e in encoded[k:k + len(doc)] if e for piece in _pieces(e, s.max_seq_len - 3)]
        k += len(doc)
        if ids:  # a document can normalise to nothing (e.g. only control characters)
            docs.append(ids)
    seed = s.seed if split == "train" else s.seed + 1
    rng = random.Random(seed * 1_000_003 + group)
    ids_out: list[int] = []
    offsets, a_lengths, labels = [0], [], []
    for _ in range(dupe):
        for d in range(len(docs)):
            for ids, a_len, label in _instances(d, docs, s.max_seq_len, s.short_seq_prob, s.random_next_prob, rng,
                                                s.cls_id, s.sep_id):
                ids_out.extend(ids)
                offsets.append(len(ids_out))
                a_lengths.append(a_len)
                labels.append(label)
    ids_arr = np.asarray(ids_out, dtype=np.int32)
    offsets_arr = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets_arr)
    # token_type_ids: 0 over [CLS] A [SEP], 1 over B [SEP]
    position = np.arange(len(ids_arr)) - np.repeat(offsets_arr[:-1], lengths)
    types = (position >= np.repeat(np.asarray(a_lengths, dtype=np.int64), lengths)).astype(np.int8)
    counts = np.bincount(ids_arr, minlength=s.vocab_size)[:s.vocab_size] if split == "train" else None
    return {"split": split, "ids": ids_arr, "offsets": offsets_arr, "types": types,
            "labels": np.asarray(labels, dtype=np.int8), "documents": len(texts), "token_counts": counts}


# --- the stream of groups ---------------------------------------------------------------------

class _Grouper:
    """Cuts a stream of documents into groups; the last group, when small, joins the one before."""

    def __init__(self):
        self.current: list[str] = []
        self.size = 0
        self.ready: list[str] | None = None  # one finished group held back for the end's small remainder

    def add(self, doc: str) -> list[list[str]]:
        self.current.append(doc)
        self.size += len(doc)
        full = len(self.current) >= GROUP_DOCUMENTS or (self.size >= GROUP_BYTES and len(self.current) >= MIN_GROUP_DOCUMENTS)
        if not full:
            return []
        out = [self.ready] if self.ready is not None else []
        self.ready, self.current, self.size = self.current, [], 0
        return out

    def finish(self) -> list[list[str]]:
        if self.ready is not None and len(self.current) < MIN_GROUP_DOCUMENTS:
            return [self.ready + self.current]
        return [g for g in (self.ready, self.current) if g]


def _held_out(validation_fraction: float, seed: int):
    """Whether document i is held out: evenly spread, every ``1/fraction``-th, from a seeded offset."""
    offset = random.Random(seed).random()
    f = validation_fraction
    return lambda i: int((i + 1) * f + offset) > int(i * f + offset)


def _tasks(cfg: DatasetConfig, seen: dict, bar=None) -> Iterator[tuple[str, int, list[str], int]]:
    """The groups this part turns into examples, in order, as (split, group number, texts, dupe factor).

    ``seen`` counts the documents of every split (owned by this part or not) as they pass, and
    ``bar`` their bytes.
    """
    from scratchbert.corpus import document_bytes, iter_documents

    groupers = {split: _Grouper() for split in shards.SPLITS}
    numbers = {split: 0 for split in shards.SPLITS}

    def emit(split: str, groups: list[list[str]]):
        for texts in groups:
            g = numbers[split]
            numbers[split] += 1
            if g % cfg.corpus_parts == cfg.corpus_part:
                yield split, g, texts, cfg.dupe_factor if split == "train" else 1

    held_out = None if cfg.valid_corpus else _held_out(cfg.validation_fraction, cfg.seed)
    for i, doc in enumerate(iter_documents(cfg.corpus, cfg.max_corpus_bytes or None)):
        split = "validation" if held_out is not None and held_out(i) else "train"
        seen[split] += 1
        if bar is not None:
            progress.advance(bar, document_bytes(doc))
        yield from emit(split, groupers[split].add(doc))
    yield from emit("train", groupers["train"].finish())
    if cfg.valid_corpus:
        for doc in iter_documents(cfg.valid_corpus, cfg.max_valid_corpus_bytes or None):
            seen["validation"] += 1
            if bar is not None:
                progress.advance(bar, document_bytes(doc))
            yield from emit("validation", groupers["validation"].add(doc))
    yield from emit("validation", groupers["validation"].finish())


def _results(tasks: Iterable, settings: _Settings, num_proc: int) -> Iterator[dict]:
    """Each task's examples, in task order; with several workers, a bounded number in flight."""
    if num_proc <= 1:
        saved = os.environ.get("TOKENIZERS_PARALLELISM")
        _init_worker(settings)
        try:
            for task in tasks:
                yield _group_examples(task)
        finally:
            _WORKER.clear()
            if saved is None:
                os.environ.pop("TOKENIZERS_PARALLELISM", None)
            else:
                os.environ["TOKENIZERS_PARALLELISM"] = saved
        return
    import multiprocessing

    # spawn: light workers (no copy of this process), and no fork of a process whose Rust
    # and Arrow thread pools may be running. Python's Pool.imap would read the whole corpus
    # ahead into its queue, hence the bounded window of apply_async results.
    with multiprocessing.get_context("spawn").Pool(num_proc, initializer=_init_worker, initargs=(settings,)) as pool:
        pending: collections.deque = collections.deque()
        for task in tasks:
            pending.append(pool.apply_async(_group_examples, (task,)))
            while len(pending) >= IN_FLIGHT_PER_WORKER * num_proc:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


# --- the stage --------------------------------------------------------------------------------

def build_parameters(cfg: DatasetConfig) -> dict:
    """The settings that decide the examples (recorded in the index; parts must agree on them)."""
    values = asdict(cfg)
    for name in ("out", "tokenizer", "num_proc", "corpus_part", "overwrite"):
        values.pop(name)
    for name in ("corpus", "valid_corpus"):  # ./text.txt and text.txt are one corpus, for parts built in other folders
        values[name] = str(local_path(values[name]) or values[name])
    return values


def build_dataset(cfg: DatasetConfig) -> dict:
    """Build the MLM+NSP dataset (or, with ``corpus_parts`` > 1, part ``corpus_part`` of it) into
    ``cfg.out``; return its statistics (also ``metrics.json``)."""
    cfg.validate()
    inputs = [cfg.corpus, cfg.valid_corpus, cfg.tokenizer]
    check_output(cfg.out, stage=STAGE, inputs=inputs, overwrite=cfg.overwrite)

    from scratchbert.corpus import corpus_bytes

    t0 = time.perf_counter()
    tok = _cached_tokenizer(str(local_folder(cfg.tokenizer, "--tokenizer").resolve()))
    num_proc = cfg.num_proc or os.cpu_count() or 1
    settings = _Settings(tokenizer_json=tok.backend_tokenizer.to_str(), cls_id=tok.cls_token_id, sep_id=tok.sep_token_id,
                         vocab_size=len(tok), max_seq_len=cfg.max_seq_len, short_seq_prob=cfg.short_seq_prob,
                         random_next_prob=cfg.random_next_prob, seed=cfg.seed)
    seen = {split: 0 for split in shards.SPLITS}
    totals = {split: {"documents": 0, "examples": 0, "tokens": 0, "random_next": 0} for split in shards.SPLITS}
    counts = np.zeros(len(tok), dtype=np.int64)
    with atomic_output_dir(cfg.out, stage=STAGE, inputs=inputs, overwrite=cfg.overwrite) as tmp:
        prefix = f"part-{cfg.corpus_part:05d}"
        writers = {split: shards.ShardWriter(tmp, split, prefix, cfg.shard_bytes) for split in shards.SPLITS}
        size = None if cfg.valid_corpus else corpus_bytes(cfg.corpus)
        if size is not None and cfg.max_corpus_bytes:
            size = min(size, cfg.max_corpus_bytes)
        with progress.bar(total=size, unit="B", unit_scale=True, desc="MLM+NSP examples") as bar:
            for r in _results(_tasks(cfg, seen, bar), settings, num_proc):
                writers[r["split"]].write(r["ids"], r["offsets"], r["types"], r["labels"])
                t = totals[r["split"]]
                t["documents"] += r["documents"]
                t["examples"] += len(r["labels"])
                t["tokens"] += len(r["ids"])
                t["random_next"] += int(r["labels"].sum())
                if r["token_counts"] is not None:
                    counts += r["token_counts"]
        splits = {split: {**totals[split], "shards": writers[split].close()} for split in shards.SPLITS}
        index = {"max_seq_len": cfg.max_seq_len, "vocab_size": len(tok), "tokenizer_fingerprint": tokenizer_fingerprint(tok),
                 "corpora": [c for c in (cfg.corpus, cfg.valid_corpus) if c], "build": build_parameters(cfg),
                 "splits": splits, "corpus_documents": seen}
        if cfg.corpus_parts > 1:
            index["part"] = {"index": cfg.corpus_part, "count": cfg.corpus_parts}
        else:
            _check_complete(cfg.corpus, cfg.valid_corpus, seen, splits, build_parameters(cfg))
        np.save(tmp / shards.TOKEN_COUNTS, counts)
        tok.save_pretrained(tmp / "tokenizer")
        shards.write_index(tmp, index)
        stats = _statistics(index, time.perf_counter() - t0)
        write_json(tmp / "metrics.json", stats)
    return stats


def _check_complete(corpus: str, valid_corpus: str, seen: dict, splits: dict, build: dict) -> None:
    """The checks that need the whole dataset: enough documents and some training examples."""
    n_train, n_valid = seen["train"], seen["validation"]
    # where a byte limit cut the corpus, the documents counted are those of its first bytes
    cut, valid_cut = (f" in its first {build[k]:,} bytes ({flag})" if build.get(k) else ""
                      for k, flag in (("max_corpus_bytes", "--max-corpus-bytes"), ("max_valid_corpus_bytes", "--max-valid-corpus-bytes")))
    raise_cut = ", or raise --max-corpus-bytes" if cut else ""
    if not valid_corpus and n_train + n_valid < 2 or valid_corpus and n_train < 2:
        n = n_train if valid_corpus else n_train + n_valid  # a --valid-corpus's documents are not the corpus's
        raise ScratchBertError(f"corpus {corpus} has {n} document{'s' if n != 1 else ''}{cut}; next-sentence prediction needs at least two (separate documents with a blank line{raise_cut})")
    if valid_corpus and n_valid < 2:
        raise ScratchBertError(f"validation corpus {valid_corpus} has fewer than two documents{valid_cut}; NSP needs at least two"
                               + ("; raise --max-valid-corpus-bytes" if valid_cut else ""))
    if not valid_corpus and (n_valid < 2 or n_train < 2):
        raise ScratchBertError(f"corpus {corpus} has only {n_train + n_valid} documents{cut}, too few to hold out {n_valid} (at least two) for validation and keep two for training; add documents{raise_cut.replace(', or', ',')}, raise --validation-fraction or pass --valid-corpus")
    if splits["train"]["examples"] == 0:
        raise ScratchBertError(f"corpus {corpus} produced no training examples; it needs documents of several sentences")
    if splits["validation"]["examples"] == 0:  # pretraining then reports no validation loss, and evaluate fails
        where = f"validation corpus {valid_corpus}" if valid_corpus else f"the {n_valid} documents held out of corpus {corpus}"
        raise ScratchBertError(f"{where} produced no validation examples: no text is left of them after the tokenizer's "
                               "normalisation; give documents of text")


def _statistics(index: dict, seconds: float) -> dict:
    build = index["build"]
    stats = {"seconds": round(seconds, 3), "max_seq_len": index["max_seq_len"], "dupe_factor": build["dupe_factor"],
             "corpus_parts": build["corpus_parts"]}
    for split, t in index["splits"].items():
        n, tokens = t["examples"], t["tokens"]
        stats.update({f"{split}_documents": t["documents"], f"{split}_examples": n, f"{split}_tokens": tokens,
                      f"{split}_shards": len(t["shards"]),
                      f"{split}_mean_length": tokens / n if n else 0.0,
                      f"{split}_random_next_fraction": t["random_next"] / n if n else 0.0,
                      f"{split}_padding_fraction_if_padded_to_max": 1 - tokens / (n * index["max_seq_len"]) if n else 0.0})
    return stats


@dataclass
class DatasetMergeConfig:
    """Settings of ``scratchbert dataset-merge``: gather the parts of a dataset built with --corpus-parts."""

    parts: str = param(help="The part folders (from `scratchbert dataset --corpus-parts N --corpus-part k`), separated by commas.")
    out: str = param(help="Output folder of the whole dataset.")
    overwrite: bool = param(False, help="Replace an existing --out that another stage or a person wrote (a dataset folder is always replaced).")


def _build_differences(build: dict, other: dict) -> list[str]:
    """The names of the settings (:func:`build_parameters`) that differ between two parts' builds."""
    return sorted(k for k in set(build) | set(other) if build.get(k) != other.get(k))


def merge_datasets(cfg: DatasetMergeConfig | None = None, *, parts: list[str | os.PathLike] | None = None,
                   out: str | os.PathLike | None = None, overwrite: bool | None = None) -> dict:
    """Gather the shards of every part into one dataset (hard links where the filesystem allows,
    copies elsewhere) with one index; return its statistics (also ``metrics.json``)."""
    t0 = time.perf_counter()
    folders = [Path(p) for p in (parts if parts is not None else [p.strip() for p in cfg.parts.split(",") if p.strip()])]
    out = Path(out if out is not None else cfg.out)
    overwrite = overwrite if overwrite is not None else bool(cfg and cfg.overwrite)
    if not folders:
        raise ScratchBertError("no dataset parts to merge; give the part folders separated by commas")
    indexes = [shards.read_index(f, complete=False) for f in folders]
    first = indexes[0]
    count = first.get("part", {}).get("count", 1)
    found = sorted(ix.get("part", {}).get("index", 0) for ix in indexes)
    if found != list(range(count)):
        raise ScratchBertError(f"the parts given are {found} of {count}; give each of the {count} parts exactly once")
    for folder, ix in zip(folders, indexes):
        differ = _build_differences(ix["build"], first["build"]) + \
            [key for key in ("tokenizer_fingerprint", "max_seq_len") if ix[key] != first[key]]
        if differ:
            raise ScratchBertError(f"dataset part {folder} was built with other settings ({', '.join(differ)}) than "
                                   f"{folders[0]}; build every part with the same settings")
    order = sorted(range(len(folders)), key=lambda i: indexes[i].get("part", {}).get("index", 0))
    splits = {split: {"documents": 0, "examples": 0, "tokens": 0, "random_next": 0, "shards": []} for split in shards.SPLITS}
    counts = None
    with atomic_output_dir(out, stage=STAGE, inputs=folders, overwrite=overwrite) as tmp:
        for i in order:
            folder, ix = folders[i], indexes[i]
            for split in shards.SPLITS:
                part = ix["splits"][split]
                for key in ("documents", "examples", "tokens", "random_next"):
                    splits[split][key] += part[key]
                for entry in part["shards"]:
                    (tmp / entry["file"]).parent.mkdir(parents=True, exist_ok=True)
                    _link_or_copy(folder / entry["file"], tmp / entry["file"])
                    splits[split]["shards"].append(entry)
            part_counts = np.load(folder / shards.TOKEN_COUNTS)
            counts = part_counts if counts is None else counts + part_counts
        seen = first["corpus_documents"]
        build = first["build"]
        _check_complete(build["corpus"], build["valid_corpus"], seen, splits, build)
        np.save(tmp / shards.TOKEN_COUNTS, counts)
        shutil.copytree(folders[0] / "tokenizer", tmp / "tokenizer")
        index = {k: v for k, v in first.items() if k not in ("part", "splits", "id", "format")}
        index = shards.write_index(tmp, {**index, "splits": splits})
        stats = _statistics(index, time.perf_counter() - t0)
        write_json(tmp / "metrics.json", stats)
    return stats


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copy2(src, dst)


_TOKENIZERS: dict = {}


def _cached_tokenizer(path: str):
    if path not in _TOKENIZERS:
        from scratchbert.tokenizer import load_tokenizer

        _TOKENIZERS[path] = load_tokenizer(path)
    return _TOKENIZERS[path]


def corpus_part_numbers(corpus_parts: int) -> list[int]:
    """``[0, 1, ..., corpus_parts - 1]``: the parts a fan-out builds (the pipeline loops over them)."""
    if not 1 <= corpus_parts <= MAX_PARTS:
        raise ScratchBertError(f"corpus parts {corpus_parts} must lie in [1, {MAX_PARTS}]")
    return list(range(corpus_parts))


def load_pretraining_dataset(path: str | Path):
    """Load a folder written by :func:`build_dataset`: (``{"train": Dataset, "validation": Dataset}``
    over the memory-mapped shards, info = the index)."""
    from datasets import DatasetDict

    index = shards.read_index(path)
    return DatasetDict({split: shards.load_split(path, split, index) for split in index["splits"]}), index


def token_counts(dataset, vocab_size: int, exclude=()) -> np.ndarray:
    """How often each token id occurs in a split's ``input_ids``; ids in ``exclude`` count 0.

    Read as Arrow batches (no Python loop over examples). A built dataset also stores the
    training split's counts (:func:`stored_token_counts`), which need no pass over the data.
    """
    import pyarrow.compute as pc

    counts = np.zeros(vocab_size, dtype=np.int64)
    for batch in dataset.with_format("arrow").iter(batch_size=50_000):
        ids = pc.list_flatten(batch["input_ids"]).to_numpy()
        counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
    counts[list(exclude)] = 0
    return counts


def stored_token_counts(path: str | Path, vocab_size: int, exclude=()) -> np.ndarray:
    """The training split's token counts as the dataset stage stored them; ids in ``exclude`` count 0."""
    counts = np.load(Path(path) / shards.TOKEN_COUNTS)[:vocab_size].astype(np.int64)
    counts[list(exclude)] = 0
    return counts


class MlmNspCollator:
    """Pads a batch and masks it dynamically: 15% of tokens, of which 80% [MASK], 10% random, 10% kept.

    The 80/10/10 replacement is transformers' ``DataCollatorForLanguageModeling.torch_mask_tokens``;
    padding and the special-token mask are done here with tensor operations because the
    stock collator pads through the tokenizer and finds special tokens with a Python loop
    per sequence, which costs more than a small model's training step on a CPU.
    ``seed`` fixes the masking (evaluation); leave it ``None`` for training, where a batch of
    :class:`scratchbert.shards.Batch` is masked from its own ``mask_seed`` (the same masks
    whenever the batch is read, so a resumed run continues exactly), and any other from the
    process's (each DataLoader worker's) random numbers. ``mlm_positions``: also return the sparse
    prediction head's rows (:func:`scratchbert.modeling.masked_positions`), found here on the
    CPU rather than by the model on the device. ``max_length``: the model's positions, which the
    padding to a multiple never passes (examples of 700 tokens padded to 704 do not fit 700).
    """

    def __init__(self, tokenizer, mlm_probability: float = 0.15, pad_to_multiple_of: int | None = 8,
                 seed: int | None = None, mlm_positions: bool = False, max_length: int | None = None):
        import torch
        from transformers import DataCollatorForLanguageModeling

        if not 0 < mlm_probability < 1:
            raise ScratchBertError(f"masking probability {mlm_probability} must lie in (0, 1)")
        self._masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=seed)
        self.pad_id = tokenizer.pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.mlm_positions = mlm_positions
        self.max_length = max_length

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        longest = max(len(e["input_ids"]) for e in examples)
        m = self.pad_to_multiple_of
        if m:
            rounded = (longest + m - 1) // m * m
            longest = min(rounded, max(self.max_length, longest)) if self.max_length else rounded
        # Filled in numpy: examples come as lists (datasets rows) or numpy views of the shards.
        ids = np.full((len(examples), longest), self.pad_id, dtype=np.int64)
        types = np.zeros((len(examples), longest), dtype=np.int64)
        mask = np.zeros((len(examples), longest), dtype=np.int64)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            ids[i, :n] = e["input_ids"]
            types[i, :n] = e["token_type_ids"]
            mask[i, :n] = 1
        input_ids, token_type_ids, attention_mask = torch.from_numpy(ids), torch.from_numpy(types), torch.from_numpy(mask)
        special = torch.isin(input_ids, self.special_ids)
        if self._masker.seed is not None and self._masker.generator is None:
            # torch_mask_tokens draws from ``generator``, which the stock collator creates
            # from ``seed`` in its own __call__ (per DataLoader worker), not here.
            self._masker.create_rng()
        keyed = self._masker.seed is None and getattr(examples, "mask_seed", None) is not None
        if keyed:
            self._masker.generator = torch.Generator().manual_seed(examples.mask_seed)
        try:
            input_ids, labels = self._masker.torch_mask_tokens(input_ids, special_tokens_mask=special)
        finally:
            if keyed:
                self._masker.generator = None
        batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
                 "labels": labels,
                 "next_sentence_label": torch.tensor([int(e["next_sentence_label"]) for e in examples])}
        if self.mlm_positions and (positions := masked_positions(labels)) is not None:
            batch["mlm_positions"] = positions
        return batch
