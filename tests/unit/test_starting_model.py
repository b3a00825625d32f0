"""Starting from an existing BERT: fetched from a folder, from object storage (a plain folder or a
published, checksummed version) or from the Hub; checked before any work; continued
pretraining lowers its masked-LM loss on new text; QA fine-tuning starts from it and keeps its
tokenizer. The models are small BERTs the tests build and save themselves (no download)."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import pytest

from scratchbert import starting_model, storage, synthetic
from scratchbert.errors import ScratchBertError
from scratchbert.pretraining_data import tokenizer_fingerprint
from scratchbert.tokenizer import load_tokenizer

MAX_SEQ_LEN = 64


@pytest.fixture(autouse=True)
def _no_tensorboard(monkeypatch):
    monkeypatch.setenv("SCRATCHBERT_TENSORBOARD", "0")


@pytest.fixture(scope="module")
def start_model(pretrained_nano) -> Path:
    """A scratchbert model folder (nano, pretrained a few steps on the synthetic corpus)."""
    return pretrained_nano


@pytest.fixture(scope="module")
def mlm_only_model(trained_tokenizer, tmp_path_factory) -> Path:
    """A BERT saved as BertForMaskedLM (an MLM head, no NSP head), with its own tokenizer."""
    from transformers import BertConfig, BertForMaskedLM

    tok = load_tokenizer(trained_tokenizer)
    config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128)
    out = tmp_path_factory.mktemp("mlm-only") / "model"
    BertForMaskedLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def test_a_local_folder_is_used_where_it_is_and_checked(start_model, tmp_path):
    folder = starting_model.fetch(str(start_model), tmp_path)
    assert folder == start_model
    config = starting_model.check_model(folder, max_seq_len=MAX_SEQ_LEN)
    assert config.model_type == "bert"
    with pytest.raises(ScratchBertError, match="has 512 positions, fewer than the 1024 tokens"):
        starting_model.check_model(folder, max_seq_len=1024)
    with pytest.raises(ScratchBertError, match="is not a folder"):
        starting_model.fetch(str(tmp_path / "nope"), tmp_path)


def test_a_model_that_is_not_bert_is_refused_in_one_line(trained_tokenizer, tmp_path):
    from transformers import GPT2Config

    GPT2Config(n_layer=1, n_embd=32, n_head=2).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ScratchBertError, match="is a 'gpt2' model; scratchbert continues BERT encoders"):
        starting_model.check_model(tmp_path / "gpt2")


def test_s3_folder_and_published_version_are_fetched_and_verified(start_model, s3_env, s3_bucket, tmp_path):
    storage.upload_dir(start_model, f"s3://{s3_bucket}/plain/model")
    plain = starting_model.fetch(f"s3://{s3_bucket}/plain/model", tmp_path / "a")
    assert (plain / "model.safetensors").read_bytes() == (start_model / "model.safetensors").read_bytes()

    storage.publish(start_model, f"s3://{s3_bucket}/published", version="v1")
    published = starting_model.fetch(f"s3://{s3_bucket}/published", tmp_path / "b")  # LATEST, checksums
    assert tokenizer_fingerprint(load_tokenizer(published)) == tokenizer_fingerprint(load_tokenizer(start_model))
    # a published object changed after publishing is caught
    s3 = storage.client_from_env()
    s3.put_object(s3_bucket, "published/v1/config.json", io.BytesIO(b"{}"), 2)
    with pytest.raises(ScratchBertError, match="does not match manifest.json"):
        starting_model.fetch(f"s3://{s3_bucket}/published", tmp_path / "c")
    # a damaged publish is an error, never a copy read unverified: a manifest that is not JSON, a
    # LATEST naming a version that is not there
    s3.put_object(s3_bucket, "published/v1/manifest.json", io.BytesIO(b"{not json"), 9)
    with pytest.raises(ScratchBertError, match="is not a valid scratchbert manifest"):
        starting_model.fetch(f"s3://{s3_bucket}/published/v1", tmp_path / "d")
    s3.put_object(s3_bucket, "published/LATEST", io.BytesIO(b"v9"), 2)
    with pytest.raises(ScratchBertError, match="LATEST names version v9, which has no manifest.json"):
        starting_model.fetch(f"s3://{s3_bucket}/published", tmp_path / "e")
    assert not {"d", "e"} & {p.name for p in tmp_path.iterdir()}


def test_a_version_whose_publish_did_not_finish_is_not_read_as_a_plain_folder(start_model, s3_env, s3_bucket, tmp_path):
    """A publish killed before its manifest leaves some of the version's files: given by its address,
    that version was downloaded as a plain folder and used unverified (here without its
    tokenizer_config.json, which no check noticed)."""
    storage.publish(start_model, f"s3://{s3_bucket}/m", version="v1")
    s3 = storage.client_from_env()
    for name in ("config.json", "model.safetensors", "tokenizer.json"):  # the killed publish of v2
        s3.fput_object(s3_bucket, f"m/v2/{name}", str(start_model / name))
    for weights in (True, False):
        with pytest.raises(ScratchBertError, match=f"s3://{s3_bucket}/m/v2 has no manifest.json, but it is a version of "
                                                   f"the model published at s3://{s3_bucket}/m \\(LATEST v1\\): its publish did not finish"):
            starting_model.fetch(f"s3://{s3_bucket}/m/v2", tmp_path / "a", weights=weights)
    assert not (tmp_path / "a").exists()
    assert (starting_model.fetch(f"s3://{s3_bucket}/m/v1", tmp_path / "b") / "tokenizer_config.json").is_file()


def test_without_weights_only_the_config_and_tokenizer_are_fetched(start_model, s3_env, s3_bucket, tmp_path):
    """The tokenizer stage reads a starting model's tokenizer: BERT-base's 440 MB of weights stay
    in the store, published or not."""
    storage.upload_dir(start_model, f"s3://{s3_bucket}/plain")
    storage.publish(start_model, f"s3://{s3_bucket}/published", version="v1")
    for name in ("plain", "published"):
        folder = starting_model.fetch(f"s3://{s3_bucket}/{name}", tmp_path / name, weights=False)
        assert (folder / "config.json").is_file() and load_tokenizer(folder).vocab_size > 0
        assert not list(folder.glob("*.safetensors")), name


def test_hub_models_go_through_snapshot_download(start_model, monkeypatch):
    import huggingface_hub

    calls = []

    def fake_snapshot_download(repo_id, revision=None, allow_patterns=None, local_files_only=False):
        calls.append((repo_id, revision, tuple(allow_patterns), local_files_only))
        return str(start_model)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # never asks the network
    folder = starting_model.fetch("hf://someone/tiny-bert?revision=v2", "unused", weights=False)
    assert folder == start_model
    repo, revision, patterns, offline = calls[0]
    assert (repo, revision, offline) == ("someone/tiny-bert", "v2", True)
    assert "config.json" in patterns and "vocab.txt" in patterns and "model.safetensors" not in patterns
    starting_model.fetch("hf://someone/tiny-bert", "unused")
    assert "model.safetensors" in calls[-1][2] and "pytorch_model.bin" not in calls[-1][2] and len(calls) == 2
    # a model with safetensors got its pickled weights too (880 MB for BERT-base, not 440); one without gets them
    older = start_model.parent / "older"
    shutil.copytree(start_model, older, ignore=shutil.ignore_patterns("*.safetensors"))
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: (calls.append(k["allow_patterns"]), str(older))[1])
    assert starting_model.fetch("hf://someone/older-bert", "unused") == older
    assert "pytorch_model.bin" not in calls[-2] and calls[-1] == starting_model.PICKLE_FILES


def test_a_cached_hub_model_is_used_where_the_hub_cannot_be_reached(start_model, monkeypatch, tmp_path):
    """The reachability probe refused a model the cache held, as from_pretrained would have used."""
    import huggingface_hub

    from scratchbert import hub

    def cache_only(repo_id, revision=None, allow_patterns=None, local_files_only=False):
        assert local_files_only
        return str(start_model)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "reachable", lambda timeout=5.0: False)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", cache_only)
    assert starting_model.fetch("hf://someone/tiny-bert", tmp_path) == start_model


def test_hub_offline_and_not_cached_fails_at_once_in_one_line(monkeypatch, tmp_path):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ScratchBertError, match="is not in the local Hugging Face cache and the Hub is offline"):
        starting_model.fetch("hf://google-bert/bert-base-uncased", tmp_path)


def test_hub_unreachable_fails_at_once_in_one_line(monkeypatch, tmp_path):
    import huggingface_hub

    from scratchbert import hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(hub, "reachable", lambda timeout=5.0: False)
    with pytest.raises(ScratchBertError, match="is not in the local Hugging Face cache and the Hugging Face Hub cannot be reached"):
        starting_model.fetch("hf://google-bert/bert-base-uncased", tmp_path)


def test_a_model_at_a_buckets_root_or_without_a_tokenizer_is_named_by_its_address(start_model, s3_env, s3_server, tmp_path):
    """At a bucket's root the look-up of a parent's LATEST asked for s3://LATEST (an invalid bucket);
    a model without a tokenizer was named by the temporary folder it was fetched into."""
    from scratchbert.starting_model import StartingModelConfig, prepare_starting_model

    client = s3_server.client()
    for bucket, skip in (("root-model", ()), ("root-no-tokenizer", ("tokenizer.json", "vocab.txt"))):
        client.make_bucket(bucket)
        for f in start_model.iterdir():
            if f.is_file() and f.name not in skip:
                client.fput_object(bucket, f.name, str(f))
    facts = prepare_starting_model(StartingModelConfig(init_model="s3://root-model", out=str(tmp_path / "a")))
    assert facts["vocab_size"] == len(load_tokenizer(start_model)) and (tmp_path / "a" / "model.safetensors").is_file()
    with pytest.raises(ScratchBertError, match=r"^starting model s3://root-no-tokenizer/ has no tokenizer \(tokenizer.json or vocab.txt\)") as e:
        prepare_starting_model(StartingModelConfig(init_model="s3://root-no-tokenizer/", out=str(tmp_path / "b")))
    assert "scratchbert-start-" not in str(e.value) and not (tmp_path / "b").exists()


def test_a_tokenizer_swapped_for_another_of_its_size_is_refused(start_model, other_tokenizer, tmp_path):
    """The model folder records its tokenizer's fingerprint; continuing it with another vocabulary of
    the same size trained on the wrong token ids, silently."""
    from transformers import BertConfig, BertForPreTraining

    other = load_tokenizer(other_tokenizer)
    swapped = tmp_path / "swapped"
    shutil.copytree(start_model, swapped)
    config = BertConfig.from_pretrained(start_model)
    config.vocab_size = len(other)
    BertForPreTraining(config).save_pretrained(swapped)  # the marker's fingerprint stays the model's
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (swapped / name).unlink(missing_ok=True)
    other.save_pretrained(swapped)
    with pytest.raises(ScratchBertError, match="is not the one its model was trained with"):
        starting_model.check_model(swapped, where="the swapped model")


def _corpus_and_dataset(tmp_path: Path, init_model: str) -> tuple[Path, Path]:
    """New text, its tokenizer taken from the starting model, and the dataset built with it."""
    from scratchbert.pretraining_data import DatasetConfig, build_dataset
    from scratchbert.tokenizer import TokenizerConfig, train_tokenizer

    corpus = synthetic.write_corpus(tmp_path / "new-text.txt", 400, seed=7)
    report = train_tokenizer(TokenizerConfig(corpus=str(corpus), out=str(tmp_path / "tok"), init_model=init_model))
    assert report["init_model"] == init_model and report["unk_rate"] < 0.05
    if "://" not in init_model:  # a starting model's folder is an input: its tokenizer is not written over it
        with pytest.raises(ScratchBertError, match="is the input .* would destroy the input"):
            train_tokenizer(TokenizerConfig(corpus=str(corpus), out=init_model, init_model=init_model, overwrite=True))
    build_dataset(DatasetConfig(corpus=str(corpus), tokenizer=str(tmp_path / "tok"), out=str(tmp_path / "data"),
                                max_seq_len=MAX_SEQ_LEN, validation_fraction=0.1, num_proc=1))
    return corpus, tmp_path / "data"


def test_continued_pretraining_from_s3_lowers_the_masked_lm_loss_on_new_text(start_model, s3_env, s3_bucket,
                                                                              tmp_path):
    from scratchbert.evaluation import EvalConfig, evaluate_model
    from scratchbert.pretrain import PretrainConfig, pretrain

    uri = f"s3://{s3_bucket}/start"
    storage.publish(start_model, uri, version="v1")
    _, data = _corpus_and_dataset(tmp_path, uri)
    assert tokenizer_fingerprint(load_tokenizer(tmp_path / "tok")) == tokenizer_fingerprint(load_tokenizer(start_model))

    before = evaluate_model(EvalConfig(model=str(start_model), dataset=str(data), out=str(tmp_path / "eval-before")))
    metrics = pretrain(PretrainConfig(dataset=str(data), out=str(tmp_path / "model"), init_model=uri, max_steps=200,
                                      batch_size=16, eval_steps=0, num_workers=0, logging_steps=10,
                                      learning_rate=3e-3))
    after = evaluate_model(EvalConfig(model=str(tmp_path / "model"), dataset=str(data), out=str(tmp_path / "eval-after")))
    # the same examples and the same seeded masks before and after: the difference is the training
    assert after["mlm_loss"] < before["mlm_loss"] - 0.15, (before["mlm_loss"], after["mlm_loss"])
    assert metrics["init_model"] == uri and metrics["warmup_fraction"] == 0.06  # the continuing recipe's warmup
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["hidden_size"] == json.loads((start_model / "config.json").read_text())["hidden_size"]
    card = (tmp_path / "model" / "README.md").read_text()
    assert uri in card


def test_the_recipe_is_the_continuing_one_unless_overridden():
    from scratchbert.pretrain import RECIPES, PretrainConfig, schedule_settings

    scratch = PretrainConfig(dataset="d", out="o")
    assert schedule_settings(scratch) == RECIPES["scratch"]
    assert schedule_settings(PretrainConfig(dataset="d", out="o", init_model="m")) == RECIPES["continue"]
    assert schedule_settings(PretrainConfig(dataset="d", out="o", init_model="m", learning_rate=3e-4,
                                            warmup_fraction=0.0)) == (3e-4, 0.0)


def test_a_missing_nsp_head_is_created_with_a_warning(mlm_only_model, tmp_path, caplog):
    from scratchbert.pretrain import PretrainConfig, pretrain

    _, data = _corpus_and_dataset(tmp_path, str(mlm_only_model))
    with caplog.at_level(logging.WARNING, logger="scratchbert.pretrain"):
        metrics = pretrain(PretrainConfig(dataset=str(data), out=str(tmp_path / "model"), init_model=str(mlm_only_model),
                                          max_steps=2, batch_size=8, eval_steps=0, num_workers=0, logging_steps=1))
    assert metrics["steps"] == 2
    assert any("has no NSP head and pooler; new ones are trained" in r.getMessage() for r in caplog.records), caplog.text


def test_a_dataset_of_another_tokenizer_or_a_size_override_is_refused(start_model, built_dataset, other_dataset,
                                                                      tmp_path):
    from scratchbert.pretrain import PretrainConfig, pretrain

    with pytest.raises(ScratchBertError, match="was not built with the tokenizer of"):
        pretrain(PretrainConfig(dataset=str(other_dataset), out=str(tmp_path / "m"), init_model=str(start_model),
                                max_steps=1))
    with pytest.raises(ScratchBertError, match="--num-hidden-layers cannot change the size of a starting model"):
        pretrain(PretrainConfig(dataset=str(built_dataset), out=str(tmp_path / "m"), init_model=str(start_model),
                                max_steps=1, num_hidden_layers=4))
    assert not (tmp_path / "m").exists()
    # the starting model is an input: --out there (or a folder around it, or checkpoints in it) would overwrite it
    base = tmp_path / "base"
    shutil.copytree(start_model, base)
    weights = (base / "model.safetensors").read_bytes()
    for out, more in ((base, {}), (tmp_path, {}), (tmp_path / "m2", {"checkpoint_dir": str(base)})):
        with pytest.raises(ScratchBertError, match="the input .*base; writing there would destroy the input"):
            pretrain(PretrainConfig(dataset=str(built_dataset), out=str(out), init_model=str(base), max_steps=1,
                                    overwrite=True, **more))
    assert (base / "model.safetensors").read_bytes() == weights


def test_qa_fine_tuning_starts_from_an_s3_model_and_keeps_its_tokenizer(start_model, s3_env, s3_bucket, tmp_path):
    from scratchbert.qa import QAConfig, finetune_qa

    uri = f"s3://{s3_bucket}/for-qa"
    storage.publish(start_model, uri, version="v1")
    train = synthetic.write_squad(tmp_path / "train.json", 20, seed=1)
    dev = synthetic.write_squad(tmp_path / "dev.json", 5, seed=2)
    metrics = finetune_qa(QAConfig(model=uri, squad_train=str(train), squad_dev=str(dev), out=str(tmp_path / "qa"),
                                   max_seq_len=64, max_steps=2, batch_size=8, max_eval_examples=8))
    assert metrics["train_steps"] == 2
    assert tokenizer_fingerprint(load_tokenizer(tmp_path / "qa")) == tokenizer_fingerprint(load_tokenizer(start_model))
    assert uri in (tmp_path / "qa" / "README.md").read_text()


def test_prepare_starting_model_copies_a_checked_model(start_model, tmp_path):
    facts = starting_model.prepare_starting_model(starting_model.StartingModelConfig(
        init_model=str(start_model), out=str(tmp_path / "start"), max_seq_len=MAX_SEQ_LEN))
    assert facts["num_hidden_layers"] == 2 and (tmp_path / "start" / "model.safetensors").is_file()
    assert not (tmp_path / "start" / "README.md").exists()  # the new model gets its own card
    (tmp_path / "no-weights").mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (tmp_path / "no-weights" / name).write_bytes((start_model / name).read_bytes())
    with pytest.raises(ScratchBertError, match="has no weights"):
        starting_model.prepare_starting_model(starting_model.StartingModelConfig(
            init_model=str(tmp_path / "no-weights"), out=str(tmp_path / "start2")))
    assert not (tmp_path / "start2").exists()


def _saved_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def test_a_half_precision_checkpoint_is_trained_in_float32(trained_tokenizer, tmp_path):
    """A BERT saved in bf16 or fp16 (Hub checkpoints often are) was trained in that dtype: bf16
    rounded most updates away, fp16 lost Adam's epsilon and threw embedding rows far off."""
    import torch
    from transformers import BertConfig, BertForPreTraining

    from scratchbert.pretrain import PretrainConfig, pretrain
    from scratchbert.qa import QAConfig, finetune_qa

    tok = load_tokenizer(trained_tokenizer)
    config = BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=128)
    start = tmp_path / "half"
    BertForPreTraining(config).to(torch.float16).save_pretrained(start)
    tok.save_pretrained(start)
    before = _saved_tensors(start)["bert.embeddings.word_embeddings.weight"].float()

    _, data = _corpus_and_dataset(tmp_path, str(start))
    pretrain(PretrainConfig(dataset=str(data), out=str(tmp_path / "model"), init_model=str(start), max_steps=2,
                            batch_size=8, eval_steps=0, num_workers=0, logging_steps=1, learning_rate=1e-5))
    train = synthetic.write_squad(tmp_path / "train.json", 20, seed=1)
    dev = synthetic.write_squad(tmp_path / "dev.json", 5, seed=2)
    finetune_qa(QAConfig(model=str(start), squad_train=str(train), squad_dev=str(dev), out=str(tmp_path / "qa"),
                         max_seq_len=64, max_steps=2, batch_size=8, max_eval_examples=8, learning_rate=1e-5))
    for out in ("model", "qa"):
        tensors = _saved_tensors(tmp_path / out)
        assert {t.dtype for t in tensors.values()} == {torch.float32}, out
        assert json.loads((tmp_path / out / "config.json").read_text())["dtype"] == "float32", out
        # two steps at 1e-5 move a weight by about 2e-5, never by whole units
        after = tensors["bert.embeddings.word_embeddings.weight"]
        assert (after - before).abs().max() < 1e-3, out


def test_a_model_whose_vocabulary_is_not_its_tokenizers_is_refused_before_any_work(trained_tokenizer, tmp_path):
    """A starting model with more embedding rows than its tokenizer has tokens passed the tokenizer
    and pretrain stages; evaluate and qa-finetune then refused the model pretraining wrote."""
    from transformers import BertConfig

    from scratchbert.tokenizer import TokenizerConfig, train_tokenizer

    tok = load_tokenizer(trained_tokenizer)
    for extra in (8, -8):
        folder = tmp_path / f"vocab{extra}"
        BertConfig(vocab_size=len(tok) + extra, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=128).save_pretrained(folder)
        tok.save_pretrained(folder)
        message = f"the tokenizer has {len(tok)} tokens but the model at {folder} expects {len(tok) + extra}"
        with pytest.raises(ScratchBertError, match=message):
            starting_model.check_model(folder)
        corpus = synthetic.write_corpus(tmp_path / "text.txt", 20, seed=7)
        with pytest.raises(ScratchBertError, match=message):
            train_tokenizer(TokenizerConfig(corpus=str(corpus), out=str(tmp_path / "tok"), init_model=str(folder)))
        assert not (tmp_path / "tok").exists()


def test_a_model_with_one_token_type_is_refused_in_one_line(trained_tokenizer, tmp_path):
    """type_vocab_size 1 (no second segment): an internal IndexError in pretrain and qa-finetune."""
    from transformers import BertConfig, BertForQuestionAnswering

    from scratchbert.qa import QAConfig, answer, finetune_qa

    tok = load_tokenizer(trained_tokenizer)
    folder = tmp_path / "one-type"
    BertForQuestionAnswering(BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=128, type_vocab_size=1)).save_pretrained(folder)
    tok.save_pretrained(folder)
    message = "has 1 token type .*need 2; give a BERT model with type_vocab_size 2"
    with pytest.raises(ScratchBertError, match=message):
        starting_model.check_model(folder)
    train = synthetic.write_squad(tmp_path / "train.json", 4, seed=1)
    with pytest.raises(ScratchBertError, match=message):
        finetune_qa(QAConfig(model=str(folder), squad_train=str(train), squad_dev=str(train), out=str(tmp_path / "qa"),
                             max_seq_len=64, max_steps=1, batch_size=4))
    with pytest.raises(ScratchBertError, match=message):
        answer(folder, "Who founded the town?", "Marcus Loew founded the town.")
    assert not (tmp_path / "qa").exists()


def test_the_qa_model_of_a_starting_model_cuts_texts_to_its_positions(trained_tokenizer, tmp_path):
    """A starting model's tokenizer without model_max_length (read as 1e30) went into the QA model
    folder as it was: in plain transformers truncation=True cut nothing, and a long passage
    overflowed the model's positions."""
    from transformers import AutoTokenizer, BertConfig, BertForPreTraining

    from scratchbert.qa import QAConfig, finetune_qa

    tok = load_tokenizer(trained_tokenizer)
    assert tok.model_max_length > 10**6
    start = tmp_path / "start"
    BertForPreTraining(BertConfig(vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=128, max_position_embeddings=128)).save_pretrained(start)
    tok.save_pretrained(start)
    train = synthetic.write_squad(tmp_path / "train.json", 8, seed=1)
    finetune_qa(QAConfig(model=str(start), squad_train=str(train), squad_dev=str(train), out=str(tmp_path / "qa"),
                         max_seq_len=64, max_steps=1, batch_size=4, max_eval_examples=4))
    saved = AutoTokenizer.from_pretrained(str(tmp_path / "qa"))
    assert saved.model_max_length == 128
    assert len(saved("Who?", "the town " * 200, truncation="only_second")["input_ids"]) == 128


@pytest.mark.parametrize("config", ["{not json", '{"hidden_size": 64, "vocab_size": 2000}'], ids=["not-json", "no-model-type"])
def test_an_unreadable_config_is_refused_in_one_line(start_model, tmp_path, config):
    """A config.json without model_type (older BERT folders) was an internal ValueError, exit 1."""
    folder = tmp_path / "model"
    shutil.copytree(start_model, folder)
    (folder / "config.json").write_text(config)
    with pytest.raises(ScratchBertError, match=f"starting model {folder} has an unreadable config.json .*save_pretrained"):
        starting_model.check_model(folder)


def test_qa_fine_tuning_refuses_a_model_without_weights_before_reading_squad(start_model, tmp_path, monkeypatch):
    """A model folder without weights was refused only by transformers, after the SQuAD sets were
    read and cut into windows (minutes for all of SQuAD), in its own words."""
    from scratchbert import qa

    folder = tmp_path / "no-weights"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(start_model / name, folder / name)
    monkeypatch.setattr(qa, "load_squad", lambda *a, **k: pytest.fail("SQuAD was read"))
    with pytest.raises(ScratchBertError, match=f"model {folder} has no weights .*; give a complete model folder"):
        qa.finetune_qa(qa.QAConfig(model=str(folder), squad_train="train.json", squad_dev="dev.json",
                                   out=str(tmp_path / "qa"), max_steps=1))
    assert not (tmp_path / "qa").exists()


def test_a_model_with_relative_positions_is_refused(start_model, tmp_path):
    """transformers 5 ignores position_embedding_type: a relative-position BERT was read with
    absolute positions, its distance embeddings dropped, silently."""
    folder = tmp_path / "relative"
    shutil.copytree(start_model, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "position_embedding_type": "relative_key"}))
    with pytest.raises(ScratchBertError, match="has relative_key position embeddings; transformers runs BERT"):
        starting_model.check_model(folder)
    from scratchbert.qa import QAConfig, finetune_qa

    with pytest.raises(ScratchBertError, match="has relative_key position embeddings"):
        finetune_qa(QAConfig(model=str(folder), squad_train="train.json", squad_dev="dev.json",
                             out=str(tmp_path / "qa"), max_steps=1))


def test_a_starting_models_unreadable_tokenizer_is_named_by_its_address(tmp_path):
    """check_model reads a temporary copy: its tokenizer's errors name the address the run gave."""
    from transformers import BertConfig

    folder = tmp_path / "copy"
    BertConfig(vocab_size=10).save_pretrained(folder)
    (folder / "tokenizer.json").write_text('{"x"')
    with pytest.raises(ScratchBertError, match="the tokenizer in s3://b/model cannot be read") as e:
        starting_model.check_model(folder, where="s3://b/model")
    assert str(folder) not in str(e.value)
