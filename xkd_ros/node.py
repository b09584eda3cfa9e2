"""`segment_node`: the ROS 2 glue around Collector (sync) and Segmenter (pipeline).

Callbacks only store messages (stamped by their header, timed by time.monotonic on arrival); a 10 ms timer
polls the collector and, on the newest ready scan, decodes it and its images and pre-processes them
(Segmenter.prepare). With `pipeline.overlap` (the default) the prepared scan goes to an inference thread
(xkd_ros.overlap.NewestWorker: Segmenter.infer, the labelled cloud, publishing) while the timer's thread
decodes and prepares the next scan: ONNX Runtime releases the GIL, so the two overlap. Between them is a
queue of one: a prepared scan still waiting when a newer one is ready is dropped and counted ("scans
superseded before inference"), so a scan never waits behind another. With an input queue deeper than one
(qos.depth > 1: every scan is wanted, as when an evaluation works through a recording) the timer's thread
waits for the slot instead, dropping nothing, and the executor takes the next messages only then, as
without the overlap. Without the overlap the timer's thread does it all, one scan at a time. With the
shipped input queue depth of 1 a busy node finds only the newest messages when it looks again, so latency
does not build up there either (the executor takes one message per topic per turn: a deeper queue is worked
through oldest first). CompressedImages are decoded over a thread pool, at the reduced scale the network
allows.

Parameters are what config/segment.schema.json declares (xkd_ros.parameters validates them, without ROS);
a bad parameter, file, model or calibration is one line naming it, and the process exits 1. Those the schema
marks `"x-runtime": true` (sync.match_threshold, sync.timeout, sync.camera_offsets, debug.publish) change
while the node runs: `ros2 param set` validates the new set against the same schema (a bad value is refused
with the start-up message, the old one kept) and the collector takes the new sync settings for the scans
that arrive next. Every other parameter is declared read-only and read at start-up only: `ros2 param set` is
refused with that reason (relaunch with the new value). While running no message can stop the node: a scan
or image that cannot be used is skipped, counted on /diagnostics and logged (throttled per topic and kind of
fault), and so is every scan the collector or the middleware dropped. The ~/debug/<stage>_ms timings are
geometry_msgs/PointStamped with the labelled scan's header (point.x = milliseconds), so a plot lines them up
with the scan (docs/parameters.md).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
import sys
import threading
import time
import traceback
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
import rclpy.logging
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PointStamped
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import Marker, MarkerArray

from xkd_ros.data.messages import (
    SequenceGaps,
    header_stamp,
    points_from_cloud,
    rgb_from_image,
)
from xkd_ros.geometry import CalibrationError, Rig, intensity_mismatch
from xkd_ros.geometry.rig import CameraCalibration
from xkd_ros.inference import BackendError, choose_backend
from xkd_ros.memory import keep_freed_memory
from xkd_ros.msgs import camera_info_to_intrinsics, compressed_image_size, create_labeled_cloud
from xkd_ros.overlap import NewestWorker
from xkd_ros.parameters import (
    NODE_NAME,
    OFFSETS,
    ParameterError,
    check_offsets,
    is_ros_parameter,
    item_type,
    leaves,
    lidar_profile,
    runtime_parameters,
    schema_leaf,
    select_cameras,
    validate_parameters,
)
from xkd_ros.paths import config_path, default_model
from xkd_ros.pipeline import REQUIRED_CHANNELS, PreparedScan, Segmenter
from xkd_ros.preprocess import IMAGE_REDUCTIONS, check_image, decode_reduction, image_reduction
from xkd_ros.sync import Collector, SyncConfig

__all__ = ["ParameterError", "SegmentNode", "StartupError", "main"]

STAGES = ("preprocess", "inference", "postprocess", "total")
DEBUG_TIMINGS = ("decode", "queue", *STAGES, "pipeline_latency")  # ~/debug/<name>_ms
STARTUP_ONLY = "read at start-up only: relaunch with the new value"
LOG_THROTTLE_S = 5.0
SCAN_TIMEOUT_S = 1.0
RATE_WINDOW_S = 5.0
INTENSITY_CHECK_SCANS = 5  # the first scans' intensities are checked against lidar.intensity_scale
STOP_TIMEOUT_S = 30.0  # longest wait at shutdown for the scan in inference (a 128-beam scan takes seconds)
SUPERSEDED = "scans superseded before inference"
CLOUD_TOPIC = "~/input/pointcloud"
# The cloud fields Segmenter.segment uses (x, y, z, intensity, and ring where present): the only ones decoded.
POINT_FIELDS = (*REQUIRED_CHANNELS, "ring")
# What a growing Collector counter means, logged on the scan topic (images_duplicate: on the image topic).
SYNC_DROPS = {
    "scans_superseded": "scan(s) skipped, a newer scan was ready first (the node is behind its input)",
    "scans_overflowed": "scan(s) dropped, too many scans were waiting for their images",
    "scans_duplicate": "scan(s) dropped with the stamp of an earlier one (a driver leaving its stamps at 0?)",
    "scans_backward": "scan(s) dropped, stamped before the last labelled scan",
    "scans_lost_on_reset": "scan(s) lost when the collector restarted",
    "resets": "collector restart(s): the stamps jumped back by more than a second or the clock stepped back",
}
_TYPES = {
    bool: Parameter.Type.BOOL,
    int: Parameter.Type.INTEGER,
    float: Parameter.Type.DOUBLE,
    str: Parameter.Type.STRING,
}
_ARRAY_TYPES = {"string": Parameter.Type.STRING_ARRAY, "number": Parameter.Type.DOUBLE_ARRAY}
_ARRAYS = frozenset(kind for kind in Parameter.Type if kind.name.endswith("_ARRAY"))
# What a change of a runtime parameter does, for its log line.
_RUNTIME_EFFECT = {
    "sync.match_threshold": "images arriving from now on are matched with it",
    "sync.timeout": "for the scans that arrive from now on (a scan already waiting keeps its deadline)",
    OFFSETS: "images arriving from now on are matched with it",
}


class StartupError(RuntimeError):
    """The model or the calibration cannot be loaded; the text names the file and what is wrong."""


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


def _sync_counters(stats: Any) -> dict[str, int]:
    """The Collector's integer counters by name (whatever SyncStats holds)."""
    return {
        f.name: value
        for f in dataclasses.fields(stats)
        if isinstance(value := getattr(stats, f.name), int) and not isinstance(value, bool)
    }


@dataclasses.dataclass(eq=False)
class _PreparedCloud:
    """A scan decoded and pre-processed on the timer's thread, with what its labelled cloud is made of."""

    header: Any
    stamp: float
    xyz: np.ndarray
    intensity: np.ndarray
    prepared: PreparedScan
    decode_ms: float


class SegmentNode(Node):
    """Subscribes a LiDAR scan and per-camera images (+ CameraInfo); publishes the labelled scan."""

    def __init__(self, **kwargs: Any) -> None:
        self._decoder: ThreadPoolExecutor | None = None  # before anything can fail: destroy_node reads them
        self._worker: NewestWorker[_PreparedCloud] | None = None
        self._lost_at_shutdown = 0  # scans in inference when Ctrl-C shut the context down
        super().__init__(NODE_NAME, **kwargs)
        try:
            self._start()
        except BaseException:
            self.destroy_node()  # a half-built node leaves no DDS entities or threads behind
            raise

    def _start(self) -> None:
        self.params = p = self._declare_parameters()
        try:
            self.backend_name, self.backend_reason = choose_backend(p["backend"])
        except BackendError as error:  # names the parameter and the backends there are
            raise StartupError(str(error)) from None
        model_path = resolve_path(p["model_path"], default_model(self.backend_name), "model path")
        self.threads = p["threads"]
        try:
            self.segmenter = Segmenter.from_model(model_path, self.backend_name, self.threads)
        except Exception as error:  # any loader failure is a start-up error naming the model
            raise StartupError(f"model {str(model_path)!r}: {error}") from None
        rig_path = resolve_path(p["rig_path"], config_path("nuscenes.rig.yaml"), "rig path")
        try:
            rig = Rig.load(rig_path)
        except Exception as error:
            raise StartupError(f"rig {str(rig_path)!r}: {error}") from None
        # The rig names the cameras (the `cameras` parameter picks among them) and the LiDAR's profile (the
        # lidar.* parameters override it); the model takes whatever it is given, or says why it cannot.
        self.cameras = select_cameras(p["cameras"], rig.names, str(rig_path))
        self.rig = dataclasses.replace(
            rig.with_cameras([rig[camera] for camera in self.cameras]), lidar=lidar_profile(rig.lidar, p)
        )
        if not self.rig.lidar.mount_height:
            self.get_logger().warning(
                f"rig {str(rig_path)!r}: lidar.mount_height is not set: the network reads heights above the "
                "ground and will take them from the LiDAR (road may pass for sidewalk); set it in the rig "
                "file's lidar section or with the parameter lidar.mount_height"
            )
        try:
            self.rig_summary = self.segmenter.check_rig(self.rig)
        except ValueError as error:
            raise StartupError(f"rig {str(rig_path)!r} with model {str(model_path)!r}: {error}") from None
        self.collector = Collector(self._sync_config(p))
        self._debug = p["debug.publish"]  # read by the inference thread for each scan
        self.max_points = p["max_points"]
        self._every_scan = p["qos.depth"] > 1  # the overlap's hand-off waits rather than drops
        self.compressed = p["camera_transport"] == "compressed"
        # JPEG decoding releases the GIL, so a thread per camera (up to the cores) spreads it over them.
        workers = min(len(self.cameras), os.cpu_count() or 1)
        if self.compressed and workers > 1:
            self._decoder = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        self.classes = self.segmenter.classes

        depth = p["qos.depth"]
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
        self._last_log: dict[tuple[str, str], float] = {}
        self._arrivals: dict[str, deque[float]] = {"pointcloud": deque(maxlen=200)}
        self._last_scan_arrival: float | None = None
        self._last_missing: tuple[str, ...] = ()
        self._last_matched = 0
        self._last_fused: tuple[str, ...] = ()
        self._last_fused_share = 0.0
        self._intensity_checked = 0
        self._intensity_warning = ""
        self._frame_id = self.rig.lidar_frame
        # What became of every input, for /diagnostics: "scans labelled", "<camera> images refused", ...
        self.counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()  # decode threads count too
        self._sync_seen = _sync_counters(self.collector.stats)
        self._gaps = {topic: SequenceGaps() for topic in (CLOUD_TOPIC, *map(self._image_topic, self.cameras))}

        self.create_subscription(PointCloud2, CLOUD_TOPIC, self._on_cloud, qos)
        image_type = CompressedImage if self.compressed else Image
        for camera in self.cameras:
            self._arrivals[camera] = deque(maxlen=200)
            self.create_subscription(
                image_type, self._image_topic(camera), functools.partial(self._on_image, camera), qos
            )
            self.create_subscription(
                CameraInfo, f"~/input/{camera}/camera_info", lambda m, c=camera: self._on_info(c, m), qos
            )
        self.cloud_pub = self.create_publisher(PointCloud2, "~/output/labeled_cloud", qos)
        self.marker_pub = self.create_publisher(MarkerArray, "~/output/class_markers", latched)
        self.debug_pubs = {
            name: self.create_publisher(PointStamped, f"~/debug/{name}_ms", 10) for name in DEBUG_TIMINGS
        }
        self.fused_pub = self.create_publisher(String, "~/debug/fused_cameras", 10)
        self.diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        if p["pipeline.overlap"]:  # the publishers exist before the worker can publish
            self._worker = NewestWorker(self._label, self._scan_failed, name="inference")
        self.create_timer(0.01, self._on_poll)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(5.0, self._publish_markers)
        self._publish_markers()
        self.get_logger().info(
            f"model {model_path} ({self.backend_name}: {self.backend_reason}; "
            f"{self.threads or 'default'} inference thread(s); "
            f"class set {self.classes.name!r}), "
            f"rig {rig_path}: {self.rig_summary}; LiDAR {self.rig.lidar.describe()}; "
            f"cameras {list(self.cameras)} ({p['camera_transport']}), "
            f"QoS {'reliable' if p['qos.reliable'] else 'best effort'} depth {depth}, "
            f"max_points {self.max_points}, pipeline {self._pipeline()}; "
            f"~/debug topics {'on' if self._debug else 'off'} (debug.publish); changeable while running: "
            f"{', '.join(sorted(self._runtime))} (ros2 param set)"
        )

    # ---------------------------------------------------------------- parameters
    def _declare_parameters(self) -> dict[str, Any]:
        """Validate the overrides (parameter files, -p) against the schema, then declare every parameter of
        the schema with its value, statically typed from the schema, and the start-up-only ones read-only.

        In three steps: rclpy types a value by itself and has no type for an empty list (`cameras: []`), so
        each parameter is declared with its schema's type, then given its value (set_parameters), and only
        then made read-only (set_descriptor): a read-only parameter's value cannot be set any more."""
        given = {
            name: override.value
            for name, override in self._parameter_overrides.items()
            if not is_ros_parameter(name)
        }
        params = validate_parameters(given)
        schema = leaves()
        self._runtime = runtime_parameters()
        declared = []
        for name, value in params.items():
            if isinstance(value, dict):  # sync.camera_offsets as a map: one parameter per camera
                declared += [(f"{name}.{key}", Parameter.Type.DOUBLE, v) for key, v in value.items()]
            elif isinstance(value, list):
                declared.append((name, _ARRAY_TYPES[item_type(schema[name])], value))
            else:
                declared.append((name, _TYPES[type(value)], value))
        self.declare_parameters(
            "",
            [(name, kind, self._descriptor(schema, name, kind, False)) for name, kind, _ in declared],
            ignore_override=True,
        )
        self.set_parameters([Parameter(name, kind, value) for name, kind, value in declared])
        for name, kind, _ in declared:
            if schema_leaf(name) not in self._runtime:
                self.set_descriptor(name, self._descriptor(schema, name, kind, True))
        self.add_pre_set_parameters_callback(self._as_declared_type)
        self.add_on_set_parameters_callback(self._check_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)
        return params

    def _descriptor(
        self, schema: dict[str, dict], name: str, kind: Parameter.Type, read_only: bool
    ) -> ParameterDescriptor:
        """What `ros2 param describe` says: the schema's description, and whether the value changes at run
        time. No ranges in it: rclpy would check those before the on-set callback, in its words, not the
        schema's."""
        runtime = "changes at run time (ros2 param set), validated against config/segment.schema.json"
        return ParameterDescriptor(
            description=schema[schema_leaf(name)].get("description", ""),
            type=kind.value,
            read_only=read_only,
            additional_constraints=STARTUP_ONLY if read_only else runtime,
        )

    def _sync_config(self, params: dict[str, Any]) -> SyncConfig:
        """The collector's settings from the (validated) parameters; ParameterError when sync.camera_offsets
        does not fit the cameras."""
        return SyncConfig(
            cameras=self.cameras,
            camera_offsets=check_offsets(params[OFFSETS], self.cameras),
            match_threshold=params["sync.match_threshold"],
            timeout=params["sync.timeout"],
        )

    def _startup_only(self, parameters: list[Parameter]) -> SetParametersResult | None:
        """The refusal of a change to a start-up-only (read-only) parameter, naming it and saying why; None
        when every parameter may change. rclpy's own read-only check comes before any callback and says
        only "Trying to set a read-only parameter", hence this check in front of it."""
        fixed = [
            p.name
            for p in parameters
            if self.has_parameter(p.name) and self.describe_parameter(p.name).read_only
        ]
        if not fixed:
            return None
        return SetParametersResult(
            successful=False,
            reason=f"parameter(s) {', '.join(map(repr, fixed))} of {self.get_fully_qualified_name()}: "
            f"{STARTUP_ONLY} (the ones that change at run time: {', '.join(sorted(self._runtime))})",
        )

    def set_parameters(self, parameter_list: list[Parameter]) -> list[SetParametersResult]:
        """rclpy's, with a start-up-only parameter refused by `_startup_only`'s reason (in this process)."""
        results = []
        for param in parameter_list:  # one by one, as rclpy's: a refused one leaves the others to be set
            results.append(self._startup_only([param]) or super().set_parameters([param])[0])
        return results

    def set_parameters_atomically(self, parameter_list: list[Parameter]) -> SetParametersResult:
        """rclpy's, with a start-up-only parameter refused by `_startup_only`'s reason: the parameter
        services (`ros2 param set`, both set_parameters services) come this way."""
        return self._startup_only(parameter_list) or super().set_parameters_atomically(parameter_list)

    def _as_declared_type(self, parameters: list[Parameter]) -> list[Parameter]:
        """`ros2 param set /segment sync.timeout 1` sends an integer and `... sync.camera_offsets []` a bool
        array (ros2param types a value by its YAML): an integer for a number, or an empty list of any type
        for a list, is taken as the declared type rather than refused as the wrong type."""
        converted = []
        for param in parameters:
            declared = self.get_parameter(param.name).type_ if self.has_parameter(param.name) else None
            if declared == Parameter.Type.DOUBLE and param.type_ == Parameter.Type.INTEGER:
                param = Parameter(param.name, declared, float(param.value))
            elif declared == Parameter.Type.DOUBLE_ARRAY and param.type_ == Parameter.Type.INTEGER_ARRAY:
                param = Parameter(param.name, declared, [float(v) for v in param.value])
            elif declared in _ARRAYS and param.type_ in _ARRAYS and not len(param.value):
                param = Parameter(param.name, declared, [])
            converted.append(param)
        return converted

    def _validated(self, changes: list[Parameter]) -> dict[str, Any]:
        """The node's parameters with `changes` applied, validated as a whole as at start-up (same schema,
        same messages); ParameterError naming the bad one."""
        flat = {name: param.value for name, param in self.get_parameters_by_prefix("").items()}
        flat.update({param.name: param.value for param in changes})
        params = validate_parameters(flat)
        self._sync_config(params)  # sync.camera_offsets against the cameras (["*"]: the rig's)
        return params

    def _check_parameter_change(self, parameters: list[Parameter]) -> SetParametersResult:
        """A runtime parameter's new value, validated with the rest; a bad one is refused with the schema's
        message and the old value stays. (Start-up-only ones never get here: `_startup_only`.)"""
        ours = [p for p in parameters if schema_leaf(p.name) in self._runtime]
        if ours:
            try:
                self._validated(ours)
            except ParameterError as error:
                return SetParametersResult(successful=False, reason=str(error))
        return SetParametersResult(successful=True)

    def _apply_parameter_change(self, parameters: list[Parameter]) -> None:
        """A runtime change, set: the collector gets the new sync settings (for the scans that arrive next;
        one waiting keeps its deadline and its images), debug publishing goes on or off; logged."""
        changed = sorted({schema_leaf(p.name) for p in parameters} & self._runtime)
        if not changed:
            return
        before, params = self.params, self._validated([])
        self.collector.config = self._sync_config(params)
        self._debug = params["debug.publish"]
        self.params = params
        for name in changed:
            effect = _RUNTIME_EFFECT.get(name) or (
                "~/debug/* published" if self._debug else "~/debug/* not published until it is set true"
            )
            self.get_logger().info(
                f"parameter {name!r} changed from {before[name]} to {params[name]}: {effect}"
            )

    # ---------------------------------------------------------------- callbacks: store, convert nothing
    def _on_cloud(self, msg: PointCloud2, info: dict) -> None:
        now = time.monotonic()
        self._last_scan_arrival = now
        self._arrivals["pointcloud"].append(now)
        self._count("scans received")
        self._count_lost(CLOUD_TOPIC, "scans lost in transport", info)
        size = msg.width * msg.height
        if size > self.max_points:
            self._fault(
                CLOUD_TOPIC,
                "scans too large",
                f"{msg.width} x {msg.height} = {size} points, more than max_points {self.max_points}: "
                "scan refused before decoding",
            )
            return
        try:
            self.collector.add_scan(header_stamp(msg.header), msg, now)
        except ValueError as error:
            self._fault(CLOUD_TOPIC, "scans refused", f"scan refused: {error}")
        self._log_sync_drops(CLOUD_TOPIC)

    def _on_image(self, camera: str, msg: Any, info: dict) -> None:
        now = time.monotonic()
        topic = self._image_topic(camera)
        self._arrivals[camera].append(now)
        self._count_lost(topic, f"{camera} images lost in transport", info)
        try:
            self.collector.add_image(camera, header_stamp(msg.header), msg, now)
        except ValueError as error:
            self._fault(topic, f"{camera} images refused", f"image refused: {error}")
        self._log_sync_drops(topic)

    def _on_info(self, camera: str, msg: CameraInfo) -> None:
        if not self.params["intrinsics_from_camera_info"]:
            return
        previous = self._camera_infos.get(camera)
        if previous is not None and _same_calibration(previous, msg):
            return  # unchanged: keep the rig
        topic = f"~/input/{camera}/camera_info"
        calibrated = self.rig[camera].intrinsics
        if (msg.width, msg.height) != (calibrated.width, calibrated.height):
            self._fault(
                topic,
                f"{camera} camera_info refused",
                f"CameraInfo of a {msg.width}x{msg.height} image, but the rig calibrates {camera} at "
                f"{calibrated.width}x{calibrated.height}: not used, keeping the previous intrinsics",
            )
            return
        try:
            intrinsics = camera_info_to_intrinsics(msg)
        except (CalibrationError, ValueError) as error:
            self._fault(topic, f"{camera} camera_info refused", f"{error}; keeping the previous intrinsics")
            return
        self._camera_infos[camera] = msg
        self._intrinsics[camera] = intrinsics
        self._info_rig = None  # rebuilt on the next scan

    # ---------------------------------------------------------------- the work
    def _on_poll(self) -> None:
        synced = self.collector.poll(time.monotonic())
        self._log_sync_drops(CLOUD_TOPIC)
        if synced is None:
            return
        try:
            self._process(synced)
        except Exception as error:  # pre-processing (or, without the overlap, inference): skip the scan
            self._scan_failed(error)

    def _scan_failed(self, error: BaseException) -> None:
        if not self.context.ok():  # Ctrl-C shut the context down under the inference thread's publishing
            self._lost_at_shutdown += 1
            return
        self._fault(CLOUD_TOPIC, "scans failed", f"scan not labelled: {type(error).__name__}: {error}")

    def _process(self, synced: Any) -> None:
        """Decode and pre-process a synchronised set on the timer's thread, then label it: on the inference
        thread (replacing a prepared scan still waiting for it, counted) or, without the overlap, here."""
        start = time.perf_counter()
        cloud = synced.scan
        try:
            points, channels = points_from_cloud(cloud, CLOUD_TOPIC, POINT_FIELDS)
        except Exception as error:  # malformed cloud: any decoding failure
            self._fault(CLOUD_TOPIC, "scans malformed", f"malformed PointCloud2, scan skipped: {error}")
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
        prepared = self.segmenter.prepare(points, channels, images, rig)
        intensity = points[:, channels.index("intensity")]
        if self._intensity_checked < INTENSITY_CHECK_SCANS:
            self._check_intensity(intensity)
        scan = _PreparedCloud(cloud.header, synced.stamp, points[:, :3], intensity, prepared, decode_ms)
        if self._worker is None:
            self._label(scan, 0.0)
        elif self._worker.put(scan, wait=self._every_scan):
            superseded = self.counts[SUPERSEDED] + 1  # counted on this thread only
            self._fault(
                CLOUD_TOPIC,
                SUPERSEDED,
                "a prepared scan was dropped for a newer one before inference took it (inference is slower "
                f"than the scans arrive; {superseded} in all)",
            )

    def _label(self, scan: _PreparedCloud, queue_ms: float) -> None:
        """Inference, the labelled cloud and every output of one prepared scan (on the inference thread
        with the overlap: rclpy publishers may be used from any thread). debug.publish is read once, first:
        a scan labelled while it changes has all its debug messages or none."""
        debug = self._debug
        result = self.segmenter.infer(scan.prepared)
        out = create_labeled_cloud(
            scan.header,
            scan.xyz,
            scan.intensity,
            result.labels,
            result.confidence,
            self.classes.colors,
            fused=result.seen,
        )
        self.cloud_pub.publish(out)
        self._count("scans labelled")
        self._last_fused = result.cameras_used
        self._last_fused_share = float(result.seen.mean()) if len(result.seen) else 0.0
        self._frame_id = scan.header.frame_id or self._frame_id
        if not debug:
            return
        self.fused_pub.publish(String(data=", ".join(result.cameras_used)))
        latency = (self.get_clock().now().nanoseconds * 1e-9 - scan.stamp) * 1e3
        timings = {
            "decode": scan.decode_ms,
            "queue": queue_ms,
            **{stage: float(result.timings[f"{stage}_ms"]) for stage in STAGES},
            "pipeline_latency": latency,
        }
        # Stamped with the labelled cloud's header: a plot lines each timing up with its scan.
        for name, ms in timings.items():
            self.debug_pubs[name].publish(PointStamped(header=out.header, point=Point(x=float(ms))))

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no prepared scan waits for inference and none is in it (False if `timeout` seconds
        passed first): what a poll led to is then counted and published. True at once without the overlap."""
        return self._worker is None or self._worker.idle(timeout)

    def _pipeline(self) -> str:
        if self._worker is None:
            return "sequential (pipeline.overlap false)"
        waiting = "waits for" if self._every_scan else "replaces (counted) a scan still waiting for"
        return (
            "overlapped: the next scan is decoded and pre-processed during inference, and "
            f"{waiting} the inference thread"
        )

    def _check_intensity(self, intensity: np.ndarray) -> None:
        """The first scans' intensities against the profile's scale: a 0..1 scanner set up as 0..255 (or the
        other way round) runs without an error and labels worse, so it is said, naming the setting."""
        self._intensity_checked += 1
        warning = intensity_mismatch(intensity, self.rig.lidar)
        if warning:
            self._intensity_warning = warning
            self._warn(
                CLOUD_TOPIC, "intensity scale", f"{warning} (parameter lidar.intensity_scale or the rig)"
            )

    def _decode(self, camera: str, msg: Any, rig: Rig) -> np.ndarray | None:
        """One camera's image as RGB (a compressed one at the reduced scale the network allows), or None,
        counted and logged naming the topic: a bad image leaves its camera out of this scan and nothing else.
        A compressed image's size is read from its header first: one that is not the calibrated size (or
        that divided by 2, 4 or 8) is refused before a decoder allocates anything for it."""
        topic, kind = self._image_topic(camera), f"{camera} images refused"
        intrinsics = rig[camera].intrinsics
        calibrated = f"{camera} is calibrated at {intrinsics.width}x{intrinsics.height}"
        reduction = 1
        try:
            if self.compressed:
                encoding, width, height = compressed_image_size(msg.data)
                binned = image_reduction((height, width), intrinsics)
                if binned is None:
                    sizes = ", ".join(map(str, IMAGE_REDUCTIONS[1:]))
                    self._fault(
                        topic,
                        kind,
                        f"{encoding.upper()} image of {width}x{height} (from its header), but {calibrated} "
                        f"(or that divided by {sizes}): camera left out",
                    )
                    return None
                reduction = max(1, decode_reduction(intrinsics, self.segmenter.preprocess) // binned)
            rgb = rgb_from_image(msg, reduction)
        except Exception as error:  # malformed image: any decoding failure
            self._fault(topic, kind, f"malformed image, camera left out: {error}")
            return None
        try:
            check_image(camera, rgb, intrinsics)
        except ValueError as error:
            decoded = f" (decoded at 1/{reduction})" if reduction > 1 else ""
            self._fault(topic, kind, f"{error}{decoded}, camera left out")
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
            self._info_rig = self.rig.with_cameras(cameras)
        return self._info_rig

    # ---------------------------------------------------------------- counting what is dropped
    def _count(self, key: str, n: int = 1) -> None:
        with self._counts_lock:
            self.counts[key] += n

    def _fault(self, topic: str, key: str, reason: str, n: int = 1) -> None:
        """Count `n` inputs of `topic` under `key` and log why (throttled per topic and key)."""
        self._count(key, n)
        self._warn(topic, key, reason)

    def _count_lost(self, topic: str, key: str, info: dict) -> None:
        lost = self._gaps[topic].add(info)
        if lost:
            self._fault(
                topic,
                key,
                f"{lost} message(s) published but not received before this one (the input queue, depth "
                f"{self.params['qos.depth']}, overwritten while the node was busy, or lost on the network)",
                lost,
            )

    def _log_sync_drops(self, topic: str) -> None:
        """Log what the collector dropped since the last look: its counters are the count."""
        now = _sync_counters(self.collector.stats)
        for name, value in now.items():
            grown = value - self._sync_seen.get(name, 0)
            if grown <= 0:
                continue
            if name in SYNC_DROPS:
                self._warn(CLOUD_TOPIC, name, f"{grown} {SYNC_DROPS[name]} ({value} in all)")
            elif name == "images_duplicate":
                self._warn(topic, name, f"{grown} image(s) ignored with the stamp of one already buffered")
        self._sync_seen = now

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

    def diagnostic_values(self) -> dict[str, str]:
        """What /diagnostics reports: the set-up, the last scan, and every counter: the node's ("scans
        labelled", "scans too large", "<camera> images refused", ...) and the collector's ("sync: ...")."""
        now = time.monotonic()
        stats = self.collector.stats
        with self._counts_lock:
            counts = dict(self.counts)
        scan_keys = (
            "received",
            "labelled",
            "too large",
            "malformed",
            "failed",
            "superseded before inference",
            "refused",
            "lost in transport",
        )
        values: dict[str, Any] = {
            "backend": self.backend_name,
            "backend_reason": self.backend_reason,
            "inference threads": self.threads or "backend default",
            "pipeline": self._pipeline(),
            "class set": self.classes.name,
            "rig": self.rig_summary,
            "lidar profile": self.rig.lidar.describe(),
            "intensity check": self._intensity_warning
            or (f"ok (first {self._intensity_checked} scans)" if self._intensity_checked else "no scan yet"),
            "cameras matched (last scan)": f"{self._last_matched}/{len(self.cameras)}",
            "cameras missing (last scan)": ", ".join(self._last_missing),
            "cameras fused (last scan)": ", ".join(self._last_fused),
            "points fused (last scan) [%]": f"{100 * self._last_fused_share:.1f}",
            **{f"scans {key}": counts.get(f"scans {key}", 0) for key in scan_keys},
            "scans dropped": stats.scans_dropped,
            "scans pending": self.collector.pending,
            "pointcloud rate [Hz]": f"{self._rate('pointcloud', now):.2f}",
        }
        values.update({f"sync: {name}": value for name, value in _sync_counters(stats).items()})
        for camera in self.cameras:
            values[f"{camera} matched"] = stats.matched.get(camera, 0)
            values[f"{camera} rate [Hz]"] = f"{self._rate(camera, now):.2f}"
            for kind in ("images refused", "images lost in transport", "camera_info refused"):
                values[f"{camera} {kind}"] = counts.get(f"{camera} {kind}", 0)
        return {key: str(value) for key, value in values.items()}

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: camera-LiDAR segmentation")
        status.hardware_id = "xkd_ros"
        if self._last_scan_arrival is None or time.monotonic() - self._last_scan_arrival > SCAN_TIMEOUT_S:
            status.level, status.message = DiagnosticStatus.ERROR, f"no scan for > {SCAN_TIMEOUT_S:g} s"
        elif self._last_missing:
            status.level = DiagnosticStatus.WARN
            status.message = f"cameras missing: {', '.join(self._last_missing)}"
        elif self._intensity_warning:
            status.level, status.message = DiagnosticStatus.WARN, self._intensity_warning
        elif not self.cameras:
            status.level = DiagnosticStatus.OK
            status.message = "LiDAR-only: no cameras configured, the LiDAR-only head labels every point"
        else:
            status.level, status.message = DiagnosticStatus.OK, "all cameras matched"
        status.values = [KeyValue(key=k, value=v) for k, v in self.diagnostic_values().items()]
        array_msg = DiagnosticArray(status=[status])
        array_msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array_msg)

    def destroy_node(self) -> None:
        """Stop the inference thread (after the scan it is on, if any: an ONNX Runtime run cannot be
        interrupted), then the decoders, then the rclpy node."""
        worker, self._worker = self._worker, None
        stopped = worker is None or worker.stop(STOP_TIMEOUT_S)
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            decoder.shutdown(wait=True)
        super().destroy_node()
        # Said once the node is gone: after Ctrl-C its /rosout publisher has no context left to publish in.
        log = rclpy.logging.get_logger(NODE_NAME)
        if not stopped:
            log.warning(
                f"the inference thread did not finish its scan within {STOP_TIMEOUT_S:g} s: left running"
            )
        lost = self._lost_at_shutdown + (worker.discarded_at_stop if worker is not None else 0)
        if lost:
            log.info(f"{lost} prepared scan(s) not labelled: the node was shutting down")

    # ---------------------------------------------------------------- helpers
    def _image_topic(self, camera: str) -> str:
        return f"~/input/{camera}/image" + ("/compressed" if self.compressed else "")

    def _warn(self, topic: str, kind: str, reason: str) -> None:
        """Log a fault once per LOG_THROTTLE_S per topic and kind: a second kind of fault on a topic that is
        already logging still gets its line."""
        now = time.monotonic()
        if now - self._last_log.get((topic, kind), -float("inf")) >= LOG_THROTTLE_S:
            self._last_log[topic, kind] = now
            self.get_logger().warning(f"{topic}: {reason}")


# ------------------------------------------------------------------ the process
def _params_files(args: list[str]) -> list[str]:
    """The --params-file arguments of a command line."""
    return [args[i + 1] for i, arg in enumerate(args[:-1]) if arg == "--params-file"]


def _rcl_reason(error: Exception) -> str:
    """An RCLError's text without the C source locations rcl appends (", at /project/src/parse.c:835")."""
    text = re.sub(r",? at [^,]*\.c:\d+", "", str(error))
    return " ".join(text.split()).removeprefix("failed to initialize rcl: ")


def _error(text: str) -> None:
    if rclpy.ok():
        rclpy.logging.get_logger(NODE_NAME).error(text)
    else:  # rclpy's logging is not set up: plain stderr
        print(f"segment_node: error: {text}", file=sys.stderr)


def _init(args: list[str] | None) -> None:
    """rclpy.init, its argument errors as one line: the parameter files are checked to exist first, and
    rcl's own "Failed to parse global arguments" line is silenced during init (a user's --log-level for rcl,
    read by init, still applies afterwards)."""
    argv = sys.argv if args is None else args
    for path in _params_files(argv):
        if not Path(path).is_file():
            raise ParameterError(f"parameter file {path!r} does not exist")
    severity = rclpy.logging.LoggingSeverity
    rclpy.logging.set_logger_level("rcl", severity.FATAL)
    try:
        rclpy.init(args=args)
    finally:
        if not any("rcl:=" in arg for arg in argv):  # else init applied the user's level
            rclpy.logging.set_logger_level("rcl", severity.UNSET)


def main(args: list[str] | None = None) -> int:
    executor = None
    node = None
    code = 0
    try:
        keep_freed_memory()  # before the first scan: per-scan arrays reuse freed memory (xkd_ros.memory)
        _init(args)
        node = SegmentNode()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (ParameterError, StartupError) as error:
        _error(f"{type(error).__name__}: {error}")
        code = 1
    except rclpy_implementation.RCLError as error:  # rcl refused the command line or a parameter file
        _error(_rcl_reason(error))
        code = 1
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception as error:  # a bug, not an input: one line, the traceback at debug level
        _error(f"internal error {type(error).__name__}: {error}")
        rclpy.logging.get_logger(NODE_NAME).debug(traceback.format_exc())
        code = 1
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
