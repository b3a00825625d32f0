"""scratchbert.corpus: documents streamed from local files (text, gzip, JSON lines), s3:// and hf://,
and sentence splitting."""

from __future__ import annotations

import gzip
import io
import json

import pytest

from scratchbert import corpus
from scratchbert.corpus import corpus_bytes, iter_documents, load_documents, split_documents, split_sentences
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


def test_folder_is_read_in_sorted_order_and_only_txt(tmp_path, caplog):
    """Suffixes in any case (a DOS-era BOOK.TXT); other files left out, and the log says which."""
    (tmp_path / "b.txt").write_text("B one.\n\nB two.\n")
    (tmp_path / "a.txt").write_text("A one.\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.txt").write_text("C one.\n")
    (tmp_path / "D.TXT").write_text("D one.\n")
    (tmp_path / "notes.md").write_text("not a corpus file\n")
    with caplog.at_level("WARNING", logger="scratchbert.corpus"):
        assert load_documents(str(tmp_path)) == ["D one.", "A one.", "B one.", "B two.", "C one."]
    assert "left out 1 file not named .txt, .txt.gz, .jsonl, .jsonl.gz (notes.md)" in caplog.text


def test_json_files_are_read_as_json_lines_as_the_hub_reads_them(tmp_path, caplog):
    """Hugging Face's json loader reads JSON Lines from a .json file, and exports write them so: a
    .json file given alone was read as raw text (its braces and keys trained on). A .json file that
    is one JSON document is one clear line, not a corpus of syntax; in a folder, where a .json is
    more often metadata beside the text, it is left out and named."""
    docs = ["First doc.\nIts second paragraph.", "Second doc."]
    rows = "".join(json.dumps({"text": d, "id": i}) + "\n" for i, d in enumerate(docs))
    (tmp_path / "a.json").write_text(rows)
    assert load_documents(str(tmp_path / "a.json")) == docs
    (tmp_path / "b.JSON.gz").write_bytes(gzip.compress(rows.encode()))
    assert load_documents(str(tmp_path / "b.JSON.gz")) == docs
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "text.jsonl").write_text(rows)
    (folder / "dataset_info.json").write_text(json.dumps({"features": {"text": "string"}}, indent=2))
    with caplog.at_level("WARNING", logger="scratchbert.corpus"):
        assert load_documents(str(folder)) == docs
    assert "left out 1 file not named .txt, .txt.gz, .jsonl, .jsonl.gz (dataset_info.json)" in caplog.text
    for name, text in [("array.json", json.dumps([{"text": d} for d in docs])),
                       ("lines.json", "[\n" + ",\n".join(json.dumps({"text": d}) for d in docs) + "\n]\n"),
                       ("pretty.json", json.dumps({"data": [{"text": d} for d in docs]}, indent=2))]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ScratchBertError, match=r"is one JSON document .*, not the JSON Lines a \.json or \.jsonl corpus file holds") as e:
            load_documents(str(tmp_path / name))
        assert _one_sentence(str(e.value))
    (tmp_path / "text.json").write_text("Plain text in a .json file.\n")
    with pytest.raises(ScratchBertError, match=r"line 1 of .*text\.json is not JSON"):
        load_documents(str(tmp_path / "text.json"))


def test_max_bytes_takes_a_prefix_at_a_document_boundary(tmp_path):
    docs = [f"Document number {i} " + "x" * 90 for i in range(20)]
    f = tmp_path / "c.txt"
    f.write_text("\n\n".join(docs) + "\n")
    size = len(docs[0].encode()) + 2
    prefix = load_documents(str(f), max_bytes=5 * size + 10)
    assert prefix == docs[:5]  # no paragraph of the sixth fits in the 10 bytes left
    assert load_documents(str(f), max_bytes=1) == docs[:1]  # at least one paragraph
    assert load_documents(str(f), max_bytes=10**9) == docs


def test_max_bytes_bounds_a_corpus_that_is_one_long_document(tmp_path, monkeypatch):
    """One document of 12 MB (no blank line anywhere) with a 100 kB limit: cut inside the
    document at a paragraph boundary; memory is bounded by the pieces a document is read in
    (1 MB here), not by the file."""
    import tracemalloc

    monkeypatch.setattr(corpus, "MAX_DOCUMENT_BYTES", 1 << 20)

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
    assert peak < 6_000_000, f"read {peak / 1e6:.1f} MB for a 0.1 MB prefix of a 12 MB file"


def test_documents_written_back_read_as_the_same_documents(tmp_path, monkeypatch):
    """write_documents of a corpus's first bytes (run-local uploads that in place of a corpus
    larger than the run reads) gives the stages the documents they would have read of the whole."""
    from scratchbert.corpus import document_bytes, write_documents

    monkeypatch.setattr(corpus, "MAX_DOCUMENT_BYTES", 600)  # a long document comes in pieces
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.txt").write_text("  Para one.  \n\n\n\nDoc two, para one.\nPara two.\n" + "Long line. " * 80 + "\n")
    with gzip.open(folder / "b.jsonl.gz", "wt", encoding="utf-8") as f:
        for i in range(30):
            f.write(json.dumps({"text": f"Row {i}, first.\n\n  Row {i}, second. é\n"}) + "\n")
    whole = load_documents(str(folder))
    for max_bytes in (50, 1000, 1500, sum(map(document_bytes, whole)), 10**9):
        first = load_documents(str(folder), max_bytes=max_bytes)
        written = write_documents(first, tmp_path / "first.txt")
        assert written == sum(map(document_bytes, first)) and (written <= max_bytes or len(first) == 1)
        assert load_documents(str(tmp_path / "first.txt")) == first
        assert load_documents(str(tmp_path / "first.txt"), max_bytes=max_bytes) == first


@pytest.mark.parametrize("encoding, bom", [
    ("utf-16", b""), ("utf-16-be", "\ufeff".encode("utf-16-be")), ("utf-16-le", b""), ("utf-8-sig", b""),
    ("utf-32", b""),
])
def test_utf16_utf32_and_a_utf8_bom_are_read_as_text(tmp_path, encoding, bom):
    f = tmp_path / "c.txt"
    f.write_bytes(bom + BERT_LAYOUT.replace("Second", "Séçond").encode(encoding))
    assert load_documents(str(f)) == ["First doc, para one.\nFirst doc, para two.", "Séçond doc.", "Third doc."]


def test_a_utf16_file_of_one_long_line_is_refused_after_the_limit_not_read_whole(tmp_path, monkeypatch):
    """A codecs reader read a whole UTF-16 line before its length was checked, in quadratic time
    (4 MB: 8.5 s; a 150 MB line never finished)."""
    monkeypatch.setattr(corpus, "MAX_LINE_BYTES", 10_000)
    f = tmp_path / "c.txt"
    f.write_bytes(("word " * 400_000).encode("utf-16"))  # 4 MB, no newline
    read = []

    class Counting(io.FileIO):
        def readinto(self, buffer):
            n = super().readinto(buffer)
            read.append(n or 0)
            return n

    monkeypatch.setattr(corpus, "open", lambda path, mode: io.BufferedReader(Counting(path, mode)), raising=False)
    with pytest.raises(ScratchBertError, match="line 1 of corpus file .* is longer than"):
        load_documents(str(f))
    assert sum(read) < 200_000
    f.write_bytes("One.\r\nTwo.\r\rThree.\rFour.\n".encode("utf-16"))  # the line ends of UTF-8 text
    assert load_documents(str(f)) == ["One.\nTwo.", "Three.\nFour."]


@pytest.mark.parametrize("limit", [1 << 20, 100])  # the line limit far away, and cutting the reads (lines are shorter)
def test_classic_mac_line_ends_separate_paragraphs_and_documents(tmp_path, monkeypatch, limit):
    """Text with lone CRs (classic Mac OS, some exports) was one line: one paragraph, one document
    (`has 1 document; ... separate documents with a blank line`), or `line 1 ... longer than 64 MiB`."""
    monkeypatch.setattr(corpus, "MAX_LINE_BYTES", limit)
    docs = [f"Document {d} paragraph one.\nDocument {d} paragraph two, a bit longer." for d in range(30)]
    f = tmp_path / "c.txt"
    for end in ("\r", "\r\n", "\n"):
        f.write_bytes((end + end).join(d.replace("\n", end) for d in docs).encode() + end.encode())
        assert load_documents(str(f)) == docs
    f.write_bytes(b"One.\r\rTwo.\r\nThree.\n\nFour.\rFive.")  # mixed, and no end at the end
    assert load_documents(str(f)) == ["One.", "Two.\nThree.", "Four.\nFive."]
    monkeypatch.setattr(corpus, "MAX_LINE_BYTES", 20)
    f.write_bytes(b"Short.\r" + b"x" * 30 + b"\r")
    with pytest.raises(ScratchBertError, match="line 2 of corpus file .* is longer than"):
        load_documents(str(f))


def test_max_bytes_cuts_a_huge_document_at_a_paragraph_boundary(tmp_path):
    paragraphs = [f"Paragraph {i} of the only document. " + "y" * 60 for i in range(1000)]
    f = tmp_path / "one-doc.txt"
    f.write_text("\n".join(paragraphs) + "\n")
    (doc,) = load_documents(str(f), max_bytes=1000)
    lines = doc.split("\n")
    assert lines == paragraphs[:len(lines)] and 0 < len(doc.encode()) + 2 <= 1000  # whole paragraphs, within budget
    assert len(doc.encode()) + 2 + len(paragraphs[len(lines)]) + 1 > 1000  # the next one would not have fit


def test_a_document_longer_than_the_cap_is_cut_into_pieces_while_read(tmp_path, monkeypatch):
    monkeypatch.setattr(corpus, "MAX_DOCUMENT_BYTES", 1000)
    paragraphs = [f"Line {i} " + "z" * 90 for i in range(50)]
    f = tmp_path / "c.txt"
    f.write_text("\n".join(paragraphs) + "\n\nA short second document.\n")
    docs = load_documents(str(f))
    assert docs[-1] == "A short second document."
    assert "\n".join(docs[:-1]).split("\n") == paragraphs  # nothing lost, order kept
    assert len(docs) > 5 and all(len(d) <= 1000 for d in docs[:-1])


def test_a_paragraph_longer_than_the_limit_is_cut_at_sentence_ends(tmp_path, monkeypatch):
    """A paragraph of 30 MB (a file of one line, up to the 64 MiB line limit) was one paragraph:
    the tokenizer's trainer held 2.2 GB for it (333 MB cut into 1 MB lines)."""
    monkeypatch.setattr(corpus, "MAX_PARAGRAPH_CHARS", 100)
    sentences = [f"Sentence {i} is here{'!' if i % 3 else '.'}" for i in range(60)]
    long = " ".join(sentences)
    f = tmp_path / "c.txt"
    f.write_text(f"{long}\nA short one.\n\n{'x' * 250} {'word ' * 60}\n")
    docs = load_documents(str(f))
    first = docs[0].split("\n")
    assert first[-1] == "A short one." and " ".join(first[:-1]) == long  # nothing lost
    assert all(len(p) <= 100 and p.endswith((".", "!")) for p in first[:-1]) and len(first) > 10  # cut at sentence ends
    second = docs[1].split("\n")
    assert second[:2] == ["x" * 100] * 2 and all(len(p) <= 100 for p in second)  # no space: anywhere
    assert " ".join(second[2:]) == "x" * 50 + " " + ("word " * 60).strip()  # else at spaces
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": long}) + "\n")
    assert load_documents(str(tmp_path / "c.jsonl")) == ["\n".join(first[:-1])]


def test_a_file_without_blank_lines_is_said_to_be_one_document_cut_into_pieces(tmp_path, monkeypatch, caplog):
    """A file of one article per line (no blank lines) is one document, cut into 4 MiB pieces taken
    as documents: examples then join unrelated articles, and NSP draws its random next segments from
    the same one. It passed the dataset's two-document check without a word."""
    monkeypatch.setattr(corpus, "MAX_DOCUMENT_BYTES", 1000)
    f = tmp_path / "c.txt"
    f.write_text("\n".join(f"Article {i} is one line here." for i in range(200)) + "\n")
    with caplog.at_level("WARNING", logger="scratchbert.corpus"):
        assert len(load_documents(str(f))) > 5
    (record,) = caplog.records
    assert f"corpus file {f} has a document longer than" in record.getMessage()
    assert "separate documents with a blank line" in record.getMessage()
    caplog.clear()
    f.write_text("\n\n".join(f"Article {i} is one line here." for i in range(200)) + "\n")
    with caplog.at_level("WARNING", logger="scratchbert.corpus"):
        assert len(load_documents(str(f))) == 200
    assert not caplog.records


def test_documents_are_streamed_one_at_a_time(tmp_path):
    f = tmp_path / "c.txt"
    f.write_bytes(b"First.\n\nSecond.\n\n\xff broken tail\n")  # the bad byte comes after two documents
    stream = iter_documents(str(f))
    assert next(stream) == "First." and next(stream) == "Second."
    with pytest.raises(ScratchBertError, match="not UTF-8"):
        next(stream)


def test_gzip_and_json_lines_give_the_same_documents_as_plain_text(tmp_path):
    docs = ["A first document.\nIts second paragraph.", "A second document.", "Caf\u00e9 third."]
    plain = tmp_path / "plain" / "c.txt"
    plain.parent.mkdir()
    plain.write_text("\n\n".join(docs) + "\n")
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    with gzip.open(mixed / "a.txt.gz", "wt", encoding="utf-8") as f:
        f.write("\n\n".join(docs[:2]) + "\n")
    (mixed / "b.jsonl").write_text(json.dumps({"text": docs[2], "id": 7}) + "\n\n")
    with gzip.open(mixed / "c.jsonl.gz", "wt", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d.replace("\n", "\n\n  ")}) + "\n")  # blank lines inside a row collapse
    (mixed / "notes.md").write_text("not part of the corpus\n")
    assert load_documents(str(plain)) == docs
    assert load_documents(str(mixed)) == docs + docs
    assert load_documents(str(mixed / "a.txt.gz")) == docs[:2]
    # sizes for sampling: the text's bytes, a .gz by its uncompressed size
    assert corpus_bytes(str(mixed / "a.txt.gz")) == len(("\n\n".join(docs[:2]) + "\n").encode())
    assert corpus_bytes(str(plain)) == plain.stat().st_size


def test_a_gzip_file_of_several_members_is_sized_at_texts_ratio_not_past_4_gib(tmp_path):
    """`cat a.gz b.gz` and bgzip write several members; the trailer holds the last one's size only."""
    import random

    rng = random.Random(0)
    words = [f"word{i}" for i in range(3000)]
    text = "\n\n".join(" ".join(rng.choices(words, k=60)) + "." for _ in range(3000)) + "\n\n"  # about 1.3 MB
    f = tmp_path / "multi.txt.gz"
    f.write_bytes(gzip.compress(text.encode()) + gzip.compress(b"Last document.\n"))
    assert f.stat().st_size > 70_000  # well above the last member's 15 bytes: it used to read as 4 GiB
    size = corpus_bytes(str(f))
    assert size == 3 * f.stat().st_size and len(text) / 2 < size < 2 * len(text)
    assert load_documents(str(f))[-1] == "Last document."  # every member is read


def test_a_corpus_folder_leaves_out_hidden_files_and_reads_linked_folders(tmp_path):
    """macOS's ._ copies (binary) and notebook checkpoints are not text of the corpus; a linked
    subfolder is, once, even where a link points back up the tree."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.txt").write_text("Linked text.\n")
    corpus = tmp_path / "corpus"
    (corpus / ".ipynb_checkpoints").mkdir(parents=True)
    (corpus / "a.txt").write_text("Own text.\n")
    (corpus / "._a.txt").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X")
    (corpus / ".ipynb_checkpoints" / "a-checkpoint.txt").write_text("Own text.\n")
    (corpus / "linked").symlink_to(elsewhere)
    (elsewhere / "up").symlink_to(corpus)  # a loop
    assert load_documents(str(corpus)) == ["Own text.", "Linked text."]


def test_a_lone_surrogate_in_json_lines_becomes_a_replacement_character(tmp_path):
    """An emoji cut in half ("\\ud83d") is valid JSON but not text: the tokenizer and dataset
    stages used to fail on it with an internal error."""
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"text": "Fine text \ud83d here."}) + "\n" + json.dumps({"text": "A smile \ud83d\ude00."}) + "\n")
    assert load_documents(str(f)) == ["Fine text \ufffd here.", "A smile \U0001f600."]


@pytest.mark.parametrize("line, words", [
    ("not json", "line 2 of .* is not JSON"),
    ('{"body": "x"}', "line 2 of .* has no string field 'text'"),
    ('["a list"]', "line 2 of .* has no string field 'text'"),
])
def test_bad_json_lines_name_the_line(tmp_path, line, words):
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps({"text": "fine"}) + "\n" + line + "\n")
    with pytest.raises(ScratchBertError, match=words) as e:
        load_documents(str(f))
    assert _one_sentence(str(e.value))


def test_a_truncated_gzip_file_is_one_clear_error(tmp_path):
    f = tmp_path / "c.txt.gz"
    f.write_bytes(gzip.compress(("Some text here.\n" * 5000).encode())[:-200])
    with pytest.raises(ScratchBertError, match="could not be read.*truncated or corrupt") as e:
        load_documents(str(f))
    assert _one_sentence(str(e.value))


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


def test_text_compressed_otherwise_than_with_gzip_is_one_clear_line(tmp_path):
    """A .bz2, .xz or .zst file named on its own 'looks binary (it contains NUL bytes); give plain
    UTF-8 text' (or 'is not UTF-8 text'); in a folder it was left out, unread and unsaid."""
    import bz2
    import lzma

    text = BERT_LAYOUT.encode() * 50
    zstd = b"\x28\xb5\x2f\xfd\x04\x58" + b"packed bytes without a zero"  # a zstd frame's header
    for name, data, packer in [("c.txt.bz2", bz2.compress(text), "bzip2"), ("c.txt.xz", lzma.compress(text), "xz"),
                               ("c.txt.zst", zstd, "zstd"), ("c.txt", bz2.compress(text), "bzip2")]:
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ScratchBertError, match=f"is compressed with {packer}, which scratchbert does not read; unpack it, "
                                                   "or recompress it with gzip") as e:
            load_documents(str(tmp_path / name))
        assert _one_sentence(str(e.value))
    (tmp_path / "c.txt").write_bytes(text)
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(text))
    with pytest.raises(ScratchBertError, match=r"holds 3 text files compressed otherwise than with gzip \(c.txt.bz2, …\)") as e:
        corpus_bytes(str(tmp_path))
    assert _one_sentence(str(e.value))
    for name in ("c.txt.bz2", "c.txt.xz", "c.txt.zst"):
        (tmp_path / name).unlink()
    assert len(load_documents(str(tmp_path))) == 2 * 101  # .txt and .txt.gz
    (tmp_path / "c.txt").write_bytes(gzip.compress(text))  # gzip, named as plain text: "looks binary"
    with pytest.raises(ScratchBertError, match="is compressed with gzip, but its name does not end in .gz .*; rename it"):
        load_documents(str(tmp_path / "c.txt"))
    (tmp_path / "c.txt").write_text("BZh9 is how a bzip2 file starts.\n\nA second document.\n")  # text, not bzip2
    assert load_documents(str(tmp_path / "c.txt"))[0] == "BZh9 is how a bzip2 file starts."


def test_missing_path_and_folder_without_txt(tmp_path):
    with pytest.raises(ScratchBertError, match="does not exist") as e:
        load_documents(str(tmp_path / "nope.txt"))
    assert _one_sentence(str(e.value))
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ScratchBertError, match=r"no \.txt, \.txt\.gz, \.jsonl, \.jsonl\.gz files"):
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
    # capitals of other scripts, scripts without case, CJK stops without a space, Spanish and French openers
    ("Он ушёл. Она пришла.", ["Он ушёл.", "Она пришла."]),
    ("Il est parti. Élodie est venue.", ["Il est parti.", "Élodie est venue."]),
    ("ذهب الولد. جاء الرجل.", ["ذهب الولد.", "جاء الرجل."]),
    ("वह गया। वह आया।", ["वह गया।", "वह आया।"]),
    ("猫が座った。犬が走った。", ["猫が座った。", "犬が走った。"]),
    ("你好吗？！我很好。。。真的？!」他说。", ["你好吗？！", "我很好。。。", "真的？!」", "他说。"]),  # runs of stops, not sentences of them
    ("¿Qué? ¡Sí! «Bien». Hola.", ["¿Qué?", "¡Sí!", "«Bien».", "Hola."]),
    ("Он сказал это. потом ушёл.", ["Он сказал это. потом ушёл."]),  # a cased text: lower-case goes on
    # a lower-cased text (no capital in the paragraph): lower-case starts a sentence, abbreviations still do not
    ("the cat sat, e.g. on a mat. the dog ran.", ["the cat sat, e.g. on a mat.", "the dog ran."]),
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
    docs = list(corpus._wikitext_documents(WIKITEXT_LINES))
    assert docs == [
        "The game was released in 2011 .\nPlayers move units .\nThere are five classes .",
        "It is a tall building .",
    ]


@pytest.fixture
def fake_hub(monkeypatch):
    """Replace ``datasets.load_dataset`` with a recorder returning a small streaming dataset
    (it insists on ``streaming=True``: a corpus is never downloaded whole)."""
    import datasets

    calls = []
    tables = {}

    def load_dataset(name, config=None, split=None, streaming=False, **kw):
        assert streaming, "the corpus must be read in streaming mode"
        calls.append((name, config, split))
        if name not in tables:
            raise FileNotFoundError(f"Dataset '{name}' doesn't exist on the Hub or cannot be accessed.")
        return datasets.Dataset.from_dict(tables[name]).to_iterable_dataset()

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
    assert docs == list(corpus._wikitext_documents(WIKITEXT_LINES)) and len(docs) == 2


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
    tables["someone/sentences"] = {"text": [["One sentence.", "Another."]]}  # a list a row: not text to split
    with pytest.raises(ScratchBertError, match=r"column 'text' holds list values, not text; give a column of strings"):
        load_documents("hf://someone/sentences")


# --- s3:// (a real embedded S3 server, see tests/unit/conftest.py) ------------------------

def test_s3_object_and_prefix_give_the_same_documents_as_the_local_files(tmp_path, s3_env, s3_server, s3_bucket):
    part1 = tmp_path / "part-1.txt"
    part2 = tmp_path / "part-2.txt"
    part1.write_text(BERT_LAYOUT)
    part2.write_text("Fourth doc, from another file.\n")
    client = s3_server.client()
    client.fput_object(s3_bucket, "corpora/wiki/part-1.txt", str(part1))
    client.fput_object(s3_bucket, "corpora/wiki/part-2.txt", str(part2))
    client.fput_object(s3_bucket, "corpora/wiki/._part-1.txt", str(part2))  # hidden: left out, as in a folder
    client.fput_object(s3_bucket, "corpora/wiki/.cache/part-3.txt", str(part2))

    assert load_documents(f"s3://{s3_bucket}/corpora/wiki/part-1.txt") == load_documents(str(part1))
    assert load_documents(f"s3://{s3_bucket}/corpora/wiki") == load_documents(str(tmp_path))
    assert len(load_documents(f"s3://{s3_bucket}/corpora/wiki/", max_bytes=1)) == 1
    assert corpus_bytes(f"s3://{s3_bucket}/corpora/wiki") == part1.stat().st_size + part2.stat().st_size
    # a doubled slash names the same prefix, hidden objects left out alike
    assert load_documents(f"s3://{s3_bucket}//corpora/wiki") == load_documents(str(tmp_path))


def test_a_folder_uploaded_reads_as_it_does_here(tmp_path, s3_env, s3_bucket):
    """run-local uploads a local corpus folder and its tasks read it from S3: the same documents
    in the same order. Object names sorted as strings put "wiki-2.txt" before "wiki/a.txt" (a
    folder's files sort by their parts), and the upload did not follow a linked folder."""
    from scratchbert import storage

    corpus, elsewhere = tmp_path / "corpus", tmp_path / "elsewhere"
    (corpus / "wiki").mkdir(parents=True)
    elsewhere.mkdir()
    for name, text in {"wiki/a.txt": "Alpha.", "wiki-2.txt": "Beta.", "wiki.txt": "Gamma.", "z.txt": "Zeta."}.items():
        (corpus / name).write_text(text + "\n")
    (elsewhere / "linked.txt").write_text("Linked.\n")
    (corpus / "more").symlink_to(elsewhere, target_is_directory=True)
    storage.upload_dir(corpus, f"s3://{s3_bucket}/up")
    here = load_documents(str(corpus))
    assert here == ["Linked.", "Alpha.", "Beta.", "Gamma.", "Zeta."]  # more/, wiki/, wiki-2.txt, wiki.txt, z.txt
    assert load_documents(f"s3://{s3_bucket}/up") == here


def test_s3_objects_are_streamed_not_downloaded(tmp_path, s3_env, s3_server, s3_bucket, monkeypatch):
    import tempfile

    from scratchbert import storage

    client = s3_server.client()
    body = "\n\n".join(f"Document {i} says something." for i in range(3000)) + "\n"
    with gzip.open(tmp_path / "big.txt.gz", "wt", encoding="utf-8") as f:
        f.write(body)
    client.fput_object(s3_bucket, "c/part-1.txt", _write(tmp_path / "p1.txt", body))
    client.fput_object(s3_bucket, "c/part-2.txt.gz", str(tmp_path / "big.txt.gz"))
    client.fput_object(s3_bucket, "c/readme.md", _write(tmp_path / "r.md", "not text of the corpus\n"))
    monkeypatch.setattr(storage, "download", lambda *a, **k: pytest.fail("a corpus must not be downloaded"))
    monkeypatch.setattr(tempfile, "mkdtemp", lambda *a, **k: pytest.fail("a corpus must not touch the disk"))
    stream = iter_documents(f"s3://{s3_bucket}/c")
    assert next(stream) == "Document 0 says something."
    rest = list(stream)
    assert len(rest) == 2 * 3000 - 1 and rest[-1] == "Document 2999 says something."
    assert corpus_bytes(f"s3://{s3_bucket}/c") == 2 * len(body.encode())  # the .gz by its trailer


def test_an_object_stored_with_content_encoding_gzip_is_read_whole(tmp_path, s3_env, s3_server, s3_bucket):
    """gsutil cp -z and aws s3 cp --content-encoding gzip store gzip bytes that HTTP clients
    unpack on the way: the reader counts stored bytes, so it read about a third of the text."""
    body = "\n\n".join(f"Document {i} says something." for i in range(3000)) + "\n"
    packed = gzip.compress(body.encode())
    s3_server.client().put_object(s3_bucket, "ce/part.txt.gz", io.BytesIO(packed), len(packed),
                                  metadata={"Content-Encoding": "gzip"})
    assert load_documents(f"s3://{s3_bucket}/ce") == load_documents(_write(tmp_path / "part.txt", body))


def test_an_s3_prefix_chooses_its_objects_as_a_folder_chooses_its_files(tmp_path, s3_env, s3_server, s3_bucket, caplog):
    """Text packed otherwise than with gzip under a prefix was left out unread and unsaid (in a
    folder it is an error), and so were other objects; a prefix of none of its suffixes says so."""
    client = s3_server.client()
    client.fput_object(s3_bucket, "mixed/a.txt", _write(tmp_path / "a.txt", "Alpha.\n"))
    client.fput_object(s3_bucket, "mixed/b.jsonl", _write(tmp_path / "b.jsonl", json.dumps({"text": "Beta."}) + "\n"))
    client.fput_object(s3_bucket, "mixed/_SUCCESS", _write(tmp_path / "s", ""))
    with caplog.at_level("WARNING", logger="scratchbert.corpus"):
        assert load_documents(f"s3://{s3_bucket}/mixed") == ["Alpha.", "Beta."]
    assert f"corpus prefix s3://{s3_bucket}/mixed: left out 1 object not named" in caplog.text and "(_SUCCESS)" in caplog.text
    client.fput_object(s3_bucket, "mixed/sub/c.txt.zst", _write(tmp_path / "c", "packed"))
    with pytest.raises(ScratchBertError, match=r"holds 1 text object compressed otherwise than with gzip \(sub/c\.txt\.zst\)") as e:
        corpus_bytes(f"s3://{s3_bucket}/mixed/")
    assert _one_sentence(str(e.value))
    client.fput_object(s3_bucket, "csv/rows.csv", _write(tmp_path / "r.csv", "a,b\n"))
    with pytest.raises(ScratchBertError, match=r"corpus prefix s3://.*/csv has no \.txt, .* objects"):
        load_documents(f"s3://{s3_bucket}/csv")
    assert load_documents(f"s3://{s3_bucket}/csv/rows.csv") == ["a,b"]  # one object named on its own: any name


def _write(path, text) -> str:
    path.write_text(text)
    return str(path)


class _FlakyBody:
    """An HTTP body that drops the connection after ``fail_after`` bytes (once per response)."""

    def __init__(self, data: bytes, fail_after: int | None):
        self.data, self.pos, self.fail_after = data, 0, fail_after

    def read1(self, amt: int, decode_content: bool = True) -> bytes:
        from urllib3.exceptions import ProtocolError

        assert decode_content is False  # the stored bytes, which the offsets count
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise ProtocolError("Connection broken: IncompleteRead")
        n = min(amt, len(self.data) - self.pos, 7)
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def close(self):
        pass

    def release_conn(self):
        pass


def test_an_object_stream_resumes_where_a_dropped_connection_stopped():
    from types import SimpleNamespace

    from scratchbert import storage

    data = bytes(range(256)) * 40
    offsets = []

    class Client:
        def stat_object(self, bucket, key):
            return SimpleNamespace(size=len(data))

        def get_object(self, bucket, key, offset=0):
            offsets.append(offset)
            return _FlakyBody(data[offset:], fail_after=3000 if len(offsets) < 4 else None)

    with storage.open_object("s3://bucket/key.txt", client=Client()) as f:
        assert f.read() == data
    assert offsets[0] == 0 and offsets == sorted(offsets) and len(offsets) == 4  # each retry asks from where it stopped

    class Dead(Client):
        def get_object(self, bucket, key, offset=0):
            return _FlakyBody(data[offset:], fail_after=0)

    with pytest.raises(ScratchBertError, match="reading s3://bucket/key.txt failed at byte 0 after 2 retries"):
        storage.open_object("s3://bucket/key.txt", client=Dead(), retries=2).read()


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
