"""sequoia: Sequoia speculative decoding (Chen et al., 2024) as a command-line toolchain."""

__version__ = "0.1.0"
