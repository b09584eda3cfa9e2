"""`segment_node`: the ROS 2 glue around xkd_ros.labeller.ScanLabeller (the Collector, the Segmenter, and
every count of what is dropped, without ROS) and xkd_ros.node_parameters (the schema's parameters in rclpy).

Callbacks only hand messages over (timed by time.monotonic on arrival); a 10 ms timer polls the labeller,
which labels the newest ready scan, with `pipeline.overlap` (the default) on an inference thread while the
next scan is decoded and prepared (rclpy publishers may be used from any thread). With the shipped input
queue depth of 1 a busy node finds only the newest messages when it looks again, so latency does not build
up there (the executor takes one message per topic per turn: a deeper queue is worked through oldest
first, and the overlap then waits for the inference thread rather than dropping a scan).

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

import functools
import re
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import rclpy
import rclpy.logging
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PointStamped
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.impl.implementation_singleton import rclpy_implementation
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2
from std_msgs.msg import String
from visualization_msgs.msg import MarkerArray

from xkd_ros.labeller import CLOUD_TOPIC, TIMINGS, LabelledScan, ScanLabeller, StartupError
from xkd_ros.memory import keep_freed_memory
from xkd_ros.msgs import class_legend_markers
from xkd_ros.node_parameters import SchemaParameters
from xkd_ros.parameters import NODE_NAME, ParameterError

__all__ = ["ParameterError", "SegmentNode", "StartupError", "main"]

DEBUG_TIMINGS = (*TIMINGS, "pipeline_latency")  # ~/debug/<name>_ms
STOP_TIMEOUT_S = 30.0  # longest wait at shutdown for the scan in inference (a 128-beam scan takes seconds)


class SegmentNode(SchemaParameters):
    """Subscribes a LiDAR scan and per-camera images (+ CameraInfo); publishes the labelled scan."""

    def __init__(self, **kwargs: Any) -> None:
        self.labeller: ScanLabeller | None = None  # before anything can fail: destroy_node reads it
        super().__init__(NODE_NAME, **kwargs)
        try:
            self._start()
        except BaseException:
            self.destroy_node()  # a half-built node leaves no DDS entities or threads behind
            raise

    def _start(self) -> None:
        p = self.declare_schema_parameters()
        self.labeller = labeller = ScanLabeller.from_parameters(
            p,
            publish=self._publish,
            warn=lambda text: self.get_logger().warning(text),
            alive=lambda: self.context.ok(),  # false once Ctrl-C shut the context down
        )
        self.watch_runtime_parameters(labeller.sync_config, labeller.reconfigure)
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

        self.create_subscription(PointCloud2, CLOUD_TOPIC, self._on_cloud, qos)
        image_type = CompressedImage if labeller.compressed else Image
        for camera in labeller.cameras:
            topic = labeller.image_topic(camera)
            self.create_subscription(image_type, topic, functools.partial(self._on_image, camera), qos)
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
        self.create_timer(0.01, self._on_poll)
        self.create_timer(1.0, self._publish_diagnostics)
        self.create_timer(5.0, self._publish_markers)
        self._publish_markers()
        self.get_logger().info(labeller.summary())

    # ---------------------------------------------------------------- callbacks: hand over, convert nothing
    def _on_cloud(self, msg: PointCloud2, info: dict) -> None:
        self.labeller.add_scan(msg, time.monotonic(), info)

    def _on_image(self, camera: str, msg: Any, info: dict) -> None:
        self.labeller.add_image(camera, msg, time.monotonic(), info)

    def _on_info(self, camera: str, msg: CameraInfo) -> None:
        self.labeller.add_camera_info(camera, msg)

    def _on_poll(self) -> None:
        self.labeller.poll(time.monotonic())

    # ---------------------------------------------------------------- outputs
    def _publish(self, scan: LabelledScan) -> None:
        """One labelled scan's outputs (on the inference thread with the overlap), its debug topics too if
        debug.publish was on when its inference began."""
        self.cloud_pub.publish(scan.cloud)
        if not scan.debug:
            return
        self.fused_pub.publish(String(data=", ".join(scan.segmentation.cameras_used)))
        latency = (self.get_clock().now().nanoseconds * 1e-9 - scan.stamp) * 1e3
        # Stamped with the labelled cloud's header: a plot lines each timing up with its scan.
        for name, ms in {**scan.timings, "pipeline_latency": latency}.items():
            self.debug_pubs[name].publish(PointStamped(header=scan.cloud.header, point=Point(x=float(ms))))

    def _publish_markers(self) -> None:
        classes = self.labeller.classes
        stamp = self.get_clock().now().to_msg()
        self.marker_pub.publish(
            class_legend_markers(classes.names, classes.colors, self.labeller.frame_id, stamp)
        )

    def _publish_diagnostics(self) -> None:
        status = DiagnosticStatus(name=f"{self.get_fully_qualified_name()}: camera-LiDAR segmentation")
        status.hardware_id = "xkd_ros"
        level, status.message = self.labeller.status()
        status.level = getattr(DiagnosticStatus, level)
        status.values = [KeyValue(key=k, value=v) for k, v in self.labeller.diagnostic_values().items()]
        array_msg = DiagnosticArray(status=[status])
        array_msg.header.stamp = self.get_clock().now().to_msg()
        self.diag_pub.publish(array_msg)

    def destroy_node(self) -> None:
        """Stop the inference thread (after the scan it is on, if any: an ONNX Runtime run cannot be
        interrupted), then the decoders, then the rclpy node."""
        stopped, lost = self.labeller.close(STOP_TIMEOUT_S) if self.labeller is not None else (True, 0)
        super().destroy_node()
        # Said once the node is gone: after Ctrl-C its /rosout publisher has no context left to publish in.
        log = rclpy.logging.get_logger(NODE_NAME)
        if not stopped:
            log.warning(
                f"the inference thread did not finish its scan within {STOP_TIMEOUT_S:g} s: left running"
            )
        if lost:
            log.info(f"{lost} prepared scan(s) not labelled: the node was shutting down")


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
