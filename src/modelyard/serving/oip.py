"""Open Inference Protocol v2 request and response bodies, JSON and binary.

The binary tensor extension (as Triton and KServe speak it): a request whose
``Inference-Header-Content-Length`` header is N carries N bytes of JSON, then the raw bytes of
every input whose ``parameters.binary_data_size`` is set, in order. Outputs are sent the same
way when the request asks (``parameters.binary_data_output`` or per-output
``parameters.binary_data``). BYTES elements are each a 4-byte little-endian length and bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import orjson

from modelyard.domain.errors import InvalidInput, InvalidJSON, InvalidRequest
from modelyard.domain.signature import DTYPES, OIP_TO_DTYPE, dtype_name
from modelyard.domain.tensors import check_rank, decode, encode

HEADER_LENGTH = "inference-header-content-length"


def parse_request(body: bytes, header_length: int | None
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The request's JSON document and its decoded input arrays."""
    if header_length is None:
        doc, binary = _json(body), b""
    else:
        if not 0 <= header_length <= len(body):
            raise InvalidRequest(
                f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes",
                field=HEADER_LENGTH)
        doc, binary = _json(body[:header_length]), body[header_length:]
    if not isinstance(doc, dict):
        raise InvalidRequest("the body must be a JSON object with 'inputs'", field="body")
    tensors = doc.get("inputs")
    if not isinstance(tensors, list):
        raise InvalidInput("'inputs' must be a list of tensors", field="inputs")
    arrays: dict[str, np.ndarray] = {}
    offset = 0
    for i, tensor in enumerate(tensors):
        where = f"inputs[{i}]"
        size = _binary_size(tensor)
        if size is None:
            name, array = decode(tensor, where)
        else:
            if offset + size > len(binary):
                raise InvalidInput(f"tensor {i} declares {size} binary bytes past the body's "
                                   "end", field=f"{where}.parameters.binary_data_size")
            name, array = _from_binary(tensor, binary[offset:offset + size], where)
            offset += size
        if name in arrays:
            raise InvalidInput(f"tensor {name!r} appears twice", field=f"{where}.name")
        arrays[name] = array
    if offset != len(binary):
        raise InvalidRequest(f"{len(binary) - offset} binary bytes follow the last tensor",
                             field="body")
    return doc, arrays


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"the body is not valid JSON: {exc}") from None


def _binary_size(tensor: Any) -> int | None:
    if not isinstance(tensor, dict):
        return None
    params = tensor.get("parameters")
    if not isinstance(params, dict) or "binary_data_size" not in params:
        return None
    size = params["binary_data_size"]
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput("binary_data_size must be a byte count", field="inputs")
    return size


def _from_binary(tensor: dict[str, Any], raw: bytes, where: str) -> tuple[str, np.ndarray]:
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInput("tensor needs a string 'name'", field=f"{where}.name")
    where = f"inputs.{name}"
    datatype = tensor.get("datatype")
    shape = tensor.get("shape")
    if datatype not in OIP_TO_DTYPE:
        raise InvalidInput(f"tensor {name!r} has unknown datatype {datatype!r}",
                           field=f"{where}.datatype")
    if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"tensor {name!r} needs 'shape', a list of sizes >= 0",
                           field=f"{where}.shape")
    check_rank(shape, name, where)
    count = 1
    for d in shape:
        count *= d
    kind = OIP_TO_DTYPE[datatype]
    if kind == "string":
        values = _unpack_bytes(raw, count, name, where)
        return name, np.array(values, dtype=object).reshape(shape)
    dtype = DTYPES[kind][0].newbyteorder("<")
    if len(raw) != count * dtype.itemsize:
        raise InvalidInput(f"tensor {name!r} has {len(raw)} bytes; shape {shape} of {datatype} "
                           f"needs {count * dtype.itemsize}", field=f"{where}.data")
    return name, np.frombuffer(raw, dtype=dtype).reshape(shape)


def _unpack_bytes(raw: bytes, count: int, name: str, where: str) -> list[bytes]:
    values: list[bytes] = []
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise InvalidInput(f"tensor {name!r}: truncated BYTES element", field=where)
        (length,) = struct.unpack_from("<I", raw, pos)
        pos += 4
        if pos + length > len(raw):
            raise InvalidInput(f"tensor {name!r}: truncated BYTES element", field=where)
        values.append(raw[pos:pos + length])
        pos += length
    if len(values) != count:
        raise InvalidInput(f"tensor {name!r} has {len(values)} elements, shape needs {count}",
                           field=where)
    return values


def wanted_outputs(doc: Mapping[str, Any], known: set[str]) -> tuple[set[str], set[str], bool]:
    """(names asked for, names asked as binary, all-binary) from a request document."""
    params = doc.get("parameters")
    all_binary = isinstance(params, dict) and params.get("binary_data_output") is True
    requested = doc.get("outputs")
    if requested is None:
        return set(), set(), all_binary
    if not isinstance(requested, list) or not all(
            isinstance(o, dict) and isinstance(o.get("name"), str) for o in requested):
        raise InvalidRequest("'outputs' must be a list of objects with a 'name'",
                             field="outputs")
    names = {o["name"] for o in requested}
    unknown = names - known if known else set()
    if unknown:
        raise InvalidRequest(f"unknown output {sorted(unknown)[0]!r}; the model gives "
                             f"{sorted(known)}", field="outputs")
    binary = {o["name"] for o in requested
              if isinstance(o.get("parameters"), dict) and o["parameters"].get("binary_data")}
    return names, binary, all_binary


def response_body(head: dict[str, Any], outputs: Mapping[str, np.ndarray],
                  binary: set[str], all_binary: bool, dumps: Any
                  ) -> tuple[bytes, int | None]:
    """The response bytes and, when any output is binary, the JSON header's length."""
    tensors = []
    blobs: list[bytes] = []
    for name, array in outputs.items():
        if all_binary or name in binary:
            raw = _to_binary(array)
            tensors.append({"name": name, "datatype": DTYPES[dtype_name(array.dtype)][1],
                            "shape": list(array.shape),
                            "parameters": {"binary_data_size": len(raw)}})
            blobs.append(raw)
        else:
            tensors.append(encode(name, array))
    header = dumps({**head, "outputs": tensors})
    if not blobs:
        return header, None
    return header + b"".join(blobs), len(header)


def _to_binary(array: np.ndarray) -> bytes:
    if dtype_name(array.dtype) == "string":
        parts = []
        for value in array.reshape(-1).tolist():
            data = value if isinstance(value, bytes) else str(value).encode()
            parts.append(struct.pack("<I", len(data)) + data)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
