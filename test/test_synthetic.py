"""Synthetic benchmark: determinism, classes, LiDAR channels, timing, geometry, the data set on disk."""

import shutil

import numpy as np
import pytest
import yaml

from xkd_ros.classes import IGNORE_INDEX, load_class_set
from xkd_ros.data.synthetic import SyntheticDataset, SyntheticGenerator, build_scene, load_config
from xkd_ros.data.synthetic.generator import generate, main
from xkd_ros.data.synthetic.lidar import CHANNELS, beam_elevations
from xkd_ros.geometry import invert_transform, project_points
from xkd_ros.paths import config_path

SMALL = {  # quarter-size cameras, two-thirds of the firings: the same street at a fraction of the cost
    "camera": {"width": 240, "height": 135},
    "lidar": {"azimuth_steps": 720},
    "sequence": {"frames_per_scene": 3},
}
SEED = 3


@pytest.fixture(scope="module")
def config():
    return load_config(overrides=SMALL)


@pytest.fixture(scope="module")
def samples(config):
    """Two scenes of three frames each."""
    generator = SyntheticGenerator(config, SEED)
    return [generator.sample("train", index) for index in range(6)]


def assert_frames_equal(a, b):
    np.testing.assert_array_equal(a.points, b.points)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert a.channels == b.channels
    assert a.classes == b.classes
    assert a.name == b.name
    assert a.stamp == b.stamp
    assert a.image_stamps == b.image_stamps
    np.testing.assert_array_equal(a.pose, b.pose)
    assert a.images.keys() == b.images.keys() == a.image_poses.keys() == b.image_poses.keys()
    for camera in a.images:
        np.testing.assert_array_equal(a.images[camera], b.images[camera])
        np.testing.assert_array_equal(a.image_poses[camera], b.image_poses[camera])
    assert a.rig.to_dict() == b.rig.to_dict()


def test_same_seed_gives_identical_frames_in_any_order(config, samples):
    again = SyntheticGenerator(config, SEED).sample("train", 4)  # straight to frame 4, scene 1 built afresh
    assert_frames_equal(again.frame, samples[4].frame)
    for camera, classes in again.class_images.items():
        np.testing.assert_array_equal(classes, samples[4].class_images[camera])
    other = SyntheticGenerator(config, SEED + 1).sample("train", 4)
    assert not np.array_equal(other.frame.labels, samples[4].frame.labels)


def test_every_class_appears_in_the_points(samples):
    names = load_class_set("synthetic").names
    seen = set(np.concatenate([sample.frame.labels for sample in samples]).tolist())
    assert seen == set(range(len(names))), [names[i] for i in set(range(len(names))) - seen]


def test_points_labels_and_channels(config, samples):
    lidar = config.lidar
    for sample in samples:
        frame = sample.frame
        assert frame.channels == CHANNELS
        assert frame.classes == "synthetic"
        assert frame.points.dtype == np.float32
        assert frame.labels.dtype == np.uint8
        assert frame.labels.max() < load_class_set("synthetic").num_classes
        assert 0.6 < len(frame.points) / (lidar.beams * lidar.azimuth_steps) < 1.0
        ring, time = frame.channel("ring"), frame.channel("time")
        np.testing.assert_array_equal(ring, np.round(ring))
        assert ring.min() == 0
        assert ring.max() == lidar.beams - 1
        assert time.min() >= 0
        assert time.max() < lidar.sweep_s
        intensity = frame.channel("intensity")
        assert intensity.min() >= 0
        assert intensity.max() <= 255
        moved = config.ego.speed_mps[1] * lidar.sweep_s  # deskewed points: the sensor moved meanwhile
        distance = np.linalg.norm(frame.xyz, axis=1)
        assert distance.min() > lidar.min_range_m - moved
        assert distance.max() < lidar.max_range_m + moved
        # lane paint is retro-reflective, asphalt is not
        road, paint = (np.median(intensity[frame.labels == i]) for i in (0, 1))
        assert paint > 2 * road


def test_cameras_fire_when_the_beam_passes_them(samples):
    frame = samples[1].frame
    azimuth = np.degrees(np.arctan2(frame.xyz[:, 1], frame.xyz[:, 0]))
    front = (np.abs(azimuth) < 1.0) & (np.linalg.norm(frame.xyz[:, :2], axis=1) > 5)
    offset = frame.image_stamps["CAM_FRONT"] - frame.stamp
    assert offset == pytest.approx(0.025)
    np.testing.assert_allclose(frame.channel("time")[front], offset, atol=0.0005)
    assert len(set(frame.image_stamps.values())) == len(frame.image_stamps)


def test_poses_follow_the_drive(config, samples):
    first, second = samples[0].frame, samples[1].frame
    assert second.stamp - first.stamp == config.sequence.frame_interval_s
    travelled = np.linalg.norm(second.pose[:3, 3] - first.pose[:3, 3])
    assert config.ego.speed_mps[0] * 0.5 <= travelled <= config.ego.speed_mps[1] * 0.5 + 1e-6
    for camera, pose in first.image_poses.items():
        moved = np.linalg.norm(pose[:3, 3] - first.pose[:3, 3])
        seconds = first.image_stamps[camera] - first.stamp
        assert moved == pytest.approx(travelled / 0.5 * seconds, rel=0.01, abs=1e-9)


def test_projection_agrees_with_the_camera_labels(samples):
    for sample in samples[:3]:
        assert sample.label_agreement(sample.frame.compensated_rig()) > 0.93


def test_static_rig_is_off_when_the_car_is_fast(config):
    fast = load_config(overrides={**SMALL, "ego": {"speed_mps": [15, 15]}})
    sample = SyntheticGenerator(fast, SEED).sample("val", 1)
    compensated = sample.label_agreement(sample.frame.compensated_rig())
    static = sample.label_agreement(sample.frame.rig)
    assert compensated > 0.93
    assert static < compensated - 0.03


def test_raw_points_are_the_deskewed_points_seen_from_their_firing_pose(config):
    """Without deskew each point is in the sensor frame of its firing: moving it to the world with the pose
    at its `time` lands on the same spot as the deskewed point moved with the pose at the stamp."""
    deskewed = SyntheticGenerator(config, SEED).sample("train", 1).frame
    raw_config = load_config(overrides={**SMALL, "lidar": {**SMALL["lidar"], "deskew": False}})
    generator = SyntheticGenerator(raw_config, SEED)
    raw = generator.sample("train", 1).frame
    trajectory = generator.scene("train", 0).trajectory
    poses = trajectory.poses(raw.stamp + raw.channel("time"))
    world_raw = np.einsum("nij,nj->ni", poses[:, :3, :3], raw.xyz.astype(np.float64)) + poses[:, :3, 3]
    world = deskewed.xyz.astype(np.float64) @ deskewed.pose[:3, :3].T + deskewed.pose[:3, 3]
    np.testing.assert_allclose(world_raw, world, atol=2e-3)
    np.testing.assert_array_equal(raw.labels, deskewed.labels)
    assert np.abs(raw.xyz - deskewed.xyz).max() > 0.1  # the car moved during the sweep


def test_scene_triangles_carry_valid_classes_and_materials(config):
    scene = build_scene(config, np.random.default_rng(0))
    assert scene.face_class.max() < load_class_set("synthetic").num_classes
    assert scene.face_material.min() >= 0
    assert scene.face_material.max() < len(scene.materials.texture)
    assert np.all(np.isfinite(scene.face_normals))
    assert np.allclose(np.linalg.norm(scene.face_normals, axis=1), 1)
    assert (scene.materials.reflectivity > 0).all()
    assert (scene.materials.reflectivity <= 1).all()
    origin = np.array([[0.0, scene.trajectory.lane_y, 1.8]])  # in the middle of the ego lane
    face, distance = scene.cast(origin, np.array([[0.0, 0.0, -1.0]]))
    assert scene.face_class[face[0]] == 0
    assert distance[0] == pytest.approx(1.8)


def test_camera_class_images(samples):
    sample = samples[0]
    for camera, classes in sample.class_images.items():
        image = sample.frame.images[camera]
        assert classes.shape == image.shape[:2]
        assert classes.dtype == np.uint8
        assert set(np.unique(classes)) <= set(range(14)) | {IGNORE_INDEX}
        sky = classes == IGNORE_INDEX
        if sky.any():  # sky is blue-ish: brighter in blue than in red
            assert image[sky][:, 2].mean() > image[sky][:, 0].mean()


@pytest.fixture(scope="module")
def written(tmp_path_factory, config):
    root = tmp_path_factory.mktemp("synthetic")
    frames = generate(root, config, SEED, {"train": 2, "val": 1})
    assert frames == {"train": ["s000_000", "s000_001"], "val": ["s000_000"]}
    return root


def test_written_data_set_reads_back_equal(written, config, samples):
    train = SyntheticDataset(written, "train")
    assert len(train) == 2
    assert train.seed == SEED
    assert train.classes == "synthetic"
    for frame, sample in zip(train, samples[:2], strict=True):
        assert_frames_equal(frame, sample.frame)
    assert [f.name for f in train[0:2]] == ["train/s000_000", "train/s000_001"]
    val = SyntheticDataset(written, "val")
    assert_frames_equal(val[0], SyntheticGenerator(config, SEED).sample("val", 0).frame)
    split = yaml.safe_load((written / "split.yaml").read_text())
    assert load_config(overrides=split["config"]) == config


def test_missing_or_broken_files_are_named(written, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(written, root)
    npz, png = root / "train/s000_001.npz", root / "train/s000_000/CAM_BACK.png"
    npz.unlink()
    png.unlink()
    dataset = SyntheticDataset(root, "train")
    with pytest.raises(FileNotFoundError, match=str(npz)):
        dataset[1]
    with pytest.raises(FileNotFoundError, match=str(png)):
        dataset[0]
    broken = root / "val/s000_000.npz"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match=str(broken)):
        SyntheticDataset(root, "val")[0]
    with pytest.raises(ValueError, match="no split 'test'"):
        SyntheticDataset(root, "test")
    (root / "split.yaml").unlink()
    with pytest.raises(FileNotFoundError, match=str(root / "split.yaml")):
        SyntheticDataset(root, "train")


def test_command_line_with_workers_matches_one_process(tmp_path, written):
    overlay = tmp_path / "small.yaml"
    overlay.write_text(yaml.safe_dump(SMALL))
    out = tmp_path / "cli"
    assert (
        main(
            [
                "--out",
                str(out),
                "--train",
                "2",
                "--val",
                "1",
                "--seed",
                str(SEED),
                "--config",
                str(overlay),
                "--workers",
                "2",
            ]
        )
        == 0
    )
    for split, count in (("train", 2), ("val", 1)):
        ours, reference = SyntheticDataset(out, split), SyntheticDataset(written, split)
        assert len(ours) == count
        for a, b in zip(ours, reference, strict=True):
            assert_frames_equal(a, b)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ValueError, match=r"lidar: unknown keys \['beam'\]"):
        load_config(overrides={"lidar": {"beam": 16}})
    with pytest.raises(ValueError, match=r"scene.lane_width_m: range \[4.0, 3.0\] is empty"):
        load_config(overrides={"scene": {"lane_width_m": [4.0, 3.0]}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("camera: {width: wide}\n")
    with pytest.raises(ValueError, match=rf"{bad}: cameras\[0\].width: expected a whole number"):
        load_config(bad)
    with pytest.raises(ValueError, match=r"lidar.intensity_scale: must be positive, got 0.0"):
        load_config(overrides={"lidar": {"intensity_scale": 0}})


def test_rig_carries_the_lidar_profile(config, written):
    """The frames' rig describes the simulated scanner as a user would in a rig file: the beams, their
    elevations (a field of view edge to edge, ring 0 the lowest), the intensity scale and the min range."""
    profile = config.rig().lidar
    assert (profile.beams, profile.ring_order, profile.intensity_scale, profile.min_range) == (
        32,
        "bottom_up",
        255.0,
        1.0,
    )
    # range-image row r holds ring beams-1-r (bottom_up): the profile's rows are the generator's beams
    np.testing.assert_allclose(
        profile.beam_elevations_deg()[::-1], np.degrees(beam_elevations(config.lidar)), atol=1e-9
    )
    assert profile.fov_up_deg - 10.67 == pytest.approx(41.34 / 31 / 2)
    assert SyntheticDataset(written, "train").rig.lidar == profile  # rig.yaml keeps it


@pytest.mark.parametrize(
    ("file", "beams", "intensity_scale", "cameras"),
    [
        ("synthetic_kitti.yaml", 64, 1.0, ["image_2"]),
        (
            "synthetic_roof128.yaml",
            128,
            255.0,
            ["front_bumper", "left_mirror", "rear_bumper", "right_mirror"],
        ),
    ],
)
def test_other_rigs(file, beams, intensity_scale, cameras):
    config = load_config(config_path(file))
    rig = config.rig()
    assert rig.names == cameras
    assert (rig.lidar.beams, rig.lidar.intensity_scale) == (beams, intensity_scale)
    np.testing.assert_allclose(
        rig.lidar.beam_elevations_deg()[::-1], np.degrees(beam_elevations(config.lidar)), atol=1e-9
    )
    centres = np.array([invert_transform(camera.T_cam_lidar)[:3, 3] for camera in rig])
    if file == "synthetic_kitti.yaml":  # KITTI: image_2 0.27 m ahead of and 0.08 m below the Velodyne
        np.testing.assert_allclose(centres, [[0.27, 0.0, -0.08]], atol=1e-12)
    else:  # bumper cameras: low and far from the roof LiDAR
        assert (centres[:, 2] <= -0.9).all()
        assert (np.linalg.norm(centres[:, :2], axis=1) >= 1.0).all()
    frame = SyntheticGenerator(config, SEED).sample("val", 0).frame
    assert frame.rig.lidar == rig.lidar
    assert frame.channel("ring").max() == beams - 1
    intensity = frame.channel("intensity")
    assert 0.5 * intensity_scale < intensity.max() <= intensity_scale


def test_true_visibility(config, samples):
    """A camera at the LiDAR of a car at a standstill sees every point that lands in its image (the LiDAR
    saw them); on the moving car's rig, the points the truth calls hidden show another class in the image
    far more often than the visible ones."""
    still = load_config(
        overrides={
            **SMALL,
            "ego": {"speed_mps": [0, 0], "weave_m": [0, 0]},
            "cameras": [{"name": "CAM_AT_LIDAR", "yaw_deg": 30, "position": [0, 0, 0]}],
        }
    )
    sample = SyntheticGenerator(still, SEED).sample("train", 0)
    inside = project_points(sample.frame.xyz, sample.frame.compensated_rig()).mask
    truth = sample.true_visibility()
    assert inside.sum() > 2000
    np.testing.assert_array_equal(truth, inside)

    agree = {True: [], False: []}
    for sample in samples[:3]:
        frame = sample.frame
        projection = project_points(frame.xyz, frame.compensated_rig())
        truth = sample.true_visibility()
        for i, camera in enumerate(frame.rig.names):
            for seen in (True, False):
                index = np.flatnonzero(projection.mask[i] & (truth[i] == seen))
                u, v = np.rint(projection.uv[i, index]).astype(np.int64).T
                classes = sample.class_images[camera]
                u, v = np.clip(u, 0, classes.shape[1] - 1), np.clip(v, 0, classes.shape[0] - 1)
                agree[seen].append(frame.labels[index] == classes[v, u])
    hidden_points = np.concatenate(agree[False])
    assert len(hidden_points) > 500
    assert np.mean(np.concatenate(agree[True])) > 0.95
    assert np.mean(hidden_points) < 0.5
