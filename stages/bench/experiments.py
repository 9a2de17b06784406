"""The bench's experiments on one workload (a prompt set), each a plain function that runs its
interleaved blocks and returns rows (a list of dicts) with bootstrap intervals:
1. scalability: tokens per step against tree size, per tree family;
2. robustness: tokens per step against temperature at one DP tree, per verification method;
3. wall clock: tokens/s against Hugging Face `generate`, greedy and sampled;
4. hardware awareness: the optimizer's pick against a sweep of DP trees, greedy, on more prompts
   than 3 (with 3's profile and plans), beside the speedup the cost model predicts;
5. the DP's own run time; 6. the decode loop's time outside the model forwards (from 3's runs);
7. the target offloaded (most of its weights on disk, streamed in at every forward): its profile,
   the optimizer's tree for it and that tree against autoregressive decoding of the same target.
They call the stages (measure-acceptance, profile-hw, optimize, decode) as the Makefile chains them."""

import time
from dataclasses import replace
from functools import partial

import numpy as np

from sequoia_cli.artifacts import timings
from sequoia_cli.cost import predicted_speedup
from sequoia_cli.engine import Sampling, chain_parents, tree_layout
from sequoia_cli.errors import one_line
from sequoia_cli.levels import replayed, rows_met
from sequoia_cli.prompts import load_prompts
from sequoia_cli.tree import best_tree, dp_tree, expected_tokens, tree_table
from stages.bench.harness import (Config, Run, Store, decode_one, failure, first_difference, geometric_interval,
                                  hf_one, kary_parents, kxd_parents, kxd_shape, per_prompt, pooled_interval,
                                  run_block, spread, spread_prompts)
from stages.measure_acceptance import measure_acceptance
from stages.optimize import optimize
from stages.profile_hw import profile_hw

# HumanEval's prompts are code for the model to continue; MT-Bench's are questions to a chat model.
WORKLOADS = {"humaneval": {"chat_template": False}, "mt-bench": {"chat_template": True}}
SETTINGS = {"greedy": Sampling(), "sampled": Sampling(0.6, 0.9)}  # experiment 3's two settings
ROBUST_TREE_SETTING = "sampled"  # experiment 2's tree: the DP tree of this setting's vector
FAMILIES = {"dp": "Sequoia DP tree", "kxd": "SpecInfer k x d", "topk": "top-2 tree", "chain": "chain"}
FAMILY_METHODS = {"dp": "sequoia", "kxd": "specinfer", "chain": "sequoia", "topk": "topk"}
ROBUST_METHODS = {"sequoia": "Sequoia (without replacement)", "specinfer": "SpecInfer (with replacement)",
                  "topk": "top-k (draft's top-k)"}
WALL_METHODS = ("HF generate", "HF assisted", "autoregressive", "chain 4", "SpecInfer 4x4", "Sequoia")
WARMUP_TOKENS = 8


def sampling_at(temperature: float, top_p: float = 1.0, method: str = "sequoia") -> Sampling:
    return Sampling(temperature, top_p if temperature else 1.0, method)


def setting_name(sampling: Sampling) -> str:
    return "greedy" if sampling.greedy else f"t={sampling.temperature:g} p={sampling.top_p:g}"


def vector_settings(config: Config) -> dict[str, Sampling]:
    """Every setting a vector is measured at for the chosen experiments: 3's two settings, 2's tree
    setting and 1's temperatures."""
    chosen = config.experiments
    wanted = (list(SETTINGS.values()) if 3 in chosen else []) + ([SETTINGS[ROBUST_TREE_SETTING]] if 2 in chosen else [])
    wanted += [sampling_at(t) for t in config.scale_temperatures] if 1 in chosen else []
    wanted += [SETTINGS["greedy"]] if 7 in chosen else []
    return {setting_name(s): s for s in wanted}


def sweep_name(size: int, depth: int) -> str:
    return f"DP size {size}, depth <= {depth}"


def wall_methods(setting: str, config: Config) -> list[str]:
    if setting == "greedy":
        return list(WALL_METHODS)
    return [m for m in WALL_METHODS if not config.sampled_methods or m in config.sampled_methods]


def scale_families(size: int, config: Config) -> list[str]:
    return [f for f in FAMILIES if f != "chain" or size <= config.chain_max_size]


def work_units(config: Config) -> int:
    """The weight of every tick a workload makes (a cell's weight: the tokens it asks for), for the
    progress bar's estimate of the time left."""
    chosen = config.experiments
    vectors = len(vector_settings(config)) * config.acceptance_prompts * config.continuation
    scale = config.scale_prompts * sum(len(scale_families(s, config)) * t for s, t in zip(config.sizes, config.scale_tokens)
                                       ) * len(config.scale_temperatures) if 1 in chosen else 0
    robust = config.scale_prompts * len(ROBUST_METHODS) * len(config.robust_temperatures) * config.robust_tokens
    wall = config.prompts * config.new_tokens * sum(len(wall_methods(s, config)) for s in SETTINGS) + 2 * WARMUP_TOKENS
    swept = config.sweep_prompts * config.sweep_tokens * (2 + len(config.sweep))
    return vectors + scale + (robust if 2 in chosen else 0) + (wall if 3 in chosen else 0) + (swept if 4 in chosen else 0)


def offload_units(config: Config) -> int:
    """Experiment 7's weight (one workload): its profile and its two methods' tokens."""
    return (config.offload_tokens + 2 * config.offload_prompts * config.offload_tokens) if 7 in config.experiments else 0


def failing(reason: str):
    """A cell for a tree that could not be built: every prompt says why."""
    return lambda index: {"error": reason}


def tree_or_reason(build) -> list[int] | str:
    """`build()`'s tree, or the one line saying why it failed."""
    try:
        return build()
    except Exception as error:  # a tree that cannot be built fails its cells, not the run
        return f"failed: {one_line(error)}"


def prompt_indices(config: Config) -> dict[str, dict]:
    """{workload: {"decode": [...], "acceptance": [...]}}: which prompts of each built-in set the
    run decodes and which its vectors are measured on (`spread_prompts`). Every block decodes the
    first of "decode"; its first `config.prompts` (experiment 3's) are spread over the set too."""
    chosen = {}
    for workload in WORKLOADS:
        held, acceptance = spread_prompts(len(load_prompts(workload)), max(config.prompts, config.sweep_prompts),
                                          config.acceptance_prompts)
        first = spread(held, config.prompts)
        chosen[workload] = {"decode": first + [i for i in held if i not in first], "acceptance": acceptance}
    return chosen


def acceptance_vectors(store: Store, run: Run, config: Config, tick) -> dict[str, dict]:
    """{setting: sequoia-acceptance/1 artifact, or {"error": ...}} on the run's acceptance prompts."""
    records = [{"prompt": prompt} for prompt in run.acceptance_prompts]
    vectors = {}
    for name, sampling in vector_settings(config).items():
        vectors[name] = store.cell(f"acceptance | {run.workload} | {name}", lambda: measure_acceptance(
            run.target, run.draft, run.tokenizer, records, sampling, config.width, config.continuation, run.seed,
            chat_template=WORKLOADS[run.workload]["chat_template"]))
        tick(f"{run.workload}: acceptance at {name}", config.acceptance_prompts * config.continuation)
    return vectors


def vector_of(vectors: dict, sampling: Sampling) -> list[float]:
    name = setting_name(sampling)
    vector = vectors.get(name)
    if vector is None or "error" in vector:
        raise RuntimeError(f"no acceptance vector at {name} ({vector['error'] if vector else 'not measured'})")
    return vector["acceptance"]


def measure_profile(store: Store, runs: list[Run], config: Config, dtype: str) -> dict:
    """The profile of both models at the decode's typical KV cache (mean prompt + half the tokens)."""
    def work():
        prompts = [ids for run in runs for ids in run.prompt_ids]
        context = int(sum(map(len, prompts)) / len(prompts) + config.new_tokens / 2)
        target, draft = runs[0].target, runs[0].draft
        return profile_hw({"target": ("target", target), "draft": ("draft", draft)}, dtype, config.profile_max,
                          context, config.profile_repeats, 1, runs[0].seed)
    return store.cell("profile", work)


def plan_trees(store: Store, run: Run, vectors: dict, profile: dict) -> dict[str, dict]:
    """{setting: optimize's tree artifact (or {"error": ...})} from the setting's vector and the profile."""
    def plan(sampling):
        if "error" in profile:
            raise RuntimeError(f"no profile ({profile['error']})")
        vector_of(vectors, sampling)
        tree = optimize(vectors[setting_name(sampling)], profile)
        return {"parents": tree["parents"], "plan": {k: v for k, v in tree["plan"].items() if k != "candidates"}}
    return {setting: store.cell(f"plan | {run.workload} | {setting}", partial(plan, sampling))
            for setting, sampling in SETTINGS.items()}


def speed(result: dict) -> float:
    return result["tokens"] / result["seconds"]


def step_speed(result: dict) -> float:
    """Tokens/s of the steps alone (what the cost model predicts), the prompt's prefill left out."""
    return result["tokens"] / (result["seconds"] - result["prefill_seconds"])


def tokens_per_step(result: dict) -> float:
    return result["tokens"] / result["steps"]


def step_interval(results: list[dict], resamples: int, seed: int, base: list[dict] | None = None) -> dict:
    """Tokens per step over every step of every prompt, each step counted by its expected tokens
    (averaged over verification's draws, see `engine.expected_tokens`), with its interval; over
    the base's on the same prompts when given."""
    def parts(cells):
        return [sum(r["expected"]) for r in cells], [len(r["expected"]) for r in cells]
    if failure(results) or (base and failure(base)):
        return {"error": failure(results) or failure(base)}
    if any(not r["expected"] for r in results + (base or [])):
        return {"error": "failed: a prompt took no step"}
    return pooled_interval(*parts(results), resamples, seed, base=parts(base) if base else None)


def paired_interval(results: list[dict], base: list[dict], figure, resamples: int, seed: int) -> dict:
    """The geometric mean over prompts of `figure` of each result over `figure` of the base's
    result on the same prompt, with its interval."""
    mine, theirs = per_prompt(results, figure), per_prompt(base, figure)
    if mine is None or theirs is None:
        return {"error": failure(results) or failure(base) or "failed: a prompt generated no tokens"}
    return geometric_interval([a / b for a, b in zip(mine, theirs)], resamples, seed)


def interval_row(results: list[dict], resamples: int, seed: int, base: list[dict] | None = None) -> dict:
    """Summed figures and intervals of one method's per-prompt results (and, against `base`, the
    speedup: geometric mean of per-prompt tokens/s ratios)."""
    error = failure(results)
    if error:
        return {"error": error}
    row = {"tokens": sum(r["tokens"] for r in results), "steps": sum(r["steps"] for r in results),
           "seconds": sum(r["seconds"] for r in results),
           "per_prompt": [{k: r[k] for k in ("tokens", "steps", "seconds")} for r in results]}
    steps = per_prompt(results, tokens_per_step)
    if steps is None:
        return {**row, "error": "failed: a prompt generated no tokens"}
    row["tokens_per_step"] = geometric_interval(steps, resamples, seed)
    row["tokens_per_second"] = geometric_interval(per_prompt(results, speed), resamples, seed)
    if base is not None:
        row["speedup"] = paired_interval(results, base, speed, resamples, seed)
    if "target_seconds" in results[0]:
        row.update(target_seconds=sum(r["target_seconds"] for r in results),
                   draft_seconds=sum(r["draft_seconds"] for r in results),
                   draft_forwards=sum(r["draft_forwards"] for r in results))
    return row


def step_row(results: list[dict], resamples: int, seed: int) -> dict:
    """Experiments 1 and 2's figures of one method: tokens per step (expected, pooled over steps,
    `step_interval`) and, beside it, the tokens realized over the steps taken."""
    error = failure(results)
    if error:
        return {"error": error}
    tokens, steps = sum(r["tokens"] for r in results), sum(r["steps"] for r in results)
    return {"tokens": tokens, "steps": steps, "realized_tokens_per_step": tokens / steps if steps else None,
            "per_prompt": [{k: r[k] for k in ("tokens", "steps")} for r in results],
            "tokens_per_step": step_interval(results, resamples, seed)}


def scalability(store: Store, run: Run, config: Config, vectors: dict, tick) -> list[dict]:
    """Experiment 1: tokens per step against tree size, per family, interleaved per prompt."""
    rows = []
    for temperature in config.scale_temperatures:
        sampling = sampling_at(temperature)
        for size, new_tokens in zip(config.sizes, config.scale_tokens):
            extra = {"dp": {}, "kxd": {"shape": "{}x{}".format(*kxd_shape(size))}}
            builders = {"dp": lambda: dp_tree(vector_of(vectors, sampling), size)[0],
                        "kxd": lambda: kxd_parents(*kxd_shape(size)), "topk": lambda: kary_parents(size, 2),
                        "chain": lambda: chain_parents(size - 1)}
            trees = {family: tree_or_reason(builders[family]) for family in scale_families(size, config)}
            if isinstance(trees["dp"], list):
                extra["dp"]["predicted"] = expected_tokens(trees["dp"], vector_of(vectors, sampling))
            methods = {family: failing(tree) if isinstance(tree, str) else partial(
                decode_one, run, parents=tree, sampling=sampling_at(temperature, 1.0, FAMILY_METHODS[family]),
                new_tokens=new_tokens, expected=True) for family, tree in trees.items()}
            block = f"scalability | {run.workload} | {setting_name(sampling)} | size {size}"
            results = run_block(store, block, methods, config.scale_prompts, tick, new_tokens)
            for family, tree in trees.items():
                row = {"workload": run.workload, "temperature": temperature, "size": size, "family": family,
                       **extra.get(family, {})}
                if not isinstance(tree, str):
                    row.update(tree_size=len(tree), depth=tree_layout(tree).depth)
                rows.append({**row, **step_row(results[family], config.resamples, run.seed)})
            rows[-len(trees)]["dp_over"] = {  # paired per prompt: the DP tree's tokens/step over each other's
                family: step_interval(results["dp"], config.resamples, run.seed, base=results[family])
                for family in trees if family != "dp"}
    return rows


def robustness(store: Store, run: Run, config: Config, vectors: dict, tick) -> list[dict]:
    """Experiment 2: tokens per step against temperature at one DP tree, per verification method."""
    tree = tree_or_reason(lambda: dp_tree(vector_of(vectors, SETTINGS[ROBUST_TREE_SETTING]), config.robust_size)[0])
    rows = []
    for temperature in config.robust_temperatures:
        methods = {method: failing(tree) if isinstance(tree, str) else partial(
            decode_one, run, parents=tree, sampling=sampling_at(temperature, 1.0, method),
            new_tokens=config.robust_tokens, expected=True) for method in ROBUST_METHODS}
        results = run_block(store, f"robustness | {run.workload} | t={temperature:g}", methods, config.scale_prompts,
                            tick, config.robust_tokens)
        rows += [{"workload": run.workload, "temperature": temperature, "method": method,
                  **step_row(results[method], config.resamples, run.seed)} for method in ROBUST_METHODS]
    return rows


def wall_trees(plan: dict) -> dict:
    """Experiment 3's method name -> its tree (None for Hugging Face's, a reason where the tree
    could not be had)."""
    return {"HF generate": None, "HF assisted": None, "autoregressive": [-1], "chain 4": chain_parents(4),
            "SpecInfer 4x4": kxd_parents(4, 4), "Sequoia": plan.get("parents") or plan["error"]}


def sweep_trees(plan: dict, config: Config, vectors: dict) -> dict:
    """Experiment 4's method name -> its tree: ours autoregressive, the optimizer's pick and the
    sweep's DP trees from the greedy vector."""
    trees = {"autoregressive": [-1], "Sequoia": plan.get("parents") or plan["error"]}
    for size, depth in config.sweep:
        trees[sweep_name(size, depth)] = tree_or_reason(
            lambda: dp_tree(vector_of(vectors, SETTINGS["greedy"]), size, depth)[0])
    return trees


def timed_block(store: Store, run: Run, config: Config, block: str, trees: dict, setting: str, prompts: int,
                new_tokens: int, tick) -> list[dict]:
    """Each method (a tree, or None for Hugging Face's `generate`) on the first `prompts` prompts,
    the methods of a prompt back to back in rotated order: a row per method, with speedups over
    HF generate (where it ran) and over our autoregressive loop. `setting`: a key of SETTINGS."""
    sampling = SETTINGS[setting]
    methods = {}
    for name, tree in trees.items():
        if tree is None:
            methods[name] = partial(hf_one, run, sampling=sampling, new_tokens=new_tokens,
                                    assisted=name == "HF assisted")
        elif isinstance(tree, str):
            methods[name] = failing(tree)
        else:
            method = "specinfer" if name.startswith("SpecInfer") else "sequoia"
            methods[name] = partial(decode_one, run, parents=tree, new_tokens=new_tokens,
                                    sampling=Sampling(sampling.temperature, sampling.top_p, method))
    results = run_block(store, block, methods, prompts, tick, new_tokens)
    reference = results.get("HF generate")
    rows = []
    for name, tree in trees.items():
        row = {"workload": run.workload, "setting": setting, "method": name}
        if isinstance(tree, list):
            row.update(tree_size=len(tree), depth=tree_layout(tree).depth, parents=tree)
        row.update(interval_row(results[name], config.resamples, run.seed, base=reference))
        if reference and sampling.greedy and "error" not in row and not failure(reference):
            row["same_tokens"] = ("reference" if name == "HF generate" else first_difference(
                [r["output"] for r in results[name]], [r["output"] for r in reference]))
        row["vs_autoregressive"] = paired_interval(results[name], results["autoregressive"], speed,
                                                   config.resamples, run.seed)
        if all(r and "prefill_seconds" in r for r in results[name] + results["autoregressive"]):
            row["steps_vs_autoregressive"] = paired_interval(results[name], results["autoregressive"],
                                                             step_speed, config.resamples, run.seed)
        if not failure(results[name]) and all(r and "step_tokens" in r for r in results[name]):
            # Every step's tokens over every prompt's steps, before the cut at EOS or the budget.
            row["step_tokens_per_step"] = pooled_interval([r["step_tokens"] for r in results[name]],
                                                          [r["steps"] for r in results[name]], config.resamples,
                                                          run.seed)
        rows.append(row)
    return rows


def wall_clock(store: Store, run: Run, config: Config, plans: dict, tick) -> dict[str, list[dict]]:
    """Experiment 3: each method on the same prompts, after one untimed warm-up. {setting: rows}."""
    store.cell(f"warm-up | {run.workload}", lambda: {
        "ours": decode_one(run, 0, kxd_parents(2, 2), SETTINGS["greedy"], WARMUP_TOKENS)["tokens"],
        "hf": hf_one(run, 0, SETTINGS["greedy"], WARMUP_TOKENS, assisted=True)["tokens"]})
    tick(f"{run.workload}: warm-up", 2 * WARMUP_TOKENS)
    tables = {}
    for setting in SETTINGS:
        trees = {name: tree for name, tree in wall_trees(plans[setting]).items() if name in wall_methods(setting, config)}
        tables[setting] = timed_block(store, run, config, f"wall clock | {run.workload} | {setting}", trees, setting,
                                      config.prompts, config.new_tokens, tick)
    return tables


def sweep(store: Store, run: Run, config: Config, plan: dict, vectors: dict, tick) -> list[dict]:
    """Experiment 4's greedy block: the optimizer's pick and the sweep's trees beside our
    autoregressive loop, on `config.sweep_prompts` prompts (more than experiment 3's: tokens per
    step differ between prompts by far more than the 5% a prediction is checked to)."""
    return timed_block(store, run, config, f"sweep | {run.workload} | greedy", sweep_trees(plan, config, vectors),
                       "greedy", config.sweep_prompts, config.sweep_tokens, tick)


def hardware(rows: list[dict], profile: dict, vectors: dict, resamples: int, seed: int) -> list[dict]:
    """Experiment 4: the optimizer's pick and the sweep's DP trees from its block (`sweep`):
    measured speedup over our autoregressive loop beside the cost model's prediction (the
    steps alone, as the model predicts them, and with the prompts' prefill), and measured tokens
    per step beside both predictions (positional, and by level: the rows each tree meets on the
    vector's ranks, `levels.rows_met`; the cost model uses the latter). Between them, the tokens
    per step greedy decode realizes on the vector's own prompts (`levels.replayed`, with its
    interval over those prompts): the prediction's distance to it is the model's error, its
    distance to the measured one the difference between the two sets of prompts."""
    out = []
    for row in rows:
        if row["method"] != "Sequoia" and not row["method"].startswith("DP size"):
            continue
        entry = {"tree": "optimizer's pick" if row["method"] == "Sequoia" else row["method"]}
        if "error" in row:
            out.append({**entry, "error": row["error"]})
            continue
        positional = vector_of(vectors, SETTINGS["greedy"])
        vector = vectors[setting_name(SETTINGS["greedy"])]
        by_level = rows_met(row["parents"], vector) if vector.get("ranks") else vector.get("acceptance_by_level")
        entry.update(tree_size=row["tree_size"], depth=row["depth"],
                     tokens_per_step=row.get("step_tokens_per_step", row["tokens_per_step"]),
                     predicted_tokens=expected_tokens(row["parents"], positional),
                     speedup=row.get("steps_vs_autoregressive", row["vs_autoregressive"]),
                     speedup_with_prefill=row["vs_autoregressive"])
        if by_level:
            entry["predicted_tokens_by_level"] = expected_tokens(row["parents"], by_level)
        walked = [replayed(row["parents"], ranks) for ranks in vector.get("ranks", {}).values()]
        if sum(steps for _, steps in walked):
            entry["replayed_tokens"] = pooled_interval(*zip(*walked), resamples, seed)
        if "error" not in profile:
            entry["predicted_speedup"] = predicted_speedup(row["parents"], by_level or positional,
                                                           timings(profile["target"]), timings(profile["draft"]))
        out.append(entry)
    measured = sorted((r for r in out if "value" in r.get("speedup", {})), key=lambda r: -r["speedup"]["value"])
    for rank, entry in enumerate(measured, start=1):
        entry["rank"] = rank
    return out


OFFLOAD_METHODS = ("autoregressive", "Sequoia")


def offloaded(store: Store, run: Run, config: Config, vectors: dict, target, dtype: str, tick) -> dict:
    """Experiment 7, greedy: `target` (the same model placed with most of its weights on disk)
    profiled with the draft, optimize's tree for that profile and the greedy vector, and that tree
    against autoregressive decoding of the same placed target, interleaved per prompt."""
    placed = replace(run, target=target)

    def profile_work():
        prompts = run.prompt_ids[:config.offload_prompts]
        context = int(sum(map(len, prompts)) / len(prompts) + config.offload_tokens / 2)
        return profile_hw({"target": ("target, offloaded", target), "draft": ("draft", run.draft)}, dtype,
                          config.offload_profile_max, context, config.profile_repeats, 1, run.seed)

    profile = store.cell(f"offloaded | {run.workload} | profile", profile_work)
    tick(f"{run.workload}: offloaded profile", config.offload_tokens)

    def plan_work():
        if "error" in profile:
            raise RuntimeError(f"no profile ({profile['error']})")
        vector_of(vectors, SETTINGS["greedy"])
        tree = optimize(vectors[setting_name(SETTINGS["greedy"])], profile)
        return {"parents": tree["parents"], "plan": {k: v for k, v in tree["plan"].items() if k != "candidates"}}

    plan = store.cell(f"offloaded | {run.workload} | plan", plan_work)
    trees = {"autoregressive": [-1], "Sequoia": plan.get("parents") or plan["error"]}
    methods = {name: failing(tree) if isinstance(tree, str) else partial(
        decode_one, placed, parents=tree, sampling=SETTINGS["greedy"], new_tokens=config.offload_tokens)
        for name, tree in trees.items()}
    results = run_block(store, f"offloaded | {run.workload} | greedy", methods, config.offload_prompts, tick,
                        config.offload_tokens)
    rows = []
    for name, tree in trees.items():
        row = {"workload": run.workload, "method": name}
        if isinstance(tree, list):
            row.update(tree_size=len(tree), depth=tree_layout(tree).depth)
        row.update(interval_row(results[name], config.resamples, run.seed, base=results["autoregressive"]))
        if "error" not in row and not failure(results["autoregressive"]):
            row["same_tokens"] = ("reference" if name == "autoregressive" else first_difference(
                [r["output"] for r in results[name]], [r["output"] for r in results["autoregressive"]]))
        rows.append(row)
    return {"workload": run.workload, "memory": config.offload_memory, "profile": profile, "plan": plan, "rows": rows}


def loop_overhead(rows: list[dict]) -> list[dict]:
    """Experiment 6: the share of each of our greedy runs' wall time spent outside both models'
    forwards (drafting bookkeeping, masks, verification, cache trimming), timed through hooks."""
    out = []
    for row in rows:
        if "target_seconds" not in row or "error" in row:
            continue
        outside = row["seconds"] - row["target_seconds"] - row["draft_seconds"]
        out.append({"workload": row["workload"], "method": row["method"], "tree_size": row["tree_size"],
                    "wall_seconds": row["seconds"], "steps": row["steps"], "target_seconds": row["target_seconds"],
                    "draft_seconds": row["draft_seconds"], "draft_forwards": row["draft_forwards"],
                    "outside_seconds": outside, "outside_share": outside / row["seconds"],
                    "outside_ms_per_step": 1000 * outside / row["steps"]})
    return out


def dp_timing(config: Config, seed: int) -> list[dict]:
    """Experiment 5: wall time of the DP (tree_table) and of rebuilding the tree (best_tree)."""
    generator = np.random.default_rng(seed)
    vector = sorted(generator.dirichlet(np.ones(config.dp_width + 1))[:config.dp_width], reverse=True)
    rows = []
    for size in config.dp_sizes:
        started = time.perf_counter()
        table = tree_table(vector, size, config.dp_depth)
        built = time.perf_counter()
        best_tree(table, size, config.dp_depth)
        rows.append({"size": size, "depth": config.dp_depth, "width": config.dp_width, "table_seconds": built - started,
                     "tree_seconds": time.perf_counter() - built, "expected": float(table.expected[config.dp_depth, size])})
    return rows
