"""`scratchbert submit`: upload the compiled pipeline to Kubeflow Pipelines and start a run.

Uploads the compiled pipeline (by default the ``bert_pipeline.yaml`` shipped with the package) as the pipeline ``scratchbert`` (or, if that pipeline
exists, as a new version of it named after the project version and the YAML's hash; a YAML
that a version already holds is never uploaded again), starts a run in an experiment with the given parameters,
and with ``--wait`` waits for it and prints the final state and, where the object store is
reachable from here, the published model's EM/F1; a run that did not succeed exits 1.

Endpoint and credentials follow the kfp CLI's conventions: ``--host`` or
``KF_PIPELINES_ENDPOINT``; ``--existing-token`` or ``KF_PIPELINES_TOKEN`` for a bearer token.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path

from scratchbert.errors import RunFailed, ScratchBertError
from scratchbert.params import finite
from scratchbert_pipelines import parameters, settings
from scratchbert_pipelines.compile import DEFAULT_OUTPUT as DEFAULT_YAML

PIPELINE_NAME = "scratchbert"
SUCCEEDED = "SUCCEEDED"
# Every state of kfp_server_api.V2beta1RuntimeState a run does not leave: kfp's own
# wait_for_run_completion knows only succeeded, failed and skipped, and waits out its whole
# timeout on a CANCELED run.
FINAL_STATES = (SUCCEEDED, "SKIPPED", "FAILED", "CANCELED")
DESCRIPTION = "Train BERT from scratch: tokenizer, MLM+NSP data, pretraining, evaluation, SQuAD, publish"
# Versions a listing asks for at a time (kfp's default is 10).
VERSIONS_PAGE = 200
# Seconds between two looks at a waited-for run.
POLL_SECONDS = 10.0
# How long --wait keeps asking after a look fails (a port-forward or API server restarting) before
# it says the run's state is unknown: the run goes on without us, and a resubmit would repeat it.
POLL_PATIENCE_SECONDS = 300.0


def _parse_params(items: list[str]) -> dict:
    """``NAME=VALUE`` strings -> checked pipeline parameters: a text parameter takes VALUE as it is
    (``publish_version=2`` is the text "2"), the others read it as JSON (``true``, ``3``, ``1e-4``)."""
    params = {}
    for item in items:
        if "=" not in item:
            raise ScratchBertError(f"--param {item!r} must look like NAME=VALUE, e.g. -p preset=tiny")
        key, value = item.split("=", 1)
        params[key] = value
        known = parameters.BY_NAME.get(key)
        if known is not None and known.type is not str:
            with contextlib.suppress(json.JSONDecodeError):
                params[key] = json.loads(value)  # a value that is not JSON stays text, which check() refuses by name
    return parameters.check(params)


def version_name(package: Path) -> str:
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:10]
    return f"{settings.project_version()}-{digest}"


def ensure_pipeline(client, package: Path, name: str = PIPELINE_NAME) -> tuple[str, str]:
    """Upload ``package`` as pipeline ``name`` or as a new version of it, unless a version of it
    holds this very YAML already; return (pipeline_id, version_id).

    A version holds it when it is named :func:`version_name` or when its description has
    :func:`_marker`: KFP names a pipeline's first version after the pipeline, not as asked, and
    gives it the pipeline's description, so the marker is what finds the first upload again.
    """
    version = version_name(package)
    description = f"{DESCRIPTION} {_marker(version)}"
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        pipeline_id = client.upload_pipeline(str(package), pipeline_name=name, description=description).pipeline_id
    for key, operation, value in (("display_name", "EQUALS", version), ("description", "IS_SUBSTRING", _marker(version))):
        found = next(_versions(client, pipeline_id, {"key": key, "operation": operation, "stringValue": value}), None)
        if found is not None:
            return pipeline_id, found.pipeline_version_id
    v = client.upload_pipeline_version(str(package), pipeline_version_name=version, pipeline_id=pipeline_id,
                                       description=description)
    return pipeline_id, v.pipeline_version_id


def _marker(version: str) -> str:
    """What the description of every version ``submit`` uploads says of the package it holds."""
    return f"(package {version})"


def _versions(client, pipeline_id: str, predicate: dict | None = None):
    """The versions of the pipeline (those that ``predicate``, a KFP filter predicate, picks on the
    server), page after page: a pipeline may have more than a page of them."""
    query = json.dumps({"predicates": [predicate]}) if predicate else None
    token = ""
    while True:
        page = client.list_pipeline_versions(pipeline_id, page_token=token, page_size=VERSIONS_PAGE, filter=query)
        yield from page.pipeline_versions or []
        token = page.next_page_token
        if not token:
            return


def submit(host: str | None, experiment: str, params: dict, package: Path = DEFAULT_YAML, run_name: str | None = None,
           wait: bool = False, timeout_minutes: float = 24 * 60, existing_token: str | None = None, client=None) -> dict:
    """Upload (if needed), start a run, optionally wait; return a summary dict.

    With ``wait``, a run that does not end in SUCCEEDED raises :class:`RunFailed` (exit status 1).
    """
    import kfp

    package = Path(package)
    if not package.is_file():
        raise ScratchBertError(f"{package} does not exist; compile it with `python pipelines/compile.py --output {package}`")
    if wait and not (finite(timeout_minutes) and timeout_minutes > 0):
        raise ScratchBertError(f"--timeout-minutes {timeout_minutes} must be a positive number of minutes to wait for the run")
    params = parameters.check(params)
    given = _package_defaults(package)
    if given is not None:
        unknown = sorted(set(params) - set(given))
        if unknown:
            raise ScratchBertError(f"the pipeline in {package} has no parameter {', '.join(unknown)} (the CPU pipeline has "
                                   f"none of {', '.join(parameters.GPU_ONLY)}); leave it out, or submit the pipeline that has it")
    # as the pipeline's validate task will, with the package's own defaults: fail here, not on the cluster
    parameters.validate({**{k: v for k, v in (given or {}).items() if v is not None}, **params})
    from scratchbert.storage import MANIFEST_TIME

    host = host or os.environ.get("KF_PIPELINES_ENDPOINT")
    if host:
        _check_host(host)
    # kfp prints "Run details: ..." links to stdout, where the summary goes as JSON (submit | jq)
    with _api_errors(host), _quiet_http_retries(), warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        # "This client only works with Kubeflow Pipeline v2.0.0-beta.2 and later": KFP_VERSION is later
        warnings.filterwarnings("ignore", category=FutureWarning, module="kfp")
        client = client or kfp.Client(host=host, existing_token=existing_token or os.environ.get("KF_PIPELINES_TOKEN"))
        submitted = time.strftime(MANIFEST_TIME, time.gmtime())  # a version published before this is not this run's
        pipeline_id, version_id = ensure_pipeline(client, package)
        exp = client.create_experiment(experiment)
        run = client.run_pipeline(experiment_id=exp.experiment_id,
                                  job_name=run_name or f"{PIPELINE_NAME}-{version_name(package)}",
                                  params=params, pipeline_id=pipeline_id, version_id=version_id)
        summary = {"pipeline_id": pipeline_id, "version_id": version_id, "experiment_id": exp.experiment_id,
                   "run_id": run.run_id, "params": params}
        if not wait:
            return summary
        state = wait_for_run(client, run.run_id, timeout_minutes)
    summary["state"] = state
    if state != SUCCEEDED:
        raise RunFailed(f"run {run.run_id} ended {state}; its tasks' logs are in the Kubeflow UI (experiment {experiment})")
    summary.update(_published_metrics(params, submitted))
    return summary


def wait_for_run(client, run_id: str, timeout_minutes: float) -> str:
    """The state a run ends in (one of :data:`FINAL_STATES`), looking every :data:`POLL_SECONDS`;
    raises :class:`RunFailed` when it has not ended after ``timeout_minutes``."""
    deadline = time.monotonic() + timeout_minutes * 60
    failing_since, state = None, "not yet seen"
    while True:
        try:
            found = client.get_run(run_id)
        except Exception as e:
            if not _passing(e):
                raise
            failing_since = failing_since or time.monotonic()
            if time.monotonic() - failing_since >= POLL_PATIENCE_SECONDS or time.monotonic() >= deadline:
                raise RunFailed(f"run {run_id} was started, but its state could not be read for "
                                f"{(time.monotonic() - failing_since) / 60:.0f} minutes ({type(e).__name__}; last seen {state}); "
                                "it may still be running: see the Kubeflow UI, and do not submit it again") from None
            time.sleep(POLL_SECONDS)
            continue
        failing_since = None
        state = str(getattr(found, "state", None)).rsplit(".", 1)[-1]  # "RuntimeStateEnum.FAILED" too
        if state in FINAL_STATES:
            return state
        left = deadline - time.monotonic()
        if left <= 0:
            raise RunFailed(f"the run did not finish in time ({timeout_minutes:g} minutes, last seen {state}); "
                            "it may still be running")
        time.sleep(min(POLL_SECONDS, left))


def _passing(error: Exception) -> bool:
    """Whether a failed look at a run may pass: no connection, or the API server's own failure (5xx)."""
    import urllib3
    from kfp_server_api.exceptions import ApiException

    if isinstance(error, ApiException):
        return (error.status or 0) >= 500
    return isinstance(error, (urllib3.exceptions.HTTPError, ConnectionError, OSError))


def _package_defaults(package: Path) -> dict | None:
    """The run parameters a compiled pipeline takes, each with its default in its Python type (the
    YAML's numbers are all floats; None without one); None where the file does not say (no ``root``)."""
    import yaml

    try:
        spec = next(yaml.safe_load_all(package.read_text()))
        declared = spec["root"]["inputDefinitions"]["parameters"]
    except (yaml.YAMLError, StopIteration, KeyError, TypeError):
        return None
    return {name: parameters.BY_NAME[name].type(d["defaultValue"]) if name in parameters.BY_NAME and "defaultValue" in d
            else None for name, d in declared.items()}


def _check_host(host: str) -> None:
    from urllib.parse import urlsplit

    url = urlsplit(host)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ScratchBertError(f"--host {host!r} is not a URL of the KFP API; give scheme and host, e.g. http://localhost:8080")


@contextlib.contextmanager
def _quiet_http_retries():
    """urllib3 logs a warning for every retry of a refused connection (three lines before the
    error that says the same): keep them out of the user's screen, the error says it all."""
    import logging

    pool = logging.getLogger("urllib3.connectionpool")
    level = pool.level
    pool.setLevel(logging.ERROR)
    try:
        yield
    finally:
        pool.setLevel(level)


class _api_errors:
    """Connection and API failures of the KFP client as one line naming the host."""

    def __init__(self, host: str | None):
        self.host = host or os.environ.get("KF_PIPELINES_ENDPOINT") or "the default KFP endpoint"

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb):
        if exc is None or isinstance(exc, ScratchBertError):
            return False
        import urllib3
        from kfp_server_api.exceptions import ApiException

        if isinstance(exc, (urllib3.exceptions.HTTPError, ConnectionError, OSError)):
            raise ScratchBertError(f"could not reach Kubeflow Pipelines at {self.host} ({type(exc).__name__}); "
                                   "check --host (e.g. http://localhost:8080) and that the API server is up") from None
        if isinstance(exc, ApiException):
            raise ScratchBertError(f"Kubeflow Pipelines at {self.host} refused the request ({exc.status} {exc.reason}); "
                                   "check --host and --existing-token") from None
        return False


def _published_metrics(params: dict, submitted: str) -> dict:
    """The EM/F1 of the model this run published, from its model card, when AWS_* credentials reach
    the store from here: its ``publish_version``, or where the run leaves that to the time of the
    publish, the latest version, if published after ``submitted`` (UTC, as a manifest's
    ``created``): an older one is another run's. A run submitted beside it may still publish later."""
    uri = params.get("publish_uri", parameters.BY_NAME["publish_uri"].default)
    if not os.environ.get("AWS_ENDPOINT_URL"):
        return {"published_uri": uri}
    from scratchbert import storage
    from scratchbert.modelcard import CARD_FILE, card_results

    version = params.get("publish_version") or ""
    try:
        manifest = storage.read_manifest(f"{uri.rstrip('/')}/{version}" if version else uri)
        if not version and str(manifest.get("created") or "") < submitted:
            return {"published_uri": uri, "metrics_error": f"the latest version at {uri}, {manifest['uri']}, was published "
                                                           f"before this run was submitted ({submitted}): another run's"}
        return {"published_uri": manifest["uri"], "metrics": card_results(storage.read_object(manifest["uri"] + CARD_FILE).decode())}
    except Exception as e:  # metrics are a convenience: never fail a finished run
        return {"published_uri": uri, "metrics_error": str(e).splitlines()[0]}


def add_parser(sub) -> None:
    """Register ``scratchbert submit`` (the ``scratchbert.commands`` entry point)."""
    p = sub.add_parser("submit", help="upload the pipeline to Kubeflow Pipelines and start a run",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=None, help="KFP API endpoint, e.g. http://localhost:8080 (default: $KF_PIPELINES_ENDPOINT)")
    p.add_argument("--existing-token", default=None, help="bearer token (default: $KF_PIPELINES_TOKEN)")
    p.add_argument("--experiment", default="scratchbert", help="experiment name, created if missing (default: %(default)s)")
    p.add_argument("--package", type=Path, default=DEFAULT_YAML, help="compiled pipeline YAML (default: the one shipped with scratchbert)")
    p.add_argument("--run-name", default=None, help="name of the run (default: scratchbert-VERSION-HASH)")
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                   help="pipeline parameter (repeat), e.g. -p preset=tiny -p time_budget_minutes=30; "
                        f"names: {', '.join(parameters.NAMES)}")
    p.add_argument("--wait", action="store_true", help="wait for the run, print its final state and the model's EM/F1; exit 1 unless it succeeded")
    p.add_argument("--timeout-minutes", type=float, default=24 * 60, help="how long --wait waits (default: %(default)s)")
    p.set_defaults(_run=lambda a: submit(a.host, a.experiment, _parse_params(a.param), a.package, a.run_name,
                                         a.wait, a.timeout_minutes, a.existing_token))
