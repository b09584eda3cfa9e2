"""segment_node's parameters on the rclpy side: declared as config/segment.schema.json says
(xkd_ros.parameters reads and validates it, without ROS), and changed at run time only where the schema
marks them `"x-runtime": true`.

Every parameter is declared with its schema type; those not marked are read-only, and `ros2 param set` on one
is refused naming it and saying why (relaunch with the new value). A runtime change is validated with the
rest against the same schema, refused with the start-up message (the old value kept) or handed to the node
and logged with what it does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter

from xkd_ros.parameters import (
    OFFSETS,
    ParameterError,
    is_ros_parameter,
    item_type,
    leaves,
    runtime_parameters,
    schema_leaf,
    validate_parameters,
)

__all__ = ["STARTUP_ONLY", "SchemaParameters"]

STARTUP_ONLY = "read at start-up only: relaunch with the new value"
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


class SchemaParameters(Node):
    """An rclpy Node whose parameters are the schema's: `declare_schema_parameters` at start-up, then
    `watch_runtime_parameters` for the changes. `params` holds the current (validated) set."""

    params: dict[str, Any]
    _runtime: frozenset[str] = frozenset()
    _check_runtime: Callable[[dict[str, Any]], None]  # set with the callbacks that call them
    _take_runtime: Callable[[dict[str, Any]], None]

    def declare_schema_parameters(self) -> dict[str, Any]:
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
        self.params = params = validate_parameters(given)
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
        return params

    def watch_runtime_parameters(
        self, check: Callable[[dict[str, Any]], None], take: Callable[[dict[str, Any]], None]
    ) -> None:
        """From now on a runtime parameter may change: the new set, validated against the schema, is
        `check`ed too (ParameterError refuses it), then handed to `take` once set."""
        self._check_runtime, self._take_runtime = check, take
        self.add_pre_set_parameters_callback(self._as_declared_type)
        self.add_on_set_parameters_callback(self._check_parameter_change)
        self.add_post_set_parameters_callback(self._apply_parameter_change)

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
        same messages) and by the node's check; ParameterError naming the bad one."""
        flat = {name: param.value for name, param in self.get_parameters_by_prefix("").items()}
        flat.update({param.name: param.value for param in changes})
        params = validate_parameters(flat)
        self._check_runtime(params)
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
        """A runtime change, set: handed to the node, and logged with what it does."""
        changed = sorted({schema_leaf(p.name) for p in parameters} & self._runtime)
        if not changed:
            return
        before, params = self.params, self._validated([])
        self._take_runtime(params)
        self.params = params
        for name in changed:
            effect = _RUNTIME_EFFECT.get(name) or (
                "~/debug/* published"
                if params["debug.publish"]
                else "~/debug/* not published until it is set true"
            )
            self.get_logger().info(
                f"parameter {name!r} changed from {before[name]} to {params[name]}: {effect}"
            )
