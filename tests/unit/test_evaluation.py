"""scratchbert.evaluation: fixed-mask MLM/NSP metrics, perplexity, the fill-mask report."""

from __future__ import annotations

import json
import math

import pytest

from scratchbert.errors import ScratchBertError
from scratchbert.evaluation import FILL_MASK_SENTENCES, EvalConfig, evaluate_model


@pytest.fixture(scope="module")
def evaluated(pretrained_nano, built_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "run1"
    metrics = evaluate_model(EvalConfig(model=str(pretrained_nano), dataset=str(built_dataset), out=str(out),
                                        batch_size=64))
    return out, metrics


def test_two_runs_give_identical_metrics(evaluated, pretrained_nano, built_dataset, tmp_path):
    out, first = evaluated
    second = evaluate_model(EvalConfig(model=str(pretrained_nano), dataset=str(built_dataset),
                                       out=str(tmp_path / "run2"), batch_size=64))
    first, second = dict(first), dict(second)
    first.pop("seconds"), second.pop("seconds")
    assert first == second
    assert json.loads((out / "metrics.json").read_text())["mlm_loss"] == first["mlm_loss"]


def test_metrics_are_consistent(evaluated, built_dataset):
    _, m = evaluated
    assert m["perplexity"] == pytest.approx(math.exp(m["mlm_loss"]), rel=1e-9)
    assert 0 <= m["mlm_accuracy"] <= 1 and 0 <= m["nsp_accuracy"] <= 1 and m["nsp_loss"] > 0
    stats = json.loads((built_dataset / "metrics.json").read_text())
    assert m["examples"] == stats["validation_examples"]
    # 15% of the non-special tokens are masked; each example has 3 special tokens
    eligible = stats["validation_tokens"] - 3 * stats["validation_examples"]
    assert 0.13 < m["masked_tokens"] / eligible < 0.17


def test_metrics_agree_with_the_stock_model_on_the_same_masks(pretrained_nano, built_dataset, tmp_path):
    """Accuracy and loss recomputed with transformers' BertForPreTraining (full logits) match."""
    import torch
    from torch.nn import functional as F
    from transformers import BertForPreTraining

    from scratchbert.pretraining_data import MlmNspCollator, load_pretraining_dataset
    from scratchbert.tokenizer import load_tokenizer

    m = evaluate_model(EvalConfig(model=str(pretrained_nano), dataset=str(built_dataset), out=str(tmp_path / "e"),
                                  batch_size=50, max_examples=150, seed=3))
    tok = load_tokenizer(pretrained_nano)
    stock = BertForPreTraining.from_pretrained(pretrained_nano).eval()
    data = load_pretraining_dataset(built_dataset)[0]["validation"]
    collator = MlmNspCollator(tok, seed=3)
    correct = total = nsp_correct = 0
    loss = 0.0
    with torch.no_grad():
        for start in range(0, 150, 50):
            batch = collator([data[i] for i in range(start, start + 50)])
            out = stock(**{k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")})
            masked = batch["labels"] != -100
            logits, labels = out.prediction_logits[masked], batch["labels"][masked]
            loss += F.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(-1) == labels).sum().item()
            total += labels.numel()
            nsp_correct += (out.seq_relationship_logits.argmax(-1) == batch["next_sentence_label"]).sum().item()
    assert m["examples"] == 150 and m["masked_tokens"] == total
    assert m["mlm_accuracy"] == pytest.approx(correct / total)
    assert m["mlm_loss"] == pytest.approx(loss / total, rel=1e-4)
    assert m["nsp_accuracy"] == pytest.approx(nsp_correct / 150)


def test_report_and_fill_mask_files(evaluated):
    out, m = evaluated
    report = (out / "report.md").read_text()
    assert "I am [MASK] at math." in report
    assert f"| mlm_accuracy | {m['mlm_accuracy']:.4f} |" in report
    fills = json.loads((out / "fill_mask.json").read_text())["fill_mask"]
    assert [f["sentence"] for f in fills] == list(FILL_MASK_SENTENCES)
    for f in fills:
        scores = [p["score"] for p in f["predictions"]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True) and 0 < sum(scores) <= 1.0 + 1e-6
        assert all(p["token"] for p in f["predictions"])


def test_custom_fill_mask_sentences(pretrained_nano, built_dataset, tmp_path):
    out = tmp_path / "e"
    evaluate_model(EvalConfig(model=str(pretrained_nano), dataset=str(built_dataset), out=str(out), max_examples=8,
                              fill_mask="The town is known for its [MASK]. | [MASK] was founded in 1200."))
    fills = json.loads((out / "fill_mask.json").read_text())["fill_mask"]
    assert [f["sentence"] for f in fills] == ["The town is known for its [MASK].", "[MASK] was founded in 1200."]
    with pytest.raises(ScratchBertError, match="has no \\[MASK\\]"):
        evaluate_model(EvalConfig(model=str(pretrained_nano), dataset=str(built_dataset), out=str(tmp_path / "f"),
                                  max_examples=8, fill_mask="no mask here"))
    assert not (tmp_path / "f").exists()


def test_a_dataset_built_with_another_tokenizer_is_an_error(pretrained_nano, other_dataset, tmp_path):
    with pytest.raises(ScratchBertError, match="different tokenizer"):
        evaluate_model(EvalConfig(model=str(pretrained_nano), dataset=str(other_dataset), out=str(tmp_path / "e")))
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("kw, words", [
    ({"split": "test"}, "has no split 'test'"),
    ({"model": "{dataset}"}, "is not a model folder"),
])
def test_bad_inputs_are_errors(pretrained_nano, built_dataset, tmp_path, kw, words):
    args = {"model": str(pretrained_nano), "dataset": str(built_dataset), "out": str(tmp_path / "e"), **kw}
    args = {k: v.format(dataset=built_dataset) for k, v in args.items()}
    with pytest.raises(ScratchBertError, match=words):
        evaluate_model(EvalConfig(**args))
    assert not (tmp_path / "e").exists()


def test_examples_or_sentences_longer_than_the_models_positions_are_refused_first(pretrained_nano, built_dataset, tmp_path):
    """They failed with an internal shape error (the sentences after the whole evaluation)."""
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining

    short = tmp_path / "short"
    config = BertConfig.from_pretrained(pretrained_nano)
    config.max_position_embeddings = 32  # the dataset's examples are up to 64 tokens
    BertForPreTraining(config).save_pretrained(short)
    AutoTokenizer.from_pretrained(pretrained_nano).save_pretrained(short)
    with pytest.raises(ScratchBertError, match=r"holds examples of up to 64 tokens, but model .*short has 32 positions; "
                                               r"evaluate on a dataset built with --max-seq-len 32 or less"):
        evaluate_model(EvalConfig(model=str(short), dataset=str(built_dataset), out=str(tmp_path / "e")))
    long_sentence = "the town " * 300 + "is known for its [MASK]."
    with pytest.raises(ScratchBertError, match=r"fill-mask sentence 'the town .* is 60\d tokens long, more than the 512 positions"):
        evaluate_model(EvalConfig(model=str(pretrained_nano), dataset=str(built_dataset), out=str(tmp_path / "e"),
                                  fill_mask=long_sentence))
    assert not (tmp_path / "e").exists()


def test_a_qa_model_is_refused(pretrained_nano, built_dataset, tmp_path):
    """A fine-tuned QA model has no masked-LM or NSP heads: they would be scored at random."""
    from transformers import AutoTokenizer, BertForQuestionAnswering

    qa = tmp_path / "qa"
    BertForQuestionAnswering.from_pretrained(pretrained_nano).save_pretrained(qa)
    AutoTokenizer.from_pretrained(pretrained_nano).save_pretrained(qa)
    with pytest.raises(ScratchBertError, match="BertForQuestionAnswering model without a trained pretraining head"):
        evaluate_model(EvalConfig(model=str(qa), dataset=str(built_dataset), out=str(tmp_path / "e")))
    assert not (tmp_path / "e").exists()


@pytest.mark.parametrize("kw, words", [
    ({"batch_size": 0}, "--batch-size 0 must be at least 1"),
    ({"max_examples": -1}, "--max-examples -1 must not be negative"),
    ({"mlm_probability": 1.5}, "--mlm-probability 1.5 must lie in"),
    ({"out": "{model}"}, "is the input"),
    ({"out": "{model}/eval"}, "is inside the input"),
])
def test_bad_settings_fail_before_any_work(pretrained_nano, built_dataset, tmp_path, kw, words):
    """`evaluate --model M --out M` used to delete the model's weights."""
    before = sorted((p.name, p.stat().st_size) for p in pretrained_nano.iterdir())
    args = {"model": str(pretrained_nano), "dataset": str(built_dataset), "out": str(tmp_path / "e"), **kw}
    args = {k: v.format(model=pretrained_nano) if isinstance(v, str) else v for k, v in args.items()}
    for overwrite in (False, True):
        with pytest.raises(ScratchBertError, match=words):
            evaluate_model(EvalConfig(**args, overwrite=overwrite))
    assert sorted((p.name, p.stat().st_size) for p in pretrained_nano.iterdir()) == before
