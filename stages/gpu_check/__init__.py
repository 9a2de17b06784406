"""gpu-check: the decode engines settled on one machine, with random-weight models of real shapes.

On a bare GPU machine (no network, no venv, its own torch and transformers), from the repository
root, one command:

    make gpu-check DEVICE=cuda PYTHON_BIN=python3

It runs the exactness tests on the device, then this check from the source tree (nothing to
install: that python needs torch with CUDA, transformers, numpy, pydantic, pyyaml, typer and rich,
and pytest, hypothesis and scipy for the tests), and writes runs/gpu-check/report.md and
report.json. The check alone: `sequoia gpu-check --device cuda`, or without an install
`python3 -c 'from sequoia_cli.cli import main; main()' gpu-check --device cuda`. `make gpu-check
DEVICE=cpu` (CI) runs it on a CPU, its shapes shrunk (`shrunk`), without the tests (`make test`
runs them).

For each pair of shapes (`PAIRS`: configs/shapes/) both models get random weights, made on the
device in bfloat16; the draft is set up as the pair's acceptance vectors were measured (int4 for
the built-in pair; where that fails on the device, the report says why and the draft runs in
bfloat16). Then, for each engine the device serves (`kv.engines_served`):
- profile-hw's t(n) of target and draft;
- decode's time per step (the run's seconds but the prefill, over its steps; greedy, from a fixed
  random prompt) with autoregressive decoding, a chain of 4 and the tree optimize plans, the
  engines interleaved, beside the step time the profile predicts;
- the speedup optimize predicts from each of the pair's real acceptance vectors
  (configs/acceptance/) with that engine's profile.
The paper's pair also sets its t(n) beside the official A100 figures, and plans with those too.
What a step accepts is meaningless with random weights and is not reported: it sets only how many
steps a run takes and whether a step's first draft forward reads 1 token or 2 (after the deepest
level was accepted; the predicted step time counts 1).
"""

import json
import statistics
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass

import torch
from sequoia_cli.stages.bench.harness import machine
from sequoia_cli.stages.optimize import optimize
from sequoia_cli.stages.profile_hw import Timing, profile_hw
from torch import nn

from sequoia_cli.artifacts import read_acceptance, read_profile, timings
from sequoia_cli.cost import interpolate, step_ms
from sequoia_cli.decoder import DecodeConfig, Decoder
from sequoia_cli.errors import one_line
from sequoia_cli.kv import engines_served
from sequoia_cli.models import dtype_of
from sequoia_cli.pairs import configs_dir
from sequoia_cli.quantize import Int4Linear, Int8Linear, PackedLinear, set_up
from sequoia_cli.sampling import Sampling
from sequoia_cli.seeds import prompt_generator
from sequoia_cli.tree import chain_parents, depths

DEFAULT_OUT_DIR = "runs/gpu-check"
DTYPE = "bfloat16"
# The prompt's length and the profiles' context: the prefix of the official profiling script.
CONTEXT = 128
CHAIN = 4
SEED = 0
WARMUP = 2  # untimed profile forwards per count: a CUDA graph is captured at the second
CAPTURE_FAILED = "CUDA graph capture failed"  # kv.Replay's warning
OFFICIAL = "official A100"


@dataclass(frozen=True)
class Mode:
    name: str
    max_tokens: int  # the largest count profiled, and so the largest tree optimize weighs
    repeats: int  # profile rounds
    new_tokens: int  # per decode run
    rounds: int  # timed decode rounds, after one that warms up


FULL = Mode("full", max_tokens=128, repeats=5, new_tokens=64, rounds=3)
QUICK = Mode("quick", max_tokens=32, repeats=2, new_tokens=32, rounds=1)


@dataclass(frozen=True)
class Pair:
    """A target's and a draft's shape (configs/shapes/), the real acceptance vectors of models of
    those shapes (configs/acceptance/), the first planning the timed tree, and the official profile
    where one is published."""

    name: str
    target: str
    draft: str
    acceptance: tuple[str, ...]
    official: str | None = None


PAIRS = (
    Pair("qwen2.5-coder", "qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct",
         ("qwen2.5-coder-humaneval-greedy", "qwen2.5-coder-mt-bench-greedy")),
    Pair("llama-2-7b", "llama-2-7b", "llama-68m", ("sequoia-official-llama-68m-llama-2-7b",),
         "sequoia-official-a100-profile"),
)


def shape(name: str) -> dict:
    return json.loads((configs_dir() / "shapes" / f"{name}.json").read_text(encoding="utf-8"))


def shrunk(config: dict) -> dict:
    """A shape small enough for the whole check to run on a CPU in seconds: hidden and intermediate
    sizes / 16, layers / 8 (at least 1), a vocabulary of 512. Heads, key-value heads, positions and
    RoPE are kept, so attention is grouped as in the full shape, and a draft keeps roughly its
    share of the target's layers, so that optimize still plans trees. Special token ids are dropped:
    they may lie past the small vocabulary, and the check never stops at one."""
    kept = {key: value for key, value in config.items() if not key.endswith("_token_id")}
    return {**kept, "hidden_size": config["hidden_size"] // 16, "intermediate_size": config["intermediate_size"] // 16,
            "num_hidden_layers": max(1, config["num_hidden_layers"] // 8), "vocab_size": 512}


def random_model(config: dict, device: torch.device, seed: int):
    """A causal LM of `config`'s shape with random weights, made on `device` in DTYPE: a 7B model
    initialised on a CPU and moved would take minutes, on the GPU its initialisation takes little."""
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config), dtype=dtype_of(DTYPE))
    return model.eval()


def random_draft(config: dict, device: torch.device, quantize: str, notes: list[str]) -> tuple[object, str]:
    """The draft set up with `quantize`, and the quantization it runs with: where set-up or a first
    forward fails on the device, a plain draft and a note that says why."""
    try:
        draft = set_up(random_model(config, device, SEED + 1), None, quantize, None)
        with torch.inference_mode():
            draft(input_ids=torch.zeros(1, 1, dtype=torch.long, device=device))
        if quantize != "none":
            done, layers = quantized_layers(draft)
            notes.append(f"draft {quantize}: {done} of {layers} linear layers (those of a shape the kernel cannot"
                         f" take stay in {DTYPE})")
        return draft, quantize
    except Exception as err:
        notes.append(f"draft {quantize} failed on {device} ({one_line(err)}): the draft runs in {DTYPE}")
        return set_up(random_model(config, device, SEED + 1), None, "none", None), "none"


def quantized_layers(model) -> tuple[int, int]:
    """(quantized, all) of the model's linear layers."""
    kinds = [type(module) for module in model.modules()]
    quantized = sum(kind in (Int8Linear, Int4Linear) for kind in kinds)
    return quantized, quantized + sum(kind in (nn.Linear, PackedLinear) for kind in kinds)


def or_failure(failures: dict, key: str, work: Callable, *args, **kwargs):
    """`work(*args, **kwargs)`, or None with the failure kept under `key`: one engine's fault
    leaves the rest of the check standing, and the report shows it."""
    try:
        return work(*args, **kwargs)
    except Exception as err:
        failures[key] = {"error": one_line(err), "traceback": traceback.format_exc(limit=-6)}
        return None


def plans_of(vectors: dict[str, dict], profiles: dict[str, dict]) -> list[dict]:
    """optimize's plan for every (acceptance vector, profile)."""
    rows = []
    for vector_name, vector in vectors.items():
        for profile_name, profile in profiles.items():
            tree = optimize(vector, profile)
            plan = tree["plan"]
            rows.append({"acceptance": vector_name, "profile": profile_name, "parents": tree["parents"],
                         "size": plan["size"], "depth": plan["depth"], "expected_tokens": tree["expected_tokens"],
                         "step_ms": plan["step_ms"], "speedup": plan["speedup"]})
    return rows


def step_times(target, draft, trees: dict[str, list[int]], engines: tuple[str, ...], mode: Mode,
               device: torch.device, tick: Callable, failures: dict) -> tuple[dict, dict]:
    """({(method, engine): ms per step by round}, {(method, engine): its last run}). Each round runs
    every method on every engine in turn, the engines' order reversed every other round; round 0
    makes the caches and captures the forwards, untimed, and each later run reuses them. An engine
    that fails is dropped."""
    prompt = torch.randint(0, target.config.vocab_size, (CONTEXT,), generator=torch.Generator().manual_seed(SEED))
    decoders = {(method, engine): Decoder(DecodeConfig(target, draft, parents, Sampling(), mode.new_tokens,
                                                       engine=engine))
                for method, parents in trees.items() for engine in engines}
    times, last, live = {}, {}, list(engines)
    for index in range(mode.rounds + 1):
        for method in trees:
            for engine in live if index % 2 == 0 else live[::-1]:
                tick(0, f"decoding, {method}, {engine}")
                result = or_failure(failures, f"decode, {engine}", decoders[method, engine].generate, prompt.tolist(),
                                    prompt_generator(SEED, 0, device))
                tick()
                if result is None:
                    live.remove(engine)
                    continue
                last[method, engine] = result
                if index:
                    seconds = result.seconds - result.prefill_seconds
                    times.setdefault((method, engine), []).append(1000.0 * seconds / len(result.accepted))
    return times, last


def captured(runs: list) -> dict:
    """How many of the fixed-shape forwards that the runs' caches keep are CUDA graphs."""
    replays = [replay for run in runs for cache in (run.target_cache, run.draft_cache) if cache is not None
               for replay in cache.replays.values()]
    return {"captured": sum(replay.graph is not None for replay in replays), "forwards": len(replays)}


def step_rows(trees: dict[str, list[int]], times: dict, profiles: dict[str, dict]) -> list[dict]:
    """Per (method, engine) timed: the median ms per step and what the engine's profile predicts."""
    rows = []
    for (method, engine), by_round in times.items():
        parents = trees[method]
        profile = profiles.get(engine)
        predicted = step_ms(parents, timings(profile["target"]), timings(profile["draft"])) if profile else None
        rows.append({"method": method, "engine": engine, "size": len(parents), "depth": max(depths(parents)),
                     "step_ms": statistics.median(by_round), "step_ms_by_round": by_round,
                     "predicted_step_ms": predicted})
    return rows


def official_rows(official: dict, profiles: dict[str, dict]) -> list[dict]:
    """The official times beside each engine's at the official counts (interpolated where the
    profile lacks a count)."""
    return [{"role": role, "count": count, "official_ms": ms,
             "ms": {engine: interpolate(timings(profile[role]), count) for engine, profile in profiles.items()}}
            for role in ("target", "draft") for count, ms in timings(official[role]).items()]


def pair_work(mode: Mode, engines: tuple[str, ...]) -> int:
    """The progress steps of one pair: models, a profile per engine, the plans, every decode run."""
    return 1 + len(engines) + 1 + (mode.rounds + 1) * 3 * len(engines)


def pair_result(pair: Pair) -> dict:
    """A pair's part of the report, before anything is measured."""
    return {"pair": pair.name, "target": pair.target, "draft": pair.draft, "draft_quantize": "none", "shapes": {},
            "engines": [], "profiles": {}, "plans": [], "sequoia": None, "steps": [], "official": [],
            "graphs": {"captured": 0, "forwards": 0}, "notes": [], "failures": {}}


def check_pair(pair: Pair, device: torch.device, mode: Mode, advance: Callable, result: dict) -> None:
    """Profiles, decode step times and planned speedups of one pair's shapes on `device`, put in
    `result` (`pair_result`) as they come, so that a failure midway leaves what was done."""
    failures, notes = result["failures"], result["notes"]

    def tick(weight: float = 1, label: str | None = None) -> None:
        advance(weight, f"{pair.name}: {label}" if label else None)

    vectors = {name: read_acceptance(str(configs_dir() / "acceptance" / f"{name}.json")) for name in pair.acceptance}
    configs = {role: shape(getattr(pair, role)) for role in ("target", "draft")}
    if device.type == "cpu":
        configs = {role: shrunk(config) for role, config in configs.items()}
    quantize = (next(iter(vectors.values())).get("draft_setup") or {}).get("quantize") or "none"
    tick(0, "making the models")
    target = set_up(random_model(configs["target"], device, SEED), None, "none", None)
    draft, quantize = random_draft(configs["draft"], device, quantize, notes)
    tick()
    result.update(shapes=configs, draft_quantize=quantize)
    models = {"target": (pair.target, target), "draft": (pair.draft, draft)}
    setups = {"target": {"quantize": "none", "vocab": None, "placement": None},
              "draft": {"quantize": quantize, "vocab": None}}
    engines, profiles = engines_served(device), result["profiles"]
    result["engines"] = list(engines)
    for engine in engines:
        tick(0, f"profiling, {engine}")
        profile = or_failure(failures, f"profile-hw, {engine}", profile_hw, models, DTYPE,
                             Timing(mode.max_tokens, CONTEXT, mode.repeats, WARMUP, SEED), setups=setups, engine=engine)
        if profile is not None:
            profiles[engine] = profile
        tick()
    official = {OFFICIAL: read_profile(str(configs_dir() / "acceptance" / f"{pair.official}.json"))} \
        if pair.official else {}
    tick(0, "planning")
    plans = result["plans"] = plans_of(vectors, {**profiles, **official})
    if official:
        result["official"] = official_rows(official[OFFICIAL], profiles)
    tick()
    trees = {"autoregressive": [-1], f"chain of {CHAIN}": chain_parents(CHAIN)}
    # The tree planned from the first vector with the last engine profiled (the fixed-shape one, where it ran).
    sequoia = next((plan for plan in plans if profiles and plan["profile"] == list(profiles)[-1]), None)
    if sequoia:
        trees["sequoia"], result["sequoia"] = sequoia["parents"], sequoia
    times, last = step_times(target, draft, trees, engines, mode, device, tick, failures)
    result.update(steps=step_rows(trees, times, profiles),
                  graphs=captured([run for (_, engine), run in last.items() if engine == "cuda-graphs"]))


def gpu_check(device: torch.device, quick: bool = False, progress: Callable | None = None) -> Iterator[dict]:
    """The check on `device`, one report per pair done, each holding every pair so far: written as
    they come, a run cut short keeps its finished pairs. `progress(description, total)` returns
    `advance(weight=1, label=None)`."""
    mode = QUICK if quick else FULL
    started = time.perf_counter()
    engines = engines_served(device)
    advance = progress("gpu-check", len(PAIRS) * pair_work(mode, engines)) if progress else (lambda *_, **__: None)
    facts = {key: value for key, value in machine(device, DTYPE).items() if key != "engine"}
    report = {"format": "sequoia-gpu-check/1", "machine": {**facts, "cuda": torch.version.cuda},
              "shapes": "shrunk" if device.type == "cpu" else "full", "mode": asdict(mode), "context_length": CONTEXT,
              "prompt_tokens": CONTEXT, "engines": list(engines), "pairs": []}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # each distinct warning once, though raised at every forward
        for pair in PAIRS:
            result = pair_result(pair)
            report["pairs"].append(result)
            or_failure(result["failures"], "check", check_pair, pair, device, mode, advance, result)
            report["warnings"] = sorted({str(warning.message) for warning in caught})
            report["seconds"] = time.perf_counter() - started
            yield report
