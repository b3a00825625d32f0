"""Train a WordPiece vocabulary on a corpus and save it as a Hugging Face fast tokenizer.

The trainer reads the corpus as a stream and sees an even sample of it: whole documents drawn
with probability ``sample_bytes / corpus size`` from all of it (not its head), so its memory
follows the sample's vocabulary, not the corpus size; the sample passes through a temporary
file (``$TMPDIR``, local disk of up to 1.1 times ``sample_bytes``). docs/performance.md measures how the
sample size changes the vocabulary's unknown-token rate and tokens per word.

Training is reproducible: the same corpus and settings give the same tokenizer, byte for
byte. The ``tokenizers`` trainer alone does not (huggingface/tokenizers#1794, open): it
numbers the ``##`` continuation characters in hash-map order, which changes from process to
process, breaks ties between equally frequent pairs by those numbers, and cuts the alphabet at
``limit_alphabet`` among equally frequent characters in the same order (three runs on the same
11 MB gave three vocabularies; two of them were 16 of 30,522 tokens apart, half of the ids moved). So the
sample is first written to a temporary file while its characters are counted; the alphabet
(the ``limit_alphabet`` most frequent characters, ties by code point, fewer where they and
their ``##`` forms would not fit in ``vocab_size``) and its ``##`` continuations are fixed
before the trainer starts, and the trainer is given both. Every
alphabet character that can continue a word gets its ``##`` form, as in Google's BERT
vocabulary, so a word with a character seen only at word starts in training is not one
``[UNK]``. The seed fixes the sample and the held-out split.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import random
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from scratchbert import progress
from scratchbert.errors import ScratchBertError, cause
from scratchbert.outputs import atomic_output_dir, check_output, local_folder, write_json
from scratchbert.params import check, check_source, default, finite, param

STAGE = "tokenizer"

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
HELDOUT_MAX_BYTES = 4_000_000  # held-out documents stay in memory: a few MB score a vocabulary well
SAMPLE_SLACK = 1.1  # the sample stops at this multiple of sample_bytes (it is drawn from an estimated size)
# The smallest vocabulary holds the special tokens and 32 characters with their ## forms (a
# basic Latin alphabet and a few more): below that too much of any text would be [UNK].
MIN_ALPHABET = 32
MIN_VOCAB_SIZE = len(SPECIAL_TOKENS) + 2 * MIN_ALPHABET
# The WordPiece trainer sets aside room for the whole vocabulary up front: 2**30 aborts the process;
# 16 million is far beyond any BERT vocabulary (30,522; multilingual 119,547) and still trains.
MAX_VOCAB_SIZE = 1 << 24

log = logging.getLogger(__name__)


@dataclass
class TokenizerConfig:
    """Settings of the tokenizer stage (``scratchbert tokenizer``)."""

    corpus: str = param(help="The corpus: a text file or folder, s3://bucket/prefix, or hf://owner/name (see scratchbert.corpus).")
    out: str = param(help="Output folder of the tokenizer (AutoTokenizer.from_pretrained loads it).")
    vocab_size: int = param(30522, help="WordPiece vocabulary size, special tokens included (BERT's is 30522); where the "
                                        "alphabet and its ## forms would not fit in it, the rarest characters are left out.")
    lowercase: bool = param(True, help="Lower-case the text and strip accents (an uncased model).")
    strip_accents: bool | None = param(None, help="Strip accents; unset follows --lowercase.")
    min_frequency: int = param(2, help="Minimum pair frequency for a merge.")
    limit_alphabet: int = param(1000, help="At most this many initial characters.")
    max_corpus_bytes: int = param(0, help="Use only the first N bytes of the corpus, cut at a paragraph boundary; 0 uses all of it.")
    sample_bytes: int = param(1_000_000_000, help="Train on an even sample of about N bytes of whole documents drawn from the whole corpus, "
                                                  "so memory does not grow with the corpus (it passes through a local temporary file); 0 trains on all of it.")
    heldout_fraction: float = param(0.02, help="Fraction of the sampled documents held out (up to 4 MB) to report the unknown-token "
                                                "rate; where none is drawn, it is measured on the first training documents (scored_on).")
    seed: int = param(0, help="Random seed of the sample and the held-out split.")
    init_model: str = param("", help="Take the tokenizer of this starting model (hf://owner/name, s3://... or a folder) "
                                     "instead of training one; the corpus then only measures how well it fits.")
    overwrite: bool = param(False, help="Replace an existing --out that another stage or a person wrote (a tokenizer folder is always replaced).")

    def validate(self) -> None:
        """Check every setting (no file is read): one line for the first that is wrong."""
        check_source(self.corpus, "--corpus")
        check_source(self.init_model, "--init-model", required=False)
        check((self.vocab_size >= MIN_VOCAB_SIZE,
               f"--vocab-size {self.vocab_size} is too small to hold the {len(SPECIAL_TOKENS)} special tokens and "
               f"{MIN_ALPHABET} characters with their ## forms; use {MIN_VOCAB_SIZE} or more"),
              (self.vocab_size <= MAX_VOCAB_SIZE,
               f"--vocab-size {self.vocab_size} is more than the trainer can hold; use {MAX_VOCAB_SIZE:,} or fewer"),
              (self.min_frequency >= 0, f"--min-frequency {self.min_frequency} must not be negative"),
              (self.limit_alphabet >= 1, f"--limit-alphabet {self.limit_alphabet} must be at least 1"),
              (self.max_corpus_bytes >= 0, f"--max-corpus-bytes {self.max_corpus_bytes} must not be negative (0 uses the whole corpus)"),
              (self.sample_bytes >= 0, f"--sample-bytes {self.sample_bytes} must be 0 (the whole corpus) or more"),
              (finite(self.heldout_fraction) and 0 <= self.heldout_fraction < 1,
               f"--heldout-fraction {self.heldout_fraction} must lie in [0, 1)"))
        if self.init_model:  # a starting model's tokenizer is taken as it is: a training option would be ignored
            changed = [name for name in TRAINING_ONLY if getattr(self, name) != default(TokenizerConfig, name)]
            flag = "--" + changed[0].replace("_", "-") if changed else ""
            check((not changed, f"{flag} has no effect with --init-model, whose tokenizer is taken as it is; leave {flag} "
                                "out, or leave out --init-model to train a tokenizer on the corpus"))


# What trains a tokenizer, and does nothing where a starting model brings its own.
TRAINING_ONLY = ("vocab_size", "lowercase", "strip_accents", "min_frequency", "limit_alphabet", "sample_bytes")


# The tokenizer of a starting model is scored on this much of the corpus (its first documents).
STARTING_MODEL_SAMPLE_BYTES = 5_000_000


def _inputs(cfg: TokenizerConfig) -> list[str]:
    """What the stage reads, which its output must not overwrite: the corpus, and a starting model's folder."""
    return [cfg.corpus, cfg.init_model]


def _bert_wordpiece(lowercase: bool, strip_accents: bool | None):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=strip_accents, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def train_tokenizer(cfg: TokenizerConfig, documents: Iterable[str] | None = None) -> dict:
    """Train the tokenizer (or take a starting model's), save it to ``cfg.out`` and return its
    report (also ``metrics.json``).

    ``documents`` stands in for ``cfg.corpus`` (a list or any iterable: tests, notebooks).
    """
    cfg.validate()
    check_output(cfg.out, stage=STAGE, inputs=_inputs(cfg), overwrite=cfg.overwrite)
    if cfg.init_model:
        return _starting_model_tokenizer(cfg, documents)
    from tokenizers import processors, trainers
    from transformers import BertTokenizerFast

    t0 = time.perf_counter()
    sample = _Sample(cfg, documents)

    strip = cfg.lowercase if cfg.strip_accents is None else cfg.strip_accents
    tok = _bert_wordpiece(cfg.lowercase, strip)
    with tempfile.TemporaryDirectory(prefix="scratchbert-tokenizer-") as tmp:
        sample_file = Path(tmp) / "sample.txt"
        # the pass over the whole corpus, a few minutes a GB, which the trainer's own bars do not cover
        with progress.bar(total=sample.corpus_bytes, unit="B", unit_scale=True, desc="tokenizer sample") as bar:
            counts = _write_sample(sample.training_documents(bar), sample_file)
        if sample.documents == 0:
            raise ScratchBertError(f"corpus {cfg.corpus} gave no training documents; give a larger corpus or a larger --sample-bytes"
                                   + (f", or a smaller --heldout-fraction than {cfg.heldout_fraction:g}" if cfg.heldout_fraction > 0.5 else ""))
        alphabet = _alphabet(tok, counts, cfg.limit_alphabet, cfg.vocab_size)
        if not alphabet:
            raise ScratchBertError(f"corpus {cfg.corpus} holds no text the tokenizer keeps: after its normalisation (which "
                                   "drops control characters, zero-width and other format characters) nothing but "
                                   "whitespace is left; give a corpus of text")
        trainer = trainers.WordPieceTrainer(
            vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
            limit_alphabet=len(alphabet), initial_alphabet=alphabet,  # the trainer keeps exactly these characters
            special_tokens=SPECIAL_TOKENS + _continuations(tok, alphabet), continuing_subword_prefix="##",
            show_progress=True,
        )
        # Lines (paragraphs) are the natural unit: the trainer reads the file and counts words in Rust, in parallel.
        tok.train([str(sample_file)], trainer=trainer)
    tok = _only_bert_special_tokens(tok)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    train_seconds = time.perf_counter() - t0
    hf_tok = BertTokenizerFast(tokenizer_object=tok, do_lower_case=cfg.lowercase, strip_accents=strip,
                               unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]",
                               cls_token="[CLS]", mask_token="[MASK]")
    held = sample.heldout or sample.fallback  # scored_on says which: a small corpus may hold none out
    report = {"vocab_size": hf_tok.vocab_size, "train_documents": sample.documents, "train_bytes": sample.bytes,
              "sample_rate": round(sample.rate, 6), "heldout_documents": len(sample.heldout),
              "scored_on": "heldout" if sample.heldout else "training",
              "train_seconds": round(train_seconds, 3), **tokenizer_quality(hf_tok, held)}
    if sample.corpus_bytes is not None:
        report["corpus_bytes"] = sample.corpus_bytes
    with atomic_output_dir(cfg.out, stage=STAGE, inputs=_inputs(cfg), overwrite=cfg.overwrite,
                           marker={"tokenizer_fingerprint": fingerprint(hf_tok)}) as tmp:
        hf_tok.save_pretrained(tmp)
        write_json(Path(tmp) / "metrics.json", report)
    return report


CHAR_COUNT_BATCH = 4_000_000  # characters counted together (numpy over their code points)


def _write_sample(documents: Iterable[str], path: Path) -> dict[str, int]:
    """Write the documents to ``path``, one paragraph a line, and return how often each character occurs."""
    import numpy as np

    total = np.zeros(0x110000, dtype=np.int64)
    batch: list[str] = []
    size = 0

    def count():
        total[:] += np.bincount(np.frombuffer("".join(batch).encode("utf-32-le"), dtype=np.uint32), minlength=0x110000)
        batch.clear()

    with open(path, "w", encoding="utf-8") as f:
        for doc in documents:
            f.write(doc)
            f.write("\n")
            batch.append(doc)
            size += len(doc)
            if size >= CHAR_COUNT_BATCH:
                count()
                size = 0
    if batch:
        count()
    return {chr(c): int(total[c]) for c in np.flatnonzero(total)}


def _alphabet(tok, counts: dict[str, int], limit: int, vocab_size: int) -> list[str]:
    """The ``limit`` most frequent characters after normalisation (ties by code point), in code-point order,
    less the rarest of them where they and their ``##`` continuations would not fit in ``vocab_size``
    with the special tokens: the trainer keeps every character it is given, whatever the vocabulary size.

    The normaliser (clean-up, accents, lower case) works character by character, so the raw
    counts are carried over to the characters each one becomes.
    """
    normalized: dict[str, int] = {}
    for char, n in counts.items():
        for c in tok.normalizer.normalize_str(char):
            if not c.isspace():
                normalized[c] = normalized.get(c, 0) + n
    ranked = sorted(normalized, key=lambda c: (-normalized[c], c))[:limit]
    continuing = set(_continuations(tok, ranked))
    # tokens taken by the first 1, 2, ... characters: each one, and its ## form if it has one
    sizes = itertools.accumulate(1 + ("##" + c in continuing) for c in ranked)
    kept = sum(size <= vocab_size - len(SPECIAL_TOKENS) for size in sizes)
    if kept < len(ranked):
        log.warning("a vocabulary of %d tokens has room for the %d most frequent of the %d characters with their ## forms; "
                    "words holding any of the other %d become [UNK]: use a larger --vocab-size to keep them",
                    vocab_size, kept, len(ranked), len(ranked) - kept)
    return sorted(ranked[:kept])


def _continuations(tok, alphabet: list[str]) -> list[str]:
    """``##c`` for every character of the alphabet that can continue a word (not punctuation,
    not a CJK ideograph, which the pre-tokenizer and normaliser always split off), in order."""
    joined = (tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str("a" + c)) for c in alphabet)
    return ["##" + c for c, words in zip(alphabet, joined) if len(words) == 1]


def _only_bert_special_tokens(tok):
    """The tokenizer without the ``##`` continuations the trainer was handed as special tokens:
    they stay in the vocabulary as ordinary pieces (not matched in raw text, not skipped when decoding)."""
    from tokenizers import Tokenizer

    data = json.loads(tok.to_str())
    data["added_tokens"] = [t for t in data["added_tokens"] if t["content"] in SPECIAL_TOKENS]
    return Tokenizer.from_str(json.dumps(data))


def _starting_model_tokenizer(cfg: TokenizerConfig, documents: list[str] | None) -> dict:
    """The starting model's own tokenizer, checked, saved to ``cfg.out`` and scored on the corpus."""
    from scratchbert import starting_model

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="scratchbert-start-") as tmp:
        folder = starting_model.fetch(cfg.init_model, tmp, weights=False)
        starting_model.check_model(folder, where=cfg.init_model)
        tok = load_tokenizer(folder, where=cfg.init_model)
        if documents is None:
            from scratchbert.corpus import load_documents

            limit = min(cfg.max_corpus_bytes or STARTING_MODEL_SAMPLE_BYTES, STARTING_MODEL_SAMPLE_BYTES)
            documents = load_documents(cfg.corpus, limit)
        documents = list(documents)
        report = {"vocab_size": len(tok), "init_model": cfg.init_model, "heldout_documents": len(documents), "scored_on": "heldout",
                  "train_seconds": round(time.perf_counter() - t0, 3), **tokenizer_quality(tok, documents)}
        with atomic_output_dir(cfg.out, stage=STAGE, inputs=_inputs(cfg), overwrite=cfg.overwrite,
                               marker={"tokenizer_fingerprint": fingerprint(tok)}) as out:
            tok.save_pretrained(out)
            write_json(Path(out) / "metrics.json", report)
    return report


class _Sample:
    """An even sample of a corpus, read as a stream: each document is taken with probability
    ``rate = sample_bytes / corpus size`` (seeded), and each taken one is held out with
    probability ``heldout_fraction`` (up to HELDOUT_MAX_BYTES) or handed to the trainer.

    The corpus size comes from the files' and objects' sizes (:func:`scratchbert.corpus.corpus_bytes`);
    where it is unknown (a Hub dataset without size metadata) the sample is the corpus's head.
    """

    def __init__(self, cfg: TokenizerConfig, documents: Iterable[str] | None):
        from scratchbert.corpus import corpus_bytes, document_bytes, iter_documents

        self._size = document_bytes
        if documents is not None:
            documents = list(documents)
            total = sum(document_bytes(d) for d in documents)
        else:
            total = corpus_bytes(cfg.corpus)
            documents = iter_documents(cfg.corpus, cfg.max_corpus_bytes or None)
        if total is not None and cfg.max_corpus_bytes:
            total = min(total, cfg.max_corpus_bytes)
        self.corpus_bytes = total
        self.rate = 1.0 if not cfg.sample_bytes or total is None or total <= cfg.sample_bytes else cfg.sample_bytes / total
        self.cap = cfg.sample_bytes * SAMPLE_SLACK if cfg.sample_bytes else float("inf")
        if total is None and cfg.sample_bytes:
            log.warning("the size of corpus %s is unknown: the tokenizer trains on its first %d bytes", cfg.corpus, cfg.sample_bytes)
        self._docs, self._cfg = documents, cfg
        self.documents = self.bytes = 0
        self.heldout: list[str] = []
        self.fallback: list[str] = []  # the first training documents (up to HELDOUT_MAX_BYTES), scored when none is held out
        self._fallback_bytes = 0
        self._held_bytes = 0

    def training_documents(self, bar=None) -> Iterator[str]:
        """The documents handed to the trainer; ``bar`` counts the bytes of every document read."""
        rng = random.Random(self._cfg.seed)
        for doc in self._docs:
            size = self._size(doc)
            if bar is not None:
                progress.advance(bar, size)
            if self.rate < 1 and rng.random() >= self.rate:
                continue
            if rng.random() < self._cfg.heldout_fraction and self._held_bytes + size <= HELDOUT_MAX_BYTES:
                self.heldout.append(doc)
                self._held_bytes += size
                continue
            if len(self.fallback) < 50 and self._fallback_bytes < HELDOUT_MAX_BYTES:
                # no more than is held out: 50 pieces of a file without blank lines were 200 MB, scored for minutes
                room = HELDOUT_MAX_BYTES - self._fallback_bytes
                kept = doc if size <= room else _head(doc, room)
                if kept:
                    self.fallback.append(kept)
                self._fallback_bytes += min(size, room)
            self.documents += 1
            self.bytes += size
            yield doc
            if self.bytes >= self.cap:
                return


def _head(doc: str, room: int) -> str:
    """The first paragraphs of ``doc`` that fit in ``room`` bytes."""
    kept = []
    for line in doc.split("\n"):
        room -= len(line.encode("utf-8")) + 1
        if room < 0:
            break
        kept.append(line)
    return "\n".join(kept)


def tokenizer_quality(tokenizer, documents: list[str], batch_lines: int = 1000) -> dict:
    """Unknown-token rate and tokens per word (BERT pre-tokenizer words) on ``documents``.

    Counted a batch of lines at a time with the Rust tokenizer, so that scoring a few MB of
    text does not hold every token as a Python object.
    """
    backend = tokenizer.backend_tokenizer
    unk = tokenizer.unk_token_id
    lines = [line for doc in documents for line in doc.split("\n")]
    words = n_tokens = n_unk = 0
    for start in range(0, len(lines), batch_lines):
        batch = lines[start:start + batch_lines]
        words += sum(len(backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(line))) for line in batch)
        for e in backend.encode_batch_fast(batch, add_special_tokens=False):
            n_tokens += len(e.ids)
            n_unk += e.ids.count(unk)
    return {"unk_rate": n_unk / max(n_tokens, 1), "tokens_per_word": n_tokens / max(words, 1),
            "heldout_tokens": n_tokens}


def fingerprint(tokenizer) -> str:
    """A short hash of the vocabulary: a model, dataset and tokenizer must agree on it."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return hashlib.sha256("\n".join(t for t, _ in vocab).encode()).hexdigest()[:16]


def casing_of(path: str | Path) -> dict:
    """``do_lower_case`` and ``strip_accents`` as a folder's ``tokenizer.json`` has them, where its
    ``tokenizer_config.json`` does not say (a folder with only a ``tokenizer.json``): transformers'
    BERT tokenizer would otherwise rebuild the normaliser lower-casing, a cased model read uncased."""
    path = Path(path)
    config, data = path / "tokenizer_config.json", path / "tokenizer.json"
    try:
        if not data.is_file() or (config.is_file() and "do_lower_case" in json.loads(config.read_text(encoding="utf-8"))):
            return {}
        normalizer = json.loads(data.read_text(encoding="utf-8")).get("normalizer") or {}
    except (OSError, ValueError, AttributeError):  # unreadable: the loader says so
        return {}
    found = [normalizer, *(normalizer.get("normalizers") or [])]  # a Sequence holds its parts
    bert = next((n for n in found if isinstance(n, dict) and n.get("type") == "BertNormalizer"), None)
    if bert is None:
        return {}
    return {"do_lower_case": bool(bert.get("lowercase", True)), "strip_accents": bert.get("strip_accents")}


def load_tokenizer(path: str | Path, where: str | None = None):
    """Load a tokenizer folder written by :func:`train_tokenizer`, or a BERT folder with only a
    ``vocab.txt`` (Google's originals), with a clear error if it is neither; ``where`` names it in
    that error (a starting model's address, not the temporary copy read; default: the folder)."""
    from transformers import AutoTokenizer, BertTokenizerFast

    path = local_folder(path, "--tokenizer")
    where = where or str(path)
    if not (path / "tokenizer.json").is_file() and not (path / "vocab.txt").is_file():
        raise ScratchBertError(f"{where} is not a tokenizer folder (no tokenizer.json or vocab.txt); give the folder written by "
                               "`scratchbert tokenizer`, or a model folder saved with its tokenizer")
    # AutoTokenizer cannot tell which tokenizer a bare vocab.txt is for (no tokenizer.json, often no
    # config); BertTokenizerFast builds its fast tokenizer from it (and tokenizer_config.json, if any).
    load = AutoTokenizer if (path / "tokenizer.json").is_file() else BertTokenizerFast
    try:
        tok = load.from_pretrained(str(path), **casing_of(path))
    except Exception as e:  # a broken JSON file, a vocabulary that is not text; the tokenizers library raises a bare Exception
        raise ScratchBertError(f"the tokenizer in {where} cannot be read ({cause(e)}); train it again "
                               "with `scratchbert tokenizer`, or give a folder saved with save_pretrained") from None
    missing = [t for t in SPECIAL_TOKENS if tok.convert_tokens_to_ids(t) in (None, tok.unk_token_id) and t != "[UNK]"]
    if missing:
        raise ScratchBertError(f"tokenizer {where} lacks the BERT special tokens {missing}; train it with `scratchbert tokenizer`")
    return tok
