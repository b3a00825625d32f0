"""KFP components of the dataset stage (``scratchbert.pretraining_data``): the part numbers of a
fan-out, one part's MLM+NSP examples, and the merge of the parts into one dataset."""

# No `from __future__ import annotations`: kfp reads the annotations as types.

from kfp.dsl import Artifact, Dataset, Input, Metrics, Output

from scratchbert.pretraining_data import DatasetConfig, DatasetMergeConfig
from scratchbert_components import make_component


def dataset(corpus: str, valid_corpus: str, tokenizer: Input[Artifact], max_seq_len: int, max_corpus_bytes: int,
            dupe_factor: int, num_proc: int, corpus_parts: int, corpus_part: int, dataset: Output[Dataset],
            metrics: Output[Metrics]):
    """Cut one part of a corpus into MLM+NSP examples (segment pairs, half of them random next) with the tokenizer.

    Args:
        tokenizer: The tokenizer folder from the tokenizer component.
        dataset: This part's train and validation examples (Arrow shards and their index), with the tokenizer and metrics.json.
        metrics: Example and token counts per split, mean length, random-next fraction, build time.
    """
    import os

    from scratchbert.pretraining_data import DatasetConfig, build_dataset

    config = DatasetConfig(corpus=corpus, valid_corpus=valid_corpus, tokenizer=tokenizer.path, out=dataset.path,
                           max_seq_len=max_seq_len, max_corpus_bytes=max_corpus_bytes, dupe_factor=dupe_factor,
                           num_proc=max(1, min(num_proc, os.cpu_count() or 1)), corpus_parts=corpus_parts,
                           corpus_part=corpus_part)
    log_numbers(metrics, run_stage(build_dataset, config))


def corpus_part_numbers(corpus_parts: int) -> list[int]:
    """The numbers 0 .. corpus_parts - 1 of the corpus parts, one dataset task each (what dsl.ParallelFor loops over)."""
    from scratchbert.pretraining_data import corpus_part_numbers as numbers

    return run_stage(numbers, corpus_parts)


def dataset_merge(parts: Input[list[Dataset]], dataset: Output[Dataset], metrics: Output[Metrics]):
    """Gather the parts built by the dataset tasks into one dataset: their shards under one index.

    Args:
        parts: Every part of the dataset (dsl.Collected over the dataset tasks).
        dataset: The whole dataset: Arrow shards and their index, the tokenizer, token counts and metrics.json.
        metrics: Example and token counts per split, mean length, random-next fraction.
    """
    from scratchbert.pretraining_data import merge_datasets

    log_numbers(metrics, run_stage(merge_datasets, parts=[part.path for part in parts], out=dataset.path))


def build(image: str):
    """The dataset component for ``image``."""
    return make_component(dataset, image, DatasetConfig)


def build_part_numbers(image: str):
    """The component that lists the corpus parts for ``image``."""
    return make_component(corpus_part_numbers, image, DatasetConfig)


def build_merge(image: str):
    """The component that merges the dataset parts for ``image``."""
    return make_component(dataset_merge, image, DatasetMergeConfig)
