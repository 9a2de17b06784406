"""The layers point one way: core (sequoia_cli) <- stages <- the benchmark <- cli.py. Read from
the source with ast, so a lazy import inside a function counts as much as one at the top."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def stage_of(module: str) -> str | None:
    """'stages.bench.harness' -> 'bench'; None for anything outside stages/."""
    parts = module.split(".")
    return parts[1] if parts[0] == "stages" and len(parts) > 1 else None


def layer_faults() -> list[str]:
    faults = []
    for path in sorted((ROOT / "sequoia_cli").rglob("*.py")):
        if path.name != "cli.py":
            faults += [f"{path.relative_to(ROOT)} imports {m}" for m in imported_modules(path)
                       if m == "stages" or m.startswith("stages.")]
    for path in sorted((ROOT / "stages").rglob("*.py")):
        here = stage_of(".".join(path.relative_to(ROOT).with_suffix("").parts))
        if here == "bench":  # the benchmark composes the stages, as the Makefile chains them
            continue
        faults += [f"{path.relative_to(ROOT)} imports {m}" for m in imported_modules(path)
                   if stage_of(m) not in (None, here) or m == "sequoia_cli.cli"]
    return faults


def test_imports_follow_the_layers():
    assert layer_faults() == []


def test_the_check_sees_a_lazy_import_against_the_layers(tmp_path, monkeypatch):
    core = tmp_path / "sequoia_cli"
    core.mkdir()
    (core / "engine.py").write_text("def f():\n    from stages.decode import summarize\n")
    stage = tmp_path / "stages"
    stage.mkdir()
    (stage / "optimize.py").write_text("import stages.build_tree\n")
    (stage / "decode.py").write_text("from sequoia_cli import engine\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert sorted(layer_faults()) == ["sequoia_cli/engine.py imports stages.decode",
                                      "sequoia_cli/engine.py imports stages.decode.summarize",
                                      "stages/optimize.py imports stages.build_tree"]


def test_artifacts_hold_formats_not_statistics():
    imported = imported_modules(ROOT / "sequoia_cli" / "artifacts.py")
    assert not {m for m in imported if m.startswith(("sequoia_cli.acceptance", "sequoia_cli.cost"))}
