"""Evaluation of a model, offline on labelled frames or live against a running segment_node.

One job per module, each importing only the ones before it:

- `scoring`: the numbers, ROS- and torch-free: ClassMapping (a model scored in another class set), ModeResult,
  `evaluate` (fusion and LiDAR-only over frames), `score_boxes` and `ego_returns` (weak checks for frames
  with 3-D boxes but no point labels), `score_live` (what a node published against the ground truth);
- `report`: the written report (report.json, report.md) and its pictures (confusion matrices, per-class
  IoU bars, a labelled bird's-eye view), from scoring's results;
- `live`: the DDS listener shared by `xkd-demo` and `xkd-evaluate --live` (rclpy glue): it replays a
  recording to the running node and collects what the node published, scored by `scoring.score_live`;
- `cli`: `xkd-evaluate`, offline or `--live`, the one module that uses both sides.

Nothing is imported here: importing xkd_ros.evaluate loads no other module.
"""
