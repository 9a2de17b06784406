"""Where an artifact goes: a regular file is replaced whole (written beside it, then renamed); a
device or a FIFO is written into and stays what it was; an empty path is one line."""

import json
import os
import stat
import threading

import pytest

from sequoia_cli import artifacts
from sequoia_cli.errors import BadInput
from tests.conftest import assert_one_line_error, sequoia

ACCEPTANCE = {"format": "sequoia-acceptance/1", "mode": "greedy", "temperature": 0.0, "acceptance": [0.6, 0.2]}


@pytest.fixture
def acceptance(tmp_path):
    path = tmp_path / "acc.json"
    path.write_text(json.dumps(ACCEPTANCE), encoding="utf-8")
    return str(path)


def build_tree(acceptance: str, out):
    return sequoia("build-tree", "--acceptance", acceptance, "--size", "4", "--out", str(out))


def test_out_onto_a_fifo_writes_into_it_and_leaves_it_a_fifo(acceptance, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text(encoding="utf-8")), daemon=True)
    reader.start()
    done = build_tree(acceptance, fifo)
    reader.join(timeout=30)
    assert done.returncode == 0, done.stderr
    assert json.loads(received[0])["size"] == 4
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert sorted(os.listdir(tmp_path)) == ["acc.json", "pipe"]  # no temporary file beside it


def test_out_onto_a_character_device_writes_into_it_and_leaves_it_a_device(acceptance, tmp_path):
    null = tmp_path / "null"
    try:
        os.mknod(null, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        with open(null, "w") as handle:  # a file system mounted nodev refuses to open device nodes
            handle.write("probe")
    except (PermissionError, OSError) as err:
        pytest.skip(f"cannot make or open a device node here: {err}")
    done = build_tree(acceptance, null)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISCHR(os.lstat(null).st_mode) and os.lstat(null).st_rdev == os.makedev(1, 3)
    assert sorted(os.listdir(tmp_path)) == ["acc.json", "null"]


def test_out_onto_dev_null_leaves_it_a_device(acceptance):
    done = build_tree(acceptance, os.devnull)
    assert done.returncode == 0, done.stderr
    assert stat.S_ISCHR(os.lstat(os.devnull).st_mode)


def test_out_through_a_symlink_writes_the_file_and_keeps_the_link(acceptance, tmp_path):
    real, link = tmp_path / "real.json", tmp_path / "link.json"
    real.write_text("old", encoding="utf-8")
    link.symlink_to(real)
    done = build_tree(acceptance, link)
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and json.loads(real.read_text(encoding="utf-8"))["size"] == 4


def test_out_onto_a_regular_file_replaces_it_whole(acceptance, tmp_path, monkeypatch):
    """A regular file is still renamed over (atomic): a failed rename leaves the old one."""
    out = tmp_path / "tree.json"
    out.write_text("previous", encoding="utf-8")
    renames = []
    real_replace = os.replace
    monkeypatch.setattr(artifacts.os, "replace", lambda src, dst: (renames.append(dst), real_replace(src, dst)))
    assert build_tree(acceptance, out).returncode == 0
    assert [os.path.realpath(dst) for dst in renames] == [os.path.realpath(out)]
    assert json.loads(out.read_text(encoding="utf-8"))["size"] == 4


@pytest.mark.parametrize("command", [
    ["build-tree", "--acceptance", "{acc}", "--size", "4", "--out", ""],
    ["build-tree", "--acceptance", "{acc}", "--size", "4", "--out", "{tmp}/t.json", "--table", ""],
    ["merge-acceptance", "{acc}", "--out", ""],
    ["decode", "--target", "t", "--method", "autoregressive", "--data", "{acc}", "--out", ""],
    ["decode", "--target", "t", "--method", "autoregressive", "--prompt", "hi", "--stats", ""],
], ids=["out", "table", "merge out", "decode out", "decode stats"])
def test_an_empty_output_path_is_one_line_naming_the_option(command, acceptance, tmp_path):
    before = sorted(os.listdir(tmp_path))
    done = sequoia(*[part.format(acc=acceptance, tmp=tmp_path) for part in command])
    option = next(option for option in ("--table", "--stats", "--out") if option in command)
    assert_one_line_error(done, option, "empty path")
    assert sorted(os.listdir(tmp_path)) == before


def test_writing_to_an_empty_path_is_bad_input():
    with pytest.raises(BadInput, match="empty"):
        artifacts.write_json("", {"x": 1})
