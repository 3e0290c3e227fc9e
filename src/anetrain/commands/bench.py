"""``anetrain bench``: the original benchmark programs, measured on the ANE or modeled on sim.

    anetrain bench peak --backend sim --chip m4max        # conv-chain peak TFLOPS
    anetrain bench sram --fine --json out.json --plot out.png
    anetrain bench train --chip m4max --model stories110m # modeled ANE time per step
    anetrain bench suite --json m4max.json                # the calibration probe set

See docs/bench.md for the tables, the JSON schema and what "modeled" means.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from anetrain.commands.args import count, file_path, seed
from anetrain.commands.chipargs import add_chip_options, resolve_chip

if TYPE_CHECKING:  # the bench modules pull in NumPy and the runtime: import them when run
    from anetrain.bench.result import SuiteResult
    from anetrain.bench.runner import Runner

Suite = Callable[["Runner", Callable[[str], None], argparse.Namespace], "SuiteResult"]


def _outputs(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--json", type=file_path, metavar="FILE", help="write results (schema: docs/bench.md)"
    )
    p.add_argument(
        "--plot", type=file_path, metavar="FILE.png", help="plot results (needs matplotlib)"
    )


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--backend",
        choices=["sim", "ane", "auto"],
        default="auto",
        help="ane: measure on the Neural Engine; sim: simulate and report modeled ANE times "
        "(auto: ane when available)",
    )
    add_chip_options(common, "chip profile, e.g. m4max (default: the backend's)")
    common.add_argument(
        "--warmup", type=count(0), help="evals before timing (default: the original's; sim: 1)"
    )
    common.add_argument(
        "--iters", type=count(1), help="timed evals (default: the original's; sim: 3)"
    )
    common.add_argument(
        "--quick", action="store_true", help="few iterations on any backend (warmup 1, iters 3)"
    )
    common.add_argument(
        "--model-only",
        action="store_true",
        help="print modeled ANE times without compiling or running anything",
    )
    common.add_argument("--seed", type=seed, default=0, help="input data seed")
    _outputs(common)
    return common


PROGRAMS = {
    "peak": "chains of 1x1 convs: peak TFLOPS (inmem_peak)",
    "inmem": "one conv, 256..4096 channels, fp32 I/O (inmem_bench)",
    "sram": "weight-size sweep for the SRAM cliff (sram_bench; --fine: sram_probe)",
    "int8": "FP16 vs W8A8 conv chains on [1,ch,64,64] (ane_int8_bench)",
    "dispatch": "eval latency against kernel size",
    "qos": "compile/load/eval at 17 QoS values (test_qos_sweep)",
    "suite": "the calibration probe set: peak, inmem, sram coarse + fine, dispatch, int8 "
    "(input of 'anetrain perfmodel fit')",
}
SUITE = ("peak", "inmem", "sram", "sram_fine", "dispatch", "int8")


def _suite(name: str) -> Suite:
    """The run function of program ``name``: run(runner, emit, args)."""
    from anetrain.bench import convs, int8, latency

    suites: dict[str, Suite] = {
        "peak": lambda r, e, a: convs.run_peak(r, e),
        "inmem": lambda r, e, a: convs.run_inmem(r, e),
        "sram": lambda r, e, a: convs.run_sram(r, e, fine=getattr(a, "fine", False)),
        "int8": lambda r, e, a: int8.run_int8(r, e),
        "dispatch": lambda r, e, a: latency.run_dispatch(r, e),
        "qos": lambda r, e, a: latency.run_qos(r, e),
        "sram_fine": lambda r, e, a: convs.run_sram(r, e, fine=True),
    }
    return suites[name]


def register(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="run the benchmark programs (ANE) or model them (simulator)",
        description="The original project's benchmarks. On the ANE the times are measured; on "
        "the simulator every row shows the perf model's ANE time for --chip and, separately "
        "labelled, the simulator's host time.",
    )
    programs = bench.add_subparsers(dest="bench_command", metavar="PROGRAM", required=True)
    common = _common()
    for name, help_text in PROGRAMS.items():
        p = programs.add_parser(name, parents=[common], help=help_text, description=help_text)
        if name == "sram":
            p.add_argument("--fine", action="store_true", help="13 sizes, GFLOPS/MB, spill marks")
        p.set_defaults(handler=run_suite)
    train = programs.add_parser(
        "train",
        help="modeled ANE time per kernel and per training step",
        description="Modeled ANE time of each kernel of a training pipeline (dynamic, or static "
        "with its compile time per batch) and of a whole training step, beside the original "
        "project's measured step times.",
    )
    train.add_argument("--model", default="stories110m", help="preset or TOML config")
    train.add_argument(
        "--pipeline",
        choices=["dynamic", "static"],
        default="dynamic",
        help="static: per-layer baked-weight kernels (72 for stories110m), with compile time",
    )
    train.add_argument(
        "--ane-extras", action="store_true", help="static only: the 99-kernel variant"
    )
    add_chip_options(train, "chip profile (default: the runtime's default chip)")
    _outputs(train)
    train.set_defaults(handler=run_train)


def _emit(line: str) -> None:
    print(line.rstrip(), flush=True)


def _command(args: argparse.Namespace) -> str:
    """The command line that produced a result: as typed when ``anetrain`` parsed it, else
    rebuilt from the parsed options."""
    if getattr(args, "argv", None) is not None:
        return shlex.join(["anetrain", *args.argv])
    parts = ["anetrain", "bench", args.bench_command]
    for key, value in sorted(vars(args).items()):
        if key in ("handler", "command", "bench_command") or value in (None, False):
            continue
        if key == "macos":
            parts += ["--os", str(value)]
            continue
        if (key, value) in (("seed", 0), ("backend", "auto")):
            continue
        flag = "--" + key.replace("_", "-")
        parts += [flag] if value is True else [flag, str(value)]
    return " ".join(parts)


def _finish(args: argparse.Namespace, runner: Runner, results: list[SuiteResult]) -> int:
    from anetrain.bench import report

    if args.json is not None:
        path = report.write_json(args.json, report.document(runner, results, _command(args)))
        print(f"wrote {path}", file=sys.stderr)
    if args.plot is not None:
        from anetrain.bench.plot import draw

        res = next((r for r in results if r.plot is not None), None)
        if res is not None and res.plot is not None:
            print(f"wrote {draw(res.plot, args.plot, res.bar_labels)}", file=sys.stderr)
    return 0


def run_suite(args: argparse.Namespace) -> int:
    from anetrain.bench.runner import Runner

    if args.plot is not None:
        from anetrain.bench.plot import require_matplotlib

        require_matplotlib()  # fail before a long run, not after
    runner = Runner(
        args.backend,
        resolve_chip(args),
        warmup=args.warmup,
        iters=args.iters,
        quick=args.quick,
        model_only=args.model_only,
        seed=args.seed,
    )
    if args.bench_command == "suite":
        results = []
        for name in SUITE:
            _emit(f"== {name} ==")
            results.append(_suite(name)(runner, _emit, args))
        return _finish(args, runner, results)
    suite = _suite(args.bench_command)
    return _finish(args, runner, [suite(runner, _emit, args)])


def run_train(args: argparse.Namespace) -> int:
    from anetrain.bench import train
    from anetrain.bench.runner import Runner
    from anetrain.model.config import load_config

    if args.plot is not None:
        from anetrain.bench.plot import require_matplotlib

        require_matplotlib()
    config = load_config(args.model)
    runner = Runner(chip=resolve_chip(args), model_only=True)
    assert runner.params is not None  # model-only runners require parameters
    name = Path(args.model).stem if args.model.endswith(".toml") else args.model
    if args.ane_extras and args.pipeline != "static":
        from anetrain.errors import AnetrainError

        raise AnetrainError("--ane-extras needs --pipeline static")
    if args.pipeline == "static":
        from anetrain.bench.train_static import run_static

        section = run_static(
            config, name, runner.params, runner.chip.display, _emit,
            extras=args.ane_extras, budget=runner.chip.compile_budget,
        )  # fmt: skip
    else:
        section = train.run_modeled(config, name, runner.params, runner.chip.display, _emit)
    sections = [section]
    # further sections (e.g. --compare-torch: host time of a sim step vs PyTorch) append here
    return _finish(args, runner, sections)
