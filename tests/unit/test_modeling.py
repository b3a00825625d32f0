"""scratchbert.modeling: presets, config validation, the sparse-head pretraining model and the QA model."""

from __future__ import annotations

import json

import pytest

from scratchbert.errors import ScratchBertError
from scratchbert.modeling import (
    PRESETS,
    build_config,
    check_tokenizer_matches,
    count_parameters,
    encoder_dtype,
    load_pretrained_config,
    masked_lm_loss,
    masked_positions,
    padding_attention_bias,
    pretraining_model_class,
    qa_model_class,
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


def _head_inputs(seed=0, rows=40, hidden=16, vocab=500, scale=1.0):
    import torch

    torch.manual_seed(seed)
    h = torch.randn(rows, hidden) * scale
    weight, bias = torch.randn(vocab, hidden), torch.randn(vocab)
    targets = torch.randint(0, vocab, (rows,))
    targets[torch.tensor([3, 17, 31, 32, 39]) % rows] = -100  # ignored rows, as the sparse head's padding rows
    return h, weight, bias, targets


def _loss_and_grads(loss_fn, h, weight, bias, targets, autocast=False):
    import torch

    leaves = [t.clone().requires_grad_() for t in (h, weight, bias)]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss, logits = loss_fn(*leaves, targets)
    loss.backward()
    return loss.detach(), logits.detach(), [t.grad for t in leaves]


def _reference(h, weight, bias, targets):
    """Hugging Face's path: the linear layer, fp32 logits, F.cross_entropy."""
    from torch.nn import functional as F

    logits = F.linear(h, weight, bias)
    return F.cross_entropy(logits.float(), targets), logits


def test_masked_lm_loss_matches_linear_and_cross_entropy_in_fp32():
    import torch

    inputs = _head_inputs()
    loss, logits, grads = _loss_and_grads(masked_lm_loss, *inputs)
    ref_loss, ref_logits, ref_grads = _loss_and_grads(_reference, *inputs)
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(logits, ref_logits)
    for name, ours, theirs in zip(("hidden", "weight", "bias"), grads, ref_grads):
        assert ours.dtype == torch.float32
        torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5, msg=name)


def test_masked_lm_loss_under_bf16_autocast_is_as_close_to_fp32_as_the_stock_path():
    import torch

    inputs = _head_inputs(seed=1, scale=2.0)  # peaked distributions: targets from near 0 to near 1
    exact_loss, _, exact = _loss_and_grads(_reference, *inputs)
    loss, logits, grads = _loss_and_grads(masked_lm_loss, *inputs, autocast=True)
    stock_loss, _, stock = _loss_and_grads(_reference, *inputs, autocast=True)
    assert logits.dtype == torch.bfloat16
    assert abs(loss - exact_loss) <= 2 * abs(stock_loss - exact_loss) + 1e-3
    for name, ours, theirs, truth in zip(("hidden", "weight", "bias"), grads, stock, exact):
        assert ours.dtype == torch.float32, name  # the casts stay outside: parameters' own dtype
        ours_err, stock_err = ((g - truth).norm() / truth.norm() for g in (ours, theirs))
        assert ours_err < 2e-2 and ours_err < 2 * stock_err + 1e-3, (name, ours_err, stock_err)


def test_masked_lm_loss_with_nothing_masked_is_zero_and_its_logits_still_backpropagate():
    import torch

    h, weight, bias, _ = _head_inputs(rows=8, vocab=50)
    loss, logits = masked_lm_loss(h, weight, bias.requires_grad_(), torch.full((8,), -100))
    assert loss.item() == 0.0
    (loss + logits[0, 1] * 2).backward()  # a gradient arriving through the logits too
    expected = torch.zeros(50)
    expected[1] = 2
    torch.testing.assert_close(bias.grad, expected)


@pytest.mark.parametrize("autocast", [False, True])
def test_masked_lm_loss_gradient_through_both_outputs_adds_up(autocast):
    import torch

    inputs = _head_inputs(seed=2)

    def both(fn):
        leaves = [t.clone().requires_grad_() for t in inputs[:3]]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            loss, logits = fn(*leaves, inputs[3])
            (loss + logits[:, :7].float().square().mean()).backward()
        return [t.grad for t in leaves]

    for ours, theirs in zip(both(masked_lm_loss), both(_reference)):
        if autocast:  # bf16 rounding, in different places
            assert (ours - theirs).norm() < 2e-2 * theirs.norm()
        else:
            torch.testing.assert_close(ours, theirs, atol=1e-6, rtol=1e-5)


def test_masked_lm_loss_backward_twice_gives_the_same_gradient():
    import torch

    h, weight, bias, targets = _head_inputs(seed=3)
    h.requires_grad_()
    loss, _ = masked_lm_loss(h, weight, bias, targets)
    loss.backward(retain_graph=True)  # nothing saved is modified in place
    first = h.grad.clone()
    loss.backward()
    torch.testing.assert_close(h.grad, 2 * first)


def test_masked_lm_loss_in_fp16_keeps_an_unlikely_target_finite():
    import torch

    h, weight, bias, targets = _head_inputs(seed=4, rows=8, vocab=50)
    targets[:] = 7
    bias = bias.clone()
    bias[7] = -25.0  # p(target) ~ e^-25: zero in fp16, fine in fp32
    loss, _ = masked_lm_loss(*(t.half() for t in (h, weight, bias)), targets)
    expected = torch.nn.functional.cross_entropy(torch.nn.functional.linear(h, weight, bias), targets)
    assert torch.isfinite(loss) and loss.item() == pytest.approx(expected.item(), rel=1e-2)


def test_training_mode_returns_no_logits_and_the_same_loss():
    import torch

    sparse, _, batch = _model_and_batch()
    with torch.no_grad():
        evaluated = sparse.eval()(**batch)
        trained = sparse.train()(**batch)
    assert trained.prediction_logits is None and evaluated.prediction_logits is not None
    assert trained.loss.item() == pytest.approx(evaluated.loss.item(), abs=1e-6)


def _op_recorder():
    """A dispatch mode that records every op as ``(name, first output)``, in ``.ops``."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Recorder(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            self.ops.append((func.overloadpacket.__name__, out[0] if isinstance(out, (tuple, list)) and out else out))
            return out

    return Recorder()


def test_rows_given_by_the_collator_give_the_same_loss_logits_and_gradients():
    import torch

    sparse, _, batch = _model_and_batch()
    given = dict(batch, mlm_positions=masked_positions(batch["labels"]))
    assert len(given["mlm_positions"]) == 32 and (batch["labels"] != -100).sum() < 32
    with torch.no_grad():
        a, b = sparse.eval()(**batch), sparse(**given)
    assert a.loss.item() == pytest.approx(b.loss.item(), abs=1e-6)
    torch.testing.assert_close(a.prediction_logits, b.prediction_logits)
    grads = []
    for inputs in (batch, given):
        sparse.zero_grad()
        sparse.train()(**inputs).loss.backward()
        grads.append([p.grad.clone() for p in sparse.parameters() if p.grad is not None])
    for g1, g2 in zip(*grads, strict=True):
        torch.testing.assert_close(g1, g2)


def test_a_training_step_with_the_collators_rows_has_no_data_dependent_op():
    """``nonzero`` and reading a tensor's value on the host (``.item()``, ``bool()``) stall a
    GPU's queue; with the rows from the collator and eager attention (``auto``'s choice on a GPU) the
    model has neither, padding or not. Without the rows it does, and so does SDPA with
    padding (transformers' own mask check, ``attention_mask.all()``)."""
    sparse, _, batch = _model_and_batch()
    assert (batch["attention_mask"] == 0).any()
    rows = dict(batch, mlm_positions=masked_positions(batch["labels"]))
    for attention, inputs, syncs in (("eager", rows, False), ("eager", batch, True), ("sdpa", rows, True)):
        sparse.set_attn_implementation(attention)
        with _op_recorder() as recorded:
            sparse.train()(**inputs).loss.backward()
        data_dependent = {name for name, _ in recorded.ops} & {"nonzero", "_local_scalar_dense", "is_nonzero", "item"}
        assert bool(data_dependent) == syncs, (attention, data_dependent)


def test_the_padding_bias_gives_the_encoder_what_transformers_mask_gives_it():
    """Eager attention with the model's own ``(batch, 1, 1, length)`` bias: the same encoder
    output as with transformers' mask made from the 2D mask, bit for bit, in fp32 and under
    bf16 autocast (where both are bf16)."""
    import torch

    sparse, _, batch = _model_and_batch(seed=3)
    sparse.set_attn_implementation("eager")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    for autocast in (False, True):
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            bias = padding_attention_bias(mask, encoder_dtype(sparse.bert, ids.device))
            theirs = sparse.bert(ids, attention_mask=mask).last_hidden_state
            ours = sparse.bert(ids, attention_mask=bias).last_hidden_state
        assert bias.dtype == (torch.bfloat16 if autocast else torch.float32) and bias.shape == (6, 1, 1, 32)
        assert ours.dtype == theirs.dtype and torch.equal(ours, theirs), autocast
    assert not torch.equal(ours[3:], sparse.bert(ids, attention_mask=torch.ones_like(mask)).last_hidden_state[3:])


def test_under_bf16_autocast_the_encoder_runs_in_bf16_from_the_embeddings_on():
    """The residual stream, every encoder LayerNorm and the attention softmax stay bf16 (only
    the embeddings' own LayerNorm runs in fp32, on fp32 lookups); the stock model, without
    the hook, runs its LayerNorms and attention softmax in fp32. The loss is as close to the
    fp32 loss as the stock model's under autocast."""
    import torch

    sparse, stock, batch = _model_and_batch(seed=2)
    for model in (sparse, stock):
        model.set_attn_implementation("eager")  # `auto`'s choice under bf16: its softmax is an op of its own
    with torch.no_grad():
        exact = sparse(**batch).loss.item()
    losses = {}
    for name, model in (("ours", sparse), ("stock", stock)):
        with _op_recorder() as recorded, torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model.train()(**batch).loss
        loss.backward()
        losses[name] = loss.item()
        norms = [out.dtype for op, out in recorded.ops if op == "native_layer_norm"]
        softmaxes = [out.dtype for op, out in recorded.ops if op == "_softmax" and out.dim() == 4]  # attention's
        layers = sparse.config.num_hidden_layers
        assert len(softmaxes) == layers and len(norms) >= 2 * layers + 1
        fp32 = norms.count(torch.float32) + softmaxes.count(torch.float32)
        if name == "ours":
            assert norms[0] == torch.float32 and fp32 == 1, (norms, softmaxes)
        else:
            assert fp32 > 2 * layers, (norms, softmaxes)
    assert abs(losses["ours"] - exact) <= 2 * abs(losses["stock"] - exact) + 2e-2, (losses, exact)


def test_every_token_labelled_still_gives_the_stock_loss():
    import torch

    sparse, _, batch = _model_and_batch()
    batch["labels"] = batch["input_ids"].clone()
    assert masked_positions(batch["labels"]) is None
    with torch.no_grad():
        out = sparse.eval()(**batch)
        logits = sparse.cls.predictions(sparse.bert(batch["input_ids"], attention_mask=batch["attention_mask"],
                                                    token_type_ids=batch["token_type_ids"])[0])
    expected = torch.nn.functional.cross_entropy(logits.reshape(-1, 300), batch["labels"].reshape(-1))
    expected = expected + torch.nn.functional.cross_entropy(out.seq_relationship_logits, batch["next_sentence_label"])
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert out.prediction_logits.shape == (6 * 32, 300)


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


def test_qa_class_is_the_stock_qa_model_with_the_fast_path(tmp_path):
    """The QA class loads a pretrained folder as the stock class does; with eager attention it
    gives the stock logits and loss bit for bit in fp32, runs its LayerNorms and attention in
    bf16 under autocast (the stock class: fp32), stays as close to the fp32 loss, and saves a
    checkpoint the stock class loads as its own."""
    import torch
    from transformers import BertForQuestionAnswering

    sparse, _, batch = _model_and_batch(seed=4)
    sparse.save_pretrained(tmp_path / "pretrained")
    torch.manual_seed(0)
    ours = qa_model_class().from_pretrained(tmp_path / "pretrained", attn_implementation="eager")
    stock = BertForQuestionAnswering.from_pretrained(tmp_path / "pretrained", attn_implementation="eager")
    stock.load_state_dict(ours.state_dict())  # the same new QA head in both
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    inputs.update(start_positions=torch.tensor([1, 2, 3, 4, 5, 6]), end_positions=torch.tensor([2, 3, 9, 4, 7, 8]))
    with torch.no_grad():
        exact, theirs = ours.eval()(**inputs), stock.eval()(**inputs)
    assert torch.equal(exact.start_logits, theirs.start_logits) and torch.equal(exact.loss, theirs.loss)
    dtypes, losses = {}, {}
    for name, model in (("ours", ours), ("stock", stock)):
        with _op_recorder() as recorded, torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            losses[name] = model(**inputs).loss.item()
        dtypes[name] = {out.dtype for op, out in recorded.ops if op in ("native_layer_norm", "_softmax")}
    assert dtypes == {"ours": {torch.float32, torch.bfloat16}, "stock": {torch.float32}}, dtypes  # ours: fp32 embeddings' norm only
    assert abs(losses["ours"] - exact.loss.item()) <= 2 * abs(losses["stock"] - exact.loss.item()) + 2e-2, losses

    ours.save_pretrained(tmp_path / "qa")
    assert json.loads((tmp_path / "qa" / "config.json").read_text())["architectures"] == ["BertForQuestionAnswering"]
    reloaded, info = BertForQuestionAnswering.from_pretrained(tmp_path / "qa", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    torch.testing.assert_close(reloaded.qa_outputs.weight, ours.qa_outputs.weight)
