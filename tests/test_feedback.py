"""What long work tells a person who is not watching a terminal: progress as plain lines from the
first seconds, the wall time at the end, and an interrupted decode that keeps what it finished."""

import json
import signal
import subprocess
import sys
import time

from sequoia_cli.stages.profile_hw import BURST, DEFAULT, QUICK, bursts, token_counts

from tests.conftest import sequoia

CODE = "import sys; sys.argv[0] = 'sequoia'; from sequoia_cli.cli import main; main()"


def test_profile_hw_prints_progress_lines_on_a_non_terminal_stderr_from_the_start(pair, tmp_path):
    draft, target = pair
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", CODE, "profile-hw", "--draft", draft, "--target", target,
                                "--dtype", "float32", "--max-tokens", "16", "--repeats", "2", "--context-length", "32",
                                "--out",
                                str(tmp_path / "profile.json")], stderr=subprocess.PIPE, text=True)
    first = None
    for line in process.stderr:
        if line.startswith("timing: ") and not line.startswith("timing: 0/"):
            first = time.perf_counter() - started
            break
    rest = process.communicate(timeout=300)[1].splitlines()
    assert process.returncode == 0 and first is not None
    assert first < 30  # the model loads first; the first burst's line follows it at once
    assert any(line.startswith("wall time ") for line in rest)


def test_a_finished_stage_ends_with_its_wall_time(pair, tmp_path):
    draft, target = pair
    (tmp_path / "p.txt").write_text("a b c\n")
    done = sequoia("measure-acceptance", "--draft", draft, "--target", target, "--dtype", "float32", "--data",
                   tmp_path / "p.txt", "--greedy", "--width", "2", "--continuation-tokens", "4", "--out",
                   tmp_path / "acc.json")
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if line.startswith("wall time ")]
    assert "measuring: 1/1" in done.stderr


def test_an_interrupted_decode_keeps_its_finished_records_and_their_stats(pair, tmp_path):
    draft, target = pair
    prompts, out, stats = tmp_path / "prompts.txt", tmp_path / "gen.jsonl", tmp_path / "stats.json"
    prompts.write_text("".join(f"prompt number {i}\n" for i in range(400)))
    process = subprocess.Popen([sys.executable, "-c", CODE, "decode", "--draft", draft, "--target", target,
                                "--method", "chain", "--chain-length", "2", "--data", str(prompts), "--greedy",
                                "--max-new-tokens", "24", "--dtype", "float32", "--no-chat-template",
                                "--out", str(out), "--stats", str(stats)], stderr=subprocess.PIPE, text=True)
    for line in process.stderr:  # the first record is done once the progress line moves past 0
        if line.startswith("decoding: ") and not line.startswith("decoding: 0/"):
            process.send_signal(signal.SIGINT)
            break
    rest = process.communicate(timeout=300)[1].splitlines()
    assert process.returncode == 130
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert 1 <= len(records) < 400
    assert rest[-1] == f"interrupted: {len(records)} of 400 prompts written to {out} and {stats}"
    figures = json.loads(stats.read_text())
    assert figures["prompts"] == len(records) and figures["tokens"] == sum(len(r["output_ids"]) for r in records)


def test_profile_hw_help_states_the_forwards_each_timing_runs():
    text = " ".join(sequoia("profile-hw", "--help").stdout.split())
    for timing, forwards in ((DEFAULT, 432), (QUICK, 150)):
        assert bursts(1, len(token_counts(timing.max_tokens)), timing) * BURST == forwards
        assert f"{forwards} forwards of up to {timing.max_tokens}" in text


def test_quick_profile_times_fewer_rounds_and_counts_and_a_given_setting_wins(pair, tmp_path):
    draft, target = pair
    common = ["profile-hw", "--draft", draft, "--target", target, "--dtype", "float32", "--context-length", "32",
              "--quick"]
    assert sequoia(*common, "--out", tmp_path / "quick.json").returncode == 0
    quick = json.loads((tmp_path / "quick.json").read_text())
    assert (quick["repeats"], quick["warmup"]) == (QUICK.repeats, QUICK.warmup)
    assert list(quick["target"]["ms"]) == [str(count) for count in token_counts(QUICK.max_tokens)]
    assert sequoia(*common, "--max-tokens", "8", "--repeats", "3", "--out", tmp_path / "given.json").returncode == 0
    given = json.loads((tmp_path / "given.json").read_text())
    assert (given["repeats"], given["warmup"], list(given["draft"]["ms"])) == (3, QUICK.warmup, list("12345678"))
