"""Everything the `sequoia` command shows a person: the stderr console, progress bars, tables,
the tree drawing and the streamed text. Stages return data; this module draws it."""

import sys
import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.tree import Tree

from sequoia_cli.tree import path_probabilities, ranks

console = Console(stderr=True)
LINE_SECONDS = 2.0  # a progress line at most this often where stderr is not a terminal


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console)


class Bars:
    """Progress that appears with its first task, so that an error found before any work starts
    prints alone: live bars on a terminal, plain lines elsewhere (a log, a pipe, CI), at most one
    every LINE_SECONDS per task and its last. `task(description, total)` returns
    `advance(weight=1, label=None)`. On leaving, the wall time since entering and the process's
    peak resident memory."""

    def __init__(self):
        self.progress: Progress | None = None
        self.started = time.perf_counter()

    def __enter__(self) -> "Bars":
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
        if exc[0] is None:
            console.print(f"wall time {elapsed(time.perf_counter() - self.started)}, peak memory {peak_memory()}")

    def task(self, description: str, total: float):
        if not console.is_terminal:
            return self._lines(description, total)
        if self.progress is None:
            self.progress = progress_bar()
            self.progress.start()
        progress, task = self.progress, self.progress.add_task(description, total=total)

        def advance(weight: float = 1, label: str | None = None) -> None:
            progress.update(task, advance=weight, **({"description": label} if label else {}))

        return advance

    def _lines(self, description: str, total: float):
        done, shown, current = 0.0, 0.0, description
        console.print(f"{description}: 0/{total:g}", highlight=False)

        def advance(weight: float = 1, label: str | None = None) -> None:
            nonlocal done, shown, current
            done, current, now = done + weight, label or current, time.perf_counter()
            if now - shown >= LINE_SECONDS or done >= total:
                shown = now
                console.print(f"{current}: {done:g}/{total:g} ({elapsed(now - self.started)})", highlight=False)

        return advance


def peak_memory() -> str:
    """The most memory this process has held resident so far, in words."""
    kilobytes = peak_kilobytes()
    return f"{kilobytes / 2**20:.2f} GiB" if kilobytes >= 2**20 else f"{kilobytes / 2**10:.0f} MiB"


def peak_kilobytes() -> int:
    """This program's resident high-water mark: Linux's VmHWM, which starts afresh with the program.
    getrusage's ru_maxrss (the fallback elsewhere) keeps, across exec, that of the process it was
    forked from: a stage started by a bench or a test holding models would report theirs."""
    return status_kilobytes("VmHWM")


def status_kilobytes(field: str) -> int:
    """A memory field of /proc/self/status (VmHWM, VmRSS) in kilobytes; where there is none, the
    process's peak as getrusage reports it."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))
    except (OSError, StopIteration):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux, bytes on macOS


def elapsed(seconds: float) -> str:
    """A wall time as a person reads it: 42.0 s, 3 min 20 s."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def error_line(message: str) -> None:
    console.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)


def acceptance_summary(acceptance: dict, out: str) -> None:
    shown = ", ".join(f"{a:.3f}" for a in acceptance["acceptance"])
    outside = (f"; {100 * acceptance['outside_draft_vocab']:.2f}% of the target's tokens outside the draft's"
               " vocabulary" if (acceptance.get("draft_setup") or {}).get("vocab") is not None
               and "outside_draft_vocab" in acceptance else "")
    console.print(f"{acceptance['samples']} positions, {acceptance['mode']}: acceptance [{shown}], "
                  f"none accepted {acceptance['rejected_all']:.3f}{outside} -> {out}")


def tree_summary(tree: dict, out: str) -> None:
    console.print(f"tree of size {tree['size']}, depth {tree['depth']}: "
                  f"{tree['expected_tokens']:.3f} expected tokens per step -> {out}")


def profile_summary(profile: dict, out: str) -> None:
    for role in ("target", "draft"):
        if role in profile:
            console.print(f"{role}: " + ", ".join(f"{n}: {t:.1f} ms" for n, t in profile[role]["ms"].items()))
    if profile.get("steady") is False:
        by_round = profile["target_t1_by_round"]
        console.print(f"[yellow]unsteady machine: the target's t(1) read {min(by_round):.1f} to {max(by_round):.1f} ms"
                      " by round, and a slowed machine times small counts slower than large ones, so the shape"
                      " depends on the rounds it slowed: profile again when the machine is idle[/]")
    console.print(f"-> {out}")


def plan_table(tree: dict, out: str, show: int) -> None:
    plan = tree["plan"]
    grid = Table(title=f"best of {len(plan['candidates'])} candidates "
                       f"({plan['device']}, {plan['dtype']};"
                       f" autoregressive {plan['autoregressive_ms_per_token']:.1f} ms/token)")
    for column in ("size", "depth", "expected tokens", "step ms", "ms/token", "speedup"):
        grid.add_column(column, justify="right")
    for c in plan["candidates"][:show]:
        grid.add_row(str(c["size"]), str(c["depth"]), f"{c['expected_tokens']:.3f}", f"{c['step_ms']:.1f}",
                     f"{c['ms_per_token']:.1f}", f"{c['speedup']:.2f}x")
    console.print(grid)
    if not plan["draft_counted"]:
        console.print("[yellow]the profile has no draft timings: the draft was counted as free[/]")
    console.print(f"chosen: size {plan['size']}, depth {plan['depth']}, predicted speedup "
                  f"{plan['speedup']:.2f}x over autoregressive -> {out}")
    if tree.get("dynamic"):
        dynamic = tree["dynamic"]
        console.print(f"dynamic trees: up to {dynamic['widths']} nodes per level, {dynamic['children']} children"
                      f" drawn per node, a token worth {dynamic['token_ms']:.1f} ms")
        predicted = dynamic.get("prediction")
        if predicted:
            console.print(f"dynamic trees predicted: {predicted['tokens_per_step']:.2f} tokens and"
                          f" {predicted['draft_forwards_per_step']:.2f} draft forwards per step"
                          f" ({predicted['undrafted_share']:.0%} of steps draft nothing),"
                          f" {predicted['ms_per_token']:.1f}"
                          f" ms per token, {predicted['speedup']:.2f}x over autoregressive")
        if dynamic.get("fallback"):
            console.print("[yellow]grown trees are predicted slower than the static tree: decode --method dynamic"
                          " runs the static tree[/]")


def tree_drawing(tree: dict) -> None:
    """The tree on standard output, each node with its rank and the chance that it is reached."""
    parents = tree["parents"]
    planned = tree.get("acceptance_by_level") if tree.get("planned_by") == "level" else tree.get("acceptance")
    reach = path_probabilities(parents, planned) if planned else None
    node_ranks = ranks(parents)
    expected = f", {tree['expected_tokens']:.3f} expected tokens" if "expected_tokens" in tree else ""
    labels = [Tree(f"root (size {tree['size']}, depth {tree['depth']}{expected})")]
    for i in range(1, len(parents)):
        label = f"{i}: child {node_ranks[i]}" + (f"  p={reach[i]:.4f}" if reach else "")
        labels.append(labels[parents[i]].add(label))
    Console().print(labels[0])


def stats_table(stats: dict) -> None:
    grid = Table(show_header=False, box=None)
    grid.add_row("tokens", f"{stats['tokens']} in {stats['seconds']:.2f} s = {stats['tokens_per_second']:.2f} tokens/s")
    grid.add_row("without prefill", f"{stats['step_tokens_per_second']:.2f} tokens/s (the prompts' prefill took"
                                    f" {stats['prefill_seconds']:.2f} s)")
    grid.add_row("target forwards", str(stats["target_forwards"]))
    per_step = (f" ({stats['draft_forwards_per_step']:.2f} per step; {stats['undrafted_share']:.0%} of steps drafted"
                " nothing)" if "undrafted_share" in stats else "")
    grid.add_row("draft forwards", f"{stats['draft_forwards']}{per_step}")
    shown = [f"{name} {stats[key]:.3f}" for name, key in (("positional", "predicted_positional"),
                                                          ("by level", "predicted_by_level")) if key in stats]
    predicted = f" (predicted: {', '.join(shown)})" if shown else ""
    grid.add_row("tokens per step", f"{stats['mean_accepted']:.3f} kept ({stats['mean_step_tokens']:.3f} accepted:"
                                    f" a step's last tokens past EOS or the budget are dropped){predicted}")
    console.print(grid)


def compare_table(paths: list[str], runs: list[dict]) -> None:
    """Speeds of decode runs and their ratio to the last one, on standard output."""
    baseline = runs[-1]["tokens_per_second"]
    grid = Table()
    methods = [run.get("method", "?") for run in runs]
    for column in ("stats file", "method", "tokens/s", "tokens per step, measured", "tokens per step, predicted",
                   "speed vs the last"):
        # A method's name is never cut; a long path folds onto more lines.
        width = max(map(len, methods)) if column == "method" else None
        grid.add_column(column, justify="right", overflow="fold", min_width=width, no_wrap=column == "method")
    for path, run in zip(paths, runs):
        predicted = run.get("expected_tokens")
        grid.add_row(path, run.get("method", "?"), f"{run['tokens_per_second']:.2f}", f"{run['mean_accepted']:.3f}",
                     f"{predicted:.3f}" if predicted else "-",
                     f"{run['tokens_per_second'] / baseline:.2f}x" if baseline else "-")
    Console().print(grid)


def text_streamer(tokenizer):
    """A callback that prints newly accepted tokens as text on standard output (decoding the whole
    output each time, since a token's text can depend on its neighbours)."""
    ids, shown = [], [0]

    def stream(new: list[int]) -> None:
        ids.extend(new)
        text = tokenizer.decode(ids, skip_special_tokens=True)
        sys.stdout.write(text[shown[0]:])
        sys.stdout.flush()
        shown[0] = len(text)

    return stream
