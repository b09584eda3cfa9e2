"""The occlusion test against what the cameras really see (issue 11; docs/geometry.md has the measurement).

Targets: on each synthetic rig (KITTI-like, nuScenes-like, roof LiDAR with bumper cameras), recall of
"visible" >= 98 % and precision >= 95 % against the renderer's truth; on the real frames, no more than 2 % of
the ground points 10-40 m away dropped. The cell test (8 px, 0.5 m: the defaults before) misses both: it
drops every other scan line of a grazing road. Each rig is scored over two frames of two scenes; frames with
a car parked within a metre of a side camera of the roof rig are not among them: the car's lower body is
below the roof LiDAR's lowest beam, so no test on the points can know what it hides (docs/geometry.md).
"""

import numpy as np
import pytest
from conftest import DATA, REPO

from xkd_ros.classes import load_class_set
from xkd_ros.data.visibility import (
    RELLIS3D_GROUND,
    SEMANTICKITTI_GROUND,
    Scores,
    compare,
    ground_dropped,
    kitti_odometry_scan,
    plane_ground,
)

RIGS = ("synthetic_kitti.yaml", "synthetic.yaml", "synthetic_roof128.yaml")
FRAMES = (20, 40)  # the first frames of scenes 1 and 2, seed 0


@pytest.fixture(scope="module", params=RIGS)
def rig_scores(request):
    """Scores of each test over FRAMES of one rig, and the rig's file."""
    from xkd_ros.data.synthetic import SyntheticGenerator, load_config

    generator = SyntheticGenerator(load_config(REPO / "config" / request.param), seed=0)
    kept, truth = {"cell": [], "footprint": []}, []
    inside = []
    for index in FRAMES:
        sample = generator.sample("val", index)
        masks = compare(sample.frame.xyz, sample.frame.compensated_rig())
        inside.append(masks["none"].ravel())
        truth.append(sample.true_visibility().ravel())
        for test in kept:
            kept[test].append(masks[test].ravel())
    inside, truth = np.concatenate(inside), np.concatenate(truth)
    scores = {test: Scores.of(np.concatenate(masks), truth, inside) for test, masks in kept.items()}
    return request.param, scores


def test_footprint_test_meets_the_targets_where_the_cell_test_does_not(rig_scores):
    rig, scores = rig_scores
    footprint, cell = scores["footprint"], scores["cell"]
    assert footprint.hidden > 0.01 * footprint.inside, rig  # there is something to hide
    assert footprint.recall >= 0.98, rig
    assert footprint.precision >= 0.95, rig
    assert cell.recall < 0.98, rig  # the cell test drops what the camera sees


def real_frames(nuscenes_keyframe, rellis_frame):
    """name -> (points, rig, ground mask): ground by label, or for the nuScenes keyframe (no labels) what
    lies within 0.2 m of one plane fitted to the scan."""
    keyframe = nuscenes_keyframe
    valid = np.any(rellis_frame.xyz != 0, axis=1)  # all-zero points are the Ouster's "no return"
    names = load_class_set("rellis3d").names
    rellis_ground = np.isin(rellis_frame.labels, [names.index(c) for c in RELLIS3D_GROUND])
    points, raw, kitti_rig = kitti_odometry_scan(
        DATA / "semantickitti_spvnas_000000" / "000000.bin",
        DATA / "semantickitti_spvnas_000000" / "000000.label",
        DATA / "kitti_odometry_00" / "calib.txt",
        (1241, 376),
    )
    return {
        "nuscenes": (keyframe.xyz, keyframe.compensated_rig(), plane_ground(keyframe.xyz)),
        "rellis3d": (rellis_frame.xyz[valid], rellis_frame.rig, rellis_ground[valid]),
        "kitti": (points[:, :3], kitti_rig, np.isin(raw, SEMANTICKITTI_GROUND)),
    }


def test_real_frames_keep_the_ground(nuscenes_keyframe, rellis_frame):
    dropped = {}
    for name, (xyz, rig, ground) in real_frames(nuscenes_keyframe, rellis_frame).items():
        kept = compare(xyz, rig)
        dropped[name] = {test: ground_dropped(xyz, ground, kept["none"], kept[test]) for test in kept}
    assert all(share["footprint"] <= 0.02 for share in dropped.values()), dropped
    assert dropped["kitti"]["cell"] > 0.3, dropped  # the cell test drops a third of KITTI's road
