"""KFP component: train the WordPiece tokenizer (``scratchbert.tokenizer.train_tokenizer``)."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp.dsl import Artifact, Metrics, Output

from scratchbert.tokenizer import TokenizerConfig
from scratchbert_components import make_component


def tokenizer(corpus: str, vocab_size: int, max_corpus_bytes: int, lowercase: bool, sample_bytes: int, init_model: str,
              tokenizer: Output[Artifact], metrics: Output[Metrics]):
    """Train a WordPiece vocabulary on a corpus (or take a starting model's) and save it as a Hugging Face fast tokenizer.

    Args:
        tokenizer: The tokenizer folder (AutoTokenizer.from_pretrained loads it) with its metrics.json.
        metrics: Vocabulary size, unknown-token rate and tokens per word on held-out documents, training time.
    """
    from scratchbert.tokenizer import TokenizerConfig, train_tokenizer

    config = TokenizerConfig(corpus=corpus, out=tokenizer.path, vocab_size=vocab_size,
                             max_corpus_bytes=max_corpus_bytes, lowercase=lowercase, sample_bytes=sample_bytes,
                             init_model=init_model)
    log_numbers(metrics, run_stage(train_tokenizer, config))


def build(image: str):
    """The tokenizer component for ``image``."""
    return make_component(tokenizer, image, TokenizerConfig)
