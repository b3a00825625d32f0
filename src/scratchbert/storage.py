"""Object storage through the ``minio`` SDK: any S3 endpoint (SeaweedFS, MinIO, AWS S3, ...).

Where the endpoint and credentials come from
--------------------------------------------
The standard AWS variable names, read from the environment (or a dict you pass):

* ``AWS_ENDPOINT_URL`` (required): ``http://127.0.0.1:8333``, ``https://s3.amazonaws.com``,
  ``http://seaweedfs.kubeflow:8333``. The scheme decides TLS (``https`` = secure); the URL
  may not have a path.
* credentials, the first that is found, as the AWS SDKs look for them (through the ``minio``
  SDK's credential providers):

  1. ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN`` for
     temporary keys);
  2. a profile of the AWS credentials file (``AWS_SHARED_CREDENTIALS_FILE``, else
     ``~/.aws/credentials``; profile ``AWS_PROFILE``, else ``default``);
  3. a workload identity: a web-identity token (``AWS_WEB_IDENTITY_TOKEN_FILE`` with
     ``AWS_ROLE_ARN``: EKS IRSA and pod identity webhooks; the STS endpoint is
     ``AWS_ENDPOINT_URL_STS`` or AWS's), ECS/EKS container credentials
     (``AWS_CONTAINER_CREDENTIALS_*``), or an EC2 instance profile (unless
     ``AWS_EC2_METADATA_DISABLED=true``). Temporary credentials are renewed when they expire.
* ``AWS_REGION`` (optional): saves a bucket-location request; AWS needs it for new buckets.

:class:`scratchbert.objectstore.EmbeddedS3` hands out the endpoint and static keys from its
``env()``.

Addresses are ``s3://bucket/prefix`` (:func:`parse_s3_uri`).

Published models
----------------
:func:`publish` writes a model folder to ``s3://bucket/prefix/<version>/``, then
``<version>/manifest.json`` (every file with its size and SHA-256), then
``s3://bucket/prefix/LATEST`` (the version, one line). The manifest is written last, so a
version without one is not published (a publish that died half-way), and
:func:`fetch_published` refuses it; it checks every file against the manifest. Nothing
stops a later writer from overwriting objects, but such a change is detected on fetch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from scratchbert.errors import ScratchBertError
from scratchbert.outputs import MARKER as OUTPUT_MARKER
from scratchbert.outputs import atomic_output_dir, check_writable, walk_files
from scratchbert.params import param

if TYPE_CHECKING:  # minio is imported lazily: importing this module must stay cheap
    from minio import Minio

ENV_ENDPOINT = "AWS_ENDPOINT_URL"
ENV_ACCESS_KEY = "AWS_ACCESS_KEY_ID"
ENV_SECRET_KEY = "AWS_SECRET_ACCESS_KEY"
ENV_SESSION_TOKEN = "AWS_SESSION_TOKEN"
ENV_REGION = "AWS_REGION"

MANIFEST = "manifest.json"
LATEST = "LATEST"
MANIFEST_TIME = "%Y-%m-%dT%H:%M:%SZ"  # a manifest's "created", UTC (its text sorts as its time)
MANIFEST_FORMAT = "scratchbert-published-model/1"
_VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_CHUNK = 1 << 20
_MISSING = ("NoSuchKey", "NoSuchObject", "NotFound", "ResourceNotFound")  # S3 error codes for "no such object"


# --------------------------------------------------------------------------------------------
# Addresses and clients
# --------------------------------------------------------------------------------------------


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into ``(bucket, prefix)``.

    The prefix loses its leading slashes and keeps a trailing one (``""`` for the whole
    bucket). The bucket name must follow the S3 naming rules.

    Raises:
        ScratchBertError: not an ``s3://`` address, no bucket, an invalid bucket name, or a
            ``..`` path component.
    """
    from minio.helpers import check_bucket_name

    text = str(uri)
    if not text.startswith("s3://"):
        raise ScratchBertError(f"{text!r} is not an S3 address; write it as s3://bucket/prefix")
    bucket, _, prefix = text[len("s3://"):].partition("/")
    if not bucket:
        raise ScratchBertError(f"S3 address {text!r} names no bucket; write it as s3://bucket/prefix")
    try:
        check_bucket_name(bucket, strict=True)
    except ValueError:
        raise ScratchBertError(
            f"S3 address {text!r} has an invalid bucket name {bucket!r}; use 3-63 lowercase letters, digits, dots or hyphens") from None
    prefix = prefix.lstrip("/")
    if ".." in PurePosixPath(prefix).parts:
        raise ScratchBertError(f"S3 address {text!r} contains a '..' component; give the plain prefix")
    return bucket, prefix


class NotFound(ScratchBertError):
    """Nothing is stored at an address (no object, no manifest, no bucket)."""


class NotPublished(NotFound):
    """A prefix holds neither a manifest nor ``LATEST``: whatever is there was never published."""


def parse_endpoint(endpoint: str, name: str = ENV_ENDPOINT) -> tuple[str, bool]:
    """``http(s)://host[:port]`` -> (``host:port``, secure); ``name`` says where the value came from."""
    endpoint = str(endpoint or "").strip()
    url = urlsplit(endpoint)
    try:
        port_ok = url.port is None or 0 < url.port < 65536
    except ValueError:
        port_ok = False
    if url.scheme not in ("http", "https") or not url.hostname or url.path not in ("", "/") or url.query or not port_ok:
        shown = f"{name}={endpoint!r}" if name == ENV_ENDPOINT else f"{name} {endpoint!r}"
        raise ScratchBertError(
            f"{shown} is not an endpoint URL; give scheme, host and port only, e.g. http://127.0.0.1:8333 or https://s3.amazonaws.com")
    return url.netloc, url.scheme == "https"


def credentials_provider(env: Mapping[str, str] | None = None):
    """The ``minio.credentials`` provider for ``env`` (default ``os.environ``); see the module docstring.

    Static keys win; then the AWS credentials file, then workload identity. The chosen
    provider has already fetched its credentials once, so a missing or refused identity is
    reported here, in one line, not at the first request.

    Raises:
        ScratchBertError: no source has credentials (the message lists where it looked).
    """
    import urllib3
    from minio.credentials import AWSConfigProvider, ChainedProvider, IamAwsProvider, StaticProvider

    env = os.environ if env is None else env
    access_key, secret_key = (env.get(ENV_ACCESS_KEY) or "").strip(), (env.get(ENV_SECRET_KEY) or "").strip()
    if access_key and secret_key:
        return StaticProvider(access_key, secret_key, (env.get(ENV_SESSION_TOKEN) or None))
    if access_key or secret_key:
        missing = ENV_SECRET_KEY if access_key else ENV_ACCESS_KEY
        raise ScratchBertError(f"{missing} is not set, but {ENV_ACCESS_KEY if access_key else ENV_SECRET_KEY} is; "
                               "export both, or neither to use a profile or a workload identity")
    home = env.get("HOME") or os.path.expanduser("~")
    credentials_file = env.get("AWS_SHARED_CREDENTIALS_FILE") or os.path.join(home, ".aws", "credentials")
    profile = env.get("AWS_PROFILE") or "default"
    providers = [AWSConfigProvider(filename=credentials_file, profile=profile)]
    identity = any(env.get(k) for k in ("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                                        "AWS_CONTAINER_CREDENTIALS_FULL_URI"))
    metadata = (env.get("AWS_EC2_METADATA_DISABLED") or "").lower() != "true"
    if identity or metadata:
        # Off EC2 the instance-metadata address does not answer at all: ask it once, briefly.
        http = (urllib3.PoolManager(timeout=urllib3.Timeout(connect=5.0, read=30.0),
                                    retries=urllib3.Retry(total=3, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]))
                if identity else urllib3.PoolManager(timeout=urllib3.Timeout(connect=1.0, read=2.0), retries=False))
        saved = {k: os.environ.get(k) for k in _IDENTITY_VARS}
        try:  # IamAwsProvider reads these from os.environ only: hand it ``env``'s
            for k in _IDENTITY_VARS:
                _set_env(k, env.get(k))
            providers.append(IamAwsProvider(custom_endpoint=(env.get("AWS_ENDPOINT_URL_STS") or None) if identity else None,
                                            http_client=http))
        finally:
            for k, v in saved.items():
                _set_env(k, v)
    chain = ChainedProvider(providers)
    try:
        chain.retrieve()
    except Exception as e:  # noqa: BLE001 - each provider fails in its own way; say where we looked
        places = [f"{ENV_ACCESS_KEY}/{ENV_SECRET_KEY}", f"profile {profile!r} of {credentials_file}"]
        if identity:
            places.append(f"the workload identity ({e})")
        elif metadata:
            places.append("the EC2 instance metadata")
        raise ScratchBertError(f"no S3 credentials found (looked at {', '.join(places)}); export {ENV_ACCESS_KEY} and "
                               f"{ENV_SECRET_KEY}, or configure one of the others") from None
    return chain


_IDENTITY_VARS = ("AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                  "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_REGION", "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME",
                  "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


def _set_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def client_from_env(env: Mapping[str, str] | None = None) -> Minio:
    """Return a :class:`minio.Minio` client for the endpoint and credentials in ``env`` (default: ``os.environ``).

    Raises:
        ScratchBertError: ``AWS_ENDPOINT_URL`` is missing or malformed, or no credentials are found.
    """
    from minio import Minio

    env = os.environ if env is None else env
    endpoint = (env.get(ENV_ENDPOINT) or "").strip()
    if not endpoint:
        raise ScratchBertError(f"environment variable {ENV_ENDPOINT} is not set, so S3 cannot be reached; "
                               f"export {ENV_ENDPOINT}=http://127.0.0.1:8333 (your S3 endpoint)")
    netloc, secure = parse_endpoint(endpoint)
    return Minio(netloc, credentials=credentials_provider(env), secure=secure, region=(env.get(ENV_REGION) or None),
                 http_client=_http_client())


# An endpoint that takes the connection and never answers (a port-forward to the wrong service)
# is given READ_TIMEOUT_S seconds per try and READ_RETRIES more tries: about 4 minutes, where
# minio's own settings (300 s, five retries) waited half an hour per request.
READ_TIMEOUT_S = 120
READ_RETRIES = 1


def _http_client():
    """minio's own HTTP client settings, but a refused endpoint fails in seconds (minio retries a
    refused connection five times with back-off, 6 s, and waits 5 minutes to connect) and a
    silent one in minutes (READ_TIMEOUT_S)."""
    import certifi
    import urllib3

    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=15, read=READ_TIMEOUT_S), maxsize=10, cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=5, connect=2, read=READ_RETRIES, backoff_factor=0.2,
                              status_forcelist=[500, 502, 503, 504]))


# --------------------------------------------------------------------------------------------
# Plain transfers
# --------------------------------------------------------------------------------------------


def download(uri: str, local_dir: str | os.PathLike, *, client: Minio | None = None,
             overwrite: bool = False, keep: Callable[[str], bool] | None = None) -> Path:
    """Download one object, or every object under a prefix, into ``local_dir``.

    ``s3://bucket/path/file.txt`` (an existing object) lands as ``local_dir/file.txt`` and
    that file's path is returned; otherwise every object under ``s3://bucket/path/`` lands
    at its path relative to the prefix and ``local_dir`` is returned. ``local_dir`` appears
    complete or not at all (see :func:`scratchbert.outputs.atomic_output_dir`); an existing
    non-empty ``local_dir`` is replaced only with ``overwrite=True``. ``keep`` (a prefix's
    relative names -> bool) fetches only the objects it keeps, e.g. a model's config without its weights.

    Raises:
        ScratchBertError: nothing exists at ``uri`` (or nothing ``keep`` keeps), the bucket is
            missing, the endpoint refuses the request, a transfer ends short, or ``local_dir``
            is not empty.
    """
    bucket, key = parse_s3_uri(uri)
    out = _check_out_dir(local_dir, overwrite)
    client = client or client_from_env()
    with _s3_errors(uri):
        stat = _stat(client, bucket, key) if key and not key.endswith("/") else None
        if stat is not None:
            name = PurePosixPath(key).name
            with atomic_output_dir(out, overwrite=True, what="download folder") as tmp:
                _fetch(client, bucket, key, tmp / name, stat.size or 0)
            return out / name
        prefix = _as_dir(key)
        objects = [(o.object_name, o.size or 0) for o in client.list_objects(bucket, prefix=prefix, recursive=True)
                   if not o.object_name.endswith("/") and (keep is None or keep(o.object_name[len(prefix):]))]
        if not objects:
            raise NotFound(f"nothing is stored at {uri}" + (" that this reads" if keep else "")
                           + "; check the bucket and prefix (an object or a folder of objects)")
        with atomic_output_dir(out, overwrite=True, what="download folder") as tmp, _progress(objects, f"download {uri}") as bar:
            for name, size in objects:
                _fetch(client, bucket, name, tmp / _safe_relative(name[len(prefix):], uri), size)
                bar.update(size)
    return out


def _fetch(client: Minio, bucket: str, name: str, target: Path, size: int | None) -> None:
    """Download one object to ``target``, checked whole: its stored bytes are counted against
    ``size`` (None: the reply's Content-Length). One stored with ``Content-Encoding: gzip``
    (``gsutil cp -z``) is then unpacked as HTTP clients do, its checksum checked, unless its name
    says it is a gzip file (``.gz``). Not minio's ``fget_object``: it kept what a connection cut
    inside the reply's headers delivered (an empty file) as the object, and it unpacked a gzipped
    object on the way, so its size could not be checked."""
    uri = f"s3://{bucket}/{name}"
    target.parent.mkdir(parents=True, exist_ok=True)
    response = client.get_object(bucket, name)
    got = 0
    try:
        gzipped = (response.headers.get("Content-Encoding") or "").strip().lower() == "gzip"
        if size is None:
            size = int(response.headers.get("Content-Length") or -1)
        with open(target, "wb") as f:
            for chunk in response.stream(_CHUNK, decode_content=False):
                got += f.write(chunk)
    finally:
        response.close()
        response.release_conn()
    if got != size and size >= 0:
        raise ScratchBertError(f"the download of {uri} ended after {got:,} of its {size:,} bytes; the connection broke, try again")
    if gzipped and not name.lower().endswith(".gz"):
        _gunzip_in_place(target, uri)


def _gunzip_in_place(path: Path, uri: str) -> None:
    import gzip
    import shutil
    import zlib

    unpacked = path.with_name(path.name + ".unpacked")
    try:
        with gzip.open(path, "rb") as src, open(unpacked, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
    except (OSError, EOFError, zlib.error) as e:
        raise ScratchBertError(f"{uri} is stored with Content-Encoding: gzip but does not unpack ({type(e).__name__}: {e}); "
                               "upload it again") from None
    os.replace(unpacked, path)


def upload_dir(local_dir: str | os.PathLike, uri: str, *, client: Minio | None = None,
               create_bucket: bool = True) -> list[str]:
    """Upload every file under ``local_dir`` to ``uri`` (``s3://bucket/prefix``), keeping relative paths.

    The bucket is created when missing (unless ``create_bucket=False``). Returns the object
    names written, in upload order.

    Raises:
        ScratchBertError: ``local_dir`` is not a folder or holds no files, or S3 refuses.
    """
    bucket, key = parse_s3_uri(uri)
    client = client or client_from_env()
    files = _local_files(local_dir)
    with _s3_errors(uri):
        if create_bucket:
            _ensure_bucket(client, bucket)
        return _upload_files(client, bucket, _as_dir(key), files, f"upload {uri}")


# --------------------------------------------------------------------------------------------
# Published models: files, then manifest.json, then LATEST
# --------------------------------------------------------------------------------------------


def default_version(now: datetime | None = None) -> str:
    """A version name from the UTC time, e.g. ``20261125T140501Z`` (sorts by time)."""
    return (now or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def publish(local_dir: str | os.PathLike, dest_uri: str, version: str | None = None, *,
            client: Minio | None = None) -> str:
    """Publish a model folder as ``dest_uri/<version>/`` and return that URI (with a trailing slash).

    Order of writes: every file, then ``<version>/manifest.json`` (relative path, size and
    SHA-256 of each file, the version and the UTC creation time), then ``dest_uri/LATEST``
    holding the version. A reader that trusts only the manifest therefore never sees a
    half-published model. The bucket is created when missing. ``version`` defaults to
    :func:`default_version`; an already published version is never overwritten: publishing the
    same files as it again (a retry of a publish stopped before ``LATEST``) only writes ``LATEST``.

    Raises:
        ScratchBertError: ``local_dir`` is not a folder of files or has its own
            ``manifest.json``, the version name is invalid or already published with other
            files, or S3 refuses.
    """
    bucket, key = parse_s3_uri(dest_uri)
    client = client or client_from_env()
    version = default_version() if version is None else str(version)
    if not _VERSION_RE.fullmatch(version) or version == LATEST:
        raise ScratchBertError(
            f"version {version!r} for {dest_uri} is not a valid name; use letters, digits, '.', '_' or '-' (e.g. 20261125T140501Z)")
    # the folder's scratchbert_output.json says which local stage wrote it: not part of the model
    files = {rel: path for rel, path in _local_files(local_dir).items() if rel != OUTPUT_MARKER}
    if MANIFEST in files:
        raise ScratchBertError(f"{Path(local_dir) / MANIFEST} exists, but publish writes {MANIFEST} itself; rename or remove that file")
    base = _as_dir(key)
    version_prefix = f"{base}{version}/"
    final_uri = f"s3://{bucket}/{version_prefix}"
    entries = [{"path": rel, "size": path.stat().st_size, "sha256": _sha256(path)}
               for rel, path in tqdm(files.items(), desc="sha256", unit="file", disable=len(files) < 2)]
    manifest = {
        "format": MANIFEST_FORMAT,
        "version": version,
        "created": datetime.now(timezone.utc).strftime(MANIFEST_TIME),
        "files": entries,
    }
    with _s3_errors(dest_uri):
        _ensure_bucket(client, bucket)
        published = _get_bytes(client, bucket, version_prefix + MANIFEST)
        if published is not None and not _same_files(published, entries):
            raise ScratchBertError(f"version {version} is already published at {final_uri}; choose another version")
        if published is None:  # else the same files: a publish stopped before LATEST, which this one completes
            _upload_files(client, bucket, version_prefix, files, f"publish {final_uri}")
            _put_bytes(client, bucket, version_prefix + MANIFEST,
                       (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(), "application/json")
        _put_bytes(client, bucket, base + LATEST, (version + "\n").encode(), "text/plain")
    return final_uri


@dataclass
class PublishConfig:
    """Settings of the publish step (the pipeline's last task)."""

    model: str = param(help="The model folder to publish.")
    publish_uri: str = param(help="s3://bucket/prefix to publish under: a version folder with a manifest, then LATEST.")
    publish_version: str = param("", help="Version folder name; empty uses the UTC time. A published version is never overwritten.")

    def validate(self) -> None:
        """Check every setting (nothing is contacted): one line for the first that is wrong."""
        parse_s3_uri(self.publish_uri)
        if self.publish_version and (not _VERSION_RE.fullmatch(self.publish_version) or self.publish_version == LATEST):
            raise ScratchBertError(f"--publish-version {self.publish_version!r} is not a valid name; use letters, digits, "
                                   "'.', '_' or '-' (e.g. 20261125T140501Z), or leave it empty for the UTC time")


def publish_model(cfg: PublishConfig) -> str:
    """Publish ``cfg.model`` (see :func:`publish`) and return the version's URI."""
    cfg.validate()
    return publish(cfg.model, cfg.publish_uri, cfg.publish_version or None)


def fetch_published(uri: str, local_dir: str | os.PathLike, *, client: Minio | None = None,
                    overwrite: bool = False, keep: Callable[[str], bool] | None = None) -> Path:
    """Download a published model into ``local_dir`` and verify every file; return ``local_dir``.

    ``uri`` is either a version (``s3://models/bert/20261125T140501Z``) or the prefix it was
    published under (``s3://models/bert``), in which case ``LATEST`` picks the version.
    Every file listed in ``manifest.json`` is downloaded and its size and SHA-256 checked;
    ``local_dir`` appears only when all of them match (and replaces an existing non-empty
    folder only with ``overwrite=True``). ``keep`` (a file's path -> bool) fetches only the
    files it keeps, as :func:`download`.

    Raises:
        ScratchBertError: no manifest (not published, or the publish did not finish), a
            file is missing or differs from the manifest, or S3 refuses.
    """
    from minio.error import S3Error

    bucket, key = parse_s3_uri(uri)
    client = client or client_from_env()
    out = _check_out_dir(local_dir, overwrite)
    with _s3_errors(uri):
        version_prefix, manifest = _resolve_manifest(client, bucket, _as_dir(key), uri)
        version_uri = f"s3://{bucket}/{version_prefix}"
        files = [f for f in manifest["files"] if keep is None or keep(f["path"])]
        with atomic_output_dir(out, overwrite=True, what="download folder") as tmp, _progress([(f["path"], f["size"]) for f in files], f"fetch {version_uri}") as bar:
            for entry in files:
                rel = entry["path"]
                target = tmp / _safe_relative(rel, version_uri)
                try:
                    # whole, or "try again"; then against the manifest ("changed after publishing")
                    _fetch(client, bucket, version_prefix + rel, target, None)
                except S3Error as exc:
                    if exc.code not in _MISSING:
                        raise
                    raise ScratchBertError(
                        f"{version_uri}{rel} is listed in {MANIFEST} but missing from the store; the published model is damaged, publish it again") from None
                size, digest = target.stat().st_size, _sha256(target)
                if size != entry["size"] or digest != entry["sha256"]:
                    raise ScratchBertError(
                        f"{version_uri}{rel} does not match {MANIFEST} (size {size} vs {entry['size']}, sha256 {digest[:12]}... vs "
                        f"{entry['sha256'][:12]}...); the object was changed or corrupted after publishing, publish the model again")
                bar.update(size)
    return out


def read_object(uri: str, *, client: Minio | None = None) -> bytes:
    """The bytes of one object, ``s3://bucket/key``."""
    bucket, key = parse_s3_uri(uri)
    client = client or client_from_env()
    with _s3_errors(uri):
        data = _get_bytes(client, bucket, key)
    if data is None:
        raise NotFound(f"nothing is stored at {uri}; check the address")
    return data


def list_objects(uri: str, *, client: Minio | None = None,
                 skip: Callable[[str], bool] | None = None) -> list[tuple[str, int]]:
    """``(s3://bucket/key, size)`` of the object ``uri`` names, or of every object under the
    prefix ``uri`` whose name below the prefix ``skip`` does not leave out (hidden ones, as a
    folder's walk does), sorted by name. Nothing is downloaded.

    Raises:
        ScratchBertError: nothing (but what ``skip`` leaves out) is stored there, the bucket is missing, or S3 refuses.
    """
    bucket, key = parse_s3_uri(uri)
    client = client or client_from_env()
    with _s3_errors(uri):
        stat = _stat(client, bucket, key) if key and not key.endswith("/") else None
        if stat is not None:  # one object named on its own: any name
            return [(f"s3://{bucket}/{key}", stat.size or 0)]
        prefix = _as_dir(key)
        # sorted by the names' parts, as a local folder's files are: "wiki/a.txt" before "wiki-2.txt"
        found = sorted(((o.object_name, o.size or 0) for o in client.list_objects(bucket, prefix=prefix, recursive=True)
                        if not o.object_name.endswith("/")), key=lambda item: item[0].split("/"))
    if not found:
        raise ScratchBertError(f"nothing is stored at {uri}; check the bucket and prefix (an object or a folder of objects)")
    chosen = [(f"s3://{bucket}/{name}", size) for name, size in found if not (skip and skip(name[len(prefix):]))]
    if not chosen:
        raise ScratchBertError(f"only hidden objects (names starting with a dot) are stored under {uri}; point at others")
    return chosen


def open_object(uri: str, *, client: Minio | None = None, offset: int = 0, retries: int = 5) -> io.BufferedReader:
    """A buffered, read-only stream of the object ``uri`` from byte ``offset``, read as it is
    consumed (never stored whole, in memory or on disk).

    A long read over the network is likely to lose its connection once in a while; the stream
    then asks again from the byte where it stopped (an HTTP range request), up to
    ``retries`` times in a row, so a reader of a multi-gigabyte object is not sent back to
    the start by one reset.
    """
    bucket, key = parse_s3_uri(uri)
    return io.BufferedReader(_ObjectReader(client or client_from_env(), bucket, key, uri, offset, retries), _CHUNK)


class _ObjectReader(io.RawIOBase):
    """The raw stream under :func:`open_object`: one GET, renewed at the current offset after a dropped connection."""

    def __init__(self, client: Minio, bucket: str, key: str, uri: str, offset: int, retries: int):
        super().__init__()
        self._client, self._bucket, self._key, self._uri = client, bucket, key, uri
        self._pos, self._retries, self._response = offset, retries, None
        with _s3_errors(uri):
            self._size = client.stat_object(bucket, key).size or 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        from urllib3.exceptions import HTTPError

        if self._pos >= self._size:
            return 0
        failures = 0
        while True:
            try:
                if self._response is None:
                    with _s3_errors(self._uri):
                        self._response = self._client.get_object(self._bucket, self._key, offset=self._pos)
                # the stored bytes, which the offsets count: urllib3 would undo a Content-Encoding: gzip
                # (gsutil cp -z), giving more bytes than the object's size, cut off at that size. And
                # what has arrived (read1), not a full buffer: a dropped connection loses no bytes
                # read before it, so a link that drops every few KB still gets on
                data = self._response.read1(len(buffer), decode_content=False)
                n = len(data)
                buffer[:n] = data
                if n == 0:  # the server closed the body before the object's end
                    raise ConnectionError(f"the body ended at byte {self._pos} of {self._size}")
                self._pos += n
                return n
            except (HTTPError, ConnectionError, OSError) as exc:
                self._drop()
                failures += 1
                if failures > self._retries:
                    raise ScratchBertError(
                        f"reading {self._uri} failed at byte {self._pos} after {self._retries} retries "
                        f"({type(exc).__name__}: {exc}); check the S3 server and the network") from exc

    def _drop(self) -> None:
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.close()
                self._response.release_conn()
            self._response = None

    def close(self) -> None:
        self._drop()
        super().close()


def read_manifest(uri: str, *, client: Minio | None = None) -> dict:
    """Return the manifest of a published model (``uri`` as for :func:`fetch_published`).

    The returned dict also carries ``"uri"``: the version's address.
    """
    bucket, key = parse_s3_uri(uri)
    client = client or client_from_env()
    with _s3_errors(uri):
        version_prefix, manifest = _resolve_manifest(client, bucket, _as_dir(key), uri)
    return {**manifest, "uri": f"s3://{bucket}/{version_prefix}"}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _resolve_manifest(client: Minio, bucket: str, prefix: str, uri: str) -> tuple[str, dict]:
    """Find the manifest for ``prefix`` (a version, or a publish root through LATEST)."""
    raw = _get_bytes(client, bucket, prefix + MANIFEST)
    version_prefix = prefix
    if raw is None:
        latest = _get_bytes(client, bucket, prefix + LATEST)
        if latest is None:
            raise NotPublished(
                f"no {MANIFEST} at s3://{bucket}/{prefix}: the model is not published or the publish did not finish; "
                f"publish it again or point at a complete version")
        version = latest.decode("utf-8", "replace").strip()
        if not _VERSION_RE.fullmatch(version):
            raise ScratchBertError(f"s3://{bucket}/{prefix}{LATEST} holds {version!r}, not a version name; publish the model again")
        version_prefix = f"{prefix}{version}/"
        raw = _get_bytes(client, bucket, version_prefix + MANIFEST)
        if raw is None:
            raise NotFound(f"s3://{bucket}/{prefix}{LATEST} names version {version}, which has no {MANIFEST} (removed, "
                           "or its publish did not finish); publish the model again or point at a complete version")
    try:
        manifest = json.loads(raw)
        files = manifest["files"]
        if not (isinstance(manifest["version"], str) and _VERSION_RE.fullmatch(manifest["version"])):
            raise TypeError(manifest["version"])  # a folder name where checkpoints are fetched: never a path
        for entry in files:
            if not (isinstance(entry["path"], str) and isinstance(entry["size"], int) and isinstance(entry["sha256"], str)):
                raise TypeError(entry)
    except (ValueError, KeyError, TypeError):
        raise ScratchBertError(
            f"s3://{bucket}/{version_prefix}{MANIFEST} is not a valid scratchbert manifest; publish the model again") from None
    return version_prefix, manifest


@contextlib.contextmanager
def _s3_errors(uri: str) -> Iterator[None]:
    """Turn S3 and connection failures into one-sentence ScratchBertErrors."""
    from minio.error import MinioException, S3Error
    from urllib3.exceptions import HTTPError

    try:
        yield
    except S3Error as exc:
        if exc.code == "NoSuchBucket":
            raise NotFound(f"the bucket of {uri} does not exist; create it or fix the address") from exc
        elif exc.code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            msg = (f"S3 refused access to {uri} ({exc.code}); check {ENV_ACCESS_KEY}, {ENV_SECRET_KEY} "
                   f"and the permissions of that key")
        else:
            msg = f"S3 request for {uri} failed ({exc.code}: {exc.message}); check the address and the server"
        raise ScratchBertError(msg) from exc
    except (MinioException, HTTPError) as exc:
        reason = str(getattr(exc, "reason", None) or exc)  # MaxRetryError: the last attempt's error
        reason = reason.rsplit("): ", 1)[-1] if "): " in reason else reason  # without the pool's repr
        raise ScratchBertError(
            f"could not reach S3 for {uri} ({reason}); check {ENV_ENDPOINT} and that the server is running") from exc


def _exists(client: Minio, bucket: str, name: str) -> bool:
    return _stat(client, bucket, name) is not None


def _stat(client: Minio, bucket: str, name: str):
    """The object's stat (its ``size``), or None where there is no such object."""
    from minio.error import S3Error

    try:
        return client.stat_object(bucket, name)
    except S3Error as exc:
        if exc.code in _MISSING:
            return None
        raise


def _get_bytes(client: Minio, bucket: str, name: str) -> bytes | None:
    from minio.error import S3Error

    try:
        response = client.get_object(bucket, name)
    except S3Error as exc:
        if exc.code in _MISSING:
            return None
        raise
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def _same_files(manifest: bytes, entries: list[dict]) -> bool:
    """Whether a published ``manifest.json`` lists exactly ``entries`` (path, size, SHA-256)."""
    try:
        files = json.loads(manifest)["files"]
        return sorted(files, key=lambda f: f["path"]) == sorted(entries, key=lambda f: f["path"])
    except (ValueError, KeyError, TypeError):
        return False


def _put_bytes(client: Minio, bucket: str, name: str, data: bytes, content_type: str) -> None:
    client.put_object(bucket, name, io.BytesIO(data), len(data), content_type=content_type)


def _ensure_bucket(client: Minio, bucket: str) -> None:
    from minio.error import S3Error

    if client.bucket_exists(bucket):
        return
    try:
        client.make_bucket(bucket)
    except S3Error as exc:  # someone else created it in between
        if exc.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise


def _upload_files(client: Minio, bucket: str, prefix: str, files: dict[str, Path], desc: str) -> list[str]:
    names = []
    with _progress([(rel, p.stat().st_size) for rel, p in files.items()], desc) as bar:
        for rel, path in files.items():
            client.fput_object(bucket, prefix + rel, str(path))
            names.append(prefix + rel)
            bar.update(path.stat().st_size)
    return names


def _local_files(local_dir: str | os.PathLike) -> dict[str, Path]:
    """Map relative POSIX path -> file for every file under ``local_dir`` (sorted)."""
    root = Path(local_dir)
    if not root.is_dir():
        raise ScratchBertError(f"{root} is not a folder; give the folder to upload")
    files = {p.relative_to(root).as_posix(): p for p in walk_files(root)}  # linked folders too, as a corpus is read
    if not files:
        raise ScratchBertError(f"folder {root} holds no files; give a folder with the files to upload")
    return files


def _check_out_dir(local_dir: str | os.PathLike, overwrite: bool) -> Path:
    out = Path(local_dir).resolve()
    check_writable(out, "download folder")
    if out.exists() and not out.is_dir():
        raise ScratchBertError(f"{out} exists and is not a folder; give a folder to download into")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ScratchBertError(f"download folder {out} is not empty; give an empty or new folder, or pass overwrite=True to replace it")
    return out


def _safe_relative(rel: str, where: str) -> Path:
    """``rel`` as a relative local path, refusing absolute paths and ``..`` (path traversal)."""
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or ".." in parts:
        raise ScratchBertError(f"object path {rel!r} under {where} would land outside the download folder; rename the object")
    return Path(*parts)


def _as_dir(prefix: str) -> str:
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def _sha256(path: Path) -> str:
    # A chunked loop rather than hashlib.file_digest: that needs Python 3.11, we support 3.10.
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _progress(items: list[tuple[str, int]], desc: str):
    """A byte-counting tqdm bar, shown for transfers of more than one file."""
    with tqdm(total=sum(size for _, size in items), desc=desc, unit="B", unit_scale=True,
              unit_divisor=1024, disable=len(items) < 2) as bar:
        yield bar
