"""Model cards: the ``README.md`` with Hugging Face metadata that every saved model carries.

Written with ``huggingface_hub``'s :class:`~huggingface_hub.ModelCard` (so the metadata block
is the Hub's own format: ``pipeline_tag``, ``datasets``, ``license`` and, for a QA model, a
``model-index`` with the SQuAD exact match and F1), followed by a short text that says what
the model is, how to load it and how it was trained.
"""

from __future__ import annotations

import os
from pathlib import Path

from scratchbert import hub
from scratchbert.outputs import is_remote

LICENSE = "apache-2.0"  # the project's licence; the training data keeps its own (see the card's text)
CARD_FILE = "README.md"

_TASKS = {
    "fill-mask": ("fill-mask", "BertForPreTraining", "AutoModelForMaskedLM",
                  "a BERT model pretrained from scratch with masked-language-model and next-sentence-prediction heads"),
    "question-answering": ("question-answering", "BertForQuestionAnswering", "AutoModelForQuestionAnswering",
                           "a BERT model fine-tuned for extractive question answering (SQuAD v1.1's format)"),
}


def write_model_card(folder: str | os.PathLike, *, task: str, datasets: list[str], metrics: dict,
                     base_model: str | None = None, eval_data: str | None = None) -> Path:
    """Write ``folder/README.md`` for a model saved there and return its path.

    ``task``: ``fill-mask`` (a pretrained model) or ``question-answering``; ``datasets``: the
    data it was trained and scored on (``hf://`` addresses become Hub dataset ids, other
    sources are named in the text only); ``metrics``: the stage's metrics (a QA card lists
    ``exact_match`` and ``f1`` as evaluation results, on ``eval_data`` as it is named and with
    the number of questions scored: a claim no larger than the scoring). A ``base_model`` is
    named where it is an address; a local folder's path says nothing to the card's readers.
    """
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from scratchbert import __version__

    pipeline_tag, architecture, auto_class, what = _TASKS[task]
    hub_ids = sorted({i for i in map(hub.dataset_id, datasets) if i})
    eval_results = None
    if task == "question-answering" and "f1" in metrics:
        address = hub.parse(eval_data) if eval_data and hub.is_hub(eval_data) else None
        name = address.repo if address else Path(str(eval_data or "SQuAD-format file")).name
        questions = metrics.get("eval_examples")
        eval_results = [EvalResult(task_type="question-answering", dataset_type=address.repo if address else "json",
                                   dataset_name=f"{name}, {questions:,} questions" if questions else name,
                                   dataset_split=(address.split or "validation") if address else None,
                                   metric_type=key, metric_value=round(float(metrics[key]), 2))
                        for key in ("exact_match", "f1")]
    # no language: the pretraining text may be any (Russian, Thai), and the card would claim English
    data = ModelCardData(license=LICENSE, library_name="transformers", pipeline_tag=pipeline_tag,
                         tags=["bert", "scratchbert", task], datasets=hub_ids or None,
                         model_name=f"scratchbert-{task}" if eval_results else None, eval_results=eval_results)
    sources = "\n".join(f"- `{d}`" for d in datasets if d)
    licences = " (Wikipedia text and SQuAD are CC BY-SA)" if any(w in str(d).lower() for d in datasets for w in ("wiki", "squad")) else ""
    numbers = "\n".join(f"| {k} | {_fmt(v)} |" for k, v in sorted(metrics.items()) if isinstance(v, (int, float)))
    base = ""
    if base_model:
        base = (f"\nIt starts from `{base_model}`.\n" if is_remote(base_model) else
                f"\nIt starts from the model folder `{Path(str(base_model)).name}`.\n")
    content = f"""---
{data.to_yaml()}
---

# scratchbert {task} model

This is {what}, made by [scratchbert](https://github.com/scratchbert/scratchbert) {__version__}
(`{architecture}` weights).{base}

```python
from transformers import AutoTokenizer, {auto_class}

tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")
model = {auto_class}.from_pretrained("path/to/this/folder")
```

## Training and evaluation data

{sources or "- (not recorded)"}

The data keeps its own licence{licences}.

## Results

| metric | value |
|---|---|
{numbers}
{_answers(metrics) if task == "question-answering" else ""}"""
    path = Path(folder) / CARD_FILE
    ModelCard(content).save(path)
    return path


def _answers(metrics: dict) -> str:
    """How the scores' answers were chosen: other tools choose others from the same model."""
    windows = (f"windows of {metrics['max_seq_len']} tokens overlapping by {metrics['doc_stride']}, "
               if "max_seq_len" in metrics and "doc_stride" in metrics else "")
    return f"""
## Answers

The scores above come from scratchbert's answers: {windows}the best-scored span of whole words
among each question's best candidates, of at most the model's `qa_postprocess` tokens (its
config). `scratchbert ask` and the serving image answer the same way. transformers 4's
question-answering pipeline adds up the scores of spans with the same text and may choose
another answer.
"""


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def card_results(text: str) -> dict[str, float]:
    """The evaluation results of a model card's ``model-index`` (``{"exact_match": .., "f1": ..}``)."""
    from huggingface_hub import ModelCard

    data = ModelCard(text).data
    return {r.metric_type: r.metric_value for r in (data.eval_results or [])}
