"""Each experiment's part of report.md, below its heading: what it measured and how (a named
template), its tables from bench.json's rows, and the findings read from the numbers, never
entered by hand."""

from string import Template

from sequoia_cli.stages.bench.plots import ROBUSTNESS_PLOT, SCALABILITY_PLOT
from sequoia_cli.stages.bench.shared import SETTINGS, WORKLOADS, setting_name
from sequoia_cli.stages.bench.step_counts import FAMILIES, ROBUST_METHODS, ROBUST_TREE_SETTING
from sequoia_cli.stages.bench.tables import interval, markdown_table, number, plain, temperature_name, value

SCALABILITY = Template(
    "Real decodes through the engine's `generate`, no clock. Tokens per step: each step counts the tokens it"
    " adds on average over verification's random draws, given the tree the draft drew (the same mean as the"
    " tokens it realized, without the variance of the coin flips); summed over every step of every prompt and"
    " divided by the steps, with a bootstrap over prompts. DP realized: tokens added / steps taken. DP tree:"
    " the best tree of each size (no depth bound) for the setting's acceptance vector, method sequoia, with"
    " its predicted E. SpecInfer k x d: k independent chains of depth d from the root (k = 2 up to size 16,"
    " 4 up to 64, 8 beyond; its actual size is k*d + 1), method specinfer. Top-2 tree: every node has 2"
    " children, filled breadth first, method topk. Chain: size - 1 tokens, method sequoia (left out past size"
    " $chain_max_size: one draft forward per token). The paired columns are the DP tree's tokens/step over the"
    " other tree's on the same prompts, resampled together.")
ROBUSTNESS = Template(
    "One tree per workload: the DP tree of size $robust_size from the $setting vector; the method sets how"
    " children are drawn and verified (top-p 1). Tokens per step as in experiment 1.")
WALL_CLOCK = (
    "HF: `target.generate` (greedy, or `do_sample` with the same temperature and top-p and no top-k cut), and"
    " with `assistant_model=draft` at its default schedule. Ours: autoregressive (size 1), a chain of 4, a"
    " SpecInfer 4x4 tree, and Sequoia with `optimize`'s tree for the setting's vector. Speedup: the geometric"
    " mean over prompts of the method's tokens/s over HF generate's on the same prompt. Seconds include the"
    " prompt's prefill.")
HARDWARE = Template(
    "The optimizer's pick and a sweep of DP trees (size, depth bound), with experiment 3's profile and"
    " vector, in a block of their own: $sweep_prompts prompts of $sweep_tokens tokens (experiment 3's first)."
    " Measured speedup: over our autoregressive run on the same prompts (geometric mean of per-prompt"
    " ratios), of the decoding steps alone as the cost model predicts them (the prompt's prefill, the same"
    " work for every tree, is timed apart), and beside it with the prefill; predicted: the optimizer's cost"
    " model with this run's profile; rank: by the measured speedup. Measured tokens/step: the tokens of every"
    " step before the cut at EOS or the token budget (what the predictions are of), over every step of every"
    " prompt, with a bootstrap interval over prompts.")
PICK = Template("The optimizer's pick (size $size, depth $depth) measured $speedup over autoregressive"
                " (predicted $predicted)")
PICK_ALONE = Template("$pick; no sweep ran in this mode.")
PICK_RANKED = Template("$pick and ranks $rank of $count; the sweep's best is $best at $best_speedup,"
                       " $above% above the pick.")
REPLAYED = Template(
    "The by-level prediction over the tokens/step greedy decode realizes on the vectors' own prompts (the"
    " model's error), minus 1: $model_error; those over the measured on the held-out prompts (the difference"
    " between the two sets of prompts): $prompts_error.")
DP = "A random acceptance vector (Dirichlet, fixed seed, sorted); no models."
OVERHEAD = ("Experiment 3's greedy runs of our engine, timed with forward hooks on both models; outside = wall"
            " time minus the time inside both models' forwards.")
OFFLOADED = Template(
    "The target loaded again with $memory of CPU memory (`--max-memory cpu=...`, accelerate's"
    " `device_map=\"auto\"`), the rest of its weights in an offload folder on disk, read at every forward:"
    " the CPU analogue of the paper's offloading setting, where a forward costs nearly the same for 1 token"
    " as for hundreds. HumanEval, greedy; its profile (ms per forward, $repeats interleaved rounds),"
    " optimize's tree for it, and that tree against autoregressive decoding of the same offloaded target,"
    " back to back per prompt ($prompts prompts of $tokens tokens).")


def scalability_section(results: dict) -> str:
    """Experiment 1: a table per workload and temperature, each with its finding."""
    config, rows = results["config"], results["scalability"]
    parts = [SCALABILITY.substitute(chain_max_size=config["chain_max_size"]),
             f"![scalability]({SCALABILITY_PLOT})"]
    header = ["size", "DP tree", "DP realized", "DP predicted E", "DP depth", "SpecInfer k x d", "k x d (size)",
              "top-2 tree", "chain", "DP / SpecInfer (paired)", "DP / top-2 (paired)"]
    for workload in WORKLOADS:
        for temperature in config["scale_temperatures"]:
            subset = [r for r in rows if r["workload"] == workload and r["temperature"] == temperature]
            lines = [scalability_line({r["family"]: r for r in subset if r["size"] == size}, size)
                     for size in config["sizes"]]
            parts.append(f"**{workload}, {temperature_name(temperature)}**\n\n" + markdown_table(header, lines)
                         + "\n\n" + scalability_finding(subset))
    return "\n\n".join(parts)


def scalability_line(cells: dict, size: int) -> list[str]:
    """One size's line: each family's tokens per step, the DP tree's beside its prediction."""
    dp, kxd = cells.get("dp"), cells.get("kxd")
    return [str(size), interval(dp, "tokens_per_step"), plain(dp, "realized_tokens_per_step", 2),
            plain(dp, "predicted", 2), plain(dp, "depth"), interval(kxd, "tokens_per_step"),
            f"{kxd['shape']} ({kxd['tree_size']})" if kxd and "shape" in kxd else "-",
            interval(cells.get("topk"), "tokens_per_step"),
            interval(cells.get("chain"), "tokens_per_step") if "chain" in cells else "left out",
            interval((dp or {}).get("dp_over"), "kxd"), interval((dp or {}).get("dp_over"), "topk")]


def scalability_finding(rows: list[dict]) -> str:
    """From the numbers: at the largest size measured, the DP tree against the other families."""
    measured = [r for r in rows if r["family"] == "dp" and value(r, "tokens_per_step")]
    if not measured:
        return "No DP tree was measured at this setting."
    dp = max(measured, key=lambda r: r["size"])
    parts = []
    for family, ratio in dp["dp_over"].items():
        if value(ratio, "value") is None or ratio.get("low") is None:
            continue
        verdict = ("ahead" if ratio["low"] > 1 else "behind" if ratio["high"] < 1 else "not separable from it")
        parts.append(f"{ratio['value']:.2f}x the {FAMILIES[family]} [{ratio['low']:.2f}, {ratio['high']:.2f}]: "
                     f"{verdict}")
    return (f"At size {dp['size']} the DP tree accepts {dp['tokens_per_step']['value']:.2f} tokens/step"
            + (" (" + "; ".join(parts) + ")" if parts else "") + ".")


def robustness_section(results: dict) -> str:
    """Experiment 2: a table per workload, a line per temperature, a column per method."""
    config, rows = results["config"], results["robustness"]
    parts = [ROBUSTNESS.substitute(robust_size=config["robust_size"], setting=ROBUST_TREE_SETTING),
             f"![robustness]({ROBUSTNESS_PLOT})"]
    for workload in WORKLOADS:
        lines = []
        for temperature in config["robust_temperatures"]:
            cells = {r["method"]: r for r in rows if r["workload"] == workload and r["temperature"] == temperature}
            lines.append([str(temperature)] + [interval(cells.get(m), "tokens_per_step") for m in ROBUST_METHODS])
        parts.append(f"**{workload}**\n\n" + markdown_table(["temperature"] + list(ROBUST_METHODS.values()), lines))
    return "\n\n".join(parts)


def wall_clock_section(results: dict) -> str:
    """Experiment 3: a table per workload and setting."""
    sampled = setting_name(SETTINGS["sampled"])
    return "\n\n".join([WALL_CLOCK] + [
        f"### {workload}, {setting if setting == 'greedy' else sampled}\n\n"
        + wall_table(results["wall_clock"], workload, setting) for workload in WORKLOADS for setting in SETTINGS])


def wall_table(rows: list[dict], workload: str, setting: str) -> str:
    """One workload's methods at one setting, and their speedups over HF generate in a line."""
    subset = [r for r in rows if r["workload"] == workload and r["setting"] == setting
              and not r["method"].startswith("DP size")]
    lines = []
    for r in subset:
        size = f"{r['tree_size']} / {r['depth']}" if "tree_size" in r else "-"
        line = [r["method"], size, plain(r, "tokens"), plain(r, "seconds", 1), interval(r, "tokens_per_second"),
                interval(r, "speedup", 2, "x"), interval(r, "tokens_per_step")]
        if setting == "greedy":
            line.append(r.get("same_tokens", "-"))
        lines.append(line)
    header = ["method", "tree size / depth", "tokens", "seconds", "tokens/s", "speedup vs HF generate",
              "tokens per target forward"] + (["same tokens as HF generate"] if setting == "greedy" else [])
    by = {r["method"]: r for r in subset}
    facts = [f"{m} {value(by[m], 'speedup'):.2f}x HF generate" for m in ("Sequoia", "HF assisted", "autoregressive")
             if value(by.get(m), "speedup")]
    return markdown_table(header, lines) + ("\n\n" + "; ".join(facts) + "." if facts else "")


def hardware_section(results: dict) -> str:
    """Experiment 4: a table per workload with the predictions' errors and where the pick ranks."""
    config = results["config"]
    about = HARDWARE.substitute(sweep_prompts=config["sweep_prompts"], sweep_tokens=config["sweep_tokens"])
    return "\n\n".join([about] + [f"**{w}**\n\n" + hardware_table(results["hardware"], w) for w in WORKLOADS])


def hardware_table(rows: list[dict], workload: str) -> str:
    subset = [r for r in rows if r["workload"] == workload]
    lines = [[r["tree"], plain(r, "tree_size"), plain(r, "depth"), plain(r, "predicted_tokens", 2),
              plain(r, "predicted_tokens_by_level", 2), interval(r, "replayed_tokens"), interval(r, "tokens_per_step"),
              number(None if "error" in r else r.get("predicted_speedup"), 2, "x"),
              interval(r, "speedup", 2, "x"), interval(r, "speedup_with_prefill", 2, "x"), plain(r, "rank")]
             for r in subset]
    table = markdown_table(["tree", "size", "depth", "predicted tokens/step (positional)", "(by level)",
                            "replayed on the vectors' prompts", "measured tokens/step", "predicted speedup",
                            "measured speedup", "(with the prefill)", "rank"], lines)
    return table + prediction_errors(subset) + "\n\n" + pick_finding(subset)


def pick_finding(rows: list[dict]) -> str:
    """Where the optimizer's pick ranks among the sweep's trees by measured speedup."""
    ranked = sorted((r for r in rows if "rank" in r), key=lambda r: r["rank"])
    pick = next((r for r in ranked if r["tree"] == "optimizer's pick"), None)
    if pick is None:
        return "The optimizer's pick was not measured."
    measured = PICK.substitute(size=pick["tree_size"], depth=pick["depth"], speedup=f"{pick['speedup']['value']:.2f}x",
                               predicted=number(pick.get("predicted_speedup")) + "x")
    if len(ranked) == 1:
        return PICK_ALONE.substitute(pick=measured)
    best = ranked[0]
    above = 100 * (best["speedup"]["value"] / pick["speedup"]["value"] - 1)
    return PICK_RANKED.substitute(pick=measured, rank=pick["rank"], count=len(ranked), best=best["tree"],
                                  best_speedup=f"{best['speedup']['value']:.2f}x", above=f"{above:.0f}")


def prediction_errors(rows: list[dict]) -> str:
    """How far each prediction is from what was measured: per tree, predicted / measured - 1."""
    measured = [r for r in rows if "error" not in r and "value" in r.get("tokens_per_step", {})]
    if not measured:
        return ""

    def errors(key, figure):
        return ", ".join(f"{r['tree']} {100 * (value(r, key) / value(r, figure) - 1):+.1f}%"
                         for r in measured if value(r, key) is not None and value(r, figure))
    lines = [f"tokens/step, positional: {errors('predicted_tokens', 'tokens_per_step')}"]
    if any("predicted_tokens_by_level" in r for r in measured):
        lines.append(f"tokens/step, by level: {errors('predicted_tokens_by_level', 'tokens_per_step')}")
    if any("predicted_speedup" in r for r in measured):
        lines.append(f"speedup: {errors('predicted_speedup', 'speedup')}")
    text = "\n\nPredicted over measured, minus 1: " + "; ".join(lines) + "."
    if any(value(r, "replayed_tokens") for r in measured):
        text += "\n\n" + REPLAYED.substitute(model_error=errors("predicted_tokens_by_level", "replayed_tokens"),
                                             prompts_error=errors("replayed_tokens", "tokens_per_step"))
    return text


def dp_section(results: dict) -> str:
    """Experiment 5: the DP's and the tree's build times per size."""
    lines = [[str(r["size"]), str(r["depth"]), str(r["width"]), number(r["table_seconds"], 3),
              number(r["tree_seconds"], 4), number(r["expected"], 3)] for r in results["dp"]]
    header = ["size", "depth", "width", "tree_table seconds", "best_tree seconds", "E of the tree"]
    return DP + "\n\n" + markdown_table(header, lines)


def overhead_section(results: dict) -> str:
    """Experiment 6: each of our greedy runs' time inside and outside the models' forwards."""
    lines = [[r["workload"], r["method"], str(r["tree_size"]), number(r["wall_seconds"], 1),
              number(r["target_seconds"], 1), str(r["steps"]), number(r["draft_seconds"], 1), str(r["draft_forwards"]),
              number(r["outside_seconds"], 1), number(r["outside_share"], 3), number(r["outside_ms_per_step"], 1)]
             for r in results["overhead"]]
    header = ["workload", "run", "tree size", "wall s", "target forward s", "target forwards", "draft forward s",
              "draft forwards", "outside forwards s", "share outside", "ms outside per step"]
    return OVERHEAD + "\n\n" + markdown_table(header, lines)


def offloaded_section(results: dict) -> str:
    """Experiment 7: the offloaded target's profile, the optimizer's tree for it, and that tree timed."""
    config = results["config"]
    about = OFFLOADED.substitute(memory=config["offload_memory"], repeats=config["profile_repeats"],
                                 prompts=config["offload_prompts"], tokens=config["offload_tokens"])
    return about + "\n\n" + offloaded_tables(results.get("offloaded"))


def offloaded_tables(result: dict | None) -> str:
    if not result or "error" in result:
        return (result or {}).get("error", "not measured")
    profile, plan = result["profile"], result["plan"]
    parts = []
    if "error" in profile:
        parts.append(f"profile: {profile['error']}")
    else:
        counts = list(profile["target"]["ms"])
        times = [[f"{role} ms"] + [f"{profile[role]['ms'][c]:.0f}" for c in counts] for role in ("target", "draft")]
        parts.append(markdown_table(["tokens"] + counts, times))
    parts.append(plan["error"] if "error" in plan else
                 f"Optimizer's tree: size {plan['plan']['size']}, depth {plan['plan']['depth']}, predicted"
                 f" {plan['plan']['speedup']:.2f}x over autoregressive decoding of the offloaded target.")
    lines = [[r["method"], plain(r, "tree_size"), plain(r, "depth"), plain(r, "tokens"),
              interval(r, "tokens_per_second"), interval(r, "tokens_per_step"), interval(r, "speedup", 2, "x"),
              plain(r, "same_tokens")] for r in result["rows"]]
    parts.append(markdown_table(["method", "size", "depth", "tokens", "tokens/s", "tokens/step",
                                 "speedup over autoregressive", "same tokens"], lines))
    return "\n\n".join(parts)
