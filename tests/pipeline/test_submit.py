"""`scratchbert submit` against a stand-in for the KFP API client.

There is no Kubeflow cluster here, so these tests record what `submit` asks of a
`kfp.Client`: upload once, a new version only when the YAML changed, a run with the typed
parameters, and waiting when asked.
"""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest

from scratchbert.errors import RunFailed, ScratchBertError
from scratchbert_pipelines import submit as submit_mod


class FakeClient:
    def __init__(self, states=("RUNNING", "SUCCEEDED")):
        self.pipelines: dict[str, str] = {}
        self.versions: dict[str, list] = {}
        self.calls: list[tuple] = []
        self.states = list(states)  # what get_run reports, one a call; the last one stays
        self.max_page = 200  # the most versions the server lists at a time, whatever page_size asks

    def get_pipeline_id(self, name):
        return self.pipelines.get(name)

    def upload_pipeline(self, path, pipeline_name=None, description=None):
        pid = f"p-{len(self.pipelines)}"
        self.pipelines[pipeline_name] = pid
        # KFP 2.17's upload server names the first version after the pipeline, with its description
        self.versions[pid] = [SimpleNamespace(display_name=pipeline_name, description=description,
                                              pipeline_version_id=f"{pid}-v0")]
        self.calls.append(("upload_pipeline", pipeline_name))
        return SimpleNamespace(pipeline_id=pid)

    def list_pipeline_versions(self, pipeline_id, page_token="", page_size=10, filter=None):
        """As the server lists them: the filter's predicates applied to all, then one page."""
        versions = self.versions[pipeline_id]
        for pred in json.loads(filter)["predicates"] if filter else []:
            field, value = pred["key"], pred["stringValue"]
            versions = [v for v in versions if (getattr(v, field) or "") == value or
                        pred["operation"] == "IS_SUBSTRING" and value in (getattr(v, field) or "")]
        start = int(page_token or 0)
        size = min(page_size, self.max_page)
        more = start + size < len(versions)
        self.calls.append(("list_pipeline_versions", start))
        return SimpleNamespace(pipeline_versions=versions[start:start + size], next_page_token=str(start + size) if more else "")

    def upload_pipeline_version(self, path, pipeline_version_name, pipeline_id=None, description=None):
        assert pipeline_version_name not in [v.display_name for v in self.versions[pipeline_id]], "KFP: name taken"
        v = SimpleNamespace(display_name=pipeline_version_name, description=description,
                            pipeline_version_id=f"{pipeline_id}-v{len(self.versions[pipeline_id])}")
        self.versions[pipeline_id].append(v)
        self.calls.append(("upload_pipeline_version", pipeline_version_name))
        return v

    def create_experiment(self, name):
        self.calls.append(("create_experiment", name))
        return SimpleNamespace(experiment_id=f"e-{name}")

    def run_pipeline(self, experiment_id, job_name, params=None, pipeline_id=None, version_id=None):
        self.calls.append(("run_pipeline", experiment_id, pipeline_id, version_id, params))
        return SimpleNamespace(run_id="r-1")

    def get_run(self, run_id):
        self.calls.append(("get_run", run_id))
        return SimpleNamespace(state=self.states.pop(0) if len(self.states) > 1 else self.states[0])


@pytest.fixture(autouse=True)
def quick_polls(monkeypatch):
    monkeypatch.setattr(submit_mod, "POLL_SECONDS", 0.01)


@pytest.fixture
def package(tmp_path):
    p = tmp_path / "pipeline.yaml"
    p.write_text("pipelineInfo: {name: scratchbert}\n")
    return p


def test_first_submit_uploads_and_runs_with_typed_params(package, monkeypatch):
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    client = FakeClient()
    params = submit_mod._parse_params(["preset=tiny", "max_steps=200", "qa_on_gpu=true", "learning_rate=0.001"])
    assert params == {"preset": "tiny", "max_steps": 200, "qa_on_gpu": True, "learning_rate": 0.001}
    # a text parameter takes the value as written, even where it reads as a JSON number or boolean
    assert submit_mod._parse_params(["publish_version=2", "corpus=123", "publish_version=1.0", "init_model=true"]) == \
        {"publish_version": "1.0", "corpus": "123", "init_model": "true"}
    out = submit_mod.submit(None, "exp", params, package, wait=True, timeout_minutes=1, client=client)
    calls = [c for c in client.calls if c[0] != "list_pipeline_versions"]
    assert [c[0] for c in calls] == ["upload_pipeline", "create_experiment", "run_pipeline", "get_run", "get_run"]
    run = calls[2]
    assert run[1] == "e-exp" and run[2] == "p-0" and run[3] == "p-0-v0" and run[4] == params
    assert out["state"] == "SUCCEEDED" and out["run_id"] == "r-1"
    assert calls[3][1] == "r-1"


def uploads(client) -> list[tuple]:
    return [c for c in client.calls if c[0] in ("upload_pipeline", "upload_pipeline_version")]


def test_resubmit_uploads_one_version_per_distinct_yaml(package):
    """KFP names the first upload's version after the pipeline: the second submit of the same
    YAML uploaded it again as a hash-named version; the marker in its description finds it."""
    client = FakeClient()
    for _ in range(3):
        submit_mod.submit(None, "exp", {}, package, client=client)
    assert uploads(client) == [("upload_pipeline", "scratchbert")]
    assert {c[3] for c in client.calls if c[0] == "run_pipeline"} == {"p-0-v0"}
    package.write_text("pipelineInfo: {name: scratchbert}\n# changed\n")
    for _ in range(2):
        submit_mod.submit(None, "exp", {}, package, client=client)
    assert uploads(client)[1:] == [("upload_pipeline_version", submit_mod.version_name(package))]
    assert client.calls[-1][3] == "p-0-v1"


def test_a_version_past_the_first_page_is_found(package):
    """A pipeline with more versions than one listing returns (only the first 200 were looked at)."""
    client = FakeClient()
    client.pipelines["scratchbert"] = "p-0"
    client.versions["p-0"] = [SimpleNamespace(display_name=f"0.0.{i}-0123456789", description="",
                                              pipeline_version_id=f"p-0-v{i}") for i in range(250)]
    client.versions["p-0"].append(SimpleNamespace(display_name=submit_mod.version_name(package), description="",
                                                  pipeline_version_id="p-0-v250"))
    submit_mod.submit(None, "exp", {}, package, client=client)
    assert uploads(client) == [] and client.calls[-1][3] == "p-0-v250"
    # and the listing follows the server's pages
    client.max_page = 3
    assert [v.pipeline_version_id for v in submit_mod._versions(client, "p-0")][-2:] == ["p-0-v249", "p-0-v250"]
    assert [c[1] for c in client.calls if c[0] == "list_pipeline_versions"][-3:] == [243, 246, 249]


def test_missing_package_and_bad_param_are_one_line_errors(tmp_path):
    with pytest.raises(ScratchBertError, match="compile.py"):
        submit_mod.submit(None, "exp", {}, tmp_path / "nope.yaml", client=FakeClient())
    with pytest.raises(ScratchBertError, match="NAME=VALUE"):
        submit_mod._parse_params(["preset"])
    with pytest.raises(ScratchBertError, match="no parameter 'pretrain_max_steps'"):
        submit_mod._parse_params(["pretrain_max_steps=5"])


@pytest.mark.parametrize("state", ["FAILED", "CANCELED", "SKIPPED", "RuntimeStateEnum.FAILED"])
def test_wait_exits_nonzero_when_the_run_did_not_succeed(package, state, capsys, monkeypatch):
    import kfp

    from scratchbert import cli

    client = FakeClient(states=("PENDING", "RUNNING", state))
    with pytest.raises(RunFailed, match=f"ended {state.rsplit('.', 1)[-1]}"):
        submit_mod.submit(None, "exp", {}, package, wait=True, client=client)
    # through the command line: exit status 1 and one line
    monkeypatch.setattr(kfp, "Client", lambda **kw: client)
    capsys.readouterr()
    assert cli.main(["submit", "--package", str(package), "--wait"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("scratchbert submit: error: run r-1 ended") and err.count("\n") == 1


def test_a_canceled_run_ends_the_wait_at_once(package):
    """kfp's wait_for_run_completion knows no CANCELED and waited out its whole timeout (24 hours
    by default) before calling the run one that may still be running."""
    client = FakeClient(states=("RUNNING", "CANCELING", "CANCELED"))
    started = time.monotonic()
    with pytest.raises(RunFailed, match="run r-1 ended CANCELED"):
        submit_mod.submit(None, "exp", {}, package, wait=True, client=client)
    assert time.monotonic() - started < 5 and [c[0] for c in client.calls].count("get_run") == 3


def test_the_wait_ends_in_every_final_state_of_the_api():
    from kfp_server_api import V2beta1RuntimeState as S

    assert set(submit_mod.FINAL_STATES) == {S.SUCCEEDED, S.SKIPPED, S.FAILED, S.CANCELED}
    assert set(submit_mod.FINAL_STATES) < set(S.allowable_values)


def test_a_run_that_outlasts_the_wait_is_reported_so_and_a_bad_wait_is_refused_first(package):
    """A run still going when the wait ends is reported so (exit 1), not as an unreachable host."""
    client = FakeClient(states=("RUNNING",))
    with pytest.raises(RunFailed, match="did not finish in time .*last seen RUNNING.* it may still be running"):
        submit_mod.submit(None, "exp", {}, package, wait=True, timeout_minutes=0.001, client=client)
    for bad in (float("nan"), float("inf"), 0.0, -5.0):
        client = FakeClient()
        with pytest.raises(ScratchBertError, match="--timeout-minutes .* must be a positive number"):
            submit_mod.submit(None, "exp", {}, package, wait=True, timeout_minutes=bad, client=client)
        assert client.calls == []  # nothing started


class FlakyClient(FakeClient):
    """get_run fails as a dying port-forward makes it fail, ``failures`` times, then answers."""

    def __init__(self, failures, error, **kw):
        super().__init__(**kw)
        self.failures, self.error = failures, error

    def get_run(self, run_id):
        if self.failures:
            self.failures -= 1
            self.calls.append(("get_run failed", run_id))
            raise self.error
        return super().get_run(run_id)


def test_a_look_at_the_run_that_fails_is_retried_and_then_said_so(package, monkeypatch):
    """A port-forward that died during a long --wait was 'could not reach Kubeflow Pipelines' (exit 2)
    while the run went on, which led to submitting the GPU run again."""
    import urllib3
    from kfp_server_api.exceptions import ApiException

    for error in (urllib3.exceptions.ProtocolError("Connection aborted."), ApiException(status=503, reason="Service Unavailable")):
        client = FlakyClient(3, error, states=("RUNNING", "SUCCEEDED"))
        assert submit_mod.submit(None, "exp", {}, package, wait=True, client=client)["state"] == "SUCCEEDED"
        assert [c[0] for c in client.calls].count("get_run failed") == 3
    monkeypatch.setattr(submit_mod, "POLL_PATIENCE_SECONDS", 0.05)
    client = FlakyClient(10**6, ConnectionRefusedError(111, "Connection refused"))
    with pytest.raises(RunFailed, match=r"run r-1 was started, but its state could not be read .*ConnectionRefusedError; "
                                        r"last seen not yet seen\); it may still be running: see the Kubeflow UI"):
        submit_mod.submit(None, "exp", {}, package, wait=True, client=client)
    client = FlakyClient(1, ApiException(status=401, reason="Unauthorized"))  # not one that passes
    with pytest.raises(ScratchBertError, match="refused the request \\(401 Unauthorized\\)"):
        submit_mod.submit(None, "exp", {}, package, wait=True, client=client)


def test_the_summary_on_stdout_is_json_whatever_kfp_prints(package, monkeypatch, capsys):
    """kfp's client prints 'Experiment details: …' and 'Run details: …' links to stdout, so
    `scratchbert submit | jq .run_id` failed."""
    import kfp

    from scratchbert import cli

    class Chatty(FakeClient):
        def run_pipeline(self, *a, **k):
            print("Run details: http://localhost:8080/#/runs/details/r-1")
            return super().run_pipeline(*a, **k)

    monkeypatch.setattr(kfp, "Client", lambda **kw: Chatty())
    assert cli.main(["submit", "--package", str(package)]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["run_id"] == "r-1" and "Run details" in captured.err


def test_shipped_package_is_the_default(monkeypatch):
    assert submit_mod.DEFAULT_YAML.is_file() and submit_mod.DEFAULT_YAML.name == "bert_pipeline.yaml"


def test_unreachable_host_is_one_line(package):
    with pytest.raises(ScratchBertError, match="could not reach Kubeflow Pipelines at http://127.0.0.1:9"):
        submit_mod.submit("http://127.0.0.1:9", "exp", {}, package)


@pytest.mark.parametrize("args, words", [
    (["--host", "http://127.0.0.1:9"], "could not reach Kubeflow Pipelines at http://127.0.0.1:9"),
    (["--host", "not-a-url"], "--host 'not-a-url' is not a URL of the KFP API"),
    (["--host", "http://127.0.0.1:9", "-p", "max_steps=0"], "pretrain stage: max_steps 0 trains nothing"),
    (["--host", "http://127.0.0.1:9", "-p", "preset=huge"], "preset is 'huge', not one of"),
])
def test_submit_errors_are_one_line_on_the_command_line(args, words, capsys):
    """No client warnings, no urllib3 retry lines, no chained tracebacks: one line, exit 2.
    Parameters are checked before the host is contacted."""
    from scratchbert import cli

    assert cli.main(["submit", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and words in err and err.startswith("scratchbert submit: error: ")


def test_parameters_are_checked_against_the_package_submitted(monkeypatch):
    """The CPU pipeline has no GPU parameters: -p qa_on_gpu=false was accepted and sent to the
    server. The package's own defaults are what the values are validated with."""
    from scratchbert_pipelines.compile import DEFAULT_CPU_OUTPUT

    client = FakeClient()
    with pytest.raises(ScratchBertError, match="the pipeline in .*bert_pipeline_cpu.yaml has no parameter qa_on_gpu"):
        submit_mod.submit(None, "exp", {"qa_on_gpu": False}, DEFAULT_CPU_OUTPUT, client=client)
    assert client.calls == []
    defaults = submit_mod._package_defaults(DEFAULT_CPU_OUTPUT)
    assert defaults["batch_size"] == 64 and isinstance(defaults["batch_size"], int) and "num_nodes" not in defaults
    out = submit_mod.submit(None, "exp", {"max_steps": 5}, DEFAULT_CPU_OUTPUT, client=client)
    assert out["params"] == {"max_steps": 5}


def test_wait_reports_the_metrics_of_the_version_this_run_published(package, monkeypatch):
    """--wait reads the published model card: the run's own publish_version, else the latest, but
    not a latest published before the run was submitted (another run's, as it once reported)."""
    from scratchbert import modelcard, storage

    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    published = {"s3://models/scratchbert-qa/v1/": "2020-01-01T00:00:00Z", "s3://models/scratchbert-qa/v2/": "2999-01-01T00:00:00Z"}
    latest = {"s3://models/scratchbert-qa": "s3://models/scratchbert-qa/v1/"}
    read = []

    def read_manifest(uri):
        read.append(uri)
        version = latest.get(uri, uri.rstrip("/") + "/")
        return {"uri": version, "created": published[version]}

    monkeypatch.setattr(storage, "read_manifest", read_manifest)
    monkeypatch.setattr(storage, "read_object", lambda uri: b"---\nmodel-index: []\n---\n")
    monkeypatch.setattr(modelcard, "card_results", lambda text: {"f1": 40.0})

    def submitted(params):
        return submit_mod.submit(None, "exp", params, package, wait=True, timeout_minutes=1, client=FakeClient())

    old = submitted({})  # the latest predates the run
    assert old["published_uri"] == "s3://models/scratchbert-qa" and "metrics" not in old
    assert "s3://models/scratchbert-qa/v1/, was published before this run was submitted" in old["metrics_error"]
    own = submitted({"publish_version": "v2"})
    assert read[-1] == "s3://models/scratchbert-qa/v2" and own["published_uri"] == "s3://models/scratchbert-qa/v2/"
    assert own["metrics"] == {"f1": 40.0}
    latest["s3://models/scratchbert-qa"] = "s3://models/scratchbert-qa/v2/"  # published after it was submitted
    assert submitted({})["published_uri"] == "s3://models/scratchbert-qa/v2/"
