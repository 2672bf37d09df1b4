"""Docs that cannot drift: the recipe reference is generated from the schema, and each command's page is
checked against the click command it documents.

    python -m transfer.docs --write    regenerate docs/recipe-reference.md
    python -m transfer.docs --check    exit 1, naming each problem, if the reference is stale or a command's
                                       page misses (or invents) an option

A command NAME is documented by docs/commands/NAME.md, whose `## Options` table lists each option in its
first column (`--batch-size N`) and the default in its second; the `transfer` group itself by docs/index.md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import click

DOCS = Path(__file__).resolve().parents[1] / "docs"
REFERENCE = "recipe-reference.md"
REGENERATE = "python -m transfer.docs --write"


# ------------------------------------------------------------------------------------- recipe reference

def _value(v) -> str:
    """A default as it would be written in YAML."""
    if isinstance(v, str):
        return v if v else '""'
    return json.dumps(v)


def _allowed(row: dict) -> str:
    if row["choices"]:
        return ", ".join(f"`{c}`" for c in row["choices"])
    lo, hi = row["min"], row["max"]
    if lo is not None and hi is not None:
        return f"{lo:g} to {hi:g}"
    if lo is not None:
        return f">= {lo:g}"
    if hi is not None:
        return f"<= {hi:g}"
    return ""


def _row(*cells: str) -> str:
    """A table row; a | inside a cell (`str | None`) is escaped, else GitHub would split the cell there."""
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render_reference() -> str:
    from .recipe import schema_reference, section_help

    rows = schema_reference()
    out = [
        "# Recipe reference",
        "",
        f"<!-- Generated from transfer/recipe.py by `{REGENERATE}`; do not edit by hand. -->",
        "",
        "Every key a recipe may set, generated from the schema (`transfer/recipe.py`), where each default lives",
        "once. A recipe is a YAML file of these sections; `base: other.yaml` starts from another recipe, and",
        "`--set key.path=value` on the command line overrides any key (values are YAML: `0.1`, `true`, `[1, 2]`,",
        "`null`). An unknown key, a wrong type or a value out of range fails with the file, the key path and the",
        "problem.",
        "",
    ]
    sections = {"": "the recipe itself", **section_help()}
    for section, about in sections.items():
        out += [f"## `{section}`: {about}" if section else "## Top level", "",
                "| key | type | default | allowed | help |", "| --- | --- | --- | --- | --- |"]
        out += [_row(f"`{r['key']}`", f"`{r['type']}`", f"`{_value(r['default'])}`", _allowed(r), r["help"])
                for r in rows if r["section"] == section]
        out.append("")
    return "\n".join(out)


def reference_problems(docs: Path = DOCS) -> list[str]:
    path = docs / REFERENCE
    if not path.is_file() or path.read_text() != render_reference():
        return [f"{path} is stale: regenerate it with `{REGENERATE}`"]
    return []


# ------------------------------------------------------------------------------------------ command pages

def page_of(name: str | None, docs: Path = DOCS) -> Path:
    """docs/index.md for the `transfer` group (name None), docs/commands/NAME.md for a command."""
    return docs / "index.md" if name is None else docs / "commands" / f"{name}.md"


def documented_options(text: str) -> dict[str, str]:
    """{option name: its default cell} from the `## Options` table of a page."""
    found: dict[str, str] = {}
    in_options = False
    for line in text.splitlines():
        if line.startswith("## "):
            in_options = line.strip() == "## Options"
        elif in_options and line.startswith("|") and not re.match(r"\|\s*(option|-+)\s*\|", line):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # not at \|
            for name in re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", cells[0]):
                found[name] = cells[1] if len(cells) > 1 else ""
    return found


def _option_names(param: click.Parameter) -> list[str]:
    return [*param.opts, *param.secondary_opts]


def command_problems(group: click.Group, docs: Path = DOCS) -> list[str]:
    """Commands without help or a page, options without help, options a page misses or invents."""
    problems = []
    ctx = click.Context(group, info_name="transfer")
    commands: list[tuple[str | None, click.Command]] = [(None, group)]
    commands += [(name, group.get_command(ctx, name)) for name in group.list_commands(ctx)]
    for name, cmd in commands:
        label = f"transfer {name}" if name else "transfer"
        if not (cmd.help or "").strip():
            problems.append(f"{label}: no help text (the command's docstring)")
        help_option = cmd.get_help_option(ctx)
        options = [p for p in cmd.params if isinstance(p, click.Option) and p is not help_option]
        for p in options:
            if not (p.help or "").strip():
                problems.append(f"{label} {p.opts[0]}: no help text")
        page = page_of(name, docs)
        if not page.is_file():
            problems.append(f"{label}: no page {page}")
            continue
        documented = documented_options(page.read_text())
        real = {n: p for p in options for n in _option_names(p)}
        problems += [f"{page}: {label} option {n} is not in the Options table" for n in real if n not in documented]
        problems += [f"{page}: documents {n}, which {label} does not have" for n in documented if n not in real]
        for n, p in real.items():
            if n in documented and p.show_default and not p.is_flag and p.default is not None \
                    and f"`{p.default}`" not in documented[n]:
                problems.append(f"{page}: {label} {n} defaults to {p.default!r}, the page says {documented[n]!r}")
    pages = docs / "commands"
    known = {name for name, _ in commands if name}
    problems += [f"{page}: documents `transfer {page.stem}`, which does not exist"
                 for page in sorted(pages.glob("*.md")) if page.stem not in known]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m transfer.docs", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help=f"regenerate docs/{REFERENCE}")
    mode.add_argument("--check", action="store_true", help="report a stale reference or an inconsistent page")
    args = parser.parse_args(argv)
    if args.write:
        (DOCS / REFERENCE).write_text(render_reference())
        print(f"wrote {DOCS / REFERENCE}")
        return 0
    from .cli import cli

    problems = reference_problems() + command_problems(cli)
    for p in problems:
        print(p, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
