"""bench: the paper's claims measured on one model pair, every figure side by side, in one run.

Six experiments, each a plain function that returns rows (a list of dicts): scalability (tokens per
step against tree size, per tree family), robustness (against temperature, per verification
method), wall clock (tokens/s against Hugging Face generate), hardware awareness (the optimizer's
pick against fixed trees, predicted and measured), the DP's own run time, and the decode loop's
overhead outside the model forwards. `run_bench` runs them all, `write_report` writes report.md,
bench.json and two plots. Every number comes from this run: a cell that raised says
"failed: ..." in its place, a cell left out says "skipped: ..." and why.
"""

import datetime
import os
import platform
import subprocess
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from sequoia_cli.artifacts import timings, write_json, write_text
from sequoia_cli.engine import Sampling, chain_parents, context_length, generate, sync, tree_layout
from sequoia_cli.models import eos_ids
from sequoia_cli.prompts import load_prompts
from sequoia_cli.tree import best_tree, expected_tokens, tree_table
from stages.decode import encode_prompts, prompt_generator
from stages.measure_acceptance import measure_acceptance
from stages.optimize import optimize, step_ms
from stages.profile_hw import machine_facts, profile_model, token_counts

PROMPT_SET = "mt-bench"
TOP_P = 1.0  # every sampled cell: temperature only, no nucleus cut
ROBUST_VECTOR_TEMPERATURE = 0.6  # experiment 2's tree is the DP tree of this temperature's vector
FAMILIES = {"dp": "Sequoia DP tree", "kxd": "SpecInfer k x d", "chain": "chain", "topk": "top-2 tree"}
FAMILY_METHODS = {"dp": "sequoia", "kxd": "specinfer", "chain": "sequoia", "topk": "topk"}
ROBUST_METHODS = {"sequoia": "Sequoia (without replacement)", "specinfer": "SpecInfer (with replacement)",
                  "topk": "top-k (draft's top-k)"}
WALL_METHODS = ("HF generate", "HF assisted", "autoregressive", "chain 4", "SpecInfer 4x4", "Sequoia")
WARMUP_TOKENS = 8


@dataclass(frozen=True)
class Config:
    """What one run measures and how many tokens each cell gets (per prompt)."""

    name: str
    prompts: int  # decode prompts: mt-bench 0 .. prompts-1
    acceptance_prompts: int  # the vectors are measured on the prompts right after those
    continuation: int  # tokens of the target's own continuation per acceptance prompt
    width: int  # entries in each acceptance vector
    new_tokens: int  # experiments 1-2 (tokens per step only)
    timed_tokens: int  # experiments 3, 4, 6 (wall clock)
    sizes: tuple = (2, 8, 32)
    temperatures: tuple = (0.0, 0.6)  # experiment 1; 0 = greedy
    robust_temperatures: tuple = (0.2, 1.0)
    robust_size: int = 16
    chain_max_size: int = 32  # longer chains cost one draft forward per token: skipped
    sweep_sizes: tuple = (4, 16)
    sweep_depths: tuple = (3, 6)
    profile_max: int = 64
    profile_repeats: int = 3
    dp_sizes: tuple = (64, 256, 1024)
    dp_depth: int = 32
    dp_width: int = 32


QUICK = Config("quick", prompts=1, acceptance_prompts=1, continuation=32, width=8, new_tokens=16, timed_tokens=24)
FULL = Config("full", prompts=2, acceptance_prompts=2, continuation=64, width=16, new_tokens=20, timed_tokens=40,
              sizes=(2, 4, 8, 16, 32, 64, 128), temperatures=(0.0, 0.6, 1.0),
              robust_temperatures=(0.2, 0.6, 1.0, 1.2), sweep_sizes=(4, 16, 64), sweep_depths=(2, 4, 8),
              profile_max=128, profile_repeats=5)


@dataclass
class Run:
    """What every cell of one run shares: the models, the encoded prompts, the stop ids."""

    target: object
    draft: object
    prompt_ids: list[list[int]]
    eos: set[int]
    pad: int
    seed: int
    memo: dict = field(default_factory=dict)  # one decode per (tree, sampling, tokens)


# ---- tree families ---------------------------------------------------------------------------

def kxd_parents(k: int, d: int) -> list[int]:
    """SpecInfer's k independent sequences of depth d from the root: size k*d + 1."""
    return [-1] + [0 if i <= k else i - k for i in range(1, k * d + 1)]


def kxd_shape(size: int) -> tuple[int, int]:
    """(k, d) of the SpecInfer tree standing for a nominal size: k = 2 up to 16, 4 up to 64, then 8;
    d as deep as fits (the tree has k*d + 1 <= size nodes)."""
    k = 1 if size <= 2 else 2 if size <= 16 else 4 if size <= 64 else 8
    return k, (size - 1) // k


def kary_parents(size: int, k: int = 2) -> list[int]:
    """A tree in which every node has k children, filled breadth first up to `size` nodes."""
    return [-1] + [(i - 1) // k for i in range(1, size)]


def dp_parents(acceptance: list[float], size: int, depth: int | None = None) -> tuple[list[int], float]:
    """The DP tree of `size` nodes and depth <= `depth` (default: no bound) and its expected tokens."""
    depth = size - 1 if depth is None else depth
    table = tree_table(acceptance, size, depth)
    parents = best_tree(table, size, depth)
    return parents, float(table.expected[depth, size])


def predicted_speedup(parents: list[int], acceptance: list[float], profile: dict) -> float:
    """The optimizer's cost model (SPEC): E(T) * target_ms(1) / step_ms(T)."""
    target_ms = timings(profile["target"])
    cost = step_ms(parents, target_ms, timings(profile["draft"]))
    return expected_tokens(parents, acceptance) * target_ms[1] / cost


# ---- cells -----------------------------------------------------------------------------------

def one_line(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0]}" if text else type(error).__name__


def attempt(cell: Callable[[], dict]) -> dict:
    """The cell's figures, or {"error": "failed: ..."} if it raised."""
    try:
        return cell()
    except Exception as error:  # a failed cell is a result, not the end of the run
        return {"error": f"failed: {one_line(error)}"}


def clock(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


@contextmanager
def forward_clock(model, timed: bool = True):
    """Count (and time, with `timed`) the model's forwards through hooks; removed on exit."""
    totals = {"calls": 0, "seconds": 0.0}
    started = []

    def before(module, args):
        started.append(clock(model.device) if timed else 0.0)

    def after(module, args, output):
        begun = started.pop()
        totals["calls"] += 1
        if timed:
            totals["seconds"] += clock(model.device) - begun

    hooks = [model.register_forward_pre_hook(before), model.register_forward_hook(after)]
    try:
        yield totals
    finally:
        for hook in hooks:
            hook.remove()


def decode_one(run: Run, index: int, parents: list[int], sampling: Sampling, new_tokens: int) -> dict:
    """One prompt through `generate`: output ids, steps (= target forwards) and wall seconds."""
    layout = tree_layout(parents, run.target.device)
    generator = prompt_generator(run.seed, index, run.target.device)
    started = clock(run.target.device)
    result = generate(run.target, run.draft if layout.depth else None, run.prompt_ids[index], layout, sampling,
                      new_tokens, run.eos, generator)
    seconds = clock(run.target.device) - started
    return {"output": result.output_ids, "steps": len(result.accepted), "seconds": seconds}


def figures(outputs: list[list[int]], steps: int, seconds: float) -> dict:
    tokens = sum(len(o) for o in outputs)
    return {"tokens": tokens, "steps": steps, "seconds": seconds,
            "tokens_per_step": tokens / steps if steps else None,
            "tokens_per_second": tokens / seconds if seconds else None, "outputs": outputs}


def decode_cell(run: Run, parents: list[int], sampling: Sampling, new_tokens: int) -> dict:
    """Every prompt through `generate` with one tree; decoded once per (tree, sampling, tokens)."""
    key = (tuple(parents), sampling.temperature, sampling.top_p, "" if sampling.greedy else sampling.method,
           new_tokens)
    if key not in run.memo:
        runs = [decode_one(run, i, parents, sampling, new_tokens) for i in range(len(run.prompt_ids))]
        run.memo[key] = figures([r["output"] for r in runs], sum(r["steps"] for r in runs),
                                sum(r["seconds"] for r in runs))
    layout = tree_layout(parents)
    return {"tree_size": layout.size, "depth": layout.depth, **run.memo[key]}


def vector_of(vectors: dict, temperature: float) -> list[float]:
    vector = vectors.get(temperature)
    if vector is None or "error" in vector:
        reason = vector["error"] if vector else "not measured"
        raise RuntimeError(f"no acceptance vector at temperature {temperature} ({reason})")
    return vector["acceptance"]


def sampling_at(temperature: float, method: str) -> Sampling:
    return Sampling(temperature, TOP_P if temperature else 1.0, method)


# ---- the experiments -------------------------------------------------------------------------

def acceptance_vectors(run: Run, tokenizer, config: Config, tick) -> dict:
    """{temperature: sequoia-acceptance/1 fields} on the prompts right after the decode prompts."""
    first = config.prompts
    records = [{"prompt": p} for p in load_prompts(PROMPT_SET, max_prompts=first + config.acceptance_prompts)[first:]]
    vectors = {}
    for temperature in config.temperatures:
        vectors[temperature] = attempt(lambda: measure_acceptance(
            run.target, run.draft, tokenizer, records, sampling_at(temperature, "sequoia"), config.width,
            config.continuation, run.seed))
        tick(f"acceptance at temperature {temperature}")
    return vectors


def scalability_cell(run: Run, config: Config, vectors: dict, family: str, size: int, temperature: float) -> dict:
    extra = {}
    if family == "dp":
        parents, predicted = dp_parents(vector_of(vectors, temperature), size)
        extra["predicted"] = predicted
    elif family == "kxd":
        k, d = kxd_shape(size)
        parents, extra["shape"] = kxd_parents(k, d), f"{k}x{d}"
    elif family == "chain":
        if size > config.chain_max_size:
            return {"skipped": f"skipped: a chain of {size - 1} tokens costs {size - 1} draft forwards per step"
                               f" (run's limit: size {config.chain_max_size})"}
        parents = chain_parents(size - 1)
    else:
        parents = kary_parents(size, 2)
    return {**decode_cell(run, parents, sampling_at(temperature, FAMILY_METHODS[family]), config.new_tokens), **extra}


def scalability(run: Run, config: Config, vectors: dict, tick) -> list[dict]:
    """Experiment 1: tokens per step against tree size, per family and temperature."""
    rows = []
    for temperature in config.temperatures:
        for size in config.sizes:
            for family in FAMILIES:
                row = {"temperature": temperature, "size": size, "family": family}
                row.update(attempt(lambda: scalability_cell(run, config, vectors, family, size, temperature)))
                rows.append(row)
                tick(f"scalability t={temperature} {family} size {size}")
    return rows


def robustness(run: Run, config: Config, vectors: dict, tick) -> list[dict]:
    """Experiment 2: tokens per step against temperature at one DP tree, per verification method."""
    tree = attempt(lambda: dict(zip(("parents", "predicted"), dp_parents(
        vector_of(vectors, ROBUST_VECTOR_TEMPERATURE), config.robust_size))))
    rows = []
    for temperature in config.robust_temperatures:
        for method in ROBUST_METHODS:
            row = {"temperature": temperature, "method": method}
            if "error" in tree:
                row["error"] = tree["error"]
            else:
                row.update(attempt(lambda: decode_cell(run, tree["parents"], sampling_at(temperature, method),
                                                       config.new_tokens)))
            rows.append(row)
            tick(f"robustness t={temperature} {method}")
    return rows


def plan_tree(run: Run, config: Config, vectors: dict, dtype: str, tick) -> dict:
    """The profile measured here and the optimizer's tree from it and the greedy vector."""
    def work():
        mean_prompt = sum(map(len, run.prompt_ids)) / len(run.prompt_ids)
        context = int(mean_prompt + config.timed_tokens / 2)  # the decode's typical KV cache
        counts = token_counts(config.profile_max)
        profile = {"format": "sequoia-profile/1", **machine_facts(run.target.device, dtype),
                   "context_length": context, "repeats": config.profile_repeats, "warmup": 1}
        for role, model in (("target", run.target), ("draft", run.draft)):
            profile[role] = {"ms": profile_model(model, context, counts, config.profile_repeats, 1, run.seed)}
        vector_of(vectors, 0.0)  # raises if the greedy vector failed
        tree = optimize(vectors[0.0], profile)
        return {"profile": profile, "parents": tree["parents"], "plan": {k: v for k, v in tree["plan"].items()
                                                                         if k != "candidates"}}
    plan = attempt(work)
    tick("profile and optimize")
    return plan


def hf_one(run: Run, index: int, new_tokens: int, assisted: bool) -> dict:
    """One prompt through Hugging Face `generate` (greedy), its target forwards counted."""
    from transformers import GenerationConfig
    from transformers.utils import logging as hf_logging

    ids = torch.tensor([run.prompt_ids[index]], device=run.target.device)
    settings = GenerationConfig(do_sample=False, max_new_tokens=new_tokens, pad_token_id=run.pad,
                                eos_token_id=sorted(run.eos) or None)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # assisted generation warns about its own internal call
    try:
        with torch.inference_mode(), forward_clock(run.target, timed=False) as forwards:
            started = clock(run.target.device)
            out = run.target.generate(ids, attention_mask=torch.ones_like(ids), generation_config=settings,
                                      assistant_model=run.draft if assisted else None)
            seconds = clock(run.target.device) - started
    finally:
        hf_logging.set_verbosity(verbosity)
    return {"output": out[0, ids.shape[1]:].tolist(), "steps": forwards["calls"], "seconds": seconds}


def wall_methods(plan: dict) -> dict:
    """name -> (parents, method) for our engine; None for Hugging Face's."""
    methods = {"HF generate": None, "HF assisted": None, "autoregressive": ([-1], "sequoia"),
               "chain 4": (chain_parents(4), "sequoia"), "SpecInfer 4x4": (kxd_parents(4, 4), "specinfer")}
    if "parents" in plan:
        methods["Sequoia"] = (plan["parents"], "sequoia")
    return methods


def first_difference(outputs: list[list[int]], reference: list[list[int]]) -> str:
    for index, (out, ref) in enumerate(zip(outputs, reference)):
        if out != ref:
            at = next((i for i, (a, b) in enumerate(zip(out, ref)) if a != b), min(len(out), len(ref)))
            return f"no: prompt {index} differs at token {at}"
    return "yes"


def wall_clock(run: Run, config: Config, plan: dict, tick) -> list[dict]:
    """Experiment 3: greedy tokens/s of each method on the same prompts, prompt by prompt in turn
    (so that a drift of the machine touches every method alike), after one untimed warm-up."""
    methods = wall_methods(plan)
    warm = methods.get("Sequoia") or methods["autoregressive"]
    attempt(lambda: decode_one(run, 0, warm[0], Sampling(), WARMUP_TOKENS))
    tick("warm-up")
    done = {name: [] for name in WALL_METHODS}
    failed = {"Sequoia": plan["error"]} if "error" in plan else {}
    for index in range(len(run.prompt_ids)):
        for name in WALL_METHODS:
            if name not in failed:
                if methods[name] is None:
                    result = attempt(lambda: hf_one(run, index, config.timed_tokens, name == "HF assisted"))
                else:
                    parents, method = methods[name]
                    result = attempt(lambda: decode_one(run, index, parents, Sampling(0.0, 1.0, method),
                                                        config.timed_tokens))
                if "error" in result:
                    failed[name] = result["error"]
                done[name].append(result)
            tick(f"wall clock: {name}, prompt {index}")
    rows = []
    for name in WALL_METHODS:
        row = {"method": name}
        if name in failed:
            row["error"] = failed[name]
        else:
            runs = done[name]
            row.update(figures([r["output"] for r in runs], sum(r["steps"] for r in runs),
                               sum(r["seconds"] for r in runs)))
            if methods[name] is not None:
                layout = tree_layout(methods[name][0])
                row.update(tree_size=layout.size, depth=layout.depth)
        rows.append(row)
    reference = next((r for r in rows if "outputs" in r and r["method"] in ("HF generate", "autoregressive")), None)
    baseline = next((r for r in rows if r["method"] == "HF generate" and "tokens_per_second" in r), None)
    for row in rows:
        if "outputs" in row and reference is not None:
            row["same_tokens"] = "reference" if row is reference else first_difference(row["outputs"],
                                                                                       reference["outputs"])
        if baseline and row.get("tokens_per_second"):
            row["vs_hf"] = row["tokens_per_second"] / baseline["tokens_per_second"]
    return rows


def hardware(run: Run, config: Config, vectors: dict, plan: dict, wall_rows: list[dict], tick) -> list[dict]:
    """Experiment 4: measured speedup over our autoregressive loop of the optimizer's pick and of
    fixed DP trees, each beside the speedup the cost model predicts from the profile."""
    by_name = {r["method"]: r for r in wall_rows}
    baseline = by_name["autoregressive"].get("tokens_per_second")
    candidates = [("optimizer's pick", None, None)] + [
        (f"DP size {s}, depth <= {d}", s, d) for s in config.sweep_sizes for d in config.sweep_depths]
    rows = []
    for label, size, depth in candidates:
        def cell():
            acceptance = vector_of(vectors, 0.0)
            if "error" in plan:
                raise RuntimeError(f"no profile or plan ({plan['error']})")
            parents = plan["parents"] if size is None else dp_parents(acceptance, size, depth)[0]
            if parents == plan["parents"]:  # the pick: its experiment-3 run
                measured = by_name["Sequoia"]
                if "error" in measured:
                    raise RuntimeError(f"its wall-clock run {measured['error']}")
            else:
                measured = decode_cell(run, parents, Sampling(), config.timed_tokens)
            if not baseline:
                raise RuntimeError("no autoregressive baseline: " + by_name["autoregressive"].get("error", "?"))
            return {"tree_size": len(parents), "depth": tree_layout(parents).depth,
                    "predicted_tokens": expected_tokens(parents, acceptance),
                    "tokens_per_step": measured["tokens_per_step"],
                    "predicted_speedup": predicted_speedup(parents, acceptance, plan["profile"]),
                    "tokens_per_second": measured["tokens_per_second"],
                    "speedup": measured["tokens_per_second"] / baseline}
        rows.append({"tree": label, **attempt(cell)})
        tick(f"hardware: {label}")
    return rows


def dp_timing(config: Config, seed: int, tick) -> list[dict]:
    """Experiment 5: wall time of the DP (tree_table) and of rebuilding the tree (best_tree)."""
    generator = np.random.default_rng(seed)
    vector = sorted(generator.dirichlet(np.ones(config.dp_width + 1))[:config.dp_width], reverse=True)
    rows = []
    for size in config.dp_sizes:
        def cell():
            started = time.perf_counter()
            table = tree_table(vector, size, config.dp_depth)
            built = time.perf_counter()
            best_tree(table, size, config.dp_depth)
            return {"table_seconds": built - started, "tree_seconds": time.perf_counter() - built,
                    "expected": float(table.expected[config.dp_depth, size])}
        rows.append({"size": size, "depth": config.dp_depth, "width": config.dp_width, **attempt(cell)})
        tick(f"DP size {size}")
    return rows


def loop_overhead(run: Run, config: Config, plan: dict, tick) -> list[dict]:
    """Experiment 6: the share of the Sequoia run's wall time spent outside the two models'
    forwards (drafting bookkeeping, masks, verification, cache trimming), timed through hooks."""
    def cell():
        if "error" in plan:
            raise RuntimeError(f"no Sequoia tree ({plan['error']})")
        with forward_clock(run.target) as target, forward_clock(run.draft) as draft:
            runs = [decode_one(run, i, plan["parents"], Sampling(), config.timed_tokens)
                    for i in range(len(run.prompt_ids))]
        wall, steps = sum(r["seconds"] for r in runs), sum(r["steps"] for r in runs)
        outside = wall - target["seconds"] - draft["seconds"]
        return {"tree_size": len(plan["parents"]), "wall_seconds": wall, "steps": steps,
                "target_seconds": target["seconds"], "target_forwards": target["calls"],
                "draft_seconds": draft["seconds"], "draft_forwards": draft["calls"],
                "outside_seconds": outside, "outside_share": outside / wall,
                "outside_ms_per_step": 1000 * outside / steps}
    row = {"method": "Sequoia", **attempt(cell)}
    tick("loop overhead")
    return [row]


# ---- the run ---------------------------------------------------------------------------------

def count_cells(config: Config) -> int:
    """Ticks a run makes, for a progress bar."""
    return (len(config.temperatures) * (1 + len(config.sizes) * len(FAMILIES))
            + len(config.robust_temperatures) * len(ROBUST_METHODS)
            + 1 + 1 + config.prompts * len(WALL_METHODS)
            + 1 + len(config.sweep_sizes) * len(config.sweep_depths)
            + len(config.dp_sizes) + 1)


def machine(device: torch.device, dtype: str) -> dict:
    import transformers

    facts = machine_facts(device, dtype)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    facts.update(transformers=transformers.__version__, python=platform.python_version(), cpu=cpu,
                 cores=os.cpu_count(), platform=platform.platform(), code=commit,
                 date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    return facts


def run_bench(target, draft, tokenizer, out_dir: str, config: Config = QUICK, seed: int = 0,
              names: dict | None = None, dtype: str | None = None, tick=None) -> Path:
    """Run every experiment and write the report; returns report.md's path. `tick(label)` is
    called after each of `count_cells(config)` cells."""
    tick = tick or (lambda label: None)
    started = time.perf_counter()
    dtype = dtype or str(target.dtype).removeprefix("torch.")
    prompts = load_prompts(PROMPT_SET, max_prompts=config.prompts)
    context = min(context_length(target), context_length(draft))
    stop = eos_ids(target, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop, default=0)
    run = Run(target, draft, encode_prompts(tokenizer, prompts, context, True), stop, pad, seed)
    facts = machine(target.device, dtype)  # now: the commit the run's code came from

    vectors = acceptance_vectors(run, tokenizer, config, tick)
    results = {"scalability": scalability(run, config, vectors, tick),
               "robustness": robustness(run, config, vectors, tick)}
    plan = plan_tree(run, config, vectors, dtype, tick)
    results["wall_clock"] = wall_clock(run, config, plan, tick)
    results["hardware"] = hardware(run, config, vectors, plan, results["wall_clock"], tick)
    results["dp"] = dp_timing(config, seed, tick)
    results["overhead"] = loop_overhead(run, config, plan, tick)
    results.update(
        config=asdict(config), seed=seed, machine=facts, models=names or {},
        prompts={"set": PROMPT_SET, "decode": list(range(config.prompts)),
                 "acceptance": list(range(config.prompts, config.prompts + config.acceptance_prompts)),
                 "decode_prompt_tokens": [len(ids) for ids in run.prompt_ids], "chat_template": True},
        eos=sorted(stop), vectors=[{"temperature": t, **v} for t, v in vectors.items()],
        plan=plan, seconds=time.perf_counter() - started)
    return write_report(out_dir, results)


# ---- the report ------------------------------------------------------------------------------

def number(value, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def cell_text(row: dict, key: str, digits: int = 2, suffix: str = "") -> str:
    """A figure, or the reason it is missing."""
    for reason in ("error", "skipped"):
        if reason in row:
            return row[reason].replace("|", "/")
    return number(row.get(key), digits, suffix)


def temperature_name(temperature: float) -> str:
    return "greedy" if temperature == 0 else f"temperature {temperature}"


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def ok(row: dict | None, key: str):
    return None if row is None or "error" in row or "skipped" in row else row.get(key)


def plain(row: dict | None, key: str) -> str:
    value = ok(row, key)
    return "-" if value is None else str(value)


def scalability_section(rows: list[dict], config: dict) -> str:
    parts = []
    for temperature in config["temperatures"]:
        subset = [r for r in rows if r["temperature"] == temperature]
        lines = []
        for size in config["sizes"]:
            cells = {r["family"]: r for r in subset if r["size"] == size}
            dp, kxd = cells.get("dp", {}), cells.get("kxd", {})
            shape = f"{kxd['shape']} ({kxd['tree_size']})" if ok(kxd, "shape") else "-"
            lines.append([str(size), cell_text(dp, "tokens_per_step"), cell_text(dp, "predicted"),
                          plain(dp, "depth"),
                          cell_text(kxd, "tokens_per_step"), shape, cell_text(cells.get("chain", {}), "tokens_per_step"),
                          cell_text(cells.get("topk", {}), "tokens_per_step")])
        header = ["size", "DP tree", "DP predicted E", "DP depth", "SpecInfer k x d", "k x d (size)", "chain",
                  "top-2 tree"]
        parts.append(f"**{temperature_name(temperature)}**\n\n" + markdown_table(header, lines)
                     + "\n\n" + scalability_finding(subset))
    return "\n\n".join(parts)


def scalability_finding(rows: list[dict]) -> str:
    """One sentence from the numbers: the largest size with a measured DP tree, against the rest."""
    sizes = sorted({r["size"] for r in rows if ok(r, "tokens_per_step") and r["family"] == "dp"})
    if not sizes:
        return "No DP tree was measured at this setting."
    size = sizes[-1]
    cells = {r["family"]: r for r in rows if r["size"] == size}
    others = [f"{ok(cells.get(f), 'tokens_per_step'):.2f} for the {FAMILIES[f]}" for f in ("chain", "kxd", "topk")
              if ok(cells.get(f), "tokens_per_step") is not None]
    dp = cells["dp"]
    ratios = [r["tokens_per_step"] / r["predicted"] for r in rows if r["family"] == "dp" and ok(r, "tokens_per_step")]
    return (f"At size {size} the DP tree accepts {dp['tokens_per_step']:.2f} tokens/step"
            + (f" vs {', '.join(others)}" if others else "")
            + f"; measured over predicted for the DP tree averages {np.mean(ratios):.2f} across sizes.")


def robustness_section(rows: list[dict], config: dict) -> str:
    lines = []
    for temperature in config["robust_temperatures"]:
        cells = {r["method"]: r for r in rows if r["temperature"] == temperature}
        lines.append([str(temperature)] + [cell_text(cells.get(m, {}), "tokens_per_step") for m in ROBUST_METHODS])
    table = markdown_table(["temperature"] + list(ROBUST_METHODS.values()), lines)
    spans = []
    for method, name in ROBUST_METHODS.items():
        values = [(r["temperature"], r["tokens_per_step"]) for r in rows if r["method"] == method and ok(r, "tokens_per_step")]
        if values:
            spans.append(f"{name.split(' ')[0]} {min(v for _, v in values):.2f}-{max(v for _, v in values):.2f}")
    wins = sum(1 for t in config["robust_temperatures"]
               if (s := ok(next((r for r in rows if r["temperature"] == t and r["method"] == "sequoia"), None), "tokens_per_step"))
               and all(s >= (ok(r, "tokens_per_step") or 0) for r in rows if r["temperature"] == t))
    finding = (f"Tokens/step range over the temperatures: {'; '.join(spans)}. Sequoia's method accepts the most"
               f" (or ties) at {wins} of {len(config['robust_temperatures'])} temperatures.") if spans else "No cell was measured."
    return table + "\n\n" + finding


def wall_section(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        size = f"{r['tree_size']} / {r['depth']}" if ok(r, "tree_size") else "-"
        lines.append([r["method"], size, plain(r, "tokens"), cell_text(r, "seconds"),
                      cell_text(r, "tokens_per_second"), cell_text(r, "vs_hf", 2, "x"),
                      cell_text(r, "tokens_per_step"), r.get("same_tokens", "-")])
    table = markdown_table(["method", "tree size / depth", "tokens", "seconds", "tokens/s", "vs HF generate",
                            "tokens per target forward", "same tokens as the reference"], lines)
    by = {r["method"]: r for r in rows}
    facts = [f"{m} runs at {ok(by[m], 'tokens_per_second'):.2f} tokens/s ({ok(by[m], 'vs_hf'):.2f}x HF generate)"
             for m in ("Sequoia", "HF assisted", "autoregressive") if ok(by.get(m), "vs_hf")]
    reference = next((r["method"] for r in rows if r.get("same_tokens") == "reference"), None)
    checked = [r for r in rows if r.get("same_tokens") not in (None, "reference")]
    differ = [f"{r['method']} ({r['same_tokens']})" for r in checked if r["same_tokens"] != "yes"]
    agree = (f"tokens differ from {reference}'s: {', '.join(differ)}" if differ
             else f"all {len(checked)} other methods produced exactly {reference}'s tokens" if checked
             else "no two runs to compare tokens")
    return table + "\n\n" + ("; ".join(facts) + "; " if facts else "") + agree + "."


def hardware_section(rows: list[dict], plan: dict) -> str:
    lines = [[r["tree"], plain(r, "tree_size"), plain(r, "depth"),
              cell_text(r, "predicted_tokens"), cell_text(r, "tokens_per_step"), cell_text(r, "predicted_speedup", 2, "x"),
              cell_text(r, "speedup", 2, "x"), cell_text(r, "tokens_per_second")] for r in rows]
    table = markdown_table(["tree", "size", "depth", "predicted tokens/step", "measured tokens/step",
                            "predicted speedup", "measured speedup", "tokens/s"], lines)
    measured = [r for r in rows if ok(r, "speedup")]
    if not measured:
        return table + "\n\nNo tree was measured."
    best = max(measured, key=lambda r: r["speedup"])
    rank = sorted(measured, key=lambda r: -r["speedup"]).index(measured[0]) + 1 if rows[0] in measured else None
    errors = [abs(r["speedup"] - r["predicted_speedup"]) / r["speedup"] for r in measured]
    pick = (f"The optimizer's pick (size {rows[0]['tree_size']}, depth {rows[0]['depth']}) measured "
            f"{rows[0]['speedup']:.2f}x (predicted {rows[0]['predicted_speedup']:.2f}x) and ranks {rank} of "
            f"{len(measured)} by measured speedup; " if rank else "The optimizer's pick was not measured; ")
    return (table + "\n\n" + pick + f"the fastest is {best['tree']} at {best['speedup']:.2f}x; predictions are off "
            f"by {100 * np.mean(errors):.0f}% of the measured speedup on average.")


def dp_section(rows: list[dict]) -> str:
    lines = [[str(r["size"]), str(r["depth"]), str(r["width"]), cell_text(r, "table_seconds", 3),
              cell_text(r, "tree_seconds", 4), cell_text(r, "expected", 3)] for r in rows]
    table = markdown_table(["size", "depth", "width", "tree_table seconds", "best_tree seconds", "E of the tree"], lines)
    done = [r for r in rows if ok(r, "table_seconds") is not None]
    finding = (f"The DP for size {done[-1]['size']} (depth {done[-1]['depth']}, width {done[-1]['width']}) takes "
               f"{done[-1]['table_seconds']:.2f} s, once per acceptance vector." if done else "No DP was timed.")
    return table + "\n\n" + finding


def overhead_section(rows: list[dict]) -> str:
    r = rows[0]
    lines = [[r["method"], plain(r, "tree_size"), cell_text(r, "wall_seconds"), cell_text(r, "target_seconds"),
              plain(r, "target_forwards"), cell_text(r, "draft_seconds"), plain(r, "draft_forwards"),
              cell_text(r, "outside_seconds"), cell_text(r, "outside_share", 3), cell_text(r, "outside_ms_per_step", 1)]]
    table = markdown_table(["run", "tree size", "wall s", "target forward s", "target forwards", "draft forward s",
                            "draft forwards", "outside forwards s", "share outside", "ms outside per step"], lines)
    finding = (f"{100 * r['outside_share']:.1f}% of the Sequoia run's wall time ({r['outside_ms_per_step']:.1f} ms per "
               f"step) is spent outside the model forwards." if ok(r, "outside_share") is not None else "Not measured.")
    return table + "\n\n" + finding


def setup_section(results: dict) -> str:
    m, c, p = results["machine"], results["config"], results["prompts"]
    models = results["models"]
    lines = [
        f"- run: `{c['name']}` mode, seed {results['seed']}, {results['seconds'] / 60:.1f} minutes",
        f"- models: target `{models.get('target', '?')}`, draft `{models.get('draft', '?')}`",
        f"- machine: {m['cpu']} ({m['cores']} cores), {m.get('gpu', 'no GPU')}; device {m['device']}, dtype {m['dtype']},"
        f" torch threads {m['threads']}",
        f"- versions: torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}, {m['platform']},"
        f" code {m['code'] or 'unknown'}; {m['date']}",
        f"- prompts: built-in `{p['set']}` (first turn, chat template on); decoding on indices {p['decode']}"
        f" ({', '.join(map(str, p['decode_prompt_tokens']))} prompt tokens), acceptance vectors measured on indices"
        f" {p['acceptance']} ({c['continuation']} tokens of the target's own continuation each, width {c['width']})",
        f"- tokens per prompt and cell: {c['new_tokens']} in experiments 1-2, {c['timed_tokens']} in 3, 4 and 6;"
        f" generation stops at EOS ({results['eos']}) or there, the same for every method; sampled cells use top-p"
        f" {TOP_P}; each prompt has its own random stream (seed, prompt index), the same for every method",
        "- tokens per step = generated tokens / target forwards (each prompt's last step included, even when the"
        " token budget cuts it short); cells with the same tree and sampling setting are decoded once",
    ]
    for vector in results["vectors"]:
        shown = ", ".join(f"{a:.3f}" for a in vector.get("acceptance", [])[:6])
        state = vector.get("error") or f"[{shown}, ...], none accepted {vector['rejected_all']:.3f}, {vector['samples']} positions"
        lines.append(f"- acceptance at {temperature_name(vector['temperature'])}: {state}")
    plan = results["plan"]
    if "profile" in plan:
        for role in ("target", "draft"):
            ms = plan["profile"][role]["ms"]
            lines.append(f"- profile ({role}, KV cache of {plan['profile']['context_length']} tokens, median of"
                         f" {plan['profile']['repeats']}): " + ", ".join(f"{n}: {t:.1f}" for n, t in ms.items()) + " ms")
        lines.append(f"- optimizer's pick from the greedy vector and this profile: size {plan['plan']['size']}, depth"
                     f" {plan['plan']['depth']}, predicted {plan['plan']['speedup']:.2f}x over autoregressive")
    else:
        lines.append(f"- profile and optimizer: {plan['error']}")
    return "\n".join(lines)


def legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no cell measured", ha="center", transform=ax.transAxes)


def plot_scalability(rows: list[dict], config: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    temperatures = config["temperatures"]
    figure, axes = plt.subplots(1, len(temperatures), figsize=(5 * len(temperatures), 4), squeeze=False)
    for ax, temperature in zip(axes[0], temperatures):
        for family, name in FAMILIES.items():
            points = sorted((r["tree_size"], r["tokens_per_step"]) for r in rows if r["temperature"] == temperature
                            and r["family"] == family and ok(r, "tokens_per_step"))
            if points:
                line, = ax.plot(*zip(*points), marker="o", label=name)
                if family == "dp":
                    predicted = sorted((r["tree_size"], r["predicted"]) for r in rows if r["temperature"] == temperature
                                       and r["family"] == "dp" and ok(r, "predicted"))
                    ax.plot(*zip(*predicted), linestyle="--", color=line.get_color(), label="DP predicted E")
        ax.set_xscale("log", base=2)
        ax.set_xticks(config["sizes"], [str(size) for size in config["sizes"]])
        ax.minorticks_off()
        ax.set_title(temperature_name(temperature))
        ax.set_xlabel("tree size (nodes)")
        ax.set_ylabel("tokens per step")
        ax.grid(alpha=0.3)
        legend(ax)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_robustness(rows: list[dict], size: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, ax = plt.subplots(figsize=(5.5, 4))
    for method, name in ROBUST_METHODS.items():
        points = sorted((r["temperature"], r["tokens_per_step"]) for r in rows
                        if r["method"] == method and ok(r, "tokens_per_step"))
        if points:
            ax.plot(*zip(*points), marker="o", label=name)
    ax.set_xlabel("temperature")
    ax.set_ylabel("tokens per step")
    ax.set_title(f"DP tree of size {size}, three verification methods")
    ax.grid(alpha=0.3)
    legend(ax)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_report(out_dir: str, results: dict) -> Path:
    """report.md, scalability.png, robustness.png and bench.json (every row) in `out_dir`."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = results["config"]
    plot_scalability(results["scalability"], config, folder / "scalability.png")
    robust_size = config["robust_size"]
    plot_robustness(results["robustness"], robust_size, folder / "robustness.png")
    sections = [
        "# sequoia bench\n\n" + setup_section(results),
        "## 1. Scalability: tokens per step against tree size\n\n"
        "Real decodes through `generate`. DP tree: the best tree of each size (no depth bound) for the acceptance"
        " vector of that setting, method sequoia, with its predicted E beside it. SpecInfer k x d: k independent"
        " chains of depth d from the root (k = 2 up to size 16, 4 up to 64, 8 beyond; the size column of the"
        " k x d cell is its actual size, k*d + 1), method specinfer. Chain: size - 1 tokens, method sequoia."
        " Top-2 tree: every node has 2 children, filled breadth first, method topk.\n\n"
        "![scalability](scalability.png)\n\n" + scalability_section(results["scalability"], config),
        f"## 2. Robustness: tokens per step against temperature\n\nOne tree for every cell: the DP tree of size"
        f" {robust_size} from the temperature-{ROBUST_VECTOR_TEMPERATURE} vector; the method sets how children are"
        " drawn and verified.\n\n![robustness](robustness.png)\n\n"
        + robustness_section(results["robustness"], config),
        "## 3. Wall clock, greedy\n\nSame prompts and token budget for every method, run prompt by prompt in turn"
        " after one untimed warm-up. HF: `target.generate(do_sample=False)`, and with `assistant_model=draft` at"
        " its default schedule. Ours: autoregressive (size 1), a chain of 4, a SpecInfer 4x4 tree, and Sequoia's"
        " tree from `optimize`. Seconds include the prompt's prefill.\n\n" + wall_section(results["wall_clock"]),
        "## 4. Hardware awareness, greedy\n\nMeasured speedup = tokens/s over our autoregressive run of"
        " experiment 3; predicted = the optimizer's cost model with this run's profile. The pick's figures are its"
        " experiment-3 run.\n\n" + hardware_section(results["hardware"], results["plan"]),
        "## 5. The DP itself\n\nA random acceptance vector (Dirichlet, fixed seed, sorted); no models.\n\n"
        + dp_section(results["dp"]),
        "## 6. Loop overhead\n\nA separate greedy run of experiment 3's Sequoia tree with forward hooks on both"
        " models (the engine is untouched); outside = wall time minus the time inside both models' forwards.\n\n"
        + overhead_section(results["overhead"]),
    ]
    write_json(str(folder / "bench.json"), results)
    report = folder / "report.md"
    write_text(str(report), "\n\n".join(sections) + "\n")
    return report
