"""Warnings that something does not fit the run: each present when mismatched and absent when
matched, and with --strict the same line as a one-line error, exit 2, nothing written."""

import json

import pytest

from sequoia_cli import mismatches
from tests.conftest import assert_one_line_error, sequoia, sequoia_process

COUNTS = [1, 2, 4, 8, 16]
PROFILE = {"format": "sequoia-profile/1", "device": "cpu", "dtype": "float32", "context_length": 64,
           "target": {"model": "t", "ms": {str(n): 100.0 + 20 * n for n in COUNTS}},
           "draft": {"model": "d", "ms": {str(n): 10.0 + 0.1 * n for n in COUNTS}}}
# 2000 positions: a_1's standard error 0.011, under the bound.
THICK = {"format": "sequoia-acceptance/1", "mode": "greedy", "temperature": 0.0, "top_p": 1.0, "width": 2,
         "acceptance": [0.6, 0.2], "rejected_all": 0.2, "samples": 2000, "stderr": [0.011, 0.009], "prompts": 20}
# 32 positions of 3 prompts: a_1's standard error 0.087.
THIN = dict(THICK, samples=32, stderr=[0.087, 0.071], prompts=3)


def put(folder, name, value) -> str:
    path = folder / name
    path.write_text(json.dumps(value), encoding="utf-8")
    return str(path)


def warnings_in(done) -> list[str]:
    assert done.returncode == 0, done.stderr
    return [line for line in done.stderr.splitlines() if line.startswith("warning:")]


def test_setting_mismatch_names_both_settings_and_the_fix():
    greedy = {"mode": "greedy", "temperature": 0.0, "top_p": 1.0}
    sampled = {"mode": "stochastic", "temperature": 0.6, "top_p": 0.9}
    assert mismatches.setting_mismatch(greedy, 0.0, 1.0) == []
    assert mismatches.setting_mismatch(sampled, 0.6, 0.9) == []
    assert mismatches.setting_mismatch(None, 0.6, 0.9) == []
    [line] = mismatches.setting_mismatch(greedy, 0.6, 0.9)
    assert "measured greedy" in line and "temperature 0.6, top-p 0.9" in line
    assert "--temperature 0.6 --top-p 0.9" in line
    [line] = mismatches.setting_mismatch(sampled, 0.0, 1.0)
    assert "temperature 0.6, top-p 0.9" in line and "decodes greedy" in line and "--greedy" in line


def test_model_mismatch_names_each_model_that_differs():
    source = {"draft": "small", "target": "big"}
    assert mismatches.model_mismatch(source, "small", "big") == []
    assert mismatches.model_mismatch(source, None, "big") == []  # no draft in the run: nothing to compare
    [line] = mismatches.model_mismatch(source, "other", "big")
    assert "draft small" in line and "draft is other" in line


def test_a_tree_wider_than_its_vector_is_named_with_the_width_to_measure():
    assert mismatches.width_mismatch([-1, 0, 0], [0.6, 0.2]) == []
    assert mismatches.width_mismatch([-1, 0, 0, 0], None) == []
    [line] = mismatches.width_mismatch([-1, 0, 0, 0], [0.6, 0.2])
    assert "3 children" in line and "2 entries" in line and "--width 3" in line


def test_an_unsteady_profile_says_how_far_its_rounds_were_apart():
    assert mismatches.unsteady_profile({"steady": True}) == []
    assert mismatches.unsteady_profile({}) == []
    [line] = mismatches.unsteady_profile({"steady": False, "target_t1_by_round": [457.0, 2262.0, 900.0]})
    assert "unsteady" in line and "457.0 to 2262.0 ms" in line and "profile-hw" in line


def test_a_thin_vector_says_how_many_prompts_would_do():
    assert mismatches.thin_vector(THICK) == []
    [line] = mismatches.thin_vector(THIN)
    # 0.6 * 0.4 / 0.02^2 = 600 positions at 32/3 per prompt: 57 prompts.
    assert "0.087 from 32 positions" in line and "about 57 prompts" in line


def test_the_profile_cap_is_named_only_where_the_chosen_tree_reached_it():
    assert mismatches.profile_cap({"size": 8}, 16, None) == []
    assert mismatches.profile_cap({"size": 16}, 16, 16) == []  # asked for: not the profile's doing
    [line] = mismatches.profile_cap({"size": 16}, 16, None)
    assert "16 tokens" in line and "--max-tokens 32" in line


@pytest.fixture
def files(tmp_path):
    unsteady = dict(PROFILE, steady=False, target_t1_by_round=[100.0, 180.0])
    flat = dict(PROFILE, target={"model": "t", "ms": {str(n): 100.0 + 0.01 * n for n in COUNTS}},
                draft={"model": "d", "ms": {str(n): 0.1 for n in COUNTS}})
    return {name: put(tmp_path, f"{name}.json", value) for name, value in
            [("thick", THICK), ("thin", THIN), ("profile", PROFILE), ("unsteady", unsteady), ("flat", flat)]}


def test_build_tree_warns_of_a_thin_vector_and_strict_stops_without_writing(files, tmp_path):
    out = tmp_path / "tree.json"
    assert warnings_in(sequoia("build-tree", "--acceptance", files["thick"], "--size", "4", "--out", out)) == []
    [line] = warnings_in(sequoia("build-tree", "--acceptance", files["thin"], "--size", "4", "--out", out))
    out.unlink()
    error = assert_one_line_error(sequoia("build-tree", "--acceptance", files["thin"], "--size", "4", "--out", out,
                                          "--strict"), "about 57 prompts")
    assert error.removeprefix("error: ") == line.removeprefix("warning: ") and not out.exists()


@pytest.mark.parametrize("profile, words", [("unsteady", "unsteady"), ("flat", "profile-hw --max-tokens 32")])
def test_optimize_warns_of_its_profile_and_strict_stops_without_writing(files, tmp_path, profile, words):
    out = tmp_path / "tree.json"
    assert warnings_in(sequoia("optimize", "--acceptance", files["thick"], "--profile", files["profile"],
                               "--out", out)) == []
    lines = warnings_in(sequoia("optimize", "--acceptance", files["thick"], "--profile", files[profile],
                                "--out", out))
    assert len(lines) == 1 and words in lines[0]
    out.unlink()
    assert_one_line_error(sequoia("optimize", "--acceptance", files["thick"], "--profile", files[profile],
                                  "--out", out, "--strict"), words)
    assert not out.exists()


def test_import_tree_says_why_children_past_the_vector_count_as_never_accepted(files, tmp_path):
    choices = put(tmp_path, "choices.json", [[0], [1], [2], [0, 0]])
    lines = warnings_in(sequoia("import-tree", choices, "--acceptance", files["thick"], "--out", tmp_path / "t.json"))
    assert len(lines) == 1 and "3 children" in lines[0] and "--width 3" in lines[0]
    narrow = put(tmp_path, "narrow.json", [[0], [1], [0, 0]])
    done = sequoia("import-tree", narrow, "--acceptance", files["thick"], "--out", tmp_path / "n.json")
    assert warnings_in(done) == []


def tree_file(folder, name: str, source: dict, parents: list[int] = (-1, 0, 0)) -> str:
    parents = list(parents)
    return put(folder, name, {"format": "sequoia-tree/1", "parents": parents, "size": len(parents),
                              "depth": 1, "acceptance": [0.6, 0.2], "source": source})


def test_decode_warns_of_another_setting_other_models_and_a_wide_tree(pair, tmp_path):
    draft, target = pair
    base = ["decode", "--draft", draft, "--target", target, "--dtype", "float32", "--prompt", "hi",
            "--max-new-tokens", "3", "--no-chat-template", "--seed", "0"]
    greedy = {"mode": "greedy", "temperature": 0.0, "top_p": 1.0, "draft": draft, "target": target}
    matched = tree_file(tmp_path, "matched.json", greedy)
    assert warnings_in(sequoia(*base, "--tree", matched)) == []
    [line] = warnings_in(sequoia(*base, "--tree", matched, "--temperature", "0.6", "--top-p", "0.9"))
    assert "measured greedy" in line
    other = tree_file(tmp_path, "other.json", dict(greedy, target="another/model"))
    [line] = warnings_in(sequoia(*base, "--tree", other))
    assert "target another/model" in line
    wide = tree_file(tmp_path, "wide.json", greedy, [-1, 0, 0, 0])
    [line] = warnings_in(sequoia(*base, "--tree", wide))
    assert "3 children" in line
    stats = tmp_path / "stats.json"
    error = assert_one_line_error(sequoia(*base, "--tree", wide, "--strict", "--stats", stats), "--width 3")
    assert error.removeprefix("error: ") == line.removeprefix("warning: ") and not stats.exists()


def test_a_model_id_the_offline_hub_cannot_serve_is_named_with_the_fix(tmp_path):
    done = sequoia_process("decode", "--target", "nobody-here/no-such-model", "--method", "autoregressive",
                           "--prompt", "hi", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert_one_line_error(done, "--target 'nobody-here/no-such-model' is not a local folder",
                          "not in the Hugging Face cache", "sequoia pairs")


def test_compare_shows_whole_method_names_and_says_what_each_column_holds(tmp_path):
    stats = {"format": "sequoia-stats/1", "tokens_per_second": 10.0, "mean_accepted": 3.5, "expected_tokens": 3.9}
    paths = [put(tmp_path, "a-very-long-stats-file-name-for-the-first-run.json", dict(stats, method="autoregressive")),
             put(tmp_path, "b.json", dict(stats, method="specinfer", tokens_per_second=5.0))]
    done = sequoia("compare", *paths)
    assert done.returncode == 0, done.stderr
    assert "autoregressive" in done.stdout and "specinfer" in done.stdout, done.stdout
    assert "measured" in done.stdout and "predicted" in done.stdout and "speed vs" in done.stdout
    assert "2.00x" in done.stdout
