"""Camera intrinsics and the lens models of sensor_msgs/CameraInfo, vectorised in numpy.

Projection uses K and D (the raw, distorted image), as cv2.projectPoints and cv2.fisheye.projectPoints do;
R and P are kept for a faithful CameraInfo round trip, and so is D, at the length it was given.

D follows OpenCV: plumb_bob and rational_polynomial take k1 k2 p1 p2 [k3 [k4 k5 k6]] (4, 5 or 8 numbers; 8
is the rational model whichever name it comes under, as cv2.projectPoints reads it), equidistant takes
k1 k2 k3 k4 (cv2.fisheye). Many calibration tools write plumb_bob with 4 (no k3).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

# Number of coefficients in D for each sensor_msgs/distortion_models name, as ROS drivers publish them, and
# every length each model accepts (OpenCV's: the missing trailing coefficients are zero).
DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8, "equidistant": 4}
DISTORTION_LENGTHS = {"plumb_bob": (4, 5, 8), "rational_polynomial": (4, 5, 8), "equidistant": (4,)}
_RADIAL_TANGENTIAL = "4, 5 or 8 coefficients (k1 k2 p1 p2 [k3 [k4 k5 k6]])"
_ACCEPTED = {
    "plumb_bob": _RADIAL_TANGENTIAL,
    "rational_polynomial": _RADIAL_TANGENTIAL,
    "equidistant": "4 coefficients (k1 k2 k3 k4)",
}


class CalibrationError(ValueError):
    """A calibration value is malformed; the message names the key that holds it."""


def as_matrix(value: object, shape: tuple[int, ...], key: str) -> np.ndarray:
    """`value` as a float64 array of `shape` (flat input is reshaped), or CalibrationError naming `key`."""
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise CalibrationError(f"{key}: expected numbers, got {value!r}") from None
    if array.size != int(np.prod(shape)):
        raise CalibrationError(f"{key}: expected {'x'.join(map(str, shape))} numbers, got {array.size}")
    if not np.all(np.isfinite(array)):
        raise CalibrationError(f"{key}: contains NaN or infinity")
    return array.reshape(shape)


@dataclass(frozen=True, eq=False)
class CameraIntrinsics:
    """Image size, pinhole matrix K, lens distortion (model, D) and, for CameraInfo, R and P."""

    width: int
    height: int
    K: np.ndarray
    D: np.ndarray = field(default_factory=lambda: np.zeros(0))
    distortion_model: str = "plumb_bob"
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    P: np.ndarray | None = None

    def __post_init__(self) -> None:
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise CalibrationError(f"width, height: must be positive, got {self.width}x{self.height}")
        object.__setattr__(self, "K", as_matrix(self.K, (3, 3), "K"))
        if self.K[0, 0] <= 0 or self.K[1, 1] <= 0:
            fx, fy = self.K[0, 0], self.K[1, 1]
            raise CalibrationError(
                f"K: focal lengths must be positive (uncalibrated camera?), got fx {fx:g}, fy {fy:g}"
            )
        object.__setattr__(self, "R", as_matrix(self.R, (3, 3), "R"))
        P = np.hstack([self.K, np.zeros((3, 1))]) if self.P is None else as_matrix(self.P, (3, 4), "P")
        object.__setattr__(self, "P", P)
        D = np.asarray(self.D, dtype=np.float64).ravel()
        if self.distortion_model not in DISTORTION_MODELS:
            if D.any():
                raise CalibrationError(
                    f"distortion_model: {self.distortion_model!r} is not one of {sorted(DISTORTION_MODELS)}"
                )
            object.__setattr__(self, "distortion_model", "plumb_bob")
        if D.size == 0:
            D = np.zeros(DISTORTION_MODELS[self.distortion_model])
        if D.size not in DISTORTION_LENGTHS[self.distortion_model]:
            raise CalibrationError(
                f"D: {self.distortion_model} takes {_ACCEPTED[self.distortion_model]}, got {D.size}"
            )
        object.__setattr__(self, "D", as_matrix(D, (D.size,), "D"))

    @property
    def is_pinhole(self) -> bool:
        """True when the lens has no distortion, so projection is a plain matrix product."""
        return not self.D.any()

    def project(self, points_cam: np.ndarray, min_depth: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates (N, 2) of camera-frame points (N, 3) and a mask of those that land in the image.

        A point counts when it is at least `min_depth` in front of the camera, inside the field of view the
        lens model is valid for (polynomial distortion folds far-off-axis rays back into the image) and
        inside [0, width) x [0, height). Pixel coordinates are NaN for points behind the camera.
        """
        return self.project_coordinates(points_cam[:, 0], points_cam[:, 1], points_cam[:, 2], min_depth)

    def project_coordinates(
        self, x: np.ndarray, y: np.ndarray, depth: np.ndarray, min_depth: float = 0.1
    ) -> tuple[np.ndarray, np.ndarray]:
        """`project` of camera-frame coordinates given apart (x, y, depth: (N,) each, one dtype): a caller
        that has them apart builds no (N, 3) stack, and contiguous rows read faster than its columns."""
        in_front = depth > min_depth
        with np.errstate(divide="ignore", invalid="ignore"):  # behind or on the camera plane: masked below
            inverse_depth = np.where(in_front, 1 / depth, np.nan).astype(depth.dtype, copy=False)
        x, y = x * inverse_depth, y * inverse_depth
        mask = in_front
        if not self.is_pinhole:
            mask = mask & (x * x + y * y < self.max_radius**2)
            x, y = self._distort(x, y)
        K = self.K
        uv = np.empty((len(depth), 2), dtype=np.float32)
        u, v = uv[:, 0], uv[:, 1]
        np.multiply(x, K[0, 0], out=u, casting="same_kind")
        u += K[0, 1] * y + K[0, 2]
        np.multiply(y, K[1, 1], out=v, casting="same_kind")
        v += K[1, 2]
        mask &= (u >= 0) & (u < self.width) & (v >= 0) & (v < self.height)
        return uv, mask

    def _distort(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Apply the lens model to normalised coordinates, as OpenCV does."""
        r2 = x * x + y * y
        D = self.D
        if self.distortion_model == "equidistant":
            r = np.sqrt(r2)
            theta = np.arctan(r)
            t2 = theta * theta
            theta_d = theta * (1 + t2 * (D[0] + t2 * (D[1] + t2 * (D[2] + t2 * D[3]))))
            with np.errstate(divide="ignore", invalid="ignore"):
                scale = np.where(r > 1e-12, theta_d / r, 1.0)
            return x * scale, y * scale
        k = np.zeros(8)
        k[: len(D)] = D  # k1 k2 p1 p2 [k3 [k4 k5 k6]]: what is not given is zero, as in OpenCV
        radial = (1 + r2 * (k[0] + r2 * (k[1] + r2 * k[4]))) / (1 + r2 * (k[5] + r2 * (k[6] + r2 * k[7])))
        xd = x * radial + 2 * k[2] * x * y + k[3] * (r2 + 2 * x * x)
        yd = y * radial + k[2] * (r2 + 2 * y * y) + 2 * k[3] * x * y
        return xd, yd

    @cached_property
    def max_radius(self) -> float:
        """Largest radius r = |(x/z, y/z)| up to which the lens model is one-to-one.

        Past the first turning point of the radial polynomial, rays far outside the field of view map back
        into the image; they must not count as seen.
        """
        if self.distortion_model == "equidistant":
            theta = np.linspace(0.0, np.pi / 2, 4096, endpoint=False)
            radius = np.tan(theta)
        else:
            radius = np.linspace(0.0, 20.0, 8192)
        distorted = np.hypot(*self._distort(radius, np.zeros_like(radius)))
        turning = np.flatnonzero(np.diff(distorted) <= 0)
        return float(radius[turning[0]]) if len(turning) else float("inf")
