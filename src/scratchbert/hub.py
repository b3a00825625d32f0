"""``hf://`` addresses of Hugging Face Hub repositories: one grammar for corpora, SQuAD sets and models.

    hf://OWNER/NAME[?config=CONFIG&split=SPLIT&column=COLUMN&revision=REVISION]

``OWNER/NAME`` is the repository id as the Hub spells it (a legacy one-word id such as
``hf://squad`` works too); everything else is an optional query parameter, so an address
never has to guess whether a third path segment is a config or a split. Examples::

    hf://Salesforce/wikitext?config=wikitext-2-raw-v1      a corpus (split train, column text)
    hf://rajpurkar/squad?split=validation                  the SQuAD v1.1 dev set
    hf://google-bert/bert-base-uncased                      a model
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from scratchbert.errors import ScratchBertError

PREFIX = "hf://"
_QUERY_KEYS = ("config", "split", "column", "revision")
_REPO_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


@dataclass(frozen=True)
class HubAddress:
    """A parsed ``hf://`` address; unset query parameters are None."""

    repo: str
    config: str | None = None
    split: str | None = None
    column: str | None = None
    revision: str | None = None


def is_hub(uri: str) -> bool:
    return str(uri).startswith(PREFIX)


def parse(uri: str) -> HubAddress:
    """Split ``hf://owner/name?key=value`` into a :class:`HubAddress`, or raise one clear error."""
    text = str(uri)
    example = "hf://owner/name?config=NAME&split=train"
    if not text.startswith(PREFIX):
        raise ScratchBertError(f"{text!r} is not a Hub address; write it as {example}")
    parts = urlsplit(text)
    repo = (parts.netloc + parts.path).strip("/")
    segments = repo.split("/")
    if not repo or len(segments) > 2 or not all(_REPO_PART.fullmatch(s) for s in segments):
        hint = " (a config or split goes in the query: ?config=NAME&split=NAME)" if len(segments) > 2 else ""
        raise ScratchBertError(f"{text!r} does not name a Hub repository{hint}; write it as {example}")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(_QUERY_KEYS))
    if unknown:
        raise ScratchBertError(f"{text!r} has unknown query parameters {unknown}; use {', '.join(_QUERY_KEYS)}")
    values = {k: (query[k][-1] or None) if k in query else None for k in _QUERY_KEYS}
    return HubAddress(repo=repo, **values)


def dataset_id(uri: str) -> str | None:
    """The Hub dataset id of a ``hf://`` address (for a model card's ``datasets``); None otherwise."""
    if not is_hub(uri):
        return None
    try:
        return parse(uri).repo
    except ScratchBertError:
        return None


def reachable(timeout: float = 5.0) -> bool:
    """Whether the Hugging Face Hub (``HF_ENDPOINT``) answers at all, with any HTTP status."""
    import urllib.error
    import urllib.request

    from huggingface_hub import constants

    try:
        urllib.request.urlopen(urllib.request.Request(constants.ENDPOINT, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return True
    except OSError:  # URLError, refused, no DNS, timed out
        return False
    return True
