"""gpu-check's report: report.json as the check returns it, and report.md's tables (t(n) per engine
and model, t(1), decode's ms per step beside the profile's prediction, optimize's predicted speedups,
and the paper's pair against the official A100 figures)."""

from pathlib import Path

from sequoia_cli.stages.bench.tables import markdown_table
from sequoia_cli.stages.gpu_check import CAPTURE_FAILED, DTYPE

from sequoia_cli.artifacts import timings, write_json, write_text


def write_report(out_dir: str, report: dict) -> Path:
    """report.md and report.json in `out_dir`; report.md's path."""
    folder = Path(out_dir)
    write_json(str(folder / "report.json"), report)
    write_text(str(folder / "report.md"), report_markdown(report))
    return folder / "report.md"


def report_markdown(report: dict) -> str:
    blocks = [f"# GPU check on {report['machine'].get('gpu') or report['machine']['device']}",
              "\n".join(summary_lines(report))]
    blocks += [pair_section(pair, report["shapes"] == "shrunk") for pair in report["pairs"]]
    return "\n\n".join(blocks) + "\n"


def summary_lines(report: dict) -> list[str]:
    m, mode = report["machine"], report["mode"]
    cuda = f" (CUDA {m['cuda']})" if m.get("cuda") else ""
    shapes = ("shrunk for a CPU (`shrunk`: hidden and intermediate sizes / 16, layers / 8, vocabulary 512)"
              if report["shapes"] == "shrunk" else "full")
    return [f"- machine: {m['device']}{', ' + m['gpu'] if m.get('gpu') else ''}; {m['cpu']} ({m['cores']} cores);"
            f" torch {m['torch']}{cuda}, transformers {m['transformers']}, Python {m['python']}; code"
            f" {m['code'] or 'unknown'}, {m['date']}",
            f"- models: random weights, {DTYPE}, shapes {shapes}",
            f"- {mode['name']} mode: profiles up to {mode['max_tokens']} tokens on {report['context_length']} of"
            f" context, {mode['repeats']} rounds; decode greedy from one random prompt of {report['prompt_tokens']}"
            f" tokens, {mode['new_tokens']} new tokens, timed rounds: {mode['rounds']} after one that warms up, the"
            " engines interleaved",
            f"- CUDA graphs: {graphs_line(report)}",
            f"- wall time: {report['seconds']:.1f} s (Python's start and imports not counted)",
            "- what a step accepts means nothing with random weights and is not reported: the speedups are"
            " optimize's predictions from real acceptance vectors (configs/acceptance/) with these timings"]


def graphs_line(report: dict) -> str:
    if "cuda-graphs" not in report["engines"]:
        return "not on this device"
    done = sum(pair["graphs"]["captured"] for pair in report["pairs"])
    forwards = sum(pair["graphs"]["forwards"] for pair in report["pairs"])
    failed = [text for text in report["warnings"] if CAPTURE_FAILED in text]
    return (f"{done} of the {forwards} fixed-shape decode forwards captured; capture warnings: "
            + ("; ".join(f"`{text}`" for text in failed) if failed else "none"))


def pair_section(pair: dict, shrunk_shapes: bool) -> str:
    quantize = f" ({pair['draft_quantize']})" if pair["draft_quantize"] != "none" else ""
    notes = [f"- note: {note}" for note in pair["notes"]]
    notes += [f"- failed: {key}: {failure['error']}" for key, failure in pair["failures"].items()]
    if pair["sequoia"]:
        plan = pair["sequoia"]
        notes.append(f"- sequoia: the tree optimize plans from {plan['acceptance']} with the {plan['profile']}"
                     f" profile (size {plan['size']}, depth {plan['depth']}), timed on every engine")
    blocks = [f"## {pair['pair']}: target {pair['target']}, draft {pair['draft']}{quantize}", "\n".join(notes)]
    profiles = pair["profiles"]
    if profiles:
        blocks += ["### t(n), ms", timing_table(profiles), "### t(1)", first_table(profiles)]
    blocks += ["### Decode, ms per step", step_table(pair["steps"]), "### Predicted speedup", plan_table(pair["plans"])]
    if pair["official"]:
        blocks += ["### Against the official A100 figures (demo-config.json)",
                   *(["Shapes shrunk: these ratios say only that the comparison runs."] if shrunk_shapes else []),
                   official_table(pair["official"], list(profiles))]
    return "\n\n".join(block for block in blocks if block)


def timing_table(profiles: dict[str, dict]) -> str:
    columns = [(role, engine) for role in ("target", "draft") for engine in profiles]
    counts = sorted({count for profile in profiles.values() for count in timings(profile["target"])})
    return markdown_table(["n", *(f"{role} {engine}" for role, engine in columns)],
                          [[str(n), *(ms_text(timings(profiles[engine][role]).get(n)) for role, engine in columns)]
                           for n in counts])


def first_table(profiles: dict[str, dict]) -> str:
    lines = []
    for engine, profile in profiles.items():
        target, draft = timings(profile["target"])[1], timings(profile["draft"])[1]
        lines.append([engine, ms_text(target), ms_text(draft), f"{draft / target:.3f}"])
    return markdown_table(["engine", "target ms", "draft ms", "draft / target"], lines)


def step_table(steps: list[dict]) -> str:
    lines = []
    for row in steps:
        predicted = row["predicted_step_ms"]
        lines.append([row["method"], str(row["size"]), str(row["depth"]), row["engine"], ms_text(row["step_ms"]),
                      ms_text(predicted), f"{row['step_ms'] / predicted:.2f}" if predicted else "-"])
    return markdown_table(["method", "size", "depth", "engine", "ms per step", "predicted ms", "measured / predicted"],
                          lines)


def plan_table(plans: list[dict]) -> str:
    return markdown_table(["acceptance", "profile", "size", "depth", "expected tokens", "step ms", "speedup"],
                          [[row["acceptance"], row["profile"], str(row["size"]), str(row["depth"]),
                            f"{row['expected_tokens']:.2f}", ms_text(row["step_ms"]), f"{row['speedup']:.2f}x"]
                           for row in plans])


def official_table(rows: list[dict], engines: list[str]) -> str:
    header = ["model", "n", "official ms", *(f"{engine} {word}" for engine in engines for word in ("ms", "/ official"))]
    return markdown_table(header, [[row["role"], str(row["count"]), ms_text(row["official_ms"]),
                                    *(text for engine in engines for text in (
                                        ms_text(row["ms"][engine]), f"{row['ms'][engine] / row['official_ms']:.2f}"))]
                                   for row in rows])


def ms_text(ms: float | None) -> str:
    if ms is None:
        return "-"
    return f"{ms:.3f}" if ms < 1 else f"{ms:.2f}"
