"""scratchbert.modeling: presets, config validation, and the sparse-head pretraining model."""

from __future__ import annotations

import pytest

from scratchbert.errors import ScratchBertError
from scratchbert.modeling import (
    PRESETS,
    build_config,
    check_tokenizer_matches,
    count_parameters,
    load_pretrained_config,
    masked_lm_loss,
    pretraining_model_class,
    set_mlm_bias_to_unigram,
)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_gives_a_valid_config(preset):
    size = PRESETS[preset]
    config = build_config(preset, vocab_size=1000, max_seq_len=128)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (
        size.hidden_size, size.num_hidden_layers, size.num_attention_heads, size.intermediate_size)
    assert config.vocab_size == 1000 and config.max_position_embeddings >= 128
    assert config.hidden_size % config.num_attention_heads == 0


def test_base_preset_is_bert_base():
    model = pretraining_model_class()(build_config("base", vocab_size=30522, max_seq_len=512))
    # BERT-base with its pretraining heads: 110M parameters
    assert 109e6 < count_parameters(model) < 111e6


def test_overrides_win_over_the_preset():
    config = build_config("tiny", 500, 64, hidden_size=96, num_hidden_layers=3, num_attention_heads=3,
                          max_position_embeddings=64, dropout=0.0)
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads) == (96, 3, 3)
    assert config.intermediate_size == 4 * 96  # follows an overridden hidden size
    assert config.max_position_embeddings == 64 and config.hidden_dropout_prob == 0.0


@pytest.mark.parametrize("kw, words", [
    ({"preset": "huge"}, "unknown preset 'huge'"),
    ({"hidden_size": 100, "num_attention_heads": 3}, "not divisible by 3 attention heads"),
    ({"max_seq_len": 1024, "max_position_embeddings": 512}, "shorter than the sequence length 1024"),
    ({"dropout": 1.0}, "dropout"),
    ({"num_hidden_layers": -1}, "positive"),
])
def test_bad_sizes_are_errors(kw, words):
    args = {"preset": "nano", "vocab_size": 100, "max_seq_len": 64, **kw}
    with pytest.raises(ScratchBertError, match=words):
        build_config(**args)


def test_tokenizer_and_model_must_agree(trained_tokenizer, tmp_path):
    from scratchbert.tokenizer import load_tokenizer

    tok = load_tokenizer(trained_tokenizer)
    check_tokenizer_matches(build_config("nano", len(tok), 64), tok, "here")
    with pytest.raises(ScratchBertError, match="tokenizer has 2000 tokens but the model at here expects 1999"):
        check_tokenizer_matches(build_config("nano", 1999, 64), tok, "here")
    with pytest.raises(ScratchBertError, match="is not a model folder"):
        load_pretrained_config(tmp_path)


def _model_and_batch(seed=0):
    import torch
    from transformers import BertForPreTraining

    torch.manual_seed(seed)
    config = build_config("nano", vocab_size=300, max_seq_len=32, dropout=0.0)
    sparse = pretraining_model_class()(config).eval()
    stock = BertForPreTraining(config).eval()
    stock.load_state_dict(sparse.state_dict())
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, 300, (6, 32), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[3:, 20:] = 0
    labels = torch.full_like(input_ids, -100)
    chosen = (torch.rand(input_ids.shape, generator=g) < 0.15) & attention_mask.bool()
    labels[chosen] = input_ids[chosen]
    batch = {"input_ids": input_ids, "attention_mask": attention_mask,
             "token_type_ids": (torch.arange(32) >= 16).long().expand(6, 32).clone(),
             "labels": labels, "next_sentence_label": torch.tensor([0, 1, 0, 1, 1, 0])}
    return sparse, stock, batch


def test_sparse_head_gives_the_stock_loss_and_logits():
    import torch

    sparse, stock, batch = _model_and_batch()
    masked = batch["labels"] != -100
    assert 5 < masked.sum() < masked.numel() // 2
    with torch.no_grad():
        ours, theirs = sparse(**batch), stock(**batch)
    assert ours.loss.item() == pytest.approx(theirs.loss.item(), abs=1e-5)
    assert ours.prediction_logits.shape == (masked.sum(), 300)
    torch.testing.assert_close(ours.prediction_logits, theirs.prediction_logits[masked], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.seq_relationship_logits, theirs.seq_relationship_logits)
    # MLM only (no NSP labels): the stock model returns no loss then, so compare with its logits
    batch.pop("next_sentence_label")
    with torch.no_grad():
        expected = torch.nn.functional.cross_entropy(theirs.prediction_logits[masked], batch["labels"][masked])
        assert sparse(**batch).loss.item() == pytest.approx(expected.item(), abs=1e-5)


def test_sparse_head_gradients_match_the_stock_model():
    import torch

    sparse, stock, batch = _model_and_batch(seed=1)
    sparse(**batch).loss.backward()
    stock(**batch).loss.backward()
    theirs = dict(stock.named_parameters())
    for name, p in sparse.named_parameters():
        torch.testing.assert_close(p.grad, theirs[name].grad, atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.parametrize("dtype_name", ["float32", "bfloat16"])
def test_masked_lm_loss_matches_torch_cross_entropy(dtype_name):
    import torch
    from torch.nn import functional as F

    dtype = getattr(torch, dtype_name)
    torch.manual_seed(0)
    base = (torch.randn(40, 500) * 4).to(dtype)
    targets = torch.randint(0, 500, (40,))
    targets[[3, 17, 31, 32, 39]] = -100  # ignored rows, as the sparse head's padding rows
    ours_in, theirs_in = base.clone().requires_grad_(), base.clone().requires_grad_()

    loss, logits = masked_lm_loss(ours_in, targets)
    expected = F.cross_entropy(theirs_in.float(), targets)
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, theirs_in.float())
    torch.testing.assert_close(loss, expected)
    loss.backward()
    expected.backward()
    assert ours_in.grad.dtype == dtype
    torch.testing.assert_close(ours_in.grad, theirs_in.grad, atol=1e-6, rtol=1e-5)
    assert ours_in.grad[[3, 17, 31, 32, 39]].abs().sum() == 0


def test_masked_lm_loss_with_nothing_masked_is_zero_and_its_logits_still_backpropagate():
    import torch

    x = torch.randn(8, 50, requires_grad=True)
    loss, logits = masked_lm_loss(x, torch.full((8,), -100))
    assert loss.item() == 0.0
    (loss + logits[0, 1] * 2).backward()  # a gradient arriving through the logits too
    expected = torch.zeros(8, 50)
    expected[0, 1] = 2
    torch.testing.assert_close(x.grad, expected)


def test_masked_lm_loss_refuses_a_second_backward_instead_of_a_wrong_gradient():
    import torch

    x = torch.randn(4, 10, requires_grad=True)
    loss, _ = masked_lm_loss(x, torch.tensor([1, 2, -100, 3]))
    loss.backward(retain_graph=True)  # the backward reuses its saved log-probabilities in place
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        loss.backward()


def test_unigram_bias_starts_a_fresh_model_at_the_word_frequencies():
    import torch
    from torch.nn import functional as F

    torch.manual_seed(0)
    vocab = 200
    counts = (5000 / torch.arange(1, vocab + 1)).long()  # Zipf-like word frequencies
    counts[:3] = 0  # special tokens: never targets
    model = pretraining_model_class()(build_config("nano", vocab, 32, dropout=0.0))
    set_mlm_bias_to_unigram(model, counts.numpy())
    head = model.cls.predictions
    assert head.decoder.bias is head.bias  # still the tied bias the checkpoint saves
    # an untrained model now predicts (about) the smoothed unigram distribution ...
    smoothed = (counts + 1.0) / (counts + 1.0).sum()
    torch.testing.assert_close(head.bias.double().softmax(0), smoothed.double(), rtol=1e-5, atol=1e-7)
    # ... so its loss on tokens drawn from that distribution starts near the unigram entropy, not ln(vocab)
    targets = torch.multinomial(smoothed, 64 * 8, replacement=True).view(8, 64)
    ids = torch.randint(3, vocab, (8, 64))
    with torch.no_grad():
        logits = model(input_ids=ids).prediction_logits
    loss = F.cross_entropy(logits.reshape(-1, vocab), targets.reshape(-1)).item()
    entropy = -(smoothed * smoothed.log()).sum().item()
    assert abs(loss - entropy) < 0.3 < torch.log(torch.tensor(vocab)).item() - entropy


def test_without_labels_the_full_logits_are_returned():
    import torch

    sparse, stock, batch = _model_and_batch()
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        ours, theirs = sparse(**inputs), stock(**inputs)
    assert ours.loss is None and ours.prediction_logits.shape == (6, 32, 300)
    torch.testing.assert_close(ours.prediction_logits, theirs.prediction_logits)


def test_saved_model_loads_in_the_stock_bert_classes(tmp_path):
    import torch
    from transformers import BertForMaskedLM, BertForPreTraining, BertForQuestionAnswering

    sparse, _, batch = _model_and_batch()
    sparse.save_pretrained(tmp_path)
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        expected = sparse(**inputs).prediction_logits

    pre, info = BertForPreTraining.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    mlm, info = BertForMaskedLM.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["missing_keys"]  # the pooler and NSP head are simply not used
    qa, info = BertForQuestionAnswering.from_pretrained(tmp_path, output_loading_info=True)
    assert all(k.startswith("qa_outputs") for k in info["missing_keys"]) and info["missing_keys"]
    with torch.no_grad():
        torch.testing.assert_close(pre.eval()(**inputs).prediction_logits, expected)
        torch.testing.assert_close(mlm.eval()(**inputs).logits, expected)
    torch.testing.assert_close(qa.bert.embeddings.word_embeddings.weight, sparse.bert.embeddings.word_embeddings.weight)
