import gzip
import json

import pyarrow
import pyarrow.parquet
import pytest

from sequoia_cli.errors import BadInput
from sequoia_cli.prompts import load_prompt_records, load_prompts


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def test_mt_bench_has_80_first_turns_some_with_references():
    records = load_prompt_records("mt-bench")
    assert len(records) == 80
    assert records[0]["prompt"].startswith("Compose an engaging travel blog post")
    with_reference = [record for record in records if record["reference"] is not None]
    assert 0 < len(with_reference) < 80
    assert all(isinstance(record["reference"], str) for record in with_reference)


def test_humaneval_has_164_prompts_with_canonical_solutions():
    records = load_prompt_records("humaneval")
    assert len(records) == 164
    assert records[0]["prompt"].startswith("from typing import List")
    assert records[0]["reference"].startswith("    for idx, elem in enumerate(numbers):")


def test_max_prompts_keeps_the_first_ones():
    assert load_prompts("humaneval", max_prompts=3) == load_prompts("humaneval")[:3]


def test_jsonl(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a", "reference": "x"}, {"prompt": "b"}])
    assert load_prompt_records(str(path)) == [{"prompt": "a", "reference": "x"},
                                              {"prompt": "b", "reference": None}]


def test_json_array_with_other_field(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"question": "q1", "n": 1}, {"question": "q2", "n": 2}]))
    assert load_prompts(str(path), field="question") == ["q1", "q2"]


def test_txt_one_prompt_per_line_skips_blank_lines(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("first\n\n   \nsecond line\n")
    assert load_prompts(str(path)) == ["first", "second line"]


def test_parquet(tmp_path):
    path = tmp_path / "p.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"prompt": ["p1", "p2"], "n": [1, 2]}), path)
    assert load_prompts(str(path)) == ["p1", "p2"]


def test_gzipped_jsonl(tmp_path):
    path = tmp_path / "p.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"prompt": "zipped"}\n'))
    assert load_prompts(str(path)) == ["zipped"]


def test_list_of_turns_gives_the_first_turn_and_all_turns(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"turns": ["one", "two"], "reference": ["r1", "r2"]},
                                              {"turns": ["alone"]}])
    assert load_prompt_records(str(path), field="turns") == [
        {"prompt": "one", "reference": "r1", "turns": ["one", "two"]}, {"prompt": "alone", "reference": None}]


def assert_bad(source, fragment, **options):
    with pytest.raises(BadInput) as caught:
        load_prompts(str(source), **options)
    message = str(caught.value)
    assert str(source) in message and fragment in message
    assert "\n" not in message


def test_missing_file(tmp_path):
    assert_bad(tmp_path / "nope.jsonl", "no such file")


def test_folder(tmp_path):
    assert_bad(tmp_path, "is a folder")


def test_unknown_extension(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("prompt\na\n")
    assert_bad(path, "unknown file kind")


def test_missing_field_lists_the_fields_present_and_names_the_option(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"question": "a", "id": 1}])
    assert_bad(path, "no field 'prompt' (fields present: question, id)")
    with pytest.raises(BadInput) as caught:
        load_prompts(str(path))
    assert caught.value.worded_as_options().endswith("e.g. --prompt-field question")
    path = write_jsonl(tmp_path / "q.jsonl", [{"id": 1, "text": "a"}])
    with pytest.raises(BadInput) as caught:
        load_prompts(str(path))
    assert caught.value.worded_as_options().endswith("e.g. --prompt-field text")


def test_other_missing_field(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}])
    assert_bad(path, "no field 'text'", field="text")


@pytest.mark.parametrize("name, content", [("empty.jsonl", ""), ("blank.jsonl", "\n\n"),
                                           ("empty.json", "[]"), ("empty.txt", ""),
                                           ("blank.txt", "\n  \n")])
def test_empty_set(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content)
    assert_bad(path, "no prompts")


def test_non_string_value(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}, {"prompt": 7}])
    assert_bad(path, "row 2: 'prompt' is int, not text")


def test_empty_prompt(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "  "}])
    assert_bad(path, "row 1: 'prompt' is empty")


def test_malformed_json(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": broken\n')
    assert_bad(path, "cannot read it as json")


def test_field_on_txt(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a\n")
    assert_bad(path, "no fields", field="question")


def test_max_prompts_must_be_positive(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}])
    assert_bad(path, "at least 1", max_prompts=0)


def test_spec_bench_has_six_subtasks_of_80():
    import hashlib

    from sequoia_cli.prompts import DATA_DIR, SPEC_BENCH_SUBTASKS

    assert len(load_prompt_records("spec-bench")) == 480
    raw = gzip.decompress((DATA_DIR / "spec_bench_question.jsonl.gz").read_bytes())
    assert hashlib.sha256(raw).hexdigest() == "4b6d33e79484f9841c487ee87d1cf6aa8c6066f61d5d482ff09e5a007fafdf04"
    by_subtask = {name: load_prompt_records(f"spec-bench:{name}") for name in SPEC_BENCH_SUBTASKS}
    assert {name: len(records) for name, records in by_subtask.items()} == dict.fromkeys(SPEC_BENCH_SUBTASKS, 80)
    assert [r["prompt"] for r in by_subtask["mt-bench"]] == load_prompts("mt-bench")
    assert all(r["prompt"].startswith("Translate") for r in by_subtask["translation"])
    assert all(r["reference"] for r in by_subtask["translation"])


def test_an_unknown_spec_bench_subtask_is_one_line(tmp_path):
    from tests.conftest import assert_one_line_error, sequoia

    out = tmp_path / "acc.json"
    done = sequoia("measure-acceptance", "--target", "t", "--draft", "d", "--data", "spec-bench:poetry",
                   "--greedy", "--out", out)
    assert_one_line_error(done, "spec-bench:poetry", "translation")
    assert not out.exists()
    with pytest.raises(BadInput, match="no such Spec-Bench subtask"):
        load_prompt_records("spec-bench:")
