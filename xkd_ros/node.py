"""`segment_node`: the ROS 2 glue around Collector (sync) and Segmenter (pipeline).

Callbacks only store messages (stamped by their header, timed by time.monotonic on arrival); a 10 ms timer
polls the collector and runs decode -> segment -> publish on the newest ready scan. With the shipped queue
depth of 1 a busy node finds only the newest messages when it looks again, so latency does not build up
(the executor takes one message per topic per turn: a deeper queue is worked through oldest first).
CompressedImages are decoded over a thread pool, at the reduced scale the network allows. Parameters are
validated against config/segment.schema.json at start-up; a bad parameter, model or calibration is an error
naming it, and the process exits non-zero.
"""

from __future__ import annotations

import array
import json
import os
import sys
import time
from collections import deque
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import rclpy.logging
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rcl_interfaces.msg import ParameterDescriptor
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import Float64
from visualization_msgs.msg import Marker, MarkerArray

from xkd_ros.data.messages import header_stamp, points_from_cloud, rgb_from_image
from xkd_ros.geometry import CalibrationError, Rig
from xkd_ros.geometry.rig import CameraCalibration
from xkd_ros.inference import choose_backend
from xkd_ros.msgs import camera_info_to_intrinsics, create_labeled_cloud
from xkd_ros.paths import config_path, share_dir
from xkd_ros.pipeline import Segmenter
from xkd_ros.preprocess import check_image, decode_reduction
from xkd_ros.sync import Collector, SyncConfig

__all__ = ["DEFAULTS", "ParameterError", "SegmentNode", "StartupError", "main", "validate_parameters"]

NODE_NAME = "segment"
DEFAULTS: dict[str, Any] = {
    "model_path": "",
    "backend": "onnxruntime",
    "threads": 0,
    "rig_path": "",
    "cameras": [],
    "camera_transport": "raw",
    "intrinsics_from_camera_info": True,
    "sync.match_threshold": 0.03,
    "sync.timeout": 0.1,
    "sync.camera_offsets": [],
    "qos.reliable": False,
    "qos.depth": 1,
}
# Parameters every rclpy node has, or that ROS tooling adds: not ours to validate.
_ROS_PARAMETERS = ("use_sim_time", "start_type_description_service")
_ROS_PREFIXES = ("qos_overrides.",)
STAGES = ("preprocess", "inference", "postprocess", "total")
LOG_THROTTLE_S = 5.0
SCAN_TIMEOUT_S = 1.0
RATE_WINDOW_S = 5.0


class ParameterError(ValueError):
    """A parameter is unknown, of the wrong type or out of range; the text names it."""


class StartupError(RuntimeError):
    """The model or the calibration cannot be loaded; the text names the file and what is wrong."""


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple, array.array)):
        return [_plain(v) for v in value]
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"sync.timeout": 1} -> {"sync": {"timeout": 1}}."""
    nested: dict[str, Any] = {}
    for name, value in flat.items():
        *parents, leaf = name.split(".")
        node = nested
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ParameterError(f"parameter {part!r}: is both a value and a group")
            node = child
        node[leaf] = _plain(value)
    return nested


def load_schema() -> dict:
    return json.loads(config_path("segment.schema.json").read_text())


def validate_parameters(flat: Mapping[str, Any], schema: dict | None = None) -> dict[str, Any]:
    """Parameters (dotted names -> values; missing ones take DEFAULTS) checked against the schema and for
    consistency; returns the full flat dict. Raises ParameterError naming every bad parameter."""
    import jsonschema

    given = {k: _plain(v) for k, v in flat.items()}
    defaults = {k: v for k, v in DEFAULTS.items() if not any(g.startswith(k + ".") for g in given)}
    params = {**defaults, **given}
    nested = nest(params)
    validator = jsonschema.Draft202012Validator(schema or load_schema())
    problems = []
    for error in sorted(validator.iter_errors(nested), key=lambda e: list(map(str, e.absolute_path))):
        path = ".".join(str(p) for p in error.absolute_path)
        if error.validator == "additionalProperties":
            unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            for key in unknown:
                name = f"{path}.{key}" if path else key
                problems.append(f"parameter {name!r}: unknown parameter")
            continue
        if error.validator == "oneOf":
            problems.append(f"parameter {path!r}: {error.instance!r} is neither a list nor a map of numbers")
            continue
        problems.append(f"parameter {path!r}: {error.message}")
    offsets = params.get("sync.camera_offsets")
    cameras = params.get("cameras")
    if not problems and isinstance(offsets, list) and offsets and cameras and len(offsets) != len(cameras):
        problems.append(
            f"parameter 'sync.camera_offsets': {len(offsets)} offsets for {len(params['cameras'])} cameras "
            f"(a list must be aligned with 'cameras')"
        )
    if problems:
        raise ParameterError("; ".join(problems))
    # A map comes in as sync.camera_offsets.<camera> parameters: gather it.
    if "sync" in nested and isinstance(nested["sync"].get("camera_offsets"), dict):
        params = {k: v for k, v in params.items() if not k.startswith("sync.camera_offsets.")}
        params["sync.camera_offsets"] = dict(nested["sync"]["camera_offsets"])
    return params


def resolve_path(value: str, default: Path, kind: str) -> Path:
    path = Path(value).expanduser() if value else default
    if not path.is_file():
        raise StartupError(f"{kind} {str(path)!r} does not exist (parameter {kind.replace(' ', '_')})")
    return path


def _same_calibration(a: CameraInfo, b: CameraInfo) -> bool:
    fields = ("width", "height", "distortion_model", "binning_x", "binning_y")
    if any(getattr(a, f) != getattr(b, f) for f in fields) or a.roi != b.roi:
        return False
    return all(np.array_equal(np.asarray(getattr(a, f)), np.asarray(getattr(b, f))) for f in "dkrp")


class SegmentNode(Node):
    """Subscribes a LiDAR scan and per-camera images (+ CameraInfo); publishes the labelled scan."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, automatically_declare_parameters_from_overrides=True, **kwargs)
        dynamic = ParameterDescriptor(dynamic_typing=True)
        for name, default in DEFAULTS.items():
            if not self.has_parameter(name) and not any(n.startswith(name + ".") for n in self._parameters):
                self.declare_parameter(name, default, dynamic)
        flat = {
            name: param.value
            for name, param in self._parameters.items()
            if name not in _ROS_PARAMETERS and not name.startswith(_ROS_PREFIXES)
        }
        self.params = p = validate_parameters(flat)

        model_path = resolve_path(
            p["model_path"], share_dir() / "models" / "xkd_synthetic.onnx", "model path"
        )
        try:
            self.backend_name, self.backend_reason = choose_backend(p["backend"])
            self.segmenter = Segmenter.from_model(model_path, self.backend_name, p["threads"])
        except Exception as error:  # any loader failure is a start-up error naming the model
            raise StartupError(f"model {str(model_path)!r}: {error}") from None
        rig_path = resolve_path(p["rig_path"], config_path("nuscenes.rig.yaml"), "rig path")
        try:
            self.rig = Rig.load(rig_path)
        except Exception as error:
            raise StartupError(f"rig {str(rig_path)!r}: {error}") from None
        self.cameras = tuple(p["cameras"]) or tuple(self.segmenter.preprocess.cameras)
        missing = [c for c in self.cameras if c not in self.rig.cameras]
        if missing:
            raise StartupError(f"rig {str(rig_path)!r}: no calibration for camera(s) {missing}")
        offsets = p["sync.camera_offsets"]
        if isinstance(offsets, list):
            if offsets and len(offsets) != len(self.cameras):
                raise ParameterError(
                    f"parameter 'sync.camera_offsets': {len(offsets)} offsets for the {len(self.cameras)} "
                    f"cameras {list(self.cameras)}"
                )
            offsets = dict(zip(self.cameras, offsets, strict=True))
        unknown = sorted(set(offsets) - set(self.cameras))
        if unknown:
            raise ParameterError(f"parameter 'sync.camera_offsets': unknown camera(s) {unknown}")
        self.collector = Collector(
            SyncConfig(
                cameras=self.cameras,
                camera_offsets={k: float(v) for k, v in offsets.items()},
                match_threshold=float(p["sync.match_threshold"]),
                timeout=float(p["sync.timeout"]),
            )
        )
        self.compressed = p["camera_transport"] == "compressed"
        # JPEG decoding releases the GIL, so a thread per camera (up to the cores) spreads it over them.
        workers = min(len(self.cameras), os.cpu_count() or 1)
        self._decoder = (
            ThreadPoolExecutor(workers, thread_name_prefix="decode")
            if self.compressed and workers > 1
            else None
        )
        self.classes = self.segmenter.classes

        depth = int(p["qos.depth"])
        if p["qos.reliable"]:
            qos = QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)
        else:
            qos = QoSProfile(
                depth=depth,
                reliability=qos_profile_sensor_data.reliability,
                durability=qos_profile_sensor_data.durability,
                history=HistoryPolicy.KEEP_LAST,
            )
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)

        # State read by the timers.
        self._camera_infos: dict[str, CameraInfo] = {}
        self._intrinsics: dict = {}
        self._info_rig: Rig | None = None
        self._last_log: dict[str, float] = {}
        self._arrivals: dict[str, deque[float]] = {"pointcloud": deque(maxlen=200)}
        self._last_scan_arrival: float | None = None
        self._last_missing: tuple[str, ...] = ()
        self._last_matched = 0
        self._bad_scans = 0
        self._failed_scans = 0
        self._processed = 0
        self._frame_id = self.rig.lidar_frame

        self.create_subscription(PointCloud2, "~/input/pointcloud", self._on_cloud, qos)
        image_type, suffix = (CompressedImage, "image/compressed") if self.compressed else (Image, "image")
        for camera in self.cameras:
            self._arrivals[camera] = deque(maxlen=200)
            self.create_subscription(
                image_type, f"~/input/{camera}/{suffix}", lambda m, c=camera: self._on_image(c, m), qos
            )
            self.create_subscription(
                CameraInfo, f"~/input/{camera}/camera_info", lambda m, c=camera: self._on_info(c, m), qos
            )
        self.cloud_pub = self.create_publisher(PointCloud2, "~/output/labeled_cloud", qos)
        self.marker_pub = self.create_publisher(MarkerArray, "~/output/class_markers", latched)
        self.debug_pubs = {
            name: self.create_publisher(Float64, f"~/debug/{name}_ms", 10)
            for name in ("decode", *STAGES, "pipeline_latency")
        }
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(0.01, self._on_poll)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(5.0, self._publish_markers)
        self._publish_markers()
        self.get_logger().info(
            f"model {model_path} ({self.backend_name}: {self.backend_reason}; "
            f"class set {self.classes.name!r}), "
            f"rig {rig_path}, "
            f"cameras {list(self.cameras)} ({p['camera_transport']}), "
            f"QoS {'reliable' if p['qos.reliable'] else 'best effort'} depth {depth}"
        )

    # ---------------------------------------------------------------- callbacks: store, convert nothing
    def _on_cloud(self, msg: PointCloud2) -> None:
        now = time.monotonic()
        self._last_scan_arrival = now
        self._arrivals["pointcloud"].append(now)
        try:
            self.collector.add_scan(header_stamp(msg.header), msg, now)
        except ValueError as error:
            self._warn("~/input/pointcloud", str(error))

    def _on_image(self, camera: str, msg: Any) -> None:
        now = time.monotonic()
        self._arrivals[camera].append(now)
        try:
            self.collector.add_image(camera, header_stamp(msg.header), msg, now)
        except ValueError as error:
            self._warn(self._image_topic(camera), str(error))

    def _on_info(self, camera: str, msg: CameraInfo) -> None:
        if not self.params["intrinsics_from_camera_info"]:
            return
        previous = self._camera_infos.get(camera)
        if previous is not None and _same_calibration(previous, msg):
            return  # unchanged: keep the rig
        try:
            intrinsics = camera_info_to_intrinsics(msg)
        except (CalibrationError, ValueError) as error:
            self._warn(f"~/input/{camera}/camera_info", f"{error}; keeping the previous intrinsics")
            return
        self._camera_infos[camera] = msg
        self._intrinsics[camera] = intrinsics
        self._info_rig = None  # rebuilt on the next scan

    # ---------------------------------------------------------------- the work
    def _on_poll(self) -> None:
        synced = self.collector.poll(time.monotonic())
        if synced is not None:
            self._process(synced)

    def _process(self, synced: Any) -> None:
        start = time.perf_counter()
        cloud = synced.scan
        try:
            points, channels = points_from_cloud(cloud, "~/input/pointcloud")
        except Exception as error:  # malformed cloud: any decoding failure
            self._bad_scans += 1
            self._warn("~/input/pointcloud", f"malformed PointCloud2, scan skipped: {error}")
            return
        rig = self._current_rig()
        received = [(camera, msg) for camera, (_, msg) in synced.images.items()]
        if self._decoder is not None:
            decoded = list(self._decoder.map(lambda item: self._decode(*item, rig), received))
        else:
            decoded = [self._decode(camera, msg, rig) for camera, msg in received]
        images = {camera: rgb for (camera, _), rgb in zip(received, decoded, strict=True) if rgb is not None}
        decode_ms = 1e3 * (time.perf_counter() - start)
        self._last_missing = tuple(c for c in self.cameras if c not in images)
        self._last_matched = len(images)
        try:
            result = self.segmenter.segment(points, channels, images, rig)
        except ValueError as error:
            self._failed_scans += 1
            self._warn("~/input/pointcloud", f"scan not labelled: {error}")
            return
        intensity = points[:, channels.index("intensity")]
        out = create_labeled_cloud(
            cloud.header, points[:, :3], intensity, result.labels, result.confidence, self.classes.colors
        )
        self.cloud_pub.publish(out)
        self._processed += 1
        self._frame_id = cloud.header.frame_id or self._frame_id
        self.debug_pubs["decode"].publish(Float64(data=decode_ms))
        for stage in STAGES:
            self.debug_pubs[stage].publish(Float64(data=float(result.timings[f"{stage}_ms"])))
        latency = (self.get_clock().now().nanoseconds * 1e-9 - synced.stamp) * 1e3
        self.debug_pubs["pipeline_latency"].publish(Float64(data=latency))

    def _decode(self, camera: str, msg: Any, rig: Rig) -> np.ndarray | None:
        """One camera's image as RGB (a JPEG at the reduced scale the network allows), or None with a warning
        naming the topic: a bad image leaves its camera out of this scan and nothing else."""
        topic = self._image_topic(camera)
        intrinsics = rig[camera].intrinsics
        reduction = decode_reduction(intrinsics, self.segmenter.preprocess) if self.compressed else 1
        try:
            rgb = rgb_from_image(msg, reduction)
        except Exception as error:  # malformed image: any decoding failure
            self._warn(topic, f"malformed image, camera left out: {error}")
            return None
        try:
            check_image(camera, rgb, intrinsics)
        except ValueError as error:
            self._warn(topic, f"{error}, camera left out")
            return None
        return rgb

    def _current_rig(self) -> Rig:
        intrinsics = self._intrinsics
        if not intrinsics:
            return self.rig
        if self._info_rig is None:
            cameras = [
                CameraCalibration(c.name, intrinsics.get(c.name, c.intrinsics), c.T_cam_lidar, c.frame_id)
                for c in self.rig
            ]
            self._info_rig = Rig.from_cameras(cameras, self.rig.lidar_frame)
        return self._info_rig

    # ---------------------------------------------------------------- outputs besides the cloud
    def _publish_markers(self) -> None:
        markers = MarkerArray()
        stamp = self.get_clock().now().to_msg()
        for index, (name, color) in enumerate(zip(self.classes.names, self.classes.colors, strict=True)):
            marker = Marker()
            marker.header.frame_id = self._frame_id
            marker.header.stamp = stamp
            marker.ns = "class_legend"
            marker.id = index
            marker.type = Marker.TEXT_VIEW_FACING
            marker.action = Marker.ADD
            marker.pose.position.x = 0.0
            marker.pose.position.y = -20.0
            marker.pose.position.z = 2.0 + 1.2 * (self.classes.num_classes - index)
            marker.pose.orientation.w = 1.0
            marker.scale.z = 1.0
            r, g, b = (float(v) / 255.0 for v in color)
            marker.color.r, marker.color.g, marker.color.b, marker.color.a = r, g, b, 1.0
            marker.text = f"{index}: {name}"
            markers.markers.append(marker)
        self.marker_pub.publish(markers)

    def _rate(self, name: str, now: float) -> float:
        arrivals = [t for t in self._arrivals[name] if now - t <= RATE_WINDOW_S]
        if len(arrivals) < 2:
            return 0.0
        return (len(arrivals) - 1) / max(arrivals[-1] - arrivals[0], 1e-9)

    def _publish_diagnostics(self) -> None:
        now = time.monotonic()
        stats = self.collector.stats
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: camera-LiDAR segmentation")
        status.hardware_id = "xkd_ros"
        if self._last_scan_arrival is None or now - self._last_scan_arrival > SCAN_TIMEOUT_S:
            status.level, status.message = DiagnosticStatus.ERROR, f"no scan for > {SCAN_TIMEOUT_S:g} s"
        elif self._last_missing:
            status.level = DiagnosticStatus.WARN
            status.message = f"cameras missing: {', '.join(self._last_missing)}"
        else:
            status.level, status.message = DiagnosticStatus.OK, "all cameras matched"
        values = {
            "backend": self.backend_name,
            "backend_reason": self.backend_reason,
            "class set": self.classes.name,
            "cameras matched (last scan)": f"{self._last_matched}/{len(self.cameras)}",
            "cameras missing (last scan)": ", ".join(self._last_missing),
            "scans received": stats.scans_received,
            "scans labelled": self._processed,
            "scans dropped": stats.scans_dropped,
            "scans malformed": self._bad_scans,
            "scans failed": self._failed_scans,
            "pointcloud rate [Hz]": f"{self._rate('pointcloud', now):.2f}",
        }
        for camera in self.cameras:
            values[f"{camera} matched"] = stats.matched.get(camera, 0)
            values[f"{camera} rate [Hz]"] = f"{self._rate(camera, now):.2f}"
        status.values = [KeyValue(key=k, value=str(v)) for k, v in values.items()]
        array_msg = DiagnosticArray(status=[status])
        array_msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array_msg)

    def destroy_node(self) -> None:
        if self._decoder is not None:
            self._decoder.shutdown(wait=True)
        super().destroy_node()

    # ---------------------------------------------------------------- helpers
    def _image_topic(self, camera: str) -> str:
        return f"~/input/{camera}/image" + ("/compressed" if self.compressed else "")

    def _warn(self, topic: str, reason: str) -> None:
        """Log a bad input once per LOG_THROTTLE_S per topic."""
        now = time.monotonic()
        if now - self._last_log.get(topic, -float("inf")) >= LOG_THROTTLE_S:
            self._last_log[topic] = now
            self.get_logger().warning(f"{topic}: {reason}")


def main(args: list[str] | None = None) -> int:
    rclpy.init(args=args)
    executor = None
    node = None
    code = 0
    try:
        node = SegmentNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (ParameterError, StartupError) as error:
        rclpy.logging.get_logger(NODE_NAME).error(f"{type(error).__name__}: {error}")
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if executor is not None:
            executor.shutdown()
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
