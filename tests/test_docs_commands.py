"""The commands README.md and docs/*.md show are the commands the code has.

Every flag the docs write after ``anetrain SUBCOMMAND`` (or after a benchmark or script) exists
there; every flag the CLI has is documented beside its subcommand; the README opens with the
two commands and its table names every subcommand; a shell transcript in the docs (``$ ``
lines, then the output) prints what the docs say it prints.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from anetrain.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FLAG = re.compile(r"(?<![\w-])--[a-z][\w-]*")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _flags(parser: argparse.ArgumentParser, deep: bool) -> set[str]:
    """A parser's long options; with ``deep``, its subcommands' too."""
    found = {o for a in parser._actions for o in a.option_strings if o.startswith("--")}
    if deep:
        for sub in _subparsers(parser).values():
            found |= _flags(sub, True)
    return found


def _leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    subs = _subparsers(parser)
    if not subs:
        yield path, parser
    for name, sub in subs.items():
        yield from _leaves(sub, (*path, name))


def _commands() -> list[tuple[str, str]]:
    """(doc name, command text) for every command the docs show: the lines of code blocks
    (joined over trailing backslashes, ``$ `` prompts dropped) and the inline code spans."""
    found = []
    for path in DOCS:
        text = _text(path)
        for block in FENCE.findall(text):
            for line in block.replace("\\\n", " ").splitlines():
                found.append((path.name, line.removeprefix("$ ")))
        prose = FENCE.sub("", text)
        found += [(path.name, span) for span in re.findall(r"`([^`\n]+)`", prose)]
    return found


def _anetrain_calls() -> list[tuple[str, list[str]]]:
    calls = []
    for doc, command in _commands():
        for m in re.finditer(r"(?:^|(?<=\s)|(?<=-m )|(?<=\())anetrain ([^#|;]*)", command):
            calls.append((doc, m.group(1).replace("\\|", " ").split()))
    return calls


def _parser_for(words: list[str]) -> tuple[argparse.ArgumentParser, bool]:
    """The parser the words name, and whether it stopped short of a leaf (alternatives such as
    ``bench peak|inmem`` then accept the flags of every subcommand below)."""
    parser = build_parser()
    for word in words:
        subs = _subparsers(parser)
        if word not in subs:
            return parser, bool(subs)
        parser = subs[word]
    return parser, bool(_subparsers(parser))


def test_every_flag_the_docs_give_anetrain_exists() -> None:
    calls = _anetrain_calls()
    assert len(calls) > 50, "the doc scan found too few commands"
    wrong = []
    for doc, words in calls:
        parser, deep = _parser_for(words)
        known = _flags(parser, deep)
        wrong += [f"{doc}: {' '.join(words)}: {f}" for f in FLAG.findall(" ".join(words))
                  if f not in known]  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_every_cli_flag_is_documented_beside_its_command() -> None:
    """A flag counts as documented in a paragraph (or table) that names its subcommand, or
    anywhere in the doc named after its command (docs/dashboard.md for ``dashboard``)."""
    missing = []
    for path, parser in _leaves(build_parser()):
        own = ROOT / "docs" / f"{path[0]}.md"
        paragraphs = [p for d in DOCS for p in re.split(r"\n\s*\n", _text(d))]
        paragraphs = [p for p in paragraphs if " ".join(path) in p]
        paragraphs += [_text(own)] if own.is_file() else []
        for flag in _flags(parser, False) - {"--help"}:
            near = [p for p in paragraphs if flag in FLAG.findall(p)]
            if not near:
                missing.append(f"{' '.join(path)} {flag}")
    top = _flags(build_parser(), False) - {"--help"}
    missing += [f"anetrain {f}" for f in top if not any(f"anetrain {f}" in _text(d) for d in DOCS)]
    assert not missing, "undocumented: " + ", ".join(sorted(missing))


def test_readme_opens_with_the_main_job_and_the_tests() -> None:
    first = FENCE.search(_text(ROOT / "README.md"))
    assert first is not None
    assert first.group(1).splitlines() == [
        "pip install -e . && anetrain train",
        "pip install -e '.[test]' && python -m pytest",
    ]


def test_readme_table_names_every_subcommand() -> None:
    rows = [line for line in _text(ROOT / "README.md").splitlines() if line.startswith("| `")]
    missing = []
    for name, sub in _subparsers(build_parser()).items():
        mine = [r for r in rows if re.search(rf"`(torchrun .*-m )?anetrain {name}\b", r)]
        if not mine:
            missing.append(name)
        for action in _subparsers(sub):
            if not any(re.search(rf"[ |]{re.escape(action)}\b", r) for r in mine):
                missing.append(f"{name} {action}")
    assert not missing, "not in the README's table: " + ", ".join(missing)


@cache
def _script_flags(script: str) -> set[str]:
    done = subprocess.run(
        [sys.executable, str(ROOT / script), "--help"],
        capture_output=True, text=True, timeout=120, env=_env(), check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"{script} --help: {done.stderr}"
    return set(FLAG.findall(done.stdout))


def _env() -> dict[str, str]:
    return os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}


def test_every_flag_the_docs_give_a_benchmark_or_script_exists() -> None:
    wrong, seen = [], 0
    for doc, command in _commands():
        for m in re.finditer(r"python ((?:benchmarks|scripts)/\w+\.py)([^#`;]*)", command):
            seen += 1
            known = _script_flags(m.group(1))
            wrong += [f"{doc}: {m.group(0)}: {f}" for f in FLAG.findall(m.group(2))
                      if f not in known]  # fmt: skip
    assert seen > 10, "the doc scan found too few script commands"
    assert not wrong, "\n".join(wrong)


def _transcripts() -> list[tuple[str, list[str], list[str]]]:
    """(doc, commands, expected output) of every code block that starts with a ``$ `` line."""
    found = []
    for path in DOCS:
        for block in FENCE.findall(_text(path)):
            lines = block.splitlines()
            if lines and lines[0].startswith("$ "):
                commands = [line[2:] for line in lines if line.startswith("$ ")]
                output = [line for line in lines if not line.startswith("$ ")]
                found.append((path.name, commands, output))
    return found


@pytest.mark.parametrize(("doc", "commands", "output"), _transcripts(),
                         ids=[f"{d}:{c[-1]}" for d, c, _ in _transcripts()])  # fmt: skip
def test_a_transcript_prints_what_the_docs_show(
    doc: str, commands: list[str], output: list[str], tmp_path: Path
) -> None:
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    printed = []
    for command in commands:
        words = shlex.split(command)
        if words[0] == "anetrain":
            words = [sys.executable, "-m", "anetrain.cli", *words[1:]]
        done = subprocess.run(
            words, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=_env(),
            check=False,
        )  # fmt: skip
        printed += (done.stdout + done.stderr).splitlines()
    assert printed == output, f"{doc}: {' && '.join(commands)}"
