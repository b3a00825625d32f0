"""scratchbert.tokenizer: WordPiece training, the saved Hugging Face tokenizer, its report."""

from __future__ import annotations

import json

import pytest

from scratchbert import synthetic
from scratchbert.errors import ScratchBertError
from scratchbert.tokenizer import SPECIAL_TOKENS, TokenizerConfig, load_tokenizer, train_tokenizer

ACCENTED = [
    "Caf\u00e9 M\u00fcller serves cr\u00e8me br\u00fbl\u00e9e in Z\u00fcrich.",
    "The na\u00efve \u00e9l\u00e8ve visited the caf\u00e9 and the Caf\u00e9 again.",
]


@pytest.fixture(scope="module")
def accent_docs():
    return synthetic.make_corpus(80, seed=3) + ACCENTED * 5


def _train(tmp_path, docs, **kw):
    out = tmp_path / "tok"
    report = train_tokenizer(TokenizerConfig(corpus="(given)", out=str(out), **kw), documents=docs)
    return out, report


def test_trained_tokenizer_loads_with_auto_tokenizer_and_has_bert_special_ids(trained_tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(trained_tokenizer))
    assert tok.is_fast and len(tok) == 2000
    # [PAD] must be id 0: BertConfig.pad_token_id defaults to 0 (the embeddings' padding_idx)
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3, 4]
    assert (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token) == tuple(SPECIAL_TOKENS)
    ids = tok("The town is known for its wool.")["input_ids"]
    assert ids[0] == tok.cls_token_id and ids[-1] == tok.sep_token_id
    assert tok.unk_token_id not in ids
    # WordPiece continuation pieces, and decoding gives the (lower-cased) text back
    assert any(t.startswith("##") for t in tok.get_vocab())
    assert tok.decode(ids, skip_special_tokens=True) == "the town is known for its wool."
    assert "[MASK]" in tok.tokenize("I am [MASK] at math.")


def test_pair_encoding_has_segment_ids_zero_then_one(trained_tokenizer):
    tok = load_tokenizer(trained_tokenizer)
    enc = tok("It was founded in 1200.", "The river runs through it.")
    ids, types = enc["input_ids"], enc["token_type_ids"]
    sep = [i for i, t in enumerate(ids) if t == tok.sep_token_id]
    assert ids[0] == tok.cls_token_id and len(sep) == 2 and sep[1] == len(ids) - 1
    assert types == [0] * (sep[0] + 1) + [1] * (len(ids) - sep[0] - 1)


def test_metrics_json_reports_size_unknown_rate_and_tokens_per_word(trained_tokenizer):
    metrics = json.loads((trained_tokenizer / "metrics.json").read_text())
    assert metrics["vocab_size"] == 2000
    assert 0 <= metrics["unk_rate"] < 0.01
    assert 1.0 <= metrics["tokens_per_word"] < 2.0
    assert metrics["heldout_documents"] >= 1 and metrics["heldout_tokens"] > 100
    assert metrics["train_documents"] + metrics["heldout_documents"] == 1500 and metrics["scored_on"] == "heldout"


def test_a_corpus_with_nothing_held_out_says_it_is_scored_on_training_documents(tmp_path, accent_docs):
    """With no document drawn for holding out, the rates come from the first training documents:
    the report says so, rather than counting them as held out."""
    _, report = _train(tmp_path, accent_docs, vocab_size=600, heldout_fraction=0)
    assert report["heldout_documents"] == 0 and report["scored_on"] == "training" and report["heldout_tokens"] > 0


def test_the_pass_over_the_corpus_shows_its_progress(tmp_path, accent_docs, capsys):
    """Reading the corpus for the sample (minutes a GB, the whole corpus whatever the sample) showed
    nothing: the trainer's bars start after it, and only on a terminal."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("\n\n".join(accent_docs) + "\n\n")
    train_tokenizer(TokenizerConfig(corpus=str(corpus), out=str(tmp_path / "tok"), vocab_size=600, sample_bytes=2000))
    err = capsys.readouterr().err
    size = corpus.stat().st_size
    assert "tokenizer sample: 100%" in err and f"{size / 1000:.1f}k/{size / 1000:.1f}k" in err


def test_scoring_on_training_documents_reads_no_more_than_is_held_out(tmp_path, accent_docs, monkeypatch):
    """With nothing held out (documents larger than the held-out budget: the 4 MiB pieces of a
    file without blank lines), the first 50 training documents were scored whole: 200 MB, 75 s
    of a 97 s run on 19 MB of one-word lines."""
    from scratchbert import tokenizer

    monkeypatch.setattr(tokenizer, "HELDOUT_MAX_BYTES", 2000)
    docs = ["\n".join(accent_docs[i:i + 40]) for i in range(0, 80, 4)]  # 20 documents of about 3 KB
    assert all(len(d.encode()) > 2000 for d in docs)
    _, report = _train(tmp_path, docs, vocab_size=600)
    assert report["heldout_documents"] == 0 and report["scored_on"] == "training"
    assert 100 < report["heldout_tokens"] <= 2000 * report["tokens_per_word"] / 4  # 2 KB of words of 4 letters or more


def test_lowercase_and_accent_stripping(tmp_path, accent_docs):
    uncased, _ = _train(tmp_path / "uncased", accent_docs, vocab_size=600)
    cased, _ = _train(tmp_path / "cased", accent_docs, vocab_size=600, lowercase=False)
    lower_accents, _ = _train(tmp_path / "lower-accents", accent_docs, vocab_size=600, strip_accents=False)

    u, c, la = (load_tokenizer(p) for p in (uncased, cased, lower_accents))
    text = "Caf\u00e9 M\u00fcller"
    assert u.tokenize(text) == u.tokenize("cafe muller")
    assert u.decode(u(text)["input_ids"], skip_special_tokens=True) == "cafe muller"
    assert c.decode(c(text)["input_ids"], skip_special_tokens=True) == text
    assert c.tokenize("Caf\u00e9") != c.tokenize("cafe")
    assert la.decode(la(text)["input_ids"], skip_special_tokens=True) == "caf\u00e9 m\u00fcller"
    for tok in (u, c, la):
        assert tok.unk_token_id not in tok(text)["input_ids"]



def test_a_folder_with_only_a_tokenizer_json_keeps_its_casing(tmp_path, accent_docs):
    """A cased or accent-keeping tokenizer.json without a tokenizer_config.json was read lower-casing
    and stripping accents (transformers' default), so a cased starting model saw uncased text."""
    import shutil

    from scratchbert.qa import _load_tokenizer_and_config

    cased, _ = _train(tmp_path / "cased", accent_docs, vocab_size=600, lowercase=False)
    lower_accents, _ = _train(tmp_path / "lower-accents", accent_docs, vocab_size=600, strip_accents=False)
    text = "Caf\u00e9 M\u00fcller"
    for trained, expected in ((cased, text), (lower_accents, "caf\u00e9 m\u00fcller")):
        bare = tmp_path / f"bare-{trained.parent.name}"
        bare.mkdir()
        shutil.copy(trained / "tokenizer.json", bare / "tokenizer.json")
        tok = load_tokenizer(bare)
        assert tok.tokenize(text) == load_tokenizer(trained).tokenize(text)
        assert tok.decode(tok(text)["input_ids"], skip_special_tokens=True) == expected
        # a model folder (qa-finetune --model, ask) reads it the same way
        (bare / "config.json").write_text('{"model_type": "bert"}')
        assert _load_tokenizer_and_config(bare)[0].tokenize(text) == tok.tokenize(text)

def test_too_small_vocabulary_is_an_error_and_writes_nothing(tmp_path):
    out = tmp_path / "tok"
    with pytest.raises(ScratchBertError, match="--vocab-size 20 is too small.*69 or more"):
        train_tokenizer(TokenizerConfig(corpus="(given)", out=str(out), vocab_size=20),
                        documents=synthetic.make_corpus(20))
    with pytest.raises(ScratchBertError, match="--vocab-size 1073741824 is more than the trainer can hold; use 16,777,216"):
        train_tokenizer(TokenizerConfig(corpus="(given)", out=str(out), vocab_size=1 << 30),  # it aborted the process
                        documents=synthetic.make_corpus(20))
    assert list(tmp_path.iterdir()) == []


def test_a_large_alphabet_is_cut_to_the_vocabulary_size_keeping_the_most_frequent_characters(tmp_path, caplog):
    # 26 letters (each with its ## form) and 100 CJK ideographs (none: always words of their own),
    # letters and ideographs alternating down the ranks; the trainer keeps every character it is
    # given, so all 126 made 5 + 126 + 26 = 157 tokens of a 100-token vocabulary
    import random

    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    ideographs = [chr(0x4E00 + i) for i in range(100)]
    ranking = [c for pair in zip(ideographs, letters) for c in pair] + ideographs[26:]
    words = [c for rank, c in enumerate(ranking) for _ in range(3 * (len(ranking) - rank))]
    random.Random(0).shuffle(words)
    docs = [" ".join(words[i:i + 200]) for i in range(0, len(words), 200)]
    out, report = _train(tmp_path, docs, vocab_size=100, heldout_fraction=0)

    vocab = load_tokenizer(out).get_vocab()
    assert len(vocab) == report["vocab_size"] <= 100
    kept = [c for c in ranking if c in vocab]
    assert kept == ranking[:len(kept)] and len(kept) >= 60  # the most frequent, the rarest left out
    assert all("##" + c in vocab for c in kept if c in letters)
    assert "words holding any of the other" in caplog.text and "--vocab-size" in caplog.text


@pytest.mark.parametrize("text", ["\x01\x02\x03", "\u200b\u200b"], ids=["control", "zero-width"])
def test_a_corpus_without_text_the_tokenizer_keeps_is_an_error(tmp_path, text):
    with pytest.raises(ScratchBertError, match="holds no text the tokenizer keeps"):
        _train(tmp_path, [text] * 20, vocab_size=100)
    assert list(tmp_path.iterdir()) == []


def test_failed_training_leaves_no_output_and_keeps_an_old_one(tmp_path, synthetic_corpus):
    out = tmp_path / "tok"
    out.mkdir()
    (out / "keep.txt").write_text("previous run")
    with pytest.raises(ScratchBertError):
        train_tokenizer(TokenizerConfig(corpus=str(tmp_path / "missing.txt"), out=str(out), vocab_size=500))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tok"]
    assert (out / "keep.txt").read_text() == "previous run"


def test_load_tokenizer_rejects_a_folder_that_is_not_a_tokenizer(tmp_path):
    # evaluate and pretrain load a model folder's tokenizer too: the advice fits either
    with pytest.raises(ScratchBertError, match="is not a tokenizer folder .* or a model folder saved with its tokenizer"):
        load_tokenizer(tmp_path)


def test_load_tokenizer_reads_a_folder_with_only_a_vocab_txt(trained_tokenizer, tmp_path):
    # Google's original BERT folders hold a vocab.txt and no tokenizer.json (AutoTokenizer failed on them)
    from scratchbert.tokenizer import fingerprint

    original = load_tokenizer(trained_tokenizer)
    (tmp_path / "vocab.txt").write_text("".join(t + "\n" for t, _ in sorted(original.get_vocab().items(), key=lambda kv: kv[1])),
                                        encoding="utf-8")
    tok = load_tokenizer(tmp_path)
    assert tok.is_fast and fingerprint(tok) == fingerprint(original)
    text = "The town is known for its wool, Caf\u00e9 M\u00fcller said."
    assert tok(text, "A second sentence.")["input_ids"] == original(text, "A second sentence.")["input_ids"]


@pytest.mark.parametrize("name, content", [("tokenizer.json", '{"x"'), ("vocab.txt", b"\xff\xfe\x00abc\n")],
                         ids=["broken-json", "binary-vocab"])
def test_load_tokenizer_says_in_one_line_that_a_broken_tokenizer_cannot_be_read(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    with pytest.raises(ScratchBertError, match=f"the tokenizer in {tmp_path} cannot be read .*; train it again"):
        load_tokenizer(tmp_path)


def test_load_tokenizer_rejects_a_tokenizer_without_the_bert_special_tokens(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    word_level = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "world": 2}, unk_token="<unk>"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="<unk>").save_pretrained(tmp_path / "tok")
    with pytest.raises(ScratchBertError, match=r"lacks the BERT special tokens .*'\[CLS\]'.*'\[MASK\]'"):
        load_tokenizer(tmp_path / "tok")


def test_training_is_reproducible_across_processes(tmp_path, accent_docs):
    # The tokenizers trainer alone numbers the ## pieces in hash order, which changes with each
    # process (huggingface/tokenizers#1794): on this corpus three processes never agreed (3 tries of 3).
    import subprocess
    import sys

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(accent_docs + ["Numbers like 10\u00b5m, x\u00b2 and \u00bd are here."]), encoding="utf-8")
    script = ("import sys; from scratchbert.tokenizer import TokenizerConfig, train_tokenizer; "
              "train_tokenizer(TokenizerConfig(corpus=sys.argv[1], out=sys.argv[2], vocab_size=700, limit_alphabet=40))")
    saved = []
    for run in range(3):
        subprocess.run([sys.executable, "-c", script, str(corpus), str(tmp_path / f"tok{run}")], check=True,
                       capture_output=True)
        saved.append((tmp_path / f"tok{run}" / "tokenizer.json").read_text())
    assert saved[0] == saved[1] == saved[2]
    tok = load_tokenizer(tmp_path / "tok0")
    # every word character of the alphabet has its ## piece, punctuation none; the pieces are not special tokens
    vocab = tok.get_vocab()
    alphabet = [t for t in vocab if len(t) == 1 and t not in ".,"]
    assert alphabet and all("##" + c in vocab for c in alphabet)
    assert "##." not in vocab and "##," not in vocab
    assert set(tok.all_special_tokens) == set(SPECIAL_TOKENS)
    assert tok.tokenize("##e") == [tok.unk_token, tok.unk_token, "e"]  # "#" is not in this small alphabet


@pytest.mark.parametrize("option, flag", [({"vocab_size": 8000}, "--vocab-size"), ({"lowercase": False}, "--lowercase"),
                                          ({"sample_bytes": 0}, "--sample-bytes")])
def test_a_training_option_beside_a_starting_model_is_refused_not_ignored(option, flag, tmp_path):
    """A starting model's tokenizer is taken as it is: an option that would train another one did nothing."""
    cfg = TokenizerConfig(corpus=str(tmp_path / "c.txt"), out=str(tmp_path / "tok"), init_model="hf://owner/bert", **option)
    with pytest.raises(ScratchBertError, match=f"^{flag} has no effect with --init-model, whose tokenizer is taken as it is"):
        cfg.validate()
    TokenizerConfig(corpus=str(tmp_path / "c.txt"), out=str(tmp_path / "tok"), **option).validate()  # training one: fine
    TokenizerConfig(corpus=str(tmp_path / "c.txt"), out=str(tmp_path / "tok"), init_model="hf://owner/bert").validate()
