"""Reading, checking and writing the three artifact kinds (sequoia_cli.artifacts)."""

import copy
import io
import json
import os
import sys

import pytest

from sequoia_cli import artifacts
from sequoia_cli.errors import BadInput


def acceptance_artifact(**extra) -> dict:
    return {
        "format": "sequoia-acceptance/1", "mode": "stochastic", "temperature": 0.6, "top_p": 0.9,
        "width": 16, "acceptance": [0.61, 0.12, 0.05], "rejected_all": 0.22, "samples": 12000,
        "stderr": [0.004, 0.003, 0.002], "draft": "d", "target": "t", "dataset": "x", **extra,
    }


def tree_artifact(**extra) -> dict:
    # E = 1 + .61 + .12 + .61 * .61
    return {
        "format": "sequoia-tree/1", "parents": [-1, 0, 0, 1], "size": 4, "depth": 2,
        "expected_tokens": 1 + 0.61 + 0.12 + 0.61 * 0.61, "acceptance": [0.61, 0.12], **extra,
    }


def profile_artifact(**extra) -> dict:
    return {
        "format": "sequoia-profile/1", "device": "cpu", "dtype": "bfloat16", "context_length": 256,
        "target": {"model": "t", "ms": {"1": 310.0, "2": 318.0, "4": 335.0}},
        "draft": {"model": "d", "ms": {"1": 95.0, "2": 97.0}}, **extra,
    }


READERS = {
    "acceptance": (artifacts.read_acceptance, acceptance_artifact),
    "tree": (artifacts.read_tree, tree_artifact),
    "profile": (artifacts.read_profile, profile_artifact),
}


def write(tmp_path, value, name="artifact.json") -> str:
    path = tmp_path / name
    path.write_text(value if isinstance(value, str) else json.dumps(value), encoding="utf-8")
    return str(path)


def read_fault(reader, path: str) -> str:
    with pytest.raises(BadInput) as err:
        reader(path)
    message = str(err.value)
    assert "\n" not in message
    assert path in message, f"message does not name the file: {message}"
    return message


# ---------------------------------------------------------------- valid files


@pytest.mark.parametrize("kind", READERS)
def test_valid_artifacts_pass_and_keep_extra_fields(tmp_path, kind):
    reader, make = READERS[kind]
    original = make(note="kept", nested={"a": [1, 2]})
    result = reader(write(tmp_path, original))
    assert result == original
    assert result["note"] == "kept" and result["nested"] == {"a": [1, 2]}


@pytest.mark.parametrize("kind", READERS)
def test_newer_minor_version_is_read(tmp_path, kind):
    reader, make = READERS[kind]
    artifact = make()
    artifact["format"] = artifact["format"] + ".7"
    assert reader(write(tmp_path, artifact))["format"].endswith("/1.7")


def test_optional_fields_may_be_absent(tmp_path):
    minimal_acceptance = {"format": "sequoia-acceptance/1", "mode": "greedy", "acceptance": [0.5, 0.2]}
    assert artifacts.read_acceptance(write(tmp_path, minimal_acceptance, "a.json")) == minimal_acceptance
    minimal_tree = {"format": "sequoia-tree/1", "parents": [-1], "size": 1, "depth": 0}
    assert artifacts.read_tree(write(tmp_path, minimal_tree, "t.json")) == minimal_tree
    no_draft = profile_artifact()
    del no_draft["draft"]
    assert artifacts.read_profile(write(tmp_path, no_draft, "p.json")) == no_draft
    null_draft = profile_artifact(draft=None)
    assert artifacts.read_profile(write(tmp_path, null_draft, "q.json"))["draft"] is None


def test_acceptance_may_sum_to_exactly_one(tmp_path):
    artifact = acceptance_artifact(acceptance=[0.5, 0.3, 0.2], rejected_all=0.0)
    assert artifacts.read_acceptance(write(tmp_path, artifact))["acceptance"] == [0.5, 0.3, 0.2]


def test_timings_are_sorted_integers():
    section = {"ms": {"4": 3.0, "1": 1, "2": 2.5}}
    assert list(artifacts.timings(section).items()) == [(1, 1.0), (2, 2.5), (4, 3.0)]


# ---------------------------------------------------------------- file-level faults


@pytest.mark.parametrize("kind", READERS)
def test_missing_file(tmp_path, kind):
    reader, _ = READERS[kind]
    message = read_fault(reader, str(tmp_path / "nope.json"))
    assert "no such file" in message


@pytest.mark.parametrize("kind", READERS)
@pytest.mark.parametrize("text", ['{"format": "sequoia-tree/1", ', "", "not json", "{'single': 1}"])
def test_invalid_json(tmp_path, kind, text):
    reader, _ = READERS[kind]
    message = read_fault(reader, write(tmp_path, text))
    assert "not valid JSON" in message


@pytest.mark.parametrize("kind", READERS)
@pytest.mark.parametrize("text, found", [("[1, 2]", "list"), ('"text"', "str"), ("3", "int"), ("null", "NoneType")])
def test_not_an_object(tmp_path, kind, text, found):
    reader, _ = READERS[kind]
    message = read_fault(reader, write(tmp_path, text))
    assert "JSON object" in message and found in message


@pytest.mark.parametrize("kind", READERS)
def test_missing_format(tmp_path, kind):
    reader, make = READERS[kind]
    artifact = make()
    del artifact["format"]
    message = read_fault(reader, write(tmp_path, artifact))
    assert "missing field 'format'" in message
    assert f"sequoia-{kind}/1" in message


@pytest.mark.parametrize("kind, other", [("acceptance", "tree"), ("tree", "profile"), ("profile", "acceptance")])
def test_wrong_kind(tmp_path, kind, other):
    reader, _ = READERS[kind]
    _, make_other = READERS[other]
    message = read_fault(reader, write(tmp_path, make_other()))
    assert f"sequoia-{other}/1" in message  # what was found
    assert f"sequoia-{kind}/1" in message  # what was expected


@pytest.mark.parametrize("kind", READERS)
@pytest.mark.parametrize("version", ["2", "2.0", "10"])
def test_newer_major_version(tmp_path, kind, version):
    reader, make = READERS[kind]
    artifact = make(format=f"sequoia-{kind}/{version}")
    message = read_fault(reader, write(tmp_path, artifact))
    assert f"sequoia-{kind}/{version}" in message
    assert "newer" in message


@pytest.mark.parametrize("kind", READERS)
@pytest.mark.parametrize("version", ["", "x", "one", "²"], ids=["empty", "x", "one", "superscript-two"])
def test_format_without_a_version_number(tmp_path, kind, version):
    # '²' is a str.isdigit() digit that int() refuses: it must still be a BadInput.
    reader, make = READERS[kind]
    artifact = make(format=f"sequoia-{kind}/{version}")
    message = read_fault(reader, write(tmp_path, artifact))
    assert "version" in message


def test_unreadable_paths(tmp_path):
    message = read_fault(artifacts.read_acceptance, str(tmp_path))  # a directory
    assert "cannot read" in message
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"format": "\xff"}')
    message = read_fault(artifacts.read_acceptance, str(bad))
    assert "cannot read" in message


def test_path_through_a_regular_file(tmp_path):
    # A typo such as acc.json/x: the OS says "not a directory"; still bad input, not a crash.
    regular = write(tmp_path, acceptance_artifact(), "acc.json")
    message = read_fault(artifacts.read_acceptance, regular + "/x")
    assert "acc.json/x" in message


# ---------------------------------------------------------------- field faults


def _set(path, value):
    def mutate(artifact):
        target = artifact
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return mutate


def _delete(*path):
    def mutate(artifact):
        target = artifact
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return mutate


TREE_FAULTS = {
    "missing parents": (_delete("parents"), ["missing field 'parents'"]),
    "missing size": (_delete("size"), ["missing field 'size'"]),
    "missing depth": (_delete("depth"), ["missing field 'depth'"]),
    "parents not a list": (_set(["parents"], "0,1"), ["'parents'"]),
    "parents empty": (_set(["parents"], []), ["empty"]),
    "not topological": (_set(["parents"], [-1, 2, 0, 1]), ["parents[1]", "topological"]),
    "self parent": (_set(["parents"], [-1, 0, 2, 1]), ["parents[2]", "topological"]),
    "root parent": (_set(["parents"], [0, 0, 0, 1]), ["parents[0]", "-1"]),
    "float parent": (_set(["parents"], [-1, 0, 0, 1.5]), ["parents[3]", "integer"]),
    "size disagrees": (_set(["size"], 5), ["'size'", "5", "4"]),
    "size not int": (_set(["size"], "4"), ["'size'"]),
    "depth disagrees": (_set(["depth"], 3), ["'depth'", "3", "2"]),
    "expected disagrees": (_set(["expected_tokens"], 2.5), ["'expected_tokens'", "2.5"]),
    "expected below one": (_set(["expected_tokens"], 0.5), ["'expected_tokens'"]),
    "acceptance nan": (_set(["acceptance"], [0.61, float("nan")]), ["acceptance[1]"]),
    "acceptance negative": (_set(["acceptance"], [-0.1, 0.12]), ["acceptance[0]"]),
}

ACCEPTANCE_FAULTS = {
    "missing acceptance": (_delete("acceptance"), ["missing field 'acceptance'"]),
    "missing mode": (_delete("mode"), ["missing field 'mode'"]),
    "bad mode": (_set(["mode"], "beam"), ["'mode'", "beam"]),
    "empty acceptance": (_set(["acceptance"], []), ["'acceptance'"]),
    "acceptance not a list": (_set(["acceptance"], 0.5), ["'acceptance'"]),
    "string entry": (_set(["acceptance"], [0.5, "0.1"]), ["acceptance[1]", "not a number"]),
    "bool entry": (_set(["acceptance"], [0.5, True]), ["acceptance[1]", "not a number"]),
    "negative": (_set(["acceptance"], [0.5, -0.01]), ["acceptance[1]", "-0.01"]),
    "above one": (_set(["acceptance"], [1.5]), ["acceptance[0]", "1.5"]),
    "sums past one": (_set(["acceptance"], [0.7, 0.2, 0.2]), ["'acceptance'", "sums to", "1.1"]),
    "rejected_all disagrees": (_set(["rejected_all"], 0.5), ["'rejected_all'"]),
    "width too small": (_set(["width"], 2), ["'width'", "3 entries"]),
    "negative temperature": (_set(["temperature"], -1), ["'temperature'"]),
    "ranks not an object": (_set(["ranks"], [[1, 0]]), ["'ranks'", "object"]),
    "ranks key not a prompt": (_set(["ranks"], {"²": [1]}), ["'ranks'", "'²'"]),
    "ranks not a list": (_set(["ranks"], {"0": 1}), ["'ranks[0]'", "not a list"]),
    "rank past the width": (_set(["ranks"], {"0": [1, 17]}), ["ranks[0][1]", "17", "0..16"]),
    "rank not an integer": (_set(["ranks"], {"0": [1.0]}), ["ranks[0][0]"]),
}

PROFILE_FAULTS = {
    "missing target": (_delete("target"), ["missing field 'target'"]),
    "missing target ms": (_delete("target", "ms"), ["missing field 'target.ms'"]),
    "missing context": (_delete("context_length"), ["missing field 'context_length'"]),
    "target not object": (_set(["target"], [1, 2]), ["'target'"]),
    "ms empty": (_set(["target", "ms"], {}), ["'target.ms'"]),
    "ms not object": (_set(["target", "ms"], [310.0]), ["'target.ms'"]),
    "negative ms": (_set(["target", "ms", "2"], -1.0), ["'target.ms.2'", "-1.0"]),
    "zero ms": (_set(["draft", "ms", "2"], 0), ["'draft.ms.2'", "positive"]),
    "string ms": (_set(["target", "ms", "2"], "318"), ["'target.ms.2'", "not a number"]),
    "non-integer key": (_set(["target", "ms", "1.5"], 312.0), ["'target.ms'", "'1.5'"]),
    "word key": (_set(["draft", "ms", "two"], 97.0), ["'draft.ms'", "'two'"]),
    "zero key": (_set(["target", "ms", "0"], 300.0), ["'target.ms'", "'0'"]),
    "negative key": (_set(["target", "ms", "-2"], 300.0), ["'target.ms'", "'-2'"]),
    "superscript key": (_set(["target", "ms", "²"], 300.0), ["'target.ms'", "²"]),
    "missing one target": (_delete("target", "ms", "1"), ["'target.ms'", "1 token"]),
    "missing one draft": (_delete("draft", "ms", "1"), ["'draft.ms'", "1 token"]),
}


def _cases(kind, faults):
    return [pytest.param(kind, mutate, words, id=f"{kind}: {name}") for name, (mutate, words) in faults.items()]


@pytest.mark.parametrize(
    "kind, mutate, words",
    _cases("tree", TREE_FAULTS) + _cases("acceptance", ACCEPTANCE_FAULTS) + _cases("profile", PROFILE_FAULTS),
)
def test_field_faults(tmp_path, kind, mutate, words):
    reader, make = READERS[kind]
    artifact = copy.deepcopy(make())
    mutate(artifact)
    message = read_fault(reader, write(tmp_path, artifact))
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("kind", ["acceptance", "tree"])
def test_non_finite_acceptance_literals(tmp_path, kind, literal):
    # Python's json module reads these non-standard literals as floats: they must still be refused.
    reader, make = READERS[kind]
    text = json.dumps(make()).replace('"acceptance": [0.61, 0.12', f'"acceptance": [0.61, {literal}', 1)
    assert literal in text
    message = read_fault(reader, write(tmp_path, text))
    assert "acceptance[1]" in message
    assert "finite" in message or "outside" in message


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
def test_non_finite_profile_literals(tmp_path, literal):
    text = json.dumps(profile_artifact()).replace('"2": 318.0', f'"2": {literal}', 1)
    assert literal in text
    message = read_fault(artifacts.read_profile, write(tmp_path, text))
    assert "target.ms.2" in message


# ---------------------------------------------------------------- standard input


def test_read_from_stdin(monkeypatch):
    artifact = tree_artifact(extra="yes")
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(artifact)))
    assert artifacts.read_tree("-") == artifact


def test_stdin_faults_name_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("{oops"))
    with pytest.raises(BadInput, match="<stdin>: not valid JSON"):
        artifacts.read_acceptance("-")
    monkeypatch.setattr(sys, "stdin", io.StringIO(json.dumps(tree_artifact(size=9))))
    with pytest.raises(BadInput, match="<stdin>: 'size' is 9"):
        artifacts.read_tree("-")


# ---------------------------------------------------------------- writing


def test_write_json_round_trips_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "tree.json"
    artifacts.write_json(str(target), tree_artifact())
    assert os.listdir(tmp_path) == ["tree.json"]
    assert artifacts.read_tree(str(target)) == tree_artifact()
    assert target.read_text(encoding="utf-8").endswith("\n")


def test_write_json_replaces_an_existing_file(tmp_path):
    target = tmp_path / "tree.json"
    target.write_text("old and much longer content " * 100, encoding="utf-8")
    artifacts.write_json(str(target), {"format": "sequoia-tree/1", "parents": [-1], "size": 1, "depth": 0})
    assert json.loads(target.read_text(encoding="utf-8"))["parents"] == [-1]
    assert os.listdir(tmp_path) == ["tree.json"]


def test_write_json_creates_missing_folders(tmp_path):
    target = tmp_path / "a" / "b" / "tree.json"
    artifacts.write_json(str(target), tree_artifact())
    assert artifacts.read_tree(str(target)) == tree_artifact()
    assert os.listdir(target.parent) == ["tree.json"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "tree.json"
    target.write_text("previous", encoding="utf-8")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(artifacts.os, "replace", broken_replace)
    with pytest.raises(BadInput, match="tree.json: cannot write here .No space left on device"):
        artifacts.write_json(str(target), tree_artifact())
    assert target.read_text(encoding="utf-8") == "previous"
    assert os.listdir(tmp_path) == ["tree.json"]


def test_writing_onto_a_folder_is_bad_input_and_leaves_no_temp(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(BadInput, match="taken: cannot write here"):
        artifacts.write_json(str(tmp_path / "taken"), tree_artifact())
    assert os.listdir(tmp_path) == ["taken"] and os.listdir(tmp_path / "taken") == []


def test_unserialisable_artifact_writes_nothing(tmp_path):
    target = tmp_path / "tree.json"
    with pytest.raises((TypeError, ValueError)):
        artifacts.write_json(str(target), {"format": "sequoia-tree/1", "bad": object()})
    assert os.listdir(tmp_path) == []


def test_write_dash_goes_to_stdout(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    artifacts.write_json("-", tree_artifact())
    captured = capsys.readouterr()
    assert json.loads(captured.out) == tree_artifact()
    assert captured.err == ""
    assert os.listdir(tmp_path) == []  # no file called '-'


def test_written_files_get_the_usual_permissions(tmp_path):
    import os
    import stat

    from sequoia_cli.artifacts import write_json

    mask = os.umask(0o022)
    try:
        write_json(str(tmp_path / "a.json"), {"x": 1})
    finally:
        os.umask(mask)
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o644
