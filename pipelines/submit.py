"""`scratchbert submit`: upload the compiled pipeline to Kubeflow Pipelines and start a run.

Uploads ``pipelines/bert_pipeline.yaml`` as the pipeline ``scratchbert`` (or, if that pipeline
exists, as a new version of it named after the project version and the YAML's hash, so the
same YAML is never uploaded twice), starts a run in an experiment with the given parameters,
and with ``--wait`` waits for it and prints the final state and, where the object store is
reachable from here, the published model's metrics.

Endpoint and credentials follow the kfp CLI's conventions: ``--host`` or
``KF_PIPELINES_ENDPOINT``; ``--existing-token`` or ``KF_PIPELINES_TOKEN`` for a bearer token.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipelines import settings  # noqa: E402

DEFAULT_YAML = settings.ROOT / "pipelines" / "bert_pipeline.yaml"
PIPELINE_NAME = "scratchbert"


def _parse_params(items: list[str]) -> dict:
    params = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(f"scratchbert submit: error: --param {item!r} must look like NAME=VALUE")
        key, value = item.split("=", 1)
        try:
            params[key] = json.loads(value)  # numbers and booleans keep their type
        except json.JSONDecodeError:
            params[key] = value
    return params


def version_name(package: Path) -> str:
    digest = hashlib.sha256(package.read_bytes()).hexdigest()[:10]
    return f"{settings.project_version()}-{digest}"


def ensure_pipeline(client, package: Path, name: str = PIPELINE_NAME) -> tuple[str, str]:
    """Upload ``package`` as pipeline ``name`` or as a new version of it; return (pipeline_id, version_id)."""
    version = version_name(package)
    pipeline_id = client.get_pipeline_id(name)
    if pipeline_id is None:
        pipeline = client.upload_pipeline(str(package), pipeline_name=name,
                                          description="Train BERT from scratch: tokenizer, MLM+NSP data, pretraining, evaluation, SQuAD, publish")
        first = client.list_pipeline_versions(pipeline.pipeline_id, page_size=200).pipeline_versions or []
        if first:  # the upload made the pipeline's first version from this very package
            return pipeline.pipeline_id, first[0].pipeline_version_id
        pipeline_id = pipeline.pipeline_id
    versions = client.list_pipeline_versions(pipeline_id, page_size=200).pipeline_versions or []
    for v in versions:
        if v.display_name == version:
            return pipeline_id, v.pipeline_version_id
    v = client.upload_pipeline_version(str(package), pipeline_version_name=version, pipeline_id=pipeline_id)
    return pipeline_id, v.pipeline_version_id


def submit(host: str | None, experiment: str, params: dict, package: Path = DEFAULT_YAML, run_name: str | None = None,
           wait: bool = False, timeout_minutes: float = 24 * 60, existing_token: str | None = None, client=None) -> dict:
    """Upload (if needed), start a run, optionally wait; return a summary dict."""
    import kfp

    if not package.is_file():
        raise SystemExit(f"scratchbert submit: error: {package} does not exist; run `python pipelines/compile.py` first")
    client = client or kfp.Client(host=host or os.environ.get("KF_PIPELINES_ENDPOINT"),
                                  existing_token=existing_token or os.environ.get("KF_PIPELINES_TOKEN"))
    pipeline_id, version_id = ensure_pipeline(client, package)
    exp = client.create_experiment(experiment)
    run = client.run_pipeline(experiment_id=exp.experiment_id, job_name=run_name or f"{PIPELINE_NAME}-{version_name(package)}",
                              params=params, pipeline_id=pipeline_id, version_id=version_id)
    summary = {"pipeline_id": pipeline_id, "version_id": version_id, "experiment_id": exp.experiment_id,
               "run_id": run.run_id, "params": params}
    if wait:
        done = client.wait_for_run_completion(run.run_id, timeout=int(timeout_minutes * 60))
        summary["state"] = str(done.state)
        summary.update(_published_metrics(params))
    return summary


def _published_metrics(params: dict) -> dict:
    """The published model's metrics.json, when AWS_* credentials reach the store from here."""
    uri = params.get("publish_uri", f"s3://{settings.PUBLISH_BUCKET}/{settings.PUBLISH_PREFIX}")
    if not os.environ.get("AWS_ENDPOINT_URL"):
        return {"published_uri": uri}
    from scratchbert import storage
    from scratchbert.errors import ScratchBertError

    try:
        manifest = storage.read_manifest(uri)
        client = storage.client_from_env()
        bucket, key = storage.parse_s3_uri(manifest["uri"] + "/metrics.json")
        return {"published_uri": manifest["uri"], "metrics": json.loads(client.get_object(bucket, key).read())}
    except (ScratchBertError, Exception) as e:  # metrics are a convenience: never fail a finished run
        return {"published_uri": uri, "metrics_error": str(e).splitlines()[0]}


def add_parser(sub) -> None:
    """Register ``scratchbert submit`` (see scratchbert.cli.EXTRA_COMMANDS)."""
    p = sub.add_parser("submit", help="upload the pipeline to Kubeflow Pipelines and start a run",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default=None, help="KFP API endpoint, e.g. http://localhost:8080 (default: $KF_PIPELINES_ENDPOINT)")
    p.add_argument("--existing-token", default=None, help="bearer token (default: $KF_PIPELINES_TOKEN)")
    p.add_argument("--experiment", default="scratchbert", help="experiment name (created if missing)")
    p.add_argument("--package", type=Path, default=DEFAULT_YAML, help="compiled pipeline YAML")
    p.add_argument("--run-name", default=None)
    p.add_argument("--param", "-p", action="append", default=[], metavar="NAME=VALUE",
                   help="pipeline parameter (repeat), e.g. -p preset=tiny -p pretrain_time_budget_minutes=30")
    p.add_argument("--wait", action="store_true", help="wait for the run and print the final metrics")
    p.add_argument("--timeout-minutes", type=float, default=24 * 60)
    p.set_defaults(_run=lambda a: submit(a.host, a.experiment, _parse_params(a.param), a.package, a.run_name,
                                         a.wait, a.timeout_minutes, a.existing_token))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="submit")
    add_parser(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["submit", *sys.argv[1:]])
    print(json.dumps(ns._run(ns), indent=2, default=str))
