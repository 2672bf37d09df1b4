"""Where images come from, behind one interface: the embedded set, a data_prep folder, an image folder, the hub.

Every source gives `Records`: a length, a label per index, an identifier (path or id) per index, and `load(i)`
that returns an RGB PIL image or raises `BadImage`. Class names travel with the records.
"""

from __future__ import annotations

import abc
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ..errors import TransferError
from ..recipe import DataSection
from . import embedded

ONDISK_FORMAT = "transfer.dataset/1"
# Modes that convert to RGB faithfully; 16/32-bit integer and float images do not, so they are rejected.
_CONVERTIBLE_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "La"}


class DataError(TransferError):
    """A dataset that is missing, empty or malformed."""


class BadImage(Exception):
    """One unreadable image: truncated, not an image, or a mode that does not convert to RGB."""


def decode_image(data: bytes | str | Path) -> Image.Image:
    """Open and fully decode an image (so truncation shows now, not later), as RGB."""
    try:
        img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise BadImage(f"{type(e).__name__}: {e}") from None
    if img.mode not in _CONVERTIBLE_MODES:
        raise BadImage(f"unsupported image mode {img.mode}; convert it to RGB")
    return img.convert("RGB")


@dataclass
class Records(abc.ABC):
    """Base: labels and identifiers as arrays, images loaded on demand."""

    labels: np.ndarray
    ids: list[str]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @abc.abstractmethod
    def load(self, index: int) -> Image.Image:
        """The image at `index` as RGB, or raise BadImage."""


@dataclass
class ArrayRecords(Records):
    images: np.ndarray = None  # (N, H, W, 3) uint8

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])


@dataclass
class FileRecords(Records):
    def load(self, index: int) -> Image.Image:
        return decode_image(self.ids[index])


@dataclass
class HFRecords(Records):
    table: object = None  # a datasets.Dataset whose image column is not decoded
    image_column: str = "image"

    def load(self, index: int) -> Image.Image:
        item = self.table[int(index)][self.image_column]
        if isinstance(item, dict):
            data = item.get("bytes") or item.get("path")
            if data is None:
                raise BadImage("empty image record")
            return decode_image(data)
        if isinstance(item, Image.Image):
            return item.convert("RGB")
        raise BadImage(f"image column holds {type(item).__name__}, not an image")


def _embedded(data: DataSection, split: str) -> Records:
    e = data.embedded
    per_class = e.train_per_class if split == "train" else e.val_per_class
    try:
        images, labels = embedded.load_split(e.classes, per_class, e.resolution, e.seed, split)
    except ValueError as err:
        raise DataError(f"data.train_split/val_split: {err}") from None
    return ArrayRecords(labels, [f"embedded/{split}/{i}" for i in range(len(labels))],
                        embedded.class_names(e.classes), images)


def _missing(data: DataSection, looked: Path, what: str) -> DataError:
    hint = f"; prepare it with: {data.prepare}" if data.prepare else "; set data.path or pass --data PATH"
    return DataError(f"dataset not found: looked for {what} at {looked}{hint}")


def _hf_records(table, data: DataSection, where: str) -> Records:
    import datasets

    for col in (data.image_column, data.label_column):
        if col not in table.column_names:
            raise DataError(f"{where} has no column {col!r} (columns: {', '.join(table.column_names)}); "
                            f"set data.image_column / data.label_column")
    feature = table.features[data.label_column]
    classes = list(feature.names) if isinstance(feature, datasets.ClassLabel) else None
    if isinstance(table.features[data.image_column], datasets.Image):
        table = table.cast_column(data.image_column, datasets.Image(decode=False))
    labels = np.asarray(table[data.label_column], dtype=np.int64)
    if classes is None:
        classes = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    ids = [f"{where}#{i}" for i in range(len(labels))]
    if "path" in table.column_names:
        ids = [str(p) for p in table["path"]]
    return HFRecords(labels, ids, classes, table, data.image_column)


def _disk(data: DataSection, split: str) -> Records:
    import datasets

    root = Path(data.path)
    meta_file = root / "dataset.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        shards = meta.get("splits", {}).get(split)
        if not shards:
            raise DataError(f"{root} has no split {split!r} (splits: {', '.join(meta.get('splits', {}))}); "
                            f"set data.train_split / data.val_split")
        table = datasets.concatenate_datasets([datasets.load_from_disk(str(root / s)) for s in shards])
        table = table.cast_column(data.label_column, datasets.ClassLabel(names=meta["classes"]))
        return _hf_records(table, data, f"{root}/{split}")
    if not (root / "dataset_dict.json").is_file() and not (root / "state.json").is_file():
        raise _missing(data, root, "dataset.json (a data_prep folder) or a save_to_disk dataset")
    loaded = datasets.load_from_disk(str(root))
    if isinstance(loaded, datasets.DatasetDict):
        if split not in loaded:
            raise DataError(f"{root} has no split {split!r} (splits: {', '.join(loaded)})")
        loaded = loaded[split]
    return _hf_records(loaded, data, f"{root}/{split}")


def _folder(data: DataSection, split: str, classes: list[str] | None) -> Records:
    from torchvision.datasets.folder import IMG_EXTENSIONS

    root = Path(data.path) / split
    if not root.is_dir():
        raise _missing(data, root, f"a folder of class sub-folders for split {split!r}")
    found = sorted(d.name for d in root.iterdir() if d.is_dir())
    classes = classes or found
    if not classes:
        raise DataError(f"{root} has no class sub-folders; expected {root}/CLASS/IMAGE.jpg")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{root} has class folders not in the training split: {', '.join(unknown[:5])}")
    paths, labels = [], []
    for label, name in enumerate(classes):
        folder = root / name
        files = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        files = [p for p in files if p.suffix.lower() in IMG_EXTENSIONS]
        paths += [str(p) for p in files]
        labels += [label] * len(files)
    if not paths:
        raise DataError(f"{root} holds no images ({', '.join(IMG_EXTENSIONS[:4])} ...)")
    return FileRecords(np.asarray(labels, dtype=np.int64), paths, classes)


def _hub(data: DataSection, split: str) -> Records:
    import datasets

    if not data.path:
        raise DataError("data.source=hub needs data.path: the dataset's hub name, e.g. ILSVRC/imagenet-1k")
    try:
        table = datasets.load_dataset(data.path, split=split)
    except FileNotFoundError as e:
        raise DataError(f"hub dataset {data.path!r} split {split!r} could not be found ({e})") from None
    except ConnectionError as e:
        raise DataError(f"hub dataset {data.path!r} could not be reached ({e}); check the network and "
                        f"`huggingface-cli login` for gated datasets") from None
    except ValueError as e:
        raise DataError(f"hub dataset {data.path!r}: {e}") from None
    return _hf_records(table, data, f"{data.path}/{split}")


def open_split(data: DataSection, split: str, classes: list[str] | None = None) -> Records:
    """Records of one split. `classes` (from the training split) fixes the label order of folder datasets."""
    if data.source == "embedded":
        records = _embedded(data, split)
    elif data.path is None:
        raise DataError(f"data.source={data.source} needs data.path (or --data PATH)"
                        + (f"; prepare the data with: {data.prepare}" if data.prepare else ""))
    elif data.source == "disk":
        if not Path(data.path).exists():
            raise _missing(data, Path(data.path), "a data_prep folder")
        records = _disk(data, split)
    elif data.source == "folder":
        records = _folder(data, split, classes)
    else:
        records = _hub(data, split)
    if len(records) == 0:
        raise DataError(f"split {split!r} of {data.path or data.source} is empty")
    return records
