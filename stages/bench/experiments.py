"""The bench's experiments by number and name. Each entry says what it measures (its title), which
other experiments it reads (4 and 6 read 3's profile, trees and runs), the acceptance vectors it
plans with, how it runs, the weight of its cells for the progress bar, and its part of the report.
`bench`, `total_work`, `check_experiments` and the report all read this one list, so a new
experiment is one entry here and its module.

1. scalability: tokens per step against tree size, per tree family;
2. robustness: tokens per step against temperature at one DP tree, per verification method;
3. wall-clock: tokens/s against Hugging Face `generate`, greedy and sampled;
4. hardware: the optimizer's pick against a sweep of DP trees, greedy, beside the cost model's prediction;
5. dp: the DP's own run time;
6. overhead: the decode loop's time outside the model forwards;
7. offload: the target offloaded (most of its weights on disk), its tree against autoregressive decoding;
8. engines: the device's engines side by side: t(1), Sequoia tokens/s, start-up;
9. spec-bench: Spec-Bench's six subtasks, greedy: tokens per step and speedups in its own terms;
10. dynamic: trees grown per step by the draft's calibrated confidence against the static tree;
11. memory: the peak resident memory of each stage that loads the models.
"""

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sequoia_cli.stages.bench import (
    dynamic_trees,
    engines,
    hardware,
    memory,
    offload,
    plots,
    sections,
    spec_bench,
    step_counts,
    timing,
)
from sequoia_cli.stages.bench.harness import Config
from sequoia_cli.stages.bench.shared import WORKLOADS, Bench, setting_name

from sequoia_cli.errors import BadInput
from sequoia_cli.sampling import Sampling


def no_settings(config: Config) -> list[Sampling]:
    return []


@dataclass(frozen=True)
class Experiment:
    """One experiment: how the command and the report name it, and the functions that run and show it."""

    number: int
    name: str  # as --experiments takes it, beside the number
    title: str  # its heading in report.md
    run: Callable[[Bench], None]  # measures on the workloads into bench.results
    work: Callable[[Config], int]  # the weight its ticks sum to
    section: Callable[[dict], str]  # its part of report.md, from bench.json's results
    settings: Callable[[Config], list[Sampling]] = no_settings  # the acceptance vectors it plans with
    needs: tuple[int, ...] = ()  # the experiments whose results it reads: they run before it
    reads: str = ""  # what it reads of them, in the message that refuses it without them
    plot: Callable[[dict, Path], None] | None = None  # writes its figure beside report.md


EXPERIMENTS = (
    Experiment(1, "scalability", "Scalability: tokens per step against tree size", step_counts.run_scalability,
               step_counts.scalability_work, sections.scalability_section, step_counts.scalability_settings,
               plot=plots.plot_scalability),
    Experiment(2, "robustness", "Robustness: tokens per step against temperature", step_counts.run_robustness,
               step_counts.robustness_work, sections.robustness_section, step_counts.robustness_settings,
               plot=plots.plot_robustness),
    Experiment(3, "wall-clock", "Wall clock", timing.run_wall_clock, timing.wall_clock_work,
               sections.wall_clock_section, timing.wall_clock_settings),
    Experiment(4, "hardware", "Hardware awareness, greedy", hardware.run_hardware, hardware.hardware_work,
               sections.hardware_section, needs=(3,), reads="3's profile and trees"),
    Experiment(5, "dp", "The DP itself", timing.run_dp, lambda config: 1, sections.dp_section),
    Experiment(6, "overhead", "Loop overhead", timing.run_overhead, lambda config: 0, sections.overhead_section,
               needs=(3,), reads="3's runs"),
    Experiment(7, "offload", "Offloaded target", offload.run_offload, offload.offload_work,
               sections.offloaded_section, offload.offload_settings),
    Experiment(8, "engines", "Engines", engines.run_engines, engines.engines_work, engines.engines_section,
               engines.engines_settings),
    Experiment(9, "spec-bench", "Spec-Bench", spec_bench.run_spec_bench, spec_bench.spec_bench_work,
               spec_bench.spec_bench_section),
    Experiment(10, "dynamic", "Dynamic trees", dynamic_trees.run_dynamic, dynamic_trees.dynamic_work,
               dynamic_trees.dynamic_section),
    Experiment(11, "memory", "Memory", memory.run_memory, memory.memory_work, memory.memory_section),
)
BY_NUMBER = {experiment.number: experiment for experiment in EXPERIMENTS}
BY_NAME = {experiment.name: experiment for experiment in EXPERIMENTS}


def listing() -> str:
    return ", ".join(f"{e.number} {e.name}" for e in EXPERIMENTS)


def experiments_of(text: str) -> tuple[int, ...]:
    """The experiments `text` names by number or name, mixed, separated by commas ("wall-clock,hardware",
    "3,4,6", "3,hardware"): their numbers, sorted and checked (`check_experiments`)."""
    chosen = []
    for part in (part.strip() for part in text.split(",")):
        if part.isdigit() and int(part) in BY_NUMBER:
            chosen.append(int(part))
        elif part.lower() in BY_NAME:
            chosen.append(BY_NAME[part.lower()].number)
        else:
            raise BadInput(f"experiments '{text}': no experiment '{part}'; give numbers or names separated by"
                           f" commas, among {listing()}", "experiments")
    return check_experiments(tuple(chosen))


def check_experiments(chosen: tuple) -> tuple[int, ...]:
    """The experiment numbers to run, sorted; each needs the experiments it reads in the same run."""
    unknown = set(chosen) - set(BY_NUMBER)
    if unknown or not chosen:
        missing = f"no experiment {', '.join(map(str, sorted(unknown, key=str)))}; " if unknown else ""
        raise BadInput(f"experiments '{','.join(map(str, chosen))}': {missing}choose among {listing()}",
                       "experiments")
    for need in sorted({need for number in chosen for need in BY_NUMBER[number].needs} - set(chosen)):
        readers = [e for e in EXPERIMENTS if need in e.needs]
        raise BadInput(f"experiments: {' and '.join(str(e.number) for e in readers)} need {need}"
                       f" ({BY_NUMBER[need].name}) in the same run: "
                       + ", ".join(f"{e.number} ({e.name}) reads {e.reads}" for e in readers), "experiments")
    return tuple(sorted(set(chosen)))


def chosen_experiments(config: Config) -> list[Experiment]:
    """The config's experiments in number order, which runs each after those it reads."""
    return [BY_NUMBER[number] for number in sorted(config.experiments)]


def vector_settings(config: Config) -> dict[str, Sampling]:
    """Every setting an acceptance vector is measured at for the chosen experiments, by name, greedy
    first and then by temperature."""
    wanted = [sampling for experiment in chosen_experiments(config) for sampling in experiment.settings(config)]
    return {setting_name(s): s for s in sorted(wanted, key=lambda s: (s.temperature, s.top_p))}


def total_work(config: Config) -> int:
    """The sum of the weights `bench` ticks, for a progress bar: the vectors' and each experiment's."""
    vectors = len(WORKLOADS) * len(vector_settings(config)) * config.acceptance_prompts * config.continuation
    return vectors + sum(experiment.work(config) for experiment in chosen_experiments(config))
