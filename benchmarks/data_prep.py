"""Data preparation speed on the whole 64 MB ``enwiki/train.txt``.

Measures, in one run: training the WordPiece tokenizer, building the MLM+NSP dataset
(``scratchbert dataset``: read, sentence split, tokenise, pair, save as Arrow), and, as the
floor to compare with, the raw speed of ``tokenizers`` encoding the same text (every line,
``encode_batch``, all cores) with the same vocabulary.

    python benchmarks/data_prep.py [--max-bytes N]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from common import ENWIKI_TRAIN, emit, require_shared_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--max-bytes", type=int, default=0, help="only the first N bytes (default: 0, all 64 MB)")
    p.add_argument("--vocab-size", type=int, default=30522)
    args = p.parse_args()
    require_shared_data()
    from tokenizers import Tokenizer

    from scratchbert.corpus import load_documents
    from scratchbert.pretraining_data import DatasetConfig, build_dataset
    from scratchbert.tokenizer import TokenizerConfig, train_tokenizer

    work = Path(tempfile.mkdtemp(prefix="scratchbert-dataprep-"))
    try:
        t = time.perf_counter()
        train_tokenizer(TokenizerConfig(corpus=str(ENWIKI_TRAIN), out=str(work / "tok"), vocab_size=args.vocab_size,
                                        max_corpus_bytes=args.max_bytes))
        tokenizer_s = time.perf_counter() - t

        docs = load_documents(str(ENWIKI_TRAIN), args.max_bytes or None)
        lines = [line for d in docs for line in d.split("\n")]
        raw = Tokenizer.from_file(str(work / "tok" / "tokenizer.json"))
        t = time.perf_counter()
        encoded = raw.encode_batch(lines, add_special_tokens=False)
        raw_s = time.perf_counter() - t
        n_tokens = sum(len(e.ids) for e in encoded)
        del encoded

        t = time.perf_counter()
        stats = build_dataset(DatasetConfig(corpus=str(ENWIKI_TRAIN), tokenizer=str(work / "tok"), out=str(work / "data"),
                                            max_corpus_bytes=args.max_bytes))
        dataset_s = time.perf_counter() - t
        emit({"benchmark": "data_prep", "bytes": sum(len(d.encode()) for d in docs), "documents": len(docs),
              "tokens": n_tokens, "tokenizer_train_seconds": tokenizer_s,
              "raw_tokenization_seconds": raw_s, "raw_tokens_per_second": n_tokens / raw_s,
              "dataset_build_seconds": dataset_s, "dataset_vs_raw_tokenization": dataset_s / raw_s,
              "train_examples": stats["train_examples"], "validation_examples": stats["validation_examples"]})
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
