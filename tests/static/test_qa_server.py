"""images/qa_server.py, the predictor of manifests/serving/: a tiny random BERT QA model made
here (no download) is published to a SeaweedFS store on 127.0.0.1, fetched by the server as
the InferenceService's arguments say, and queried over HTTP in KServe's V1 protocol."""

from __future__ import annotations

import importlib.util
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORDS = ("the cat sat on mat where did dog run to park a in who is paris capital of france "
         "what color sky blue").split()
CONTEXT = "the cat sat on the mat in paris"


@pytest.fixture(scope="module")
def qa_server():
    pytest.importorskip("scratchbert.qa")
    spec = importlib.util.spec_from_file_location("qa_server", ROOT / "images" / "qa_server.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("qa-model")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = transformers.BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    config = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, intermediate_size=37,
                                     max_position_embeddings=64)
    transformers.BertForQuestionAnswering(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def whole_words(text: str, pred: dict) -> bool:
    """The span is non-empty and starts and ends on word boundaries of `text`."""
    s, e = pred["start"], pred["end"]
    return (s == 0 or text[s - 1] == " ") and (e == len(text) or text[e] == " ") and s < e


def serve(server):
    """Run a bound server in a thread; return (base URL, call(path, body=None))."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    def call(path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(base + path, data=data, method="POST" if data else "GET",
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=60) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    return base, call


def test_http_protocol(qa_server, model_dir):
    answerer = qa_server.make_answerer(model_dir)
    server = qa_server.Server(("127.0.0.1", 0), qa_server.make_handler("scratchbert-qa", answerer))
    _, call = serve(server)
    try:
        assert call("/v1/models/scratchbert-qa") == (200, {"name": "scratchbert-qa", "ready": True})
        contexts = [CONTEXT, "the sky is blue"]
        status, body = call("/v1/models/scratchbert-qa:predict", {"instances": [
            {"question": "who sat on the mat", "context": contexts[0]},
            {"question": "what color is the sky", "context": contexts[1]}]})
        assert status == 200 and len(body["predictions"]) == 2
        for pred, ctx in zip(body["predictions"], contexts):
            assert set(pred) == {"text", "score", "start", "end"}
            assert ctx[pred["start"]:pred["end"]] == pred["text"] and whole_words(ctx, pred)
        status, body = call("/v1/models/scratchbert-qa:predict", {"instances": [{"question": "x"}]})
        assert status == 400 and "instance 0 is not" in body["error"]
        status, body = call("/v1/models/scratchbert-qa:predict",
                            {"instances": [{"question": "who sat", "context": CONTEXT}, {"question": " ", "context": CONTEXT}]})
        assert status == 400 and body["error"].startswith("instance 1: the question (--question) is empty")
        status, body = call("/v1/models/other:predict", {"instances": []})
        assert status == 404 and "/v1/models/scratchbert-qa:predict" in body["error"]
    finally:
        server.shutdown()
        server.server_close()


def test_requests_at_the_same_time_get_the_answers_they_get_alone(qa_server, model_dir):
    """Requests at once share one model and tokenizer, which the server lets answer one at a time:
    each gets the answer it gets alone, long contexts (hundreds of windows) among short ones."""
    from concurrent.futures import ThreadPoolExecutor

    answerer = qa_server.make_answerer(model_dir)
    server = qa_server.Server(("127.0.0.1", 0), qa_server.make_handler("scratchbert-qa", answerer))
    _, call = serve(server)
    long_context = " ".join(WORDS * 300)  # hundreds of windows of the model's 64 positions: a long tokenization
    questions = [(q, c) for q in ("who sat on the mat", "where did the dog run", "what is the capital of france")
                 for c in (CONTEXT, long_context)]
    try:
        alone = [call("/v1/models/scratchbert-qa:predict", {"instances": [{"question": q, "context": c}]}) for q, c in questions]
        with ThreadPoolExecutor(8) as pool:
            together = list(pool.map(lambda qc: call("/v1/models/scratchbert-qa:predict",
                                                     {"instances": [{"question": qc[0], "context": qc[1]}]}), questions * 4))
        assert all(status == 200 for status, _ in alone)
        assert together == alone * 4
    finally:
        server.shutdown()
        server.server_close()


def test_serves_the_published_model(qa_server, model_dir, embedded_s3, render_kustomization,
                                    containers_of, settings, monkeypatch, tmp_path):
    """The InferenceService's own arguments: fetch LATEST of the publish prefix, then serve."""
    from scratchbert import storage

    for name, value in embedded_s3.env().items():
        monkeypatch.setenv(name, value)
    isvc = next(o for o in render_kustomization(ROOT / "manifests" / "serving")
                if o["kind"] == "InferenceService")
    (c,) = containers_of(isvc)
    args = dict(a.lstrip("-").split("=", 1) for a in c["args"])
    storage.publish(model_dir, args["model_uri"], version="v1")

    local = tmp_path / "mnt" / "models" / "model"
    server = qa_server.build_server([f"--model_uri={args['model_uri']}", f"--model_dir={local}",
                                     f"--model_name={args['model_name']}", "--host=127.0.0.1",
                                     "--http_port=0"])
    _, call = serve(server)
    try:
        assert (local / "config.json").is_file()
        status, body = call(f"/v1/models/{args['model_name']}:predict",
                            {"instances": [{"question": "where is the cat", "context": CONTEXT}]})
        assert status == 200 and whole_words(CONTEXT, body["predictions"][0])
    finally:
        server.shutdown()
        server.server_close()


def test_a_missing_model_ends_with_one_line(qa_server, embedded_s3, monkeypatch, tmp_path, capsys):
    for name, value in embedded_s3.env().items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        qa_server.main(["--model_uri=s3://nobucket-here/scratchbert-qa",
                        f"--model_dir={tmp_path / 'm'}", "--http_port=0", "--host=127.0.0.1"])
    message = str(exit_info.value.code)
    assert message.startswith("qa_server: ") and "\n" not in message


def test_a_request_out_of_shape_or_size_is_refused_with_its_status(qa_server):
    """Each answer before these: a question of null, a context of a list (answered as the text
    "None" and "['...']", 200), a body nested 100,000 deep or of a petabyte announced (no reply at
    all), a body shorter than announced (the thread waited forever), a fault of the answerer
    (no reply). A stand-in answerer: the HTTP layer is what is tested."""
    import http.client

    def answerer(question, context):
        if question == "crash":
            raise RuntimeError("a bug")
        return {"text": context[:3], "score": 1.0, "start": 0, "end": 3}

    handler = qa_server.make_handler("m", answerer)
    handler.timeout = 2
    server = qa_server.Server(("127.0.0.1", 0), handler)
    base, call = serve(server)
    port = server.server_address[1]

    def raw(body: bytes, headers: dict) -> tuple[int, dict]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.putrequest("POST", "/v1/models/m:predict", skip_accept_encoding=True)
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.endheaders(body)
        resp = conn.getresponse()
        out = resp.status, json.loads(resp.read() or b"{}")
        conn.close()
        return out

    try:
        path = "/v1/models/m:predict"
        assert call(path, {"instances": [{"question": "q", "context": "abcdef"}]})[0] == 200
        for bad in ({"question": None, "context": "abc"}, {"question": "q", "context": ["abc"]}, "q", None):
            status, body = call(path, {"instances": [bad]})
            assert status == 400 and "instance 0 is not" in body["error"], bad
        status, body = call(path, {"instances": [{"question": "q", "context": "c"}] * (qa_server.MAX_INSTANCES + 1)})
        assert status == 413 and f"at most {qa_server.MAX_INSTANCES}" in body["error"]
        deep = b"[" * 100_000 + b"]" * 100_000
        assert raw(deep, {"Content-Length": str(len(deep))})[0] == 400
        assert raw(b"{}", {"Content-Length": str(10 ** 15)})[0] == 413
        # a body past the limit that the client does send: read and dropped, then the 413 (unread, the
        # closing socket reset the connection, and the client saw a network error)
        big = b" " * (2 * qa_server.MAX_BODY_BYTES)
        for _ in range(3):
            assert raw(big, {"Content-Length": str(len(big))})[0] == 413
        assert raw(b"{}", {"Content-Length": "-1"})[0] == 400
        assert raw(b"{}", {})[0] == 411
        status, body = raw(b"{}", {"Content-Length": "100"})  # 98 bytes never come: dropped after the timeout
        assert status == 408 and "did not come" in body["error"]
        status, body = call(path, {"instances": [{"question": "crash", "context": "abc"}]})
        assert status == 500 and body == {"error": "internal error (RuntimeError)"}
        assert call(path + "?x=1", {"instances": []}) == (200, {"predictions": []})
    finally:
        server.shutdown()
        server.server_close()


def test_a_port_in_use_ends_with_one_line(qa_server, model_dir):
    taken = qa_server.Server(("127.0.0.1", 0), qa_server.make_handler("m", lambda q, c: {}))
    try:
        with pytest.raises(SystemExit) as exit_info:
            qa_server.main([f"--model_dir={model_dir}", "--host=127.0.0.1", f"--http_port={taken.server_address[1]}"])
        message = str(exit_info.value.code)
        assert message.startswith("qa_server: cannot listen on 127.0.0.1:") and "\n" not in message
    finally:
        taken.server_close()
