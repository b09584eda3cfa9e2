"""Scan-referenced multi-camera collector: one set per LiDAR scan, never blocked by one late camera.

Like Autoware's camera-LiDAR fusion nodes and unlike message_filters' ApproximateTime (which drops the
whole set when one camera is late, ros2/message_filters#82): each scan waits at most ``timeout`` (on the
injected clock, from its arrival) for one image per camera, the image whose stamp is closest to the scan
stamp plus that camera's expected offset. ``poll`` hands out only the newest ready set so that latency
never builds up. Every scan that does not become a set is counted with its reason in ``SyncStats``, which
the node publishes on /diagnostics. Plain Python, no rclpy and no threads: the node feeds messages and a
clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

# ROS stamps resolve nanoseconds; without this slack a poll timer landing exactly on a deadline can miss it
# by one float rounding and add a whole timer period of latency.
_CLOCK_SLACK = 1e-9


@dataclass(frozen=True)
class SyncConfig:
    """How images are matched to scans; all times in seconds.

    ``camera_offsets[name]`` is the expected ``image stamp - scan stamp`` (negative when the camera
    triggers before the LiDAR stamp, as on nuScenes); cameras left out default to 0. Keep
    ``match_threshold`` under half a camera period so at most one image per camera qualifies, because a set
    fires as soon as every camera has some qualifying image. A scan stamp more than ``max_time_jump`` older
    than the newest one seen (a looping bag) resets the collector.
    """

    cameras: tuple[str, ...]
    camera_offsets: Mapping[str, float] = field(default_factory=dict)
    match_threshold: float = 0.05
    timeout: float = 0.1
    image_buffer: int = 10
    max_pending_scans: int = 4
    max_time_jump: float = 1.0

    def __post_init__(self) -> None:
        cameras = tuple(self.cameras)  # none: a LiDAR-only rig, each scan ready as it arrives
        if any(not isinstance(name, str) or not name for name in cameras):
            raise ValueError(f"SyncConfig.cameras must be non-empty strings, got {cameras}")
        if len(set(cameras)) != len(cameras):
            raise ValueError(f"SyncConfig.cameras has duplicates: {cameras}")
        offsets = dict(self.camera_offsets)
        unknown = sorted(set(offsets) - set(cameras))
        if unknown:
            raise ValueError(f"SyncConfig.camera_offsets names unknown cameras {unknown}")
        for name, offset in offsets.items():
            if not math.isfinite(offset):
                raise ValueError(f"SyncConfig.camera_offsets[{name!r}] must be finite, got {offset}")
        for name, low, inclusive in (
            ("match_threshold", 0.0, False),
            ("timeout", 0.0, True),
            ("max_time_jump", 0.0, False),
        ):
            value = getattr(self, name)
            if not math.isfinite(value) or value < low or (value == low and not inclusive):
                relation = ">=" if inclusive else ">"
                raise ValueError(f"SyncConfig.{name} must be finite and {relation} {low}, got {value}")
        for name in ("image_buffer", "max_pending_scans"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SyncConfig.{name} must be an integer >= 1, got {value!r}")
        # Frozen means frozen: a caller mutating its dict afterwards must not change the matching.
        object.__setattr__(self, "cameras", cameras)
        object.__setattr__(self, "camera_offsets", MappingProxyType(offsets))

    def offset(self, camera: str) -> float:
        """Expected image stamp minus scan stamp for ``camera``."""
        return self.camera_offsets.get(camera, 0.0)


@dataclass
class SyncedSet:
    """One scan with the images matched to it; ``missing`` cameras had none in time (config order)."""

    stamp: float
    scan: Any
    images: dict[str, tuple[float, Any]]
    missing: tuple[str, ...]
    waited: float


@dataclass
class SyncStats:
    """Counters for diagnostics: where every scan and image went, so that nothing is lost silently.

    Each scan received is, at any moment, in exactly one place: emitted in a set, dropped for one counted
    reason, or still pending, so ``scans_received == sets_emitted + scans_dropped + Collector.pending``.

    scans_superseded: pending scans overtaken because a newer set was emitted first (``poll`` hands out only
        the newest ready set, so a busy consumer skips stale scans instead of falling behind).
    scans_overflowed: pending scans pushed out of the queue (``max_pending_scans``) by newer ones.
    scans_duplicate: scans with the stamp of a pending or of the last emitted scan (a driver that leaves
        its stamps at 0, or a message delivered twice).
    scans_backward: scans stamped before the last emitted set but within ``max_time_jump`` of the newest
        scan (a small backward stamp jump, or a late delivery): emitting them would send sets back in time.
    scans_lost_on_reset: pending scans thrown away by ``reset``, by the clock stepping back, or by a stamp
        jump back of more than ``max_time_jump`` (a looping bag).
    images_duplicate: images with the stamp of an image still buffered for the same camera.
    resets: restarts, whatever the cause (``reset``, clock step back, stamp jump back).
    matched: per camera, the emitted sets that had its image.
    """

    scans_received: int = 0
    sets_emitted: int = 0
    scans_superseded: int = 0
    scans_overflowed: int = 0
    scans_duplicate: int = 0
    scans_backward: int = 0
    scans_lost_on_reset: int = 0
    images_received: int = 0
    images_duplicate: int = 0
    resets: int = 0
    matched: dict[str, int] = field(default_factory=dict)

    @property
    def scans_dropped(self) -> int:
        """Scans that never became a set, whatever the reason."""
        return (
            self.scans_superseded
            + self.scans_overflowed
            + self.scans_duplicate
            + self.scans_backward
            + self.scans_lost_on_reset
        )


@dataclass
class _Pending:
    stamp: float
    scan: Any
    arrival: float
    deadline: float
    matches: dict[str, tuple[float, Any]]


def _check_finite(name: str, value: float) -> None:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")


class Collector:
    """Collects scans and images (fed with stamps and the injected clock) into :class:`SyncedSet`s."""

    def __init__(self, config: SyncConfig) -> None:
        self.config = config
        self.stats = SyncStats(matched=dict.fromkeys(config.cameras, 0))
        # Rings in arrival order, matched by stamp: stale stamps (a looping bag) age out instead of
        # pushing out the fresh ones, which a stamp-ordered ring would do.
        self._images: dict[str, deque[tuple[float, Any]]] = {
            name: deque(maxlen=config.image_buffer) for name in config.cameras
        }
        self._pending: list[_Pending] = []  # sorted by stamp
        self._newest_scan: float | None = None
        self._last_emitted: float | None = None
        self._last_now: float | None = None

    @property
    def pending(self) -> int:
        """Scans waiting for their images (received, neither emitted nor dropped yet)."""
        return len(self._pending)

    def add_scan(self, stamp: float, scan: Any, now: float) -> None:
        """Queue a scan; it takes buffered images at once and later ones as they come. A scan that cannot
        make a set (duplicate stamp, older than the last set) is dropped and counted in ``stats``."""
        _check_finite("scan stamp", stamp)
        self._tick(now)
        self.stats.scans_received += 1
        if self._newest_scan is not None and stamp < self._newest_scan - self.config.max_time_jump:
            self._restart(anchor=stamp)
        if stamp == self._last_emitted or any(p.stamp == stamp for p in self._pending):
            self.stats.scans_duplicate += 1
            return
        if self._last_emitted is not None and stamp < self._last_emitted:
            # Emitting it would send sets back in time; the newer set already replaced it.
            self.stats.scans_backward += 1
            return
        self._newest_scan = stamp if self._newest_scan is None else max(self._newest_scan, stamp)
        matches = {}
        for camera, ring in self._images.items():
            target = stamp + self.config.offset(camera)
            best = min(ring, key=lambda image, t=target: abs(image[0] - t), default=None)
            if best is not None and abs(best[0] - target) <= self.config.match_threshold:
                matches[camera] = best
        pending = _Pending(stamp, scan, now, now + self.config.timeout, matches)
        index = sum(p.stamp < stamp for p in self._pending)
        self._pending.insert(index, pending)
        overflow = len(self._pending) - self.config.max_pending_scans
        if overflow > 0:
            del self._pending[:overflow]
            self.stats.scans_overflowed += overflow

    def add_image(self, camera: str, stamp: float, image: Any, now: float) -> None:
        """Buffer an image for scans still to come and offer it to the pending ones."""
        ring = self._images.get(camera)
        if ring is None:
            raise ValueError(f"unknown camera {camera!r}; configured cameras: {self.config.cameras}")
        _check_finite("image stamp", stamp)
        self._tick(now)
        self.stats.images_received += 1
        if any(buffered == stamp for buffered, _ in ring):
            self.stats.images_duplicate += 1
            return
        ring.append((stamp, image))
        offset = self.config.offset(camera)
        for pending in self._pending:
            target = pending.stamp + offset
            error = abs(stamp - target)
            current = pending.matches.get(camera)
            if error <= self.config.match_threshold and (current is None or error < abs(current[0] - target)):
                pending.matches[camera] = (stamp, image)

    def poll(self, now: float) -> SyncedSet | None:
        """The newest set that is complete or timed out, or None; older pending scans are dropped."""
        self._tick(now)
        cameras = self.config.cameras
        ready = [
            index
            for index, pending in enumerate(self._pending)
            if len(pending.matches) == len(cameras) or now >= pending.deadline - _CLOCK_SLACK
        ]
        if not ready:
            return None
        newest = ready[-1]
        chosen = self._pending[newest]
        self.stats.scans_superseded += newest
        del self._pending[: newest + 1]
        self._last_emitted = chosen.stamp
        self.stats.sets_emitted += 1
        for camera in chosen.matches:
            self.stats.matched[camera] += 1
        return SyncedSet(
            stamp=chosen.stamp,
            scan=chosen.scan,
            images={camera: chosen.matches[camera] for camera in cameras if camera in chosen.matches},
            missing=tuple(camera for camera in cameras if camera not in chosen.matches),
            waited=now - chosen.arrival,
        )

    def reset(self) -> None:
        """Forget all scans, images and clock history; the statistics are kept, and the pending scans thrown
        away are counted in ``scans_lost_on_reset``."""
        self._restart(anchor=None)
        for ring in self._images.values():
            ring.clear()
        self._last_now = None

    def _tick(self, now: float) -> None:
        """Track the clock; a backward step invalidates the pending scans' deadlines."""
        _check_finite("now", now)
        if self._last_now is not None and now < self._last_now:
            # Images are stamp-referenced, not clock-referenced, so they survive a clock jump.
            self._restart(anchor=None)
        self._last_now = now

    def _restart(self, anchor: float | None) -> None:
        """Drop pending scans (counted as lost) and stamp history; with an anchor also images far from its
        timeline."""
        self.stats.resets += 1
        self.stats.scans_lost_on_reset += len(self._pending)
        self._pending.clear()
        self._newest_scan = None
        self._last_emitted = None
        if anchor is None:
            return
        for camera, ring in self._images.items():
            kept = [image for image in ring if abs(image[0] - anchor) <= self.config.max_time_jump]
            self._images[camera] = deque(kept, maxlen=self.config.image_buffer)
