"""NuScenesDataset over nuScenes-format tables written here around the real samples in test/data."""

import json
import shutil
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, NUSCENES_COUNTS

from xkd_ros.classes import IGNORE_INDEX, load_class_set
from xkd_ros.data.nuscenes import CAMERAS, NuScenesDataset
from xkd_ros.geometry import invert_transform, project_points, transform_from_quaternion
from xkd_ros.geometry.transforms import quaternion_from_rotation

VERSION = "v1.0-mini"
DEMO = DATA / "nuscenes_demo"
TINY = DATA / "nuscenes_lidarseg_tiny"
TINY_SCAN = TINY / "n015-2018-08-02-17-16-37+0800__LIDAR_TOP__1533201470948018.pcd.bin"
TINY_LABELS = TINY / "5f6c1e0a0c3b444b97e78d2aa3fa34d2_lidarseg.bin"
TINY_COUNTS = {  # SOURCE.md's raw id counts, through the nuscenes class set
    "car": 2,  # 17 vehicle.car
    "driveable_surface": 15,  # 24
    "terrain": 1,  # 27
    "manmade": 12,  # 28
    "vegetation": 1,  # 30
    "ignore": 9,  # 31 vehicle.ego
}


def rigid(T) -> np.ndarray:
    """T with its rotation made exactly orthonormal (info.json holds float32), as a quaternion table would."""
    T = np.asarray(T, dtype=np.float64)
    return transform_from_quaternion(quaternion_from_rotation(T[:3, :3]), T[:3, 3])


def pose_record(T: np.ndarray) -> dict:
    return {"rotation": quaternion_from_rotation(T[:3, :3]).tolist(), "translation": T[:3, 3].tolist()}


def microseconds(seconds: float) -> int:
    return round(seconds * 1e6)


class Tables:
    """nuScenes tables being built: records by table name, tokens made up where not given."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.records = defaultdict(list)

    def add(self, table: str, **record) -> str:
        record.setdefault("token", f"{table}-{len(self.records[table])}")
        self.records[table].append(record)
        return record["token"]

    def capture(self, sample, channel, source: Path, stamp_us, T_ego_sensor, T_world_ego, K=(), size=(0, 0)):
        """A keyframe reading of `channel`: sensor, calibration, ego pose, and its file under samples/."""
        camera = channel.startswith("CAM_")
        sensor = self.add("sensor", channel=channel, modality="camera" if camera else "lidar")
        calibration = self.add(
            "calibrated_sensor", sensor_token=sensor, camera_intrinsic=list(K), **pose_record(T_ego_sensor)
        )
        ego_pose = self.add("ego_pose", timestamp=stamp_us, **pose_record(T_world_ego))
        filename = f"samples/{channel}/{source.name}"
        target = self.root / filename
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source.resolve())
        return self.add(
            "sample_data",
            sample_token=sample,
            ego_pose_token=ego_pose,
            calibrated_sensor_token=calibration,
            timestamp=stamp_us,
            fileformat="jpg" if camera else "pcd",
            is_key_frame=True,
            width=size[0],
            height=size[1],
            filename=filename,
            prev="",
            next="",
        )

    def write(self) -> Path:
        folder = self.root / VERSION
        folder.mkdir(parents=True, exist_ok=True)
        for table, records in self.records.items():
            (folder / f"{table}.json").write_text(json.dumps(records))
        return self.root


@pytest.fixture(scope="module")
def demo_info():
    return json.loads((DEMO / "info.json").read_text())["sample"]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory, demo_info):
    """The demo keyframe as nuScenes tables; the ego pose at each camera stamp follows from its lidar2cam."""
    tables = Tables(tmp_path_factory.mktemp("nuscenes_demo"))
    lidar2ego, ego_at_scan = rigid(demo_info["lidar_points"]["lidar2ego"]), rigid(demo_info["ego2global"])
    scene = tables.add("scene", name="scene-0061")
    sample = tables.add(
        "sample", token=demo_info["token"], timestamp=microseconds(demo_info["timestamp"]), scene_token=scene
    )
    scan, stamp = DEMO / demo_info["lidar_points"]["lidar_path"], microseconds(demo_info["timestamp"])
    tables.capture(sample, "LIDAR_TOP", scan, stamp, lidar2ego, ego_at_scan)
    for name, camera in demo_info["images"].items():
        cam2ego, lidar2cam = rigid(camera["cam2ego"]), rigid(camera["lidar2cam"])
        ego_at_image = ego_at_scan @ lidar2ego @ invert_transform(lidar2cam) @ invert_transform(cam2ego)
        image, stamp = DEMO / camera["img_path"], microseconds(camera["timestamp"])
        tables.capture(sample, name, image, stamp, cam2ego, ego_at_image, camera["cam2img"], (1600, 900))
    return tables.write()


def test_demo_keyframe_from_tables_gives_mmdet3d_calibration(demo_root, demo_info, nuscenes_keyframe):
    dataset = NuScenesDataset(demo_root, lidarseg=False)
    assert len(dataset) == 1
    frame = dataset[-1]
    assert frame.name == f"nuscenes/scene-0061/{demo_info['token']}"
    assert frame.rig.names == list(CAMERAS)
    assert frame.labels is None
    assert frame.classes is None
    np.testing.assert_array_equal(frame.points, nuscenes_keyframe.points)
    assert frame.stamp == pytest.approx(demo_info["timestamp"], abs=1e-6)
    lidar2ego = np.array(demo_info["lidar_points"]["lidar2ego"])
    np.testing.assert_allclose(frame.pose, np.array(demo_info["ego2global"]) @ lidar2ego, atol=1e-4)
    compensated = frame.compensated_rig()
    for name, camera in demo_info["images"].items():
        static = invert_transform(camera["cam2ego"]) @ lidar2ego
        np.testing.assert_allclose(frame.rig[name].T_cam_lidar, static, atol=1e-5)
        np.testing.assert_allclose(compensated[name].T_cam_lidar, camera["lidar2cam"], rtol=0, atol=1e-4)
        np.testing.assert_array_equal(compensated[name].intrinsics.K, camera["cam2img"])
        assert frame.image_stamps[name] == pytest.approx(camera["timestamp"], abs=1e-6)
        np.testing.assert_array_equal(frame.images[name], nuscenes_keyframe.images[name])
    assert project_points(frame.points, compensated, min_depth=0.1).counts() == NUSCENES_COUNTS
    assert project_points(frame.points, frame.rig, min_depth=0.1).counts() != NUSCENES_COUNTS


def write_lidarseg_set(root: Path, samples=(("scene-0001", 0),)) -> Path:
    """LIDAR_TOP-only tables around the 40-point lidarseg sample: a keyframe per (scene, offset in us)."""
    tables = Tables(root)
    scenes = {}
    labels = root / "lidarseg" / VERSION
    labels.mkdir(parents=True)
    for scene_name, offset in samples:
        if scene_name not in scenes:
            scenes[scene_name] = tables.add("scene", name=scene_name)
        stamp = 1533201470948018 + offset
        sample = tables.add("sample", timestamp=stamp, scene_token=scenes[scene_name])
        data = tables.capture(sample, "LIDAR_TOP", TINY_SCAN, stamp, np.eye(4), np.eye(4))
        shutil.copyfile(TINY_LABELS, labels / f"{data}_lidarseg.bin")
        filename = f"lidarseg/{VERSION}/{data}_lidarseg.bin"
        tables.add("lidarseg", token=data, sample_data_token=data, filename=filename)
    # The tests below edit the files, so the scan is a copy rather than a link to test/data.
    scan = root / "samples/LIDAR_TOP" / TINY_SCAN.name
    scan.unlink()
    shutil.copyfile(TINY_SCAN, scan)
    return tables.write()


def test_lidarseg_labels_are_mapped_to_the_nuscenes_classes(tmp_path):
    frame = NuScenesDataset(write_lidarseg_set(tmp_path))[0]
    assert frame.points.shape == (40, 5)
    assert frame.channels == ("x", "y", "z", "intensity", "ring")
    assert frame.classes == "nuscenes"
    assert (len(frame.rig), frame.images) == (0, {})
    classes = load_class_set("nuscenes")
    ids, numbers = np.unique(frame.labels, return_counts=True)
    names = {**dict(enumerate(classes.names)), IGNORE_INDEX: "ignore"}
    counts = {names[i]: n for i, n in zip(ids.tolist(), numbers.tolist(), strict=True)}
    assert counts == TINY_COUNTS
    raw = np.fromfile(TINY_LABELS, dtype=np.uint8)
    assert (frame.labels[raw == 31] == IGNORE_INDEX).all()
    assert (frame.labels[raw == 17] == classes.index("car")).all()


def test_keyframes_come_by_scene_then_time(tmp_path):
    root = write_lidarseg_set(tmp_path, [("scene-0002", 0), ("scene-0001", 500_000), ("scene-0001", 0)])
    dataset = NuScenesDataset(root)
    assert [frame.name for frame in dataset] == [
        "nuscenes/scene-0001/sample-2",
        "nuscenes/scene-0001/sample-1",
        "nuscenes/scene-0002/sample-0",
    ]
    assert dataset[1].stamp - dataset[0].stamp == pytest.approx(0.5)
    with pytest.raises(IndexError):
        dataset[3]


def edit_json(root: Path, table: str, edit) -> None:
    path = root / VERSION / f"{table}.json"
    records = json.loads(path.read_text())
    edit(records)
    path.write_text(json.dumps(records))


def scan_file(root: Path) -> Path:
    return root / "samples/LIDAR_TOP" / TINY_SCAN.name


def label_file(root: Path) -> Path:
    return root / "lidarseg" / VERSION / "sample_data-0_lidarseg.bin"


def add_camera_without_intrinsics(root: Path) -> None:
    """A CAM_FRONT keyframe whose calibration, like the LiDAR's, has an empty camera_intrinsic."""

    def copy_first(table: str, **changes) -> None:
        edit_json(root, table, lambda records: records.append({**records[0], **changes}))

    copy_first("sensor", token="sensor-cam", channel="CAM_FRONT")
    copy_first("calibrated_sensor", token="calibrated_sensor-cam", sensor_token="sensor-cam")
    copy_first("sample_data", token="sample_data-cam", calibrated_sensor_token="calibrated_sensor-cam")


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda r: (r / VERSION / "ego_pose.json").unlink(), FileNotFoundError, r"ego_pose\.json: missing"),
        (lambda r: (r / VERSION / "lidarseg.json").unlink(), FileNotFoundError, r"lidarseg\.json: missing"),
        (
            lambda r: (r / VERSION / "sample.json").write_text("{"),
            ValueError,
            r"sample\.json: not valid JSON",
        ),
        (
            lambda r: edit_json(r, "sample_data", lambda records: records[0].pop("filename")),
            ValueError,
            r"sample_data\.json: record 0: missing field\(s\) \['filename'\]",
        ),
        (
            lambda r: edit_json(
                r, "sample_data", lambda records: records[0].update(calibrated_sensor_token="x")
            ),
            ValueError,
            r"calibrated_sensor\.json: no record with token 'x'",
        ),
        (
            lambda r: edit_json(r, "sample_data", lambda records: records[0].update(is_key_frame=False)),
            ValueError,
            r"sample_data\.json: no LIDAR_TOP keyframe for sample 'sample-0'",
        ),
        (
            add_camera_without_intrinsics,
            ValueError,
            r"calibrated_sensor\.json: 'calibrated_sensor-cam' \(CAM_FRONT\): no camera_intrinsic",
        ),
        (
            lambda r: (r / VERSION / "lidarseg.json").write_text("[]"),
            ValueError,
            r"lidarseg\.json: no labels for LIDAR_TOP sample_data 'sample_data-0'",
        ),
    ],
)
def test_broken_tables_are_named(tmp_path, edit, error, message):
    root = write_lidarseg_set(tmp_path)
    edit(root)
    with pytest.raises(error, match=f"^{tmp_path}/{VERSION}/.*{message}"):
        NuScenesDataset(root)


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda r: scan_file(r).unlink(), FileNotFoundError, r"pcd\.bin: missing point cloud"),
        (
            lambda r: scan_file(r).write_bytes(TINY_SCAN.read_bytes()[:-6]),
            ValueError,
            r"pcd\.bin: 794 bytes is not a multiple of 20",
        ),
        (lambda r: label_file(r).unlink(), FileNotFoundError, r"_lidarseg\.bin: missing lidarseg labels"),
        (
            lambda r: label_file(r).write_bytes(TINY_LABELS.read_bytes()[:39]),
            ValueError,
            r"_lidarseg\.bin: 39 labels for the 40 points",
        ),
        (
            lambda r: label_file(r).write_bytes(bytes([17] * 39 + [32])),
            ValueError,
            r"_lidarseg\.bin: raw class id\(s\) \[32\] are not in class set 'nuscenes'",
        ),
    ],
)
def test_broken_files_are_named_when_read(tmp_path, edit, error, message):
    root = write_lidarseg_set(tmp_path)
    dataset = NuScenesDataset(root)
    edit(root)
    with pytest.raises(error, match=f"^{tmp_path}/.*{message}"):
        dataset[0]


def test_unlabelled_release_reads_without_lidarseg(tmp_path):
    root = write_lidarseg_set(tmp_path)
    (root / VERSION / "lidarseg.json").unlink()
    frame = NuScenesDataset(root, lidarseg=False)[0]
    assert (frame.labels, frame.classes) == (None, None)
    np.testing.assert_array_equal(frame.points, np.fromfile(TINY_SCAN, dtype=np.float32).reshape(-1, 5))
