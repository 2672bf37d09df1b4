"""What every converter shares: the error type, reading files into shards, the command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from transfer.data.ondisk import DatasetWriter
from transfer.errors import TransferError

SHARD = 5000


class PrepError(Exception):
    """A missing or malformed archive file: printed as one line that names it."""


def require(root: Path, *names: str) -> Path:
    """The first of `names` that exists under root (alternative locations of one official file)."""
    for name in names:
        if (root / name).exists():
            return root / name
    raise PrepError(f"missing {names[0]} in {root}: is --raw the extracted official archive?")


Item = tuple[Path, int, str]


def write_split(writer: DatasetWriter, split: str, items: list[Item], *,
                transform: Callable[[Path, str], bytes] | None = None, progress=None,
                columns: dict[str, list[bool]] | None = None) -> list[str]:
    """Write (file, label, id) items as shards of SHARD images; shards already written are skipped.

    `columns` holds extra per-item values (aligned with items), stored as boolean columns of the same names."""
    columns = columns or {}
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
            writer.write(split, shard, images, [label for _, label, _ in chunk], [ident for _, _, ident in chunk],
                         {name: values[start:start + SHARD] for name, values in columns.items()})
        if task is not None:
            progress.advance(task, len(chunk))
    return shards


def read_rows(path: Path, width: int, *, ints: tuple[int, ...] = (), header: str | None = None,
              counted: bool = False) -> list[list]:
    """The rows of a whitespace-separated official listing, `width` fields each (the last may hold spaces).

    ints: the field positions converted to int. counted: the first line is the number of rows (checked).
    header: the column-names line that comes next (checked). A malformed line is reported as FILE:LINE."""
    lines = list(enumerate(path.read_text().splitlines(), 1))
    if not any(line.strip() for _, line in lines):
        raise PrepError(f"{path.name} is empty")
    expected = None
    if counted:
        first = lines.pop(0)[1].strip() if lines else ""
        if not first.isdigit():
            raise PrepError(f"{path.name}:1: expected the number of images, got {first!r}")
        expected = int(first)
    if header is not None:
        n, line = lines.pop(0) if lines else (2, "")  # only the count line was there
        if line.split() != header.split():
            raise PrepError(f"{path.name}:{n}: expected the header {header!r}, got {line.strip()!r}")
    rows = [_fields(path, n, line, width, ints) for n, line in lines if line.strip()]
    if expected is not None and expected != len(rows):
        raise PrepError(f"{path.name}: line 1 announces {expected} images but {len(rows)} are listed "
                        f"(a truncated file?)")
    return rows


def _fields(path: Path, n: int, line: str, width: int, ints: tuple[int, ...]) -> list:
    fields = line.split(maxsplit=width - 1)
    if len(fields) != width:
        raise PrepError(f"{path.name}:{n}: expected {width} fields, got {line.strip()!r}")
    try:
        return [int(f) if i in ints else f for i, f in enumerate(fields)]
    except ValueError:
        raise PrepError(f"{path.name}:{n}: expected a number in {line.strip()!r}") from None


def zero_shot_classes(train_ids: list[str], test_ids: list[str], listing: str) -> list[str]:
    """All class ids, the training ones first, so that train labels are 0..T-1 and test labels T..N-1."""
    shared = set(train_ids) & set(test_ids)
    if shared:
        raise PrepError(f"{listing}: class {min(shared)!r} is in both train and test; the retrieval "
                        f"protocol needs disjoint classes")

    def ordered(ids):  # numeric ids numerically ("2" before "10"); fixed-width ids are unaffected
        return sorted(set(ids), key=lambda c: (len(c), c))

    return ordered(train_ids) + ordered(test_ids)


def split_by_class(items: list[Item], train_classes: int) -> dict[str, list[Item]]:
    """The zero-shot split of a pooled list: labels below train_classes train, the rest test."""
    return {"train": [it for it in items if it[1] < train_classes],
            "test": [it for it in items if it[1] >= train_classes]}


def write_retrieval(out: Path, name: str, classes: list[str], parts: dict[str, list[Item]], *,
                    is_query: list[bool] | None = None, progress: bool = True) -> Path:
    """A retrieval dataset: splits train and test, the test split with boolean columns is_query and is_gallery.

    is_query (aligned with the test items) marks the queries and the rest the gallery; without it every
    test image is both (the query is left out of its own results at search time)."""
    test = parts["test"]
    flags = ({"is_query": [True] * len(test), "is_gallery": [True] * len(test)} if is_query is None else
             {"is_query": list(is_query), "is_gallery": [not q for q in is_query]})
    writer = DatasetWriter(out, name, classes, task="retrieval")
    with progress_bar(progress) as bar:
        splits = {"train": write_split(writer, "train", parts["train"], progress=bar),
                  "test": write_split(writer, "test", test, progress=bar, columns=flags)}
    return writer.finish(splits)


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
    except (PrepError, TransferError) as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        print(f"error: {raw} does not read as the official {name} archive ({type(e).__name__}: {first}); check "
              f"that --raw is the extracted archive, with intact files", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def progress_bar(enabled: bool):
    from rich.progress import Progress

    return Progress(disable=not enabled, transient=False)
