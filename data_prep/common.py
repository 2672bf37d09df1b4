"""What every converter shares: the error type, reading files into shards, the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from transfer.data.ondisk import DatasetWriter

SHARD = 5000


class PrepError(Exception):
    """A missing or malformed archive file: printed as one line that names it."""


def require(root: Path, *names: str) -> Path:
    """The first of `names` that exists under root (alternative locations of one official file)."""
    for name in names:
        if (root / name).exists():
            return root / name
    raise PrepError(f"missing {names[0]} in {root}: is --raw the extracted official archive?")


def write_split(writer: DatasetWriter, split: str, items: list[tuple[Path, int, str]], *,
                transform: Callable[[Path, str], bytes] | None = None, progress=None) -> list[str]:
    """Write (file, label, id) items as shards of SHARD images; shards already written are skipped."""
    shards = []
    task = progress.add_task(split, total=len(items)) if progress is not None else None
    for start in range(0, len(items), SHARD):
        shard = f"{start // SHARD:05d}"
        shards.append(shard)
        chunk = items[start:start + SHARD]
        if not writer.has(split, shard):
            missing = [str(f) for f, _, _ in chunk if not f.is_file()]
            if missing:
                raise PrepError(f"missing image {missing[0]} (listed by the annotations)")
            images = [transform(f, ident) if transform else f.read_bytes() for f, _, ident in chunk]
            writer.write(split, shard, images, [label for _, label, _ in chunk], [ident for _, _, ident in chunk])
        if task is not None:
            progress.advance(task, len(chunk))
    return shards


def run_main(name: str, doc: str, convert: Callable[..., Path], argv: list[str] | None = None,
             extra_args: Callable[[argparse.ArgumentParser], None] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m data_prep.{name}", description=doc.splitlines()[0])
    parser.add_argument("--raw", required=True, type=Path, help="the extracted official archive")
    parser.add_argument("--out", required=True, type=Path, help="output folder (the recipe's data.path)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    if extra_args:
        extra_args(parser)
    args = vars(parser.parse_args(argv))
    raw, out, quiet = args.pop("raw"), args.pop("out"), args.pop("quiet")
    try:
        path = convert(raw, out, progress=not quiet, **args)
    except PrepError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def progress_bar(enabled: bool):
    from rich.progress import Progress

    return Progress(disable=not enabled, transient=False)
