"""Reproducible tokenizer training: the tokenizer stage against the ``tokenizers`` WordPiece
trainer as the library ships it (the stage's code before the fix), on the same sample.

Each round trains both arms, alternating which goes first, each in its own process (the
trainer's hash order changes from process to process, huggingface/tokenizers#1794). Reported
per arm: wall seconds and peak memory (the process tree's RSS) per round, how many distinct
vocabularies the rounds gave (1 means reproducible), and the unknown-token rate and tokens
per word on 2 MB of held-out articles (``enwiki/valid.txt``).

    python benchmarks/tokenizer_repro.py [--rounds 3] [--max-corpus-bytes 0]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from common import ENWIKI_TRAIN, ENWIKI_VALID, emit, require_shared_data
from data_scale import MB, run_command

ARMS = ("stock", "scratchbert")


def train_stock(corpus: str, out: str, max_corpus_bytes: int) -> None:
    """The stock trainer on the stage's sample: BERT's normaliser and pre-tokenizer, the stage's
    settings, the documents' lines fed from Python (what the stage did before the fix)."""
    from tokenizers import trainers

    from scratchbert.tokenizer import SPECIAL_TOKENS, TokenizerConfig, _bert_wordpiece, _Sample

    cfg = TokenizerConfig(corpus=corpus, out=out, max_corpus_bytes=max_corpus_bytes)
    tok = _bert_wordpiece(cfg.lowercase, cfg.lowercase)
    trainer = trainers.WordPieceTrainer(vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency,
                                        limit_alphabet=cfg.limit_alphabet, special_tokens=SPECIAL_TOKENS,
                                        continuing_subword_prefix="##", show_progress=False)
    sample = _Sample(cfg, None)
    tok.train_from_iterator((line for doc in sample.training_documents() for line in doc.split("\n")), trainer=trainer)
    Path(out).mkdir(parents=True)
    tok.save(str(Path(out) / "tokenizer.json"))


def run_arm(arm: str, corpus: Path, out: Path, max_corpus_bytes: int) -> dict:
    if arm == "stock":
        cmd = [sys.executable, __file__, "--train-stock", str(corpus), str(out), str(max_corpus_bytes)]
    else:
        cmd = [sys.executable, "-m", "scratchbert.cli", "-q", "tokenizer", "--corpus", str(corpus), "--out", str(out),
               "--max-corpus-bytes", str(max_corpus_bytes)]
    run = run_command(cmd, out.with_suffix(".log"))
    return {"seconds": run["seconds"], "peak_rss_mb": run["peak_rss_mb"]}


def vocabulary_and_quality(folder: Path, heldout: list[str] | None) -> dict:
    """The vocabulary's fingerprint and, given ``heldout`` documents, its quality on them."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from scratchbert.tokenizer import fingerprint, tokenizer_quality

    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_file(str(folder / "tokenizer.json")), unk_token="[UNK]")
    out = {"vocabulary": fingerprint(tok)}
    if heldout is not None:
        q = tokenizer_quality(tok, heldout)
        out |= {"unk_rate": round(q["unk_rate"], 6), "tokens_per_word": round(q["tokens_per_word"], 5)}
    return out


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--train-stock":
        train_stock(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-corpus-bytes", type=int, default=0, help="Train on the first N bytes of enwiki/train.txt; 0: all.")
    args = parser.parse_args()
    require_shared_data()
    from scratchbert.corpus import iter_documents

    heldout = list(iter_documents(str(ENWIKI_VALID), 2 * MB))
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="tokenizer-repro-") as tmp:
        for r in range(args.rounds):
            for arm in (ARMS if r % 2 == 0 else ARMS[::-1]):
                out = Path(tmp) / f"{arm}-{r}"
                run = run_arm(arm, ENWIKI_TRAIN, out, args.max_corpus_bytes)
                runs[arm].append(run | vocabulary_and_quality(out, heldout if r == 0 else None))
    result = {"corpus": str(ENWIKI_TRAIN), "max_corpus_bytes": args.max_corpus_bytes, "rounds": args.rounds}
    for arm, rows in runs.items():
        result[arm] = {"runs": rows, "median_seconds": statistics.median(r["seconds"] for r in rows),
                       "distinct_vocabularies": len({r["vocabulary"] for r in rows}),
                       "unk_rate": rows[0]["unk_rate"], "tokens_per_word": rows[0]["tokens_per_word"]}
    result["seconds_ratio"] = round(result["scratchbert"]["median_seconds"] / result["stock"]["median_seconds"], 3)
    emit(result)


if __name__ == "__main__":
    main()
