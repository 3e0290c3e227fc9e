"""``--plot FILE.png``: draw a suite's :class:`PlotSpec` with matplotlib (optional extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anetrain.bench.result import PlotSpec
from anetrain.errors import AnetrainError


class PlotUnavailable(AnetrainError):
    """matplotlib is not installed."""


def require_matplotlib() -> Any:
    """The pyplot module (Agg backend), or a clear error naming the extra to install."""
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed: pip install 'anetrain[plot]' "
            "(or pip install matplotlib)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def draw(spec: PlotSpec, path: str | Path, labels: list[str] | None = None) -> Path:
    """Write ``spec`` to ``path`` (PNG, or any format matplotlib infers from the suffix)."""
    plt = require_matplotlib()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    try:
        if spec.bars and spec.series:
            s = spec.series[0]
            ax.bar(s.x, s.y, label=s.label)
            if labels:
                ax.set_xticks(s.x, labels, rotation=30, ha="right")
        else:
            for s in spec.series:
                order = sorted(range(len(s.x)), key=lambda i: s.x[i])  # lines run left to right
                ax.plot([s.x[i] for i in order], [s.y[i] for i in order], s.style, label=s.label)
        if spec.vline is not None:
            x, label = spec.vline
            ax.axvline(x, linestyle="--", color="gray", label=label)
        if spec.logx:
            ax.set_xscale("log")
        ax.set_title(spec.title)
        ax.set_xlabel(spec.xlabel)
        ax.set_ylabel(spec.ylabel)
        ax.grid(True, alpha=0.3)
        if spec.series or spec.vline:
            ax.legend()
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out
