"""The README's shell commands, read as the tests that run them see them.

A ``bash`` block of README.md holds commands to paste; synopses with placeholders are ``text``
blocks. A command is a line, or lines joined by a trailing backslash, with its ``# comment``
dropped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
HEADING = re.compile(r"^#{1,6} (.+)$")
COMMENT = re.compile(r"\s+#.*$")


@dataclass(frozen=True)
class Block:
    """A ``bash`` block of the README: the heading it stands under, and its commands."""

    section: str
    commands: tuple[str, ...]


def bash_blocks(readme: Path = README) -> list[Block]:
    """Every ``bash`` block of ``readme``, in order."""
    blocks: list[Block] = []
    section = ""
    lines: list[str] | None = None
    for line in readme.read_text().splitlines():
        if lines is None:
            if heading := HEADING.match(line):
                section = heading.group(1)
            elif line.strip() == "```bash":
                lines = []
        elif line.strip() == "```":
            blocks.append(Block(section, _commands(lines)))
            lines = None
        else:
            lines.append(line)
    return blocks


def block(section: str) -> Block:
    """The one ``bash`` block under the heading ``section``."""
    found = [b for b in bash_blocks() if b.section == section]
    assert len(found) == 1, f"README.md has {len(found)} bash blocks under '{section}'"
    return found[0]


def _commands(lines: list[str]) -> tuple[str, ...]:
    commands: list[str] = []
    pending = ""
    for line in lines:
        text = COMMENT.sub("", line).strip()
        if text.endswith("\\"):
            pending += text[:-1].strip() + " "
            continue
        command = (pending + text).strip()
        pending = ""
        if command:
            commands.append(command)
    assert not pending, f"a command ends in a backslash: {pending}"
    return tuple(commands)
