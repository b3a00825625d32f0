"""scratchbert.outputs: output folders appear whole or not at all; JSON helpers."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest

from scratchbert.errors import ScratchBertError
from scratchbert.outputs import atomic_output_dir, read_json, write_json


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_success_moves_the_folder_into_place(tmp_path):
    out = tmp_path / "deep" / "er" / "out"
    with atomic_output_dir(out) as tmp:
        assert tmp.is_dir() and tmp.parent == out.parent and not out.exists()
        (tmp / "a.txt").write_text("a")
        (tmp / "sub").mkdir()
        (tmp / "sub" / "b.txt").write_text("b")
    assert (out / "a.txt").read_text() == "a" and (out / "sub" / "b.txt").read_text() == "b"
    assert _names(out.parent) == ["out"]  # no temporary folder left


def test_an_error_leaves_nothing_and_keeps_an_existing_folder(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with atomic_output_dir(out) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("boom")
    assert _names(tmp_path) == []
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(out) as tmp:
            (tmp / "new.txt").write_text("new")
            raise KeyboardInterrupt
    assert _names(tmp_path) == ["out"] and _names(out) == ["old.txt"]


def test_success_replaces_an_existing_folder_or_file(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with atomic_output_dir(out) as tmp:
        (tmp / "new.txt").write_text("new")
    assert _names(out) == ["new.txt"] and _names(tmp_path) == ["out"]
    other = tmp_path / "file"
    other.write_text("a file")
    with atomic_output_dir(other) as tmp:
        (tmp / "x").write_text("x")
    assert other.is_dir() and _names(other) == ["x"]


def test_overwrite_false_refuses_an_existing_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ScratchBertError, match="already exists"):
        with atomic_output_dir(out, overwrite=False):
            pytest.fail("the block must not run")
    assert _names(tmp_path) == ["out"]


def test_kill_9_inside_the_block_leaves_no_output(tmp_path):
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import sys, time
        from scratchbert.outputs import atomic_output_dir
        with atomic_output_dir({str(out)!r}) as tmp:
            (tmp / "half.txt").write_text("half")
            print("ready", flush=True)
            time.sleep(60)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdout.close()
    assert not out.exists()


def test_json_round_trip_is_sorted_and_newline_terminated(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"b": 1, "a": [1.5, "x"], "c": {"z": None}})
    text = path.read_text()
    assert text.endswith("}\n") and text.index('"a"') < text.index('"b"') < text.index('"c"')
    assert read_json(path) == {"a": [1.5, "x"], "b": 1, "c": {"z": None}}
