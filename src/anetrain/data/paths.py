"""Where the data layer keeps generated and downloaded files."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """``$ANETRAIN_CACHE_DIR``, else ``$XDG_CACHE_HOME/anetrain``, else ``~/.cache/anetrain``."""
    env = os.environ.get("ANETRAIN_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "anetrain"
