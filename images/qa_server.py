"""A KServe-compatible (V1 protocol) HTTP server for the published scratchbert QA model.

Why this file exists: KServe's Hugging Face runtime loads `*ForQuestionAnswering` models but
does not post-process the question_answering task (its encoder model raises "Unsupported
task"), and transformers 5 has no "question-answering" pipeline any more. So the serving
manifest (manifests/serving/) runs this script in the scratchbert image as a custom predictor.
It is glue only: the model is fetched and verified by `scratchbert.storage.fetch_published`
(which follows the LATEST pointer of a publish prefix, something KServe's storage initializer
cannot do) and questions are answered by `scratchbert.qa.answer`.

The HTTP layer is the standard library on purpose: the kserve SDK would add fastapi, uvicorn
and a dozen more packages to every training image for two endpoints.

Protocol (KServe V1):
    GET  /v1/models/<name>            -> {"name": ..., "ready": true}
    POST /v1/models/<name>:predict    {"instances": [{"question": ..., "context": ...}, ...]}
                                      -> {"predictions": [{"text", "score", "start", "end"}, ...]}
    A request of more than MAX_BODY_BYTES or MAX_INSTANCES is 413, one that is not this shape 400,
    one without a Content-Length 411; a fault of the server is 500 with one line, never a reset.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# (question, context) -> best answer as {"text", "score", "start", "end"}
Answerer = Callable[[str, str], dict]


def make_answerer(model_dir: str | Path) -> Answerer:
    """Load the model once (fails here, not on the first request) and return an answerer that
    answers one question at a time: the pod's memory and CPU are sized for one forward pass (a
    long context's windows take hundreds of MB), not one per connection's thread; the others queue."""
    import threading

    from scratchbert.qa import answer

    answer(model_dir, "warm up", "warm up")  # loads and caches model and tokenizer
    one_at_a_time = threading.Lock()

    def best(question: str, context: str) -> dict:
        with one_at_a_time:
            return answer(model_dir, question, context, top_k=1)[0]

    return best


# A request's limits, which keep one request from taking the pod down: answering holds about
# 300 MB of memory per MB of context (a 2 GiB pod), and a client that sends less than it announced
# would hold its thread forever.
MAX_BODY_BYTES = 1_000_000
MAX_INSTANCES = 64
MAX_DRAINED_BYTES = 16 * MAX_BODY_BYTES  # a larger body is refused unread (the client may see a reset)
REQUEST_TIMEOUT_S = 60
EXPECTED = '{"instances": [{"question": "...", "context": "..."}]}'


class Server(ThreadingHTTPServer):
    """The standard threading server with a listen queue for bursts: its default of 5 reset the
    connections of a few dozen clients arriving at once while the model held the threads."""

    request_queue_size = 128
    daemon_threads = True


class BadRequest(Exception):
    """The request is not one this server answers: its HTTP status and one line saying why."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


def read_instances(headers, rfile) -> list[tuple[str, str]]:
    """The (question, context) pairs of a predict request's body, or :class:`BadRequest`."""
    if "chunked" in headers.get("Transfer-Encoding", "").lower() or headers.get("Content-Length") is None:
        raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
    try:
        length = int(headers["Content-Length"])
    except ValueError:
        length = -1
    if length < 0:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"Content-Length {headers['Content-Length']!r} is not a byte count")
    if length > MAX_BODY_BYTES:
        if length <= MAX_DRAINED_BYTES:  # read and dropped: closed unread, the socket resets and the client never sees the 413
            _drain(rfile, length)
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                         f"the body is {length:,} bytes; this server takes at most {MAX_BODY_BYTES:,} a request")
    try:
        data = rfile.read(length)
    except TimeoutError:  # the client sent less than it announced, then nothing
        raise BadRequest(HTTPStatus.REQUEST_TIMEOUT, f"the body's {length:,} bytes did not come; send the whole body") from None
    try:
        body = json.loads(data)
    except (ValueError, RecursionError) as exc:  # not UTF-8 or not JSON, or nested past Python's stack
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"the body is not JSON ({type(exc).__name__}); send {EXPECTED}") from None
    instances = body.get("instances") if isinstance(body, dict) else None
    if not isinstance(instances, list):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"the body has no list of instances; send {EXPECTED}")
    if len(instances) > MAX_INSTANCES:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                         f"{len(instances)} instances; this server takes at most {MAX_INSTANCES} a request")
    pairs = []
    for k, item in enumerate(instances):
        if not (isinstance(item, dict) and isinstance(item.get("question"), str) and isinstance(item.get("context"), str)):
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"instance {k} is not {{\"question\": text, \"context\": text}}")
        pairs.append((item["question"], item["context"]))
    return pairs


def _answer_instance(answerer: Answerer, k: int, question: str, context: str) -> dict:
    """Instance ``k``'s answer; an empty question or a context with no words is a 400 that names it."""
    from scratchbert.errors import ScratchBertError

    try:
        return answerer(question, context)
    except ScratchBertError as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"instance {k}: {exc}") from None


def _drain(rfile, length: int) -> None:
    """Read and drop ``length`` bytes of a body (or what comes of it before the timeout)."""
    while length > 0:
        try:
            chunk = rfile.read(min(length, 1 << 16))
        except TimeoutError:
            return
        if not chunk:
            return
        length -= len(chunk)


def make_handler(model_name: str, answerer: Answerer) -> type[BaseHTTPRequestHandler]:
    """Build the request handler class bound to one model."""

    class Handler(BaseHTTPRequestHandler):
        timeout = REQUEST_TIMEOUT_S  # a client that stops sending is dropped, not waited for

        def _send(self, status: HTTPStatus, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path.split("?", 1)[0] in ("/", "/v1/models", f"/v1/models/{model_name}"):
                self._send(HTTPStatus.OK, {"name": model_name, "ready": True})
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path.split("?", 1)[0] != f"/v1/models/{model_name}:predict":
                self._send(HTTPStatus.NOT_FOUND, {
                    "error": f"no model at {self.path}; POST /v1/models/{model_name}:predict"})
                return
            try:
                preds = [_answer_instance(answerer, k, question, context)
                         for k, (question, context) in enumerate(read_instances(self.headers, self.rfile))]
            except BadRequest as exc:
                self._send(exc.status, {"error": str(exc)})
            except Exception as exc:  # a bug: the client gets an answer, the log the details
                self.log_error("internal error: %s: %s", type(exc).__name__, exc)
                self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error ({type(exc).__name__})"})
            else:
                self._send(HTTPStatus.OK, {"predictions": preds})

        def log_message(self, fmt: str, *args: object) -> None:
            sys.stderr.write("qa_server: " + fmt % args + "\n")

    return Handler


def build_server(argv: list[str] | None = None) -> ThreadingHTTPServer:
    """Parse arguments, fetch the model if asked to, load it, and return the bound server."""
    from scratchbert.errors import ScratchBertError

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model_uri", help="s3://bucket/prefix of a published model (LATEST is "
                   "followed) or of one version; credentials from AWS_* variables")
    p.add_argument("--model_dir", default="/mnt/models",
                   help="where the model is (or, with --model_uri, goes)")
    p.add_argument("--model_name", default="scratchbert-qa")
    p.add_argument("--http_port", type=int, default=8080)
    p.add_argument("--host", default="0.0.0.0")
    a = p.parse_args(argv)
    if a.model_uri:
        from scratchbert.storage import fetch_published

        # A folder of its own: fetch_published renames a finished download into place.
        fetch_published(a.model_uri, a.model_dir, overwrite=True)
    try:
        server = Server((a.host, a.http_port), make_handler(a.model_name, make_answerer(a.model_dir)))
    except OSError as exc:  # the port is taken, or the address is not this machine's
        raise ScratchBertError(f"cannot listen on {a.host}:{a.http_port} ({exc.strerror or exc})") from None
    print(f"qa_server: serving {a.model_name} from {a.model_dir} on "
          f"{a.host}:{server.server_address[1]}", flush=True)
    return server


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted; a bad model or address ends with one line, not a traceback."""
    from scratchbert.errors import ScratchBertError

    try:
        server = build_server(argv)
    except ScratchBertError as exc:
        sys.exit(f"qa_server: {exc}")
    server.serve_forever()


if __name__ == "__main__":
    main()
