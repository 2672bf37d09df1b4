"""Where images come from, behind one interface: the embedded set, a data_prep folder, an image folder, the hub.

Every source gives `Records`: a length, a label per index, an identifier (path or id) per index, `load(i)`
that returns an RGB PIL image or raises `BadImage`, and `load_tensor(i)`, the same pixels as a uint8 (3, H, W)
tensor. Class names travel with the records.
"""

from __future__ import annotations

import abc
import io
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torchvision.transforms.v2.functional import pil_to_tensor

from ..errors import TransferError
from ..recipe import DataSection
from . import embedded

log = logging.getLogger("transfer")

ONDISK_FORMAT = "transfer.dataset/1"
# Modes that convert to RGB faithfully; 16/32-bit integer and float images do not, so they are rejected.
_CONVERTIBLE_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "La"}


class DataError(TransferError):
    """A dataset that is missing, empty or malformed."""


def hf_datasets():
    """The `datasets` package, with its own progress bars off: they would interleave with ours (and with
    the log lines), and say nothing that ours do not."""
    import datasets

    datasets.disable_progress_bars()
    return datasets


class BadImage(Exception):
    """One unreadable image: truncated, not an image, or a mode that does not convert to RGB."""


def decode_image(data: bytes | str | Path) -> Image.Image:
    """Open and fully decode an image (so truncation shows now, not later), as RGB."""
    try:
        with warnings.catch_warnings():
            # PIL only warns between 1x and 2x its pixel limit: a decompression bomb either way, a bad image
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data) if isinstance(data, bytes) else data)
            img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as e:
        raise BadImage(f"{type(e).__name__}: {e}") from None
    if img.mode not in _CONVERTIBLE_MODES:
        raise BadImage(f"unsupported image mode {img.mode}; convert it to RGB")
    return img if img.mode == "RGB" else img.convert("RGB")  # most photos are RGB already: no copy


_JPEG_START = b"\xff\xd8\xff"


def decode_tensor(data: bytes | str | Path) -> torch.Tensor:
    """`decode_image` as a uint8 (3, H, W) tensor. JPEGs go straight to a tensor through TorchCodec's libjpeg-turbo
    decoder: the same pixels as PIL's (grey and CMYK files converted alike) in about two thirds of the time of
    decoding with PIL and converting. Anything else, and any JPEG that decoder refuses (truncated, unsupported),
    goes through PIL, which decides whether it is a bad image."""
    try:
        raw = data if isinstance(data, bytes) else Path(data).read_bytes()  # read once, for either decoder
    except OSError as e:
        raise BadImage(f"{type(e).__name__}: {e}") from None
    if raw.startswith(_JPEG_START):
        # imported here: only JPEG decoding needs TorchCodec (and its native library), not the rest of the
        # package (a GPU image with its own torch but no TorchCodec runs every in-memory source)
        from torchcodec.decoders import decode_jpeg

        try:
            return decode_jpeg(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode="RGB")
        except RuntimeError:
            pass  # refused: PIL's verdict below
    return pil_to_tensor(decode_image(raw))


@dataclass
class Records(abc.ABC):
    """Base: labels and identifiers as arrays, images loaded on demand."""

    labels: np.ndarray
    ids: list[str]
    classes: list[str]
    # Retrieval test splits may name which items are queries and which are gallery (In-Shop); None: all are both.
    is_query: np.ndarray | None = field(default=None, kw_only=True)
    is_gallery: np.ndarray | None = field(default=None, kw_only=True)
    made_split: bool = field(default=False, kw_only=True)  # drawn here (seeded, stratified), not given

    def __len__(self) -> int:
        return len(self.labels)

    @abc.abstractmethod
    def load(self, index: int) -> Image.Image:
        """The image at `index` as RGB, or raise BadImage."""

    def load_tensor(self, index: int) -> torch.Tensor:
        """The image at `index` as a uint8 (3, H, W) tensor, or raise BadImage; sources with a faster way override."""
        return pil_to_tensor(self.load(index))


@dataclass
class ArrayRecords(Records):
    images: np.ndarray = None  # (N, H, W, 3) uint8

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index])

    def load_tensor(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.images[index]).permute(2, 0, 1)  # a view: transforms never write in place


@dataclass
class FileRecords(Records):
    def load(self, index: int) -> Image.Image:
        return decode_image(self.ids[index])

    def load_tensor(self, index: int) -> torch.Tensor:
        return decode_tensor(self.ids[index])


@dataclass
class HFRecords(Records):
    table: object = None  # a datasets.Dataset whose image column is not decoded
    image_column: str = "image"

    def load(self, index: int) -> Image.Image:
        return self._decode(index, decode_image, lambda img: img)

    def load_tensor(self, index: int) -> torch.Tensor:
        return self._decode(index, decode_tensor, pil_to_tensor)

    def _decode(self, index: int, decode, from_pil):
        item = self.table[int(index)][self.image_column]
        if isinstance(item, dict):
            data = item.get("bytes") or item.get("path")
            if data is None:
                raise BadImage("empty image record")
            return decode(data)
        if isinstance(item, Image.Image):
            return from_pil(item.convert("RGB"))
        raise BadImage(f"image column holds {type(item).__name__}, not an image")


def _embedded(data: DataSection, split: str) -> Records:
    e = data.embedded
    per_class = e.train_per_class if split == "train" else e.val_per_class
    most = embedded.GLYPH_CLASSES if e.kind == "glyphs" else embedded.MAX_SHAPE_CLASSES
    if e.classes > most:
        raise DataError(f"data.embedded.classes={e.classes}: the embedded {e.kind} have at most {most} classes"
                        + ("; lower it, or set data.embedded.kind=glyphs" if e.kind == "shapes" else ""))
    try:
        images, labels = embedded.load_split(e.classes, per_class, e.resolution, e.seed, split, e.kind)
    except ValueError as err:
        raise DataError(f"data.train_split/val_split: {err}") from None
    return ArrayRecords(labels, [f"embedded/{split}/{i}" for i in range(len(labels))],
                        embedded.class_names(e.classes, e.kind), images)


def _digits(data: DataSection, split: str) -> Records:
    images, labels = embedded.load_digits_split(data.embedded.resolution, split, data.split_seed,
                                                data.val_fraction, by_class=data.split_by == "class")
    return ArrayRecords(labels, [f"digits/{split}/{i}" for i in range(len(labels))], [str(d) for d in range(10)],
                        images)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int, classes: list[str], where: str
                     ) -> np.ndarray:
    """A boolean mask of the validation items: seeded and stratified, so every class is in both parts."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels, minlength=len(classes))
    lonely = [classes[i] for i in np.flatnonzero(counts < 2)]
    if lonely:
        raise DataError(f"{where}: classes with fewer than 2 images cannot be split into train and validation: "
                        f"{', '.join(lonely[:5])}; add images or give a split column")
    _, val_idx = train_test_split(np.arange(len(labels)), test_size=val_fraction, stratify=labels,
                                  random_state=seed)
    mask = np.zeros(len(labels), dtype=bool)
    mask[val_idx] = True
    return mask


def split_mask(labels: np.ndarray, data: DataSection, classes: list[str], where: str) -> np.ndarray:
    """The validation items of data without a split: stratified by image, or whole classes (data.split_by)."""
    if data.split_by == "class":
        return np.isin(labels, embedded.held_out_classes(len(classes), data.val_fraction))
    return stratified_split(labels, data.val_fraction, data.split_seed, classes, where)


def _select(records: Records, mask: np.ndarray) -> Records:
    """The records where `mask` is true (any source), marked as a split drawn here."""
    keep = np.flatnonzero(mask)
    flags = {k: None if getattr(records, k) is None else getattr(records, k)[keep] for k in ("is_query", "is_gallery")}
    labels, ids = records.labels[keep], [records.ids[i] for i in keep]
    if isinstance(records, ArrayRecords):
        return ArrayRecords(labels, ids, records.classes, records.images[keep], made_split=True, **flags)
    if isinstance(records, HFRecords):
        return HFRecords(labels, ids, records.classes, records.table.select(keep), records.image_column,
                         made_split=True, **flags)
    return FileRecords(labels, ids, records.classes, made_split=True, **flags)


def labelled_subset(records: Records, per_class: int, seed: int) -> Records:
    """`per_class` images of each class (all of a class that has fewer), drawn with `seed`: the same draw for
    the same data and seed, and a draw of n is part of the draw of any m > n (the label-budget curve nests)."""
    order = np.random.default_rng(seed).permutation(len(records))
    by_class = order[np.argsort(records.labels[order], kind="stable")]  # classes in turn, each in seeded order
    starts = np.searchsorted(records.labels[by_class], records.labels[by_class])
    rank = np.empty(len(records), dtype=np.int64)
    rank[by_class] = np.arange(len(records)) - starts  # each item's place among its class in the seeded order
    return _select(records, rank < per_class)


# What datasets call the split that is not for training; the first present is taken for data.val_split.
VAL_NAMES = ("validation", "val", "valid", "test")


def pick_split(split: str, available: list[str], data: DataSection, where: str) -> tuple[str, bool]:
    """(the split to read for `split`, whether to draw `split`'s part from it).

    The validation split may go by another common name (the first of VAL_NAMES there is taken, and said in
    the log). Data with a training split and nothing to validate on gives both parts from the training split
    (draw_split), so that no image is in both.
    """
    val = data.val_split if data.val_split in available else next((n for n in VAL_NAMES if n in available), None)
    if split == data.train_split and split in available:
        return split, bool(data.val_split) and val is None  # val_split "": no validation, all of it trains
    if split in available:
        return split, False
    if split == data.val_split:
        if val is not None:
            log.info("%s has no split %r: validating on its split %r (set data.val_split to choose)", where, split,
                     val)
            return val, False
        if data.train_split in available:
            return data.train_split, True
    raise DataError(f"{where} has no split {split!r} (its splits: {', '.join(available) or 'none'}); set "
                    f"data.train_split / data.val_split")


def draw_split(pool: Records, data: DataSection, split: str, where: str) -> Records:
    """The training or the validation part of data without a validation split (seeded; data.split_by)."""
    mask = split_mask(pool.labels, data, pool.classes, where)
    if split != data.train_split:
        log.info("%s has no validation split: validating on a seeded %s %.0f%% of it (recorded in the run's "
                 "split.csv)", where, "class-wise" if data.split_by == "class" else "stratified",
                 100 * data.val_fraction)
    return _select(pool, ~mask if split == data.train_split else mask)


_TRUE, _FALSE = {"1", "true", "yes", "y"}, {"0", "false", "no", "n", ""}


def _flag(value: str | None, path: Path, line: int, column: str) -> bool:
    v = (value or "").strip().lower()
    if v not in _TRUE | _FALSE:
        raise DataError(f"{path}:{line}: {column}={value!r} is not a flag; use 1/0 or true/false")
    return v in _TRUE


def _csv(data: DataSection, split: str, classes: list[str] | None) -> Records:
    """path,label[,split][,is_query,is_gallery]: the plain table that describes any dataset."""
    import csv

    path = Path(data.path)
    if not path.is_file():
        raise _missing(data, path, "a CSV file with columns path,label[,split][,is_query,is_gallery]")
    rows = []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "label"} <= set(reader.fieldnames):
            raise DataError(f"{path}:1: the header must name the columns path,label[,split]; got "
                            f"{','.join(reader.fieldnames or [])}")
        has_flags = {"is_query", "is_gallery"} <= set(reader.fieldnames)
        for row in reader:
            line = reader.line_num
            if None in row or any(row.get(k) in (None, "") for k in ("path", "label")):
                raise DataError(f"{path}:{line}: unreadable row {row!r}: expected path,label[,split]")
            flags = tuple(_flag(row[c], path, line, c) for c in ("is_query", "is_gallery")) if has_flags else None
            rows.append((line, row["path"], row["label"], (row.get("split") or "").strip(), flags))
    if not rows:
        raise DataError(f"{path} lists no images")
    found = sorted({r[2] for r in rows})
    classes = classes or found
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(f"{path}: labels not in the training split: {', '.join(unknown[:5])}")
    index = {c: i for i, c in enumerate(classes)}
    files = [str((path.parent / r[1]) if not Path(r[1]).is_absolute() else Path(r[1])) for r in rows]
    labels = np.asarray([index[r[2]] for r in rows], dtype=np.int64)
    flags = {}
    if has_flags:
        flags = {"is_query": np.array([r[4][0] for r in rows]), "is_gallery": np.array([r[4][1] for r in rows])}
    everything = FileRecords(labels, files, classes, **flags)
    splits = [r[3] for r in rows]
    if all(splits):
        name, draw = pick_split(split, sorted(set(splits)), data, str(path))
        selected = _select(everything, np.array([s == name for s in splits]))
        if draw:  # only training rows: the validation part is drawn from them
            return draw_split(selected, data, split, str(path))
        selected.made_split = False
        return selected
    if any(splits):
        first = next(r[0] for r in rows if not r[3])
        raise DataError(f"{path}:{first}: the split column is empty here but not elsewhere; fill it in every row "
                        f"or in none")
    mask = split_mask(labels, data, classes, str(path))
    return _select(everything, ~mask if split == data.train_split else mask)


def _missing(data: DataSection, looked: Path, what: str) -> DataError:
    hint = f"; prepare it with: {data.prepare}" if data.prepare else "; set data.path or pass --data PATH"
    return DataError(f"dataset not found: looked for {what} at {looked}{hint}")


def _hf_records(table, data: DataSection, where: str, classes: list[str] | None = None) -> Records:
    datasets = hf_datasets()

    for col in (data.image_column, data.label_column):
        if col not in table.column_names:
            raise DataError(f"{where} has no column {col!r} (columns: {', '.join(table.column_names)}); "
                            f"set data.image_column / data.label_column")
    feature = table.features[data.label_column]
    if isinstance(table.features[data.image_column], datasets.Image):
        table = table.cast_column(data.image_column, datasets.Image(decode=False))
    values = table[data.label_column]
    if isinstance(feature, datasets.ClassLabel):
        classes = list(feature.names)
        labels = np.asarray(values, dtype=np.int64)
    elif getattr(feature, "dtype", None) in ("string", "large_string"):  # class names: sorted, as folders are
        classes = classes or sorted(set(values))
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(values) - set(index))
        if unknown:
            raise DataError(f"{where}: labels not in the training split: {', '.join(map(str, unknown[:5]))}")
        labels = np.asarray([index[v] for v in values], dtype=np.int64)
    else:
        try:
            labels = np.asarray(values, dtype=np.int64)
        except (TypeError, ValueError):
            raise DataError(f"{where}: column {data.label_column!r} holds {feature}, not class ids or names; "
                            f"set data.label_column") from None
        if classes is None:
            classes = [str(i) for i in range(int(labels.max()) + 1 if len(labels) else 0)]
    ids = [f"{where}#{i}" for i in range(len(labels))]
    if "path" in table.column_names:
        ids = [str(p) for p in table["path"]]
    flags = {c: np.asarray(table[c], dtype=bool) for c in ("is_query", "is_gallery") if c in table.column_names}
    return HFRecords(labels, ids, classes, table, data.image_column, **flags)


def _disk(data: DataSection, split: str, classes: list[str] | None) -> Records:
    datasets = hf_datasets()

    root = Path(data.path)
    meta_file = root / "dataset.json"
    if meta_file.is_file():
        meta = json.loads(meta_file.read_text())
        name, draw = pick_split(split, list(meta.get("splits", {})), data, str(root))
        table = datasets.concatenate_datasets([datasets.load_from_disk(str(root / s)) for s in meta["splits"][name]])
        table = table.cast_column(data.label_column, datasets.ClassLabel(names=meta["classes"]))
        records = _hf_records(table, data, f"{root}/{name}", classes)
        return draw_split(records, data, split, str(root)) if draw else records
    if not (root / "dataset_dict.json").is_file() and not (root / "state.json").is_file():
        raise _missing(data, root, "dataset.json (a data_prep folder) or a save_to_disk dataset")
    return _from_tables(datasets.load_from_disk(str(root)), data, split, str(root), classes)


def _from_tables(loaded, data: DataSection, split: str, where: str, classes: list[str] | None) -> Records:
    """One split of a HuggingFace DatasetDict (by name, or drawn from its training split), or of a Dataset
    without splits (drawn from all of it): never the same rows for training and validation."""
    datasets = hf_datasets()

    if isinstance(loaded, datasets.DatasetDict):
        name, draw = pick_split(split, list(loaded), data, where)
        records = _hf_records(loaded[name], data, f"{where}/{name}", classes)
        return draw_split(records, data, split, where) if draw else records
    return draw_split(_hf_records(loaded, data, where, classes), data, split, where)


def _folder(data: DataSection, split: str, classes: list[str] | None) -> Records:
    base = Path(data.path)
    if not base.is_dir():
        raise _missing(data, base, "a folder of class sub-folders (or of split folders holding them)")
    subfolders = sorted(d.name for d in base.iterdir() if d.is_dir())
    if data.train_split not in subfolders and not any(n in subfolders for n in (data.val_split, *VAL_NAMES)):
        # CLASS/IMAGE directly under the path: one pool, split here (seeded, stratified).
        return draw_split(_class_folders(base, classes), data, split, data.path)
    name, draw = pick_split(split, subfolders, data, str(base))
    records = _class_folders(base / name, classes)
    return draw_split(records, data, split, str(base)) if draw else records


def _class_folders(root: Path, classes: list[str] | None) -> FileRecords:
    """ROOT/CLASS/IMAGE files; `classes` (the training split's) fixes the label order."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

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


def _hub(data: DataSection, split: str, classes: list[str] | None) -> Records:
    datasets = hf_datasets()

    if not data.path:
        raise DataError("data.source=hub needs data.path: the dataset's hub name, e.g. ILSVRC/imagenet-1k")
    if data.path.lower() in _HF_LOADERS:
        raise DataError(f"data.path={data.path!r} with data.source=hub names a HuggingFace loader, not a dataset "
                        f"(it would read the current folder); for images in class folders use data.source=folder "
                        f"--data DIR")
    try:
        loaded = datasets.load_dataset(data.path)
    except FileNotFoundError as e:
        raise DataError(f"hub dataset {data.path!r} split {split!r} could not be found ({e})") from None
    except ConnectionError as e:
        raise DataError(f"hub dataset {data.path!r} could not be reached ({e}); check the network and "
                        f"`huggingface-cli login` for gated datasets") from None
    except ValueError as e:
        raise DataError(f"hub dataset {data.path!r}: {e}") from None
    return _from_tables(loaded, data, split, data.path, classes)


# HuggingFace's packaged loaders: as a hub name they read local files, by default those of the current folder.
_HF_LOADERS = {"imagefolder", "audiofolder", "videofolder", "csv", "json", "parquet", "text", "arrow", "pandas",
               "webdataset", "sql", "generator", "cache", "pdffolder"}


def open_split(data: DataSection, split: str, classes: list[str] | None = None) -> Records:
    """Records of one split. `classes` (from the training split) fixes the label order of folder datasets."""
    if data.source == "embedded":
        records = _embedded(data, split)
    elif data.source == "digits":
        records = _digits(data, split)
    elif data.path is None:
        raise DataError(f"data.source={data.source} needs data.path (or --data PATH)"
                        + (f"; prepare the data with: {data.prepare}" if data.prepare else ""))
    elif data.source == "disk":
        if not Path(data.path).exists():
            raise _missing(data, Path(data.path), "a data_prep folder")
        records = _disk(data, split, classes)
    elif data.source == "folder":
        records = _folder(data, split, classes)
    elif data.source == "csv":
        records = _csv(data, split, classes)
    else:
        records = _hub(data, split, classes)
    if len(records) == 0:
        raise DataError(f"split {split!r} of {data.path or data.source} is empty")
    return records
