"""No credentials in the repository: known key formats anywhere in the tracked or untracked
(not ignored) files, and no Secret manifest whose values are anything but placeholders."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PLACEHOLDERS = {"", "REPLACE_ME"}
MAX_BYTES = 2_000_000

# Formats with a fixed shape; each is assembled so that this file does not match itself.
KEY_PATTERNS = {
    "AWS access key id": re.compile("(?:A" "KIA|A" "SIA)[0-9A-Z]{16}"),
    "private key block": re.compile("-----BEGIN [A-Z ]*PRIVATE" " KEY-----"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36}|github_pat_[A-Za-z0-9_]{50,})\b"),
    "Hugging Face token": re.compile(r"\bh" r"f_[A-Za-z0-9]{30,}\b"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b"),
    "AWS secret assignment": re.compile(
        r"(?i)aws_secret_access_key\s*[:=]\s*[\"']?[A-Za-z0-9/+]{40}\b"),
}


def repo_files() -> list[Path]:
    """Tracked files plus untracked ones that git does not ignore (what a commit could add)."""
    git = shutil.which("git")
    if git is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    out = subprocess.run([git, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, check=True, timeout=60).stdout
    files = [ROOT / p for p in out.decode().split("\0") if p]
    return [f for f in files if f.is_file() and f.stat().st_size <= MAX_BYTES]


def read_text(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary
    return data.decode("utf-8", errors="replace")


def key_findings(text: str) -> list[str]:
    return [name for name, rx in KEY_PATTERNS.items() if rx.search(text)]


def secret_value_findings(text: str) -> list[str]:
    """Secret objects in a YAML stream whose data/stringData are not placeholders."""
    findings = []
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError:
        return findings
    for doc in docs:
        if not isinstance(doc, dict) or doc.get("kind") != "Secret":
            continue
        name = doc.get("metadata", {}).get("name", "?")
        for key, value in (doc.get("stringData") or {}).items():
            if str(value) not in PLACEHOLDERS:
                findings.append(f"Secret {name} stringData.{key}")
        for key, value in (doc.get("data") or {}).items():
            try:
                plain = base64.b64decode(str(value), validate=True).decode()
            except (ValueError, UnicodeDecodeError):
                plain = "<undecodable>"
            if plain not in PLACEHOLDERS:
                findings.append(f"Secret {name} data.{key}")
    return findings


def test_scanner_finds_what_it_should():
    """The patterns must fire on real-looking values (built here, never committed)."""
    fake_id = "AK" + "IA" + "Q" * 16
    assert key_findings(f"key = {fake_id}") == ["AWS access key id"]
    assert key_findings("-----BEGIN RSA " + "PRIVATE KEY-----")
    assert key_findings("AWS_SECRET_ACCESS_KEY=" + "a1B2" * 10)
    assert not key_findings("AWS_SECRET_ACCESS_KEY=REPLACE_ME")
    leaked = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {AWS_SECRET_ACCESS_KEY: hunter2}\n"
    assert secret_value_findings(leaked) == ["Secret s stringData.AWS_SECRET_ACCESS_KEY"]
    encoded = base64.b64encode(b"hunter2").decode()
    assert secret_value_findings(f"kind: Secret\nmetadata: {{name: s}}\ndata: {{k: {encoded}}}\n")
    assert not secret_value_findings("kind: Secret\nmetadata: {name: s}\nstringData: {k: REPLACE_ME}\n")


def test_no_credentials_in_repository():
    findings = []
    files = repo_files()
    assert any(f.name == "settings.py" for f in files), "the file listing missed the repository"
    for path in files:
        text = read_text(path)
        if text is None:
            continue
        rel = path.relative_to(ROOT)
        findings += [f"{rel}: {name}" for name in key_findings(text)]
        if path.suffix in (".yaml", ".yml"):
            findings += [f"{rel}: {f}" for f in secret_value_findings(text)]
    assert not findings, "credentials in the repository:\n" + "\n".join(findings)
