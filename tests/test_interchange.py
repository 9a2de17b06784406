"""Trees to and from other engines: eagle choices and growmaps round-trip exactly (up to level
order), published growmaps import as themselves, and every bad input is one line."""

import json
import os
import random
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from sequoia_cli import artifacts
from sequoia_cli.interchange import as_lists, eagle_choices, growmap, parents_from_choices, parents_from_growmap
from sequoia_cli.tree import best_tree, depths, expected_tokens, level_order, tree_table
from tests.conftest import assert_one_line_error, sequoia


@st.composite
def trees(draw, max_size: int = 40) -> list[int]:
    size = draw(st.integers(1, max_size))
    return [-1] + [draw(st.integers(0, node - 1)) for node in range(1, size)]


def dp_trees() -> list[list[int]]:
    out = []
    for acceptance in ([0.6, 0.2, 0.1], [0.8, 0.05], [0.3, 0.3, 0.2, 0.1]):
        for size, depth in ((1, 0), (8, 3), (32, 6), (64, 12)):
            out.append(best_tree(tree_table(acceptance, size, depth), size, depth))
    return out


def write_tree(path, parents: list[int]) -> str:
    artifacts.write_json(str(path), {"format": "sequoia-tree/1", "parents": parents, "size": len(parents),
                                     "depth": max(depths(parents))})
    return str(path)


@settings(max_examples=200, deadline=None)
@given(parents=trees())
def test_eagle_choices_round_trip(parents):
    choices = eagle_choices(parents)
    assert len(choices) == len(parents) - 1
    assert parents_from_choices(choices, "x") == level_order(parents)
    assert parents_from_choices(random.Random(len(choices)).sample(choices, len(choices)), "x") == level_order(parents)


@settings(max_examples=200, deadline=None)
@given(parents=trees())
def test_growmap_round_trip(parents):
    layout = growmap(parents)
    assert parents_from_growmap(layout, "x") == level_order(parents)
    assert parents_from_growmap(json.loads(json.dumps(as_lists(layout))), "x") == level_order(parents)


def test_eagle_choices_example():
    # The root's two children, then the 1st child's two: paths in level order.
    assert eagle_choices([-1, 0, 0, 1, 1]) == [[0], [1], [0, 0], [0, 1]]
    assert parents_from_choices([[0, 1], [1], [0, 0], [0]], "x") == [-1, 0, 0, 1, 1]


def test_growmap_layout():
    layout = growmap([-1, 0, 0, 1])
    assert layout["roots"] == [[0], [1, 2], [3]]
    assert layout["branches"] == [[2], [1, 0], [0]]
    assert layout["Successors"] == [[1, 2], [3], [], []]
    assert layout["mask"].tolist() == [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 1, 0, 1]]
    assert layout["depth"].tolist() == [0, 1, 1, 2]
    assert layout["size"] == 4


@pytest.mark.parametrize("format", ["eagle-choices", "growmap", "growmap-json"])
def test_dp_trees_round_trip_through_the_commands(tmp_path, format):
    for index, parents in enumerate(dp_trees()):
        assert level_order(parents) == parents
        exported = tmp_path / f"{index}.{'pt' if format == 'growmap' else 'json'}"
        done = sequoia("export-tree", write_tree(tmp_path / f"{index}-tree.json", parents), "--format", format,
                       "--out", exported)
        assert done.returncode == 0, done.stderr
        done = sequoia("import-tree", exported, "--out", tmp_path / f"{index}-back.json")
        assert done.returncode == 0, done.stderr
        back = artifacts.read_tree(str(tmp_path / f"{index}-back.json"))
        assert (back["parents"], back["size"], back["depth"]) == (parents, len(parents), max(depths(parents)))


def test_exported_growmap_is_what_the_official_code_saves(tmp_path):
    sequoia("export-tree", write_tree(tmp_path / "tree.json", [-1, 0, 0, 1]), "--format", "growmap",
            "--out", tmp_path / "tree.pt")
    loaded = torch.load(tmp_path / "tree.pt", map_location="cpu", weights_only=True)
    assert list(loaded) == ["roots", "branches", "Successors", "mask", "depth", "size"]
    assert loaded["mask"].dtype == loaded["depth"].dtype == torch.int64
    assert isinstance(loaded["size"], int) and isinstance(loaded["roots"], list)


def test_eagle_choices_to_standard_output(tmp_path):
    done = sequoia("export-tree", write_tree(tmp_path / "tree.json", [-1, 0, 0, 1, 1]), "--format", "eagle-choices")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [[0], [1], [0, 0], [0, 1]]


def test_import_with_acceptance_rates_the_tree(tmp_path):
    parents = [-1, 0, 0, 1, 1, 2]
    (tmp_path / "choices.json").write_text(json.dumps(eagle_choices(parents)))
    artifacts.write_json(str(tmp_path / "acc.json"), {"format": "sequoia-acceptance/1", "mode": "greedy",
                                                      "acceptance": [0.6, 0.2]})
    done = sequoia("import-tree", tmp_path / "choices.json", "--acceptance", tmp_path / "acc.json",
                   "--out", tmp_path / "tree.json")
    assert done.returncode == 0, done.stderr
    tree = artifacts.read_tree(str(tmp_path / "tree.json"))
    assert tree["parents"] == parents
    assert tree["expected_tokens"] == pytest.approx(expected_tokens(parents, [0.6, 0.2]))
    assert tree["acceptance"] == [0.6, 0.2]


@pytest.mark.skipif(not os.environ.get("SEQUOIA_GROWMAP"), reason="set SEQUOIA_GROWMAP to a published growmap .pt")
def test_a_published_growmap_imports_as_itself(tmp_path):
    path = os.environ["SEQUOIA_GROWMAP"]
    published = torch.load(path, map_location="cpu", weights_only=True)
    done = sequoia("import-tree", path, "--out", tmp_path / "tree.json")
    assert done.returncode == 0, done.stderr
    tree = artifacts.read_tree(str(tmp_path / "tree.json"))
    assert tree["size"] == published["size"]
    assert tree["depth"] == int(published["depth"].max())
    ours = growmap(tree["parents"])
    assert np.array_equal(ours["mask"], published["mask"].numpy())
    assert [ours[key] for key in ("roots", "branches", "Successors")] == [
        published[key] for key in ("roots", "branches", "Successors")]


@dataclass
class Code:
    """Anything torch.load can rebuild only by running this module's code."""

    size: int = 1


def save(path, value) -> str:
    torch.save(value, path)
    return str(path)


def bad_growmaps(tmp_path) -> list[tuple[str, str]]:
    """(file, a word its error names)."""
    layout = growmap([-1, 0, 0, 1])
    tensors = {**layout, "mask": torch.from_numpy(layout["mask"]), "depth": torch.from_numpy(layout["depth"])}
    wrong_mask = tensors["mask"].clone()
    wrong_mask[3, 2] = 1
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "size.json").write_text(json.dumps({**as_lists(layout), "size": 5}))
    return [
        (save(tmp_path / "tensor.pt", torch.zeros(3)), "not a growmap"),
        (save(tmp_path / "keys.pt", {"parents": [-1, 0]}), "'roots'"),
        (save(tmp_path / "size.pt", {**tensors, "size": 3}), "'size'"),
        (save(tmp_path / "mask.pt", {**tensors, "mask": wrong_mask}), "'mask'"),
        (save(tmp_path / "float-mask.pt", {**tensors, "mask": tensors["mask"].float()}), "'mask'"),
        (save(tmp_path / "twice.pt", {**tensors, "Successors": [[1, 2], [2], [], []]}), "Successors"),
        (save(tmp_path / "code.pt", {**tensors, "size": Code()}), "run code"),
        (str(tmp_path / "empty.pt"), "not a torch file"),
        (str(tmp_path / "size.json"), "'size'"),
    ]


def test_bad_growmaps_are_one_line(tmp_path):
    for path, word in bad_growmaps(tmp_path):
        done = sequoia("import-tree", path, "--out", tmp_path / "out.json")
        assert_one_line_error(done, path, word)
        assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("choices, word", [
    ([[1]], "skips a rank"),
    ([[0], [0, 1]], "skips a rank"),
    ([[0, 0]], "no parent"),
    ([[0], [0]], "twice"),
    ([[0], []], "path 1"),
    ([[0], [-1]], "path 1"),
    ([[True]], "path 0"),
    ({"roots": []}, "not a growmap"),
    ("[[0]", "not valid JSON"),
])
def test_bad_choices_are_one_line(tmp_path, choices, word):
    path = tmp_path / "choices.json"
    path.write_text(choices if isinstance(choices, str) else json.dumps(choices))
    done = sequoia("import-tree", path, "--out", tmp_path / "out.json")
    assert_one_line_error(done, str(path), word)
    assert not (tmp_path / "out.json").exists()


def test_bad_files_and_options_are_one_line(tmp_path):
    tree = write_tree(tmp_path / "tree.json", [-1, 0, 0])
    (tmp_path / "file").write_text("")
    assert_one_line_error(sequoia("import-tree", tmp_path / "missing.pt", "--out", tmp_path / "out.json"),
                          "missing.pt", "no such file")
    assert_one_line_error(sequoia("export-tree", tmp_path / "missing.json", "--format", "growmap-json"),
                          "missing.json")
    assert_one_line_error(sequoia("export-tree", tree, "--format", "medusa"), "--format", "medusa")
    assert_one_line_error(sequoia("export-tree", tree, "--format", "growmap"), "--format", "--out")
    assert_one_line_error(sequoia("export-tree", tree, "--format", "growmap", "--out", "-"), "standard output")
    assert_one_line_error(sequoia("export-tree", tree, "--format", "growmap", "--out", tmp_path / "file" / "t.pt"),
                          "cannot write")
    (tmp_path / "choices.json").write_text("[[0]]")
    assert_one_line_error(sequoia("import-tree", tmp_path / "choices.json", "--out", tmp_path / "file" / "t.json"),
                          "cannot write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["choices.json", "file", "tree.json"]
