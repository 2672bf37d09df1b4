"""The on-disk dataset format that every data_prep converter writes, and a resumable writer for it.

    OUT/dataset.json            {"format", "name", "classes", "splits": {split: [shard folders]}, ...}
    OUT/SPLIT/SHARD/            a HuggingFace dataset (save_to_disk): image (encoded bytes), label, path
                                [+ extra bool columns, e.g. is_query/is_gallery of a retrieval test split]

Shards are written to a temporary folder and renamed into place, so an interrupted conversion leaves only
whole shards and continues where it stopped. Images are stored as their original encoded bytes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from .sources import ONDISK_FORMAT, hf_datasets


class DatasetWriter:
    def __init__(self, out: str | Path, name: str, classes: list[str], **extra):
        self.out = Path(out)
        self.name, self.classes, self.extra = name, list(classes), extra
        self.out.mkdir(parents=True, exist_ok=True)

    def shard_dir(self, split: str, shard: str) -> Path:
        return self.out / split / shard

    def has(self, split: str, shard: str) -> bool:
        return (self.shard_dir(split, shard) / "state.json").is_file()

    def write(self, split: str, shard: str, images: list[bytes], labels: list[int], paths: list[str],
              columns: dict[str, list[bool]] | None = None) -> None:
        """One shard; `columns` adds boolean columns (one value per image), the same in every shard of a split."""
        datasets = hf_datasets()

        columns = columns or {}
        features = datasets.Features({"image": datasets.Image(), "label": datasets.Value("int64"),
                                      "path": datasets.Value("string"),
                                      **{name: datasets.Value("bool") for name in columns}})
        table = datasets.Dataset.from_dict(
            {"image": [{"bytes": b, "path": None} for b in images], "label": labels, "path": paths,
             **{name: [bool(v) for v in values] for name, values in columns.items()}},
            features=features)
        final = self.shard_dir(split, shard)
        tmp = final.with_name(final.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        table.save_to_disk(str(tmp))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)

    def finish(self, splits: dict[str, list[str]]) -> Path:
        missing = [f"{s}/{sh}" for s, shards in splits.items() for sh in shards if not self.has(s, sh)]
        if missing:
            raise RuntimeError(f"shards missing before finish: {missing[:3]}")
        meta = {"format": ONDISK_FORMAT, "name": self.name, "classes": self.classes,
                "splits": {s: [f"{s}/{sh}" for sh in shards] for s, shards in splits.items()}, **self.extra}
        from ..files import atomic_write_bytes

        atomic_write_bytes(self.out / "dataset.json", (json.dumps(meta, indent=1) + "\n").encode())
        return self.out / "dataset.json"
