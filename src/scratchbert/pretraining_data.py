"""Documents -> masked-LM + next-sentence-prediction examples, the way BERT built them.

This follows ``create_instances_from_document`` of Google's ``create_pretraining_data.py``:
sentences of one document are gathered into segments until a target length is reached
(shorter with probability ``short_seq_prob``), split at a random sentence boundary into A
and B; half of the time B is replaced by sentences from a *different* document (label 1),
and the longer side is truncated (alternating front and back) to fit. Masking is *not*
stored: :class:`MlmNspCollator` masks dynamically at batch time (80/10/10), so each epoch
sees new masks and the stored dataset holds only ``input_ids``, ``token_type_ids``,
``next_sentence_label`` and ``length``.

transformers 5 no longer ships ``TextDatasetForNextSentencePrediction``; this stage is ours,
built on ``datasets`` (batched ``map``, ``num_proc``, Arrow on disk).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scratchbert.errors import ScratchBertError
from scratchbert.modeling import masked_positions
from scratchbert.outputs import atomic_output_dir, check_output, read_json, write_json
from scratchbert.params import check, check_source, finite, param

DATASET_INFO = "scratchbert_dataset.json"
STAGE = "dataset"
# The shortest example that holds two segments, and the longest BERT position table this
# project builds (the `length` column is int16, so it must stay below 32,768 anyway).
MIN_SEQ_LEN = 8
MAX_SEQ_LEN = 8192


@dataclass
class DatasetConfig:
    """Settings of the dataset stage (``scratchbert dataset``)."""

    corpus: str = param(help="The training corpus, in any form the tokenizer stage takes.")
    tokenizer: str = param(help="Tokenizer folder (from `scratchbert tokenizer`).")
    out: str = param(help="Output folder: the train/validation examples, their tokenizer and metrics.json.")
    max_seq_len: int = param(128, help="Tokens per example, [CLS] and [SEP]s included.")
    short_seq_prob: float = param(0.1, help="Probability that an example aims at a shorter length (BERT's 0.1).")
    random_next_prob: float = param(0.5, help="Probability that segment B comes from another document.")
    dupe_factor: int = param(1, help="Times each training document is cut into examples, with new splits and pairings; "
                                     "more than 1 for a small corpus trained on for several epochs.")
    valid_corpus: str = param("", help="A separate validation corpus; empty holds out --validation-fraction of the documents.")
    validation_fraction: float = param(0.02, help="Fraction of the documents held out for validation when there is no --valid-corpus.")
    max_corpus_bytes: int = param(0, help="Use only the first N bytes of the corpus, cut at a document boundary; 0 uses all of it.")
    max_valid_corpus_bytes: int = param(0, help="Use only the first N bytes of the validation corpus; 0 uses all of it.")
    num_proc: int = param(0, help="Worker processes; 0 uses every core.")
    seed: int = param(12345, help="Random seed of the cuts, pairings and held-out documents.")
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
              (self.max_corpus_bytes >= 0, f"--max-corpus-bytes {self.max_corpus_bytes} must not be negative (0 uses the whole corpus)"),
              (self.max_valid_corpus_bytes >= 0,
               f"--max-valid-corpus-bytes {self.max_valid_corpus_bytes} must not be negative (0 uses all of it)"),
              (self.num_proc >= 0, f"--num-proc {self.num_proc} must not be negative; give a number of processes, or 0 for every core"))


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


def _instances(doc_index: int, docs: list[list[list[int]]], max_seq_len: int, short_seq_prob: float,
               random_next_prob: float, rng: random.Random, cls_id: int, sep_id: int):
    """Yield (input_ids, token_type_ids, is_random_next) for one document (BERT's algorithm)."""
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
                    start = rng.randrange(len(rdoc))
                    for s in rdoc[start:]:
                        b.extend(s)
                        if len(b) >= b_target:
                            break
                    i -= len(chunk) - a_end  # the unused sentences go back into the stream
                else:
                    b = [t for s in chunk[a_end:] for t in s]
                if a and b:
                    _truncate_pair(a, b, max_tokens, rng)
                    ids = [cls_id, *a, sep_id, *b, sep_id]
                    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
                    yield ids, types, int(is_random)
            chunk, length = [], 0
        i += 1


def _make_examples(batch, indices, *, tokenizer_path, max_seq_len, short_seq_prob, random_next_prob,
                   dupe_factor, seed):
    """Batched ``datasets.map`` function: groups of documents (text) -> examples.

    Each row holds a fixed group of documents (in corpus order); negatives are drawn from
    other documents of the same group, which keeps each worker independent of the others,
    and the random generator is seeded by the group, so the examples do not depend on the
    number of workers.
    """
    from scratchbert.corpus import split_sentences

    tok = _cached_tokenizer(tokenizer_path)
    sentences = [split_sentences(text) for group in batch["text"] for text in group]
    flat = [s for doc in sentences for s in doc]
    # The Rust tokenizer's ``encode_batch_fast`` skips the character offsets that the
    # transformers wrapper computes and converts: a quarter of this stage's time.
    encoded = [e.ids for e in tok.backend_tokenizer.encode_batch_fast(flat, add_special_tokens=False)]
    docs, k = [], 0
    for doc in sentences:
        ids = [e for e in encoded[k:k + len(doc)] if e]
        k += len(doc)
        if ids:  # a document can normalise to nothing (e.g. only control characters)
            docs.append(ids)
    out = {"input_ids": [], "token_type_ids": [], "next_sentence_label": [], "length": []}
    rng = random.Random(seed * 1_000_003 + indices[0])
    for _ in range(dupe_factor):
        for d in range(len(docs)):
            for ids, types, label in _instances(d, docs, max_seq_len, short_seq_prob, random_next_prob, rng,
                                                tok.cls_token_id, tok.sep_token_id):
                out["input_ids"].append(ids)
                out["token_type_ids"].append(types)
                out["next_sentence_label"].append(label)
                out["length"].append(len(ids))
    return out


_TOKENIZERS: dict = {}


def _cached_tokenizer(path: str):
    if path not in _TOKENIZERS:
        from scratchbert.tokenizer import load_tokenizer

        _TOKENIZERS[path] = load_tokenizer(path)
    return _TOKENIZERS[path]


def _features():
    from datasets import Features, Sequence, Value

    return Features({
        "input_ids": Sequence(Value("int32")),
        "token_type_ids": Sequence(Value("int8")),
        "next_sentence_label": Value("int8"),
        "length": Value("int16"),
    })


def _examples(documents: list[str], cfg: DatasetConfig, num_proc: int, seed: int, dupe_factor: int = 1):
    from datasets import Dataset

    # Fixed groups of 8..1000 documents (about 32 groups for a mid-sized corpus): negatives
    # stay varied, the load is balanced, and since the grouping does not depend on
    # ``num_proc`` the same seed gives the same examples on any number of cores.
    n_groups = max(1, len(documents) // max(8, min(1000, len(documents) // 32)))
    bounds = np.linspace(0, len(documents), n_groups + 1).round().astype(int)
    groups = Dataset.from_dict({"text": [documents[a:b] for a, b in zip(bounds[:-1], bounds[1:])]})
    return groups.map(
        _make_examples, batched=True, batch_size=1, with_indices=True,
        remove_columns=["text"], features=_features(), num_proc=num_proc if n_groups >= 2 * num_proc else None,
        desc="MLM+NSP examples",
        fn_kwargs=dict(tokenizer_path=str(Path(cfg.tokenizer).resolve()), max_seq_len=cfg.max_seq_len,
                       short_seq_prob=cfg.short_seq_prob, random_next_prob=cfg.random_next_prob,
                       dupe_factor=dupe_factor, seed=seed),
    )


def _split_stats(ds, max_seq_len: int) -> dict:
    lengths = np.asarray(ds["length"], dtype=np.int64)
    labels = np.asarray(ds["next_sentence_label"], dtype=np.int64)
    n = len(lengths)
    return {"examples": n, "tokens": int(lengths.sum()),
            "mean_length": float(lengths.mean()) if n else 0.0,
            "random_next_fraction": float(labels.mean()) if n else 0.0,
            "padding_fraction_if_padded_to_max": float(1 - lengths.sum() / (n * max_seq_len)) if n else 0.0}


def build_dataset(cfg: DatasetConfig) -> dict:
    """Build the train/validation MLM+NSP dataset into ``cfg.out``; return its statistics."""
    cfg.validate()
    inputs = [cfg.corpus, cfg.valid_corpus, cfg.tokenizer]
    check_output(cfg.out, stage=STAGE, inputs=inputs, overwrite=cfg.overwrite)
    from datasets import DatasetDict, disable_caching

    from scratchbert.corpus import load_documents

    t0 = time.perf_counter()
    tok = _cached_tokenizer(str(Path(cfg.tokenizer).resolve()))
    num_proc = cfg.num_proc or os.cpu_count() or 1
    documents = load_documents(cfg.corpus, cfg.max_corpus_bytes or None)
    if len(documents) < 2:
        raise ScratchBertError(f"corpus {cfg.corpus} has {len(documents)} document; next-sentence prediction needs at least two (separate documents with a blank line)")
    if cfg.valid_corpus:
        train_docs, valid_docs = documents, load_documents(cfg.valid_corpus, cfg.max_valid_corpus_bytes or None)
        if len(valid_docs) < 2:
            raise ScratchBertError(f"validation corpus {cfg.valid_corpus} has fewer than two documents; NSP needs at least two")
    else:
        rng = random.Random(cfg.seed)
        n_valid = max(2, round(len(documents) * cfg.validation_fraction))
        if len(documents) - n_valid < 2:
            raise ScratchBertError(f"corpus {cfg.corpus} has only {len(documents)} documents, too few to hold out {n_valid} for validation; add documents or pass --valid-corpus")
        valid_idx = set(rng.sample(range(len(documents)), n_valid))
        train_docs = [d for i, d in enumerate(documents) if i not in valid_idx]
        valid_docs = [d for i, d in enumerate(documents) if i in valid_idx]
    disable_caching()  # the output folder is the cache; don't litter ~/.cache with copies
    ds = DatasetDict({"train": _examples(train_docs, cfg, num_proc, cfg.seed, cfg.dupe_factor),
                      "validation": _examples(valid_docs, cfg, num_proc, cfg.seed + 1)})
    if len(ds["train"]) == 0:
        raise ScratchBertError(f"corpus {cfg.corpus} produced no training examples; it needs documents of several sentences")
    stats = {"seconds": round(time.perf_counter() - t0, 3), "max_seq_len": cfg.max_seq_len, "dupe_factor": cfg.dupe_factor,
             "train_documents": len(train_docs), "validation_documents": len(valid_docs)}
    for split in ("train", "validation"):
        stats.update({f"{split}_{k}": v for k, v in _split_stats(ds[split], cfg.max_seq_len).items()})
    with atomic_output_dir(cfg.out, stage=STAGE, inputs=inputs, overwrite=cfg.overwrite) as tmp:
        ds.save_to_disk(str(tmp), num_proc=None)
        tok.save_pretrained(Path(tmp) / "tokenizer")
        write_json(Path(tmp) / DATASET_INFO, {"max_seq_len": cfg.max_seq_len, "vocab_size": len(tok),
                                              "tokenizer_fingerprint": tokenizer_fingerprint(tok),
                                              "fingerprint": data_fingerprint(tmp),
                                              "corpora": [c for c in (cfg.corpus, cfg.valid_corpus) if c]})
        write_json(Path(tmp) / "metrics.json", stats)
    return stats


def data_fingerprint(folder: str | Path) -> str:
    """A hash of a saved dataset's examples (its Arrow files), so that a checkpoint knows which
    dataset it was trained on; the same examples give the same fingerprint."""
    h = hashlib.sha256()
    for f in sorted(Path(folder).rglob("*.arrow")):
        h.update(f.relative_to(folder).as_posix().encode() + b"\0")
        with open(f, "rb") as data:
            for chunk in iter(lambda: data.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def load_pretraining_dataset(path: str | Path):
    """Load a folder written by :func:`build_dataset`: (DatasetDict, info dict)."""
    from datasets import load_from_disk

    path = Path(path)
    if not (path / DATASET_INFO).is_file():
        raise ScratchBertError(f"{path} is not a scratchbert dataset (no {DATASET_INFO}); build it with `scratchbert dataset --out {path}`")
    return load_from_disk(str(path)), read_json(path / DATASET_INFO)


def token_counts(dataset, vocab_size: int, exclude=()) -> np.ndarray:
    """How often each token id occurs in a split's ``input_ids``; ids in ``exclude`` count 0.

    Read as Arrow batches (no Python loop over examples): the 13.5 M tokens of an 11 MB corpus
    (five cuts of each document) in under 0.2 s.
    """
    import pyarrow.compute as pc

    counts = np.zeros(vocab_size, dtype=np.int64)
    for batch in dataset.with_format("arrow").iter(batch_size=50_000):
        ids = pc.list_flatten(batch["input_ids"]).to_numpy()
        counts += np.bincount(ids, minlength=vocab_size)[:vocab_size]
    counts[list(exclude)] = 0
    return counts


class MlmNspCollator:
    """Pads a batch and masks it dynamically: 15% of tokens, of which 80% [MASK], 10% random, 10% kept.

    The 80/10/10 replacement is transformers' ``DataCollatorForLanguageModeling.torch_mask_tokens``;
    padding and the special-token mask are done here with tensor operations because the
    stock collator pads through the tokenizer and finds special tokens with a Python loop
    per sequence, which costs more than a small model's training step on a CPU.
    ``seed`` fixes the masking (evaluation); leave it ``None`` for training so that each
    DataLoader worker draws its own masks. ``mlm_positions``: also return the sparse
    prediction head's rows (:func:`scratchbert.modeling.masked_positions`), found here on the
    CPU rather than by the model on the device.
    """

    def __init__(self, tokenizer, mlm_probability: float = 0.15, pad_to_multiple_of: int | None = 8,
                 seed: int | None = None, mlm_positions: bool = False):
        import torch
        from transformers import DataCollatorForLanguageModeling

        if not 0 < mlm_probability < 1:
            raise ScratchBertError(f"masking probability {mlm_probability} must lie in (0, 1)")
        self._masker = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=seed)
        self.pad_id = tokenizer.pad_token_id
        self.pad_to_multiple_of = pad_to_multiple_of
        self.special_ids = torch.tensor(sorted(set(tokenizer.all_special_ids)), dtype=torch.long)
        self.mlm_positions = mlm_positions

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        longest = max(len(e["input_ids"]) for e in examples)
        m = self.pad_to_multiple_of
        if m:
            longest = (longest + m - 1) // m * m
        input_ids = torch.full((len(examples), longest), self.pad_id, dtype=torch.long)
        token_type_ids = torch.zeros((len(examples), longest), dtype=torch.long)
        attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
        for i, e in enumerate(examples):
            n = len(e["input_ids"])
            input_ids[i, :n] = torch.as_tensor(e["input_ids"])
            token_type_ids[i, :n] = torch.as_tensor(e["token_type_ids"])
            attention_mask[i, :n] = 1
        special = torch.isin(input_ids, self.special_ids)
        if self._masker.seed is not None and self._masker.generator is None:
            # torch_mask_tokens draws from ``generator``, which the stock collator creates
            # from ``seed`` in its own __call__ (per DataLoader worker), not here.
            self._masker.create_rng()
        input_ids, labels = self._masker.torch_mask_tokens(input_ids, special_tokens_mask=special)
        batch = {"input_ids": input_ids, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
                 "labels": labels,
                 "next_sentence_label": torch.tensor([int(e["next_sentence_label"]) for e in examples])}
        if self.mlm_positions and (positions := masked_positions(labels)) is not None:
            batch["mlm_positions"] = positions
        return batch
