"""What vulture reports as unused in xkd_ros but is used where vulture cannot see it: names a library calls or
reads (callbacks, attributes set on its objects) and dataclass fields read through dataclasses.asdict.

Parsed by vulture (test/test_dead_code.py), never imported or run. Only true false positives belong here, each
with the reason; anything else vulture finds is dead code to remove. Vulture matches by name, so an entry
covers that name wherever it is used: keep the list short.
"""

# ruff: noqa: B018 (attribute reads are the point: vulture counts each as a use)

import onnxruntime
import tensorrt
from diagnostic_msgs.msg import DiagnosticStatus
from visualization_msgs.msg import Marker

from xkd_ros import message_filters
from xkd_ros.inference.engine_cache import EngineKey

# Fields of the engine cache key, written to the cache's JSON through dataclasses.asdict (EngineKey.to_dict).
EngineKey.onnx_sha256
EngineKey.tensorrt_version
EngineKey.gpu_name
EngineKey.compute_capability

# onnxruntime reads the session options we set (inference/onnxruntime.py, inference/metadata.py,
# model/teachers.py, bench/).
onnxruntime.SessionOptions.intra_op_num_threads
onnxruntime.SessionOptions.graph_optimization_level

# onnxruntime.quantization calls the CalibrationDataReader's methods (quantize.py).
onnxruntime.quantization.CalibrationDataReader.get_next
onnxruntime.quantization.CalibrationDataReader.set_range

# TensorRT calls the IInt8EntropyCalibrator2's methods and reads the builder config's calibrator
# (inference/tensorrt.py or build_engine.py).
tensorrt.IInt8EntropyCalibrator2.get_batch_size
tensorrt.IInt8EntropyCalibrator2.get_batch
tensorrt.IInt8EntropyCalibrator2.read_calibration_cache
tensorrt.IInt8EntropyCalibrator2.write_calibration_cache
tensorrt.IBuilderConfig.int8_calibrator

# Fields of ROS messages the node publishes: rclpy serialises them (the class legend, the diagnostics).
Marker.action
DiagnosticStatus.hardware_id

# message_filters' public attributes, named as upstream names them (the connection a filter holds on its
# inputs); upstream's own tests run against this module (test/test_upstream_apis.py).
message_filters.Cache.incoming_connection
message_filters.TimeSynchronizer.input_connections
