"""The layers point one way: core (sequoia_cli) <- stages <- the benchmark and the GPU check <- the
command modules (cli*.py). Read from the source with ast, so a lazy import inside a function counts
as much as one at the top. The decode loop sits below the artifact formats, and model loading below
the loop."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGES = "sequoia_cli.stages"
COMPOSERS = ("bench", "gpu_check")  # they compose the stages, as the Makefile chains them


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
    """'sequoia_cli.stages.bench.harness' -> 'bench'; None for anything outside the stages."""
    parts = module.split(".")
    return parts[2] if module.startswith(STAGES + ".") and len(parts) > 2 else None


def is_command_module(module: str) -> bool:
    """sequoia_cli.cli and the command modules beside it (cli_trees, ...), and their names."""
    return module == "sequoia_cli.cli" or module.startswith(("sequoia_cli.cli.", "sequoia_cli.cli_"))


def layer_faults() -> list[str]:
    faults = []
    for path in sorted((ROOT / "sequoia_cli").rglob("*.py")):
        if not path.name.startswith("cli"):
            faults += [f"{path.relative_to(ROOT)} imports {m}" for m in imported_modules(path)
                       if m == STAGES or m.startswith(STAGES + ".") or is_command_module(m)]
    for path in sorted((ROOT / "stages").rglob("*.py")):
        here = stage_of(".".join(["sequoia_cli", *path.relative_to(ROOT).with_suffix("").parts]))
        if here in COMPOSERS:
            continue
        faults += [f"{path.relative_to(ROOT)} imports {m}" for m in imported_modules(path)
                   if stage_of(m) not in (None, here) or is_command_module(m)]
    return faults


def test_imports_follow_the_layers():
    assert layer_faults() == []


def test_the_check_sees_a_lazy_import_against_the_layers(tmp_path, monkeypatch):
    core = tmp_path / "sequoia_cli"
    core.mkdir()
    (core / "decoder.py").write_text("def f():\n    from sequoia_cli.stages.decode import summarize\n")
    (core / "kv.py").write_text("from sequoia_cli.cli_options import option\n")
    stage = tmp_path / "stages"
    stage.mkdir()
    (stage / "optimize.py").write_text("import sequoia_cli.stages.build_tree\n")
    (stage / "decode.py").write_text("from sequoia_cli import decoder\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    assert sorted(layer_faults()) == ["sequoia_cli/decoder.py imports sequoia_cli.stages.decode",
                                      "sequoia_cli/decoder.py imports sequoia_cli.stages.decode.summarize",
                                      "sequoia_cli/kv.py imports sequoia_cli.cli_options",
                                      "sequoia_cli/kv.py imports sequoia_cli.cli_options.option",
                                      "stages/optimize.py imports sequoia_cli.stages.build_tree"]


def core_closure(module: str) -> set[str]:
    """The core modules `module` imports, directly or through others."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        path = ROOT / Path(*name.split(".")).with_suffix(".py")
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        todo += [m for m in imported_modules(path) if m.startswith("sequoia_cli.")]
    return seen


def test_the_decode_loop_reads_no_artifact_format():
    closure = core_closure("sequoia_cli.decoder")
    assert {"sequoia_cli.verify", "sequoia_cli.dynamic", "sequoia_cli.kv"} <= closure
    assert not closure & {"sequoia_cli.artifacts", "sequoia_cli.schema", "sequoia_cli.acceptance"}
    loaded = subprocess.run([sys.executable, "-c", "import sys, sequoia_cli.decoder; print('pydantic' in sys.modules)"],
                            capture_output=True, text=True, cwd=ROOT, check=True)
    assert loaded.stdout.strip() == "False"


def test_model_loading_sits_below_the_decode_loop():
    for module in ("sequoia_cli.models", "sequoia_cli.loading", "sequoia_cli.kv", "sequoia_cli.devices"):
        assert "sequoia_cli.decoder" not in core_closure(module), module


def test_artifacts_hold_formats_not_statistics():
    imported = imported_modules(ROOT / "sequoia_cli" / "artifacts.py")
    assert not {m for m in imported if m.startswith(("sequoia_cli.acceptance", "sequoia_cli.cost"))}
