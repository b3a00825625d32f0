"""scratchbert.corpus: documents from local files, s3:// and hf://, and sentence splitting."""

from __future__ import annotations

import pytest

from scratchbert import corpus
from scratchbert.corpus import load_documents, split_documents, split_sentences
from scratchbert.errors import ScratchBertError

BERT_LAYOUT = "First doc, para one.\nFirst doc, para two.\n\nSecond doc.\n  \t \nThird doc.\n"


def _one_sentence(message: str) -> bool:
    return "\n" not in message and message.strip() == message and len(message) > 20


# --- local files -------------------------------------------------------------------------

def test_local_file_blank_lines_separate_documents(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text(BERT_LAYOUT)
    docs = load_documents(str(f))
    # a whitespace-only line separates documents too; lines of a document are its paragraphs
    assert docs == ["First doc, para one.\nFirst doc, para two.", "Second doc.", "Third doc."]


def test_split_documents_handles_crlf_and_surrounding_blank_lines():
    text = "\r\n\r\n  a b  \r\nc\r\n\r\n\r\nd\r\n\r\n"
    assert split_documents(text) == ["a b\nc", "d"]


def test_folder_is_read_in_sorted_order_and_only_txt(tmp_path):
    (tmp_path / "b.txt").write_text("B one.\n\nB two.\n")
    (tmp_path / "a.txt").write_text("A one.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("C one.\n")
    (tmp_path / "notes.md").write_text("not a corpus file\n")
    assert load_documents(str(tmp_path)) == ["A one.", "B one.", "B two.", "C one."]


def test_max_bytes_takes_a_prefix_at_a_document_boundary(tmp_path):
    docs = [f"Document number {i} " + "x" * 90 for i in range(20)]
    f = tmp_path / "c.txt"
    f.write_text("\n\n".join(docs) + "\n")
    size = len(docs[0].encode()) + 2
    prefix = load_documents(str(f), max_bytes=5 * size + 10)
    assert prefix == docs[:5]  # whole documents only, never a cut one
    assert load_documents(str(f), max_bytes=10**9) == docs
    # smaller than the first document: its start, cut at a space, never more than asked for
    (cut,) = load_documents(str(f), max_bytes=30)
    assert docs[0].startswith(cut) and 0 < len(cut.encode()) <= 30 and cut == "Document number 0"


def test_max_bytes_bounds_a_corpus_that_is_one_long_document(tmp_path):
    """One document of 12 MB (no blank line anywhere) with a 100 kB limit: cut inside the
    document at a paragraph boundary, and only the start of the file is read."""
    import tracemalloc

    paragraph = "This paragraph is one of many in a single enormous document. " * 4
    f = tmp_path / "one-document.txt"
    with f.open("w") as out:
        for i in range(12_000_000 // len(paragraph)):
            out.write(f"{i} {paragraph}\n")
    tracemalloc.start()
    try:
        (doc,) = load_documents(str(f), max_bytes=100_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 90_000 < len(doc.encode()) <= 100_000
    assert doc.split("\n")[-1] == f"{doc.count(chr(10))} {paragraph}".strip()  # whole paragraphs only
    assert peak < 8_000_000, f"read {peak / 1e6:.1f} MB for a 0.1 MB prefix of a 12 MB file"


@pytest.mark.parametrize("encoding, bom", [
    ("utf-16", b""), ("utf-16-be", "\ufeff".encode("utf-16-be")), ("utf-16-le", b""), ("utf-8-sig", b""),
    ("utf-32", b""),
])
def test_utf16_utf32_and_a_utf8_bom_are_read_as_text(tmp_path, encoding, bom):
    f = tmp_path / "c.txt"
    f.write_bytes(bom + BERT_LAYOUT.replace("Second", "Séçond").encode(encoding))
    assert load_documents(str(f)) == ["First doc, para one.\nFirst doc, para two.", "Séçond doc.", "Third doc."]


@pytest.mark.parametrize("content, words", [
    (b"", "no text"),
    (b"\n\n   \n\t\n", "no text"),
    (b"text\x00\x01\x02 more", "binary"),
    ("caf\u00e9 au lait".encode("latin-1"), "UTF-8"),
])
def test_bad_local_files_raise_one_clear_sentence(tmp_path, content, words):
    f = tmp_path / "c.txt"
    f.write_bytes(content)
    with pytest.raises(ScratchBertError) as e:
        load_documents(str(f))
    msg = str(e.value)
    assert words in msg and str(f) in msg and _one_sentence(msg)


def test_missing_path_and_folder_without_txt(tmp_path):
    with pytest.raises(ScratchBertError, match="does not exist") as e:
        load_documents(str(tmp_path / "nope.txt"))
    assert _one_sentence(str(e.value))
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ScratchBertError, match=r"no \.txt files"):
        load_documents(str(tmp_path))


# --- sentence splitting ------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("Dr. Smith met Mr. Jones in the U.S. last year. They talked.",
     ["Dr. Smith met Mr. Jones in the U.S. last year.", "They talked."]),
    ("Some fruits, e.g. apples, are red. Others are green.",
     ["Some fruits, e.g. apples, are red.", "Others are green."]),
    ("Pi is about 3.14 in value. It is irrational.", ["Pi is about 3.14 in value.", "It is irrational."]),
    ("J. R. R. Tolkien wrote books. He was English.", ["J. R. R. Tolkien wrote books.", "He was English."]),
    ('He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("Is it true? Yes! It is.", ["Is it true?", "Yes!", "It is."]),
    ("He was born in 1990. In 2000 he moved.", ["He was born in 1990.", "In 2000 he moved."]),
    ("See (Fig. 3) for details. Next.", ["See (Fig. 3) for details.", "Next."]),
    ("Mrs. Brown lives in St. Louis. She is happy.", ["Mrs. Brown lives in St. Louis.", "She is happy."]),
    ("He bought item No. 5 today. It broke.", ["He bought item No. 5 today.", "It broke."]),
    ("I said no. Then he left.", ["I said no.", "Then he left."]),
    ("first line. Second.\nThird line? Fourth!", ["first line.", "Second.", "Third line?", "Fourth!"]),
    ("no final punctuation", ["no final punctuation"]),
    ("", []),
])
def test_split_sentences(text, expected):
    assert split_sentences(text) == expected


def test_split_sentences_keeps_every_character_of_the_text():
    text = "Dr. A. B. Cee went to the U.K. in 1999. It rained 3.5 cm! Why? \"Who knows.\" The end"
    assert " ".join(split_sentences(text)).split() == text.split()


# --- Hugging Face Hub (no network: load_dataset is replaced) --------------------------------

WIKITEXT_LINES = [
    "",
    " = Valkyria Chronicles = \n",
    "",
    " The game was released in 2011 . \n",
    " = = Gameplay = = \n",
    " Players move units . \n",
    " = = = Units = = = \n",
    " There are five classes . \n",
    "",
    " = Tower Building = \n",
    " It is a tall building . \n",
]


def test_wikitext_documents_split_at_titles_and_drop_headings():
    docs = corpus._wikitext_documents(WIKITEXT_LINES)
    assert docs == [
        "The game was released in 2011 .\nPlayers move units .\nThere are five classes .",
        "It is a tall building .",
    ]


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace ``datasets.load_dataset`` with a recorder returning a small in-memory Dataset."""
    import datasets

    calls = []
    tables = {}

    def load_dataset(name, config=None, split=None, **kw):
        calls.append((name, config, split))
        if name not in tables:
            raise FileNotFoundError(f"Dataset '{name}' doesn't exist on the Hub or cannot be accessed.")
        return datasets.Dataset.from_dict(tables[name])

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls, tables


@pytest.mark.parametrize("uri, name, config, split", [
    ("hf://wikitext?config=wikitext-2-raw-v1", "wikitext", "wikitext-2-raw-v1", "train"),
    ("hf://Salesforce/wikitext?config=wikitext-103-raw-v1&split=validation", "Salesforce/wikitext", "wikitext-103-raw-v1", "validation"),
])
def test_hf_wikitext_is_requested_by_name_config_split_and_split_into_articles(fake_hub, uri, name, config, split):
    calls, tables = fake_hub
    tables[name] = {"text": WIKITEXT_LINES}
    docs = load_documents(uri)
    assert calls == [(name, config, split)]
    assert docs == corpus._wikitext_documents(WIKITEXT_LINES) and len(docs) == 2


def test_hf_other_dataset_gives_one_document_per_row_of_the_chosen_column(fake_hub):
    calls, tables = fake_hub
    tables["someone/books"] = {"content": ["A first book.\n\nIts second line.", "", None, "  Second book. "],
                               "id": [1, 2, 3, 4]}
    docs = load_documents("hf://someone/books?split=test&column=content")
    assert calls == [("someone/books", None, "test")]
    assert docs == ["A first book.\nIts second line.", "Second book."]


def test_hf_errors_are_one_sentence(fake_hub):
    calls, tables = fake_hub
    with pytest.raises(ScratchBertError, match="does not name a Hub repository"):
        load_documents("hf://")
    with pytest.raises(ScratchBertError, match="a config or split goes in the query"):
        load_documents("hf://Salesforce/wikitext/wikitext-2-raw-v1")
    with pytest.raises(ScratchBertError, match="unknown query parameters"):
        load_documents("hf://Salesforce/wikitext?name=x")
    with pytest.raises(ScratchBertError, match="could not load hf://nobody/nothing") as e:
        load_documents("hf://nobody/nothing")
    assert _one_sentence(str(e.value)) and "FileNotFoundError" in str(e.value)
    tables["someone/table"] = {"body": ["x"]}
    with pytest.raises(ScratchBertError, match=r"no column 'text'.*\?column="):
        load_documents("hf://someone/table")


# --- s3:// (a real embedded S3 server, see tests/unit/conftest.py) ------------------------

def test_s3_object_and_prefix_give_the_same_documents_as_the_local_files(tmp_path, s3_env, s3_server, s3_bucket):
    part1 = tmp_path / "part-1.txt"
    part2 = tmp_path / "part-2.txt"
    part1.write_text(BERT_LAYOUT)
    part2.write_text("Fourth doc, from another file.\n")
    client = s3_server.client()
    client.fput_object(s3_bucket, "corpora/wiki/part-1.txt", str(part1))
    client.fput_object(s3_bucket, "corpora/wiki/part-2.txt", str(part2))

    assert load_documents(f"s3://{s3_bucket}/corpora/wiki/part-1.txt") == load_documents(str(part1))
    assert load_documents(f"s3://{s3_bucket}/corpora/wiki") == load_documents(str(tmp_path))
    assert len(load_documents(f"s3://{s3_bucket}/corpora/wiki/", max_bytes=1)) == 1


def test_s3_corpus_errors_name_the_object_not_a_temporary_copy(tmp_path, s3_env, s3_server, s3_bucket):
    bad = tmp_path / "latin.txt"
    bad.write_bytes("caf\u00e9 au lait\n".encode("latin-1"))
    s3_server.client().fput_object(s3_bucket, "corpora/bad/part-1.txt", str(bad))
    for uri, named in ((f"s3://{s3_bucket}/corpora/bad", f"s3://{s3_bucket}/corpora/bad/part-1.txt"),
                       (f"s3://{s3_bucket}/corpora/bad/part-1.txt", f"s3://{s3_bucket}/corpora/bad/part-1.txt")):
        with pytest.raises(ScratchBertError) as e:
            load_documents(uri)
        assert named in str(e.value) and "scratchbert-corpus-" not in str(e.value) and _one_sentence(str(e.value))


def test_s3_missing_prefix_is_a_clear_error(s3_env, s3_bucket):
    with pytest.raises(ScratchBertError) as e:
        load_documents(f"s3://{s3_bucket}/no/such/prefix")
    assert f"s3://{s3_bucket}/no/such/prefix" in str(e.value) and _one_sentence(str(e.value))
