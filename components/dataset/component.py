"""KFP component: build the masked-LM + next-sentence dataset (``scratchbert.pretraining_data``)."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from scratchbert.pretraining_data import DatasetConfig
from scratchbert_components import make_component


def dataset(corpus: str, valid_corpus: str, tokenizer: Input[Artifact], max_seq_len: int, max_corpus_bytes: int,
            dupe_factor: int, num_proc: int, dataset: Output[Dataset], metrics: Output[Metrics]):
    """Cut a corpus into MLM+NSP examples (segment pairs, half of them random next) with the tokenizer.

    Args:
        tokenizer: The tokenizer folder from the tokenizer component.
        dataset: The train and validation examples (datasets save_to_disk), with their tokenizer and metrics.json.
        metrics: Example and token counts per split, mean length, random-next fraction, build time.
    """
    import os

    from scratchbert.pretraining_data import DatasetConfig, build_dataset

    config = DatasetConfig(corpus=corpus, valid_corpus=valid_corpus, tokenizer=tokenizer.path, out=dataset.path,
                           max_seq_len=max_seq_len, max_corpus_bytes=max_corpus_bytes, dupe_factor=dupe_factor,
                           num_proc=max(1, min(num_proc, os.cpu_count() or 1)))
    log_numbers(metrics, run_stage(build_dataset, config))


def build(image: str):
    """The dataset component for ``image``."""
    return make_component(dataset, image, DatasetConfig)
