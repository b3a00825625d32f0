"""Read documents from local files, ``s3://`` or the Hugging Face Hub, and split sentences.

A corpus URI is one of:

* a local ``.txt`` file or a folder of ``.txt`` files (read in sorted order), in the
  classic BERT layout: one paragraph per line, a blank line between documents;
* ``s3://bucket/prefix``: every object under the prefix, downloaded through
  :mod:`scratchbert.storage` (endpoint and keys from ``AWS_ENDPOINT_URL``,
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), then read as local files;
* ``hf://owner/name[?config=NAME&split=train&column=text]`` (:mod:`scratchbert.hub`): a
  dataset from the Hugging Face Hub through :func:`datasets.load_dataset`. WikiText
  (``hf://Salesforce/wikitext?config=wikitext-2-raw-v1``) is split into articles at its
  `` = Title = `` headings; any other dataset gives one document per row of its text column.

A document is returned as one string whose lines are paragraphs.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from scratchbert.errors import ScratchBertError


def load_documents(uri: str, max_bytes: int | None = None) -> list[str]:
    """Return the documents of a corpus, optionally only a prefix of about ``max_bytes``.

    The prefix ends at a document boundary: documents are taken while their UTF-8 size
    adds up to at most ``max_bytes`` (and at least one document is always taken).
    """
    uri = str(uri)
    if uri.startswith("hf://"):
        docs = _hf_documents(uri)
    elif uri.startswith("s3://"):
        from scratchbert import storage

        with tempfile.TemporaryDirectory(prefix="scratchbert-corpus-") as tmp:
            docs = _local_documents(storage.download(uri, tmp))
    else:
        docs = _local_documents(Path(uri))
    if not docs:
        raise ScratchBertError(f"corpus {uri} holds no text; give a file with one paragraph per line and blank lines between documents")
    if max_bytes is not None:
        docs = _prefix(docs, max_bytes)
    return docs


def _prefix(docs: list[str], max_bytes: int) -> list[str]:
    taken, total = [], 0
    for doc in docs:
        size = len(doc.encode("utf-8")) + 2
        if taken and total + size > max_bytes:
            break
        taken.append(doc)
        total += size
    return taken


def _local_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise ScratchBertError(f"corpus folder {path} has no .txt files; put the text in .txt files or point --corpus at a file")
        return files
    if path.is_file():
        return [path]
    raise ScratchBertError(f"corpus {path} does not exist; give a .txt file, a folder of .txt files, s3://bucket/prefix or hf://dataset")


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data[:1 << 20]:
        raise ScratchBertError(f"corpus file {path} looks binary (it contains NUL bytes); give plain UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScratchBertError(f"corpus file {path} is not UTF-8 text (bad byte at offset {e.start}); convert it to UTF-8") from None


def split_documents(text: str) -> list[str]:
    """Split text in the BERT layout into documents (blank-line separated, lines = paragraphs)."""
    docs = []
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        lines = [line.strip() for line in block.split("\n")]
        doc = "\n".join(line for line in lines if line)
        if doc:
            docs.append(doc)
    return docs


def _local_documents(path: Path) -> list[str]:
    docs: list[str] = []
    for f in _local_files(Path(path)):
        docs.extend(split_documents(_read_text(f)))
    return docs


_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


def _hf_documents(uri: str) -> list[str]:
    """Load ``hf://owner/name[?config=..&split=..&column=..]`` with ``datasets.load_dataset``."""
    from scratchbert import hub

    address = hub.parse(uri)
    split, column = address.split or "train", address.column or "text"
    import datasets

    try:
        ds = datasets.load_dataset(address.repo, address.config, split=split, revision=address.revision)
    except Exception as e:  # the hub, the network or a bad name: one sentence for the user
        raise ScratchBertError(f"could not load {uri} from the Hugging Face Hub ({type(e).__name__}: {str(e).splitlines()[0][:200]}); check the name and your network, or use a local path") from None
    if column not in ds.column_names:
        raise ScratchBertError(f"dataset {uri} has no column {column!r} (it has {ds.column_names}); add ?column=NAME to the URI")
    rows = ds[column]
    if address.repo.rsplit("/", 1)[-1] == "wikitext":  # "wikitext" or its current home "Salesforce/wikitext"
        return _wikitext_documents(rows)
    docs = ("\n".join(line.strip() for line in (r or "").split("\n") if line.strip()) for r in rows)
    return [d for d in docs if d]


def _wikitext_documents(lines: list[str]) -> list[str]:
    docs, current = [], []
    for line in lines:
        if _WIKITEXT_TITLE.match(line.rstrip("\n")):
            if current:
                docs.append("\n".join(current))
            current = []
            continue
        line = line.strip()
        if line and not line.startswith("= "):
            current.append(line)
    if current:
        docs.append("\n".join(current))
    return docs


# --- sentence splitting -------------------------------------------------------------------
# A rule-based splitter: no NLTK/spaCy models to download. A boundary is [.!?] (with closing
# quotes/brackets) followed by space and an upper-case letter, digit or opening quote, unless
# the word before the period is a known abbreviation or a single initial ("J. R. Smith").
# Decimals ("3.14") and "e.g." inside a sentence never match because no space follows.

_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt ft no nos vol vols pp pg fig figs ed eds rev gen col lt
    capt sgt cmdr gov sen rep pres inc ltd co corp bros dept univ assn est approx ca cf vs
    etc al jan feb mar apr jun jul aug sep sept oct nov dec e.g i.e u.s u.k u.n a.m p.m
    ph.d b.a m.a b.sc m.sc d.c n.y l.a op no. ave blvd rd mrs. messrs""".split()
)
_NUMERO = frozenset({"no", "nos"})
_BOUNDARY = re.compile(r"([.!?])([\"'”’)\]]*)\s+(?=[\"'“‘(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split a paragraph (or several, one per line) into sentences."""
    sentences: list[str] = []
    for paragraph in text.split("\n"):
        start = 0
        for m in _BOUNDARY.finditer(paragraph):
            if m.group(1) == ".":
                word = paragraph[start:m.start()].rsplit(None, 1)[-1] if paragraph[start:m.start()].strip() else ""
                word = word.lstrip("\"'“‘([").lower()
                if word in _NUMERO and not paragraph[m.end():m.end() + 1].isdigit():
                    pass  # "no." ends a sentence unless a number follows ("No. 5")
                elif word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                    continue
                if "." in word and len(word) <= 6 and all(len(p) <= 2 for p in word.split(".")):
                    continue  # dotted abbreviations we do not list: "u.s.a", "e.v"
            end = m.end(2)
            sentence = paragraph[start:end].strip()
            if sentence:
                sentences.append(sentence)
            start = m.end()
        tail = paragraph[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences
