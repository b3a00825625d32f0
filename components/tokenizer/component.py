"""KFP component: train the WordPiece tokenizer (``scratchbert.tokenizer.train_tokenizer``)."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp.dsl import Artifact, Metrics, Output

from components import make_component


def tokenizer(corpus_uri: str, vocab_size: int, max_corpus_bytes: int, lowercase: bool,
              tokenizer: Output[Artifact], metrics: Output[Metrics]):
    """Train a WordPiece vocabulary on a corpus and save it as a Hugging Face fast tokenizer.

    Args:
        corpus_uri: The corpus: hf://name[/config], s3://bucket/prefix (needs the AWS_* variables), or a path in the image.
        vocab_size: WordPiece vocabulary size, special tokens included (BERT's is 30522).
        max_corpus_bytes: Use only the first N bytes of the corpus, cut at a document boundary; 0 uses all of it.
        lowercase: Lower-case the text and strip accents (an uncased model).
        tokenizer: The tokenizer folder (AutoTokenizer.from_pretrained loads it) with its metrics.json.
        metrics: Vocabulary size, unknown-token rate and tokens per word on held-out documents, training time.
    """
    from scratchbert.tokenizer import TokenizerConfig, train_tokenizer

    config = TokenizerConfig(corpus=corpus_uri, out=tokenizer.path, vocab_size=vocab_size,
                             max_bytes=max_corpus_bytes or None, lowercase=lowercase)
    log_numbers(metrics, run_stage(train_tokenizer, config))


def build(image: str):
    """The tokenizer component for ``image``."""
    return make_component(tokenizer, image)
