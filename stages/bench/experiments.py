"""The bench's six experiments, each a plain function that returns rows (a list of dicts):
scalability (tokens per step against tree size, per tree family), robustness (against
temperature, per verification method), wall clock (tokens/s against Hugging Face generate),
hardware awareness (the optimizer's pick against fixed trees, predicted and measured), the DP's
own run time, and the decode loop's overhead outside the model forwards. They call the stages
(measure-acceptance, profile-hw, optimize, decode) as the Makefile chains them."""

import time

import numpy as np

from sequoia_cli.artifacts import timings
from sequoia_cli.cost import predicted_speedup
from sequoia_cli.engine import Sampling, chain_parents, tree_layout
from sequoia_cli.prompts import load_prompts
from sequoia_cli.tree import best_tree, dp_tree, expected_tokens, tree_table
from stages.bench.harness import (Config, Run, attempt, decode_cell, decode_one, figures, first_difference,
                                  forward_clock, hf_one, kary_parents, kxd_parents, kxd_shape, vector_of)
from stages.measure_acceptance import measure_acceptance
from stages.optimize import optimize
from stages.profile_hw import profile_hw

PROMPT_SET = "mt-bench"
TOP_P = 1.0  # every sampled cell: temperature only, no nucleus cut
ROBUST_VECTOR_TEMPERATURE = 0.6  # experiment 2's tree is the DP tree of this temperature's vector
FAMILIES = {"dp": "Sequoia DP tree", "kxd": "SpecInfer k x d", "chain": "chain", "topk": "top-2 tree"}
FAMILY_METHODS = {"dp": "sequoia", "kxd": "specinfer", "chain": "sequoia", "topk": "topk"}
ROBUST_METHODS = {"sequoia": "Sequoia (without replacement)", "specinfer": "SpecInfer (with replacement)",
                  "topk": "top-k (draft's top-k)"}
WALL_METHODS = ("HF generate", "HF assisted", "autoregressive", "chain 4", "SpecInfer 4x4", "Sequoia")
WARMUP_TOKENS = 8



def sampling_at(temperature: float, method: str) -> Sampling:
    return Sampling(temperature, TOP_P if temperature else 1.0, method)


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
        parents, predicted = dp_tree(vector_of(vectors, temperature), size)
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
    tree = attempt(lambda: dict(zip(("parents", "predicted"), dp_tree(
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
        profile = profile_hw({"target": ("target", run.target), "draft": ("draft", run.draft)}, dtype,
                             config.profile_max, context, config.profile_repeats, 1, run.seed)
        vector_of(vectors, 0.0)  # raises if the greedy vector failed
        tree = optimize(vectors[0.0], profile)
        return {"profile": profile, "parents": tree["parents"], "plan": {k: v for k, v in tree["plan"].items()
                                                                         if k != "candidates"}}
    plan = attempt(work)
    tick("profile and optimize")
    return plan


def wall_methods(plan: dict) -> dict:
    """name -> (parents, method) for our engine; None for Hugging Face's."""
    methods = {"HF generate": None, "HF assisted": None, "autoregressive": ([-1], "sequoia"),
               "chain 4": (chain_parents(4), "sequoia"), "SpecInfer 4x4": (kxd_parents(4, 4), "specinfer")}
    if "parents" in plan:
        methods["Sequoia"] = (plan["parents"], "sequoia")
    return methods


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
            parents = plan["parents"] if size is None else dp_tree(acceptance, size, depth)[0]
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
                    "predicted_speedup": predicted_speedup(parents, acceptance, timings(plan["profile"]["target"]),
                                                           timings(plan["profile"]["draft"])),
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
