"""KFP component: evaluate the pretrained model (``scratchbert.evaluation.evaluate_model``) and report."""

# No `from __future__ import annotations`: kfp reads the annotations as types.
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

from scratchbert.evaluation import EvalConfig
from scratchbert_components import REPORT_HELPERS, make_component


def evaluate(model: Input[Model], logs: Input[Artifact], dataset: Input[Dataset], max_examples: int,
             metrics: Output[Metrics], report: Output[HTML], evaluation: Output[Artifact]):
    """MLM accuracy, NSP accuracy and perplexity on the validation split, fill-mask examples, training curves.

    Args:
        model: The pretrained model from the pretrain component.
        logs: The pretraining run's records (its loss curve goes into the report).
        dataset: The dataset the model was trained on (its validation split is scored).
        metrics: mlm_accuracy, nsp_accuracy, perplexity, mlm_loss, nsp_loss, examples, masked_tokens, seconds.
        report: An HTML page: the metrics, the fill-mask top-5 table and the pretraining loss and learning-rate curves.
        evaluation: The evaluation folder: metrics.json, fill_mask.json and report.md.
    """
    import json
    import os

    from scratchbert.evaluation import EvalConfig, evaluate_model

    config = EvalConfig(model=model.path, dataset=dataset.path, out=evaluation.path, max_examples=max_examples)
    result = run_stage(evaluate_model, config)
    log_numbers(metrics, result)
    with open(os.path.join(evaluation.path, "fill_mask.json"), encoding="utf-8") as f:
        fills = json.load(f)["fill_mask"]
    with open(os.path.join(logs.path, "metrics.json"), encoding="utf-8") as f:
        training = json.load(f)
    history = read_log_history(os.path.join(logs.path, "log_history.json"))
    fill_rows = [(f["sentence"], ", ".join(f"{p['token']} ({p['score']:.2f})" for p in f["predictions"])) for f in fills]
    sections = [
        ("Validation metrics", html_table(sorted(result.items()))),
        ("Fill-mask, top 5", html_table(fill_rows, header=("sentence", "predictions"))),
        ("Pretraining curves",
         svg_line_chart({"training loss": history_series(history, "loss"),
                         "validation loss": history_series(history, "eval_loss")}, "MLM + NSP loss", y_label="loss")
         + svg_line_chart({"learning rate": history_series(history, "learning_rate")}, "Learning rate")),
        ("Pretraining run", html_table(sorted(training.items()))),
    ]
    with open(report.path, "w", encoding="utf-8") as f:
        f.write(html_page("scratchbert: pretraining evaluation", sections))


def build(image: str):
    """The evaluate component for ``image``."""
    return make_component(evaluate, image, EvalConfig, REPORT_HELPERS)
