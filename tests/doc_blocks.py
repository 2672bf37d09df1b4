"""The README's and docs' ```sh blocks, read as the commands tests/test_docs.py runs.

A markdown file's blocks run in order, in one sandbox folder, so a later block may use an earlier one's run.
HTML comments (invisible on GitHub) right before a block say how to test it:

    <!-- test: skip: REASON -->             not run at all; the reason is required
    <!-- test: only-transfer: REASON -->    run its `transfer` commands only (not pip, pytest, torchrun...)
    <!-- test: fixture: NAME PATH -->       first make fixture NAME at PATH (test_docs.FIXTURES)
    <!-- test: expect: PATH [PATH ...] -->  afterwards these files or folders must exist

Any other command in a block without `skip` or `only-transfer` fails the test, so a new example cannot
silently go untested.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

MARKER = re.compile(r"^<!--\s*test:\s*([\w-]+)\s*(?::\s*(.*?))?\s*-->$")
KINDS = ("skip", "only-transfer", "fixture", "expect")
FENCE = re.compile(r"^```\s*(\w*)")


class MarkerError(ValueError):
    """A malformed `<!-- test: ... -->` comment."""


@dataclass
class Command:
    program: str  # "transfer", "data_prep.NAME", or the first word of any other command
    args: list[str]
    text: str
    stdout: str | None = None  # the file of `> FILE`


@dataclass
class Block:
    path: Path
    line: int
    code: str
    markers: list[tuple[str, str]] = field(default_factory=list)

    def where(self) -> str:
        return f"{self.path.name}:{self.line}"

    def marker(self, kind: str) -> list[str]:
        return [arg for k, arg in self.markers if k == kind]

    @property
    def skip_reason(self) -> str | None:
        reasons = self.marker("skip")
        return reasons[0] if reasons else None

    def commands(self) -> list[Command]:
        return parse_commands(self.code)


def sh_blocks(path: Path) -> list[Block]:
    """Every ```sh block of a markdown file, with the test markers just above it."""
    blocks: list[Block] = []
    pending: list[tuple[str, str]] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        m = MARKER.match(line)
        fence = FENCE.match(line)
        if m:
            kind, arg = m.group(1), (m.group(2) or "").strip()
            if kind not in KINDS:
                raise MarkerError(f"{path.name}:{i + 1}: unknown test marker {kind!r} (one of {', '.join(KINDS)})")
            if not arg:
                raise MarkerError(f"{path.name}:{i + 1}: `test: {kind}` needs a reason or an argument after ':'")
            pending.append((kind, arg))
        elif fence:
            end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), len(lines))
            if fence.group(1) in ("sh", "bash", "shell", "console"):
                blocks.append(Block(path, i + 1, "\n".join(lines[i + 1:end]), pending))
            elif pending:
                raise MarkerError(f"{path.name}:{i + 1}: test markers before a ```{fence.group(1)} block")
            pending = []
            i = end
        elif line and pending:
            raise MarkerError(f"{path.name}:{i + 1}: test markers must come right before a ```sh block")
        i += 1
    return blocks


def _strip_launcher(words: list[str]) -> list[str]:
    """`uv run [--extra X] CMD` and `python -m transfer` run the same thing as `transfer`."""
    if words[:2] == ["uv", "run"]:
        words = words[2:]
        while words and words[0].startswith("-"):
            words = words[2:] if words[0] in ("--extra", "--with", "--group") else words[1:]
    if len(words) >= 3 and words[0] in ("python", "python3") and words[1] == "-m":
        return [words[2], *words[3:]]
    return words


def parse_commands(code: str) -> list[Command]:
    code = re.sub(r"\\\n", " ", code)  # line continuations
    commands = []
    for line in code.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            segment, words = words[:cut], words[cut + 1:]
            if not segment:
                continue
            text, stdout = " ".join(segment), None
            if len(segment) > 2 and segment[-2] == ">":
                segment, stdout = segment[:-2], segment[-1]
            segment = _strip_launcher(segment)
            commands.append(Command(segment[0], segment[1:], text, stdout))
    return commands
