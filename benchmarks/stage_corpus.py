"""What run-local spends putting a large corpus into its S3 store: all of it, against the part the run reads.

Writes ``enwiki/train.txt`` ``--copies`` times into one file (513 MB at 8), starts the embedded S3
server on an empty store and times ``run-local``'s own staging of that corpus
(``local_run._stage_input``) with no cut (what it did before: every byte, whatever the run read)
and cut to ``--max-corpus-bytes`` (the main job's budget reads 11 MB), ``--rounds`` times in
alternating order; reports seconds and the store's bytes on disk after each.

    python benchmarks/stage_corpus.py [--copies 8] [--max-corpus-bytes 11000000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from common import ENWIKI_TRAIN, emit, require_shared_data

from scratchbert_pipelines import local_run


def store_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def stage_once(corpus: Path, max_bytes: int, work: Path) -> dict:
    """Seconds to stage ``corpus`` cut to ``max_bytes`` (0: whole) into a new store, and its size."""
    from scratchbert.objectstore import EmbeddedS3

    store = Path(tempfile.mkdtemp(dir=work, prefix="store-"))
    server = EmbeddedS3(data_dir=store).start()
    try:
        os.environ.update(server.env())  # as run-local sets them for its tasks
        started = time.perf_counter()
        local_run._stage_input(str(corpus), "corpus", "bench", max_bytes)
        seconds = time.perf_counter() - started
    finally:
        server.stop()
    size = store_bytes(store)
    shutil.rmtree(store)
    return {"seconds": seconds, "store_bytes": size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--copies", type=int, default=8)
    p.add_argument("--max-corpus-bytes", type=int, default=local_run.WIKITEXT2_BYTES)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--workdir", default=tempfile.gettempdir())
    args = p.parse_args()
    require_shared_data()
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="scratchbert-stage-bench-") as tmp:
        work = Path(tmp)
        corpus = work / "corpus.txt"
        with corpus.open("wb") as out:
            for _ in range(args.copies):
                with ENWIKI_TRAIN.open("rb") as f:
                    shutil.copyfileobj(f, out)
        arms = {"whole (before)": 0, "cut to the run's bytes": args.max_corpus_bytes}
        runs: dict[str, list[dict]] = {arm: [] for arm in arms}
        for round_ in range(args.rounds):
            for arm in arms if round_ % 2 == 0 else reversed(arms):
                runs[arm].append(stage_once(corpus, arms[arm], work))
        result = {arm: {"median_seconds": round(statistics.median(r["seconds"] for r in rs), 2),
                        "seconds": [round(r["seconds"], 2) for r in rs],
                        "store_megabytes": round(statistics.median(r["store_bytes"] for r in rs) / 1e6, 1)}
                  for arm, rs in runs.items()}
        emit({"benchmark": "stage_corpus", "corpus_megabytes": round(corpus.stat().st_size / 1e6, 1),
              "max_corpus_bytes": args.max_corpus_bytes, "arms": result})


if __name__ == "__main__":
    main()
