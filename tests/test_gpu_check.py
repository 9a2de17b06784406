"""`sequoia gpu-check`: the CPU run of the check (shrunk shapes, --quick) writes its report, and
the acceptance vectors and official timings it plans with are the data they claim to be."""

import json
import math
from pathlib import Path

import pytest
import torch
from sequoia_cli.stages.gpu_check import PAIRS, shape, shrunk
from sequoia_cli.stages.gpu_check.report import report_markdown
from sequoia_cli.stages.optimize import optimize

from sequoia_cli.artifacts import read_acceptance, read_profile, timings
from sequoia_cli.pairs import configs_dir, pair_names
from tests.conftest import assert_one_line_error, sequoia

ROOT = Path(__file__).resolve().parent.parent
ACCEPTANCE = configs_dir() / "acceptance"


def positive(value) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-check")
    done = sequoia("gpu-check", "--device", "cpu", "--quick", "--out", out)
    assert done.returncode == 0, done.stderr
    return json.loads((out / "report.json").read_text()), (out / "report.md").read_text()


def test_cpu_run_times_every_engine_and_method(report):
    figures, _ = report
    assert [pair["pair"] for pair in figures["pairs"]] == [pair.name for pair in PAIRS]
    assert figures["engines"] == ["eager", "static"] and figures["shapes"] == "shrunk"
    assert positive(figures["seconds"])
    for pair in figures["pairs"]:
        assert pair["failures"] == {}, pair["failures"]
        for engine, profile in pair["profiles"].items():
            assert profile["engine"] == engine
            assert all(positive(ms) for role in ("target", "draft") for ms in profile[role]["ms"].values())
        timed = {(row["method"], row["engine"]) for row in pair["steps"]}
        assert timed == {(method, engine) for method in ("autoregressive", "chain of 4", "sequoia")
                         for engine in ("eager", "static")}
        assert all(positive(row["step_ms"]) and positive(row["predicted_step_ms"]) for row in pair["steps"])
        assert all(positive(row["speedup"]) and positive(row["expected_tokens"]) for row in pair["plans"])
        assert {row["profile"] for row in pair["plans"]} >= {"eager", "static"}


def test_cpu_run_compares_the_papers_pair_with_the_official_figures(report):
    figures, _ = report
    llama = next(pair for pair in figures["pairs"] if pair["official"])
    assert [(row["role"], row["count"]) for row in llama["official"]] == [
        ("target", n) for n in (1, 2, 4, 8, 16, 32)] + [("draft", 1)]
    assert all(positive(ms) for row in llama["official"] for ms in row["ms"].values())
    assert any(row["profile"] == "official A100" for row in llama["plans"])


def test_report_md_has_every_table(report):
    _, text = report
    for heading in ("# GPU check on cpu", "### t(n), ms", "### t(1)", "### Decode, ms per step",
                    "### Predicted speedup", "### Against the official A100 figures"):
        assert heading in text
    assert "| sequoia | " in text and "| chain of 4 | 5 | 4 | static |" in text
    assert "CUDA graphs: not on this device" in text and "wall time:" in text


def test_cuda_without_a_gpu_is_one_line():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert_one_line_error(sequoia("gpu-check", "--device", "cuda"), "--device")


def test_the_official_vector_is_an_acceptance_vector_optimize_plans_with():
    vector = read_acceptance(str(ACCEPTANCE / "sequoia-official-llama-68m-llama-2-7b.json"))
    acceptance = vector["acceptance"]
    assert len(acceptance) == vector["width"] == 32
    assert all(0 <= a <= 1 for a in acceptance) and sum(acceptance) <= 1 + 1e-6
    official = read_profile(str(ACCEPTANCE / "sequoia-official-a100-profile.json"))
    assert timings(official["target"]) == {1: 10.0, 2: 10.0, 4: 10.0, 8: 12.0, 16: 14.0, 32: 18.0}
    assert timings(official["draft"]) == {1: 0.3}
    assert optimize(vector, official)["plan"]["speedup"] > 1


def test_the_built_in_pairs_vectors_are_the_benchmarks():
    bench = json.loads((ROOT / "docs" / "results" / "bench.json").read_text())
    for workload in ("humaneval", "mt-bench"):
        stored = read_acceptance(str(ACCEPTANCE / f"qwen2.5-coder-{workload}-greedy.json"))
        measured = next(v for v in bench["vectors"] if v["workload"] == workload and v["mode"] == "greedy")
        for field in ("acceptance", "acceptance_by_level", "counts", "samples", "rejected_all"):
            assert stored[field] == measured[field]


def test_shrunk_shapes_keep_whole_heads_and_the_pairs_list_ignores_them():
    for pair in PAIRS:
        for name in (pair.target, pair.draft):
            config = shrunk(shape(name))
            assert config["hidden_size"] % config["num_attention_heads"] == 0
            assert config["num_attention_heads"] % config["num_key_value_heads"] == 0
    data = {path.stem for path in configs_dir().glob("*/*.json")}
    assert data and not data & set(pair_names())


def test_report_md_of_a_cuda_run_names_captures_and_failures(report):
    figures, _ = report
    cuda = {**figures, "engines": ["eager", "cuda-graphs"],
            "warnings": ["CUDA graph capture failed (RuntimeError: no); this forward runs uncaptured"],
            "pairs": [{**pair, "graphs": {"captured": 3, "forwards": 4}} for pair in figures["pairs"]]}
    cuda["pairs"][0] = {**cuda["pairs"][0], "failures": {"profile-hw, cuda-graphs": {"error": "RuntimeError: no"}}}
    text = report_markdown(cuda)
    assert "CUDA graphs: 6 of the 8 fixed-shape decode forwards captured; capture warnings: `CUDA graph" in text
    assert "- failed: profile-hw, cuda-graphs: RuntimeError: no" in text
