"""Read a TensorFlow checkpoint (the V2 "tensor bundle" that tf.train.Saver writes) without TensorFlow.

Why not TensorFlow's own reader: it would make a 1.3 GB package, pinned below numpy 2 and to Python
3.11 at most, a dependency for the sake of reading a few hundred tensors. The format is small and stable:
- `PREFIX.index` is a LevelDB-style sorted table (uncompressed blocks, prefix-compressed keys) mapping each
  variable name to a BundleEntryProto: dtype, shape, shard, offset and size in the data file;
  the empty key holds the BundleHeaderProto (number of shards, endianness);
- `PREFIX.data-SSSSS-of-NNNNN` holds the raw little-endian tensor bytes;
- the folder's `checkpoint` file (a text proto) names the latest prefix.
The tests read real checkpoints written by TensorFlow (tests/fixtures/official, made by
tools/official_fixtures.py) and compare against TensorFlow's own outputs.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WeightsError

_TABLE_MAGIC = 0xDB4775248B80FB57
_FOOTER = 48  # two block handles (varints, padded to 40 bytes) + the 8-byte magic
_TRAILER = 5  # after every block: compression type (1 byte) + crc32 (4 bytes)
# tensorflow/core/framework/types.proto: the numeric types a model checkpoint holds
_DTYPES = {1: np.float32, 2: np.float64, 3: np.int32, 4: np.uint8, 5: np.int16, 6: np.int8, 9: np.int64,
           10: np.bool_, 17: np.uint16, 19: np.float16, 22: np.uint32, 23: np.uint64}


@dataclass(frozen=True)
class Entry:
    """Where one tensor lives: dtype code, shape, data shard, byte offset and size."""

    dtype: int
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of a serialized protobuf message; values of length-delimited
    fields are their bytes, fixed-width fields their integer."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            n, pos = _varint(buf, pos)
            value, pos = buf[pos:pos + n], pos + n
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        else:
            raise ValueError(f"protobuf wire type {wire}")
        yield field, wire, value


def _shape(buf: bytes) -> tuple[int, ...]:
    dims = []
    for field, _, value in _fields(buf):
        if field == 2:  # TensorShapeProto.dim
            size = next((v for f, _, v in _fields(value) if f == 1), 0)
            dims.append(size - (1 << 64) if size >= 1 << 63 else size)
        elif field == 3 and value:
            raise ValueError("a tensor of unknown rank")
    return tuple(dims)


def _entry(name: str, buf: bytes) -> Entry:
    dtype = shard = offset = size = 0
    shape: tuple[int, ...] = ()
    for field, _, value in _fields(buf):
        if field == 1:
            dtype = value
        elif field == 2:
            shape = _shape(value)
        elif field == 3:
            shard = value
        elif field == 4:
            offset = value
        elif field == 5:
            size = value
        elif field == 7:
            raise WeightsError(f"checkpoint variable {name} is partitioned into slices, which this reader does "
                               f"not support; re-save the checkpoint without partitioned variables")
    return Entry(dtype, shape, shard, offset, size)


def _block(data: bytes, offset: int, size: int, where: Path) -> list[tuple[bytes, bytes]]:
    """The (key, value) entries of one table block."""
    if offset + size + _TRAILER > len(data):
        raise WeightsError(f"{where} is truncated (a block ends at byte {offset + size + _TRAILER}, the file has "
                           f"{len(data)}); copy the checkpoint again")
    if data[offset + size] != 0:
        raise WeightsError(f"{where} has compressed blocks (type {data[offset + size]}), which TensorFlow's "
                           f"checkpoints do not use; is it a TensorFlow checkpoint index?")
    block = data[offset:offset + size]
    restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    end = len(block) - 4 - 4 * restarts
    entries, pos, key = [], 0, b""
    while pos < end:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        length, pos = _varint(block, pos)
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        entries.append((key, block[pos:pos + length]))
        pos += length
    return entries


def _read_index(path: Path) -> tuple[dict[str, Entry], int]:
    data = path.read_bytes()
    if len(data) < _FOOTER or struct.unpack_from("<Q", data, len(data) - 8)[0] != _TABLE_MAGIC:
        raise WeightsError(f"{path} is not a TensorFlow checkpoint index (no table footer); point at the "
                           f"checkpoint folder or its PREFIX.index file")
    try:
        footer = data[len(data) - _FOOTER:]
        _, pos = _varint(footer, 0)  # the metaindex handle: unused (no filters)
        _, pos = _varint(footer, pos)
        index_offset, pos = _varint(footer, pos)
        index_size, _ = _varint(footer, pos)
        entries: dict[str, Entry] = {}
        shards = 1
        for _, handle in _block(data, index_offset, index_size, path):
            offset, pos = _varint(handle, 0)
            size, _ = _varint(handle, pos)
            for key, value in _block(data, offset, size, path):
                if key == b"":  # BundleHeaderProto
                    for field, _, v in _fields(value):
                        if field == 1:
                            shards = v
                        elif field == 2 and v != 0:
                            raise WeightsError(f"{path} was written big-endian; only little-endian checkpoints "
                                               f"are supported")
                    continue
                name = key.decode()
                entries[name] = _entry(name, value)
    except (ValueError, struct.error, UnicodeDecodeError) as e:
        raise WeightsError(f"{path} is not a readable TensorFlow checkpoint index ({e})") from None
    return entries, shards


_CKPT_LINE = re.compile(r'^model_checkpoint_path:\s*"(.*)"\s*$', re.M)


def resolve_prefix(source: str | Path) -> Path:
    """The checkpoint prefix a user means: a folder (its `checkpoint` file names the latest prefix, or its
    only *.index file), a prefix, or the prefix's .index / .data file itself."""
    path = Path(source)
    if path.is_dir():
        index_file = path / "checkpoint"
        if index_file.is_file():
            m = _CKPT_LINE.search(index_file.read_text(errors="replace"))
            if not m:
                raise WeightsError(f"{index_file} names no model_checkpoint_path; pass the checkpoint prefix "
                                   f"itself (DIR/model.ckpt-STEP)")
            named = Path(m.group(1))
            # Released checkpoints were written on other machines: an absolute path there is a name here.
            for prefix in (path / named, path / named.name):
                if prefix.with_name(prefix.name + ".index").is_file():
                    return prefix
            raise WeightsError(f"{index_file} names {m.group(1)}, but {path / named.name}.index does not exist; "
                               f"copy that checkpoint's .index and .data files into {path}")
        indexes = sorted(path.glob("*.index"))
        if len(indexes) == 1:
            return indexes[0].with_suffix("")
        if not indexes:
            raise WeightsError(f"{path} holds no TensorFlow checkpoint (no `checkpoint` file and no *.index); "
                               f"point at the folder that holds model.ckpt-STEP.index and .data files")
        raise WeightsError(f"{path} holds {len(indexes)} checkpoints and no `checkpoint` file to choose; pass one "
                           f"prefix, e.g. {indexes[-1].with_suffix('')}")
    if path.suffix == ".index" or re.search(r"\.data-\d{5}-of-\d{5}$", path.name):
        path = path.with_name(re.sub(r"\.(index|data-\d{5}-of-\d{5})$", "", path.name))
    if path.with_name(path.name + ".index").is_file():
        return path
    raise WeightsError(f"no TensorFlow checkpoint at {source} (looked for {path.name}.index); pass the checkpoint "
                       f"folder or its prefix DIR/model.ckpt-STEP")


class Checkpoint:
    """The variables of a TensorFlow V2 checkpoint: `entries` (name -> Entry) and `read(name)`."""

    def __init__(self, source: str | Path):
        self.prefix = resolve_prefix(source)
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        self.entries, shards = _read_index(self.index_path)
        self.data_paths = [self.prefix.with_name(f"{self.prefix.name}.data-{i:05d}-of-{shards:05d}")
                           for i in range(shards)]
        for p in self.data_paths:
            if not p.is_file():
                raise WeightsError(f"checkpoint data file {p} is missing; copy it next to {self.index_path.name}")
        sizes = [p.stat().st_size for p in self.data_paths]
        for name, e in self.entries.items():
            if e.shard >= shards or e.offset + e.size > sizes[e.shard]:
                where = self.data_paths[min(e.shard, shards - 1)]
                raise WeightsError(f"{where} is truncated: variable {name} needs bytes up to {e.offset + e.size}, "
                                   f"the file has {sizes[min(e.shard, shards - 1)]}; copy the checkpoint again")

    def shapes(self) -> dict[str, tuple[int, ...]]:
        return {name: e.shape for name, e in self.entries.items()}

    def read(self, name: str) -> np.ndarray:
        e = self.entries[name]
        if e.dtype not in _DTYPES:
            raise WeightsError(f"checkpoint variable {name} has TensorFlow dtype {e.dtype}, which is not numeric")
        dtype = np.dtype(_DTYPES[e.dtype]).newbyteorder("<")
        count = int(np.prod(e.shape, dtype=np.int64))
        if count * dtype.itemsize != e.size:
            raise WeightsError(f"checkpoint variable {name}: {e.size} bytes do not hold shape {e.shape}")
        array = np.empty(count, dtype=dtype)
        with open(self.data_paths[e.shard], "rb") as f:
            f.seek(e.offset)
            if f.readinto(memoryview(array).cast("B")) != e.size:
                raise WeightsError(f"{self.data_paths[e.shard]} ended inside variable {name}; copy it again")
        return array.reshape(e.shape)

    def files(self) -> list[Path]:
        return [self.index_path, *self.data_paths]
