"""``anetrain doctor``: what this machine can run, and why a backend cannot.

Prints the platform, library versions, each backend's availability (with the reason when it is
unavailable), the detected chip on macOS, the active chip profile's limits and the compile
counters. ``--json`` prints the same report as one JSON object for scripts and bug reports.
``--selftest`` runs the staged ane probe instead (see ``anetrain.runtime.ane.selftest``) and
``--json FILE`` then writes its report to FILE for a bug report.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
from importlib import metadata
from typing import Any

from anetrain.commands.args import file_or_stdout
from anetrain.commands.chipargs import add_chip_options, resolve_chip

LIBRARIES = ("numpy", "rich", "safetensors", "coremltools", "torch", "pyobjc-core")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor",
        help="show platform, libraries, backends and the chip profile",
        description="Report the platform, library versions, which runtime backends are "
        "available here (and why not), the detected chip on macOS and the active chip "
        "profile's limits.",
    )
    add_chip_options(p, "chip profile to show (default: the detected chip on macOS, else m4)")
    p.add_argument(
        "--json",
        nargs="?",
        const="-",
        type=file_or_stdout,
        metavar="FILE",
        help="print the report as one JSON object (or write it to FILE)",
    )
    p.add_argument(
        "--selftest",
        action="store_true",
        help="probe the ane backend stage by stage (framework, compile, eval, comparison with "
        "the simulator, reload, request reuse); exits 1 at the first failing stage",
    )
    p.add_argument(
        "--perf-stats", action="store_true", help="with --selftest: also probe perf stats"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="with --selftest: stop after the comparison with the simulator (what "
        "--backend auto runs)",
    )
    p.set_defaults(handler=run)


def library_versions() -> dict[str, str | None]:
    """Installed versions from package metadata (nothing is imported, so torch stays cold)."""
    versions: dict[str, str | None] = {}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _profile_dict(profile: Any) -> dict[str, Any]:
    data = dataclasses.asdict(profile)
    for key, value in data.items():
        if isinstance(value, frozenset | set):
            data[key] = sorted(value)
        elif isinstance(value, tuple):
            data[key] = list(value)
    return data


def collect(chip: str | None = None, macos: str | None = None) -> dict[str, Any]:
    """The whole report as plain JSON-able data."""
    from anetrain import __version__
    from anetrain.hardware.chips import DEFAULT_CHIP, get_chip
    from anetrain.runtime.ane.device import detect_chip
    from anetrain.runtime.registry import BACKENDS, backend_status

    backends = {}
    for name in BACKENDS:
        ok, reason = backend_status(name)
        backends[name] = {"available": ok, "reason": reason}
    detected = detect_chip()
    if chip is not None:
        profile, source = get_chip(chip, macos), "--chip"
    elif detected.chip is not None:
        profile, source = get_chip(detected.chip, macos), f"detected ({detected.source})"
    else:
        profile, source = get_chip(DEFAULT_CHIP, macos), "default"
    return {
        "anetrain": __version__,
        "platform": {
            "system": platform.system(),
            "release": platform.release(),
            "machine": platform.machine(),
            "sys_platform": sys.platform,
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "libraries": library_versions(),
        "backends": backends,
        "detected_chip": dataclasses.asdict(detected),
        "chip": {"source": source, **_profile_dict(profile)},
    }


def _size(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def format_report(report: dict[str, Any]) -> str:
    """The report as aligned text lines."""
    plat, chip, det = report["platform"], report["chip"], report["detected_chip"]
    lines = [
        f"anetrain {report['anetrain']}",
        f"platform     {plat['system']} {plat['release']} ({plat['machine']}), "
        f"Python {plat['python']} ({plat['implementation']})",
        "libraries    "
        + ", ".join(f"{k} {v or 'not installed'}" for k, v in report["libraries"].items()),
        "backends",
    ]
    for name, status in report["backends"].items():
        state = "available" if status["available"] else f"unavailable: {status['reason']}"
        lines.append(f"  {name:<10} {state}")
    if det["chip"] or det["brand_string"] or det["ane_subtype"]:
        lines.append(
            f"detected     {det['chip'] or 'unknown'} (brand string: {det['brand_string']}, "
            f"ANE subtype: {det['ane_subtype']}; by {det['source']})"
        )
    else:
        lines.append(f"detected     nothing ({det['source']})")
    tops = "unknown" if chip["rated_tops"] is None else f"{chip['rated_tops']:g}"
    unsupported = ", ".join(chip["unsupported_ops"]) or "none"
    lines += [
        f"chip         {chip['name']} ({chip['display']}, macOS {chip['macos']} profile; "
        f"{chip['source']})",
        f"  family {chip['family']}, arch {chip['arch']}, {chip['dies']} die(s), "
        f"{chip['ane_cores']} ANE cores, rated {tops} TOPS",
        "  dialect    program("
        + ", ".join(chip["program_versions"])
        + "), opsets "
        + ", ".join(chip["opsets"])
        + f"; I/O {', '.join(chip['io_dtypes'])}; unsupported ops: {unsupported}",
        f"  limits     max dim {chip['max_dim']}, conv input channels "
        f"{chip['conv_max_input_channels']}, weights {_size(chip['max_weight_bytes'])}, "
        f"SRAM {_size(chip['sram_bytes'])}, surfaces >= {_size(chip['min_surface_bytes'])}",
        f"  budget     {chip['compile_budget']} compiles per process (the compiler leaks)",
        f"  quirks     multi-input {_yes(chip['multi_input_allowed'])}, SDPA ignores mask "
        f"{_yes(chip['sdpa_ignores_mask'])}, flush subnormals {_yes(chip['flush_subnormals'])}, "
        f"one blob per weight file {_yes(chip['weights_one_blob_per_file'])}",
    ]
    lines += [f"  note       {note}" for note in chip["notes"]]
    return "\n".join(lines)


def _emit_json(target: str, text: str) -> None:
    """``-`` prints; a path is written atomically (a temporary file, then a rename)."""
    if target == "-":
        print(text)
        return
    from pathlib import Path

    path = Path(target)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        tmp.replace(path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise DoctorError(f"cannot write the report to {target}: {err}") from None


class DoctorError(Exception):
    """A doctor failure the CLI reports in one line."""


def run_selftest(args: argparse.Namespace) -> int:
    from anetrain.runtime.ane.selftest import run_selftest as probe

    report = probe(chip=args.chip, perf_stats=args.perf_stats, quick=args.quick)
    if args.json:
        _emit_json(args.json, report.to_json())
    if args.json == "-":  # stdout is the JSON report and nothing else
        return 0 if report.ok else 1
    if not report.ok and report.failed_stage == "platform":
        print(f"ane selftest: {report.summary()}")  # off a Mac: one line, nothing else
        return 1
    for stage in report.stages:
        mark = "ok  " if stage.ok else "FAIL"
        print(f"{mark} {stage.name:<14} {stage.detail or stage.error or ''}")
    if not report.ok:
        print(f"ane selftest: {report.summary()}")
        print(f"raw error:\n{report.error}")
        if args.json is None:
            print("attach the JSON report to a bug report: anetrain doctor --selftest --json FILE")
    return 0 if report.ok else 1


def run(args: argparse.Namespace) -> int:
    try:
        if args.selftest:
            return run_selftest(args)
        chosen = resolve_chip(args)  # validates --os; --chip-profile installs (and names) its chip
        by_profile = chosen is not None and args.chip_profile is not None
        report = collect(chosen.name if by_profile else args.chip, args.macos)
        if args.json:
            _emit_json(args.json, json.dumps(report, indent=2))
        else:
            print(format_report(report))
    except DoctorError as err:
        print(f"anetrain doctor: {err}", file=sys.stderr)
        return 1
    return 0
