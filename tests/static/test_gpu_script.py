"""benchmarks/gpu.sh on a machine where the project is not installed, as its header prepares one
(the dependencies' wheels and the checkout, no ``pip install .``): its benchmarks must import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gpu_script_runs_its_benchmarks_from_a_checkout_that_is_not_installed(tmp_path):
    # this interpreter without its site (-S): its packages stay importable through PYTHONPATH, but
    # the .pth of the editable install is not read, so nothing of scratchbert is installed
    python = tmp_path / "python"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    out, no_data, temp = tmp_path / "out", tmp_path / "no-data", tmp_path / "temp"
    no_data.mkdir()
    temp.mkdir()
    env = {**os.environ, "PYTHON": str(python), "PYTHONPATH": sysconfig.get_paths()["purelib"], "OUT": str(out),
           "TTQ_MINUTES": "0", "DEADLINE_S": "300", "WORKDIR": str(tmp_path / "work"),
           "SCRATCHBERT_SHARED_DATA": str(no_data), "TMPDIR": str(temp)}
    proc = subprocess.run(["bash", "benchmarks/gpu.sh"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert "environment check failed" not in proc.stdout, proc.stdout + proc.stderr
    log = (out / "throughput.log").read_text()
    assert "Error" not in log, log
    # the benchmark ran as far as it can without data: its one JSON document says so
    assert "not found" in json.loads((out / "throughput.json").read_text())["skipped"]
    # the folder of its import links goes with it (mktemp's tmp.XXXXXXXXXX)
    assert not list(temp.glob("tmp.*")), list(temp.iterdir())
