"""scratchbert.pretraining_data: MLM+NSP examples from documents, and the masking collator.

Most structural checks use a *marker corpus*: every document repeats its own marker word
(``zqab``, ``zqac`` ...) and numbers its sentences, so decoding a segment tells which
document, and which sentences of it, the segment came from.
"""

from __future__ import annotations

import collections
import itertools
import json
import random
import re
import string

import numpy as np
import pytest

from scratchbert import pretraining_data
from scratchbert.errors import ScratchBertError
from scratchbert.pretraining_data import (
    DATASET_INFO,
    DatasetConfig,
    MlmNspCollator,
    build_dataset,
    load_pretraining_dataset,
    merge_datasets,
    stored_token_counts,
    token_counts,
    tokenizer_fingerprint,
)
from scratchbert.tokenizer import TokenizerConfig, load_tokenizer, train_tokenizer

MARKER = re.compile(r"\b(z[qv][a-z]{2})\b")
SENTENCE = re.compile(r"\b(z[qv][a-z]{2}) (\d+) \1 \2\b")


def _markers(n: int, prefix: str = "zq") -> list[str]:
    return [prefix + a + b for a, b in itertools.islice(itertools.product(string.ascii_lowercase, repeat=2), n)]


def marker_documents(n: int, prefix: str = "zq", seed: int = 0) -> list[str]:
    """Documents of 1..9 sentences ``Zqab 3 zqab 3 is here.``: marker = document, number = sentence."""
    rng = random.Random(seed)
    words = ["is here", "went home", "was seen", "stays put", "looks fine", "runs far"]
    docs = []
    for m in _markers(n, prefix):
        k = rng.choice([1, 2, 3, 4, 5, 6, 7, 8, 9])
        docs.append(" ".join(f"{m.capitalize()} {i} {m} {i} {rng.choice(words)}." for i in range(k)))
    return docs


@pytest.fixture(scope="module")
def marker_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("marker")
    train, valid = marker_documents(300), marker_documents(40, prefix="zv", seed=1)
    (root / "train.txt").write_text("\n\n".join(train) + "\n")
    (root / "valid.txt").write_text("\n\n".join(valid) + "\n")
    train_tokenizer(TokenizerConfig(corpus="(given)", out=str(root / "tok"), vocab_size=1000), documents=train + valid)
    return root


def _build(root, out, **kw):
    kw.setdefault("corpus", str(root / "train.txt"))
    kw.setdefault("num_proc", 1)
    stats = build_dataset(DatasetConfig(tokenizer=str(root / "tok"), out=str(out), **kw))
    ds, info = load_pretraining_dataset(out)
    return stats, ds, info


def _segments(tok, ids):
    first_sep = ids.index(tok.sep_token_id)
    return tok.decode(ids[1:first_sep]), tok.decode(ids[first_sep + 1:-1])


# --- structure and statistics ------------------------------------------------------------

def test_every_example_is_cls_a_sep_b_sep_with_one_segment_switch(built_dataset):
    ds, info = load_pretraining_dataset(built_dataset)
    tok = load_tokenizer(built_dataset / "tokenizer")
    assert info["max_seq_len"] == 64
    for split in ("train", "validation"):
        assert len(ds[split]) > 100
        for row in ds[split]:
            ids, types = row["input_ids"], row["token_type_ids"]
            seps = [i for i, t in enumerate(ids) if t == tok.sep_token_id]
            assert ids[0] == tok.cls_token_id and len(seps) == 2 and seps[1] == len(ids) - 1
            assert seps[0] >= 2 and seps[1] - seps[0] >= 2  # neither segment is empty
            assert types == [0] * (seps[0] + 1) + [1] * (len(ids) - seps[0] - 1)
            assert row["length"] == len(ids) <= 64
            assert tok.pad_token_id not in ids and tok.mask_token_id not in ids  # masking is dynamic
            assert row["next_sentence_label"] in (0, 1)


def test_metrics_match_the_stored_examples(built_dataset):
    ds, info = load_pretraining_dataset(built_dataset)
    stats = json.loads((built_dataset / "metrics.json").read_text())
    assert stats["train_documents"] == 1350 and stats["validation_documents"] == 150
    for split in ("train", "validation"):
        lengths = np.array(ds[split]["length"])
        labels = np.array(ds[split]["next_sentence_label"])
        assert stats[f"{split}_examples"] == len(lengths)
        assert stats[f"{split}_tokens"] == lengths.sum()
        assert stats[f"{split}_mean_length"] == pytest.approx(lengths.mean())
        assert stats[f"{split}_random_next_fraction"] == pytest.approx(labels.mean())
        assert stats[f"{split}_padding_fraction_if_padded_to_max"] == pytest.approx(1 - lengths.sum() / (64 * len(lengths)))
    # most examples fill the target length (BERT's packing): little padding
    assert stats["train_mean_length"] > 0.75 * 64


def test_next_sentence_labels_are_roughly_balanced(built_dataset):
    ds, _ = load_pretraining_dataset(built_dataset)
    labels = np.array(ds["train"]["next_sentence_label"])
    assert len(labels) > 1000
    assert abs(labels.mean() - 0.5) <= 0.15


def test_dataset_folder_carries_its_tokenizer_and_fingerprint(built_dataset, trained_tokenizer):
    info = json.loads((built_dataset / DATASET_INFO).read_text())
    original, stored = load_tokenizer(trained_tokenizer), load_tokenizer(built_dataset / "tokenizer")
    assert info["vocab_size"] == len(original) == 2000
    assert info["tokenizer_fingerprint"] == tokenizer_fingerprint(original) == tokenizer_fingerprint(stored)


# --- where segment B comes from ------------------------------------------------------------

def test_is_next_continues_the_document_and_random_next_comes_from_another(marker_corpus, tmp_path):
    # Long enough for a whole document per chunk: no truncation, so sentence numbers are exact.
    _, ds, _ = _build(marker_corpus, tmp_path / "ds", max_seq_len=256, short_seq_prob=0.0)
    tok = load_tokenizer(marker_corpus / "tok")
    counts = {0: 0, 1: 0}
    for row in ds["train"]:
        a, b = (SENTENCE.findall(s) for s in _segments(tok, row["input_ids"]))
        assert a and b
        doc_a, doc_b = {m for m, _ in a}, {m for m, _ in b}
        assert len(doc_a) == 1 and len(doc_b) == 1  # each segment from one document
        num_a, num_b = [int(n) for _, n in a], [int(n) for _, n in b]
        assert num_a == list(range(num_a[0], num_a[0] + len(num_a)))  # consecutive sentences, in order
        assert num_b == list(range(num_b[0], num_b[0] + len(num_b)))
        label = row["next_sentence_label"]
        counts[label] += 1
        if label == 0:
            assert doc_a == doc_b and num_b[0] == num_a[-1] + 1
        else:
            assert doc_a != doc_b
    assert counts[0] > 50 and counts[1] > 50


def test_segment_origin_holds_with_truncation_and_short_sequences(marker_corpus, tmp_path):
    _, ds, _ = _build(marker_corpus, tmp_path / "ds", max_seq_len=32, short_seq_prob=0.3)
    tok = load_tokenizer(marker_corpus / "tok")
    checked = 0
    for row in ds["train"]:
        a, b = (set(MARKER.findall(s)) for s in _segments(tok, row["input_ids"]))
        assert len(a) <= 1 and len(b) <= 1
        if a and b:
            checked += 1
            assert (a == b) == (row["next_sentence_label"] == 0)
        assert len(row["input_ids"]) <= 32
    assert checked > 0.9 * len(ds["train"])


def test_random_next_comes_from_another_document_of_the_same_group(marker_corpus, tmp_path, monkeypatch):
    """The documented scope of NSP negatives: the other documents of the example's group of consecutive documents."""
    monkeypatch.setattr(pretraining_data, "GROUP_DOCUMENTS", 40)
    _, ds, _ = _build(marker_corpus, tmp_path / "ds", valid_corpus=str(marker_corpus / "valid.txt"))
    tok = load_tokenizer(marker_corpus / "tok")
    position = {m: i for i, m in enumerate(_markers(300))}  # the documents' order in the corpus
    negatives = 0
    for row in ds["train"]:
        if row["next_sentence_label"] != 1:
            continue
        a, b = (set(MARKER.findall(s)) for s in _segments(tok, row["input_ids"]))
        if a and b:
            negatives += 1
            assert position[a.pop()] // 40 == position[b.pop()] // 40  # groups of 40 consecutive documents
    assert negatives > 100


class _CountingDocument(list):
    """A document (a list of sentences) that counts the sentences read from it, one by one or as slices."""

    read = 0

    def __getitem__(self, key):
        item = super().__getitem__(key)
        _CountingDocument.read += len(item) if isinstance(key, slice) else 1
        return item


def test_a_long_document_of_short_lines_is_cut_in_linear_time_and_bounded_memory(monkeypatch):
    """A file without blank lines is one document cut into 4 MiB pieces: a million one-word lines
    each. Each random next segment copied the rest of its document (275 s and 3.7 GB for 19 MB of
    words), and the group's million tokenizer encodings were held at once."""
    rng = random.Random(0)
    docs = [_CountingDocument([[rng.randrange(5, 50)] for _ in range(20_000)]) for _ in range(2)]
    examples = list(pretraining_data._instances(0, docs, 128, 0.0, 1.0, rng, 2, 3))
    assert len(examples) > 100
    tokens = sum(len(ids) for ids, _, _ in examples)
    assert _CountingDocument.read <= 5 * tokens  # about the sentences used (3.5 million before: the rest of a document each time)

    batches = []

    class Recording:  # the worker's tokenizer, recording the size of each batch it is handed
        def __init__(self, tokenizer):
            self.tokenizer = tokenizer

        def encode_batch_fast(self, texts, **kw):
            batches.append(len(texts))
            return self.tokenizer.encode_batch_fast(texts, **kw)

    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "red", "blue", "green"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    monkeypatch.setattr(pretraining_data, "ENCODE_BATCH", 100)
    monkeypatch.setitem(pretraining_data._WORKER, "tokenizer", Recording(tokenizer))
    monkeypatch.setitem(pretraining_data._WORKER, "settings", pretraining_data._Settings("", 2, 3, len(words), 16, 0.0, 0.5, 1))
    texts = ["\n".join(rng.choice(["red blue", "green", "blue red green"]) for _ in range(1_000)) for _ in range(3)]
    result = pretraining_data._group_examples(("train", 0, texts, 1))
    assert sum(batches) == 3_000 and max(batches) <= 100
    assert len(result["labels"]) > 100 and set(result["ids"].tolist()) <= set(range(2, 7))


def test_sentences_longer_than_an_example_are_paired_and_used_whole(monkeypatch):
    """Text without sentence stops (a transcript) is one sentence a line: each longer than an
    example, so every example's next segment was a random one and most words were cut away."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "red", "blue", "green"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    monkeypatch.setitem(pretraining_data._WORKER, "tokenizer", tokenizer)
    monkeypatch.setitem(pretraining_data._WORKER, "settings", pretraining_data._Settings("", 2, 3, len(words), 16, 0.0, 0.5, 1))
    rng = random.Random(0)
    texts = ["\n".join(" ".join(rng.choice(words[4:]) for _ in range(200)) for _ in range(5)) for _ in range(4)]
    result = pretraining_data._group_examples(("train", 0, texts, 1))
    assert 0.3 < result["labels"].mean() < 0.7  # the next segment is the text's own about half the time
    used = np.isin(result["ids"], [2, 3], invert=True).sum()
    assert used >= 0.8 * 4 * 5 * 200  # the lines' words, not an example's worth of each


def test_random_next_probability_controls_the_labels(marker_corpus, tmp_path):
    fractions = [_build(marker_corpus, tmp_path / f"ds{p}", random_next_prob=p)[0]["train_random_next_fraction"]
                 for p in (0.0, 0.5, 1.0)]
    # with p=0 only single-sentence chunks (nothing to pair with) are random
    assert fractions[0] < 0.35 < fractions[1] < 0.75 < fractions[2] == 1.0


def test_dupe_factor_cuts_training_documents_again_and_leaves_validation_alone(marker_corpus, tmp_path):
    once, ds1, _ = _build(marker_corpus, tmp_path / "d1", validation_fraction=0.1)
    thrice, ds3, _ = _build(marker_corpus, tmp_path / "d3", validation_fraction=0.1, dupe_factor=3)
    assert 2.8 < thrice["train_examples"] / once["train_examples"] < 3.2
    assert ds3["validation"].to_dict() == ds1["validation"].to_dict()
    # new cuts and pairings, not three copies of the same examples
    pairs = collections.Counter(tuple(ids) for ids in ds3["train"]["input_ids"])
    assert len(pairs) > 1.5 * once["train_examples"]


# --- splits, determinism, errors -------------------------------------------------------------

def test_validation_holds_out_whole_documents(marker_corpus, tmp_path):
    stats, ds, _ = _build(marker_corpus, tmp_path / "ds", validation_fraction=0.1)
    tok = load_tokenizer(marker_corpus / "tok")
    assert stats["train_documents"] == 270 and stats["validation_documents"] == 30

    def docs_of(split):
        return {m for ids in ds[split]["input_ids"] for m in MARKER.findall(tok.decode(ids))}

    train, valid = docs_of("train"), docs_of("validation")
    assert train and valid and not train & valid
    assert len(valid) <= 30


def test_valid_corpus_is_used_for_validation(marker_corpus, tmp_path):
    stats, ds, _ = _build(marker_corpus, tmp_path / "ds", valid_corpus=str(marker_corpus / "valid.txt"))
    tok = load_tokenizer(marker_corpus / "tok")
    assert stats["train_documents"] == 300 and stats["validation_documents"] == 40
    valid = {m for ids in ds["validation"]["input_ids"] for m in MARKER.findall(tok.decode(ids))}
    train = {m for ids in ds["train"]["input_ids"] for m in MARKER.findall(tok.decode(ids))}
    assert valid and all(m.startswith("zv") for m in valid)
    assert all(m.startswith("zq") for m in train)


def test_same_seed_same_examples_whatever_the_worker_count(marker_corpus, tmp_path):
    _, a, _ = _build(marker_corpus, tmp_path / "a", seed=7)
    _, b, _ = _build(marker_corpus, tmp_path / "b", seed=7, num_proc=2)
    _, c, _ = _build(marker_corpus, tmp_path / "c", seed=8)
    for split in ("train", "validation"):
        assert a[split].to_dict() == b[split].to_dict()
    assert a["train"]["input_ids"] != c["train"]["input_ids"]


def test_shards_of_bounded_size_hold_the_same_examples(marker_corpus, tmp_path):
    _, whole, _ = _build(marker_corpus, tmp_path / "whole", dupe_factor=3)
    stats, cut, index = _build(marker_corpus, tmp_path / "cut", dupe_factor=3, shard_bytes=20_000)
    entries = index["splits"]["train"]["shards"]
    assert stats["train_shards"] == len(entries) > 3
    assert all(e["bytes"] <= 20_000 + 64 * 5 + 11 for e in entries)
    assert sum(e["examples"] for e in entries) == index["splits"]["train"]["examples"] == len(cut["train"])
    for split in ("train", "validation"):
        assert cut[split].to_dict() == whole[split].to_dict()
    assert index["tokenizer_fingerprint"] == tokenizer_fingerprint(load_tokenizer(marker_corpus / "tok"))
    assert index["build"]["shard_bytes"] == 20_000 and index["build"]["dupe_factor"] == 3


def _rows(ds) -> list:
    return sorted(zip(map(tuple, ds["input_ids"]), map(tuple, ds["token_type_ids"]), ds["next_sentence_label"]))


def test_parts_built_apart_and_merged_equal_the_whole(marker_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(pretraining_data, "GROUP_DOCUMENTS", 30)  # ten groups of the 300 documents
    whole_stats, whole, _ = _build(marker_corpus, tmp_path / "whole", dupe_factor=2)
    parts = []
    for k in range(3):
        out = tmp_path / f"part-{k}"
        build_dataset(DatasetConfig(corpus=str(marker_corpus / "train.txt"), tokenizer=str(marker_corpus / "tok"),
                                    out=str(out), num_proc=1, dupe_factor=2, corpus_parts=3, corpus_part=k))
        parts.append(out)
    with pytest.raises(ScratchBertError, match="part 0 of 3 of a dataset; merge the parts"):
        load_pretraining_dataset(parts[0])
    stats = merge_datasets(parts=[parts[2], parts[0], parts[1]], out=tmp_path / "merged")  # any order
    merged, _ = load_pretraining_dataset(tmp_path / "merged")
    for split in ("train", "validation"):
        assert _rows(merged[split]) == _rows(whole[split])
        for key in ("examples", "tokens", "documents", "random_next_fraction"):
            assert stats[f"{split}_{key}"] == pytest.approx(whole_stats[f"{split}_{key}"]), (split, key)
    vocab = load_tokenizer(marker_corpus / "tok").vocab_size
    assert (stored_token_counts(tmp_path / "merged", vocab) == stored_token_counts(tmp_path / "whole", vocab)).all()
    with pytest.raises(ScratchBertError, match=r"the parts given are \[0, 2\] of 3"):
        merge_datasets(parts=[parts[0], parts[2]], out=tmp_path / "bad")
    other = tmp_path / "other-part"
    build_dataset(DatasetConfig(corpus=str(marker_corpus / "train.txt"), tokenizer=str(marker_corpus / "tok"),
                                out=str(other), num_proc=1, dupe_factor=1, corpus_parts=3, corpus_part=1))
    with pytest.raises(ScratchBertError, match=r"built with other settings \(dupe_factor\)"):
        merge_datasets(parts=[parts[0], other, parts[2]], out=tmp_path / "bad")
    assert not (tmp_path / "bad").exists()
    # a part given its corpus as ./train.txt is built the same; a folder of the user's is replaced only when asked
    same = tmp_path / "same-part"
    with monkeypatch.context() as m:
        m.chdir(marker_corpus)
        build_dataset(DatasetConfig(corpus="./train.txt", tokenizer=str(marker_corpus / "tok"), out=str(same), num_proc=1,
                                    dupe_factor=2, corpus_parts=3, corpus_part=1))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("a person's file")
    with pytest.raises(ScratchBertError, match="--overwrite"):
        merge_datasets(parts=[parts[0], same, parts[2]], out=mine)
    assert merge_datasets(parts=[parts[0], same, parts[2]], out=mine, overwrite=True)["train_examples"] == \
        whole_stats["train_examples"]
    assert not (mine / "notes.txt").exists()


def test_the_progress_bar_counts_every_byte_read_in_every_part(marker_corpus, tmp_path, capsys):
    """The bar counted the characters of this part's groups only: part 1 of 2 ended at 36%, a
    Russian and Chinese corpus at 54%."""
    text = (marker_corpus / "train.txt").read_text()
    corpus = tmp_path / "c.txt"
    corpus.write_text(text.replace("went home", "пошёл домой"))
    size = corpus.stat().st_size
    build_dataset(DatasetConfig(corpus=str(corpus), tokenizer=str(marker_corpus / "tok"), out=str(tmp_path / "ds"), num_proc=1,
                                corpus_parts=2, corpus_part=1))
    err = capsys.readouterr().err
    assert "MLM+NSP examples: 100%" in err and f"{size / 1000:.1f}k/{size / 1000:.1f}k" in err


def test_an_s3_corpus_gives_the_same_dataset_as_the_local_file(marker_corpus, tmp_path, s3_env, s3_server, s3_bucket):
    s3_server.client().fput_object(s3_bucket, "corpus/train.txt", str(marker_corpus / "train.txt"))
    _, local, _ = _build(marker_corpus, tmp_path / "local")
    _, remote, _ = _build(marker_corpus, tmp_path / "remote", corpus=f"s3://{s3_bucket}/corpus")
    for split in ("train", "validation"):
        assert remote[split].to_dict() == local[split].to_dict()


def test_a_corpus_of_one_document_is_an_error_and_writes_nothing(marker_corpus, tmp_path):
    one = tmp_path / "one.txt"
    one.write_text(marker_documents(1)[0] + "\n")
    with pytest.raises(ScratchBertError, match="1 document; next-sentence prediction needs at least two"):
        _build(marker_corpus, tmp_path / "ds", corpus=str(one))
    with pytest.raises(ScratchBertError, match="one.txt has 1 document; next-sentence prediction needs at least two"):
        _build(marker_corpus, tmp_path / "ds", corpus=str(one), valid_corpus=str(marker_corpus / "valid.txt"))  # not 41
    many = str(marker_corpus / "train.txt")  # 300 documents, cut to the first one's bytes
    with pytest.raises(ScratchBertError, match=r"train.txt has 1 document in its first 60 bytes \(--max-corpus-bytes\); .* "
                                               r"\(separate documents with a blank line, or raise --max-corpus-bytes\)"):
        _build(marker_corpus, tmp_path / "ds", corpus=many, max_corpus_bytes=60)
    with pytest.raises(ScratchBertError, match=r"has only 2 documents in its first 400 bytes .*; add documents, raise --max-corpus-bytes, raise"):
        _build(marker_corpus, tmp_path / "ds", corpus=many, max_corpus_bytes=400)
    with pytest.raises(ScratchBertError, match=r"fewer than two documents in its first 60 bytes .*; raise --max-valid-corpus-bytes"):
        _build(marker_corpus, tmp_path / "ds", valid_corpus=str(marker_corpus / "valid.txt"), max_valid_corpus_bytes=60)
    three = tmp_path / "three.txt"
    three.write_text("\n\n".join(marker_documents(3)) + "\n")
    with pytest.raises(ScratchBertError, match="too few to hold out"):
        _build(marker_corpus, tmp_path / "ds", corpus=str(three))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.txt", "three.txt"]


def test_a_validation_corpus_that_gives_no_examples_is_an_error(marker_corpus, tmp_path):
    """Documents of zero-width spaces and control characters count as documents, but give no
    examples: the dataset was written with an empty validation split (pretraining reported no
    validation loss, and evaluate failed on it at the end of a run)."""
    empty = tmp_path / "valid.txt"
    empty.write_text("\u200b\u200b\n\n\x01 \u200b\n\n\u200c\n")
    with pytest.raises(ScratchBertError, match=r"validation corpus .*valid.txt produced no validation examples"):
        _build(marker_corpus, tmp_path / "ds", valid_corpus=str(empty))
    assert not (tmp_path / "ds").exists()


@pytest.mark.parametrize("corpus, valid, relation", [
    ("{root}", "{root}/valid.txt", "is inside"),  # WikiText's files in one folder, that folder the corpus
    ("{root}/train.txt", "{root}/./train.txt", "is"),
    ("{root}/train.txt", "{root}", "contains"),
    ("s3://corpora/wiki/", "s3://corpora/wiki/valid.txt", "is inside"),
    ("s3://corpora/wiki/train.txt", "s3://corpora/wiki/train.txt/", "is"),
])
def test_held_out_text_inside_the_corpus_is_refused_before_any_work(marker_corpus, tmp_path, corpus, valid, relation):
    """The corpus's text would be read for training and again as validation: a validation loss
    measured on trained text, said nowhere."""
    corpus, valid = (x.format(root=marker_corpus) for x in (corpus, valid))
    with pytest.raises(ScratchBertError, match=f"--valid-corpus .* {relation} --corpus .* trained on as well as held out"):
        _build(marker_corpus, tmp_path / "ds", corpus=corpus, valid_corpus=valid)
    assert not (tmp_path / "ds").exists()
    assert pretraining_data._overlap("s3://corpora/wiki-valid/", "s3://corpora/wiki") is None  # a name's prefix is not a folder's


@pytest.mark.parametrize("kw, words", [
    ({"max_seq_len": 4}, "--max-seq-len 4 must lie between 8"),
    ({"max_seq_len": 100_000}, "--max-seq-len 100000 must lie between 8 .* and 8192"),  # the int16 length column
    ({"random_next_prob": 1.5}, "must lie in"),
    ({"dupe_factor": 0}, "must be 1 or more"),
    ({"validation_fraction": 1.5}, r"--validation-fraction 1.5 must lie in \[0, 1\)"),
    ({"validation_fraction": 0.0}, "--validation-fraction 0 holds no documents out .* or --valid-corpus"),  # before any work
    ({"num_proc": -1}, "--num-proc -1 must not be negative"),
    ({"max_corpus_bytes": -1}, "--max-corpus-bytes -1 must not be negative"),
    ({"corpus": "ftp://host/corpus.txt"}, "scheme scratchbert does not read"),
    ({"corpus": "s3://UPPER/x"}, "invalid bucket name"),
    ({"corpus": "hf://a/b/c/d"}, "does not name a Hub repository"),
])
def test_bad_settings_are_errors(marker_corpus, tmp_path, kw, words):
    with pytest.raises(ScratchBertError, match=words):
        _build(marker_corpus, tmp_path / "ds", **kw)
    assert not (tmp_path / "ds").exists()


def test_special_tokens_written_in_the_text_are_text(marker_corpus, tmp_path):
    """A corpus about BERT writes "[SEP]" and "[MASK]": they must not become the structural tokens."""
    docs = [d + " See [SEP] and [MASK] and [CLS] here." for d in marker_documents(200)]
    corpus = tmp_path / "bert.txt"
    corpus.write_text("\n\n".join(docs) + "\n")
    _, ds, _ = _build(marker_corpus, tmp_path / "ds", corpus=str(corpus))
    tok = load_tokenizer(marker_corpus / "tok")
    rows = ds["train"]["input_ids"]
    assert rows and all(list(ids).count(tok.sep_token_id) == 2 and list(ids).count(tok.cls_token_id) == 1 and
                        tok.mask_token_id not in ids for ids in rows)
    assert any("sep" in tok.decode(ids[1:]) for ids in rows)  # as the word it is


def test_loading_a_folder_that_is_not_a_dataset_is_an_error(tmp_path):
    with pytest.raises(ScratchBertError, match="is not a scratchbert dataset"):
        load_pretraining_dataset(tmp_path)


# --- dynamic masking -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def examples(built_dataset):
    ds, _ = load_pretraining_dataset(built_dataset)
    return [ds["train"][i] for i in range(1000)]


def _originals(collated, examples, pad_id):
    import torch

    original = torch.full_like(collated["input_ids"], pad_id)
    for i, e in enumerate(examples):
        original[i, :len(e["input_ids"])] = torch.tensor(e["input_ids"])
    return original


def test_collator_masks_15_percent_with_80_10_10(trained_tokenizer, examples):
    import torch

    tok = load_tokenizer(trained_tokenizer)
    batch = MlmNspCollator(tok, seed=0)(examples)
    ids, labels = batch["input_ids"], batch["labels"]
    original = _originals(batch, examples, tok.pad_token_id)
    special = torch.isin(original, torch.tensor(tok.all_special_ids))
    eligible = ~special
    masked = labels != -100
    assert eligible.sum() > 40_000
    assert 0.14 < masked.sum() / eligible.sum() < 0.16
    assert not (masked & special).any()  # never [CLS], [SEP] or padding
    assert torch.equal(labels[masked], original[masked])  # labels are the original tokens
    assert torch.equal(ids[~masked], original[~masked])  # unmasked positions are untouched
    n = masked.sum()
    to_mask = (ids[masked] == tok.mask_token_id).sum() / n
    kept = (ids[masked] == original[masked]).sum() / n
    replaced = 1 - to_mask - kept
    assert 0.77 < to_mask < 0.83
    assert 0.08 < kept < 0.12
    assert 0.08 < replaced < 0.12


def test_collator_pads_to_a_multiple_of_8_and_builds_masks(trained_tokenizer, examples):
    import torch

    tok = load_tokenizer(trained_tokenizer)
    batch_examples = [e for e in examples if e["length"] not in (8, 16, 24, 32, 40, 48, 56, 64)][:5]
    lengths = [len(e["input_ids"]) for e in batch_examples]
    batch = MlmNspCollator(tok, seed=0)(batch_examples)
    width = -(-max(lengths) // 8) * 8
    for key in ("input_ids", "token_type_ids", "attention_mask", "labels"):
        assert batch[key].shape == (5, width) and batch[key].dtype == torch.long
    assert batch["attention_mask"].sum(1).tolist() == lengths
    for i, n in enumerate(lengths):
        assert (batch["input_ids"][i, n:] == tok.pad_token_id).all()
        assert (batch["labels"][i, n:] == -100).all() and (batch["token_type_ids"][i, n:] == 0).all()
        assert batch["token_type_ids"][i, :n].tolist() == batch_examples[i]["token_type_ids"]
    assert batch["next_sentence_label"].tolist() == [e["next_sentence_label"] for e in batch_examples]
    unpadded = MlmNspCollator(tok, pad_to_multiple_of=None, seed=0)(batch_examples)
    assert unpadded["input_ids"].shape == (5, max(lengths))
    # never past the model's positions: examples of 700 tokens padded to 704 did not fit a model of 700
    assert MlmNspCollator(tok, seed=0, max_length=max(lengths))(batch_examples)["input_ids"].shape == (5, max(lengths))
    assert MlmNspCollator(tok, seed=0, max_length=width + 8)(batch_examples)["input_ids"].shape == (5, width)


def test_collator_seed_fixes_the_masks(trained_tokenizer, examples):
    import torch

    tok = load_tokenizer(trained_tokenizer)
    batch = examples[:64]
    a, b = MlmNspCollator(tok, seed=5)(batch), MlmNspCollator(tok, seed=5)(batch)
    for key in a:
        assert torch.equal(a[key], b[key])
    assert not torch.equal(a["labels"], MlmNspCollator(tok, seed=6)(batch)["labels"])
    unseeded = MlmNspCollator(tok)
    assert not torch.equal(unseeded(batch)["labels"], unseeded(batch)["labels"])  # dynamic masking


def test_collator_gives_the_sparse_heads_rows_when_asked(trained_tokenizer, examples):
    import torch

    from scratchbert.modeling import PREDICTION_ROWS

    tok = load_tokenizer(trained_tokenizer)
    plain = MlmNspCollator(tok, seed=3)(examples[:64])
    batch = MlmNspCollator(tok, seed=3, mlm_positions=True)(examples[:64])
    assert "mlm_positions" not in plain
    for key in plain:  # the same masks: the positions are extra
        assert torch.equal(plain[key], batch[key])
    flat = batch["labels"].reshape(-1)
    n = int((flat != -100).sum())
    rows = batch["mlm_positions"]
    assert rows.dtype == torch.long and len(rows) % PREDICTION_ROWS == 0 and n <= len(rows) < n + PREDICTION_ROWS
    assert torch.equal(rows[:n], (flat != -100).nonzero().squeeze(1))  # row-major, as the logits come back
    assert (flat[rows[n:]] == -100).all()  # padding rows point at tokens without a label


def test_collator_rejects_a_bad_probability(trained_tokenizer):
    with pytest.raises(ScratchBertError, match="masking probability"):
        MlmNspCollator(load_tokenizer(trained_tokenizer), mlm_probability=1.5)


def test_token_counts_match_a_python_count_and_skip_excluded_ids(built_dataset):
    ds, info = load_pretraining_dataset(built_dataset)
    special = load_tokenizer(built_dataset / "tokenizer").all_special_ids
    stored = stored_token_counts(built_dataset, info["vocab_size"], exclude=special)
    assert (stored == token_counts(ds["train"], info["vocab_size"], exclude=special)).all()  # kept by the build
    train = ds["train"].select(range(0, len(ds["train"]), 3))  # an indices mapping: only the selected rows count
    expected = collections.Counter(t for ids in train["input_ids"] for t in ids if t not in special)
    counts = token_counts(train, info["vocab_size"], exclude=special)
    assert counts.shape == (info["vocab_size"],) and counts[special].sum() == 0
    assert dict(expected) == {i: int(c) for i, c in enumerate(counts) if c}


# --- real text (optional) ----------------------------------------------------------------------

@pytest.mark.shared_data
def test_wikipedia_prefix_gives_sane_tokenizer_and_dataset(shared_data, tmp_path):
    corpus = shared_data / "enwiki" / "train.txt"
    if not corpus.is_file():
        pytest.skip(f"{corpus} is absent")
    tok_report = train_tokenizer(TokenizerConfig(corpus=str(corpus), out=str(tmp_path / "tok"), vocab_size=8000,
                                                 max_corpus_bytes=1_000_000, heldout_fraction=0.1))
    assert tok_report["unk_rate"] < 0.01
    assert 1.0 < tok_report["tokens_per_word"] < 2.0
    # 4 MB (about 140 articles, four groups): on one group of 36 articles the random-next share
    # swung between 0.50 and 0.63 from one vocabulary to another, since every token count moves the cuts.
    stats = build_dataset(DatasetConfig(corpus=str(corpus), tokenizer=str(tmp_path / "tok"), out=str(tmp_path / "ds"),
                                        max_corpus_bytes=4_000_000, max_seq_len=128, validation_fraction=0.05))
    assert stats["train_examples"] > 1000 and stats["validation_examples"] > 20
    assert abs(stats["train_random_next_fraction"] - 0.5) < 0.1  # long articles: close to BERT's 50%
    assert stats["train_mean_length"] > 0.8 * 128
    ds, _ = load_pretraining_dataset(tmp_path / "ds")
    tok = load_tokenizer(tmp_path / "tok")
    unk = sum(ids.count(tok.unk_token_id) for ids in ds["train"]["input_ids"])
    assert unk / stats["train_tokens"] < 0.01
