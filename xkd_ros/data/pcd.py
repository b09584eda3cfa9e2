"""PCD files (the Point Cloud Library's format): ascii, binary and binary_compressed, read with numpy alone.

A PCD file is a text header (FIELDS, SIZE, TYPE, COUNT, WIDTH, HEIGHT, POINTS, DATA) and the points: as
text (ascii), as packed records (binary), or LZF-compressed with each field's values stored together
(binary_compressed). Kept as a frame's channels: x, y, z, then `intensity`, `ring` and the per-point time
(`time` in seconds, as Velodyne drivers publish it, or `t` in integer nanoseconds, as Ouster's do; both as
`time` in seconds) where the file has them. Other fields are dropped and listed in `PcdCloud.dropped`. An
organised cloud (HEIGHT > 1) keeps every point, NaN "no return" points included, row by row.

Written here rather than taken from pypcd4 (which installs, and would bring pydantic and a compiled LZF
module into the runtime): pypcd4 1.5.1 reads a binary file cut short by whole points as a smaller cloud,
without a word. Here a header that disagrees with the data (POINTS vs the bytes or values present, the
sizes of a compressed block) is one ValueError naming the file and the header field.

A .pcd has no calibration: the rig comes from `rig=` (a Rig or a rig file) or rig.yaml beside the files.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xkd_ros.data.frame import INTENSITY, RING, TIME, Frame
from xkd_ros.geometry import Rig

ENCODINGS = ("ascii", "binary", "binary_compressed")
RIG_FILE = "rig.yaml"
_TYPES = {("F", 4): "<f4", ("F", 8): "<f8"} | {
    (kind, size): f"<{kind.lower()}{size}" for kind in "UI" for size in (1, 2, 4, 8)
}
_HEADER_LIMIT = 1 << 16  # a header longer than this has no DATA line: not a PCD file


@dataclass(frozen=True)
class PcdHeader:
    """What the header says: per field its name, byte size, type (F, U, I) and count; the cloud's size."""

    fields: tuple[str, ...]
    sizes: tuple[int, ...]
    types: tuple[str, ...]
    counts: tuple[int, ...]
    width: int
    height: int
    points: int
    encoding: str

    def dtype(self) -> np.dtype:
        """One packed record per point; fields with COUNT > 1 become sub-arrays, names are positional
        (PCL repeats `_` for padding fields)."""
        return np.dtype(
            [
                (f"f{i}", _TYPES[(kind, size)], (count,) if count > 1 else ())
                for i, (kind, size, count) in enumerate(zip(self.types, self.sizes, self.counts, strict=True))
            ]
        )


@dataclass(frozen=True)
class PcdCloud:
    """A PCD file's points as float32 (N, C), their channel names, its organisation and what was dropped."""

    points: np.ndarray
    channels: tuple[str, ...]
    width: int
    height: int
    dropped: tuple[str, ...]


def read_pcd_header(blob: bytes, path: Path) -> tuple[PcdHeader, int]:
    """The header of a PCD file's bytes and the offset its data starts at (after the DATA line)."""
    entries: dict[str, list[str]] = {}
    position, limit = 0, min(len(blob), _HEADER_LIMIT)
    while "DATA" not in entries:
        if position >= limit:
            raise ValueError(f"{path}: no DATA line in the first {limit} bytes: not a PCD file")
        line_end = blob.find(b"\n", position, limit)
        if line_end < 0:
            line_end = limit
        try:
            tokens = blob[position:line_end].decode("ascii").split()
        except UnicodeDecodeError:
            raise ValueError(
                f"{path}: no DATA line before byte {position}, where text ends: not a PCD file"
            ) from None
        position = line_end + 1
        if tokens and not tokens[0].startswith("#"):
            entries[tokens[0].upper()] = tokens[1:]
    return _parse_header(entries, path), min(position, len(blob))


def _parse_header(entries: dict[str, list[str]], path: Path) -> PcdHeader:
    def whole(key: str, default: int | None = None) -> int:
        if key not in entries and default is not None:
            return default
        values = entries.get(key)
        if not values or len(values) != 1 or not values[0].isdigit():
            raise ValueError(
                f"{path}: {key}: expected one whole number, got {' '.join(values or []) or None}"
            )
        return int(values[0])

    fields = tuple(entries.get("FIELDS", ()))
    if not fields:
        raise ValueError(f"{path}: FIELDS: missing or empty")
    columns = {}
    for key in ("SIZE", "TYPE", "COUNT"):
        values = entries.get(key, ["1"] * len(fields) if key == "COUNT" else [])
        if len(values) != len(fields):
            raise ValueError(f"{path}: {key}: {len(values)} value(s) for {len(fields)} FIELDS")
        columns[key] = values
    if not all(value.isdigit() and int(value) > 0 for key in ("SIZE", "COUNT") for value in columns[key]):
        raise ValueError(
            f"{path}: SIZE, COUNT: expected whole numbers >= 1, got {columns['SIZE']}, {columns['COUNT']}"
        )
    sizes = tuple(int(value) for value in columns["SIZE"])
    types = tuple(value.upper() for value in columns["TYPE"])
    for name, kind, size in zip(fields, types, sizes, strict=True):
        if (kind, size) not in _TYPES:
            raise ValueError(f"{path}: field {name!r}: TYPE {kind} with SIZE {size} is not a PCD type")
    width, height = whole("WIDTH"), whole("HEIGHT", 1)
    points = whole("POINTS", width * height)
    if points != width * height:
        raise ValueError(f"{path}: POINTS {points} disagrees with WIDTH x HEIGHT = {width} x {height}")
    encoding = " ".join(entries.get("DATA", [])).lower()
    if encoding not in ENCODINGS:
        raise ValueError(f"{path}: DATA: expected one of {', '.join(ENCODINGS)}, got {encoding!r}")
    counts = tuple(int(value) for value in columns["COUNT"])
    return PcdHeader(fields, sizes, types, counts, width, height, points, encoding)


def read_pcd(path: str | Path) -> PcdCloud:
    """The points of a .pcd file (module docstring: channels kept, errors)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing point cloud")
    blob = path.read_bytes()
    header, start = read_pcd_header(blob, path)
    wanted = _wanted_fields(header, path)
    if header.encoding == "ascii":
        columns = _ascii_columns(blob[start:], header, wanted, path)
    elif header.encoding == "binary":
        columns = _binary_columns(blob[start:], header, wanted, path)
    else:
        columns = _compressed_columns(blob[start:], header, wanted, path)
    points = np.empty((header.points, len(wanted)), dtype=np.float32)
    channels = []
    for k, (channel, index) in enumerate(wanted.items()):
        values = columns[index]
        if channel == TIME and header.fields[index] == "t" and header.types[index] != "F":
            values = values.astype(np.float64) * 1e-9  # Ouster: nanoseconds since the scan's start
        points[:, k] = values
        channels.append(channel)
    dropped = tuple(name for i, name in enumerate(header.fields) if i not in wanted.values())
    return PcdCloud(points, tuple(channels), header.width, header.height, dropped)


def _wanted_fields(header: PcdHeader, path: Path) -> dict[str, int]:
    """Channel name -> field index, in channel order: x, y, z, then intensity, ring, time where present."""
    index = {name: i for i, name in reversed(list(enumerate(header.fields)))}
    missing = [axis for axis in "xyz" if axis not in index]
    if missing:
        raise ValueError(f"{path}: FIELDS {' '.join(header.fields)} lack {', '.join(missing)}")
    wanted = {axis: index[axis] for axis in "xyz"}
    for channel, names in ((INTENSITY, ("intensity",)), (RING, ("ring",)), (TIME, ("time", "t"))):
        name = next((name for name in names if name in index), None)
        if name is not None:
            wanted[channel] = index[name]
    for i in wanted.values():
        if header.fields.count(header.fields[i]) > 1 or header.counts[i] != 1:
            raise ValueError(
                f"{path}: field {header.fields[i]!r}: must appear once, with COUNT 1, to be a channel"
            )
    return wanted


def _size_error(path: Path, header: PcdHeader, needed: str, found: str) -> ValueError:
    return ValueError(
        f"{path}: POINTS {header.points} (WIDTH {header.width} x HEIGHT {header.height}) needs {needed}, "
        f"the {header.encoding} data holds {found}: truncated, or POINTS wrong"
    )


def _ascii_columns(
    data: bytes, header: PcdHeader, wanted: dict[str, int], path: Path
) -> dict[int, np.ndarray]:
    per_point = sum(header.counts)
    tokens = data.split()
    if len(tokens) != header.points * per_point:
        raise _size_error(
            path, header, f"{header.points * per_point} values ({per_point} a point)", f"{len(tokens)}"
        )
    try:
        table = np.array(tokens, dtype=np.float64).reshape(header.points, per_point)
    except ValueError:
        raise ValueError(f"{path}: ascii data: a value is not a number") from None
    starts = np.cumsum((0, *header.counts))
    return {i: table[:, starts[i]] for i in wanted.values()}


def _binary_columns(
    data: bytes, header: PcdHeader, wanted: dict[str, int], path: Path
) -> dict[int, np.ndarray]:
    dtype = header.dtype()
    needed = header.points * dtype.itemsize
    if len(data) != needed:
        raise _size_error(path, header, f"{needed} bytes ({dtype.itemsize} a point)", f"{len(data)} bytes")
    records = np.frombuffer(data, dtype=dtype)
    return {i: records[f"f{i}"] for i in wanted.values()}


def _compressed_columns(
    data: bytes, header: PcdHeader, wanted: dict[str, int], path: Path
) -> dict[int, np.ndarray]:
    """binary_compressed: uint32 compressed size, uint32 uncompressed size, then the LZF block; once
    inflated, each field's values for all points lie together, fields in header order."""
    if len(data) < 8:
        raise _size_error(path, header, "an 8-byte compressed-block header", f"{len(data)} bytes")
    compressed, uncompressed = (int(value) for value in np.frombuffer(data[:8], dtype="<u4"))
    dtype = header.dtype()
    needed = header.points * dtype.itemsize
    if uncompressed != needed:
        raise _size_error(
            path,
            header,
            f"{needed} bytes ({dtype.itemsize} a point)",
            f"{uncompressed} (its uncompressed-size word)",
        )
    if compressed > len(data) - 8:
        raise ValueError(
            f"{path}: binary_compressed: the compressed-size word says {compressed} bytes, the file holds "
            f"{len(data) - 8} after it: truncated"
        )
    try:
        inflated = lzf_decompress(data[8 : 8 + compressed], uncompressed)
    except ValueError as error:
        raise ValueError(f"{path}: binary_compressed: {error}") from None
    columns, offset = {}, 0
    for i in range(len(header.fields)):
        field = dtype[f"f{i}"]
        if i in wanted.values():
            columns[i] = np.frombuffer(inflated, dtype=field.base, count=header.points, offset=offset)
        offset += field.itemsize * header.points
    return columns


def lzf_decompress(data: bytes, size: int) -> bytes:
    """Inflate an LZF block (liblzf's format, which PCL uses) to exactly `size` bytes; a corrupt or cut
    block is a ValueError. Literal runs and back-references are copied as slices: a 123k-point XYZI
    scan inflates in 0.07 s here."""
    out = bytearray(size)
    i = o = 0
    n = len(data)
    while i < n:
        control = data[i]
        i += 1
        if control < 32:  # a run of control + 1 literal bytes
            length = control + 1
            if i + length > n or o + length > size:
                raise ValueError("LZF block cut short or longer than its uncompressed size")
            out[o : o + length] = data[i : i + length]
            i += length
            o += length
            continue
        length = control >> 5  # a back-reference: copy length + 2 bytes from `distance` back
        if length == 7:
            if i >= n:
                raise ValueError("LZF block cut short")
            length += data[i]
            i += 1
        if i >= n:
            raise ValueError("LZF block cut short")
        length += 2
        distance = ((control & 31) << 8) + data[i] + 1
        i += 1
        ref = o - distance
        if ref < 0 or o + length > size:
            raise ValueError("corrupt LZF block (a reference outside the data)")
        if distance >= length:
            out[o : o + length] = out[ref : ref + length]
        else:  # overlapping: the last `distance` bytes repeat
            pattern = bytes(out[ref:o])
            out[o : o + length] = (pattern * (length // distance + 1))[:length]
        o += length
    if o != size:
        raise ValueError(f"LZF block inflates to {o} bytes, not the {size} its header says")
    return bytes(out)


class PcdDataset(Sequence[Frame]):
    """The .pcd file at `path`, or every .pcd in the folder `path` in name order, as frames.

    `rig`: a Rig or a rig file (config/<rig>.rig.yaml) for the calibration and the LiDAR's profile, else
    rig.yaml beside the files; one of them is required (a cloud's beams and intensity scale cannot be
    guessed from it). Frames have no labels and no images; names are "pcd/<file stem>".
    """

    def __init__(self, path: str | Path, rig: Rig | str | Path | None = None) -> None:
        path = Path(path)
        if path.is_file():
            self.files, folder = [path], path.parent
        else:
            self.files, folder = sorted(path.glob("*.pcd")), path
            if not self.files:
                raise FileNotFoundError(f"{path}: no .pcd files")
        if rig is None:
            if not (folder / RIG_FILE).is_file():
                raise FileNotFoundError(
                    f"{folder / RIG_FILE}: missing; a .pcd holds no calibration: pass rig= (a Rig or a rig "
                    "file such as config/<rig>.rig.yaml, `cameras: {}` for none) or put rig.yaml beside it"
                )
            rig = folder / RIG_FILE
        self.rig = rig if isinstance(rig, Rig) else Rig.load(rig)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Frame:
        path = self.files[operator.index(index)]
        cloud = read_pcd(path)
        return Frame(points=cloud.points, channels=cloud.channels, rig=self.rig, name=f"pcd/{path.stem}")
