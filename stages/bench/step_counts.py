"""Experiments 1 and 2, tokens per step with no clock: how a tree's tokens per step grow with its size,
per tree family (1, scalability), and how they hold up over temperatures, per verification method
at one DP tree (2, robustness). A step counts the tokens it adds on average over verification's
draws (`walk.expected_tokens`), which has the realized tokens' mean without their coin flips."""

from functools import partial

from sequoia_cli.stages.bench.harness import Config, Run, decode_one, kary_parents, kxd_parents, kxd_shape, run_block
from sequoia_cli.stages.bench.shared import (
    SETTINGS,
    WORKLOADS,
    Bench,
    failing,
    sampling_at,
    setting_name,
    tree_or_reason,
    vector_of,
)
from sequoia_cli.stages.bench.stats import failure, pooled_interval

from sequoia_cli.layout import tree_layout
from sequoia_cli.sampling import Sampling
from sequoia_cli.tree import chain_parents, dp_tree, expected_tokens

FAMILIES = {"dp": "Sequoia DP tree", "kxd": "SpecInfer k x d", "topk": "top-2 tree", "chain": "chain"}
FAMILY_METHODS = {"dp": "sequoia", "kxd": "specinfer", "chain": "sequoia", "topk": "topk"}
ROBUST_METHODS = {"sequoia": "Sequoia (without replacement)", "specinfer": "SpecInfer (with replacement)",
                  "topk": "top-k (draft's top-k)"}
ROBUST_TREE_SETTING = "sampled"  # experiment 2's tree: the DP tree of this setting's vector


def scale_families(size: int, config: Config) -> list[str]:
    """The families measured at `size`: a chain costs one draft forward per token, so long ones are left out."""
    return [f for f in FAMILIES if f != "chain" or size <= config.chain_max_size]


def scalability_settings(config: Config) -> list[Sampling]:
    return [sampling_at(t) for t in config.scale_temperatures]


def robustness_settings(config: Config) -> list[Sampling]:
    return [SETTINGS[ROBUST_TREE_SETTING]]


def scalability_work(config: Config) -> int:
    """Experiment 1's weight on both workloads: the tokens its cells ask for."""
    per_prompt = sum(len(scale_families(size, config)) * tokens for size, tokens in zip(config.sizes,
                                                                                       config.scale_tokens))
    return len(WORKLOADS) * config.scale_prompts * per_prompt * len(config.scale_temperatures)


def robustness_work(config: Config) -> int:
    """Experiment 2's weight on both workloads: the tokens its cells ask for."""
    return (len(WORKLOADS) * config.scale_prompts * len(ROBUST_METHODS) * len(config.robust_temperatures)
            * config.robust_tokens)


def step_interval(results: list[dict], resamples: int, seed: int, base: list[dict] | None = None) -> dict:
    """Tokens per step over every step of every prompt, each step counted by its expected tokens
    (averaged over verification's draws, see `walk.expected_tokens`), with its interval; over
    the base's on the same prompts when given."""
    def parts(cells):
        return [sum(r["expected"]) for r in cells], [len(r["expected"]) for r in cells]
    if failure(results) or (base and failure(base)):
        return {"error": failure(results) or failure(base)}
    if any(not r["expected"] for r in results + (base or [])):
        return {"error": "failed: a prompt took no step"}
    return pooled_interval(*parts(results), resamples, seed, base=parts(base) if base else None)


def step_row(results: list[dict], resamples: int, seed: int) -> dict:
    """One method's figures: tokens per step (expected, pooled over steps, `step_interval`) and,
    beside it, the tokens realized over the steps taken."""
    error = failure(results)
    if error:
        return {"error": error}
    tokens, steps = sum(r["tokens"] for r in results), sum(r["steps"] for r in results)
    return {"tokens": tokens, "steps": steps, "realized_tokens_per_step": tokens / steps if steps else None,
            "per_prompt": [{k: r[k] for k in ("tokens", "steps")} for r in results],
            "tokens_per_step": step_interval(results, resamples, seed)}


def family_trees(size: int, config: Config, vector) -> dict:
    """{family: its tree of nominal `size`, or why it could not be built}; `vector()`: the DP's."""
    builders = {"dp": lambda: dp_tree(vector(), size)[0], "kxd": lambda: kxd_parents(*kxd_shape(size)),
                "topk": lambda: kary_parents(size, 2), "chain": lambda: chain_parents(size - 1)}
    return {family: tree_or_reason(builders[family]) for family in scale_families(size, config)}


def scalability(bench: Bench, run: Run) -> list[dict]:
    """Experiment 1 on one workload: tokens per step against tree size, per family, interleaved per prompt."""
    config, vectors = bench.config, bench.vectors[run.workload]
    rows = []
    for temperature in config.scale_temperatures:
        sampling = sampling_at(temperature)
        for size, new_tokens in zip(config.sizes, config.scale_tokens):
            extra = {"dp": {}, "kxd": {"shape": "{}x{}".format(*kxd_shape(size))}}
            trees = family_trees(size, config, partial(vector_of, vectors, sampling))
            if isinstance(trees["dp"], list):
                extra["dp"]["predicted"] = expected_tokens(trees["dp"], vector_of(vectors, sampling))
            methods = {family: failing(tree) if isinstance(tree, str) else partial(
                decode_one, run, parents=tree, sampling=sampling_at(temperature, 1.0, FAMILY_METHODS[family]),
                new_tokens=new_tokens, expected=True) for family, tree in trees.items()}
            block = f"scalability | {run.workload} | {setting_name(sampling)} | size {size}"
            results = run_block(bench.store, block, methods, config.scale_prompts, bench.tick, new_tokens)
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


def robustness(bench: Bench, run: Run) -> list[dict]:
    """Experiment 2 on one workload: tokens per step against temperature at one DP tree, per verification method."""
    config, vectors = bench.config, bench.vectors[run.workload]
    tree = tree_or_reason(lambda: dp_tree(vector_of(vectors, SETTINGS[ROBUST_TREE_SETTING]), config.robust_size)[0])
    rows = []
    for temperature in config.robust_temperatures:
        methods = {method: failing(tree) if isinstance(tree, str) else partial(
            decode_one, run, parents=tree, sampling=sampling_at(temperature, 1.0, method),
            new_tokens=config.robust_tokens, expected=True) for method in ROBUST_METHODS}
        results = run_block(bench.store, f"robustness | {run.workload} | t={temperature:g}", methods,
                            config.scale_prompts, bench.tick, config.robust_tokens)
        rows += [{"workload": run.workload, "temperature": temperature, "method": method,
                  **step_row(results[method], config.resamples, run.seed)} for method in ROBUST_METHODS]
    return rows


def run_scalability(bench: Bench) -> None:
    for run in bench.runs:
        bench.results["scalability"] += scalability(bench, run)


def run_robustness(bench: Bench) -> None:
    for run in bench.runs:
        bench.results["robustness"] += robustness(bench, run)
