"""Every artifact field held to its kind's schema (sequoia_cli.schema), end to end: a bad file is
one 'error:' line naming the file and the field, exit code 2 and nothing written, whatever the
command that reads it; a field read from a file follows the command line's rules; and every field
the stages read is one the schema checks."""

import ast
import copy
import json
import os
import re
import time
from pathlib import Path

import pytest

from sequoia_cli import artifacts, schema, schema_rules
from sequoia_cli.acceptance import calibration_from_counts
from tests.conftest import sequoia
from tests.test_cli import ACCEPTANCE, PROFILE, assert_bad_input, put

ROOT = Path(__file__).resolve().parent.parent
HUGE = 10**400  # a JSON integer of 401 digits: past every float

TREE = {"format": "sequoia-tree/1", "parents": [-1, 0, 0, 1], "size": 4, "depth": 2,
        "expected_tokens": 1 + 0.6 + 0.2 + 0.6 * 0.6, "acceptance": [0.6, 0.2, 0.1], "planned_by": "positional",
        "source": {"mode": "stochastic", "temperature": 0.7, "top_p": 0.9, "draft": "d", "target": "t"},
        "plan": {"size": 4, "depth": 2, "speedup": 1.5, "step_ms": 120.0, "ms_per_token": 60.0,
                 "autoregressive_ms_per_token": 100.0, "draft_counted": True, "device": "cpu", "dtype": "float32",
                 "candidates": [{"size": 4, "depth": 2, "expected_tokens": 2.16, "step_ms": 120.0,
                                 "ms_per_token": 60.0, "speedup": 1.5}]}}
STATS = {"format": "sequoia-stats/1", "prompts": 1, "tokens": 40, "seconds": 2.0, "prefill_seconds": 0.5,
         "tokens_per_second": 20.0, "step_tokens_per_second": 26.7, "target_forwards": 20, "draft_forwards": 40,
         "mean_accepted": 2.0, "mean_step_tokens": 2.1, "expected_tokens": 2.16, "tree_size": 4, "tree_depth": 2,
         "method": "sequoia", "temperature": 0.0, "top_p": 1.0, "seed": 7, "draft": "d", "target": "t",
         "device": "cpu", "dtype": "float32"}
RANKS = {"0": [1, 0, 2, 1, 1, 3, 0], "1": [1, 1, 1, 0, 2]}
CALIBRATION = calibration_from_counts([0.0, 0.5, 1.0], [4, 3], [1, 2])


def _set(*path_and_value):
    *path, value = path_and_value

    def mutate(artifact):
        for key in path[:-1]:
            artifact = artifact[key]
        artifact[path[-1]] = value
    return mutate


def _delete(key):
    return lambda artifact: artifact.pop(key)


def _replace(old, new):
    """A fault JSON can hold but a dict cannot be written with (as text)."""
    return lambda text: text.replace(old, new, 1)


# name: (kind, fault, words the error line names). `fault` mutates the valid artifact of the kind,
# or, named by _replace, its JSON text.
FAULTS = {
    # A field of the right name but the wrong type or range.
    "acceptance of 401 digits": ("acceptance", _set("acceptance", [0.5, HUGE]), ["'acceptance[1]'", "401 digits"]),
    "temperature of 401 digits": ("acceptance", _set("temperature", HUGE), ["'temperature'", "401 digits"]),
    "format version of 5000 digits": ("acceptance", _set("format", "sequoia-acceptance/" + "9" * 5000),
                                      ["format", "newer"]),
    "ranks without width past the vector": ("acceptance", _set("ranks", {"0": [1, 4]}), ["'ranks[0][1]'", "0..3"]),
    "counts wider than width": ("acceptance", lambda a: a.update(width=3, counts=[[1, 2, 3, 4, 5]]),
                                ["'counts[0]'", "'width'"]),
    "shard as a list": ("acceptance", _set("shard", [0, 2]), ["'shard'", "not a string"]),
    "shard past its count": ("acceptance", _set("shard", "2/2"), ["'shard'", "I/N"]),
    "prompts as a string": ("acceptance", _set("prompts", "8"), ["'prompts'", "not an integer"]),
    "samples fractional": ("acceptance", _set("samples", 1.5), ["'samples'", "not an integer"]),
    "draft_setup as a string": ("acceptance", _set("draft_setup", "int8"), ["'draft_setup'", "not an object"]),
    "seed past 64 bits": ("acceptance", _set("seed", 2**64), ["'seed'"]),
    "stochastic at temperature 0": ("acceptance", lambda a: a.update(mode="stochastic", temperature=0),
                                    ["'temperature'", "(0, 100]"]),
    "top_p of 0": ("acceptance", _set("top_p", 0), ["'top_p'", "(0, 1]"]),
    "calibration edges not increasing": ("acceptance", _set("calibration", {**CALIBRATION, "edges": [0, 0.7, 0.5, 1]}),
                                         ["'calibration.edges[2]'", "strictly"]),
    "calibration accepting more than it tried": ("acceptance", _set("calibration", {**CALIBRATION, "accepted": [5, 2]}),
                                                 ["'calibration.accepted[0]'", "more than the 4"]),
    "tree expected_tokens of 401 digits": ("tree", _set("expected_tokens", HUGE), ["'expected_tokens'", "401 digits"]),
    "tree expected_tokens as a string": ("tree", _set("expected_tokens", "2.16"),
                                         ["'expected_tokens'", "not a number"]),
    "tree source as a string": ("tree", _set("source", "measured"), ["'source'", "not an object"]),
    "tree source as a number": ("tree", _set("source", 3), ["'source'", "not an object"]),
    "tree plan as a string": ("tree", _set("plan", "best"), ["'plan'", "not an object"]),
    "tree dynamic plan without t(1)": ("tree", _set("dynamic", {
        "widths": [2, 1], "children": 2, "gain": 0.8, "token_ms": 60.0, "target_ms": {"1": 100.0},
        "draft_ms": {"4": 30.0}, "calibration": CALIBRATION}), ["'dynamic.draft_ms'", "1 token"]),
    "tree dynamic plan of no levels": ("tree", _set("dynamic", {
        "widths": [], "children": 2, "gain": 0.8, "token_ms": 60.0, "target_ms": {"1": 100.0},
        "draft_ms": {"1": 30.0}, "calibration": CALIBRATION}), ["'dynamic.widths'"]),
    "tree plan as a number": ("tree", _set("plan", 1.5), ["'plan'", "not an object"]),
    "tree candidate size as a string": ("tree", _set("plan", "candidates", 0, "size", "4"),
                                        ["'plan.candidates[0].size'", "not an integer"]),
    "tree plan of another size": ("tree", _set("plan", "size", 5), ["'plan.size'", "'size'"]),
    "tree parent of 401 digits": ("tree", _set("parents", [-1, HUGE]), ["'parents[1]'", "401 digits"]),
    "profile ms of 401 digits": ("profile", _set("target", "ms", "2", HUGE), ["'target.ms.2'", "401 digits"]),
    "profile count of 5000 digits": ("profile", _set("target", "ms", "1" + "0" * 5000, 200.0), ["'target.ms'"]),
    "stats method as a number": ("stats", _set("method", 3), ["'method'", "not a string"]),
    "stats expected_tokens as a string": ("stats", _set("expected_tokens", "2.16"),
                                          ["'expected_tokens'", "not a number"]),
    "stats speed of 401 digits": ("stats", _set("tokens_per_second", HUGE), ["'tokens_per_second'", "401 digits"]),
    # A field read from a file follows the command line's rules.
    "tree source temperature -5": ("tree", _set("source", "temperature", -5), ["'source.temperature'", "(0, 100]"]),
    "tree source temperature 'hot'": ("tree", _set("source", "temperature", "hot"),
                                      ["'source.temperature'", "not a number"]),
    "tree source top_p 2": ("tree", _set("source", "top_p", 2), ["'source.top_p'", "(0, 1]"]),
    "stats temperature -1": ("stats", _set("temperature", -1), ["'temperature'", "(0, 100]"]),
    # Work with no bound.
    "profile of 1e308 ms": ("profile", _replace('"1": 101.0', '"1": 1e308'), ["'target.ms.1'", "a day"]),
    "profile of infinite ms": ("profile", _replace('"1": 101.0', '"1": Infinity'), ["'target.ms.1'", "finite"]),
}

# How each command reads a file of each kind: its arguments, {f} for the file and {w} for the work folder.
COMMANDS = {
    "acceptance": [["build-tree", "--acceptance", "{f}", "--size", "4", "--out", "{w}/tree.json"],
                   ["optimize", "--acceptance", "{f}", "--profile", "{w}/profile.json", "--out", "{w}/tree.json"],
                   ["merge-acceptance", "{f}", "--out", "{w}/merged.json"]],
    "tree": [["show", "{f}"]],
    "profile": [["optimize", "--acceptance", "{w}/acc.json", "--profile", "{f}", "--out", "{w}/tree.json"]],
    "stats": [["compare", "{f}", "{w}/stats.json"]],
}
VALID = {"acceptance": dict(ACCEPTANCE, ranks=RANKS, draft_setup={"quantize": "none", "vocab": None},
                            calibration=CALIBRATION),
         "tree": TREE, "profile": PROFILE, "stats": STATS}


@pytest.fixture
def workdir(tmp_path):
    folder = tmp_path / "work"
    folder.mkdir()
    put(folder, "acc.json", ACCEPTANCE)
    put(folder, "profile.json", PROFILE)
    put(folder, "stats.json", STATS)
    return folder


def bad_file(folder, kind: str, fault) -> str:
    artifact = copy.deepcopy(VALID[kind])
    if fault.__qualname__.startswith("_replace"):
        text = fault(json.dumps(artifact))
        assert text != json.dumps(artifact)
    else:
        fault(artifact)
        text = json.dumps(artifact)
    return put(folder, "bad.json", text)


CASES = [pytest.param(kind, fault, words, args, id=f"{args[0]}: {name}")
         for name, (kind, fault, words) in FAULTS.items() for args in COMMANDS[kind]]


@pytest.mark.parametrize("kind, fault, words, args", CASES)
def test_bad_field_is_one_line(workdir, kind, fault, words, args):
    path = bad_file(workdir, kind, fault)
    before = sorted(os.listdir(workdir))
    result = sequoia(*[arg.replace("{f}", path).replace("{w}", str(workdir)) for arg in args], cwd=workdir)
    assert_bad_input(result, workdir, before, None, path, *words)


def test_the_valid_files_pass(workdir):
    """The table's faults are each the only one: the files they start from are read as they are."""
    for kind, artifact in VALID.items():
        getattr(artifacts, f"check_{kind}")(kind, copy.deepcopy(artifact))
    tree = put(workdir, "tree.json", TREE)
    assert sequoia("show", tree).returncode == 0
    compared = sequoia("compare", workdir / "stats.json", workdir / "stats.json")
    assert compared.returncode == 0, compared.stderr
    assert "sequoia" in compared.stdout and "2.160" in compared.stdout


def test_100000_rows_by_level_are_refused_at_once(workdir):
    path = put(workdir, "rows.json", dict(ACCEPTANCE, acceptance_by_level=[[0.6, 0.2, 0.1]] * 100_000))
    before = sorted(os.listdir(workdir))
    start = time.perf_counter()
    result = sequoia("build-tree", "--acceptance", path, "--size", "8", "--out", workdir / "tree.json")
    assert time.perf_counter() - start < 2.0
    assert_bad_input(result, workdir, before, workdir / "tree.json", path, "'acceptance_by_level'", "100000",
                     str(schema_rules.MAX_LEVELS))


def test_ranks_without_width_plan_with_the_vector_length(workdir):
    path = put(workdir, "ranks.json", VALID["acceptance"])
    assert "width" not in VALID["acceptance"]
    for args in (["build-tree", "--size", "6"], ["optimize", "--profile", workdir / "profile.json"]):
        result = sequoia(*args, "--acceptance", path, "--out", workdir / "tree.json")
        assert result.returncode == 0, result.stderr
        tree = artifacts.read_tree(str(workdir / "tree.json"))
        assert tree["planned_by"] == "level" and len(tree["acceptance_by_level"][0]) == 3


@pytest.mark.parametrize("command", [["build-tree", "--size", "8"],
                                     ["optimize", "--max-size", "8", "--profile", "{w}/profile.json"]])
def test_a_depth_bound_past_the_size_is_capped(workdir, command):
    start = time.perf_counter()
    result = sequoia(*[arg.replace("{w}", str(workdir)) for arg in command], "--max-depth", "1000000",
                     "--acceptance", workdir / "acc.json", "--out", workdir / "tree.json")
    assert result.returncode == 0, result.stderr
    assert time.perf_counter() - start < 5.0
    tree = artifacts.read_tree(str(workdir / "tree.json"))
    assert tree["size"] <= 8 and tree["depth"] <= 7


@pytest.mark.parametrize("temperature, words", [(-5, ["(0, 100]"]), ("hot", ["not a number"]), (0, ["(0, 100]"])])
def test_decode_refuses_a_tree_source_setting_before_loading_models(pair, tmp_path, monkeypatch, temperature, words):
    def no_loading(*args, **kwargs):
        raise AssertionError("models loaded before the tree was checked")

    monkeypatch.setattr("sequoia_cli.loading.load", no_loading)
    draft, target = pair
    tree = put(tmp_path, "tree.json", dict(TREE, source=dict(TREE["source"], temperature=temperature)))
    before = sorted(os.listdir(tmp_path))
    result = sequoia("decode", "--draft", draft, "--target", target, "--tree", tree, "--prompt", "hi",
                     "--max-new-tokens", "2", "--stats", tmp_path / "stats.json")
    assert_bad_input(result, tmp_path, before, tmp_path / "stats.json", tree, "'source.temperature'", *words)


def test_decode_samples_as_the_tree_source_says(pair, tmp_path):
    draft, target = pair
    tree = put(tmp_path, "tree.json", TREE)
    result = sequoia("decode", "--draft", draft, "--target", target, "--tree", tree, "--prompt", "hi",
                     "--max-new-tokens", "3", "--seed", "1", "--dtype", "float32")
    assert result.returncode == 0, result.stderr
    assert "temperature 0.7, top-p 0.9" in result.stderr


# ---------------------------------------------------------------- every field read is a field checked

# The modules that read artifacts, and the keys they index that are no artifact's field.
READERS = ["stages/optimize.py", "stages/build_tree.py", "stages/decode.py", "stages/merge_acceptance.py",
           "sequoia_cli/acceptance.py", "sequoia_cli/render.py", "sequoia_cli/artifacts.py", "sequoia_cli/cost.py",
           "sequoia_cli/dynamic.py", "sequoia_cli/dynamic_plan.py"]
# decode's generation records (made in process, written as JSONL, never read back).
NOT_ARTIFACT_FIELDS = {"output_ids", "steps", "step_tokens", "expected", "predicted", "text", "turn",
                       "undrafted_steps"}


def validated_fields() -> set[str]:
    models = [schema.AcceptanceFile, schema.Calibration, schema.Dynamic, schema.GrowthPrediction, schema.Source,
              schema.Plan, schema.TreeFile, schema.Section, schema.ProfileFile, schema.StatsFile, schema.Setup]
    return {"format"} | {name for model in models for name in model.model_fields} | set(
        schema.Candidate.__annotations__)


def indexed_keys(source: str) -> set[str]:
    """The string keys a module indexes (`x["key"]`, `x.get("key")`), f-strings as patterns."""
    keys = set()
    for node in ast.walk(ast.parse(source)):
        key = None
        if isinstance(node, ast.Subscript):
            key = node.slice
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args:
            key = node.args[0]
        if isinstance(key, ast.Constant) and isinstance(key.value, str):
            keys.add(re.escape(key.value))
        elif isinstance(key, ast.JoinedStr):
            keys.add("".join(re.escape(part.value) if isinstance(part, ast.Constant) else ".+" for part in key.values))
    return keys


@pytest.mark.parametrize("module", READERS)
def test_every_field_read_is_validated(module):
    fields = validated_fields() | NOT_ARTIFACT_FIELDS
    unchecked = [key for key in indexed_keys((ROOT / module).read_text(encoding="utf-8"))
                 if not any(re.fullmatch(key, field) for field in fields)]
    assert not unchecked, f"{module} reads fields no schema checks: {unchecked}"


def test_a_tree_source_carries_checked_fields():
    assert set(artifacts.SOURCE_FIELDS) <= set(schema.Source.model_fields)
