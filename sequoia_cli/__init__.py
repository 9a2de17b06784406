"""sequoia: Sequoia speculative decoding (Chen et al., 2024) as a command-line toolchain."""

from pathlib import Path

__version__ = "0.1.0"

# The stages are installed as this package's `stages` (pyproject's package-dir); in a source
# checkout they are the top-level stages/ folder, importable under the same name from here.
_SOURCE_ROOT = Path(__file__).resolve().parent.parent
if not (Path(__file__).resolve().parent / "stages").is_dir() and (_SOURCE_ROOT / "stages" / "__init__.py").is_file():
    __path__.append(str(_SOURCE_ROOT))
