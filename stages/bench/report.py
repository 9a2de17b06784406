"""The bench's report: report.md (every table from the run's rows, nothing entered by hand),
bench.json (every row) and the two plots. An interval is the 95% bootstrap interval over the
prompts; one reaching past +-5% of its value is marked "wide"."""

from pathlib import Path

from sequoia_cli.artifacts import write_json, write_text
from stages.bench.experiments import FAMILIES, ROBUST_METHODS, ROBUST_TREE_SETTING, SETTINGS, WORKLOADS, setting_name
from stages.profile_hw import STEADY, steady


def number(value, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def reason(row: dict | None) -> str | None:
    if row is None:
        return "-"
    return row["error"].replace("|", "/") if "error" in row else None


def interval(row: dict | None, key: str, digits: int = 2, suffix: str = "") -> str:
    """'1.45x [1.38, 1.52]' (', wide' past +-5%), or why the figure is missing."""
    missing = reason(row)
    if missing:
        return missing
    figure = row.get(key) or {}
    if "error" in figure:
        return figure["error"].replace("|", "/")
    if figure.get("low") is None:
        return number(figure.get("value"), digits, suffix) + " (one prompt)"
    return (f"{figure['value']:.{digits}f}{suffix} [{figure['low']:.{digits}f}, {figure['high']:.{digits}f}]"
            + (", wide" if figure["wide"] else ""))


def value(row: dict | None, key: str):
    figure = None if row is None or "error" in row else row.get(key)
    return figure.get("value") if isinstance(figure, dict) else figure


def plain(row: dict | None, key: str, digits: int | None = None) -> str:
    figure = value(row, key)
    return "-" if figure is None else f"{figure:.{digits}f}" if digits is not None else str(figure)


def temperature_name(temperature: float) -> str:
    return "greedy" if temperature == 0 else f"temperature {temperature:g}"


def markdown_table(header: list[str], lines: list[list[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def scalability_section(rows: list[dict], config: dict) -> str:
    parts = []
    for workload in WORKLOADS:
        for temperature in config["scale_temperatures"]:
            subset = [r for r in rows if r["workload"] == workload and r["temperature"] == temperature]
            lines = []
            for size in config["sizes"]:
                cells = {r["family"]: r for r in subset if r["size"] == size}
                dp, kxd = cells.get("dp"), cells.get("kxd")
                lines.append([str(size), interval(dp, "tokens_per_step"), plain(dp, "realized_tokens_per_step", 2),
                              plain(dp, "predicted", 2), plain(dp, "depth"), interval(kxd, "tokens_per_step"),
                              f"{kxd['shape']} ({kxd['tree_size']})" if kxd and "shape" in kxd else "-",
                              interval(cells.get("topk"), "tokens_per_step"),
                              interval(cells.get("chain"), "tokens_per_step") if "chain" in cells else "left out",
                              interval((dp or {}).get("dp_over"), "kxd"), interval((dp or {}).get("dp_over"), "topk")])
            header = ["size", "DP tree", "DP realized", "DP predicted E", "DP depth", "SpecInfer k x d", "k x d (size)",
                      "top-2 tree", "chain", "DP / SpecInfer (paired)", "DP / top-2 (paired)"]
            parts.append(f"**{workload}, {temperature_name(temperature)}**\n\n" + markdown_table(header, lines)
                         + "\n\n" + scalability_finding(subset))
    return "\n\n".join(parts)


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


def robustness_section(rows: list[dict], config: dict) -> str:
    parts = []
    for workload in WORKLOADS:
        lines = []
        for temperature in config["robust_temperatures"]:
            cells = {r["method"]: r for r in rows if r["workload"] == workload and r["temperature"] == temperature}
            lines.append([str(temperature)] + [interval(cells.get(m), "tokens_per_step") for m in ROBUST_METHODS])
        parts.append(f"**{workload}**\n\n" + markdown_table(["temperature"] + list(ROBUST_METHODS.values()), lines))
    return "\n\n".join(parts)


def wall_section(rows: list[dict], workload: str, setting: str) -> str:
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


def hardware_section(rows: list[dict], workload: str) -> str:
    subset = [r for r in rows if r["workload"] == workload]
    lines = [[r["tree"], plain(r, "tree_size"), plain(r, "depth"), plain(r, "predicted_tokens", 2),
              plain(r, "predicted_tokens_by_level", 2), interval(r, "replayed_tokens"), interval(r, "tokens_per_step"),
              number(None if "error" in r else r.get("predicted_speedup"), 2, "x"),
              interval(r, "speedup", 2, "x"), interval(r, "speedup_with_prefill", 2, "x"), plain(r, "rank")]
             for r in subset]
    table = markdown_table(["tree", "size", "depth", "predicted tokens/step (positional)", "(by level)",
                            "replayed on the vectors' prompts", "measured tokens/step", "predicted speedup",
                            "measured speedup", "(with the prefill)", "rank"], lines)
    table += prediction_errors(subset)
    ranked = sorted((r for r in subset if "rank" in r), key=lambda r: r["rank"])
    pick = next((r for r in ranked if r["tree"] == "optimizer's pick"), None)
    if not ranked or pick is None:
        return table + "\n\nThe optimizer's pick was not measured."
    best = ranked[0]
    if len(ranked) == 1:
        return (table + f"\n\nThe optimizer's pick (size {pick['tree_size']}, depth {pick['depth']}) measured"
                f" {pick['speedup']['value']:.2f}x over autoregressive (predicted {number(pick.get('predicted_speedup'))}x);"
                " no sweep ran in this mode.")
    return (table + f"\n\nThe optimizer's pick (size {pick['tree_size']}, depth {pick['depth']}) measured"
            f" {pick['speedup']['value']:.2f}x over autoregressive (predicted {number(pick.get('predicted_speedup'))}x)"
            f" and ranks {pick['rank']} of {len(ranked)}; the sweep's best is {best['tree']} at"
            f" {best['speedup']['value']:.2f}x, {100 * (best['speedup']['value'] / pick['speedup']['value'] - 1):.0f}%"
            " above the pick.")


def offloaded_section(result: dict | None) -> str:
    if not result or "error" in result:
        return (result or {}).get("error", "not measured")
    profile, plan = result["profile"], result["plan"]
    parts = []
    if "error" in profile:
        parts.append(f"profile: {profile['error']}")
    else:
        counts = list(profile["target"]["ms"])
        parts.append(markdown_table(["tokens"] + counts, [[f"{role} ms"] + [f"{profile[role]['ms'][c]:.0f}" for c in counts]
                                                          for role in ("target", "draft")]))
    parts.append(plan["error"] if "error" in plan else
                 f"Optimizer's tree: size {plan['plan']['size']}, depth {plan['plan']['depth']}, predicted"
                 f" {plan['plan']['speedup']:.2f}x over autoregressive decoding of the offloaded target.")
    lines = [[r["method"], plain(r, "tree_size"), plain(r, "depth"), plain(r, "tokens"),
              interval(r, "tokens_per_second"), interval(r, "tokens_per_step"), interval(r, "speedup", 2, "x"),
              plain(r, "same_tokens")] for r in result["rows"]]
    parts.append(markdown_table(["method", "size", "depth", "tokens", "tokens/s", "tokens/step",
                                 "speedup over autoregressive", "same tokens"], lines))
    return "\n\n".join(parts)


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
        text += ("\n\nThe by-level prediction over the tokens/step greedy decode realizes on the vectors' own"
                 f" prompts (the model's error), minus 1: {errors('predicted_tokens_by_level', 'replayed_tokens')};"
                 " those over the measured on the held-out prompts (the difference between the two sets of prompts):"
                 f" {errors('replayed_tokens', 'tokens_per_step')}.")
    return text



def dp_section(rows: list[dict]) -> str:
    lines = [[str(r["size"]), str(r["depth"]), str(r["width"]), number(r["table_seconds"], 3),
              number(r["tree_seconds"], 4), number(r["expected"], 3)] for r in rows]
    return markdown_table(["size", "depth", "width", "tree_table seconds", "best_tree seconds", "E of the tree"], lines)


def overhead_section(rows: list[dict]) -> str:
    lines = [[r["workload"], r["method"], str(r["tree_size"]), number(r["wall_seconds"], 1),
              number(r["target_seconds"], 1), str(r["steps"]), number(r["draft_seconds"], 1), str(r["draft_forwards"]),
              number(r["outside_seconds"], 1), number(r["outside_share"], 3), number(r["outside_ms_per_step"], 1)]
             for r in rows]
    return markdown_table(["workload", "run", "tree size", "wall s", "target forward s", "target forwards",
                           "draft forward s", "draft forwards", "outside forwards s", "share outside",
                           "ms outside per step"], lines)


def setup_section(results: dict) -> str:
    m, c = results["machine"], results["config"]
    models, load = results["models"], results["load_average"]
    lines = [
        f"- run: `{c['name']}` mode, seed {results['seed']}, {results['seconds'] / 60:.1f} minutes"
        + (" (resumed: earlier cells reused)" if results["resumed"] else "")
        + ("" if len(c["experiments"]) == 6 else f"; experiments {', '.join(map(str, c['experiments']))} only"),
        f"- models: target `{models.get('target', '?')}`, draft `{models.get('draft', '?')}`",
        f"- machine: {m['cpu']} ({m['cores']} cores), {m.get('gpu', 'no GPU')}; device {m['device']}, dtype {m['dtype']},"
        f" torch threads {m['threads']}; load average (1, 5, 15 min) at start {load['start']}, at end {load['end']}",
        f"- versions: torch {m['torch']}, transformers {m['transformers']}, Python {m['python']}, {m['platform']},"
        f" code {m['code'] or 'unknown'}; {m['date']}",
    ]
    for workload, p in results["prompts"].items():
        lines.append(f"- {workload}: built-in set, chat template {'on' if p['chat_template'] else 'off'}; decoded"
                     f" prompts {p['decode']} ({', '.join(map(str, p['decode_prompt_tokens']))} prompt tokens;"
                     f" experiment 3 decodes the first {c['prompts']}),"
                     f" acceptance vectors on prompts {p['acceptance']}")
    lines += [
        f"- tokens per prompt: {c['new_tokens']} in experiments 3 and 6 ({c['prompts']} prompts per workload),"
        f" {c['sweep_tokens']} in 4 ({c['sweep_prompts']} prompts),"
        f" in 1 {', '.join(f'{t} at size {n}' for n, t in zip(c['sizes'], c['scale_tokens']))}, in 2"
        f" {c['robust_tokens']} (both on the first {c['scale_prompts']}); generation stops at EOS"
        f" ({results['eos']}) or there, the same for every method; each prompt has its own random stream"
        " (seed, prompt index), the same for every method",
        f"- acceptance vectors: {c['continuation']} tokens of the target's own continuation per prompt, width {c['width']}",
        "- every block runs its methods on one prompt back to back, in an order rotated by one per prompt;"
        f" intervals: 95% percentile bootstrap over the prompts ({c['resamples']} resamples)",
    ]
    for vector in results["vectors"]:
        shown = ", ".join(f"{a:.3f}" for a in vector.get("acceptance", [])[:6])
        state = vector.get("error") or (f"[{shown}, ...], none accepted {vector['rejected_all']:.3f},"
                                        f" {vector['samples']} positions")
        lines.append(f"- acceptance, {vector['workload']} at {vector['setting']}: {state}")
    profile = results["profile"]
    if "error" in profile:
        lines.append(f"- profile: {profile['error']}")
    else:
        for role in ("target", "draft"):
            lines.append(f"- profile ({role}, KV cache of {profile['context_length']} tokens,"
                         f" {profile['repeats']} interleaved rounds): " + ", ".join(f"{n}: {t:.1f}" for n, t in profile[role]["ms"].items())
                         + " ms")
        if "target_t1_by_round" in profile:
            lines.append("- profile's target t(1) by round: " + ", ".join(f"{t:.1f}" for t in profile["target_t1_by_round"])
                         + " ms" + ("" if steady(profile["target_t1_by_round"]) else
                                    f" (unsteady: rounds more than {100 * STEADY:.0f}% apart)"))
    for workload, plans in results["plans"].items():
        for setting, plan in plans.items():
            lines.append(f"- optimizer's tree, {workload} {setting}: " + (plan["error"] if "error" in plan else
                         f"size {plan['plan']['size']}, depth {plan['plan']['depth']}, predicted"
                         f" {plan['plan']['speedup']:.2f}x over autoregressive"))
    return "\n".join(lines)


def error_bars(points: list[tuple]) -> tuple:
    xs, ys, lows, highs = zip(*points)
    return xs, ys, [[y - lo for y, lo in zip(ys, lows)], [hi - y for y, hi in zip(ys, highs)]]


def measured_points(rows: list[dict], x: str) -> list[tuple]:
    return sorted((r[x], r["tokens_per_step"]["value"], r["tokens_per_step"]["low"] or r["tokens_per_step"]["value"],
                   r["tokens_per_step"]["high"] or r["tokens_per_step"]["value"])
                  for r in rows if value(r, "tokens_per_step"))


def plot_scalability(rows: list[dict], config: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(w, t) for w in WORKLOADS for t in config["scale_temperatures"]]
    figure, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (workload, temperature) in zip(axes[0], panels):
        for family, name in FAMILIES.items():
            subset = [r for r in rows if r["workload"] == workload and r["temperature"] == temperature
                      and r["family"] == family]
            points = measured_points(subset, "size")
            if points:
                ax.errorbar(*error_bars(points)[:2], yerr=error_bars(points)[2], marker="o", capsize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(config["sizes"], [str(size) for size in config["sizes"]])
        ax.minorticks_off()
        ax.set_title(f"{workload}, {temperature_name(temperature)}")
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

    figure, axes = plt.subplots(1, len(WORKLOADS), figsize=(5 * len(WORKLOADS), 4), squeeze=False)
    for ax, workload in zip(axes[0], WORKLOADS):
        for method, name in ROBUST_METHODS.items():
            points = measured_points([r for r in rows if r["workload"] == workload and r["method"] == method],
                                     "temperature")
            if points:
                ax.errorbar(*error_bars(points)[:2], yerr=error_bars(points)[2], marker="o", capsize=3, label=name)
        ax.set_xlabel("temperature")
        ax.set_ylabel("tokens per step")
        ax.set_title(f"{workload}: DP tree of size {size}")
        ax.grid(alpha=0.3)
        legend(ax)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def legend(ax) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no cell measured", ha="center", transform=ax.transAxes)


def write_report(out_dir: str, results: dict) -> Path:
    """report.md, scalability.png, robustness.png and bench.json (every row) in `out_dir`."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    config = results["config"]
    chosen = config["experiments"]
    if 1 in chosen:
        plot_scalability(results["scalability"], config, folder / "scalability.png")
    if 2 in chosen:
        plot_robustness(results["robustness"], config["robust_size"], folder / "robustness.png")
    sampled = setting_name(SETTINGS["sampled"])
    wall = [f"### {workload}, {setting if setting == 'greedy' else sampled}\n\n"
            + wall_section(results["wall_clock"], workload, setting) for workload in WORKLOADS for setting in SETTINGS]
    sections = {
        1: "## 1. Scalability: tokens per step against tree size\n\n"
        "Real decodes through `generate`, no clock. Tokens per step: each step counts the tokens it adds on"
        " average over verification's random draws, given the tree the draft drew (the same mean as the tokens"
        " it realized, without the variance of the coin flips); summed over every step of every prompt and"
        " divided by the steps, with a bootstrap over prompts. DP realized: tokens added / steps taken. DP tree:"
        " the best tree of each size (no depth bound) for the setting's acceptance vector, method sequoia, with its predicted E. SpecInfer k x d: k independent"
        " chains of depth d from the root (k = 2 up to size 16, 4 up to 64, 8 beyond; its actual size is"
        " k*d + 1), method specinfer. Top-2 tree: every node has 2 children, filled breadth first, method topk."
        " Chain: size - 1 tokens, method sequoia (left out past size"
        f" {config['chain_max_size']}: one draft forward per token). The paired columns are the DP tree's tokens/step"
        " over the other tree's on the same prompts, resampled together.\n\n"
        "![scalability](scalability.png)\n\n" + scalability_section(results["scalability"], config),
        2: f"## 2. Robustness: tokens per step against temperature\n\nOne tree per workload: the DP tree of size"
        f" {config['robust_size']} from the {ROBUST_TREE_SETTING} vector; the method sets how children are drawn"
        " and verified (top-p 1). Tokens per step as in experiment 1.\n\n![robustness](robustness.png)\n\n"
        + robustness_section(results["robustness"], config),
        3: "## 3. Wall clock\n\nHF: `target.generate` (greedy, or `do_sample` with the same temperature and top-p and"
        " no top-k cut), and with `assistant_model=draft` at its default schedule. Ours: autoregressive (size 1),"
        " a chain of 4, a SpecInfer 4x4 tree, and Sequoia with `optimize`'s tree for the setting's vector."
        " Speedup: the geometric mean over prompts of the method's tokens/s over HF generate's on the same"
        " prompt. Seconds include the prompt's prefill.\n\n" + "\n\n".join(wall),
        4: "## 4. Hardware awareness, greedy\n\nThe optimizer's pick and a sweep of DP trees (size, depth bound),"
        f" with experiment 3's profile and vector, in a block of their own: {config['sweep_prompts']} prompts of"
        f" {config['sweep_tokens']} tokens (experiment 3's first). Measured speedup: over our autoregressive run on the same"
        " prompts (geometric mean of per-prompt ratios), of the decoding steps alone as the cost model predicts"
        " them (the prompt's prefill, the same work for every tree, is timed apart), and beside it with the"
        " prefill; predicted: the optimizer's cost model with this run's profile; rank: by the measured speedup."
        " Measured tokens/step: the tokens of every step before the cut at EOS or the token budget (what the"
        " predictions are of), over every step of every prompt, with a bootstrap interval over prompts.\n\n" + "\n\n".join(f"**{w}**\n\n" + hardware_section(results["hardware"], w) for w in WORKLOADS),
        5: "## 5. The DP itself\n\nA random acceptance vector (Dirichlet, fixed seed, sorted); no models.\n\n"
        + dp_section(results["dp"]),
        7: f"## 7. Offloaded target\n\nThe target loaded again with {config['offload_memory']} of CPU memory"
        " (`--max-memory cpu=...`, accelerate's `device_map=\"auto\"`), the rest of its weights in an offload"
        " folder on disk, read at every forward: the CPU analogue of the paper's offloading setting, where a"
        " forward costs nearly the same for 1 token as for hundreds. HumanEval, greedy; its profile (ms per"
        f" forward, {config['profile_repeats']} interleaved rounds), optimize's tree for it, and that"
        " tree against autoregressive decoding of the same offloaded target, back to back per prompt"
        f" ({config['offload_prompts']} prompts of {config['offload_tokens']} tokens).\n\n"
        + offloaded_section(results.get("offloaded")),
        6: "## 6. Loop overhead\n\nExperiment 3's greedy runs of our engine, timed with forward hooks on both models;"
        " outside = wall time minus the time inside both models' forwards.\n\n" + overhead_section(results["overhead"]),
    }
    write_json(str(folder / "bench.json"), results)
    report = folder / "report.md"
    text = "# sequoia bench\n\n" + setup_section(results)
    write_text(str(report), "\n\n".join([text] + [sections[number] for number in chosen]) + "\n")
    return report
