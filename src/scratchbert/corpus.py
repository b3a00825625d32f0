"""Stream documents from local files, ``s3://`` or the Hugging Face Hub, and split sentences.

A corpus URI is one of:

* a local file, or a folder of them (read in sorted path order);
* ``s3://bucket/prefix``: one object, or every object under the prefix, each streamed as it is
  read (:func:`scratchbert.storage.open_object`: endpoint and keys from ``AWS_ENDPOINT_URL``,
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``), never stored whole;
* ``hf://owner/name[?config=NAME&split=train&column=text]`` (:mod:`scratchbert.hub`): a
  dataset from the Hugging Face Hub through :func:`datasets.load_dataset` in streaming mode.
  WikiText (``hf://Salesforce/wikitext?config=wikitext-2-raw-v1``) is split into articles at
  its `` = Title = `` headings; any other dataset gives one document per row of its text column.

Files and objects are read by their name: ``.txt`` (and any other name given on its own) is
the classic BERT layout, one paragraph per line and a blank line between documents;
``.jsonl`` (and ``.json`` named on its own, as Hugging Face's json loader reads it) holds one
JSON object per line whose ``text`` field is a document; a ``.gz`` after any of them is
decompressed as it is read. A folder or prefix contributes its files of these :data:`SUFFIXES`
and says which others it left out; text packed otherwise (``.bz2``, ``.zst``...) is an error.

:func:`iter_documents` yields one document at a time (a string whose lines are paragraphs),
so memory does not depend on the corpus size: a document longer than
:data:`MAX_DOCUMENT_BYTES` is cut into pieces at paragraph boundaries while it is read.
"""

from __future__ import annotations

import codecs
import gzip
import io
import json
import logging
import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TypeVar

from scratchbert.errors import ScratchBertError, cause
from scratchbert.outputs import walk_files

# The files a folder (or prefix) gives: plain text (a paragraph a line) or JSON Lines (the document
# in "text"), each also gzipped. A .json file is read as JSON Lines, as Hugging Face's json loader
# reads it, where it is named on its own; in a folder it is left out (and said so), where it is
# more often metadata beside the text than text.
TEXT_SUFFIXES = (".txt", ".jsonl")
SUFFIXES = tuple(s + gz for s in TEXT_SUFFIXES for gz in ("", ".gz"))
# A document is cut into pieces of at most this size (at paragraph boundaries) while it is
# read: a corpus file without blank lines is otherwise one document the size of the file.
MAX_DOCUMENT_BYTES = 4 << 20
# A longer line is an error rather than a memory hazard: a corpus holds a paragraph per line.
MAX_LINE_BYTES = 64 << 20
# A longer paragraph (no natural one is) is cut at sentence ends into paragraphs of at most this
# many characters while it is read: the tokenizer's trainer held 2.2 GB for a 30 MB one.
MAX_PARAGRAPH_CHARS = 1 << 20
_BINARY_PROBE = 1 << 20  # NUL bytes in the first MiB of a file mean it is not text
GZIP_TRAILERS_READ = 64  # .gz sizes read from their trailers; the rest are estimated from these
# Text packs about 3 times smaller with gzip and rarely 10 times: a .gz file too small to unpack
# to 4 GiB whose trailer says less than it holds is several members, not one past 4 GiB.
GZIP_TEXT_RATIO = 3
GZIP_MAX_RATIO = 10

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    """One file or object of a corpus: its name (for messages), stored size and how to open it."""

    name: str
    size: int
    open: Callable[[], BinaryIO]

    @property
    def compressed(self) -> bool:
        return self.name.lower().endswith(".gz")

    @property
    def jsonl(self) -> bool:
        return self.name.lower().removesuffix(".gz").endswith((".jsonl", ".json"))


def iter_documents(uri: str, max_bytes: int | None = None) -> Iterator[str]:
    """Yield the documents of a corpus one by one, optionally only its first ``max_bytes``.

    Documents count their UTF-8 size plus two bytes (the separating blank line). The document
    that crosses ``max_bytes`` is cut at a paragraph boundary to fill the budget (at least one
    paragraph of the first document is always given), and reading stops there.
    """
    uri = str(uri)
    docs = _hf_documents(uri) if uri.startswith("hf://") else _source_documents(sources(uri))
    empty = True
    for doc in _limit(docs, max_bytes) if max_bytes else docs:
        empty = False
        yield doc
    if empty:
        raise ScratchBertError(f"corpus {uri} holds no text; give a file with one paragraph per line and blank lines between documents")


def write_documents(documents: Iterable[str], path: str | Path) -> int:
    """Write documents in the classic layout (a paragraph per line, a blank line after each), which
    :func:`iter_documents` reads back as the same documents; returns the bytes written."""
    written = 0
    with open(path, "wb") as f:
        for doc in documents:
            written += f.write(doc.encode("utf-8") + b"\n\n")
    return written


def load_documents(uri: str, max_bytes: int | None = None) -> list[str]:
    """Every document of a corpus (or of its first ``max_bytes``) as a list: for small corpora only."""
    return list(iter_documents(uri, max_bytes))


def document_bytes(doc: str) -> int:
    """The size a document counts for in ``max_bytes`` and samples: its UTF-8 bytes and a blank line."""
    return len(doc.encode("utf-8")) + 2


def _limit(docs: Iterable[str], max_bytes: int) -> Iterator[str]:
    total = 0
    for doc in docs:
        size = document_bytes(doc)
        if total + size <= max_bytes:
            total += size
            yield doc
            continue
        lines, room = [], max_bytes - total - 2  # cut at a paragraph boundary to fill the budget
        for line in doc.split("\n"):
            n = len(line.encode("utf-8")) + 1
            if n > room and (lines or total):
                break
            lines.append(line)
            room -= n
        if lines:
            yield "\n".join(lines)
        return


def sources(uri: str) -> list[Source]:
    """The files or objects of a local or ``s3://`` corpus, in reading order (nothing is read)."""
    uri = str(uri)
    if uri.startswith("s3://"):
        from scratchbert import storage

        client = storage.client_from_env()
        objects = storage.list_objects(uri, client=client, skip=_hidden)
        bucket, key = storage.parse_s3_uri(uri)
        if [name for name, _ in objects] != [f"s3://{bucket}/{key}"]:  # a prefix's objects, chosen as a folder's files are
            prefix = f"s3://{bucket}/{key.rstrip('/')}/" if key else f"s3://{bucket}/"  # (one object named on its own: any name)
            objects = _choose([(name[len(prefix):], (name, size)) for name, size in objects], uri, "prefix", "objects")
        return [Source(name, size, lambda name=name: storage.open_object(name, client=client)) for name, size in objects]
    path = Path(uri)
    if path.is_dir():
        files = _choose([(str(f.relative_to(path)), f) for f in walk_files(path, skip=_hidden)], str(path), "folder", "files")
    elif path.is_file():
        files = [path]
    else:
        raise ScratchBertError(f"corpus {path} does not exist; give a text file or folder, s3://bucket/prefix or hf://dataset")
    return [Source(str(f), f.stat().st_size, lambda f=f: open(f, "rb")) for f in files]


def _choose(members: list[tuple[str, T]], where: str, kind: str, nouns: str) -> list[T]:
    """The corpus files of a folder (or objects of an ``s3://`` prefix), given as (name below it,
    member) pairs, hidden ones already left out: suffixes in any case (``BOOK.TXT``). Text packed
    otherwise than with gzip (``a.txt.bz2``) is an error, not left out unread; other files
    (``notes.md``) are left out, and said so; none at all is an error."""
    names = [name for name, _ in members]
    packed = [n for n in names if any(n.lower().endswith(s + c) for s in TEXT_SUFFIXES for c in _UNREAD_COMPRESSIONS)]
    if packed:
        noun, them, more = (nouns, "them", ", …") if len(packed) > 1 else (nouns[:-1], "it", "")
        raise ScratchBertError(f"corpus {kind} {where} holds {len(packed)} text {noun} compressed otherwise than with gzip "
                               f"({packed[0]}{more}), which scratchbert does not read; unpack {them}, or recompress {them} "
                               "with gzip (.txt.gz and .jsonl.gz are read as they stream)")
    kept = [member for name, member in members if name.lower().endswith(SUFFIXES)]
    left = [name for name in names if not name.lower().endswith(SUFFIXES)]
    if not kept:
        raise ScratchBertError(f"corpus {kind} {where} has no {', '.join(SUFFIXES)} {nouns}; name the text's {nouns} so, "
                               f"or point --corpus at one {nouns[:-1]} (read whatever its name)")
    if left:
        log.warning("corpus %s %s: left out %d %s not named %s (%s%s)", kind, where, len(left), nouns if len(left) > 1 else nouns[:-1],
                    ", ".join(SUFFIXES), ", ".join(left[:3]), ", …" if len(left) > 3 else "")
    return kept


def _hidden(relative: str) -> bool:
    """Whether a file or object name below a corpus folder or prefix is hidden (a part starts with a dot)."""
    return any(part.startswith(".") for part in relative.split("/"))


def corpus_bytes(uri: str) -> int | None:
    """About how many bytes of text a corpus holds, from sizes alone (nothing is read but the
    4-byte size trailer of the first 64 ``.gz`` files; the others are taken at their ratio);
    None when that is not known (a Hub dataset without size information)."""
    uri = str(uri)
    if uri.startswith("hf://"):
        return _hf_bytes(uri)
    total = stored = unpacked = read = 0
    for source in sources(uri):
        if not source.compressed:
            total += source.size
        elif read >= GZIP_TRAILERS_READ and stored:
            total += round(source.size * unpacked / stored)  # at the ratio of the ones read
        else:
            size = _gzip_size(source)
            stored, unpacked, read = stored + source.size, unpacked + size, read + 1
            total += size
    return total


def _gzip_size(source: Source) -> int:
    """The uncompressed size of a gzip file from its trailer. The trailer holds the size modulo
    4 GiB of its last member; compressed text is smaller than the text, so a size well below the
    stored one has wrapped, or, in a file too small to unpack to 4 GiB, belongs to the last of
    several members (``cat a.gz b.gz``, bgzip's blocks), whose sum is taken at text's usual ratio."""
    if source.name.startswith("s3://"):
        from scratchbert import storage

        with storage.open_object(source.name, offset=max(0, source.size - 4)) as f:
            tail = f.read(4)
    else:
        with open(source.name, "rb") as f:
            f.seek(max(0, source.size - 4))
            tail = f.read(4)
    size = int.from_bytes(tail, "little") if len(tail) == 4 else source.size
    if size < source.size - 65536 and source.size * GZIP_MAX_RATIO < 1 << 32:
        return source.size * GZIP_TEXT_RATIO
    while size < source.size - 65536:
        size += 1 << 32
    return size


# Compressed files scratchbert does not unpack (no gzip): suffix -> (name, first bytes).
_UNREAD_COMPRESSIONS = {".bz2": ("bzip2", b"BZh"), ".xz": ("xz", b"\xfd7zXZ\x00"), ".zst": ("zstd", b"\x28\xb5\x2f\xfd"),
                        ".lz4": ("lz4", b"\x04\x22\x4d\x18"), ".zip": ("zip", b"PK\x03\x04"),
                        ".7z": ("7-Zip", b"7z\xbc\xaf\x27\x1c")}


def _check_not_packed(stream, name: str) -> None:
    """A file compressed otherwise than with gzip, or with gzip but not named .gz, is one clear line
    (it looked binary, or not UTF-8)."""
    head = stream.peek(10)[:10]
    if head.startswith(b"\x1f\x8b\x08"):
        raise ScratchBertError(f"corpus file {name} is compressed with gzip, but its name does not end in .gz (files are read "
                               "by their names); rename it to end in .txt.gz or .jsonl.gz")
    for packer, magic in _UNREAD_COMPRESSIONS.values():  # bzip2: "BZh", the block size and the first block's (or the end's) signature
        if head.startswith(magic) and (packer != "bzip2" or head[4:10] in (b"1AY&SY", b"\x17rE8P\x90")):
            raise ScratchBertError(f"corpus file {name} is compressed with {packer}, which scratchbert does not read; unpack it, "
                                   "or recompress it with gzip (.txt.gz and .jsonl.gz are read as they stream)")


def _source_documents(srcs: list[Source]) -> Iterator[str]:
    for source in srcs:
        with source.open() as raw:
            stream = io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb")) if source.compressed else _buffered(raw)
            try:
                if not source.compressed:
                    _check_not_packed(stream, source.name)
                encoding = _stream_encoding(stream)
                lines = _lines(stream, source.name) if encoding == "utf-8" else _wide_lines(stream, encoding, source.name)
                if source.jsonl:
                    yield from _jsonl_documents(lines, source.name)
                else:
                    yield from _text_documents(lines, source.name)
            except (OSError, EOFError, zlib.error) as e:
                raise ScratchBertError(f"corpus file {source.name} could not be read ({type(e).__name__}: {e}); check that it is not truncated or corrupt") from None


def _buffered(raw: BinaryIO) -> BinaryIO:
    return raw if hasattr(raw, "peek") else io.BufferedReader(raw)


def _stream_encoding(stream) -> str:
    """UTF-8, or the UTF-16/32 a byte-order mark (or, for UTF-16, the zero bytes) announces."""
    head = stream.peek(1 << 12)[:1 << 12]
    encoding, _ = _encoding(head[:4])
    if encoding == "utf-8" and b"\x00" in head:
        encoding = _bomless_utf16(head) or "utf-8"  # a NUL in UTF-8: _lines calls it binary
    return encoding


def _wide_lines(stream, encoding: str, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-16/32 stream (its byte-order mark dropped). Lines end as in
    UTF-8 text (``\n``, ``\r\n`` or ``\r``), and each is read up to the limit only: a codecs reader
    read a whole line, however long, re-splitting all it held at every step (quadratic)."""
    reader = io.TextIOWrapper(stream, encoding=encoding, errors="strict", newline=None)
    try:
        for number in range(1, 1 << 62):
            line = reader.readline(MAX_LINE_BYTES + 1)
            if not line:
                return
            if len(line) > MAX_LINE_BYTES:
                raise ScratchBertError(f"line {number} of corpus file {name} is longer than {MAX_LINE_BYTES >> 20} MiB; a corpus holds one paragraph per line")
            yield number, line.removeprefix("\ufeff") if number == 1 else line
    except UnicodeDecodeError:
        raise ScratchBertError(f"corpus file {name} is not {encoding.upper()} text; convert it to UTF-8 "
                               "(e.g. iconv -t utf-8)") from None


def _lines(stream: BinaryIO, name: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each line of a binary stream, decoded as UTF-8 (a leading BOM dropped)."""
    offset = 0
    for number, raw in enumerate(_raw_lines(stream), start=1):
        if len(raw) > MAX_LINE_BYTES:
            raise ScratchBertError(f"line {number} of corpus file {name} is longer than {MAX_LINE_BYTES >> 20} MiB; a corpus holds one paragraph per line")
        if offset < _BINARY_PROBE and b"\x00" in raw:
            raise ScratchBertError(f"corpus file {name} looks binary (it contains NUL bytes); give plain UTF-8 text")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            if name.lower().endswith(".gz"):  # its checksum is only read at its end: damage shows up as bad text first
                raise ScratchBertError(f"corpus file {name} unpacks to text that is not UTF-8 (bad byte at offset "
                                       f"{offset + e.start}), or is damaged; check it with `gzip -t`, or convert the text to UTF-8") from None
            raise ScratchBertError(f"corpus file {name} is not UTF-8 text (bad byte at offset {offset + e.start}); convert it to UTF-8") from None
        if offset == 0:
            text = text.removeprefix("\ufeff")
        offset += len(raw)
        yield number, text


_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")


def _raw_lines(stream: BinaryIO) -> Iterator[bytes]:
    """The lines of a binary stream, each with its end: ``\n``, ``\r\n`` or a lone ``\r`` (classic
    Mac OS text, where the whole file was one line), each read up to MAX_LINE_BYTES + 1 bytes, so
    that a longer one shows as such."""
    rest = b""  # the start of a line that a read at the limit cut after a lone \r
    while True:
        raw = rest + stream.readline(MAX_LINE_BYTES + 1 - len(rest))
        rest = b""
        if not raw:
            return
        cr = raw.find(b"\r")
        if cr < 0 or cr == len(raw) - 2 and raw.endswith(b"\r\n"):
            yield raw
            continue
        lines = _LONE_CR.split(raw)
        if not raw.endswith((b"\n", b"\r")) and len(lines) > 1 and len(raw) > MAX_LINE_BYTES:
            rest = lines.pop()  # cut by the limit, not at its end: read on
        yield from (line for line in lines if line)


_SENTENCE_END = re.compile(r"[.!?。！？]\s")


def _cut(paragraph: str) -> Iterator[str]:
    """A paragraph as paragraphs of at most MAX_PARAGRAPH_CHARS, cut after the last sentence end
    (else the last space) that leaves one within the limit: text without either is cut anywhere."""
    limit, start = MAX_PARAGRAPH_CHARS, 0
    while len(paragraph) - start > limit:
        ends = [m.end() for m in _SENTENCE_END.finditer(paragraph, start + limit // 2, start + limit + 1)]
        cut = ends[-1] if ends else paragraph.rfind(" ", start + limit // 2, start + limit + 1) + 1 or start + limit
        if piece := paragraph[start:cut].strip():
            yield piece
        start = cut
    if piece := paragraph[start:].strip():
        yield piece


def _pieces(paragraphs: Iterable[str]) -> Iterator[str]:
    """Join the paragraphs of one document, cut into pieces of at most MAX_DOCUMENT_BYTES."""
    lines: list[str] = []
    size = 0
    for line in (p for paragraph in paragraphs for p in _cut(paragraph)):
        n = len(line) + 1  # characters: a cheap stand-in for bytes in this bound
        if lines and size + n > MAX_DOCUMENT_BYTES:
            yield "\n".join(lines)
            lines, size = [], 0
        lines.append(line)
        size += n
    if lines:
        yield "\n".join(lines)


def _text_documents(lines: Iterable[tuple[int, str]], name: str = "") -> Iterator[str]:
    """The classic layout: paragraphs are lines, documents end at blank (or whitespace-only) lines."""
    paragraphs: list[str] = []
    size = 0
    said = False
    for number, text in lines:
        text = text.strip()
        if not text:
            if paragraphs:
                yield "\n".join(paragraphs)
                paragraphs, size = [], 0
            continue
        for line in _cut(text):
            if paragraphs and size + len(line) + 1 > MAX_DOCUMENT_BYTES:
                if not said and name:  # a file without blank lines: one document the size of the file
                    said = True
                    log.warning("corpus file %s has a document longer than %d MiB (it ends at line %d or later): it is cut "
                                "into pieces, each taken as a document, so next-sentence pairs may join unrelated text and draw "
                                "their random next segments from the same document; separate documents with a blank line",
                                name, MAX_DOCUMENT_BYTES >> 20, number)
                yield "\n".join(paragraphs)
                paragraphs, size = [], 0
            paragraphs.append(line)
            size += len(line) + 1
    if paragraphs:
        yield "\n".join(paragraphs)


def _jsonl_documents(lines: Iterable[tuple[int, str]], name: str) -> Iterator[str]:
    first = True
    for number, line in lines:
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = _NOT_JSON
        if first and (isinstance(row, list) or row is _NOT_JSON and (line.lstrip().startswith("[") or line.strip() == "{")):
            raise ScratchBertError(f"{name} is one JSON document (an array, or an object over many lines), not the JSON Lines "
                                   "a .json or .jsonl corpus file holds: one object a line, its document in 'text' (jq -c '.[]' "
                                   "writes an array's objects so)")
        first = False
        if row is _NOT_JSON:
            raise ScratchBertError(f"line {number} of {name} is not JSON; a .jsonl corpus holds one JSON object per line")
        text = row.get("text") if isinstance(row, dict) else None
        if text is None or not isinstance(text, str):
            raise ScratchBertError(f"line {number} of {name} has no string field 'text'; each JSON line needs the document in 'text'")
        yield from _pieces(p for p in (s.strip() for s in _without_surrogates(text).split("\n")) if p)


_NOT_JSON = object()


def _without_surrogates(text: str) -> str:
    """``text`` with any lone surrogate (a JSON escape such as an emoji cut in half, valid JSON but
    not text) replaced by U+FFFD, as a UTF-8 decoder does with a bad byte, rather than failing later."""
    return _SURROGATE.sub("\ufffd", text)  # json.loads joins the halves of a pair: what is left is lone


_SURROGATE = re.compile("[\ud800-\udfff]")


_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le"), (codecs.BOM_UTF32_BE, "utf-32-be"), (codecs.BOM_UTF8, "utf-8"),
         (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


def read_text(path: Path, *, what: str = "text file") -> str:
    """A whole (small) text file as a user means it: UTF-8 (with or without a byte-order mark), or
    UTF-16/32 with a byte-order mark or, for UTF-16, without one. Errors are one sentence."""
    path = Path(path)
    if not path.exists():
        raise ScratchBertError(f"{what} {path} does not exist; check the path")
    if path.is_dir():
        raise ScratchBertError(f"{what} {path} is a folder; give a text file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ScratchBertError(f"cannot read {what} {path}: {e.strerror or e}; check the file and its permissions") from None
    encoding, skip = _encoding(data[:4])
    if encoding == "utf-8" and b"\x00" in data[:1 << 20]:
        encoding = _bomless_utf16(data[:1 << 16])
        if encoding is None:
            raise ScratchBertError(f"{what} {path} looks binary (it contains NUL bytes); give plain UTF-8 text")
    try:
        return data[skip:].decode(encoding)
    except UnicodeDecodeError as e:
        raise ScratchBertError(f"{what} {path} is not {encoding.upper()} text (bad byte at offset {e.start + skip}); "
                               "convert it to UTF-8 (e.g. iconv -f latin1 -t utf-8)") from None


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
    return list(_text_documents((0, line) for line in text.replace("\r\n", "\n").split("\n")))


# --- the Hugging Face Hub --------------------------------------------------------------------

_WIKITEXT_TITLE = re.compile(r"^ = [^=].* = $")


def _hf_load(uri: str):
    """The address and the streaming ``IterableDataset`` of ``hf://owner/name[?config=..&split=..]``."""
    from scratchbert import hub

    address = hub.parse(uri)
    import datasets

    try:
        ds = datasets.load_dataset(address.repo, address.config, split=address.split or "train",
                                   revision=address.revision, streaming=True)
    except Exception as e:  # the hub, the network or a bad name: one sentence for the user
        raise ScratchBertError(f"could not load {uri} from the Hugging Face Hub ({cause(e)}); check the name and your network, or use a local path") from None
    return address, ds


def _hf_documents(uri: str) -> Iterator[str]:
    address, ds = _hf_load(uri)
    column = address.column or "text"
    names = getattr(ds, "column_names", None)
    if names is not None and column not in names:
        raise ScratchBertError(f"dataset {uri} has no column {column!r} (it has {names}); add ?column=NAME to the URI")

    def rows() -> Iterator[str]:
        for row in ds:
            if column not in row:
                raise ScratchBertError(f"dataset {uri} has no column {column!r} (it has {sorted(row)}); add ?column=NAME to the URI")
            text = row[column]
            if text is None:  # a missing value: no text
                continue
            if not isinstance(text, str):
                raise ScratchBertError(f"dataset {uri}'s column {column!r} holds {type(text).__name__} values, not text; "
                                       "give a column of strings with ?column=NAME")
            yield text

    if address.repo.rsplit("/", 1)[-1] == "wikitext":  # "wikitext" or its current home "Salesforce/wikitext"
        yield from _wikitext_documents(rows())
        return
    for text in rows():
        yield from _pieces(p for p in (s.strip() for s in text.split("\n")) if p)


def _hf_bytes(uri: str) -> int | None:
    """The size of a Hub split's text, when the dataset's metadata says it."""
    try:
        from scratchbert import hub

        address = hub.parse(uri)
        import datasets

        builder = datasets.load_dataset_builder(address.repo, address.config, revision=address.revision)
        split = (builder.info.splits or {}).get(address.split or "train")
        return int(split.num_bytes) if split is not None and split.num_bytes else None
    except Exception:  # size information is optional: sampling then takes the head of the stream
        return None


def _wikitext_documents(lines: Iterable[str]) -> Iterator[str]:
    current: list[str] = []
    for line in lines:
        if _WIKITEXT_TITLE.match(line.rstrip("\n")):
            if current:
                yield from _pieces(current)
            current = []
            continue
        line = line.strip()
        if line and not line.startswith("= "):
            current.append(line)
    if current:
        yield from _pieces(current)


# --- sentence splitting -------------------------------------------------------------------
# A rule-based splitter: no NLTK/spaCy models to download. A boundary is [.!?] (or the Arabic,
# Urdu and Devanagari stops; with closing quotes/brackets) followed by space and a letter or digit
# that is not lower-case (a capital of any script, or a letter of a script without case, such as
# Arabic), after an optional opening quote, unless the word before the period is a known
# abbreviation or a single initial ("J. R. Smith"); in a paragraph without any capital (a
# lower-cased corpus) a lower-case letter starts a sentence too. The CJK stops 。！？ end a
# sentence with no space after them. Decimals ("3.14") and "e.g." inside a sentence never match
# because no space follows.

_ABBREVIATIONS = frozenset(
    """mr mrs ms dr prof sr jr st mt ft no nos vol vols pp pg fig figs ed eds rev gen col lt
    capt sgt cmdr gov sen rep pres inc ltd co corp bros dept univ assn est approx ca cf vs
    etc al jan feb mar apr jun jul aug sep sept oct nov dec e.g i.e u.s u.k u.n a.m p.m
    ph.d b.a m.a b.sc m.sc d.c n.y l.a op no. ave blvd rd mrs. messrs""".split()
)
_NUMERO = frozenset({"no", "nos"})
_BOUNDARY = re.compile(r"(?P<stop>[.!?\u061f\u06d4\u0964\u0965])(?P<close>[\"'”’»)\]]*)\s+(?=[\"'“‘«¿¡(\[]?(?P<next>\w))"
                       r"|(?P<wide>[。！？][。！？!?]*)(?P<wide_close>[」』”’）]*)\s*(?=\S)")  # a run of stops ends one sentence: "何？！"


def split_sentences(text: str) -> list[str]:
    """Split a paragraph (or several, one per line) into sentences."""
    sentences: list[str] = []
    for paragraph in text.split("\n"):
        start, cased = 0, None  # whether the paragraph has capitals: looked at only where a lower-case word follows a stop
        for m in _BOUNDARY.finditer(paragraph):
            if m.group("stop") and m.group("next").islower():
                if cased is None:
                    cased = any(c.isupper() for c in paragraph)
                if cased:
                    continue  # "it. then": one sentence, where the text has capitals to start them
            if m.group("stop") == ".":
                word = paragraph[start:m.start()].rsplit(None, 1)[-1] if paragraph[start:m.start()].strip() else ""
                word = word.lstrip("\"'“‘([").lower()
                if word in _NUMERO and not paragraph[m.end():m.end() + 1].isdigit():
                    pass  # "no." ends a sentence unless a number follows ("No. 5")
                elif word in _ABBREVIATIONS or (len(word) == 1 and word.isalpha()):
                    continue
                if "." in word and len(word) <= 6 and all(len(p) <= 2 for p in word.split(".")):
                    continue  # dotted abbreviations we do not list: "u.s.a", "e.v"
            end = m.end("close") if m.group("stop") else m.end("wide_close")
            sentence = paragraph[start:end].strip()
            if sentence:
                sentences.append(sentence)
            start = m.end()
        tail = paragraph[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences

