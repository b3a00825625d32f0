"""KFP component: fine-tune on SQuAD v1.1 (``scratchbert.qa.finetune_qa``) and report EM/F1."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp.dsl import HTML, Input, Metrics, Model, Output

from components import REPORT_HELPERS, make_component


def qa_finetune(model: Input[Model], squad_train_uri: str, squad_dev_uri: str, max_steps: int,
                learning_rate: float, batch_size: int, max_seq_len: int, max_train_examples: int,
                max_eval_examples: int, qa_model: Output[Model], metrics: Output[Metrics], report: Output[HTML]):
    """Fine-tune the pretrained model for extractive question answering and score it (exact match, F1).

    Args:
        model: The pretrained model from the pretrain component.
        squad_train_uri: Training set: hf://rajpurkar/squad/train, s3://bucket/key.json, or a SQuAD v1.1 JSON path.
        squad_dev_uri: Evaluation set, same forms (hf://rajpurkar/squad/validation for the official dev set).
        max_steps: Optimizer steps; -1 trains 2 epochs.
        learning_rate: Peak learning rate.
        batch_size: Windows per batch.
        max_seq_len: Tokens per (question, context) window; 0 uses min(384, the model's positions). Overlap is a third of it.
        max_train_examples: Use only the first N training questions; 0 uses all.
        max_eval_examples: Score only the first N evaluation questions; 0 scores all.
        qa_model: The fine-tuned BertForQuestionAnswering with its tokenizer, metrics.json, predictions.json, log_history.json.
        metrics: exact_match, f1, example and window counts, train_loss, timings.
        report: An HTML page: EM/F1 and the other metrics, the training-loss curve and sample predictions.
    """
    import json
    import os

    from scratchbert.qa import QAConfig, finetune_qa

    if max_seq_len <= 0:
        with open(os.path.join(model.path, "config.json"), encoding="utf-8") as f:
            max_seq_len = min(384, json.load(f).get("max_position_embeddings", 384))
    config = QAConfig(model=model.path, train=squad_train_uri, eval=squad_dev_uri, out=qa_model.path,
                      max_seq_len=max_seq_len, doc_stride=max(1, max_seq_len // 3), max_steps=max_steps,
                      learning_rate=learning_rate, batch_size=batch_size, logging_steps=logging_interval(max_steps),
                      max_train_examples=max_train_examples or None, max_eval_examples=max_eval_examples or None)
    result = run_stage(finetune_qa, config)
    log_numbers(metrics, result)
    history = read_log_history(os.path.join(qa_model.path, "log_history.json"))
    with open(os.path.join(qa_model.path, "predictions.json"), encoding="utf-8") as f:
        predictions = sorted(json.load(f).items())[:10]
    sections = [
        ("SQuAD v1.1 scores", html_table([("exact_match", result["exact_match"]), ("f1", result["f1"])])),
        ("Training curve", svg_line_chart({"training loss": history_series(history, "loss")}, "QA loss", y_label="loss")),
        ("Sample predictions", html_table(predictions, header=("question id", "predicted answer"))),
        ("All metrics", html_table(sorted(result.items()))),
    ]
    with open(report.path, "w", encoding="utf-8") as f:
        f.write(html_page("scratchbert: SQuAD fine-tuning", sections))


def build(image: str):
    """The qa_finetune component for ``image`` (the GPU or the CPU image, per pipeline branch)."""
    return make_component(qa_finetune, image, REPORT_HELPERS)
