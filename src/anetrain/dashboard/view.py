"""The dashboard's rich layout: one :func:`frame` per refresh, built from a :class:`RunState`.

Regions, top to bottom: the run header with progress; the loss chart beside the current
numbers; the per-phase time breakdown; the Efficiency Report and sample once ``summary.json``
exists; a one-line status footer.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.align import Align
from rich.columns import Columns
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.layout import Layout
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from anetrain.dashboard import format as fmt
from anetrain.dashboard.chart import VAL_MARK, bar_cells, hbar, loss_chart, sparkline
from anetrain.dashboard.state import PhaseShare, RunState

PHASE_STYLES = {
    "kernels": "green",
    "io": "yellow",
    "classifier": "magenta",
    "elementwise": "cyan",
    "rmsnorm": "blue",
    "blas_wait": "red",
    "other": "grey50",
}
TRAIN_STYLE = "cyan"
VAL_STYLE = "bold magenta"
STATS_WIDTH = 38
REPORT_WIDTH = 66
TREND = STATS_WIDTH - 17  # steps in the stats panel's sparklines (what fits beside the labels)
HEADER_SIZE = 6
MIN_BODY = 8  # loss chart region rows (border and step axis included) worth keeping
TINY_BODY = 5  # the least a finished run's chart gets before it gives way to the report
ONCE_BODY = 16  # loss chart region height for --once


@dataclass
class Options:
    """How to draw: the chart window (steps), the refresh interval shown in the footer, and
    the seconds until the dashboard closes (``None`` while following)."""

    window: int = 400
    refresh: float | None = None
    closing_in: float | None = None


def frame(
    state: RunState,
    console: Console,
    now: float,
    opts: Options,
    height: int | None = None,
) -> tuple[Layout, int]:
    """The whole screen as a Layout, and the height it needs. With ``height`` (a live screen)
    the loss chart takes what the other regions leave. When they do not fit, the phase
    breakdown goes first; once the run has finished, the chart shrinks to a few rows or goes,
    then the sample."""
    width = console.width
    phases = _phases_panel(state, compact=height is not None and height < 36)
    parts: list[tuple[str, RenderableType, int]] = []  # name, region, rows
    if state.summary is None:
        parts.append(("phases", phases, _measure(console, phases, width)))
    else:
        report = _report_panel(state.summary)
        if width >= 110:  # side by side
            left = width - REPORT_WIDTH
            tall = max(_measure(console, phases, left), _measure(console, report, REPORT_WIDTH))
            row = Layout(name="bottom")
            row.split_row(Layout(phases, name="phases"), Layout(report, size=REPORT_WIDTH))
            parts.append(("report", row, tall))
        else:
            parts.append(("phases", phases, _measure(console, phases, width)))
            parts.append(("report", report, _measure(console, report, width)))
        sample = state.summary.get("sample")
        if isinstance(sample, str) and sample:
            panel = Panel(Text(sample), title="Sample", title_align="left", border_style="green")
            parts.append(("sample", panel, _measure(console, panel, width)))

    def fixed() -> int:
        return HEADER_SIZE + 1 + sum(rows for _, _, rows in parts)

    show_body, body_size = True, ONCE_BODY
    if height is not None:
        if fixed() + MIN_BODY > height:
            parts = [part for part in parts if part[0] != "phases"]
        if state.summary is not None and fixed() + MIN_BODY > height:
            show_body = height - fixed() >= TINY_BODY
            if not show_body and fixed() > height:
                parts = [part for part in parts if part[0] != "sample"]
        body_size = max(height - fixed(), MIN_BODY if state.summary is None else TINY_BODY)
    regions = [Layout(_header_panel(state, now), name="header", size=HEADER_SIZE)]
    if show_body:
        regions.append(_body(state, opts, body_size))
    for name, region, rows in parts:
        if isinstance(region, Layout):
            region.size = rows
            regions.append(region)
        else:
            regions.append(Layout(region, name=name, size=rows))
    regions.append(Layout(_footer(state, now, opts), name="footer", size=1))
    root = Layout(name="root")
    root.split_column(*regions)
    return root, fixed() + show_body * body_size


def _measure(console: Console, renderable: RenderableType, width: int) -> int:
    return len(console.render_lines(renderable, console.options.update_width(width), pad=False))


# ---- header --------------------------------------------------------------------------------


def _header_panel(state: RunState, now: float) -> Panel:
    cfg = state.config or {}
    model = cfg.get("model") if isinstance(cfg.get("model"), dict) else {}
    train = cfg.get("train") if isinstance(cfg.get("train"), dict) else {}
    top = Table.grid(expand=True, padding=(0, 1))
    top.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
    top.add_column(justify="right", no_wrap=True)
    top.add_row(Text(str(state.run_dir), style="bold"), _status(state))
    if model:
        lines = [_model_line(model), *_lora_line(cfg.get("lora")), _train_line(state, cfg, train)]
    else:
        lines = [Text("waiting for config.json (written once the kernels compile)", style="dim")]
    for line in lines:
        line.no_wrap, line.overflow = True, "ellipsis"
    return Panel(
        Group(top, *lines, _progress(state)),
        title="[bold]anetrain dashboard[/]",
        title_align="left",
        border_style="blue",
    )


def _status(state: RunState) -> Text:
    if state.summary is not None:
        if state.summary.get("interrupted"):
            return Text("■ interrupted", style="bold yellow")
        return Text("✔ finished", style="bold green")
    if not state.steps:
        return Text("… waiting for metrics", style="bold yellow")
    return Text("● training", style="bold cyan")


def _model_line(model: dict[str, Any]) -> Text:
    parts = [
        f"dim {model.get('dim')}",
        _plural(model.get("n_layers"), "layer"),
        _plural(model.get("n_heads"), "head")
        + (
            f" ({model['n_kv_heads']} kv)"
            if model.get("n_kv_heads") not in (None, 0, model.get("n_heads"))
            else ""
        ),
        f"hidden {model.get('hidden_dim')}",
        f"vocab {model.get('vocab_size')}",
        f"seq {model.get('seq_len')}",
    ]
    params = _n_params(model)
    if params is not None:
        parts.append(f"{fmt.millions(params)} params")
    return Text(" · ".join(parts))


def _lora_line(lora: Any) -> list[Text]:
    """A LoRA run's adapter settings (config.json's ``lora``), else nothing."""
    if not (isinstance(lora, dict) and isinstance(lora.get("config"), dict)):
        return []
    c = lora["config"]
    targets = ",".join(map(str, c.get("targets") or []))
    dropout = f" dropout {c['dropout']}" if c.get("dropout") else ""
    text = f"LoRA r{c.get('rank')} alpha {c.get('alpha')}{dropout} on {targets} · base frozen"
    return [Text(text)]


def _plural(n: Any, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _n_params(model: dict[str, Any]) -> int | None:
    from anetrain.model.config import ConfigError, from_dict

    try:
        return from_dict(model).n_params
    except (ConfigError, KeyError, TypeError, ValueError):
        return None


def _train_line(state: RunState, cfg: dict[str, Any], train: dict[str, Any]) -> Text:
    summary = state.summary or {}
    backend = summary.get("backend") or train.get("backend") or "?"
    chip = summary.get("chip") or train.get("chip")
    parts = [f"{backend} ({chip})" if chip else str(backend)]
    if train:
        parts.append(
            f"accum {train.get('accum')} · lr {train.get('lr')} · warmup {train.get('warmup')}"
        )
    if cfg.get("data"):
        parts.append(f"data {Path(str(cfg['data'])).name}")
    if cfg.get("tokenizer"):
        parts.append(f"tokenizer {Path(str(cfg['tokenizer'])).name}")
    return Text(" · ".join(parts), style="dim")


def _progress(state: RunState) -> Table:
    total, last = state.total_steps, state.last
    done = last.step if last else 0
    grid = Table.grid(expand=True, padding=(0, 1))
    grid.add_column(ratio=1)
    grid.add_column(justify="right", no_wrap=True)
    bar = ProgressBar(total=total or None, completed=min(done, total or done), pulse=total is None)
    text = f"step {done}" + (f"/{total} ({100 * done / total:.0f}%)" if total else "")
    if state.summary is not None:
        text += f" · wall {fmt.duration(_get(state.summary, 'wall_s'))}"
    elif state.steps:
        text += f" · ETA {fmt.duration(state.eta_s)}"
    if state.steps:
        text += f" · train {fmt.duration(state.train_s)}"
    grid.add_row(bar, Text(text, style="bold"))
    return grid


# ---- body: loss chart + numbers ------------------------------------------------------------


def _body(state: RunState, opts: Options, size: int) -> Layout:
    body = Layout(name="body", size=size)
    if not state.steps:
        waiting = Text.assemble(
            ("Waiting for metrics…\n\n", "bold yellow"),
            (
                "metrics.jsonl has no steps yet. The trainer writes one line per optimizer step, "
                "after compiling its kernels.",
                "dim",
            ),
            justify="center",
        )
        body.update(
            Panel(
                Align.center(waiting, vertical="middle"),
                title="Loss",
                title_align="left",
                border_style="yellow",
            )
        )
        return body
    body.split_row(
        Layout(_loss_panel(state, opts.window), name="chart"),
        Layout(_stats_panel(state), name="stats", size=STATS_WIDTH),
    )
    return body


class LossChartView:
    """The loss chart, sized to the space rich gives it (y labels left, step axis below)."""

    def __init__(self, state: RunState, window: int) -> None:
        self.state = state
        self.window = window

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = (options.height or 10) - 1  # one row for the step axis
        label_w = 8
        width = options.max_width - label_w - 1
        first, last = chart_range(self.state, self.window)
        steps = self.state.steps
        start = bisect.bisect_left(steps, first, key=lambda p: p.step)
        chart = loss_chart(
            [(p.step, p.loss) for p in steps[start:]],
            [(v.step, v.val_loss) for v in self.state.vals],
            width=width,
            height=height,
            first=first,
            last=last,
        )
        if chart is None or height < 1:
            yield Text("no finite loss to plot yet", style="dim")
            return
        labels = {0: chart.hi, height - 1: chart.lo}
        if height >= 5:
            labels[(height - 1) // 2] = chart.hi - (chart.hi - chart.lo) * ((height - 1) // 2) / (
                height - 1
            )
        for r, row in enumerate(chart.rows):
            line = Text(f"{labels[r]:>{label_w}.3f} " if r in labels else " " * (label_w + 1))
            line.stylize("dim")
            for ch in row:
                line.append(ch, VAL_STYLE if ch == VAL_MARK else TRAIN_STYLE)
            yield line
        left, right = f"step {chart.first}", f"{chart.last}"
        gap = max(width - len(left) - len(right), 1)
        yield Text(" " * (label_w + 1) + left + " " * gap + right, style="dim")


def chart_range(state: RunState, window: int) -> tuple[int, int]:
    """Steps shown: the whole run when it fits the window (the chart fills up left to right),
    else the last ``window`` steps."""
    first_step = state.steps[0].step if state.steps else 1
    last_step = state.last.step if state.last else 1
    total = state.total_steps
    if total is not None and total <= window and last_step <= total:
        return min(first_step, 1), total
    return max(first_step, last_step - window + 1), last_step


def _loss_panel(state: RunState, window: int) -> Panel:
    first, last = chart_range(state, window)
    legend = Text.assemble(("█ train", TRAIN_STYLE), "  ", (f"{VAL_MARK} val", VAL_STYLE))
    return Panel(
        LossChartView(state, window),
        title=f"[bold]Loss[/] (steps {first}–{last})",
        title_align="left",
        subtitle=legend,
        subtitle_align="right",
        border_style="cyan",
    )


def _stats_panel(state: RunState) -> Panel:
    last = state.last
    assert last is not None
    t = Table.grid(padding=(0, 1))
    t.add_column(style="bold", no_wrap=True)
    t.add_column(no_wrap=True, overflow="ellipsis")
    ema = state.loss_ema
    t.add_row("loss", f"{fmt.num(last.loss)} [dim](ema {fmt.num(ema)})[/]")
    if state.best is not None:
        t.add_row("best loss", f"{fmt.num(state.best.loss)} [dim]@ {state.best.step}[/]")
    val, best_val = state.last_val, state.best_val
    if val is not None:
        t.add_row("val loss", f"[magenta]{fmt.num(val.val_loss)}[/] [dim]@ {val.step}[/]")
    if best_val is not None:
        t.add_row("best val", f"{fmt.num(best_val.val_loss)} [dim]@ {best_val.step}[/]")
    t.add_row("lr", fmt.sci(last.lr))
    grad = fmt.num(last.grad_norm) if last.grad_norm is not None else "[red]non-finite[/]"
    t.add_row("grad norm", grad)
    t.add_row("loss scale", fmt.count(last.loss_scale))
    skipped = str(state.skipped)
    if state.skipped:
        skipped = f"[yellow]{skipped}[/] [dim]({100 * state.skipped / len(state.steps):.1f}%)[/]"
    t.add_row("skipped", skipped)
    t.add_row("ms/step", f"{fmt.num(state.ms_per_step, 1)} [dim](last {fmt.num(last.ms, 1)})[/]")
    t.add_row("tokens/s", fmt.count(state.tokens_per_s))
    t.add_row("tokens seen", fmt.count(state.tokens_seen))
    share = state.compile_share
    if share is not None:
        t.add_row(
            "compile",
            f"{fmt.num(state.compile_s, 1)} s [dim]({100 * share:.1f}% of compile + train)[/]",
        )
        t.add_row("restarts", str(len(state.restart_steps)))
    recent = state.steps[-TREND:]
    t.add_row("ms trend", Text(sparkline([p.ms for p in recent]), style="yellow"))
    t.add_row("grad trend", Text(sparkline([p.grad_norm for p in recent]), style="yellow"))
    return Panel(t, title="[bold]Now[/]", title_align="left", border_style="cyan")


# ---- phases --------------------------------------------------------------------------------


class StackedBar:
    """One line: each phase's share of the step as a run of colored cells."""

    def __init__(self, shares: list[PhaseShare]) -> None:
        self.shares = shares

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        cells = bar_cells([s.pct for s in self.shares], options.max_width)
        line = Text()
        for share, n in zip(self.shares, cells, strict=True):
            line.append("█" * n, PHASE_STYLES.get(share.name, "white"))
        yield line


def _phases_panel(state: RunState, *, compact: bool = False) -> Panel:
    shares = state.phase_breakdown()
    title = "[bold]Step time by phase[/]"
    if state.steps:
        title += f" (mean of last {min(state.recent, len(state.steps))})"
    if not shares:
        body: RenderableType = Text("no step timings yet", style="dim")
    elif compact:
        legend = [
            Text("■ ", PHASE_STYLES.get(s.name, "white")) + Text(f"{s.name} {s.pct:.0f}%")
            for s in shares
        ]
        body = Group(StackedBar(shares), Columns(legend, padding=(0, 2)))
    else:
        t = Table.grid(padding=(0, 1), expand=True)
        t.add_column(no_wrap=True)
        t.add_column(justify="right", no_wrap=True)
        t.add_column(justify="right", no_wrap=True)
        t.add_column(ratio=1, no_wrap=True)
        top = max(s.pct for s in shares)
        for s in shares:
            style = PHASE_STYLES.get(s.name, "white")
            t.add_row(
                Text("■ ", style) + Text(s.name),
                f"{s.ms:.1f} ms",
                f"{s.pct:.0f}%",
                _Bar(s.pct / top if top else 0.0, style),
            )
        body = Group(StackedBar(shares), t)
    return Panel(body, title=title, title_align="left", border_style="blue")


class _Bar:
    """A horizontal bar filling the cell it is given."""

    def __init__(self, fraction: float, style: str) -> None:
        self.fraction = fraction
        self.style = style

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield Text(hbar(self.fraction, options.max_width).rstrip(), style=self.style)


# ---- summary -------------------------------------------------------------------------------


def _get(summary: dict[str, Any], key: str) -> float | None:
    value = summary.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def report_rows(s: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """The Efficiency Report of ``anetrain train``, from ``summary.json``, as label/value."""
    host = " (host)" if s.get("backend") == "sim" else ""
    wall, train, compile_s = _get(s, "wall_s"), _get(s, "train_s"), _get(s, "compile_s")
    yield "Wall time", f"{fmt.num(wall, 1)} s"
    if compile_s is not None:
        kernels = s.get("kernels_compiled")
        yield "Compile", f"{compile_s * 1e3:.0f} ms" + (f" ({kernels} kernels)" if kernels else "")
        pct = _get(s, "compile_pct")
        if s.get("compiles_per_batch") and pct is not None:
            yield "Compile share", f"{pct:.1f}% of wall ({s.get('restarts', 0)} exec() restarts)"
    if train is not None:
        share = f" ({100 * train / wall:.0f}% of wall)" if wall else ""
        yield "Train", f"{train:.1f} s{share}"
    yield "ms/step", f"{fmt.num(_get(s, 'ms_per_step'), 1)}{host}"
    yield "Tokens/s", f"{fmt.count(_get(s, 'tokens_per_s'))}{host}"
    yield "Kernel TFLOPS", f"{fmt.num(_get(s, 'kernel_tflops'))}{host}"
    util = _get(s, "utilization_pct")
    chip = s.get("chip") or "chip"
    yield f"Utilization ({chip} fp16 peak)", "n/a" if util is None else f"{util:.3f}%{host}"
    modeled = _get(s, "modeled_ane_ms_per_step")
    if modeled is not None:
        util_m = _get(s, "modeled_utilization_pct")
        yield (
            f"Modeled ANE ({chip})",
            f"{modeled:.2f} ms/step" + (f", {util_m:.1f}% of peak" if util_m is not None else ""),
        )
    loss = f"{fmt.num(_get(s, 'first_loss'))} → {fmt.num(_get(s, 'final_loss'))}"
    best = _get(s, "best_val_loss")
    over = {"full": " (full vocab)", "data": " (data's ids)"}.get(s.get("vocab") or "", "")
    yield f"Loss{over}", loss + (f" (best val {best:.4f})" if best is not None else "")
    if s.get("skipped_steps"):
        yield "Skipped steps", str(s["skipped_steps"])
    if s.get("interrupted"):
        yield "Interrupted", f"at step {s.get('steps')} (resume with --resume)"


def _report_panel(summary: dict[str, Any]) -> Panel:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    for label, value in report_rows(summary):
        t.add_row(label, value)
    return Panel(t, title="[bold]Efficiency Report[/]", title_align="left", border_style="green")


# ---- footer --------------------------------------------------------------------------------


def _footer(state: RunState, now: float, opts: Options) -> Text:
    parts: list[tuple[str, str]] = []
    if opts.closing_in is not None:
        parts.append((f"run finished; closing in {math.ceil(opts.closing_in)}s", "bold green"))
    elif opts.refresh is not None:
        parts.append((f"every {opts.refresh:g}s · Ctrl-C quits", "dim"))
    age = None if state.metrics_mtime is None else max(now - state.metrics_mtime, 0.0)
    if age is not None and state.summary is None:
        quiet = max(60.0, 20 * (state.ms_per_step or 0) / 1e3)
        if state.steps and age > quiet:
            parts.append(
                (f"no new steps for {fmt.duration(age)}: is the trainer running?", "yellow")
            )
        else:
            parts.append((f"updated {fmt.duration(age)} ago", "dim"))
    n, v = len(state.steps), len(state.vals)
    parts.append((f"{n} step{'s' * (n != 1)}, {v} val read", "dim"))
    if state.malformed:
        parts.append((f"{state.malformed} malformed line(s) ignored", "yellow"))
    text = Text(no_wrap=True, overflow="ellipsis")
    for i, (part, style) in enumerate(parts):
        if i:
            text.append(" · ", "dim")
        text.append(part, style)
    return text
