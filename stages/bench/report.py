"""The bench's report: report.md (how the run was set up, then each chosen experiment's section,
every table from the run's rows, nothing entered by hand), bench.json (every row) and the plots.
An interval is the 95% bootstrap interval over the prompts; one reaching past +-5% of its value is
marked "wide"."""

from pathlib import Path

from sequoia_cli.stages.bench.experiments import BY_NUMBER, EXPERIMENTS
from sequoia_cli.stages.profile_hw import STEADY, steady

from sequoia_cli.artifacts import write_json, write_text


def run_line(results: dict) -> str:
    config = results["config"]
    chosen = config["experiments"]
    return (f"- run: `{config['name']}` mode, seed {results['seed']}, {results['seconds'] / 60:.1f} minutes"
            + (" (resumed: earlier cells reused)" if results["resumed"] else "")
            + ("" if len(chosen) == len(EXPERIMENTS) else f"; experiments {', '.join(map(str, chosen))} only"))


def machine_lines(results: dict) -> list[str]:
    m, models, load = results["machine"], results["models"], results["load_average"]
    return [f"- models: target `{models.get('target', '?')}`, draft `{models.get('draft', '?')}`",
            f"- machine: {m['cpu']} ({m['cores']} cores), {m.get('gpu', 'no GPU')}; device {m['device']},"
            f" dtype {m['dtype']}, engine {m.get('engine', 'eager')}, torch threads {m['threads']}; load average"
            " (1, 5, 15 min) at start"
            f" {load['start']}, at end {load['end']}",
            f"- versions: torch {m['torch']}, transformers {m['transformers']}, Python {m['python']},"
            f" {m['platform']}, code {m['code'] or 'unknown'}; {m['date']}"]


def prompt_lines(results: dict) -> list[str]:
    """Which prompts each workload decodes and measures its vectors on, and how every block decodes them."""
    c = results["config"]
    lines = [f"- {workload}: built-in set, chat template {'on' if p['chat_template'] else 'off'}; decoded"
             f" prompts {p['decode']} ({', '.join(map(str, p['decode_prompt_tokens']))} prompt tokens;"
             f" experiment 3 decodes the first {c['prompts']}), acceptance vectors on prompts {p['acceptance']}"
             for workload, p in results["prompts"].items()]
    scale = ", ".join(f"{t} at size {n}" for n, t in zip(c["sizes"], c["scale_tokens"]))
    return lines + [
        f"- tokens per prompt: {c['new_tokens']} in experiments 3 and 6 ({c['prompts']} prompts per workload),"
        f" {c['sweep_tokens']} in 4 ({c['sweep_prompts']} prompts), in 1 {scale}, in 2 {c['robust_tokens']}"
        f" (both on the first {c['scale_prompts']}); generation stops at EOS ({results['eos']}) or there, the"
        " same for every method; each prompt has its own random stream (seed, prompt index), the same for"
        " every method",
        f"- acceptance vectors: {c['continuation']} tokens of the target's own continuation per prompt,"
        f" width {c['width']}",
        "- every block runs its methods on one prompt back to back, in an order rotated by one per prompt;"
        f" intervals: 95% percentile bootstrap over the prompts ({c['resamples']} resamples)"]


def vector_lines(results: dict) -> list[str]:
    lines = []
    for vector in results["vectors"]:
        shown = ", ".join(f"{a:.3f}" for a in vector.get("acceptance", [])[:6])
        state = vector.get("error") or (f"[{shown}, ...], none accepted {vector['rejected_all']:.3f},"
                                        f" {vector['samples']} positions")
        lines.append(f"- acceptance, {vector['workload']} at {vector['setting']}: {state}")
    return lines


def profile_lines(profile: dict) -> list[str]:
    """Experiment 3's profile, and its target's t(1) by round, marked where the rounds disagree."""
    if "error" in profile:
        return [f"- profile: {profile['error']}"]
    lines = [f"- profile ({role}, KV cache of {profile['context_length']} tokens, {profile['repeats']} interleaved"
             " rounds): " + ", ".join(f"{n}: {t:.1f}" for n, t in profile[role]["ms"].items()) + " ms"
             for role in ("target", "draft")]
    if "target_t1_by_round" in profile:
        rounds = profile["target_t1_by_round"]
        unsteady = "" if steady(rounds) else f" (unsteady: rounds more than {100 * STEADY:.0f}% apart)"
        lines.append("- profile's target t(1) by round: " + ", ".join(f"{t:.1f}" for t in rounds) + " ms" + unsteady)
    return lines


def plan_lines(plans: dict) -> list[str]:
    return [f"- optimizer's tree, {workload} {setting}: " + (
        plan["error"] if "error" in plan else f"size {plan['plan']['size']}, depth {plan['plan']['depth']},"
        f" predicted {plan['plan']['speedup']:.2f}x over autoregressive")
        for workload, by_setting in plans.items() for setting, plan in by_setting.items()]


def setup_section(results: dict) -> str:
    """How the run was set up: mode, models, machine, prompts, vectors, profile and the optimizer's trees."""
    return "\n".join([run_line(results)] + machine_lines(results) + prompt_lines(results) + vector_lines(results)
                     + profile_lines(results["profile"]) + plan_lines(results["plans"]))


def write_report(out_dir: str, results: dict) -> Path:
    """report.md, the chosen experiments' plots and bench.json (every row) in `out_dir`; report.md's path."""
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    chosen = [BY_NUMBER[number] for number in results["config"]["experiments"]]
    for experiment in chosen:
        if experiment.plot:
            experiment.plot(results, folder)
    write_json(str(folder / "bench.json"), results)
    parts = ["# sequoia bench", setup_section(results)]
    parts += [f"## {e.number}. {e.title}\n\n{e.section(results)}" for e in chosen]
    report = folder / "report.md"
    write_text(str(report), "\n\n".join(parts) + "\n")
    return report
