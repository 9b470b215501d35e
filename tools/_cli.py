"""What the command-line tools share: load the config (and check the checkpoint) with one-line errors."""

from __future__ import annotations

import os
import sys
from typing import Any


def load_cli_config(config: str, overrides: list[str], checkpoint: str | None = None) -> Any | None:
    """The resolved config, or None after printing ``error: <reason>`` to stderr (the tool exits 1)."""
    from video_attn.config import ConfigError, load_config

    try:
        cfg = load_config(config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None
    if checkpoint is not None and not os.path.isfile(checkpoint):
        print(f"error: checkpoint not found: {checkpoint}", file=sys.stderr)
        return None
    return cfg
