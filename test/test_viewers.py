"""The viewer configs: generated for a rig, so that the fixed frame is the frame of its scans; the shipped
ones are what the generator gives for the nuScenes rig."""

import json

import pytest
import yaml
from conftest import REPO

from xkd_ros.geometry import Rig
from xkd_ros.viewers import (
    DEBUG_STAGES,
    camera_info_topic,
    foxglove_layout,
    image_topics_for,
    main,
    rviz_config,
)

NUSCENES = REPO / "config" / "nuscenes.rig.yaml"


def shipped_inputs():
    rig = Rig.load(NUSCENES)
    return rig, image_topics_for(rig.names, "/segment/input/{camera}/image")


def displays(text):
    config = yaml.safe_load(text)
    return config, {d["Name"]: d for d in config["Visualization Manager"]["Displays"]}


def test_the_shipped_configs_are_the_generated_ones_for_the_nuscenes_rig():
    rig, images = shipped_inputs()
    assert (REPO / "config" / "segment.rviz").read_text() == rviz_config(rig.lidar_frame, "/segment", images)
    shipped = json.loads((REPO / "config" / "segment.foxglove.json").read_text())
    assert shipped == foxglove_layout(rig.lidar_frame, "/segment", images)
    config, _ = displays((REPO / "config" / "segment.rviz").read_text())
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == rig.lidar_frame == "LIDAR_TOP"
    assert shipped["configById"]["3D!xkd_scene"]["followTf"] == "LIDAR_TOP"


@pytest.mark.parametrize("rig_file", ["rellis3d.rig.yaml", "nuscenes.rig.yaml"])
def test_rviz_config_follows_the_rig_and_shows_the_outputs(rig_file):
    rig = Rig.load(REPO / "config" / rig_file)
    images = image_topics_for(rig.names, "/sensing/{camera}/image_raw/compressed")
    config, shown = displays(rviz_config(rig.lidar_frame, "/perception/segment", images))
    assert config["Visualization Manager"]["Global Options"]["Fixed Frame"] == rig.lidar_frame
    cloud, legend = shown["Labeled cloud"], shown["Class legend"]
    assert (cloud["Class"], cloud["Color Transformer"]) == ("rviz_default_plugins/PointCloud2", "RGB8")
    assert cloud["Topic"]["Value"] == "/perception/segment/output/labeled_cloud"
    assert cloud["Topic"]["Reliability Policy"] == "Best Effort"  # matches reliable and best-effort nodes
    assert legend["Topic"]["Value"] == "/perception/segment/output/class_markers"
    assert legend["Topic"]["Durability Policy"] == "Transient Local"  # the node latches its legend
    cameras = {n: d["Topic"]["Value"] for n, d in shown.items() if d["Class"] == "rviz_default_plugins/Image"}
    assert cameras == {c: f"/sensing/{c}/image_raw/compressed" for c in rig.names}


def test_foxglove_layout_colours_the_cloud_by_rgb_and_plots_the_stamped_timings():
    rig, images = shipped_inputs()
    layout = json.loads(json.dumps(foxglove_layout(rig.lidar_frame, "segment", images)))  # JSON as written
    panels = layout["configById"]
    scene = panels["3D!xkd_scene"]
    assert scene["followTf"] == rig.lidar_frame
    cloud = scene["topics"]["/segment/output/labeled_cloud"]
    # Foxglove's "rgb" mode reads the float32 rgb field's bits as packed colour, alpha from explicitAlpha
    assert (cloud["colorMode"], cloud["colorField"], cloud["explicitAlpha"]) == ("rgb", "rgb", 1)
    assert scene["topics"]["/segment/output/class_markers"]["visible"]
    image_panels = {k: v for k, v in panels.items() if k.startswith("Image!")}
    assert {p["imageMode"]["imageTopic"] for p in image_panels.values()} == set(images.values())
    for panel in image_panels.values():
        topic = panel["imageMode"]["imageTopic"]
        assert panel["imageMode"]["calibrationTopic"] == topic.removesuffix("/image") + "/camera_info"
    (plot,) = [v for k, v in panels.items() if k.startswith("Plot!")]
    paths = [p["value"] for p in plot["paths"]]
    assert paths == [f"/segment/debug/{stage}_ms.point.x" for stage in DEBUG_STAGES]
    assert {"/segment/debug/total_ms.point.x", "/segment/debug/pipeline_latency_ms.point.x"} <= set(paths)
    assert {p["timestampMethod"] for p in plot["paths"]} == {"headerStamp"}  # lined up with the scan

    def leaves(node):
        return [node] if isinstance(node, str) else leaves(node["first"]) + leaves(node["second"])

    assert sorted(leaves(layout["layout"])) == sorted(panels)  # every panel placed, none dangling


def test_camera_info_is_the_image_transport_sibling():
    assert camera_info_topic("/cameras/CAM_FRONT/image_raw") == "/cameras/CAM_FRONT/camera_info"
    assert camera_info_topic("/cameras/CAM_FRONT/image_raw/compressed") == "/cameras/CAM_FRONT/camera_info"


def test_command_line_writes_what_the_functions_give(tmp_path):
    rig = Rig.load(REPO / "config" / "rellis3d.rig.yaml")
    rviz, layout = tmp_path / "x.rviz", tmp_path / "x.json"
    template = "/sensing/{camera}/image_raw"
    argv = ["--rig", str(REPO / "config/rellis3d.rig.yaml"), "--node", "/ns/seg", "--image-topic-template"]
    assert main([*argv, template, "--rviz", str(rviz), "--foxglove", str(layout)]) == 0
    images = image_topics_for(rig.names, template)
    assert rviz.read_text() == rviz_config(rig.lidar_frame, "/ns/seg", images)
    assert json.loads(layout.read_text()) == foxglove_layout(rig.lidar_frame, "/ns/seg", images)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rig", "/nonexistent.rig.yaml", "--rviz", "-"], "--rig: /nonexistent.rig.yaml: no such file"),
        (["--rig", str(NUSCENES), "--rviz", "-", "--image-topic-template", "/cam/image"], "has no {camera}"),
        (["--rig", str(NUSCENES), "--rviz", "-", "--node", "/bad name"], "--node: node '/bad name' is not"),
        (["--rig", str(NUSCENES)], "nothing to write: give --rviz OUT and/or --foxglove OUT"),
    ],
)
def test_command_line_errors_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("python -m xkd_ros.viewers: error: ")
    assert message in error


def test_a_viewer_needs_a_frame():
    with pytest.raises(ValueError, match="fixed frame: empty"):
        rviz_config(" ")
