"""What the bench's experiments share: the two workloads and experiment 3's two settings, the state
of one run (Bench), the acceptance vectors, the profile and the optimizer's trees every experiment
plans with, and the figures of a block's rows (tokens/s, tokens per step, speedups with intervals).
The experiments call the stages (measure-acceptance, profile-hw, optimize, decode) as the Makefile
chains them."""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from sequoia_cli.stages.bench.harness import Config, Run, Store, spread, spread_prompts
from sequoia_cli.stages.bench.stats import failure, geometric_interval, per_prompt
from sequoia_cli.stages.measure_acceptance import Request, measure_acceptance
from sequoia_cli.stages.optimize import optimize
from sequoia_cli.stages.profile_hw import Timing, profile_hw

from sequoia_cli.devices import context_length
from sequoia_cli.errors import one_line
from sequoia_cli.loading import Loaded
from sequoia_cli.models import encode_prompts, eos_ids
from sequoia_cli.prompts import load_prompts
from sequoia_cli.sampling import Sampling

# HumanEval's prompts are code for the model to continue; MT-Bench's are questions to a chat model.
WORKLOADS = {"humaneval": {"chat_template": False}, "mt-bench": {"chat_template": True}}
SETTINGS = {"greedy": Sampling(), "sampled": Sampling(0.6, 0.9)}  # experiment 3's two settings
ROWS = ("vectors", "scalability", "robustness", "wall_clock", "sweep", "hardware", "overhead", "dp", "engines",
        "dynamic", "dynamic_vectors", "memory")


def sampling_at(temperature: float, top_p: float = 1.0, method: str = "sequoia") -> Sampling:
    return Sampling(temperature, top_p if temperature else 1.0, method)


def setting_name(sampling: Sampling) -> str:
    return "greedy" if sampling.greedy else f"t={sampling.temperature:g} p={sampling.top_p:g}"


def empty_results() -> dict:
    """bench.json's rows before any experiment ran: every key present, so the report reads them alike."""
    return {**{key: [] for key in ROWS}, "offloaded": None, "plans": {}, "spec_bench": None}


@dataclass
class Bench:
    """One run as its experiments see it: the store of finished cells, the config, the loaded models
    (with the choice they were loaded from), a Run per workload, the progress callback `tick(label,
    weight)`, the seed, the dtype the models were loaded in, and the results the experiments fill in
    (bench.json's rows). Beside them, what one experiment measures for another: the acceptance
    vectors of each workload ({workload: {setting: vector}}), experiment 3's profile and its rows
    ({workload: {setting: rows}}, which 6 reads)."""

    store: Store
    config: Config
    loaded: Loaded
    runs: list[Run]
    tick: Callable[[str, int], None]
    seed: int
    dtype: str
    results: dict = field(default_factory=empty_results)
    vectors: dict = field(default_factory=dict)
    profile: dict = field(default_factory=lambda: {"error": "not measured"})
    wall_rows: dict = field(default_factory=dict)

    def run_of(self, workload: str) -> Run:
        return next(run for run in self.runs if run.workload == workload)


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


def workload_runs(models: Loaded, config: Config, seed: int) -> list[Run]:
    """A Run per workload: its decoded prompts encoded (with the chat template where the workload
    asks for it) and the texts of its acceptance prompts."""
    context = min(context_length(models.target), context_length(models.draft))
    stop = eos_ids(models.target, models.tokenizer)
    pad = models.tokenizer.pad_token_id if models.tokenizer.pad_token_id is not None else min(stop, default=0)
    indices = prompt_indices(config)
    runs = []
    for workload, setup in WORKLOADS.items():
        texts = load_prompts(workload)
        decoded = [texts[i] for i in indices[workload]["decode"]]
        runs.append(Run(workload, models.target, models.draft, models.tokenizer,
                        encode_prompts(models.tokenizer, decoded, context, setup["chat_template"]),
                        [texts[i] for i in indices[workload]["acceptance"]], stop, pad, seed,
                        models.resolved.engine))
    return runs


def measure_vectors(bench: Bench, settings: dict[str, Sampling]) -> None:
    """Each workload's acceptance vector at each setting (a sequoia-acceptance/1 artifact, or
    {"error": ...}), on its acceptance prompts, into `bench.vectors` and the results' rows."""
    config = bench.config
    for run in bench.runs:
        records = [{"prompt": prompt} for prompt in run.acceptance_prompts]
        vectors = bench.vectors.setdefault(run.workload, {})
        for name, sampling in settings.items():
            request = Request(records, sampling, config.width, config.continuation, run.seed,
                              chat_template=WORKLOADS[run.workload]["chat_template"])
            vectors[name] = bench.store.cell(f"acceptance | {run.workload} | {name}", partial(
                measure_acceptance, run.target, run.draft, run.tokenizer, request, engine=run.engine))
            bench.tick(f"{run.workload}: acceptance at {name}", config.acceptance_prompts * config.continuation)
        bench.results["vectors"] += [{"workload": run.workload, "setting": name, **vector}
                                     for name, vector in vectors.items()]


def vector_of(vectors: dict, sampling: Sampling) -> list[float]:
    """The positional acceptance vector at `sampling`; raises (failing the cell) where it is missing."""
    name = setting_name(sampling)
    vector = vectors.get(name)
    if vector is None or "error" in vector:
        raise RuntimeError(f"no acceptance vector at {name} ({vector['error'] if vector else 'not measured'})")
    return vector["acceptance"]


def profile_work(bench: Bench, runs: list[Run], target, label: str, max_tokens: int,
                 new_tokens: int, engine: str | None = None) -> Callable[[], dict]:
    """A cell measuring the profile of `target` (named `label`) and the draft up to `max_tokens` tokens,
    at the decode's typical KV cache: the mean prompt of `runs` plus half the `new_tokens` each decodes;
    with the runs' engine unless `engine` is given."""
    def work():
        prompts = [ids for run in runs for ids in run.prompt_ids]
        context = int(sum(map(len, prompts)) / len(prompts) + new_tokens / 2)
        timing = Timing(max_tokens, context, bench.config.profile_repeats, 1, runs[0].seed)
        return profile_hw({"target": (label, target), "draft": ("draft", runs[0].draft)}, bench.dtype, timing,
                          engine=engine or runs[0].engine)
    return work


def plan_of(vectors: dict, sampling: Sampling, profile: dict) -> dict:
    """optimize's tree for the setting's vector and the profile, its candidates left out."""
    if "error" in profile:
        raise RuntimeError(f"no profile ({profile['error']})")
    vector_of(vectors, sampling)
    tree = optimize(vectors[setting_name(sampling)], profile)
    return {"parents": tree["parents"], "plan": {k: v for k, v in tree["plan"].items() if k != "candidates"}}


def failing(reason: str):
    """A cell for a tree that could not be built: every prompt says why."""
    return lambda index: {"error": reason}


def tree_or_reason(build) -> list[int] | str:
    """`build()`'s tree, or the one line saying why it failed."""
    try:
        return build()
    except Exception as error:  # a tree that cannot be built fails its cells, not the run
        return f"failed: {one_line(error)}"


def speed(result: dict) -> float:
    return result["tokens"] / result["seconds"]


def step_speed(result: dict) -> float:
    """Tokens/s of the steps alone (what the cost model predicts), the prompt's prefill left out."""
    return result["tokens"] / (result["seconds"] - result["prefill_seconds"])


def tokens_per_step(result: dict) -> float:
    return result["tokens"] / result["steps"]


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
