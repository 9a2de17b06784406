"""The report's two plots: tokens per step against tree size per family (experiment 1) and against
temperature per verification method (experiment 2), with their intervals as error bars."""

from pathlib import Path

from sequoia_cli.stages.bench.shared import WORKLOADS
from sequoia_cli.stages.bench.step_counts import FAMILIES, ROBUST_METHODS
from sequoia_cli.stages.bench.tables import temperature_name, value

SCALABILITY_PLOT = "scalability.png"
ROBUSTNESS_PLOT = "robustness.png"


def error_bars(points: list[tuple]) -> tuple:
    """(xs, ys, [lower, upper] bar lengths) of (x, y, low, high) points."""
    xs, ys, lows, highs = zip(*points)
    return xs, ys, [[y - lo for y, lo in zip(ys, lows)], [hi - y for y, hi in zip(ys, highs)]]


def measured_points(rows: list[dict], x: str) -> list[tuple]:
    """(x, tokens per step, low, high) of the rows that measured one, sorted by x."""
    return sorted((r[x], r["tokens_per_step"]["value"], r["tokens_per_step"]["low"] or r["tokens_per_step"]["value"],
                   r["tokens_per_step"]["high"] or r["tokens_per_step"]["value"])
                  for r in rows if value(r, "tokens_per_step"))


def pyplot():
    """matplotlib's pyplot on a backend that needs no display."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_scalability(results: dict, folder: Path) -> None:
    """scalability.png: a panel per workload and temperature, a line per tree family."""
    plt, rows, config = pyplot(), results["scalability"], results["config"]
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
    save(plt, figure, folder / SCALABILITY_PLOT)


def plot_robustness(results: dict, folder: Path) -> None:
    """robustness.png: a panel per workload, a line per verification method."""
    plt, rows, size = pyplot(), results["robustness"], results["config"]["robust_size"]
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
    save(plt, figure, folder / ROBUSTNESS_PLOT)


def legend(ax) -> None:
    """The panel's legend, or a note where no cell was measured (an empty legend would warn)."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no cell measured", ha="center", transform=ax.transAxes)


def save(plt, figure, path: Path) -> None:
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
