"""Synthetic benchmark for the protocol: the test split, --set overrides, the neutral regime, domain
randomisation (docs/synthetic.md)."""

import itertools
import re

import numpy as np
import pytest
import yaml

from xkd_ros.classes import load_class_set
from xkd_ros.data.sources import open_frames
from xkd_ros.data.synthetic import SyntheticGenerator, load_config
from xkd_ros.data.synthetic.config import parse_overrides
from xkd_ros.data.synthetic.generator import main
from xkd_ros.paths import config_path

SMALL = ["camera.width=120", "camera.height=68", "lidar.azimuth_steps=360", "sequence.frames_per_scene=2"]
SEED = 4
CLASS_NAMES = load_class_set("synthetic").names


def small_config(path=None, extra=()):
    return load_config(path, parse_overrides([*SMALL, *extra]))


def test_test_split_has_scenes_of_its_own(tmp_path):
    """xkd-synth --test writes a third split that open_frames reads; its scenes are drawn from their own
    stream, so no test scene is a train or val scene (and train/val stay what they were)."""
    root = tmp_path / "synth"
    argv = ["--out", str(root), "--train", "2", "--val", "2", "--test", "4", "--seed", str(SEED)]
    assert main([*argv, *(item for pair in SMALL for item in ("--set", pair))]) == 0
    split = yaml.safe_load((root / "split.yaml").read_text())
    assert split["splits"]["test"] == ["s000_000", "s000_001", "s001_000", "s001_001"]
    assert split["overrides"] == SMALL
    test = open_frames(root, split="test")
    assert len(test) == 4
    assert test[0].name == "test/s000_000"

    generator = SyntheticGenerator(small_config(), SEED)
    scenes = {
        (split_name, index): generator.scene(split_name, index)
        for split_name in ("train", "val", "test")
        for index in range(2)
    }
    seeds = [scene.texture_seed for scene in scenes.values()]
    assert len(set(seeds)) == len(seeds)
    lanes = [round(scene.trajectory.lane_y, 9) for scene in scenes.values()]
    assert len({(lane, scene.num_faces) for lane, scene in zip(lanes, scenes.values(), strict=True)}) == 6
    train = open_frames(root, split="train")[0]
    np.testing.assert_array_equal(train.points, generator.sample("train", 0).frame.points)


def test_set_overrides_reach_the_scanner_and_split_yaml(tmp_path):
    """--set lidar.azimuth_steps=N makes the reduced-scale LiDAR of the protocol, on any rig overlay."""
    config = small_config(config_path("synthetic_kitti.yaml"), ["lidar.azimuth_steps=500"])
    assert config.lidar.azimuth_steps == 500
    assert config.lidar.beams == 64  # the overlay's, not the default's
    frame = SyntheticGenerator(config, SEED).sample("test", 0).frame
    assert len(frame.points) <= 64 * 500
    assert set(np.unique(frame.channel("ring"))) <= set(range(64))
    assert parse_overrides(["lidar.height_m=[1.6, 1.9]", "camera.hfov_deg=80"]) == {
        "lidar": {"height_m": [1.6, 1.9]},
        "camera": {"hfov_deg": 80},
    }


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("lidar.azimuth_step=540", r"lidar: unknown keys \['azimuth_step'\]"),
        ("lidar", "expected KEY=VALUE"),
        ("lidar.azimuth_steps=[1", "not valid YAML"),
    ],
)
def test_bad_overrides_are_named(tmp_path, capsys, item, message):
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "x"), "--test", "1", "--set", item])
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "x").exists()


def two_cameras_at_one_place(texture):
    """Two identical cameras at the same spot looking the same way, no sensor noise: they see one surface."""
    same = {"yaw_deg": 0, "position": [0.5, 0.0, -0.3], "noise_std": 0.0}
    overrides = [*SMALL, f"camera.texture={texture}", "camera.shadows=false"]
    config = load_config(
        overrides=parse_overrides(overrides) | {"cameras": [{"name": "A", **same}, {"name": "B", **same}]}
    )
    return SyntheticGenerator(config, SEED).sample("train", 0)


def log_ratio_spread(sample):
    """Spread of log(A / B) over well-exposed pixels: 0 up to rounding when B is A times a gain."""
    a, b = (sample.frame.images[name].astype(np.float64) for name in ("A", "B"))
    lit = (a > 40) & (b > 40)
    return float(np.std(np.log(a[lit] / b[lit])))


def test_view_texture_differs_between_cameras_world_does_not():
    """texture: world hashes the texture noise from world coordinates (two cameras on one surface agree up
    to their exposure); texture: view draws it per camera and frame, so cross-view consistency is not free."""
    world, view = two_cameras_at_one_place("world"), two_cameras_at_one_place("view")
    np.testing.assert_array_equal(world.class_images["A"], view.class_images["B"])  # the same surfaces
    assert log_ratio_spread(world) < 0.02
    assert log_ratio_spread(view) > 3 * log_ratio_spread(world) + 0.02


def test_neutral_reflectivity_bands_hold_and_reach_the_intensity():
    """config/synthetic_neutral.yaml: every material of a class reflects within its class's band, the bands
    do not overlap, and the points' intensity follows the bands' order."""
    config = small_config(config_path("synthetic_neutral.yaml"))
    bands = config.lidar.reflectivity
    assert set(bands) == set(CLASS_NAMES)
    ordered = sorted(bands.values())
    assert all(low_next > high for (_, high), (low_next, _) in itertools.pairwise(ordered))
    sample = SyntheticGenerator(config, SEED).sample("train", 0)
    scene = sample.scene
    present = 0
    for name, (low, high) in bands.items():
        used = np.unique(scene.face_material[scene.face_class == CLASS_NAMES.index(name)])
        reflectivity = scene.materials.reflectivity[used]
        assert (reflectivity >= np.float32(low)).all(), name
        assert (reflectivity <= np.float32(high)).all(), name
        present += bool(len(used))
    assert present >= 12
    frame = sample.frame
    intensity = frame.channel("intensity")
    medians = {
        name: np.median(intensity[frame.labels == i])
        for i, name in enumerate(CLASS_NAMES)
        if np.count_nonzero(frame.labels == i) >= 30
    }
    assert len(medians) >= 8
    floor = config.lidar.incidence_floor  # intensity = reflectivity * (floor + (1 - floor) cos) * noise
    for name, median in medians.items():
        strength = median / config.lidar.intensity_scale
        assert floor * bands[name][0] * 0.95 <= strength <= bands[name][1] * 1.05, (name, strength)
    assert config.scene.curb_height_m[0] >= 0.18


DR = [
    "lidar.height_m=[1.5, 2.1]",
    "lidar.intensity_gain=[0.6, 1.0]",
    "lidar.intensity_gamma=[0.5, 2.0]",
    "camera.hfov_deg=[55, 85]",
    "sequence.frames_per_scene=2",
]


@pytest.fixture(scope="module")
def randomised():
    """Frames 0-1 (scene 0) and one frame of each of scenes 1-4 with domain randomisation."""
    generator = SyntheticGenerator(small_config(extra=DR), SEED)
    return generator, [generator.sample("train", index) for index in (0, 1, 2, 4, 6, 8)]


def test_domain_randomisation_stays_in_its_ranges_and_the_rig_tells_it(randomised):
    """Each scene draws its mount height and each camera's field of view from the ranges; the frame's rig
    reports what was drawn (the pose's height, the focal length), the same for every frame of a scene."""
    generator, samples = randomised
    heights, focals = [], []
    for sample in samples:
        frame = sample.frame
        height = frame.rig.lidar.mount_height
        assert 1.5 <= height <= 2.1
        assert frame.pose[2, 3] == pytest.approx(height)  # the LiDAR is where the rig says, above the road
        for calibration in frame.rig:
            K = calibration.intrinsics.K
            hfov = 2 * np.degrees(np.arctan(calibration.intrinsics.width / 2 / K[0, 0]))
            if calibration.name == "CAM_BACK":  # its own hfov_deg: 90 in config/synthetic.yaml
                assert hfov == pytest.approx(90)
            else:
                assert 55 - 1e-9 <= hfov <= 85 + 1e-9
        heights.append(height)
        focals.append([calibration.intrinsics.K[0, 0] for calibration in frame.rig])
    assert heights[0] == heights[1]  # one scene, one draw
    assert focals[0] == focals[1]
    assert len(set(heights[1:])) == 5  # a new draw per scene
    assert len({round(f, 6) for row in focals for f in row}) > 5  # and per camera
    drawn = generator.sensors("train", 4).config.lidar
    assert drawn.intensity_gain[0] == drawn.intensity_gain[1]
    assert 0.6 <= drawn.intensity_gain[0] <= 1.0
    assert 0.5 <= drawn.intensity_gamma[0] == drawn.intensity_gamma[1] <= 2.0


def test_intensity_gain_and_gamma_are_applied():
    """Intensity = scale * clip(gain * strength) ** gamma: the same scene and noise with gain 0.5 and
    gamma 2 give exactly that function of the plain intensities."""
    plain = SyntheticGenerator(small_config(), SEED).sample("train", 0).frame
    changed = small_config(extra=["lidar.intensity_gain=0.5", "lidar.intensity_gamma=2"])
    frame = SyntheticGenerator(changed, SEED).sample("train", 0).frame
    np.testing.assert_array_equal(frame.xyz, plain.xyz)  # weak returns depend on reflectivity, not on this
    scale = changed.lidar.intensity_scale
    unclipped = plain.channel("intensity") < scale  # clipped before the gain: no longer the same function
    assert unclipped.mean() > 0.99
    expected = scale * (0.5 * plain.channel("intensity") / scale) ** 2
    np.testing.assert_allclose(
        frame.channel("intensity")[unclipped], expected[unclipped], rtol=1e-4, atol=1e-3
    )


def test_beam_dropout_removes_whole_rings():
    """beam_dropout: per scene some beams are dead in every frame of it; the others keep their points."""
    config = small_config(extra=["lidar.beam_dropout=0.25", "sequence.frames_per_scene=2"])
    generator = SyntheticGenerator(config, SEED)
    rings = [set(generator.sample("train", i).frame.channel("ring").astype(int).tolist()) for i in range(4)]
    dead = [set(np.flatnonzero(generator.sensors("train", scene).dead_beams).tolist()) for scene in (0, 1)]
    assert dead[0]
    assert dead[1]
    assert dead[0] != dead[1]
    assert rings[0] == rings[1] == set(range(32)) - dead[0]
    assert rings[2] == rings[3] == set(range(32)) - dead[1]


def test_top_down_rings_number_from_the_highest_beam():
    """lidar.ring_order: top_down (Ouster): ring 0 is the highest beam, and the profile says so."""
    config = small_config(config_path("synthetic_dr_os1_64.yaml"), ["lidar.beam_dropout=0"])
    frame = SyntheticGenerator(config, SEED).sample("train", 0).frame
    assert frame.rig.lidar.ring_order == "top_down"
    elevation = np.degrees(np.arctan2(frame.xyz[:, 2], np.linalg.norm(frame.xyz[:, :2], axis=1)))
    ring = frame.channel("ring")
    near = np.linalg.norm(frame.xyz, axis=1) > 5  # far enough that the car's motion does not bend the beams
    assert np.median(elevation[near & (ring == 0)]) > 15
    assert np.median(elevation[near & (ring == 63)]) < -15


@pytest.mark.parametrize(
    ("file", "sensor", "beams", "height", "intensity_scale", "cameras"),
    [
        ("synthetic_dr_hdl64.yaml", "velodyne_hdl64e", 64, 1.73, 1.0, ["image_2"]),
        ("synthetic_dr_hdl32.yaml", "velodyne_hdl32e", 32, 1.84, 255.0, 6),
        ("synthetic_dr_os1_64.yaml", "ouster_os1_64", 64, 1.3, 0.0115, ["pylon_camera"]),
    ],
)
def test_dr_configs_match_their_real_sensors(file, sensor, beams, height, intensity_scale, cameras):
    config = small_config(config_path(file))
    lidar = config.lidar
    assert (lidar.sensor, lidar.beams, lidar.intensity_scale) == (sensor, beams, intensity_scale)
    assert lidar.height_m[0] < height < lidar.height_m[1]
    assert lidar.beam_dropout > 0
    assert lidar.intensity_gamma[0] < 1 < lidar.intensity_gamma[1]
    names = [camera.name for camera in config.cameras]
    assert names == cameras if isinstance(cameras, list) else len(names) == cameras
    assert all(camera.hfov_deg[0] < camera.hfov_deg[1] for camera in config.cameras)


def test_written_frames_carry_their_drawn_rig(tmp_path, randomised):
    """On disk each frame keeps its scene's rig (format version 2): read back, it is the generator's."""
    root = tmp_path / "dr"
    argv = ["--out", str(root), "--train", "3", "--seed", str(SEED)]
    assert main([*argv, *(item for pair in [*SMALL, *DR] for item in ("--set", pair))]) == 0
    frames = open_frames(root, split="train")
    _, samples = randomised
    for frame, sample in zip(frames, [samples[0], samples[1], samples[2]], strict=True):
        assert frame.rig.to_dict() == sample.frame.rig.to_dict()
    assert frames[0].rig.lidar.mount_height != frames[2].rig.lidar.mount_height
