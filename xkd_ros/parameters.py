"""segment_node's parameters without ROS: names, types and defaults from config/segment.schema.json (the one
source: the node declares what the schema says), their validation, and a check of parameter files.

    python -m xkd_ros.parameters config/segment.param.yaml [more.yaml ...] [-p name:=value ...]

prints "ok", or the error naming the file and the parameter, and exits 0 or 1: the check the node makes at
start-up, on a machine without ROS. Files are read as rcl reads them: node-name keys (`/**`, `segment`,
`/ns/segment`, wildcards), `ros__parameters`, dotted groups, lists of one type.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import re
import sys
from collections.abc import Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from xkd_ros.geometry.lidar import LidarProfile
from xkd_ros.paths import config_path

__all__ = [
    "ALL_CAMERAS",
    "NODE_NAME",
    "OFFSETS",
    "ParameterError",
    "check_offsets",
    "defaults",
    "is_ros_parameter",
    "item_type",
    "leaves",
    "lidar_profile",
    "load_schema",
    "main",
    "read_param_file",
    "runtime_parameters",
    "schema_leaf",
    "select_cameras",
    "validate_parameters",
]

NODE_NAME = "segment"
OFFSETS = "sync.camera_offsets"
RUNTIME = "x-runtime"  # the schema's annotation of a parameter the node takes while it runs
ALL_CAMERAS = "*"  # `cameras: ["*"]`, the default: every camera of the rig, in the rig's order
# Parameters every rclpy node has, or that ROS tooling adds: not ours to validate.
_ROS_PARAMETERS = ("use_sim_time", "start_type_description_service")
_ROS_PREFIXES = ("qos_overrides.",)


class ParameterError(ValueError):
    """A parameter is unknown, of the wrong type or out of range, or a parameter file is unreadable; the text
    names the parameter (and the file)."""


def is_ros_parameter(name: str) -> bool:
    """rclpy's own parameters (use_sim_time, qos_overrides.*): set by ROS tooling, not validated here."""
    return name in _ROS_PARAMETERS or name.startswith(_ROS_PREFIXES)


@cache
def _shipped_schema() -> str:
    return config_path("segment.schema.json").read_text()


def load_schema() -> dict:
    """config/segment.schema.json (a fresh copy: callers may change theirs)."""
    return json.loads(_shipped_schema())


def leaves(schema: Mapping[str, Any] | None = None) -> dict[str, dict]:
    """Dotted parameter name -> its schema, for every parameter (a schema object with `properties` is a group
    of parameters, anything else one parameter)."""
    found: dict[str, dict] = {}

    def walk(prefix: str, node: Mapping[str, Any]) -> None:
        for key, child in node["properties"].items():
            if child.get("type") == "object" and "properties" in child:
                walk(f"{prefix}{key}.", child)
            else:
                found[prefix + key] = dict(child)

    walk("", load_schema() if schema is None else schema)
    return found


def runtime_parameters(schema: Mapping[str, Any] | None = None) -> frozenset[str]:
    """The parameters the schema marks `"x-runtime": true`: segment_node takes a new value of these while it
    runs (`ros2 param set`, validated against the same schema); every other one is read at start-up only.
    The one place that reads the annotation."""
    return frozenset(name for name, leaf in leaves(schema).items() if leaf.get(RUNTIME) is True)


def schema_leaf(name: str) -> str:
    """The schema parameter a ROS parameter name belongs to: itself, or sync.camera_offsets for one entry of
    the map form (`sync.camera_offsets.<camera>`, declared one parameter per camera)."""
    return OFFSETS if name.startswith(OFFSETS + ".") else name


def defaults(schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Dotted parameter name -> the schema's `default` (copies)."""
    return {name: copy.deepcopy(leaf["default"]) for name, leaf in leaves(schema).items()}


def _plain(value: Any) -> Any:
    """rclpy's array.array, tuples and bytes as the lists and strings the schema speaks of."""
    if isinstance(value, (bytes, bytearray)):
        return value.decode(errors="replace")
    if isinstance(value, (str, bool, int, float)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {key: _plain(v) for key, v in value.items()}
    try:
        return [_plain(v) for v in value]
    except TypeError:
        return value


def item_type(leaf: Mapping[str, Any]) -> str | None:
    """The schema type of a list parameter's items ("string", "number", ...), None for other parameters."""
    for branch in (leaf, *leaf.get("oneOf", ())):
        if branch.get("type") == "array":
            return branch.get("items", {}).get("type")
    return None


def _non_finite(value: Any) -> float | None:
    items = value if isinstance(value, list) else list(value.values()) if isinstance(value, dict) else [value]
    return next((v for v in items if isinstance(v, float) and not math.isfinite(v)), None)


def _path(parts: Sequence[Any]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _schema_problems(nested: dict, schema: Mapping[str, Any]) -> list[str]:
    problems = []
    validator = jsonschema.Draft202012Validator(schema)
    for error in sorted(validator.iter_errors(nested), key=lambda e: list(map(str, e.absolute_path))):
        path = _path(error.absolute_path)
        if error.validator == "additionalProperties":
            unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            problems += [
                f"parameter {f'{path}.{key}' if path else key!r}: unknown parameter" for key in unknown
            ]
        elif error.validator == "oneOf" and not isinstance(error.instance, (list, dict)):
            problems.append(f"parameter {path!r}: {error.instance!r} is neither a list nor a map of numbers")
        elif error.validator == "oneOf":  # say what is wrong inside the list or the map
            wanted = "array" if isinstance(error.instance, list) else "object"
            inner = [e for e in error.context if e.schema_path[0] == _branch(error.schema, wanted)]
            best = jsonschema.exceptions.best_match(inner) or error
            problems.append(f"parameter {_path(best.absolute_path)!r}: {best.message}")
        else:
            problems.append(f"parameter {path!r}: {error.message}")
    return problems


def _branch(schema: Mapping[str, Any], kind: str) -> int:
    return next(i for i, branch in enumerate(schema["oneOf"]) if branch.get("type") == kind)


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
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
        if isinstance(node.get(leaf), dict):
            raise ParameterError(f"parameter {name!r}: is both a value and a group")
        node[leaf] = value
    return nested


def validate_parameters(flat: Mapping[str, Any], schema: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The node's parameters from `flat` (dotted names -> values, as ROS gives them; missing ones take the
    schema's defaults), checked; returns every parameter, numbers of `number` parameters as floats and
    sync.camera_offsets as a list or a {camera: offset} map. Raises ParameterError naming every bad one.

    A value of None is what rclpy makes of an empty list (`cameras: []`, `-p cameras:=[]`): it cannot type
    one, so None means [] for a list parameter. ROS's own parameters (use_sim_time, ...) are left out."""
    schema = load_schema() if schema is None else schema
    known = leaves(schema)
    given, problems = {}, []
    for name, raw in flat.items():
        if is_ros_parameter(name):
            continue
        value = _plain(raw)
        leaf = known.get(name)
        if value is None:
            if leaf is None or item_type(leaf) is None:
                kind = leaf.get("type", "value") if leaf else "value"
                problems.append(
                    f"parameter {name!r}: no value (an empty list or null) where a {kind} belongs"
                )
                continue
            value = []
        bad = _non_finite(value)
        if bad is not None:
            problems.append(f"parameter {name!r}: {bad} is not a finite number")
            continue
        given[name] = value
    params = {
        name: value
        for name, value in defaults(schema).items()
        if not any(g == name or g.startswith(name + ".") for g in given)
    }
    params.update(given)
    nested = _nest(params)
    problems += _schema_problems(nested, schema)
    if problems:
        raise ParameterError("; ".join(problems))
    # A map comes in as sync.camera_offsets.<camera> parameters: gather it.
    offsets_map = nested.get("sync", {}).get("camera_offsets")
    if isinstance(offsets_map, dict):
        params = {k: v for k, v in params.items() if not k.startswith(OFFSETS + ".")}
        params[OFFSETS] = dict(offsets_map)
    for name, leaf in known.items():
        if leaf.get("type") == "number":
            params[name] = float(params[name])
    offsets, cameras = params[OFFSETS], params["cameras"]
    params[OFFSETS] = (
        {k: float(v) for k, v in offsets.items()}
        if isinstance(offsets, dict)
        else [float(v) for v in offsets]
    )
    if ALL_CAMERAS in cameras and len(cameras) > 1:
        raise ParameterError(
            f"parameter 'cameras': {ALL_CAMERAS!r} (every camera of the rig) cannot be combined with names, "
            f"got {cameras}"
        )
    if cameras and ALL_CAMERAS not in cameras:  # else the rig's cameras, which the node checks them against
        check_offsets(params[OFFSETS], cameras)
    return params


def select_cameras(cameras: Sequence[str], rig_cameras: Sequence[str], rig_path: str) -> tuple[str, ...]:
    """The cameras the `cameras` parameter selects from a rig's: ["*"] all of them (rig order), [] none (the
    LiDAR-only head), else the names given, each of which the rig must calibrate (ParameterError naming the
    rig file and the cameras it has)."""
    if list(cameras) == [ALL_CAMERAS]:
        return tuple(rig_cameras)
    missing = [camera for camera in cameras if camera not in rig_cameras]
    if missing:
        raise ParameterError(
            f"parameter 'cameras': the rig {rig_path!r} has no camera(s) {missing} "
            f"(it has {list(rig_cameras)})"
        )
    return tuple(cameras)


def lidar_profile(rig_profile: LidarProfile, params: Mapping[str, Any]) -> LidarProfile:
    """The rig's LiDAR profile with the `lidar.*` parameters applied: `lidar.sensor` replaces it by a preset
    (keeping the rig's intensity scale), then beams (an even spread over the field of view), intensity_scale
    min_range and mount_height override it where set ("" / 0 / 0 / -1 / -1 = the rig's). A preset keeps the
    rig's mount_height too: a sensor swap does not move it."""
    profile = rig_profile
    if params["lidar.sensor"]:
        preset = LidarProfile.from_dict({"sensor": params["lidar.sensor"]})
        profile = dataclasses.replace(
            preset, intensity_scale=rig_profile.intensity_scale, mount_height=rig_profile.mount_height
        )
    changes: dict[str, Any] = {}
    if params["lidar.beams"]:
        changes.update(beams=int(params["lidar.beams"]), elevations_deg=())
    if params["lidar.intensity_scale"] > 0:
        changes["intensity_scale"] = float(params["lidar.intensity_scale"])
    if params["lidar.min_range"] >= 0:
        changes["min_range"] = float(params["lidar.min_range"])
    if params["lidar.mount_height"] >= 0:
        changes["mount_height"] = float(params["lidar.mount_height"])
    try:
        return dataclasses.replace(profile, **changes) if changes else profile
    except ValueError as error:
        raise ParameterError(f"parameter 'lidar': {error}") from None


def check_offsets(offsets: list[float] | Mapping[str, float], cameras: Sequence[str]) -> dict[str, float]:
    """sync.camera_offsets for `cameras` as {camera: offset}: a list is aligned with them (an empty one, or
    a camera left out of a map, means 0); ParameterError when a list has another length or a map names
    another camera."""
    if isinstance(offsets, Mapping):
        unknown = sorted(set(offsets) - set(cameras))
        if unknown:
            raise ParameterError(f"parameter {OFFSETS!r}: camera(s) {unknown} are not among {list(cameras)}")
        return {camera: float(offsets.get(camera, 0.0)) for camera in cameras}
    if not offsets:
        return dict.fromkeys(cameras, 0.0)
    if len(offsets) != len(cameras):
        raise ParameterError(
            f"parameter {OFFSETS!r}: {len(offsets)} offsets for the {len(cameras)} cameras {list(cameras)} "
            "(a list must be aligned with 'cameras'; [] = 0 for each)"
        )
    return dict(zip(cameras, map(float, offsets), strict=True))


# ------------------------------------------------------------------ parameter files, as rcl reads them
class _RosLoader(yaml.SafeLoader):
    """YAML as rcl's parameter parser types it: 1e-3 is a number (PyYAML's YAML 1.1 makes it a string)."""


_RosLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9_]+|[0-9][0-9_]*(?=[eE]))(?:[eE][-+]?[0-9]+)?$"
        r"|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


def _node_pattern(key: str) -> re.Pattern:
    """rcl's node-name keys: `/**` any node, `*` one name token, `**` any number of them."""
    key = key if key.startswith("/") else "/" + key
    pattern = re.escape(key).replace(r"/\*\*", "(?:/[^/]+)*").replace(r"\*", "[^/]+")
    return re.compile(pattern + "$")


def _flatten(value: Any, prefix: str, out: dict[str, Any], where: str) -> None:
    if isinstance(value, dict):
        for key, child in value.items():
            _flatten(child, f"{prefix}{key}.", out, where)
        return
    name = prefix[:-1]
    if isinstance(value, list):
        kinds = {type(v) for v in value}
        if any(k in (list, dict, type(None)) for k in kinds) or len(kinds) > 1:
            raise ParameterError(
                f"{where}: parameter {name!r}: {value!r}: ROS takes lists of one type of plain values "
                "(write 0.0 for a decimal among decimals)"
            )
    out[name] = value


def read_param_file(path: str | Path, node: str = f"/{NODE_NAME}") -> dict[str, Any]:
    """The parameters a ROS 2 parameter file gives the node `node` (dotted names -> values; later keys
    override earlier ones, as in rcl). ParameterError naming the file when it cannot be read or parsed."""
    where = str(path)
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
        raise ParameterError(f"{where}: cannot be read: {reason}") from None
    try:
        data = yaml.load(text, Loader=_RosLoader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error)
        raise ParameterError(f"{where}: not valid YAML{at}: {problem}") from None
    if not isinstance(data, dict):
        raise ParameterError(
            f"{where}: expected node names mapping to ros__parameters, got {type(data).__name__}"
        )
    flat: dict[str, Any] = {}
    matched = False
    for key, entry in data.items():
        if not _node_pattern(str(key)).match(node):
            continue
        if not isinstance(entry, dict) or not isinstance(entry.get("ros__parameters"), dict):
            raise ParameterError(f"{where}: {key!r}: no ros__parameters map")
        matched = True
        _flatten(entry["ros__parameters"], "", flat, where)
    if not matched:
        raise ParameterError(f"{where}: no parameters for node {node} (node keys: {list(map(str, data))})")
    return flat


# ------------------------------------------------------------------ the check command
def _override(text: str) -> tuple[str, Any]:
    name, sep, value = text.partition(":=")
    if not sep or not name:
        raise ParameterError(f"-p {text!r}: expected name:=value")
    try:
        parsed = yaml.load(value, Loader=_RosLoader)
    except yaml.YAMLError:
        parsed = value
    flat: dict[str, Any] = {}
    _flatten(parsed if parsed != [] else None, name + ".", flat, "-p")
    return name, flat[name]


def check(files: Sequence[str], overrides: Sequence[str] = (), node: str = f"/{NODE_NAME}") -> dict[str, Any]:
    """The node's parameters from these files and name:=value overrides, as `validate_parameters` returns
    them; ParameterError naming the file (the last one, for a problem of the merged set)."""
    flat: dict[str, Any] = {}
    for path in files:
        flat.update(read_param_file(path, node))
    for text in overrides:
        name, value = _override(text)
        flat[name] = value
    try:
        return validate_parameters(flat)
    except ParameterError as error:
        source = ", ".join([*map(str, files), *(f"-p {o}" for o in overrides)])
        raise ParameterError(f"{source}: {error}") from None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m xkd_ros.parameters",
        description="Check segment_node parameter files against config/segment.schema.json, without ROS.",
    )
    parser.add_argument("files", nargs="+", help="ROS 2 parameter YAML files, merged in order")
    parser.add_argument("-p", dest="overrides", action="append", default=[], metavar="NAME:=VALUE")
    parser.add_argument("--node", default=f"/{NODE_NAME}", help="the node's full name (default /segment)")
    args = parser.parse_args(argv)
    try:
        check(args.files, args.overrides, args.node)
    except ParameterError as error:
        print(f"{parser.prog}: error: {error}", file=sys.stderr)
        return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
