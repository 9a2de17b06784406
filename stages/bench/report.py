"""The bench's report: report.md (every table from the run's rows, nothing entered by hand),
bench.json (every row) and the two plots."""

from pathlib import Path

import numpy as np

from sequoia_cli.artifacts import write_json, write_text
from stages.bench.experiments import FAMILIES, ROBUST_METHODS, ROBUST_VECTOR_TEMPERATURE, TOP_P


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
