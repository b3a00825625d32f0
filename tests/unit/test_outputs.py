"""scratchbert.outputs: output folders appear whole or not at all, never destroy what they did
not make, are refused up front where they cannot be written, get normal permissions, and the
temporary folders of killed writers are cleaned up by the next write."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from scratchbert import outputs
from scratchbert.errors import ScratchBertError
from scratchbert.outputs import MARKER, atomic_output_dir, check_output, read_json, write_json


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_success_moves_the_folder_into_place_with_its_marker(tmp_path):
    out = tmp_path / "deep" / "er" / "out"
    with atomic_output_dir(out, stage="tokenizer") as tmp:
        assert tmp.is_dir() and tmp.parent == out.parent and not out.exists()
        (tmp / "a.txt").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    assert (out / "a.txt").read_text() == "a" and (out / "sub" / "b.txt").read_text() == "b"
    assert _names(out.parent) == ["out"]  # no temporary folder left
    assert json.loads((out / MARKER).read_text())["stage"] == "tokenizer" and outputs.stage_of(out) == "tokenizer"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o027, 0o750)])
def test_output_folders_get_the_permissions_a_plain_mkdir_would(tmp_path, umask, mode):
    """mkdtemp makes 0700 folders: a serving container running as another user could not read a model."""
    old = os.umask(umask)
    try:
        with atomic_output_dir(tmp_path / "out", stage="pretrain") as tmp:
            (tmp / "w").write_text("weights")
            (tmp / "private").write_text("weights")  # as safetensors saves them: 0600
            (tmp / "private").chmod(0o600)
            (tmp / "sub").mkdir(mode=0o700)
            (tmp / "sub" / "run").write_text("x")
            (tmp / "run.sh").write_text("#!/bin/sh\n")
            (tmp / "run.sh").chmod(0o700)
    finally:
        os.umask(old)
    out = tmp_path / "out"
    assert stat.S_IMODE(out.stat().st_mode) == stat.S_IMODE((out / "sub").stat().st_mode) == mode
    assert {stat.S_IMODE((out / f).stat().st_mode) for f in ("w", "private", "sub/run")} == {mode & 0o666}
    assert stat.S_IMODE((out / "run.sh").stat().st_mode) == 0o700 | (mode & 0o444)  # readable, its own x kept


def test_an_error_leaves_nothing_and_keeps_an_existing_folder(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out, stage="evaluate") as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert _names(tmp_path) == []
    with atomic_output_dir(out, stage="evaluate") as tmp:
        (tmp / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(out, stage="evaluate") as tmp:
            (tmp / "new.txt").write_text("new")
            raise KeyboardInterrupt
    assert _names(tmp_path) == ["out"] and _names(out) == sorted([MARKER, "old.txt"])


def test_the_same_stage_replaces_its_own_output(tmp_path):
    out = tmp_path / "out"
    for text in ("first", "second"):
        with atomic_output_dir(out, stage="dataset") as tmp:
            (tmp / f"{text}.txt").write_text(text)
    assert _names(out) == sorted([MARKER, "second.txt"]) and _names(tmp_path) == ["out"]


@pytest.mark.parametrize("make, words", [
    (lambda p: (p.mkdir(), (p / "notes.txt").write_text("my notes")), "not written by scratchbert"),
    (lambda p: p.write_text("a file of mine"), "is an existing file"),
    (lambda p: (p.mkdir(), outputs.write_marker(p, "tokenizer")), "the output of `scratchbert tokenizer`"),
    (lambda p: (p.mkdir(), outputs.write_marker(p, "pretrain-logs")), r"`scratchbert pretrain` \(its logs\)"),
])
def test_what_another_stage_or_a_person_made_is_refused_unless_overwrite(tmp_path, make, words):
    out = tmp_path / "out"
    make(out)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(ScratchBertError, match=words) as e:
        with atomic_output_dir(out, stage="dataset"):
            pytest.fail("the block must not run")
    assert "--overwrite" in str(e.value) and "\n" not in str(e.value)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing touched
    with atomic_output_dir(out, stage="dataset", overwrite=True) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _names(out) == sorted([MARKER, "new.txt"]) and _names(tmp_path) == ["out"]


def test_an_empty_folder_is_not_protected(tmp_path):
    (tmp_path / "out").mkdir()
    with atomic_output_dir(tmp_path / "out", stage="dataset") as tmp:
        (tmp / "x").write_text("x")
    assert _names(tmp_path / "out") == sorted([MARKER, "x"])


@pytest.mark.parametrize("out, given, words", [
    ("corpus.txt", "corpus.txt", "is the input"),
    ("data", "data", "is the input"),
    ("data/inner", "data", "is inside the input"),
    (".", "data", "contains"),
    ("parent", "parent/data", "contains the input"),
])
def test_an_output_that_is_inside_or_holds_an_input_is_refused_even_with_overwrite(tmp_path, monkeypatch, out, given, words):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "part.arrow").write_text("examples")
    (tmp_path / "corpus.txt").write_text("text")
    (tmp_path / "parent" / "data").mkdir(parents=True)
    monkeypatch.chdir(tmp_path / "parent" / "data")  # the current folder is protected too, for "."
    target = tmp_path / out
    for overwrite in (False, True):
        with pytest.raises(ScratchBertError, match=words):
            check_output(target, stage="pretrain", inputs=[tmp_path / given, "hf://x/y", ""], overwrite=overwrite)
    assert (tmp_path / "data" / "part.arrow").read_text() == "examples" and (tmp_path / "corpus.txt").read_text() == "text"


def test_a_folder_that_a_link_in_an_input_leads_to_is_an_input_too(tmp_path):
    """A corpus folder reads its linked subfolders as its own: an output there (or around them)
    passed the check, and with --overwrite replaced text the corpus reads."""
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    (tmp_path / "elsewhere" / "deep" / "more.txt").write_text("linked text")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "a.txt").write_text("text")
    (tmp_path / "corpus" / "sub").mkdir()
    (tmp_path / "corpus" / "sub" / "more").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    for out, words in (("elsewhere", "is .*elsewhere, which a link in the input .*corpus leads to"),
                       ("elsewhere/deep/tok", "is inside"), (".", "contains")):
        for overwrite in (False, True):
            with pytest.raises(ScratchBertError, match=words) as e:
                check_output(tmp_path / out, stage="tokenizer", inputs=[tmp_path / "corpus"], overwrite=overwrite)
            assert "\n" not in str(e.value)
    assert check_output(tmp_path / "tok", stage="tokenizer", inputs=[tmp_path / "corpus"]) == tmp_path / "tok"
    assert (tmp_path / "elsewhere" / "deep" / "more.txt").read_text() == "linked text"


def test_the_current_folder_is_never_an_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for out in (tmp_path, tmp_path.parent):
        with pytest.raises(ScratchBertError, match="contains the current folder"):
            check_output(out, stage="pretrain", overwrite=True)


def test_a_mount_point_is_never_an_output(tmp_path, monkeypatch):
    """An output is written beside its folder and renamed into place, and a mount point (a volume at
    /mnt/models) cannot be renamed: the run ended with its finished output left beside it, and the
    next run deleted that as a killed writer's. Refused first, with what to give instead; a
    download into one likewise."""
    from scratchbert import storage

    mount = tmp_path / "models"
    mount.mkdir()
    real = os.path.ismount
    monkeypatch.setattr(os.path, "ismount", lambda p: os.fspath(p) == os.fspath(mount) or real(p))
    with pytest.raises(ScratchBertError, match="is a mount point, which cannot be replaced whole; give a folder inside it"):
        check_output(mount, stage="pretrain", overwrite=True)
    assert check_output(mount / "bert", stage="pretrain") == mount / "bert"
    with pytest.raises(ScratchBertError, match="is a mount point"):
        storage.download("s3://models/bert/", mount, overwrite=True)


@pytest.mark.parametrize("where, words", [
    ("/proc/scratchbert-out", "no folder can be created in /proc"),
    ("{file}/out", "is a file, not a folder"),
    ("{file}/deeper/out", "is a file, not a folder"),
    ("/dev/null", "neither a folder nor a file"),
])
def test_unwritable_places_are_found_before_any_work(tmp_path, where, words):
    (tmp_path / "a-file").write_text("x")
    out = where.format(file=tmp_path / "a-file")
    with pytest.raises(ScratchBertError, match=words) as e:
        check_output(out, stage="pretrain", overwrite=True)
    assert "\n" not in str(e.value)
    assert _names(tmp_path) == ["a-file"]  # the probe left nothing behind


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_found_before_any_work(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(ScratchBertError, match="Permission denied"):
            check_output(ro / "out", stage="pretrain")
    finally:
        ro.chmod(0o755)


def test_overwrite_false_without_a_stage_refuses_an_existing_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "x").write_text("x")
    with pytest.raises(ScratchBertError, match="already exists"):
        with atomic_output_dir(out):
            pytest.fail("the block must not run")
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "y").write_text("y")
    assert _names(out) == ["y"]  # no marker without a stage (plain downloads)


_WRITER = """
import sys, time
from scratchbert.outputs import atomic_output_dir
with atomic_output_dir(sys.argv[1], stage="pretrain") as tmp:
    (tmp / "half.txt").write_text("half")
    print("ready", flush=True)
    time.sleep(60)
"""


def _start_writer(out):
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stdout.close()


def test_kill_9_inside_the_block_leaves_an_orphan_that_the_next_write_removes(tmp_path):
    """A SIGKILL while a stage writes its output (the final save) leaves the old output as it was
    and a locked-no-more .OUT.tmp-* folder; the next write to OUT removes it, while a live
    writer's folder (still locked) is left alone."""
    out = tmp_path / "out"
    with atomic_output_dir(out, stage="pretrain") as tmp:
        (tmp / "old.txt").write_text("old")
    killed = _start_writer(out)
    _kill(killed)
    (orphan,) = tmp_path.glob(".out.tmp-*")
    assert (orphan / "half.txt").read_text() == "half" and _names(out) == sorted([MARKER, "old.txt"])

    live = _start_writer(out)
    try:
        (live_tmp,) = set(tmp_path.glob(".out.tmp-*")) - {orphan}
        with atomic_output_dir(out, stage="pretrain") as tmp:
            (tmp / "new.txt").write_text("new")
        assert not orphan.exists()  # the killed writer's leftovers: removed
        assert (live_tmp / "half.txt").read_text() == "half"  # the live writer's: kept
    finally:
        _kill(live)
    assert _names(out) == sorted([MARKER, "new.txt"])
    outputs.clean_orphans(out)
    assert _names(tmp_path) == ["out"]


def test_without_an_atomic_exchange_a_kill_between_the_renames_is_repaired(tmp_path, monkeypatch):
    """Where renameat2(RENAME_EXCHANGE) is missing, the old output is moved aside first; a kill
    right then leaves no OUT, and the next write puts the old one back before anything else."""
    out = tmp_path / "out"
    with atomic_output_dir(out, stage="pretrain") as tmp:
        (tmp / "old.txt").write_text("old")
    monkeypatch.setattr(outputs, "_exchange", lambda a, b: False)
    with atomic_output_dir(out, stage="pretrain") as tmp:
        (tmp / "new.txt").write_text("new")
    assert _names(out) == sorted([MARKER, "new.txt"]) and _names(tmp_path) == ["out"]
    os.replace(out, tmp_path / ".out.old-999999999-abc")  # as if killed between the two renames
    assert outputs.clean_orphans(out) == [] and _names(out) == sorted([MARKER, "new.txt"])


def test_an_output_is_on_the_disk_before_it_replaces_the_old_one(tmp_path, monkeypatch):
    """A rename is atomic for processes, not for a machine that loses power: every file and folder
    of the new output is synced before the swap, and the folder holding it after."""
    out = tmp_path / "out"
    with atomic_output_dir(out, stage="pretrain") as tmp:
        (tmp / "old.txt").write_text("old")
    events, fsync, swap = [], os.fsync, outputs._swap_into_place

    def recorded_fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    monkeypatch.setattr(outputs, "_swap_into_place", lambda a, b: (events.append(("swap", str(a))), swap(a, b)))
    with atomic_output_dir(out, stage="pretrain") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "w.bin").write_bytes(b"weights")
        (tmp / "link").symlink_to("sub/w.bin")
    swapped = events.index(("swap", str(tmp)))
    before = {path for kind, path in events[:swapped]}
    assert before == {str(tmp), str(tmp / "sub"), str(tmp / "sub" / "w.bin"), str(tmp / MARKER)}
    assert events[swapped + 1:] == [("fsync", str(tmp_path))]
    assert (out / "link").read_bytes() == b"weights"


def test_json_round_trip_is_sorted_and_newline_terminated(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"b": 1, "a": [1.5, "x"], "c": {"z": None}})
    text = path.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"') < text.index('"c"')
    assert read_json(path) == {"a": [1.5, "x"], "b": 1, "c": {"z": None}}


def test_stage_of_reads_markers_and_tolerates_junk(tmp_path):
    assert outputs.stage_of(tmp_path) is None
    (tmp_path / MARKER).write_text("not json")
    assert outputs.stage_of(tmp_path) is None and outputs.read_marker(tmp_path) == {}
    outputs.write_marker(tmp_path, "qa-finetune", {"tokenizer_fingerprint": "abc"})
    assert outputs.read_marker(tmp_path)["tokenizer_fingerprint"] == "abc"


def test_check_distinct_refuses_overlapping_outputs(tmp_path):
    outputs.check_distinct({"--out": tmp_path / "m", "--logs": tmp_path / "m-logs"})
    with pytest.raises(ScratchBertError, match="--out .* and --logs .* overlap"):
        outputs.check_distinct({"--out": tmp_path / "m", "--logs": tmp_path / "m"})
    with pytest.raises(ScratchBertError, match="overlap"):
        outputs.check_distinct({"--out": tmp_path / "m", "--checkpoint-dir": tmp_path / "m" / "ckpt"})


def test_sibling_names():
    assert str(outputs.sibling("runs/model", "logs")) == "runs/model-logs"


def test_a_stage_removes_orphans_when_it_starts(tmp_path):
    """The check at the start of a stage already removes what a killed writer left (a model's
    worth of disk need not wait for this run's training to end)."""
    out = tmp_path / "out"
    killed = _start_writer(out)
    _kill(killed)
    assert len(list(tmp_path.glob(".out.tmp-*"))) == 1
    check_output(out, stage="pretrain")
    assert _names(tmp_path) == []


def test_an_address_is_not_taken_for_a_local_folder(tmp_path, monkeypatch):
    """Path("s3://b/x") is the local folder s3:/b/x: every output and its overlap check refuse it."""
    from scratchbert.outputs import atomic_output_dir, check_distinct, check_output

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ScratchBertError, match="--logs s3://b/logs is an address"):
        check_distinct({"--out": "out", "--logs": "s3://b/logs"})
    with pytest.raises(ScratchBertError, match="--out hf://owner/name is an address"):
        check_output("hf://owner/name", stage="tokenizer")
    with pytest.raises(ScratchBertError, match="--checkpoint-dir s3://b/c is an address"), \
            atomic_output_dir("s3://b/c", what="--checkpoint-dir"):
        pass
    assert list(tmp_path.iterdir()) == []
