"""A wheel built from this tree carries the built-in pairs and the stages inside the one top-level
package of its own: installed without network into a fresh virtual environment (not editable, run
from outside the source tree), it lists the pairs and runs a stage."""

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "sequoia_cli", "stages", "configs")


def run(*command, cwd=None, env=None) -> str:
    done = subprocess.run([str(c) for c in command], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_wheel_installs_offline_and_lists_the_pairs(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
        "-w", tmp_path / "dist", source)
    wheel = next((tmp_path / "dist").glob("sequoia_specdec-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        tops = {name.split("/")[0] for name in archive.namelist() if not name.split("/")[0].endswith(".dist-info")}
    assert tops == {"sequoia_cli"}

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)
    # The dependencies come from this test's environment, read as a plain folder: its own
    # .pth files (the editable install among them) are not processed there.
    fresh_site = run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip()
    Path(fresh_site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {**os.environ, "SEQUOIA_CACHE": str(tmp_path / "cache"), "PYTHONPATH": ""}
    where = run(python, "-c", "from sequoia_cli.pairs import configs_dir; print(configs_dir())",
                cwd=tmp_path, env=env).strip()
    assert where.startswith(fresh_site), where
    stage = run(python, "-c", "import sequoia_cli.stages.optimize as m; print(m.__file__)", cwd=tmp_path, env=env)
    assert stage.startswith(fresh_site), stage
    listed = run(venv / "bin" / "sequoia", "pairs", cwd=tmp_path, env=env)
    assert listed.splitlines() == [f"{name}\ttarget {target}, draft {draft}\tnot fetched"
                                   for name, target, draft in [("qwen2.5-coder", "Qwen2.5-Coder-1.5B-Instruct",
                                                                "Qwen2.5-Coder-0.5B-Instruct")]]
