"""What does not fit a run, one line each: a tree measured at another sampling setting or on other
models, a tree wider than its vector, a profile taken on a machine that changed state, a vector
measured on too few positions, sizes capped by the profile. The commands print them as warnings
on stderr, or with --strict stop on the first one, before anything is written."""

import math

from sequoia_cli.tree import ranks

# a_1's standard error past which a vector is too thin to plan by: it moves a chain's expected
# tokens by several percent.
THIN_STDERR = 0.02


def setting_mismatch(source: dict | None, temperature: float, top_p: float) -> list[str]:
    """The run's sampling against the setting the tree's vector was measured at (`source`)."""
    if not source or source.get("mode") not in ("greedy", "stochastic"):
        return []
    measured = (0.0, 1.0) if source["mode"] == "greedy" else (
        float(source.get("temperature") or 1.0), float(source.get("top_p") or 1.0))
    if all(math.isclose(a, b, abs_tol=1e-9) for a, b in zip(measured, (temperature, top_p))):
        return []
    flags = "--greedy" if temperature == 0 else f"--temperature {temperature:g} --top-p {top_p:g}"
    return [f"the tree's vector was measured {setting_words(*measured)}; this run decodes"
            f" {setting_words(temperature, top_p)}: the tree and its predicted tokens per step are for another setting"
            f" (measure-acceptance {flags})"]


def setting_words(temperature: float, top_p: float) -> str:
    return "greedy" if temperature == 0 else f"at temperature {temperature:g}, top-p {top_p:g}"


def model_mismatch(source: dict | None, draft: str | None, target: str) -> list[str]:
    """The run's models against those the tree's vector was measured on."""
    if not source or not source.get("target"):
        return []
    measured = {"draft": source.get("draft"), "target": source["target"]}
    running = {"draft": draft, "target": target}
    differ = [role for role in ("draft", "target")
              if measured[role] and running[role] and measured[role] != running[role]]
    return [f"the tree's vector was measured with {role} {measured[role]}; this run's {role} is {running[role]}:"
            " its acceptance may differ (measure-acceptance with this run's models)" for role in differ]


def width_mismatch(parents: list[int], vector: list[float] | None) -> list[str]:
    """A tree whose nodes have more children than its vector has entries: those children's
    acceptance was never measured, and the tree's predictions count them as never accepted."""
    widest = max(ranks(parents))
    if not vector or widest <= len(vector):
        return []
    return [f"the tree has nodes with {widest} children but its vector has {len(vector)} entries: children past"
            f" the {len(vector)}th count as never accepted (measure-acceptance --width {widest})"]


def unsteady_profile(profile: dict) -> list[str]:
    """A profile whose rounds found the machine in different states."""
    if profile.get("steady", True):
        return []
    by_round = profile.get("target_t1_by_round") or []
    spread = f" (target t(1) read {min(by_round):.1f} to {max(by_round):.1f} ms by round)" if by_round else ""
    return [f"the profile is marked unsteady{spread}: the machine changed state while it ran, so its curves' shape is"
            " unsure; profile-hw again on an idle machine (more --repeats tell a spell apart)"]


def thin_vector(acceptance: dict) -> list[str]:
    """A vector whose first entry's standard error is above THIN_STDERR, with the prompts that would
    bring it under (at the positions per prompt it had)."""
    stderr, samples = (acceptance.get("stderr") or [0.0])[0], acceptance.get("samples")
    if stderr <= THIN_STDERR or not samples:
        return []
    first = acceptance["acceptance"][0]
    positions = math.ceil(first * (1 - first) / THIN_STDERR**2)
    prompts = acceptance.get("prompts")
    more = f"about {math.ceil(positions / (samples / prompts))} prompts" if prompts else f"about {positions} positions"
    return [f"the vector's a_1 {first:.3f} has a standard error of {stderr:.3f} from {samples} positions: {more} would"
            f" bring it under {THIN_STDERR} (measure-acceptance --max-prompts, --continuation-tokens)"]


def profile_cap(plan: dict, largest: int, max_size: int | None) -> list[str]:
    """The profile's largest count capping the sizes weighed where the chosen tree reached it."""
    if max_size is not None or plan["size"] < largest:
        return []
    return [f"the sizes weighed stop at {largest} tokens, the profile's largest count, and the chosen tree has that"
            f" size: a larger tree may be faster (profile-hw --max-tokens {2 * largest})"]
