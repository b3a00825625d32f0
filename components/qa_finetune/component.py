"""KFP component: fine-tune on SQuAD v1.1 (``scratchbert.qa.finetune_qa``) and report EM/F1."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp.dsl import HTML, Artifact, Input, Metrics, Model, Output

from scratchbert.qa import QAConfig
from scratchbert_components import REPORT_HELPERS, make_component


def qa_finetune(model: Input[Model], squad_train: str, squad_dev: str, max_steps: int, time_budget_minutes: float,
                epochs: float, learning_rate: float,
                batch_size: int, max_seq_len: int, max_train_examples: int, max_eval_examples: int,
                qa_model: Output[Model], logs: Output[Artifact], metrics: Output[Metrics], report: Output[HTML]):
    """Fine-tune the pretrained model for extractive question answering and score it (exact match, F1).

    Args:
        model: The pretrained model from the pretrain component.
        qa_model: The fine-tuned BertForQuestionAnswering: weights, config, tokenizer and a model card with EM/F1.
        logs: The run's records: metrics.json, predictions.json, log_history.json, qa_config.json, TensorBoard runs.
        metrics: exact_match, f1, example and window counts, train_loss, timings.
        report: An HTML page: EM/F1 and the other metrics, the training-loss curve and sample predictions.
    """
    import json
    import os

    from scratchbert.qa import QAConfig, finetune_qa

    config = QAConfig(model=model.path, squad_train=squad_train, squad_dev=squad_dev, out=qa_model.path,
                      logs=logs.path, max_seq_len=max_seq_len, max_steps=max_steps,
                      time_budget_minutes=time_budget_minutes, epochs=epochs, learning_rate=learning_rate,
                      batch_size=batch_size, logging_steps=logging_interval(max_steps),
                      max_train_examples=max_train_examples, max_eval_examples=max_eval_examples)
    result = run_stage(finetune_qa, config)
    log_numbers(metrics, result)
    history = read_log_history(os.path.join(logs.path, "log_history.json"))
    with open(os.path.join(logs.path, "predictions.json"), encoding="utf-8") as f:
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
    return make_component(qa_finetune, image, QAConfig, REPORT_HELPERS)
