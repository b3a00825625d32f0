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

import codecs
import re
import tempfile
from pathlib import Path

from scratchbert.errors import ScratchBertError


def load_documents(uri: str, max_bytes: int | None = None) -> list[str]:
    """Return the documents of a corpus, optionally only a prefix of about ``max_bytes``.

    The prefix ends at a document boundary: documents are taken while their UTF-8 size adds
    up to at most ``max_bytes``. A first document larger than that (a corpus that is one long
    document) is cut inside, at the last paragraph (line) that fits. Local files are read
    only as far as the prefix needs, so the bound holds for memory too.
    """
    uri = str(uri)
    if max_bytes is not None and max_bytes <= 0:
        max_bytes = None
    if uri.startswith("hf://"):
        docs = _hf_documents(uri)
    elif uri.startswith("s3://"):
        from scratchbert import storage

        with tempfile.TemporaryDirectory(prefix="scratchbert-corpus-") as tmp:
            local = storage.download(uri, Path(tmp) / "corpus")
            # errors name the object (s3://bucket/key), not the temporary copy
            shown = uri if local.is_file() else uri.rstrip("/")
            docs = _local_documents(local, max_bytes, shown=shown)
    else:
        docs = _local_documents(Path(uri), max_bytes)
    if not docs:
        raise ScratchBertError(f"corpus {uri} holds no text; give a file with one paragraph per line and blank lines between documents")
    if max_bytes is not None:
        docs = _prefix(docs, max_bytes)
    return docs


def _prefix(docs: list[str], max_bytes: int) -> list[str]:
    taken, total = [], 0
    for doc in docs:
        size = len(doc.encode("utf-8")) + 2
        if total + size > max_bytes:
            break
        taken.append(doc)
        total += size
    return taken or [_cut(docs[0], max_bytes)]


def _cut(doc: str, max_bytes: int) -> str:
    """The start of one document, at most ``max_bytes`` of UTF-8: whole lines (paragraphs)
    where one fits, else the first line cut at a space (or, without one, at a character)."""
    kept, total = [], 0
    for line in doc.split("\n"):
        size = len(line.encode("utf-8")) + 1
        if total + size > max_bytes:
            break
        kept.append(line)
        total += size
    if kept:
        return "\n".join(kept)
    head = doc.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")
    space = head.rfind(" ")
    return head[:space] if space > 0 else head


def _local_files(path: Path, shown: str | None = None) -> list[Path]:
    name = shown or str(path)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.txt") if p.is_file())
        if not files:
            raise ScratchBertError(f"corpus folder {name} has no .txt files; put the text in .txt files or point --corpus at a file")
        return files
    if path.is_file():
        return [path]
    if path.exists():
        raise ScratchBertError(f"corpus {name} is neither a file nor a folder; give a .txt file or a folder of them")
    raise ScratchBertError(f"corpus {name} does not exist; give a .txt file, a folder of .txt files, s3://bucket/prefix or hf://dataset")


# Bytes read past ``max_bytes`` so that the document which crosses the limit is seen whole
# (the prefix keeps whole documents); a corpus that is one long document is read no further.
_READ_SLACK = 1 << 20
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def read_text(path: Path, *, what: str = "corpus file", limit: int | None = None, shown: str | None = None) -> str:
    """Read a text file as a user means it: UTF-8 (with or without a byte-order mark), or UTF-16/32
    with a byte-order mark or, for UTF-16, without one (found from its zero bytes).

    ``limit``: read only about the first ``limit`` bytes of text (ending at a line break, where
    there is one). Errors are one sentence naming ``shown`` (default: the path) as ``what``.
    """
    path = Path(path)
    name = shown or str(path)
    if not path.exists():
        raise ScratchBertError(f"{what} {name} does not exist; check the path")
    if path.is_dir():
        raise ScratchBertError(f"{what} {name} is a folder; give a text file")
    try:
        with path.open("rb") as f:
            head = f.read(4)
            encoding, skip = _encoding(head)
            f.seek(skip)
            unit = {"utf-8": 1, "utf-16-le": 2, "utf-16-be": 2}.get(encoding, 4)
            budget = None if limit is None else (limit + _READ_SLACK) * unit
            data = f.read() if budget is None else f.read(budget)
            truncated = budget is not None and bool(f.read(1))
    except OSError as e:
        raise ScratchBertError(f"cannot read {what} {name}: {e.strerror or e}; check the file and its permissions") from None
    if encoding == "utf-8" and b"\x00" in data[:1 << 20]:
        encoding = _bomless_utf16(data[:1 << 16])
        if encoding is None:
            raise ScratchBertError(f"{what} {name} looks binary (it contains NUL bytes); give plain UTF-8 text")
    try:
        text = codecs.getincrementaldecoder(encoding)("strict").decode(data, final=not truncated)
    except UnicodeDecodeError as e:
        raise ScratchBertError(f"{what} {name} is not {encoding.upper()} text (bad byte at offset {e.start + skip}); "
                               "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None
    if truncated and "\n" in text:
        text = text[:text.rindex("\n") + 1]
    return text


def _encoding(head: bytes) -> tuple[str, int]:
    """The encoding a byte-order mark announces, and its length; plain UTF-8 without one."""
    for bom, encoding in _BOMS:
        if head.startswith(bom):
            return encoding, len(bom)
    return "utf-8", 0


def _bomless_utf16(sample: bytes) -> str | None:
    """UTF-16 without a byte-order mark: mostly-Latin text has a zero in every other byte."""
    even, odd = sample[0::2], sample[1::2]
    if not even or not odd:
        return None
    zeros_even, zeros_odd = even.count(0) / len(even), odd.count(0) / len(odd)
    if zeros_odd > 0.3 and zeros_even < 0.05:
        return "utf-16-le"
    if zeros_even > 0.3 and zeros_odd < 0.05:
        return "utf-16-be"
    return None


def split_documents(text: str) -> list[str]:
    """Split text in the BERT layout into documents (blank-line separated, lines = paragraphs)."""
    docs = []
    for block in re.split(r"\n[ \t]*\n", text.replace("\r\n", "\n")):
        lines = [line.strip() for line in block.split("\n")]
        doc = "\n".join(line for line in lines if line)
        if doc:
            docs.append(doc)
    return docs


def _local_documents(path: Path, max_bytes: int | None = None, *, shown: str | None = None) -> list[str]:
    """Documents of a file or folder, read only as far as ``max_bytes`` needs; ``shown`` names
    ``path`` in errors (the s3:// address a temporary copy came from)."""
    path = Path(path)
    docs: list[str] = []
    total = 0
    for f in _local_files(path, shown):
        name = None
        if shown is not None:
            name = shown if f == path else f"{shown}/{f.relative_to(path).as_posix()}"
        limit = None if max_bytes is None else max_bytes - total
        text = read_text(f, limit=limit, shown=name)
        docs.extend(split_documents(text))
        total += len(text.encode("utf-8"))
        if max_bytes is not None and total >= max_bytes:
            break  # enough text: the file that crossed the limit was read a little past it
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
