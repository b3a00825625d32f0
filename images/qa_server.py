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
"""

from __future__ import annotations

import argparse
import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

# (question, context) -> best answer as {"text", "score", "start", "end"}
Answerer = Callable[[str, str], dict]


def make_answerer(model_dir: str | Path) -> Answerer:
    """Load the model once (fails here, not on the first request) and return an answerer."""
    from scratchbert.qa import answer

    answer(model_dir, "warm up", "warm up")  # loads and caches model and tokenizer

    def best(question: str, context: str) -> dict:
        return answer(model_dir, question, context, top_k=1)[0]

    return best


def make_handler(model_name: str, answerer: Answerer) -> type[BaseHTTPRequestHandler]:
    """Build the request handler class bound to one model."""
    from scratchbert.errors import ScratchBertError

    class Handler(BaseHTTPRequestHandler):
        def _send(self, status: HTTPStatus, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            if self.path in ("/", "/v1/models", f"/v1/models/{model_name}"):
                self._send(HTTPStatus.OK, {"name": model_name, "ready": True})
            else:
                self._send(HTTPStatus.NOT_FOUND, {"error": f"no route {self.path}"})

        def do_POST(self) -> None:  # noqa: N802
            if self.path != f"/v1/models/{model_name}:predict":
                self._send(HTTPStatus.NOT_FOUND, {
                    "error": f"no model at {self.path}; POST /v1/models/{model_name}:predict"})
                return
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                instances = body["instances"]
                if not isinstance(instances, list):
                    raise TypeError("instances is not a list")
                preds = [answerer(str(i["question"]), str(i["context"])) for i in instances]
            except (ValueError, KeyError, TypeError, ScratchBertError) as exc:
                self._send(HTTPStatus.BAD_REQUEST, {
                    "error": 'the body must be {"instances": [{"question": "...", '
                             f'"context": "..."}}]}} ({type(exc).__name__}: {exc})'})
                return
            self._send(HTTPStatus.OK, {"predictions": preds})

        def log_message(self, fmt: str, *args: object) -> None:
            sys.stderr.write("qa_server: " + fmt % args + "\n")

    return Handler


def build_server(argv: list[str] | None = None) -> ThreadingHTTPServer:
    """Parse arguments, fetch the model if asked to, load it, and return the bound server."""
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
    server = ThreadingHTTPServer((a.host, a.http_port),
                                 make_handler(a.model_name, make_answerer(a.model_dir)))
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
