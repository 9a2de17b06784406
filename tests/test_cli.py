"""The `sequoia` command end to end (in-process; a real process for exit codes and a pipe):
one-line errors, nothing left behind, pipes."""

import json
import os
import subprocess
import sys

import pytest

from sequoia_cli import artifacts
from sequoia_cli.tree import MAX_TREE_SIZE, expected_tokens, tree_table
from tests.conftest import assert_one_line_error, sequoia, sequoia_process

ACCEPTANCE = {"format": "sequoia-acceptance/1", "mode": "greedy", "temperature": 0.0,
              "acceptance": [0.6, 0.2, 0.1], "draft": "d", "target": "t"}
COUNTS = [1, 2, 4, 8, 16, 32]
PROFILE = {"format": "sequoia-profile/1", "device": "cpu", "dtype": "float32", "context_length": 64,
           "target": {"model": "t", "ms": {str(n): 100.0 + n for n in COUNTS}},
           "draft": {"model": "d", "ms": {str(n): 10.0 + 0.1 * n for n in COUNTS}}}


def put(folder, name, value) -> str:
    path = folder / name
    path.write_text(value if isinstance(value, str) else json.dumps(value), encoding="utf-8")
    return str(path)


@pytest.fixture
def workdir(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    put(folder, "acc.json", ACCEPTANCE)
    put(folder, "profile.json", PROFILE)
    put(folder, "bad.json", '{"format": "sequoia-acceptance/1", "acceptance": [0.5,')
    put(folder, "tree-kind.json", {"format": "sequoia-tree/1", "parents": [-1], "size": 1, "depth": 0})
    put(folder, "newer.json", dict(ACCEPTANCE, format="sequoia-acceptance/2"))
    put(folder, "nan.json", json.dumps(ACCEPTANCE).replace("[0.6, 0.2, 0.1]", "[0.6, NaN, 0.1]"))
    put(folder, "sum.json", dict(ACCEPTANCE, acceptance=[0.6, 0.5]))
    put(folder, "zero-ms.json", json.dumps(PROFILE).replace('"2": 102.0', '"2": 0'))
    put(folder, "no-one.json", json.dumps(PROFILE).replace('"1": 101.0, ', ""))
    put(folder, "loop.json", {"format": "sequoia-tree/1", "parents": [-1, 2, 0], "size": 3, "depth": 2})
    return folder


def assert_bad_input(result, folder, before, out, *words):
    """Exit 2, exactly one 'error:' line naming each of `words`, no traceback, nothing written."""
    assert_one_line_error(result, *words)
    assert result.stdout == ""
    if out is not None:
        assert not os.path.exists(out)
    assert sorted(os.listdir(folder)) == before, "stray files left behind"


BUILD_FAULTS = {
    # name: (arguments with {w} for the work folder, words the error must contain)
    "missing acceptance file": (["--acceptance", "{w}/nope.json", "--size", "4"], ["{w}/nope.json", "no such file"]),
    "path through a file": (["--acceptance", "{w}/acc.json/x", "--size", "4"], ["{w}/acc.json/x"]),
    "malformed json": (["--acceptance", "{w}/bad.json", "--size", "4"], ["{w}/bad.json", "not valid JSON"]),
    "wrong kind": (["--acceptance", "{w}/tree-kind.json", "--size", "4"],
                   ["{w}/tree-kind.json", "sequoia-tree/1", "sequoia-acceptance/1"]),
    "newer version": (["--acceptance", "{w}/newer.json", "--size", "4"],
                      ["{w}/newer.json", "sequoia-acceptance/2", "newer"]),
    "nan acceptance": (["--acceptance", "{w}/nan.json", "--size", "4"], ["{w}/nan.json", "acceptance[1]"]),
    "acceptance sum": (["--acceptance", "{w}/sum.json", "--size", "4"], ["{w}/sum.json", "sums to"]),
    "size zero": (["--acceptance", "{w}/acc.json", "--size", "0"], ["--size", "0"]),
    "negative depth": (["--acceptance", "{w}/acc.json", "--size", "4", "--max-depth", "-1"], ["--max-depth", "-1"]),
    "impossible size and depth": (["--acceptance", "{w}/acc.json", "--size", "100", "--max-depth", "1"],
                                  ["size 100", "depth <= 1", "4 nodes"]),
    "missing --size": (["--acceptance", "{w}/acc.json"], ["--size"]),
    "missing --acceptance": (["--size", "4"], ["--acceptance"]),
    "non-integer --size": (["--acceptance", "{w}/acc.json", "--size", "four"], ["--size", "integer"]),
    "unknown option": (["--acceptance", "{w}/acc.json", "--size", "4", "--depth", "3"], ["--depth"]),
    "absurd size": (["--acceptance", "{w}/acc.json", "--size", "1000000"], ["1000000", str(MAX_TREE_SIZE)]),
    "table past memory": (["--acceptance", "{w}/acc.json", "--size", "8000"], ["8000", "--max-depth"]),
}

OPTIMIZE_FAULTS = {
    "profile missing": (["--acceptance", "{w}/acc.json", "--profile", "{w}/nope.json"],
                        ["{w}/nope.json", "no such file"]),
    "profile is an acceptance": (["--acceptance", "{w}/acc.json", "--profile", "{w}/acc.json"],
                                 ["{w}/acc.json", "sequoia-profile/1"]),
    "profile zero ms": (["--acceptance", "{w}/acc.json", "--profile", "{w}/zero-ms.json"],
                        ["{w}/zero-ms.json", "target.ms.2"]),
    "profile without 1": (["--acceptance", "{w}/acc.json", "--profile", "{w}/no-one.json"],
                          ["{w}/no-one.json", "1 token"]),
    "max size past profile": (["--acceptance", "{w}/acc.json", "--profile", "{w}/profile.json", "--max-size", "64"],
                              ["--max-size 64", "32"]),
    "missing --profile": (["--acceptance", "{w}/acc.json"], ["--profile"]),
    "both stdin": (["--acceptance", "-", "--profile", "-"], ["--acceptance", "--profile", "standard input"]),
}

SHOW_FAULTS = {
    "missing tree": (["{w}/nope.json"], ["{w}/nope.json", "no such file"]),
    "acceptance given": (["{w}/acc.json"], ["{w}/acc.json", "sequoia-tree/1"]),
    "not topological": (["{w}/loop.json"], ["{w}/loop.json", "topological"]),
    "malformed": (["{w}/bad.json"], ["{w}/bad.json", "not valid JSON"]),
    "no argument": ([], ["tree", "Missing"]),
}


def _fill(items, folder):
    return [item.replace("{w}", str(folder)) for item in items]


@pytest.mark.parametrize("name", BUILD_FAULTS)
def test_build_tree_bad_input(workdir, name):
    args, words = BUILD_FAULTS[name]
    out = workdir / "tree.json"
    before = sorted(os.listdir(workdir))
    result = sequoia("build-tree", *_fill(args, workdir), "--out", out, "--table", workdir / "table.json", cwd=workdir)
    assert_bad_input(result, workdir, before, out, *_fill(words, workdir))
    assert not (workdir / "table.json").exists()


@pytest.mark.parametrize("name", OPTIMIZE_FAULTS)
def test_optimize_bad_input(workdir, name):
    args, words = OPTIMIZE_FAULTS[name]
    out = workdir / "tree.json"
    before = sorted(os.listdir(workdir))
    result = sequoia("optimize", *_fill(args, workdir), "--out", out, cwd=workdir, input="")
    assert_bad_input(result, workdir, before, out, *_fill(words, workdir))


@pytest.mark.parametrize("name", SHOW_FAULTS)
def test_show_bad_input(workdir, name):
    args, words = SHOW_FAULTS[name]
    before = sorted(os.listdir(workdir))
    result = sequoia("show", *_fill(args, workdir), cwd=workdir)
    assert_bad_input(result, workdir, before, None, *_fill(words, workdir))


@pytest.mark.parametrize("text, words", [
    ('{"format": "sequoia-acceptance/1", "width": 1' + "0" * 20_000_000 + "}", ["digits"]),
    ("[" * 100_000 + "]" * 100_000, ["recursion"]),
], ids=["integer of 20 million digits", "nesting 100,000 deep"])
def test_json_past_the_parser_limits(workdir, text, words):
    path = put(workdir, "odd.json", text)
    before = sorted(os.listdir(workdir))
    result = sequoia("build-tree", "--acceptance", path, "--size", "4", "--out", workdir / "tree.json")
    assert_bad_input(result, workdir, before, workdir / "tree.json", path, *words)


@pytest.mark.parametrize("out", ["/proc/x.json", "/proc/nope/x.json", "{w}/acc.json/x.json", "{w}"])
def test_unwritable_output(workdir, out):
    out = out.replace("{w}", str(workdir))
    before = sorted(os.listdir(workdir))
    result = sequoia("build-tree", "--acceptance", workdir / "acc.json", "--size", "4", "--out", out)
    assert_bad_input(result, workdir, before, None, out)
    result = sequoia("build-tree", "--acceptance", workdir / "acc.json", "--size", "4", "--out", workdir / "t.json",
                     "--table", out)
    assert_bad_input(result, workdir, before, workdir / "t.json", out)


def test_bad_stdin_names_stdin(workdir):
    before = sorted(os.listdir(workdir))
    result = sequoia("build-tree", "--acceptance", "-", "--size", "4", "--out", workdir / "tree.json",
                     input="[1, 2]", cwd=workdir)
    assert_bad_input(result, workdir, before, workdir / "tree.json", "<stdin>", "JSON object")
    result = sequoia("show", "-", input="", cwd=workdir)
    assert_bad_input(result, workdir, before, None, "<stdin>", "not valid JSON")


def test_bad_input_keeps_an_existing_output(workdir):
    out = put(workdir, "tree.json", "keep me")
    before = sorted(os.listdir(workdir))
    result = sequoia("build-tree", "--acceptance", workdir / "acc.json", "--size", "100", "--max-depth", "1",
                     "--out", out, cwd=workdir)
    assert result.returncode == 2
    assert (workdir / "tree.json").read_text() == "keep me"
    assert sorted(os.listdir(workdir)) == before


# ---------------------------------------------------------------- happy paths


def test_build_tree_piped_into_show(workdir):
    built = sequoia("build-tree", "--acceptance", workdir / "acc.json", "--size", "10", "--max-depth", "3",
                    "--out", "-", cwd=workdir)
    assert built.returncode == 0, built.stderr
    tree = artifacts.check_tree("<stdout>", json.loads(built.stdout))
    assert tree["size"] == 10 and tree["depth"] <= 3
    assert tree["expected_tokens"] == pytest.approx(expected_tokens(tree["parents"], [0.6, 0.2, 0.1]), rel=1e-12)
    assert tree["source"]["mode"] == "greedy"
    assert "10" in built.stderr  # the human summary goes to stderr, not into the pipe
    shown = sequoia("show", "-", input=built.stdout, cwd=workdir)
    assert shown.returncode == 0, shown.stderr
    assert "size 10" in shown.stdout
    assert f"{tree['expected_tokens']:.3f}" in shown.stdout
    for i in range(1, 10):
        assert f"{i}: child" in shown.stdout
    assert sorted(os.listdir(workdir)) == sorted(["acc.json", "profile.json", "bad.json", "tree-kind.json",
                                                  "newer.json", "nan.json", "sum.json", "zero-ms.json",
                                                  "no-one.json", "loop.json"])


def test_acceptance_from_stdin(workdir):
    result = sequoia("build-tree", "--acceptance", "-", "--size", "5", "--out", workdir / "tree.json",
                     input=json.dumps(ACCEPTANCE), cwd=workdir)
    assert result.returncode == 0, result.stderr
    tree = artifacts.read_tree(str(workdir / "tree.json"))
    assert tree["size"] == 5


def test_build_tree_table_matches_the_tree(workdir):
    out, table_path = workdir / "tree.json", workdir / "table.json"
    result = sequoia("build-tree", "--acceptance", workdir / "acc.json", "--size", "12", "--max-depth", "4",
                     "--out", out, "--table", table_path, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    tree = artifacts.read_tree(str(out))
    table = json.loads(table_path.read_text())
    assert table["max_size"] == 12 and table["max_depth"] == 4
    assert table["expected"][4][12] == pytest.approx(tree["expected_tokens"], abs=1e-12)
    reference = tree_table([0.6, 0.2, 0.1], 12, 4).expected
    for d in range(5):
        for n in range(1, 13):
            if reference[d, n] == float("-inf"):
                assert table["expected"][d][n] is None
            else:
                assert table["expected"][d][n] == pytest.approx(reference[d, n], abs=1e-12)
    assert not [name for name in os.listdir(workdir) if name.endswith(".tmp") or name.startswith(".")]


def test_optimize_writes_a_plan(workdir):
    out = workdir / "tree.json"
    result = sequoia("optimize", "--acceptance", workdir / "acc.json", "--profile", workdir / "profile.json",
                     "--max-depth", "5", "--out", out, cwd=workdir)
    assert result.returncode == 0, result.stderr
    tree = artifacts.read_tree(str(out))
    plan = tree["plan"]
    assert plan["size"] == tree["size"] and plan["depth"] == tree["depth"] <= 5
    assert plan["speedup"] == pytest.approx(max(c["speedup"] for c in plan["candidates"]), rel=1e-9)
    assert "chosen" in result.stderr


def test_optimize_reads_acceptance_from_stdin(workdir):
    result = sequoia("optimize", "--acceptance", "-", "--profile", workdir / "profile.json", "--max-size", "8",
                     "--out", "-", input=json.dumps(ACCEPTANCE), cwd=workdir)
    assert result.returncode == 0, result.stderr
    tree = artifacts.check_tree("<stdout>", json.loads(result.stdout))
    assert tree["size"] <= 8


@pytest.mark.parametrize("command", [[], ["build-tree"], ["optimize"], ["show"]])
def test_help_has_an_example(command):
    result = sequoia(*command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Example:" in result.stdout


def test_console_script_pipe_and_exit_codes(workdir):
    """As a shell runs it: build-tree's standard output piped into show, and exit code 2 from a
    real process."""
    code = "import sys; sys.argv[0] = 'sequoia'; from sequoia_cli.cli import main; main()"
    build = subprocess.Popen([sys.executable, "-c", code, "build-tree", "--acceptance", str(workdir / "acc.json"),
                              "--size", "6", "--out", "-"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    show = subprocess.run([sys.executable, "-c", code, "show", "-"], stdin=build.stdout, capture_output=True,
                          text=True, timeout=120)
    build.stdout.close()
    assert build.wait(timeout=120) == 0 and show.returncode == 0, show.stderr
    assert "size 6" in show.stdout and "5: child" in show.stdout
    assert_one_line_error(sequoia_process("show", workdir / "nope.json"), "no such file")
