#!/usr/bin/env python
"""Run the scratchbert pipeline on this machine through ``kfp.local`` (the kfp half of ``scratchbert run-local``).

:func:`run_pipeline` is the only code that touches ``kfp.local``: it runs the very pipeline
function that ``pipelines/compile.py`` compiles (``pipelines.bert_pipeline.build_pipeline``)
with ``kfp.local.SubprocessRunner(use_venv=False)``, i.e. each task is a subprocess of this
Python, in this virtual environment, with this process's environment variables (that is how
the ``AWS_*`` variables reach the tasks locally; on a cluster they come from the Secret).
kfp.local ignores the cluster-only settings (kfp-kubernetes platform config, accelerator,
CPU and memory), so nothing is switched off for a local run.

Everything else (the embedded S3 server, staging inputs, reading results, the summary)
lives in :mod:`scratchbert.local_run`, which does not import kfp. From a checkout:

    python pipelines/local_run.py --synthetic          # same as `scratchbert run-local --synthetic`
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make `components` and `pipelines` importable
    sys.path.insert(0, str(ROOT))


def run_pipeline(arguments: dict[str, Any], pipeline_root: str | Path, *, image: str | None = None,
                 gpu_image: str | None = None) -> str:
    """Run the pipeline locally with ``arguments`` (pipeline parameters); return the published URI.

    Task outputs land under ``pipeline_root`` (``<pipeline-run>/<task>/<output>``). The
    image names only label the tasks locally (the subprocess runner uses this Python).
    Raises ``RuntimeError`` naming the failed task when a task fails; the task's own error
    is in the streamed log above it.
    """
    from kfp import local

    from pipelines.bert_pipeline import build_pipeline

    pipeline = build_pipeline(image, gpu_image)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(pipeline_root),
               raise_on_error=True)
    with warnings.catch_warnings():
        # "non-Python base image" warnings: expected, the subprocess runner uses this venv instead.
        warnings.filterwarnings("ignore", message=".*custom or non-Python base image.*")
        # "settings [cpu_limit, accelerator, ...] have no effect in the current local runner": by design.
        warnings.filterwarnings("ignore", message=".*have no effect in the current local runner.*")
        task = pipeline(**arguments)
    return task.output


def main(argv: list[str] | None = None) -> int:
    """``python pipelines/local_run.py [run-local options]``."""
    from scratchbert.local_run import main as run_local_main

    return run_local_main(argv)


if __name__ == "__main__":
    sys.exit(main())
