"""Model sizes, config validation, the pretraining model and the QA model.

:class:`ScratchBertForPreTraining` is Hugging Face's ``BertForPreTraining`` with one change
in ``forward``: when labels are given, the vocabulary projection runs only at the masked
positions (a *sparse prediction head*, as in Cramming and MosaicBERT). With 15% masking
this skips ~85% of the largest matmul of a small model and its softmax. The weights and the
saved checkpoint are exactly ``BertForPreTraining``'s, so ``BertForPreTraining``,
``BertForMaskedLM`` and ``BertForQuestionAnswering`` all load what it saves. QA fine-tuning
runs ``BertForQuestionAnswering`` with the same bf16 encoder and attention mask
(:func:`qa_model_class`), and saves the stock class's checkpoint too.
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


# nano: for tests; tiny/mini/small/medium: Turc et al. 2019 ("Well-Read Students"), as is tiny4
# (their 4 layers of 128, unnamed there: tiny's width, twice its depth); base: BERT-base.
PRESETS: dict[str, Size] = {
    "nano": Size(64, 2, 2, 256),
    "tiny": Size(128, 2, 2, 512),
    "tiny4": Size(128, 4, 2, 512),
    "mini": Size(256, 4, 4, 1024),
    "small": Size(512, 4, 8, 2048),
    "medium": Size(512, 8, 8, 2048),
    "base": Size(768, 12, 12, 3072),
}


def effective_size(preset: str, *, hidden_size: int | None = None, num_hidden_layers: int | None = None,
                   num_attention_heads: int | None = None, intermediate_size: int | None = None) -> Size:
    """The model size a preset gives with the given overrides (``None``: the preset's), checked.

    An MLP size that is not given follows a given hidden size (4x, BERT's ratio).
    """
    if preset not in PRESETS:
        raise ScratchBertError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    for flag, value in (("--hidden-size", hidden_size), ("--num-hidden-layers", num_hidden_layers),
                        ("--num-attention-heads", num_attention_heads), ("--intermediate-size", intermediate_size)):
        if value is not None and value < 1:
            raise ScratchBertError(f"{flag} {value} must be a positive number; leave it out to use the preset's")
    size = PRESETS[preset]
    hidden = size.hidden_size if hidden_size is None else hidden_size
    heads = size.num_attention_heads if num_attention_heads is None else num_attention_heads
    inter = intermediate_size if intermediate_size is not None else (4 * hidden if hidden_size is not None else size.intermediate_size)
    if hidden % heads:
        raise ScratchBertError(f"hidden size {hidden} is not divisible by {heads} attention heads; pick a head count that divides it (e.g. {hidden // 64 or 1})")
    return Size(hidden, size.num_hidden_layers if num_hidden_layers is None else num_hidden_layers, heads, inter)


ATTENTIONS = ("auto", "eager", "sdpa")


def resolve_attention(attention: str, precision: str) -> str:
    """'auto' -> SDPA where a run computes in fp32 on a CPU, eager attention everywhere else.

    ``precision`` is the run's resolved one (bf16, fp16 or fp32). Eager is faster than SDPA
    in bf16 on a CPU (it keeps the softmax in bf16) and on a GPU at sequence length 128 with
    length-grouped batches (with a padding mask SDPA runs cuDNN kernels that plan again for
    every padded length). In fp32 on a CPU (one without bf16 instructions) SDPA's fused
    kernel is the faster: a QA step on windows of 256 to 384 tokens takes three quarters of
    eager's time, and pretraining on 64 tokens is within 3%. ``benchmarks/pretrain_throughput.py``
    and ``benchmarks/qa_finetune.py`` report both kernels (docs/performance.md).
    """
    import torch

    if attention not in ATTENTIONS:
        raise ScratchBertError(f"attention {attention!r} is not one of {', '.join(ATTENTIONS)}")
    if attention != "auto":
        return attention
    return "sdpa" if precision == "fp32" and not torch.cuda.is_available() else "eager"


MIN_POSITIONS = 512  # BERT's position table; a longer max_seq_len gets as many


def positions_for(max_seq_len: int) -> int:
    """The positions a model pretrained on examples of ``max_seq_len`` tokens gets (BERT's 512, or
    more for longer examples): what later QA windows may use."""
    return max(MIN_POSITIONS, max_seq_len)


def build_config(preset: str, vocab_size: int, max_seq_len: int, *, hidden_size: int | None = None,
                 num_hidden_layers: int | None = None, num_attention_heads: int | None = None,
                 intermediate_size: int | None = None, max_position_embeddings: int | None = None,
                 dropout: float = 0.1, attn_implementation: str = "sdpa"):
    """A validated ``BertConfig`` from a preset, with any size overridden explicitly."""
    from transformers import BertConfig

    size = effective_size(preset, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
                          num_attention_heads=num_attention_heads, intermediate_size=intermediate_size)
    hidden, layers, heads, inter = size.hidden_size, size.num_hidden_layers, size.num_attention_heads, size.intermediate_size
    positions = max_position_embeddings or positions_for(max_seq_len)
    if vocab_size <= 0:
        raise ScratchBertError("the vocabulary size must be positive")
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


def check_tokenizer_matches(config, tokenizer, where: str, model_dir=None) -> None:
    """A model and a tokenizer must agree exactly: the same vocabulary size and, where the model
    folder records the fingerprint of the tokenizer it was trained with, that vocabulary; and the model
    must take the second segment's token type the tokenizer gives a pair (next-sentence examples,
    QA's context); and its positions must be BERT's absolute ones (transformers 5 runs every BERT so)."""
    positions = getattr(config, "position_embedding_type", "absolute")
    if positions != "absolute":  # transformers 5 ignores the setting: its distance embeddings would be dropped
        raise ScratchBertError(f"the model at {where} has {positions} position embeddings; transformers runs BERT "
                               "models with absolute ones only, so it would not be the model it was trained as; "
                               "give a BERT with position_embedding_type absolute")
    types = getattr(config, "type_vocab_size", 2)
    if types < 2:
        raise ScratchBertError(f"the model at {where} has {types} token type (type_vocab_size), but BERT's sentence "
                               "pairs (next-sentence examples, QA's question and context) need 2; give a BERT model "
                               "with type_vocab_size 2")
    if config.vocab_size != len(tokenizer):
        raise ScratchBertError(f"the tokenizer has {len(tokenizer)} tokens but the model at {where} expects {config.vocab_size}; "
                               "use the tokenizer the model was trained with, or fit the model to its tokenizer "
                               "(model.resize_token_embeddings(len(tokenizer)), then save_pretrained)")
    if model_dir is not None:
        from scratchbert.outputs import read_marker
        from scratchbert.tokenizer import fingerprint

        recorded = read_marker(model_dir).get("tokenizer_fingerprint")
        if recorded and fingerprint(tokenizer) != recorded:
            raise ScratchBertError(f"the tokenizer in {where} is not the one its model was trained with (another vocabulary "
                                   "of the same size); put the model's own tokenizer back into the folder")


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


def prediction_rows(n_masked: int) -> int:
    """Rows the sparse head computes for ``n_masked`` masked tokens: rounded up to a multiple of
    :data:`PREDICTION_ROWS` (at least one block), so that it sees few distinct shapes and the
    per-shape caches of the matmul libraries and of ``torch.compile`` stay small."""
    return n_masked + (-n_masked % PREDICTION_ROWS if n_masked else PREDICTION_ROWS)


def masked_positions(labels):
    """The sparse head's rows for a batch: the flat positions of the tokens with a label
    (row-major), padded to :func:`prediction_rows` with the position of a token without one
    (label -100, so the padding rows carry no loss). None when every token has a label.

    Made where the batch is made (:class:`scratchbert.pretraining_data.MlmNspCollator`, on
    the CPU), they spare the model the ``nonzero`` on the device that would stall a GPU's
    queue once per step.
    """
    import torch

    flat = labels.reshape(-1)
    labelled = flat != -100
    free = (~labelled).to(torch.uint8).argmax()  # the first unlabelled position, if any
    if labelled[free]:
        return None
    where = labelled.nonzero().squeeze(1)
    return torch.cat([where, free.expand(prediction_rows(where.numel()) - where.numel())])


class FastEncoder:
    """What both of the package's model classes add to their transformers class (put first
    among the bases): the encoder's residual stream in bf16 under bf16 autocast
    (:func:`keep_residual_stream_in_bf16`), and a checkpoint that records ``stock_class``, the
    transformers class whose weights it holds, as its architecture. transformers would write
    the saving class's name, a class only this package has, and tools pick a class from it (a
    config file of a few hundred bytes, written again)."""

    stock_class: str

    def __init__(self, config):
        super().__init__(config)
        keep_residual_stream_in_bf16(self.bert)

    def save_pretrained(self, save_directory, *args, **kwargs):
        super().save_pretrained(save_directory, *args, **kwargs)
        if kwargs.get("is_main_process", True):
            self.config.architectures = [self.stock_class]
            self.config.save_pretrained(save_directory)


@functools.cache  # built on first use: importing torch is slow
def pretraining_model_class():
    """The sparse-head pretraining model class."""
    import torch
    from torch.nn import functional as F
    from transformers import BertForPreTraining
    from transformers.models.bert.modeling_bert import BertForPreTrainingOutput

    _masked_lm_loss_function()  # made here, before any torch.compile trace of the forward

    class ScratchBertForPreTraining(FastEncoder, BertForPreTraining):
        """``BertForPreTraining`` whose MLM logits are computed at masked positions only.

        With ``labels``, ``prediction_logits`` has shape ``(n_masked, vocab)`` in the
        row-major order of ``labels != -100`` (``None`` in training mode: a training step
        needs only the loss); without, it is the usual full tensor.
        """

        stock_class = "BertForPreTraining"

        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                    inputs_embeds=None, labels=None, next_sentence_label=None, mlm_positions=None, **kwargs):
            attention_mask = eager_attention_mask(self, attention_mask)
            outputs = self.bert(input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids,
                                position_ids=position_ids, inputs_embeds=inputs_embeds, return_dict=True)
            sequence_output, pooled_output = outputs[0], outputs[1]
            nsp_logits = self.cls.seq_relationship(pooled_output)
            if labels is None:
                return BertForPreTrainingOutput(prediction_logits=self.cls.predictions(sequence_output),
                                                seq_relationship_logits=nsp_logits)
            flat_labels = labels.reshape(-1)
            if mlm_positions is None:
                mlm_positions = masked_positions(labels)
            if mlm_positions is None:  # every token labelled: no padding row to borrow
                n = flat_labels.numel()
                rows = F.pad(torch.arange(n, device=labels.device), (0, prediction_rows(n) - n))
                targets = F.pad(flat_labels, (0, rows.numel() - n), value=-100)
            else:  # from the collator: no host sync here (see masked_positions)
                rows, targets = mlm_positions, flat_labels.index_select(0, mlm_positions)
            hidden = sequence_output.reshape(-1, sequence_output.shape[-1]).index_select(0, rows)
            head = self.cls.predictions
            loss, mlm_logits = masked_lm_loss(head.transform(hidden), head.decoder.weight, head.decoder.bias, targets)
            if next_sentence_label is not None:
                loss = loss + F.cross_entropy(nsp_logits.float(), next_sentence_label.view(-1))
            # Under bf16 the Trainer (accelerate) copies every bf16 output to fp32, the
            # logits too, on every step; a training step needs only the loss (Liger Kernel's
            # fused-loss forwards skip the logits in training for the same reason).
            n = None if self.training else int((targets != -100).sum())  # padding rows come last
            return BertForPreTrainingOutput(loss=loss, prediction_logits=None if n is None else mlm_logits[:n],
                                            seq_relationship_logits=nsp_logits)

    return ScratchBertForPreTraining


@functools.cache
def qa_model_class():
    """The QA fine-tuning and scoring model class: ``BertForQuestionAnswering`` with the
    pretraining model's fast path, its residual stream in bf16 under bf16 autocast
    (:func:`keep_residual_stream_in_bf16`) and, with eager attention, the padding mask passed
    as a bias (:func:`padding_attention_bias`). Same weights, same saved checkpoint: a QA
    step on SQuAD's windows takes about three quarters of the stock class's time on a CPU
    (docs/performance.md, "QA fine-tuning")."""
    from transformers import BertForQuestionAnswering

    class ScratchBertForQuestionAnswering(FastEncoder, BertForQuestionAnswering):
        stock_class = "BertForQuestionAnswering"

        # The stock signature, spelt out: the Trainer keeps only the dataset columns it names.
        def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                    inputs_embeds=None, start_positions=None, end_positions=None, **kwargs):
            return super().forward(input_ids, attention_mask=eager_attention_mask(self, attention_mask),
                                   token_type_ids=token_type_ids, position_ids=position_ids, inputs_embeds=inputs_embeds,
                                   start_positions=start_positions, end_positions=end_positions, **kwargs)

    return ScratchBertForQuestionAnswering


def eager_attention_mask(model, attention_mask):
    """The attention mask to hand ``model.bert``: under eager attention a 2D padding mask
    becomes :func:`padding_attention_bias` in the encoder's dtype; otherwise it is unchanged."""
    if attention_mask is not None and attention_mask.dim() == 2 and model.config._attn_implementation == "eager":
        return padding_attention_bias(attention_mask, encoder_dtype(model.bert, attention_mask.device))
    return attention_mask


def keep_residual_stream_in_bf16(bert) -> None:
    """Under bf16 autocast, hand the encoder its embeddings in bf16 (a forward hook on
    ``bert.embeddings``); outside autocast, or under fp16, nothing changes.

    The embeddings are looked up and summed in fp32 (the parameters' dtype), so without
    this the residual stream, every LayerNorm and the additive attention mask (made in
    the embeddings' dtype) stay fp32 while autocast runs the matmuls in bf16: each layer
    then casts its fp32 input to bf16 once for each of query, key, value and the MLP,
    casts the gradients back in the backward pass, and adds the fp32 mask to the bf16
    attention scores, which makes the scores, their softmax and its backward fp32 too.
    From bf16 embeddings on, everything stays bf16 on a CPU, where autocast leaves
    LayerNorm in its input's dtype (it normalises in fp32 inside and returns bf16); on a
    GPU autocast runs LayerNorm in fp32, so there mainly the attention mask changes (not
    measured on a GPU). The stream is post-LayerNorm throughout (every sublayer's sum is
    renormalised), and the weights, their gradients and the optimizer stay fp32. fp16 is
    left alone: its narrower range is why such runs keep an fp32 stream. (A ``base`` step on
    an AMX CPU is about 10% faster with it; docs/performance.md.)
    """
    import torch

    def to_bf16(module, args, output):
        return output.to(torch.bfloat16) if _bf16_autocast(output.device) else None

    bert.embeddings.register_forward_hook(to_bf16)


def _bf16_autocast(device) -> bool:
    import torch

    return torch.is_autocast_enabled(device.type) and torch.get_autocast_dtype(device.type) == torch.bfloat16


def encoder_dtype(bert, device):
    """The dtype of the encoder's residual stream: bf16 under bf16 autocast (see
    :func:`keep_residual_stream_in_bf16`), else that of the embeddings' weights."""
    import torch

    return torch.bfloat16 if _bf16_autocast(device) else bert.embeddings.word_embeddings.weight.dtype


def padding_attention_bias(attention_mask, dtype):
    """The additive attention mask of a padded batch, ``(batch, 1, 1, length)``: 0 where a
    key is a token, the dtype's minimum where it is padding.

    transformers makes the same values from the 2D mask for eager attention (broadcast to
    ``(batch, 1, length, length)``), but first asks ``attention_mask.all()`` whether there is
    padding at all: a read of a device tensor on the host, which stalls a GPU's queue once
    per forward. Given a 4D mask it uses it as it is.
    """
    import torch

    bias = torch.zeros(attention_mask.shape, dtype=dtype, device=attention_mask.device)
    return bias.masked_fill_(attention_mask == 0, torch.finfo(dtype).min)[:, None, None, :]


_MASKED_LM_LOSS = []  # the autograd Function, made once on first use (see below)


def _masked_lm_loss_function():
    # A plain global rather than functools.cache: torch.compile traces through a cache
    # wrapper, so it would meet the class statement on every trace and break the graph there.
    if not _MASKED_LM_LOSS:
        _MASKED_LM_LOSS.append(_make_masked_lm_loss_function())
    return _MASKED_LM_LOSS[0]


def _make_masked_lm_loss_function():
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

        Liger Kernel fuses the same projection and loss, but in Triton, for GPUs only; this
        one is plain PyTorch, for the CPU and the GPU alike (a third faster than ATen's path
        at ``tiny``'s shapes on a CPU).
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
                # softmax - onehot; at ignored rows too, which the backward weighs by 0
                probs[rows, safe] = (target_probs - 1).to(probs.dtype)
                grad = probs.to(logits.dtype)
            ctx.save_for_backward(hidden, weight, grad, valid, count)
            ctx.set_materialize_grads(False)  # the logits output usually gets no gradient
            return loss, logits

        @staticmethod
        def backward(ctx, grad_loss, grad_logits):
            hidden, weight, grad, valid, count = ctx.saved_tensors
            if grad_loss is None and grad_logits is None:
                return None, None, None, None
            need_hidden, need_weight, need_bias, _ = ctx.needs_input_grad
            # per-row weights: grad_loss / count at the rows with a target, 0 at ignored rows.
            # Applied to the small operands, never to the (rows, vocab) tensor, and with no
            # host sync (a GPU keeps queueing work): no index of the ignored rows is formed.
            if grad_logits is None:
                w = ((grad_loss / count) * valid).to(grad.dtype)
                return ((grad @ weight) * w[:, None] if need_hidden else None,
                        grad.t() @ (hidden * w[:, None]) if need_weight else None,
                        w @ grad if need_bias else None,
                        None)
            # something used the logits too: the rare path, one full-size sum
            grad_logits = grad_logits.to(grad.dtype)
            if grad_loss is not None:
                grad_logits = grad * ((grad_loss / count) * valid).to(grad.dtype)[:, None] + grad_logits
            return (grad_logits @ weight if need_hidden else None,
                    grad_logits.t() @ hidden if need_weight else None,
                    grad_logits.sum(0) if need_bias else None,
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
    from transformers import BertConfig

    from scratchbert.outputs import local_folder

    if not (local_folder(model_dir, "--model") / "config.json").is_file():
        raise ScratchBertError(f"{model_dir} is not a model folder (no config.json); point --model at the output of `scratchbert pretrain`")
    return BertConfig.from_pretrained(str(model_dir))


# Weights that only a trained head of each kind has (names as transformers saves them).
PRETRAINING_HEAD = ("cls.predictions.transform.dense.weight", "cls.seq_relationship.weight")
QA_HEAD = ("qa_outputs.weight",)


def saved_weight_names(model_dir) -> set[str] | None:
    """The tensor names in a model folder's ``model.safetensors`` (header only); None without one."""
    import json
    import struct
    from pathlib import Path

    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        return None
    try:
        with path.open("rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
    except (OSError, struct.error, ValueError):
        raise ScratchBertError(f"{path} is damaged (not a safetensors file); save the model again") from None
    return set(header) - {"__metadata__"}


def check_model_kind(model_dir, config, kind: str, fix: str, name: str = "") -> None:
    """Refuse a model folder that lacks the trained head ``kind`` (``pretraining`` or ``question-answering``)
    needs, with ``fix`` saying what to do: a missing head would be initialised at random and
    score or answer by chance. ``name`` is the model as the user gave it (an ``s3://`` address
    fetched into ``model_dir``), for the message."""
    wanted = {"pretraining": ("BertForPreTraining", PRETRAINING_HEAD),
              "question-answering": ("BertForQuestionAnswering", QA_HEAD)}[kind]
    architecture, head = wanted
    model_type = getattr(config, "model_type", "bert")
    if model_type != "bert":  # its head may well be trained: fine-tuning it here would not help
        raise ScratchBertError(f"{name or model_dir} is a {model_type!r} model; scratchbert reads BERT models (model "
                               "type bert), such as the ones its pretrain and qa-finetune stages write")
    names = saved_weight_names(model_dir)
    has_head = all(n in names for n in head) if names is not None else architecture in (config.architectures or [])
    if not has_head:
        what = ", ".join(config.architectures or []) or getattr(config, "model_type", "unknown")
        raise ScratchBertError(f"{name or model_dir} is a {what} model without a trained {kind} head; {fix}")
