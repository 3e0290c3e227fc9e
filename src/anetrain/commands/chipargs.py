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


def chip_name(text: str) -> str:
    """A chip name (checked against the profiles when the chip is resolved); an empty one is
    refused here rather than read as "the default"."""
    if not text.strip():
        from anetrain.hardware.chips import chip_names

        known = ", ".join(chip_names())
        raise argparse.ArgumentTypeError(f"expected a chip name, got {text!r}; known: {known}")
    return text


chip_name.__name__ = "chip"


def add_chip_options(p: argparse.ArgumentParser, chip_help: str) -> None:
    p.add_argument("--chip", type=chip_name, help=chip_help)
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
        help="performance-model parameters fitted by 'anetrain perfmodel fit' for one chip "
        "(--chip, if given, must name that chip): modeled times use them",
    )


def resolve_chip(args: argparse.Namespace) -> ChipProfile | None:
    """The chip profile the options name (None: the backend's default), after installing
    ``--chip-profile``'s parameters for it."""
    from dataclasses import replace

    from anetrain.hardware.chips import get_chip, normalize_name
    from anetrain.perfmodel.params import PerfModelError, read_profile, use_profile

    chip = getattr(args, "chip", None)
    path = getattr(args, "chip_profile", None)
    if path is not None:
        params = read_profile(path)
        profile = get_chip(chip or params.chip, getattr(args, "macos", None))
        if params.chip and normalize_name(params.chip) != profile.name:
            # its rated peak and memory bandwidth are that chip's: refuse rather than mislabel
            raise PerfModelError(
                f"{path} was fitted for {params.chip}, but --chip is {profile.name}; drop "
                f"--chip (or pass --chip {params.chip}), or fit a profile on {profile.name}"
            )
        use_profile(replace(params, chip=profile.name, sram_mib=profile.sram_bytes / (1 << 20)))
        return profile
    if chip is None and getattr(args, "macos", None) is None:
        return None
    return get_chip(chip, args.macos)
