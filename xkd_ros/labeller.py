"""`ScanLabeller`: segment_node's work without ROS, from the messages it receives to the labelled scans it
publishes, with every fault counted and said; xkd_ros.node is the rclpy glue around it.

The node hands it each message as it arrives (`add_scan`, `add_image`, `add_camera_info`: stored with their
arrival time, converted later) and calls `poll` every 10 ms: on the newest scan the Collector (sync) has
ready, it decodes the cloud and its images and pre-processes them (Segmenter.prepare). With
`pipeline.overlap` (the default) the prepared scan goes to an inference thread
(xkd_ros.overlap.NewestWorker: Segmenter.infer, the labelled cloud, the injected `publish`) while the
poll's thread decodes and prepares the next scan: ONNX Runtime releases the GIL, so the two overlap. Between
them is a queue of one: a prepared scan still waiting when a newer one is ready is dropped and counted
("scans superseded before inference"), so a scan never waits behind another. With an input queue deeper than
one (qos.depth > 1: every scan is wanted, as when an evaluation works through a recording) the poll waits for
the slot instead, dropping nothing. Without the overlap the poll does it all, one scan at a time.
CompressedImages are decoded over a thread pool, at the reduced scale the network allows.

No message can stop it: a scan or image that cannot be used is skipped, counted (`diagnostic_values`, which
the node publishes on /diagnostics) and said through the injected `warn`, throttled per topic and kind of
fault; so is every scan the collector or the middleware dropped. Topic names appear only in those texts.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np

from xkd_ros.data.messages import SequenceGaps, header_stamp, points_from_cloud, rgb_from_image
from xkd_ros.geometry import CalibrationError, Rig, intensity_mismatch
from xkd_ros.geometry.rig import CameraCalibration
from xkd_ros.inference import BackendError, choose_backend
from xkd_ros.msgs import camera_info_to_intrinsics, compressed_image_size, create_labeled_cloud
from xkd_ros.overlap import NewestWorker
from xkd_ros.parameters import OFFSETS, check_offsets, lidar_profile, runtime_parameters, select_cameras
from xkd_ros.paths import config_path, default_model
from xkd_ros.pipeline import REQUIRED_CHANNELS, PreparedScan, Segmentation, Segmenter
from xkd_ros.preprocess import IMAGE_REDUCTIONS, check_image, decode_reduction, image_reduction
from xkd_ros.sync import Collector, SyncConfig

__all__ = [
    "CLOUD_TOPIC",
    "POINT_FIELDS",
    "SUPERSEDED",
    "TIMINGS",
    "LabelledScan",
    "ScanLabeller",
    "StartupError",
]

STAGES = ("preprocess", "inference", "postprocess", "total")
TIMINGS = ("decode", "queue", *STAGES)  # LabelledScan.timings, in milliseconds
LOG_THROTTLE_S = 5.0
SCAN_TIMEOUT_S = 1.0
RATE_WINDOW_S = 5.0
INTENSITY_CHECK_SCANS = 5  # the first scans' intensities are checked against lidar.intensity_scale
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
Level = Literal["OK", "WARN", "ERROR"]  # diagnostic_msgs/DiagnosticStatus's names


class StartupError(RuntimeError):
    """The model or the calibration cannot be loaded; the text names the file and what is wrong."""


def resolve_path(value: str, default: Path, kind: str) -> Path:
    path = Path(value).expanduser() if value else default
    if not path.is_file():
        raise StartupError(f"{kind} {str(path)!r} does not exist (parameter {kind.replace(' ', '_')})")
    return path


def _same_calibration(a: Any, b: Any) -> bool:
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
    """A scan decoded and pre-processed by the poll, with what its labelled cloud is made of."""

    header: Any
    stamp: float
    xyz: np.ndarray
    intensity: np.ndarray
    prepared: PreparedScan
    decode_ms: float


@dataclasses.dataclass(frozen=True, eq=False)
class LabelledScan:
    """What the node publishes for one scan: the labelled cloud (the scan's header), the scan's stamp in
    seconds, the segmentation (cameras fused, ...), the TIMINGS in milliseconds, and debug.publish as it was
    when the scan's inference began (a scan labelled while it changes has all its debug messages or none)."""

    cloud: Any
    stamp: float
    segmentation: Segmentation
    timings: dict[str, float]
    debug: bool


class ScanLabeller:
    """The Collector and the Segmenter, fed raw messages, handing each labelled scan to `publish` (on the
    inference thread with pipeline.overlap) and saying each fault through `warn(text)`. `alive()` false
    means the process is shutting down: a scan that fails then is lost, not a fault. `clock` (monotonic
    seconds) throttles the warnings and dates the diagnostics."""

    def __init__(
        self,
        params: Mapping[str, Any],
        segmenter: Segmenter,
        rig: Rig,
        *,
        publish: Callable[[LabelledScan], None],
        warn: Callable[[str], None],
        alive: Callable[[], bool] = lambda: True,
        clock: Callable[[], float] = time.monotonic,
        rig_path: str | Path = "rig",
        model_path: str | Path = "model",
        backend: tuple[str, str] = ("", ""),
    ) -> None:
        self.params = dict(params)
        self.segmenter = segmenter
        self.classes = segmenter.classes
        self._publish, self._warn_line, self._alive, self._clock = publish, warn, alive, clock
        self.rig_path, self.model_path = str(rig_path), str(model_path)
        self.backend_name, self.backend_reason = backend
        self.threads = params["threads"]
        # The rig names the cameras (the `cameras` parameter picks among them) and the LiDAR's profile (the
        # lidar.* parameters override it); the model takes whatever it is given, or says why it cannot.
        self.cameras = select_cameras(params["cameras"], rig.names, self.rig_path)
        self.rig = dataclasses.replace(
            rig.with_cameras([rig[camera] for camera in self.cameras]), lidar=lidar_profile(rig.lidar, params)
        )
        if not self.rig.lidar.mount_height:
            warn(
                f"rig {self.rig_path!r}: lidar.mount_height is not set: the network reads heights above the "
                "ground and will take them from the LiDAR (road may pass for sidewalk); set it in the rig "
                "file's lidar section or with the parameter lidar.mount_height"
            )
        try:
            self.rig_summary = segmenter.check_rig(self.rig)
        except ValueError as error:
            raise StartupError(f"rig {self.rig_path!r} with model {self.model_path!r}: {error}") from None
        self.collector = Collector(self.sync_config(params))
        self.debug = params["debug.publish"]  # read by the inference thread for each scan
        self.max_points = params["max_points"]
        self._every_scan = params["qos.depth"] > 1  # the overlap's hand-off waits rather than drops
        self.compressed = params["camera_transport"] == "compressed"

        # State of the last scans, for the diagnostics.
        self.camera_infos: dict[str, Any] = {}  # the CameraInfo each camera's intrinsics came from
        self.intrinsics: dict = {}
        self._info_rig: Rig | None = None
        self._last_log: dict[tuple[str, str], float] = {}
        self._arrivals: dict[str, deque[float]] = {
            name: deque(maxlen=200) for name in ("pointcloud", *self.cameras)
        }
        self._last_scan_arrival: float | None = None
        self._last_missing: tuple[str, ...] = ()
        self.last_matched = 0
        self._last_fused: tuple[str, ...] = ()
        self._last_fused_share = 0.0
        self._intensity_checked = 0
        self._intensity_warning = ""
        self.frame_id = self.rig.lidar_frame  # the last labelled scan's (the class legend's frame)
        # What became of every input, for /diagnostics: "scans labelled", "<camera> images refused", ...
        self.counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()  # decode threads count too
        self._sync_seen = _sync_counters(self.collector.stats)
        self._gaps = {topic: SequenceGaps() for topic in (CLOUD_TOPIC, *map(self.image_topic, self.cameras))}
        self._lost_at_shutdown = 0  # scans in inference when the process shut down
        # Last, as nothing after them can fail: JPEG decoding releases the GIL, so a thread per camera (up to
        # the cores) spreads it over them; the inference thread with the overlap.
        workers = min(len(self.cameras), os.cpu_count() or 1)
        self._decoder = (
            ThreadPoolExecutor(workers, thread_name_prefix="decode")
            if self.compressed and workers > 1
            else None
        )
        self.worker: NewestWorker[_PreparedCloud] | None = None
        if params["pipeline.overlap"]:
            self.worker = NewestWorker(self._label, self._scan_failed, name="inference")

    @classmethod
    def from_parameters(cls, params: Mapping[str, Any], **kwargs: Any) -> ScanLabeller:
        """The backend, model and rig the (validated) parameters name, loaded: StartupError naming the
        parameter or file that cannot be, ParameterError for cameras or offsets the rig does not have.
        `kwargs`: publish, warn, alive, clock as for the constructor."""
        try:
            backend = choose_backend(params["backend"])
        except BackendError as error:  # names the parameter and the backends there are
            raise StartupError(str(error)) from None
        model_path = resolve_path(params["model_path"], default_model(backend[0]), "model path")
        try:
            segmenter = Segmenter.from_model(model_path, backend[0], params["threads"])
        except Exception as error:  # any loader failure is a start-up error naming the model
            raise StartupError(f"model {str(model_path)!r}: {error}") from None
        rig_path = resolve_path(params["rig_path"], config_path("nuscenes.rig.yaml"), "rig path")
        try:
            rig = Rig.load(rig_path)
        except Exception as error:
            raise StartupError(f"rig {str(rig_path)!r}: {error}") from None
        return cls(
            params, segmenter, rig, rig_path=rig_path, model_path=model_path, backend=backend, **kwargs
        )

    def summary(self) -> str:
        """The start-up line: what was loaded and how the node runs."""
        p = self.params
        return (
            f"model {self.model_path} ({self.backend_name}: {self.backend_reason}; "
            f"{self.threads or 'default'} inference thread(s); "
            f"class set {self.classes.name!r}), "
            f"rig {self.rig_path}: {self.rig_summary}; LiDAR {self.rig.lidar.describe()}; "
            f"cameras {list(self.cameras)} ({p['camera_transport']}), "
            f"QoS {'reliable' if p['qos.reliable'] else 'best effort'} depth {p['qos.depth']}, "
            f"max_points {self.max_points}, pipeline {self.pipeline()}; "
            f"~/debug topics {'on' if self.debug else 'off'} (debug.publish); changeable while running: "
            f"{', '.join(sorted(runtime_parameters()))} (ros2 param set)"
        )

    def image_topic(self, camera: str) -> str:
        return f"~/input/{camera}/image" + ("/compressed" if self.compressed else "")

    # ---------------------------------------------------------------- settings that change at run time
    def sync_config(self, params: Mapping[str, Any]) -> SyncConfig:
        """The collector's settings from the (validated) parameters; ParameterError when sync.camera_offsets
        does not fit the cameras."""
        return SyncConfig(
            cameras=self.cameras,
            camera_offsets=check_offsets(params[OFFSETS], self.cameras),
            match_threshold=params["sync.match_threshold"],
            timeout=params["sync.timeout"],
        )

    def reconfigure(self, params: Mapping[str, Any]) -> None:
        """New (validated) parameters: the collector takes the sync settings for the scans that arrive next
        (one waiting keeps its deadline and its images), and debug.publish applies from the next scan."""
        self.collector.config = self.sync_config(params)
        self.debug = params["debug.publish"]
        self.params = dict(params)

    # ---------------------------------------------------------------- inputs: store, convert nothing
    def add_scan(self, msg: Any, arrival: float, info: Mapping[str, Any]) -> None:
        """A PointCloud2 that arrived at `arrival` (monotonic seconds); `info` is rmw's message info, whose
        sequence numbers tell the scans lost before it."""
        self._last_scan_arrival = arrival
        self._arrivals["pointcloud"].append(arrival)
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
            self.collector.add_scan(header_stamp(msg.header), msg, arrival)
        except ValueError as error:
            self._fault(CLOUD_TOPIC, "scans refused", f"scan refused: {error}")
        self._log_sync_drops(CLOUD_TOPIC)

    def add_image(self, camera: str, msg: Any, arrival: float, info: Mapping[str, Any]) -> None:
        """An Image or CompressedImage of `camera`, as `add_scan`."""
        topic = self.image_topic(camera)
        self._arrivals[camera].append(arrival)
        self._count_lost(topic, f"{camera} images lost in transport", info)
        try:
            self.collector.add_image(camera, header_stamp(msg.header), msg, arrival)
        except ValueError as error:
            self._fault(topic, f"{camera} images refused", f"image refused: {error}")
        self._log_sync_drops(topic)

    def add_camera_info(self, camera: str, msg: Any) -> None:
        """`camera`'s CameraInfo: its intrinsics replace the rig's (intrinsics_from_camera_info) from the next
        scan on, unless it is of another image size or unusable (counted, said, the previous ones kept)."""
        if not self.params["intrinsics_from_camera_info"]:
            return
        previous = self.camera_infos.get(camera)
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
        self.camera_infos[camera] = msg
        self.intrinsics[camera] = intrinsics
        self._info_rig = None  # rebuilt on the next scan

    # ---------------------------------------------------------------- the work
    def poll(self, now: float) -> None:
        """Label the newest scan the collector has ready at `now` (monotonic seconds), if any."""
        synced = self.collector.poll(now)
        self._log_sync_drops(CLOUD_TOPIC)
        if synced is None:
            return
        try:
            self._process(synced)
        except Exception as error:  # pre-processing (or, without the overlap, inference): skip the scan
            self._scan_failed(error)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until no prepared scan waits for inference and none is in it (False if `timeout` seconds
        passed first): what a poll led to is then counted and published. True at once without the overlap."""
        return self.worker is None or self.worker.idle(timeout)

    def close(self, timeout: float) -> tuple[bool, int]:
        """Stop the inference thread (after the scan it is on, if any: an ONNX Runtime run cannot be
        interrupted; waiting at most `timeout` seconds), then the decoders. Returns whether the thread
        finished, and how many prepared scans were not labelled because of the shutdown."""
        worker, self.worker = self.worker, None
        stopped = worker is None or worker.stop(timeout)
        decoder, self._decoder = self._decoder, None
        if decoder is not None:
            decoder.shutdown(wait=True)
        return stopped, self._lost_at_shutdown + (worker.discarded_at_stop if worker is not None else 0)

    def _scan_failed(self, error: BaseException) -> None:
        if not self._alive():  # shut down under the inference thread's publishing (Ctrl-C)
            self._lost_at_shutdown += 1
            return
        self._fault(CLOUD_TOPIC, "scans failed", f"scan not labelled: {type(error).__name__}: {error}")

    def _process(self, synced: Any) -> None:
        """Decode and pre-process a synchronised set on the poll's thread, then label it: on the inference
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
        self.last_matched = len(images)
        prepared = self.segmenter.prepare(points, channels, images, rig)
        intensity = points[:, channels.index("intensity")]
        if self._intensity_checked < INTENSITY_CHECK_SCANS:
            self._check_intensity(intensity)
        scan = _PreparedCloud(cloud.header, synced.stamp, points[:, :3], intensity, prepared, decode_ms)
        if self.worker is None:
            self._label(scan, 0.0)
        elif self.worker.put(scan, wait=self._every_scan):
            superseded = self.counts[SUPERSEDED] + 1  # counted on this thread only
            self._fault(
                CLOUD_TOPIC,
                SUPERSEDED,
                "a prepared scan was dropped for a newer one before inference took it (inference is slower "
                f"than the scans arrive; {superseded} in all)",
            )

    def _label(self, scan: _PreparedCloud, queue_ms: float) -> None:
        """Inference, the labelled cloud, and its publishing (on the inference thread with the overlap).
        debug.publish is read once, first: a scan labelled while it changes has all its debug messages or
        none."""
        debug = self.debug
        result = self.segmenter.infer(scan.prepared)
        cloud = create_labeled_cloud(
            scan.header,
            scan.xyz,
            scan.intensity,
            result.labels,
            result.confidence,
            self.classes.colors,
            fused=result.seen,
        )
        timings = {
            "decode": scan.decode_ms,
            "queue": queue_ms,
            **{stage: float(result.timings[f"{stage}_ms"]) for stage in STAGES},
        }
        self._publish(LabelledScan(cloud, scan.stamp, result, timings, debug))
        self._count("scans labelled")
        self._last_fused = result.cameras_used
        self._last_fused_share = float(result.seen.mean()) if len(result.seen) else 0.0
        self.frame_id = scan.header.frame_id or self.frame_id

    def pipeline(self) -> str:
        """How scans go through decoding and inference (pipeline.overlap, qos.depth), in words."""
        if self.worker is None:
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
        topic, kind = self.image_topic(camera), f"{camera} images refused"
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
        intrinsics = self.intrinsics
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

    def _count_lost(self, topic: str, key: str, info: Mapping[str, Any]) -> None:
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

    def _warn(self, topic: str, kind: str, reason: str) -> None:
        """Say a fault once per LOG_THROTTLE_S per topic and kind: a second kind of fault on a topic that is
        already logging still gets its line."""
        now = self._clock()
        if now - self._last_log.get((topic, kind), -float("inf")) >= LOG_THROTTLE_S:
            self._last_log[topic, kind] = now
            self._warn_line(f"{topic}: {reason}")

    # ---------------------------------------------------------------- diagnostics
    def _rate(self, name: str, now: float) -> float:
        arrivals = [t for t in self._arrivals[name] if now - t <= RATE_WINDOW_S]
        if len(arrivals) < 2:
            return 0.0
        return (len(arrivals) - 1) / max(arrivals[-1] - arrivals[0], 1e-9)

    def diagnostic_values(self, now: float | None = None) -> dict[str, str]:
        """What /diagnostics reports: the set-up, the last scan, and every counter: the node's ("scans
        labelled", "scans too large", "<camera> images refused", ...) and the collector's ("sync: ...")."""
        now = self._clock() if now is None else now
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
            "pipeline": self.pipeline(),
            "class set": self.classes.name,
            "rig": self.rig_summary,
            "lidar profile": self.rig.lidar.describe(),
            "intensity check": self._intensity_warning
            or (f"ok (first {self._intensity_checked} scans)" if self._intensity_checked else "no scan yet"),
            "cameras matched (last scan)": f"{self.last_matched}/{len(self.cameras)}",
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

    def status(self, now: float | None = None) -> tuple[Level, str]:
        """The /diagnostics level and message: ERROR without a scan for SCAN_TIMEOUT_S, WARN for a camera
        missing from the last scan or intensities contradicting the profile, else OK."""
        now = self._clock() if now is None else now
        if self._last_scan_arrival is None or now - self._last_scan_arrival > SCAN_TIMEOUT_S:
            return "ERROR", f"no scan for > {SCAN_TIMEOUT_S:g} s"
        if self._last_missing:
            return "WARN", f"cameras missing: {', '.join(self._last_missing)}"
        if self._intensity_warning:
            return "WARN", self._intensity_warning
        if not self.cameras:
            return "OK", "LiDAR-only: no cameras configured, the LiDAR-only head labels every point"
        return "OK", "all cameras matched"
