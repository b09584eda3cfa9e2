"""The LiDAR's sensor profile (xkd_ros.geometry.lidar): presets, the rig file's `lidar:` section and its
errors, row elevations, and the start-up check of the observed intensity against the stated scale."""

import dataclasses

import numpy as np
import pytest
import yaml
from conftest import REPO

from xkd_ros.data.nuscenes import LIDAR_PROFILE as NUSCENES_LIDAR
from xkd_ros.data.rellis3d import LIDAR_PROFILE as RELLIS_LIDAR
from xkd_ros.geometry import CalibrationError, LidarProfile, Rig, intensity_mismatch
from xkd_ros.geometry.lidar import SENSOR_PRESETS


@pytest.mark.parametrize("sensor", sorted(SENSOR_PRESETS))
def test_every_preset_builds_and_describes_itself(sensor):
    profile = LidarProfile.from_dict({"sensor": sensor})
    assert profile.sensor == sensor
    assert profile.beams == SENSOR_PRESETS[sensor]["beams"]
    assert profile.ring_order == SENSOR_PRESETS[sensor].get("ring_order", "bottom_up")
    assert profile.min_range == SENSOR_PRESETS[sensor]["min_range"]
    assert profile.intensity_scale == 255.0  # as the ROS drivers publish it, unless the rig says otherwise
    elevations = profile.beam_elevations_deg()
    assert len(elevations) == profile.beams
    assert (np.diff(elevations) < 0).all()  # row 0 the highest beam
    assert profile.fov_down_deg < elevations[-1] < elevations[0] < profile.fov_up_deg
    assert profile.describe().startswith(f"{sensor}, {profile.beams} beams, ")


def test_default_profile_is_the_nuscenes_hdl32e():
    """A rig built without a profile (Rig.from_cameras, a rig file without `lidar:`) keeps working as the
    nuScenes car: HDL-32E, 0..255, ego returns within 1 m, 1.84 m above the ground; a preset alone has no
    mounting height (a vehicle's, not a sensor's)."""
    preset = LidarProfile.from_dict({"sensor": "velodyne_hdl32e"}, "x")
    assert preset.mount_height == 0.0
    assert LidarProfile() == dataclasses.replace(preset, mount_height=1.84) == NUSCENES_LIDAR
    assert LidarProfile.from_dict(None) == LidarProfile()
    assert Rig.from_cameras([]).lidar == LidarProfile()
    assert Rig.from_dict({"cameras": {}}).lidar == LidarProfile()


def test_keys_override_the_preset():
    profile = LidarProfile.from_dict(
        {"sensor": "velodyne_hdl64e", "intensity_scale": 1.0, "min_range": 3, "ring_order": "top_down"}
    )
    assert (profile.beams, profile.fov_up_deg, profile.fov_down_deg) == (64, 3.0, -25.0)
    assert (profile.intensity_scale, profile.min_range, profile.ring_order) == (1.0, 3.0, "top_down")
    custom = LidarProfile.from_dict({"beams": 40, "fov_up_deg": 15, "fov_down_deg": -25})
    assert (custom.sensor, custom.beams, custom.intensity_scale, custom.min_range) == ("", 40, 255.0, 0.0)


def test_beam_elevations_of_an_even_spread_and_of_a_table():
    # 4 beams over 10..-30 deg: 10 deg rows, beams at the row centres
    even = LidarProfile(beams=4, fov_up_deg=10, fov_down_deg=-30)
    np.testing.assert_allclose(even.beam_elevations_deg(), [5, -5, -15, -25])
    # HDL-32E: the preset's edges put its beams at +10.67 .. -30.67 in 1.33 deg steps
    np.testing.assert_allclose(LidarProfile().beam_elevations_deg()[[0, -1]], [10.67, -30.67], atol=0.01)
    table = LidarProfile.from_dict({"beams": 3, "elevations_deg": [-10, 2, -1]})
    np.testing.assert_array_equal(table.beam_elevations_deg(), [2, -1, -10])  # any order in, top first out
    assert (table.fov_up_deg, table.fov_down_deg) == (2.5, -10.5)  # spans the table, for logs
    assert "elevation table" in table.describe()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"sensor": "velodyne_hdl32e", "beam": 32},
            r"car\.rig\.yaml: lidar\.beam: unknown key \(known: sensor",
        ),
        (
            {"sensor": "velodyne_hdl33"},
            r"lidar\.sensor: unknown sensor 'velodyne_hdl33' \(known: velodyne_vlp16",
        ),
        ({"beams": 4, "elevations_deg": [1, 2, 3]}, r"lidar\.elevations_deg: expected 4 elevations .* got 3"),
        ({"beams": 2, "elevations_deg": [1, 1]}, r"lidar\.elevations_deg: two beams share an elevation"),
        ({"beams": 2, "elevations_deg": [1, "up"]}, r"lidar\.elevations_deg: expected numbers"),
        ({"beams": 32}, r"lidar: name a sensor .* or give beams and either elevations_deg or fov_up_deg"),
        ({"sensor": "velodyne_vlp16", "beams": 0}, r"lidar\.beams: expected a whole number >= 1, got 0"),
        ({"sensor": "velodyne_vlp16", "beams": 16.0}, r"lidar\.beams: expected a whole number"),
        ({"sensor": "velodyne_vlp16", "ring_order": "up"}, r"lidar\.ring_order: expected one of"),
        ({"sensor": "velodyne_vlp16", "intensity_scale": 0}, r"lidar\.intensity_scale: must be positive"),
        ({"sensor": "velodyne_vlp16", "min_range": -1}, r"lidar\.min_range: must be >= 0"),
        ({"sensor": "velodyne_vlp16", "mount_height": -1.8}, r"lidar\.mount_height: metres above the ground"),
        ({"sensor": "velodyne_vlp16", "fov_up_deg": -20}, r"lidar\.fov_up_deg: must exceed fov_down_deg"),
        ("velodyne_vlp16", r"lidar: expected a mapping, got str"),
    ],
)
def test_errors_name_the_key(tmp_path, section, message):
    """Through a rig file: the error names the file and the key path, and never falls back to a default."""
    path = tmp_path / "car.rig.yaml"
    path.write_text(yaml.safe_dump({"lidar_frame": "lidar", "cameras": {}, "lidar": section}))
    with pytest.raises(CalibrationError, match=message):
        Rig.load(path)


@pytest.mark.parametrize(
    "profile",
    [
        LidarProfile(),
        RELLIS_LIDAR,
        LidarProfile.from_dict({"sensor": "velodyne_hdl64e", "intensity_scale": 1.0, "min_range": 2.5}),
        LidarProfile.from_dict(
            {"beams": 4, "elevations_deg": [3.5, -1.25, -8, 0.5], "ring_order": "top_down"}
        ),
    ],
)
def test_round_trip_through_a_rig_file(tmp_path, nuscenes_keyframe, profile):
    rig = nuscenes_keyframe.rig.with_cameras(list(nuscenes_keyframe.rig)[:2])
    rig = Rig(rig.cameras, rig.lidar_frame, profile)
    rig.save(tmp_path / "r.rig.yaml")
    read = Rig.load(tmp_path / "r.rig.yaml")
    assert read.lidar == profile
    assert read.names == rig.names[:2]
    assert LidarProfile.from_dict(profile.to_dict()) == profile


def test_with_cameras_keeps_the_lidar():
    rig = Rig.from_cameras([], "os1", RELLIS_LIDAR)
    assert rig.with_cameras([]).lidar is RELLIS_LIDAR
    assert rig.with_cameras([]).lidar_frame == "os1"


def test_readers_and_committed_rig_files_state_their_lidar(nuscenes_keyframe, rellis_frame):
    assert nuscenes_keyframe.rig.lidar == NUSCENES_LIDAR == Rig.load(REPO / "config/nuscenes.rig.yaml").lidar
    assert (NUSCENES_LIDAR.beams, NUSCENES_LIDAR.intensity_scale, NUSCENES_LIDAR.min_range) == (32, 255, 1)
    assert rellis_frame.rig.lidar == RELLIS_LIDAR == Rig.load(REPO / "config/rellis3d.rig.yaml").lidar
    assert (RELLIS_LIDAR.sensor, RELLIS_LIDAR.beams, RELLIS_LIDAR.ring_order) == (
        "ouster_os1_64",
        64,
        "top_down",
    )


def test_rellis_profile_is_what_its_scan_shows(rellis_frame):
    """SOURCE.md: the scan is organised (64 beams x 2048 columns) with intensities 0..0.0115. The reader's
    ring is the beam's place in its column, beam 0 the highest; the profile's field of view puts each beam's
    returns in that row by elevation; its intensity scale is what the data reaches."""
    xyz = rellis_frame.xyz.astype(np.float64)
    valid = np.abs(xyz).sum(axis=1) > 0
    ring = rellis_frame.channel("ring")
    np.testing.assert_array_equal(ring[:64], np.arange(64))
    pitch = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    per_ring = np.array([np.median(pitch[valid & (ring == r)]) for r in range(64)])
    assert (np.diff(per_ring) < 0).all()  # top_down
    np.testing.assert_allclose(per_ring, RELLIS_LIDAR.beam_elevations_deg(), atol=0.2)
    intensity = rellis_frame.channel("intensity")[valid]
    assert 0.9 * RELLIS_LIDAR.intensity_scale < intensity.max() < 1.1 * RELLIS_LIDAR.intensity_scale
    assert intensity_mismatch(intensity, RELLIS_LIDAR) == ""
    assert "smaller" in intensity_mismatch(intensity, dataclasses.replace(RELLIS_LIDAR, intensity_scale=1.0))


def test_intensity_mismatch_warns_both_ways_and_stays_quiet_when_it_fits(nuscenes_keyframe):
    velodyne = nuscenes_keyframe.channel("intensity")  # 0..255, as the ROS driver publishes it
    remission = velodyne / 255  # the same returns as KITTI's 0..1 remission
    assert intensity_mismatch(velodyne, LidarProfile()) == ""
    assert intensity_mismatch(remission, LidarProfile(intensity_scale=1.0)) == ""
    # 0..1 data on a rig that says 0..255: the network would see it 255 times too faint
    warning = intensity_mismatch(remission, LidarProfile())
    assert "lidar.intensity_scale 255" in warning
    assert "smaller (0..1 for KITTI remission)" in warning
    # 0..255 data on a rig that says 0..1
    warning = intensity_mismatch(velodyne, LidarProfile(intensity_scale=1.0))
    assert "intensity reaches 255" in warning
    assert "above lidar.intensity_scale 1" in warning
    # a few glitched returns above a 0..1 scale do not decide; nor do too few points or a scanner without
    # intensities
    glitched = remission.copy()
    glitched[:10] = 3.0
    assert intensity_mismatch(glitched, LidarProfile(intensity_scale=1.0)) == ""
    assert intensity_mismatch(remission[:50], LidarProfile()) == ""
    assert intensity_mismatch(np.zeros(1000), LidarProfile()) == ""
    assert intensity_mismatch(np.full(1000, np.nan), LidarProfile()) == ""


def test_the_hdl32e_preset_fits_the_nuscenes_scan(nuscenes_keyframe):
    """The nuScenes keyframe's rings sit where the HDL-32E preset puts its beams (far returns, whose beams
    start close to the LiDAR's origin)."""
    frame = nuscenes_keyframe
    xyz = frame.xyz.astype(np.float64)
    distance = np.linalg.norm(xyz, axis=1)
    pitch = np.degrees(np.arctan2(xyz[:, 2], np.hypot(xyz[:, 0], xyz[:, 1])))
    ring = frame.channel("ring").astype(int)
    rows = 31 - ring  # bottom_up
    far = distance > 10
    per_row = np.array([np.median(pitch[far & (rows == r)]) for r in range(32) if (far & (rows == r)).any()])
    expected = LidarProfile().beam_elevations_deg()[[r for r in range(32) if (far & (rows == r)).any()]]
    np.testing.assert_allclose(per_row, expected, atol=0.5)
