"""Model sizes, config validation, and the pretraining model.

:class:`ScratchBertForPreTraining` is Hugging Face's ``BertForPreTraining`` with one change
in ``forward``: when labels are given, the vocabulary projection runs only at the masked
positions (a *sparse prediction head*, as in Cramming and MosaicBERT). With 15% masking
this skips ~85% of the largest matmul of a small model and its softmax. The weights and the
saved checkpoint are exactly ``BertForPreTraining``'s, so ``BertForPreTraining``,
``BertForMaskedLM`` and ``BertForQuestionAnswering`` all load what it saves.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from scratchbert.errors import ScratchBertError


@dataclass(frozen=True)
class Size:
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int


# nano: for tests; tiny/mini/small/medium: Turc et al. 2019 ("Well-Read Students"); base: BERT-base.
PRESETS: dict[str, Size] = {
    "nano": Size(64, 2, 2, 256),
    "tiny": Size(128, 2, 2, 512),
    "mini": Size(256, 4, 4, 1024),
    "small": Size(512, 4, 8, 2048),
    "medium": Size(512, 8, 8, 2048),
    "base": Size(768, 12, 12, 3072),
}


def build_config(preset: str, vocab_size: int, max_seq_len: int, *, hidden_size: int | None = None,
                 num_hidden_layers: int | None = None, num_attention_heads: int | None = None,
                 intermediate_size: int | None = None, max_position_embeddings: int | None = None,
                 dropout: float = 0.1, attn_implementation: str = "sdpa"):
    """A validated ``BertConfig`` from a preset, with any size overridden explicitly."""
    from transformers import BertConfig

    if preset not in PRESETS:
        raise ScratchBertError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    size = PRESETS[preset]
    hidden = hidden_size or size.hidden_size
    layers = num_hidden_layers or size.num_hidden_layers
    heads = num_attention_heads or size.num_attention_heads
    inter = intermediate_size or (4 * hidden if hidden_size and not intermediate_size else size.intermediate_size)
    positions = max_position_embeddings or max(512, max_seq_len)
    if min(hidden, layers, heads, inter, vocab_size) <= 0:
        raise ScratchBertError("model sizes must be positive integers")
    if hidden % heads:
        raise ScratchBertError(f"hidden size {hidden} is not divisible by {heads} attention heads; pick a head count that divides it (e.g. {hidden // 64 or 1})")
    if positions < max_seq_len:
        raise ScratchBertError(f"max position embeddings {positions} is shorter than the sequence length {max_seq_len}; raise --max-position-embeddings")
    if not 0 <= dropout < 1:
        raise ScratchBertError(f"dropout {dropout} must lie in [0, 1)")
    config = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=heads, intermediate_size=inter,
                        max_position_embeddings=positions, hidden_dropout_prob=dropout,
                        attention_probs_dropout_prob=dropout, architectures=["BertForPreTraining"])
    config._attn_implementation = attn_implementation
    return config


def check_tokenizer_matches(config, tokenizer, where: str) -> None:
    """A model and a tokenizer must agree on the vocabulary size."""
    if config.vocab_size != len(tokenizer):
        raise ScratchBertError(f"the tokenizer has {len(tokenizer)} tokens but the model at {where} expects {config.vocab_size}; use the tokenizer the model was trained with")


def count_parameters(model, exclude_embeddings: bool = False) -> int:
    n = sum(p.numel() for p in model.parameters())
    if exclude_embeddings:
        n -= sum(p.numel() for name, p in model.named_parameters() if "embeddings" in name)
    return n


def flops_per_token(config, seq_len: int, mlm_fraction: float = 0.15, sparse_head: bool = True) -> float:
    """Training FLOPs per token (forward + backward = 3x forward; 2 FLOPs per multiply-add)."""
    h, L, i, v = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    per_layer = 2 * (4 * h * h + 2 * h * i) + 2 * 2 * seq_len * h  # projections + MLP + attention scores/values
    head = 2 * (h * h + h * v) * (mlm_fraction if sparse_head else 1.0)
    return 3.0 * (L * per_layer + head)


# The sparse head computes logits for a multiple of this many rows (see its forward).
PREDICTION_ROWS = 32


@functools.cache  # built on first use: importing torch is slow
def pretraining_model_class():
    """The sparse-head pretraining model class."""
    from torch.nn import functional as F
    from transformers import BertForPreTraining
    from transformers.models.bert.modeling_bert import BertForPreTrainingOutput

    class ScratchBertForPreTraining(BertForPreTraining):
        """``BertForPreTraining`` whose MLM logits are computed at masked positions only.

        With ``labels``, ``prediction_logits`` has shape ``(n_masked, vocab)`` in the
        row-major order of ``labels != -100`` (``None`` in training mode: a training step
        needs only the loss); without, it is the usual full tensor.
        """

        def save_pretrained(self, save_directory, *args, **kwargs):
            super().save_pretrained(save_directory, *args, **kwargs)
            # transformers writes the saving class's name into `architectures`, a class only this
            # package has; the weights are BertForPreTraining's, so the config says so for tools
            # that pick a class from it (a config file of a few hundred bytes, written again).
            if kwargs.get("is_main_process", True):
                self.config.architectures = ["BertForPreTraining"]
                self.config.save_pretrained(save_directory)

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                    inputs_embeds=None, labels=None, next_sentence_label=None, **kwargs):
            outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True)
            sequence_output, pooled_output = outputs[0], outputs[1]
            nsp_logits = self.cls.seq_relationship(pooled_output)
            if labels is None:
                return BertForPreTrainingOutput(prediction_logits=self.cls.predictions(sequence_output),
                                                seq_relationship_logits=nsp_logits)
            flat_labels = labels.reshape(-1)
            where = (flat_labels != -100).nonzero().squeeze(1)
            n = where.numel()
            # The masked count changes every step; rounded up to a multiple of PREDICTION_ROWS
            # (extra rows: position 0, label -100), the head sees few distinct shapes, so the
            # per-shape caches of the CPU's matmul library (oneDNN) and of torch.compile stay small.
            rows = F.pad(where, (0, -n % PREDICTION_ROWS if n else PREDICTION_ROWS))
            targets = F.pad(flat_labels[where], (0, rows.numel() - n), value=-100)
            hidden = sequence_output.reshape(-1, sequence_output.shape[-1]).index_select(0, rows)
            head = self.cls.predictions
            loss, mlm_logits = masked_lm_loss(head.transform(hidden), head.decoder.weight, head.decoder.bias, targets)
            if next_sentence_label is not None:
                loss = loss + F.cross_entropy(nsp_logits.float(), next_sentence_label.view(-1))
            # Under bf16 the Trainer (accelerate) copies every bf16 output to fp32, the
            # logits too, on every step; a training step needs only the loss (Liger Kernel's
            # fused-loss forwards skip the logits in training for the same reason).
            return BertForPreTrainingOutput(loss=loss, prediction_logits=None if self.training else mlm_logits[:n],
                                            seq_relationship_logits=nsp_logits)

    return ScratchBertForPreTraining


@functools.cache
def _masked_lm_loss_function():
    import torch

    class MaskedLMLoss(torch.autograd.Function):
        """The vocabulary projection and the mean cross-entropy over the rows whose target is not -100.

        Same value and gradients as ``F.cross_entropy(F.linear(hidden, weight, bias).float(),
        targets)`` (the tests compare them, in fp32 exactly and in bf16 within bf16's
        rounding), with far less traffic over the ``(rows, vocab)`` logits, the largest
        tensors of a small model's step (``tiny``, batch 32: ~560 rows x 30,522 words):

        * the loss needs only the target's probability and the gradient is ``softmax -
          onehot``, so one ``softmax`` pass in the compute dtype (fp32 inside, as PyTorch's
          kernels on CPU and GPU do) gives both, and the gradient is formed in the forward,
          where ATen's path upcasts the logits to fp32, runs ``log_softmax``, and in the
          backward ``exp``, fills, scales and casts tensors of the same size again;
        * the ``1 / count`` scale and the incoming gradient are applied to the small
          matmul operands and outputs (``rows x hidden``, ``vocab``), never to the
          ``rows x vocab`` tensor.

        Measured on this project's 2-core Xeon, bf16, forward and backward of the head at
        ``tiny``'s shapes (560-608 rows): 52 ms -> 35 ms per step. Liger Kernel fuses the
        same projection and loss, but in Triton, for GPUs only; this one is plain PyTorch,
        for the CPU and the GPU alike.
        fp16 (older GPUs) takes the softmax in fp32, where the target's probability cannot
        underflow; its log is floored at fp32's smallest normal number (a loss of 87 nats
        per row at most, reached only by a diverged model).
        """

        @staticmethod
        def forward(ctx, hidden, weight, bias, targets):
            with torch.autocast(hidden.device.type, enabled=False):  # dtypes are the caller's
                logits = torch.addmm(bias, hidden, weight.t())
                valid = targets != -100
                count = valid.sum().clamp_min(1)  # nothing masked: loss 0, not NaN
                safe = torch.where(valid, targets, 0)
                rows = torch.arange(logits.shape[0], device=logits.device)
                probs = torch.softmax(logits, dim=1, dtype=torch.float32 if logits.dtype == torch.float16 else None)
                target_probs = probs[rows, safe].float()
                loss = -(torch.log(target_probs.clamp_min(torch.finfo(torch.float32).tiny)) * valid).sum() / count
                probs[rows, safe] = (target_probs - 1).to(probs.dtype)  # softmax - onehot
                probs.index_fill_(0, (~valid).nonzero().squeeze(1), 0)
                grad = probs.to(logits.dtype)
            ctx.save_for_backward(hidden, weight, grad, count)
            ctx.set_materialize_grads(False)  # the logits output usually gets no gradient
            return loss, logits

        @staticmethod
        def backward(ctx, grad_loss, grad_logits):
            hidden, weight, grad, count = ctx.saved_tensors
            if grad_loss is None and grad_logits is None:
                return None, None, None, None
            if grad_logits is None:
                scale = (grad_loss / count).to(grad.dtype)
            else:  # something used the logits too: the rare path, one full-size sum
                grad_logits = grad_logits.to(grad.dtype)
                grad = grad_logits if grad_loss is None else grad * (grad_loss / count).to(grad.dtype) + grad_logits
                scale = 1.0
            need_hidden, need_weight, need_bias, _ = ctx.needs_input_grad
            return ((grad @ weight) * scale if need_hidden else None,
                    grad.t() @ (hidden * scale) if need_weight else None,
                    grad.sum(0) * scale if need_bias else None,
                    None)

    return MaskedLMLoss


def masked_lm_loss(hidden, weight, bias, targets):
    """``(loss, logits)`` of the vocabulary projection ``hidden @ weight.T + bias``: the mean
    cross-entropy over the targets that are not -100, and the logits.

    Under autocast the projection runs in the autocast dtype (bf16 on a CPU), as
    ``F.linear`` would; the casts stay outside the fused function, so autograd returns the
    gradients in the parameters' own dtype.
    """
    import torch

    device = hidden.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype
    return _masked_lm_loss_function().apply(hidden.to(dtype), weight.to(dtype), bias.to(dtype), targets)


def set_mlm_bias_to_unigram(model, counts) -> None:
    """Start the MLM head's output bias at the log unigram frequencies of the training tokens.

    With zero bias a fresh model predicts every word alike (loss ln 30,522 = 10.3) and spends
    its first few hundred updates learning word frequencies, which this bias already gives
    it (add-one smoothed; tokens never seen, such as special tokens, get the smallest value).
    """
    import torch

    counts = torch.as_tensor(counts, dtype=torch.float64) + 1.0
    bias = model.cls.predictions.bias
    with torch.no_grad():
        bias.copy_(torch.log(counts / counts.sum()).to(bias.dtype))


def load_pretrained_config(model_dir):
    """Read a model folder's config with a clear error when it is not a model folder."""
    from pathlib import Path

    from transformers import BertConfig

    if not (Path(model_dir) / "config.json").is_file():
        raise ScratchBertError(f"{model_dir} is not a model folder (no config.json); point --model at the output of `scratchbert pretrain`")
    return BertConfig.from_pretrained(str(model_dir))
