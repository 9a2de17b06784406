"""Experiment 10, dynamic: trees grown per step by the draft's calibrated confidence against
optimize's static tree, a chain of 4, autoregressive decoding and Hugging Face `generate`, on
both workloads, greedy and sampled (experiment 3's two settings).

Both trees come from one `optimize` call per workload and setting (`--method dynamic`: the
static pick, and the plan a dynamic tree grows within), on the workload's vector and its
calibration and a profile, all measured by this experiment (its vectors on a quarter of the mode's
acceptance prompts: `vector_prompts`). Reported per method: tokens per step, draft
forwards per step, tokens/s, the speedups over HF generate and over the static tree (paired by
prompt), and for the dynamic trees how far the calibration's predicted tokens per step were from
the realized ones (predicted over realized, minus 1); beside the table, each workload's
calibration curve (acceptance per bin of the draft's probability)."""

from functools import partial

from sequoia_cli.stages.bench.harness import Config, decode_one, hf_one, run_block, spread
from sequoia_cli.stages.bench.shared import (
    SETTINGS,
    WORKLOADS,
    Bench,
    failing,
    interval_row,
    paired_interval,
    profile_work,
    setting_name,
    speed,
    vector_of,
)
from sequoia_cli.stages.bench.stats import failure, first_difference
from sequoia_cli.stages.bench.tables import interval, markdown_table, number
from sequoia_cli.stages.measure_acceptance import Request, measure_acceptance
from sequoia_cli.stages.optimize import optimize

from sequoia_cli.dynamic import budget_parents, growth_of
from sequoia_cli.sampling import Sampling
from sequoia_cli.tree import chain_parents

METHODS = ("HF generate", "autoregressive", "chain 4", "Sequoia", "dynamic")


def vector_prompts(config: Config) -> int:
    """Prompts per vector of this experiment's own (with their calibrations): a quarter of the
    mode's acceptance prompts (full: 8 of 96 tokens each), spread over them, so that on 2 cores its
    four vectors take half an hour beside its decodes rather than two hours."""
    return max(1, config.acceptance_prompts // 4)


def dynamic_work(config: Config) -> int:
    """The vectors', the profile's, then every workload and setting's decodes."""
    blocks = len(WORKLOADS) * len(SETTINGS)
    return (blocks * vector_prompts(config) * config.continuation + config.new_tokens
            + blocks * len(METHODS) * config.prompts * config.new_tokens)


def measure_dynamic_vectors(bench: Bench) -> dict:
    """{workload: {setting: acceptance artifact or {"error": ...}}} on `vector_prompts` of each
    workload's acceptance prompts, also into the results' `dynamic_vectors` rows."""
    config, vectors = bench.config, {}
    for run in bench.runs:
        records = [{"prompt": prompt} for prompt in spread(run.acceptance_prompts, vector_prompts(config))]
        for sampling in SETTINGS.values():
            name = setting_name(sampling)
            request = Request(records, sampling, config.width, config.continuation, run.seed,
                              chat_template=WORKLOADS[run.workload]["chat_template"])
            vector = bench.store.cell(f"dynamic | acceptance | {run.workload} | {name}", partial(
                measure_acceptance, run.target, run.draft, run.tokenizer, request, engine=run.engine))
            vectors.setdefault(run.workload, {})[name] = vector
            bench.tick(f"dynamic: {run.workload} acceptance at {name}", len(records) * config.continuation)
            bench.results["dynamic_vectors"].append({"workload": run.workload, "setting": name, **vector})
    return vectors


def plan_both(vectors: dict, sampling: Sampling, profile: dict) -> dict:
    """optimize's static tree and its dynamic plan for the setting's vector, candidates left out."""
    if "error" in profile:
        raise RuntimeError(f"no profile ({profile['error']})")
    vector_of(vectors, sampling)
    tree = optimize(vectors[setting_name(sampling)], profile, method="dynamic")
    return {"parents": tree["parents"], "dynamic": tree["dynamic"],
            "plan": {k: v for k, v in tree["plan"].items() if k != "candidates"}}


def methods_of(run, plan: dict, sampling: Sampling, new_tokens: int) -> dict:
    """Each method's cell on prompt `index`: HF generate's, or ours on its tree."""
    methods = {"HF generate": partial(hf_one, run, sampling=sampling, new_tokens=new_tokens, assisted=False)}
    ours = partial(decode_one, run, sampling=Sampling(sampling.temperature, sampling.top_p), new_tokens=new_tokens)
    methods["autoregressive"] = partial(ours, parents=[-1])
    methods["chain 4"] = partial(ours, parents=chain_parents(4))
    if "error" in plan:
        methods["Sequoia"] = methods["dynamic"] = failing(plan["error"])
    else:
        methods["Sequoia"] = partial(ours, parents=plan["parents"])
        if plan["dynamic"].get("fallback"):  # as decode --method dynamic does: the static tree
            methods["dynamic"] = methods["Sequoia"]
        else:
            growth = growth_of(plan["dynamic"])
            methods["dynamic"] = partial(ours, parents=budget_parents(growth), growth=growth)
    return methods


def rows_of(run, setting: str, plan: dict, results: dict, resamples: int) -> list[dict]:
    rows = []
    for method in METHODS:
        row = {"workload": run.workload, "setting": setting, "method": method,
               **interval_row(results[method], resamples, run.seed, base=results["HF generate"])}
        row["vs_static"] = paired_interval(results[method], results["Sequoia"], speed, resamples, run.seed)
        done = not failure(results[method])
        if done and method != "HF generate":
            row["draft_forwards_per_step"] = (sum(r["draft_forwards"] for r in results[method])
                                              / sum(r["steps"] for r in results[method]))
        if done and method == "dynamic" and "undrafted_steps" in results[method][0]:
            row["undrafted_share"] = (sum(r["undrafted_steps"] for r in results[method])
                                      / sum(r["steps"] for r in results[method]))
        if done and method == "dynamic" and "predicted" in results[method][0]:
            realized = sum(r["step_tokens"] for r in results[method])
            row["calibration_error"] = sum(r["predicted"] for r in results[method]) / realized - 1
        if done and setting == "greedy" and not failure(results["autoregressive"]):
            row["same_as_autoregressive"] = first_difference([r["output"] for r in results[method]],
                                                             [r["output"] for r in results["autoregressive"]])
        rows.append(row)
    if "error" not in plan:
        rows[-1]["plan"] = {"widths": plan["dynamic"]["widths"], "children": plan["dynamic"]["children"],
                            "static_size": plan["plan"]["size"], "static_depth": plan["plan"]["depth"],
                            "static_ms_per_token": plan["plan"]["ms_per_token"],
                            "prediction": plan["dynamic"].get("prediction"),
                            "fallback": plan["dynamic"].get("fallback", False)}
    return rows


def run_dynamic(bench: Bench) -> None:
    """The vectors, the profile, then per workload and setting the plans and one interleaved block."""
    config = bench.config
    vectors = measure_dynamic_vectors(bench)
    profile = bench.store.cell("dynamic | profile", profile_work(bench, bench.runs, bench.loaded.target, "target",
                                                                 config.profile_max, config.new_tokens))
    bench.tick("dynamic: profile", config.new_tokens)
    for run in bench.runs:
        for setting, sampling in SETTINGS.items():
            plan = bench.store.cell(f"dynamic | plan | {run.workload} | {setting}", partial(
                plan_both, vectors[run.workload], sampling, profile))
            results = run_block(bench.store, f"dynamic | {run.workload} | {setting}",
                                methods_of(run, plan, sampling, config.new_tokens), config.prompts, bench.tick,
                                config.new_tokens)
            bench.results["dynamic"] += rows_of(run, setting, plan, results, config.resamples)


ABOUT = ("Per workload and setting, optimize's static tree (Sequoia) and the dynamic plan of the same call on the"
         " experiment's own vector and calibration"
         " (`optimize --method dynamic`: the level widths of the DP's pick priced by the target's time alone, or of"
         " the static pick, whichever the calibration predicts faster, cap each level, and a level is drafted only"
         " while it and the best run of levels it opens are worth their draft forwards; where the grown trees are"
         " predicted slower than the static tree, the method runs the static tree), beside a chain of 4,"
         " autoregressive decoding and HF generate, the methods of a prompt back to back in rotated order."
         " Speedups: paired geometric means over prompts with 95% bootstrap intervals. Calibration error: the"
         " tokens per step the calibration predicted over those realized, minus 1.")


def calibration_lines(results: dict) -> list[str]:
    """Each vector's calibration curve: acceptance per bin of the draft's probability (children tried)."""
    lines = []
    for vector in results.get("dynamic_vectors", []):
        calibration = vector.get("calibration")
        if not calibration:
            continue
        edges = calibration["edges"]
        bins = ", ".join(f"[{low:g}, {high:g}): {rate:.2f} ({tried})"
                         for low, high, rate, tried in zip(edges, edges[1:], calibration["acceptance"],
                                                           calibration["tried"]) if rate is not None)
        lines.append(f"- calibration, {vector['workload']} at {vector['setting']} ({vector['samples']} positions):"
                     f" {bins}")
    return lines


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def predicted_line(plan: dict) -> str:
    """What the plan predicted of the grown trees against the static tree, and whether it fell back."""
    predicted = plan.get("prediction")
    if not predicted:
        return ""
    line = (f"; predicted {predicted['ms_per_token']:.1f} ms per token ({predicted['tokens_per_step']:.2f} tokens and"
            f" {predicted['draft_forwards_per_step']:.2f} draft forwards per step) against the static tree's"
            f" {plan['static_ms_per_token']:.1f}")
    return line + (": falls back to the static tree" if plan.get("fallback") else "")


def dynamic_section(results: dict) -> str:
    header = ["workload", "setting", "method", "tokens per step", "draft forwards per step",
              "steps that drafted nothing", "tokens/s", "vs HF generate", "vs static tree", "calibration error",
              "same as autoregressive"]
    lines = [[r["workload"], r["setting"], r["method"], interval(r, "tokens_per_step"),
              number(r.get("draft_forwards_per_step")), percent(r.get("undrafted_share")),
              interval(r, "tokens_per_second"),
              interval(r, "speedup", suffix="x"), interval(r, "vs_static", suffix="x"),
              number(r.get("calibration_error"), 3), r.get("same_as_autoregressive", "-")]
             for r in results.get("dynamic", [])]
    plans = [f"- {r['workload']}, {r['setting']}: static tree size {r['plan']['static_size']}, depth"
             f" {r['plan']['static_depth']}; dynamic level caps {r['plan']['widths']}, {r['plan']['children']}"
             f" children per node{predicted_line(r['plan'])}" for r in results.get("dynamic", []) if "plan" in r]
    return "\n\n".join([ABOUT, "\n".join(plans), markdown_table(header, lines), "Calibration curves (acceptance"
                        " per bin of the draft's probability, children tried in brackets):",
                        "\n".join(calibration_lines(results))])
