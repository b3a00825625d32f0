"""KFP component: build the masked-LM + next-sentence dataset (``scratchbert.pretraining_data``)."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from components import make_component


def dataset(corpus_uri: str, valid_corpus_uri: str, tokenizer: Input[Artifact], max_seq_len: int,
            max_corpus_bytes: int, dupe_factor: int, num_proc: int, dataset: Output[Dataset], metrics: Output[Metrics]):
    """Cut a corpus into MLM+NSP examples (segment pairs, half of them random next) with the tokenizer.

    Args:
        corpus_uri: The training corpus, as for the tokenizer component.
        valid_corpus_uri: A separate validation corpus; empty holds out 2% of the corpus documents instead.
        tokenizer: The tokenizer folder from the tokenizer component.
        max_seq_len: Tokens per example, [CLS] and [SEP]s included.
        max_corpus_bytes: Use only the first N bytes of the corpus; 0 uses all of it.
        dupe_factor: Times each training document is cut into examples (new splits and pairings); more than 1 for a small corpus trained on for several epochs.
        num_proc: Worker processes for the map (at most the cores the task sees).
        dataset: A datasets.DatasetDict (train, validation) saved with save_to_disk, plus the tokenizer and metrics.json.
        metrics: Example and token counts per split, mean length, random-next fraction, build time.
    """
    import os

    from scratchbert.pretraining_data import DatasetConfig, build_dataset

    config = DatasetConfig(corpus=corpus_uri, tokenizer=tokenizer.path, out=dataset.path, max_seq_len=max_seq_len,
                           valid_corpus=valid_corpus_uri or None, max_bytes=max_corpus_bytes or None, dupe_factor=dupe_factor,
                           num_proc=max(1, min(num_proc, os.cpu_count() or 1)))
    log_numbers(metrics, run_stage(build_dataset, config))


def build(image: str):
    """The dataset component for ``image``."""
    return make_component(dataset, image)
