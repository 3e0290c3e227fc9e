"""The options every command that takes ``--chip`` shares: ``--os`` and ``--chip-profile``.

--chip m1max --os 15          the M1 Max profile as on macOS 15 (dialect, ops, limits)
--chip-profile m4max.json     performance parameters fitted by 'anetrain perfmodel fit'
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from anetrain.commands.args import file_path

if TYPE_CHECKING:
    from anetrain.hardware.chips import ChipProfile


def add_chip_options(p: argparse.ArgumentParser, chip_help: str) -> None:
    p.add_argument("--chip", help=chip_help)
    p.add_argument(
        "--os",
        dest="macos",
        metavar="VERSION",
        help="macOS version the chip runs, e.g. 15 or 26.2 (default: the newest known); the "
        "MIL dialect and some limits depend on it",
    )
    p.add_argument(
        "--chip-profile",
        type=file_path,
        metavar="PROFILE.json",
        help="performance-model parameters fitted by 'anetrain perfmodel fit' (for its chip, "
        "or --chip's): modeled times use them",
    )


def resolve_chip(args: argparse.Namespace) -> ChipProfile | None:
    """The chip profile the options name (None: the backend's default), after installing
    ``--chip-profile``'s parameters for it."""
    from dataclasses import replace

    from anetrain.hardware.chips import get_chip
    from anetrain.perfmodel.params import read_profile, use_profile

    chip = getattr(args, "chip", None)
    path = getattr(args, "chip_profile", None)
    if path is not None:
        params = read_profile(path)
        chip = chip or params.chip
        profile = get_chip(chip, getattr(args, "macos", None))
        use_profile(replace(params, chip=profile.name, sram_mib=profile.sram_bytes / (1 << 20)))
        return profile
    if chip is None and getattr(args, "macos", None) is None:
        return None
    return get_chip(chip, args.macos)
