"""PCD reader: the real HDL-64E scan written in all three encodings reads back exactly; headers that lie
about the data are one error naming the file and the header field; open_frames takes a file or a folder."""

from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, REPO

from xkd_ros.data import open_frames
from xkd_ros.data.pcd import PcdDataset, lzf_decompress, read_pcd
from xkd_ros.geometry import Rig

SCAN = DATA / "semantickitti_spvnas_000000/000000.bin"
ENCODINGS = ("ascii", "binary", "binary_compressed")
# liblzf's own output (python-lzf 0.3.5, lzf.compress) for SOURCE below: literal runs and back-references,
# short and long (length byte), overlapping (the run of zeros).
SOURCE = b"xkd_ros " * 6 + bytes(range(20)) + b"\x00" * 40 + b"abcabcabcabc"
LIBLZF = bytes.fromhex(
    "08786b645f726f732078e01e0714000102030405060708090a0b0c0d0e0f1011121300e01e0002616263a002016263"
)
PCD_TYPES = {np.dtype(np.float32): "F", np.dtype(np.float64): "F"} | {
    np.dtype(t): t[0].upper() for t in ("uint8", "uint16", "uint32", "int8", "int16", "int32")
}


def lzf_compress(data: bytes) -> bytes:
    """A small greedy LZF compressor (liblzf's format): runs of up to 32 literals, back-references of 3 to
    264 bytes up to 8192 back, overlapping ones included."""
    out, literals, last_seen, i = bytearray(), bytearray(), {}, 0

    def flush() -> None:
        for start in range(0, len(literals), 32):
            chunk = literals[start : start + 32]
            out.append(len(chunk) - 1)
            out.extend(chunk)
        literals.clear()

    while i < len(data):
        key = data[i : i + 3]
        ref = last_seen.get(key)
        last_seen[key] = i
        if len(key) < 3 or ref is None or i - ref > 8192:
            literals.append(data[i])
            i += 1
            continue
        length = 3
        while i + length < len(data) and length < 264 and data[ref + length] == data[i + length]:
            length += 1
        flush()
        distance, code = i - ref - 1, length - 2
        out.append((min(code, 7) << 5) | (distance >> 8))
        if code >= 7:
            out.append(code - 7)
        out.append(distance & 0xFF)
        i += length
    flush()
    return bytes(out)


def write_pcd(
    path: Path,
    fields: dict[str, np.ndarray],
    encoding: str,
    width: int | None = None,
    header_edit=lambda lines: lines,
) -> Path:
    """A PCD file of `fields` (name -> one column, its dtype the PCD type) as PCL writes one."""
    names = list(fields)
    columns = [np.asarray(column) for column in fields.values()]
    count = len(columns[0])
    width = width or count
    lines = [
        "# .PCD v0.7 - Point Cloud Data file format",
        "VERSION 0.7",
        "FIELDS " + " ".join(names),
        "SIZE " + " ".join(str(c.dtype.itemsize) for c in columns),
        "TYPE " + " ".join(PCD_TYPES[c.dtype] for c in columns),
        "COUNT " + " ".join("1" for _ in columns),
        f"WIDTH {width}",
        f"HEIGHT {count // width}",
        "VIEWPOINT 0 0 0 1 0 0 0",
        f"POINTS {count}",
        f"DATA {encoding}",
    ]
    header = ("\n".join(header_edit(lines)) + "\n").encode()
    if encoding == "ascii":
        rows = zip(*(c.tolist() for c in columns), strict=True)
        body = "".join(
            " ".join(repr(v) if isinstance(v, float) else str(v) for v in row) + "\n" for row in rows
        )
        data = body.encode()
    elif encoding == "binary":
        records = np.empty(count, dtype=[(n, c.dtype) for n, c in zip(names, columns, strict=True)])
        for name, column in zip(names, columns, strict=True):
            records[name] = column
        data = records.tobytes()
    else:
        raw = b"".join(column.tobytes() for column in columns)
        compressed = lzf_compress(raw)
        data = np.array([len(compressed), len(raw)], dtype="<u4").tobytes() + compressed
    path.write_bytes(header + data)
    return path


def scan_fields(n: int = 4000) -> dict[str, np.ndarray]:
    """The first `n` points of the real scan, with a ring and an Ouster-style time (uint32 ns) added, and
    a field the reader drops."""
    points = np.fromfile(SCAN, dtype=np.float32).reshape(-1, 4)[:n]
    return {
        "x": points[:, 0],
        "y": points[:, 1],
        "z": points[:, 2],
        "intensity": points[:, 3],
        "t": (np.arange(n, dtype=np.uint32) * 25_000),
        "reflectivity": np.arange(n, dtype=np.uint16) % 255,
        "ring": (np.arange(n) % 64).astype(np.uint16),
    }


def test_lzf_decompresses_liblzf_output_and_round_trips():
    assert lzf_decompress(LIBLZF, len(SOURCE)) == SOURCE
    raw = np.fromfile(SCAN, dtype=np.float32)[:40_000].tobytes() + bytes(3000) + b"ab" * 900
    compressed = lzf_compress(raw)
    assert len(compressed) < len(raw)
    assert lzf_decompress(compressed, len(raw)) == raw


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_encoding_reads_the_scan_back_exactly(tmp_path, encoding):
    fields = scan_fields()
    cloud = read_pcd(write_pcd(tmp_path / "scan.pcd", fields, encoding))
    assert cloud.channels == ("x", "y", "z", "intensity", "ring", "time")
    assert cloud.dropped == ("reflectivity",)
    assert (cloud.width, cloud.height) == (4000, 1)
    assert cloud.points.dtype == np.float32
    for k, name in enumerate(("x", "y", "z", "intensity", "ring")):
        np.testing.assert_array_equal(cloud.points[:, k], fields[name].astype(np.float32), err_msg=name)
    np.testing.assert_allclose(cloud.points[:, 5], fields["t"] * 1e-9, rtol=1e-6)  # seconds


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_organised_cloud_keeps_its_nan_points(tmp_path, encoding):
    xyz = np.arange(24, dtype=np.float32).reshape(8, 3)
    xyz[[1, 6]] = np.nan  # no return
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "time": np.linspace(0, 0.1, 8)}
    cloud = read_pcd(write_pcd(tmp_path / "organised.pcd", fields, encoding, width=4))
    assert (cloud.width, cloud.height, cloud.channels) == (4, 2, ("x", "y", "z", "time"))
    np.testing.assert_array_equal(cloud.points[:, :3], xyz)
    np.testing.assert_allclose(cloud.points[:, 3], fields["time"], rtol=1e-6)


def cut(path: Path, size: int) -> None:
    path.write_bytes(path.read_bytes()[:size])


@pytest.mark.parametrize(
    ("encoding", "edit", "message"),
    [
        (
            "binary",
            lambda p: cut(p, p.stat().st_size - 20 * 24),
            r"POINTS 400 .*needs 9600 bytes .*holds 9120 bytes",
        ),
        (
            "binary",
            lambda p: p.write_bytes(p.read_bytes().replace(b"POINTS 400", b"POINTS 390")),
            r"POINTS 390 disagrees with WIDTH x HEIGHT = 400 x 1",
        ),
        ("ascii", lambda p: cut(p, p.stat().st_size - 30), r"POINTS 400 .*needs 2800 values .*holds 279\d"),
        (
            "binary_compressed",
            lambda p: cut(p, p.stat().st_size - 100),
            r"binary_compressed: the compressed-size word says \d+ bytes, the file holds \d+ after it",
        ),
        (
            "binary_compressed",
            lambda p: p.write_bytes(
                p.read_bytes().replace(b"WIDTH 400", b"WIDTH 500").replace(b"S 400", b"S 500")
            ),
            r"POINTS 500 .*needs 12000 bytes .*holds 9600 \(its uncompressed-size word\)",
        ),
    ],
)
def test_a_header_that_lies_about_the_data_names_the_file_and_field(tmp_path, encoding, edit, message):
    fields = {name: column[:400] for name, column in scan_fields().items()}
    path = write_pcd(tmp_path / "lying.pcd", fields, encoding)
    edit(path)
    with pytest.raises(ValueError, match=f"^{path}: {message}"):
        read_pcd(path)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda lines: [line for line in lines if not line.startswith("DATA")],
            r"no DATA line before byte 1\d\d,",
        ),
        (lambda lines: [*lines[:3], "SIZE 4 4", *lines[4:]], r"SIZE: 2 value\(s\) for 4 FIELDS"),
        (
            lambda lines: [*lines[:4], "TYPE F F F F", *lines[5:]],
            r"field 'ring': TYPE F with SIZE 2 is not a PCD",
        ),
        (lambda lines: [*lines[:4], "TYPE F F F X", *lines[5:]], r"field 'ring': TYPE X with SIZE 2 is not"),
        (lambda lines: [*lines[:2], "FIELDS x y zz ring", *lines[3:]], r"FIELDS x y zz ring lack z"),
        (lambda lines: [*lines[:6], "WIDTH many", *lines[7:]], r"WIDTH: expected one whole number, got many"),
        (lambda lines: [*lines[:-1], "DATA binary_lz4"], r"DATA: expected one of ascii, binary"),
    ],
)
def test_malformed_headers_name_the_field(tmp_path, edit, message):
    xyz = np.ones((5, 3), dtype=np.float32)
    fields = {"x": xyz[:, 0], "y": xyz[:, 1], "z": xyz[:, 2], "ring": np.zeros(5, np.uint16)}
    path = write_pcd(tmp_path / "bad.pcd", fields, "binary", header_edit=edit)
    with pytest.raises(ValueError, match=f"^{path}: {message}"):
        read_pcd(path)


def test_corrupt_compressed_block_names_the_file(tmp_path):
    fields = {name: column[:400] for name, column in scan_fields().items()}
    path = write_pcd(tmp_path / "corrupt.pcd", fields, "binary_compressed")
    blob = bytearray(path.read_bytes())
    start = blob.index(b"DATA binary_compressed\n") + len("DATA binary_compressed\n") + 8
    blob[start] = 0xE0  # a back-reference before the first byte
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=rf"^{path}: binary_compressed: corrupt LZF block"):
        read_pcd(path)


def test_open_frames_on_a_file_or_a_folder_with_the_rig(tmp_path):
    rig = Rig.load(REPO / "config/nuscenes.rig.yaml")
    for i, encoding in enumerate(ENCODINGS):
        write_pcd(tmp_path / f"{i:06d}.pcd", scan_fields(1000), encoding)
    frames = open_frames(tmp_path, rig=rig)
    assert isinstance(frames, PcdDataset)
    assert [frame.name for frame in frames] == ["pcd/000000", "pcd/000001", "pcd/000002"]
    for frame in frames:
        np.testing.assert_array_equal(frame.points, frames[0].points)
        assert frame.rig is rig
        assert (frame.labels, frame.images) == (None, {})
    (one,) = open_frames(tmp_path / "000001.pcd", rig=REPO / "config/nuscenes.rig.yaml")
    assert one.rig.names == rig.names
    assert one.rig.lidar == rig.lidar
    with pytest.raises(
        FileNotFoundError, match=r"rig\.yaml: missing; a \.pcd holds no calibration: pass rig="
    ):
        open_frames(tmp_path)
    rig.save(tmp_path / "rig.yaml")
    assert open_frames(tmp_path)[2].rig.names == rig.names
