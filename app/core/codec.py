"""Encodes tensors to bytes for the store and back, without pickle. Thread: any.

Layout: a 4-byte little-endian header length, a JSON header listing each tensor's name,
dtype, shape and byte count, then the raw bytes of each tensor in order. Only numeric
dtypes are accepted on the way back in, so a crafted blob cannot smuggle objects.
"""

from __future__ import annotations

import json
import struct

import numpy as np

from app.core.domain import TensorBlob

_LEN = struct.Struct("<I")
_ALLOWED_KINDS = frozenset("biufc")  # bool, int, uint, float, complex


class CodecError(ValueError):
    """A stored tensor blob that cannot be decoded."""


def encode(tensors: tuple[TensorBlob, ...]) -> bytes:
    header = json.dumps(
        [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape), "nbytes": len(t.data)}
         for t in tensors],
        separators=(",", ":"),
    ).encode()
    return b"".join([_LEN.pack(len(header)), header, *(t.data for t in tensors)])


def decode(blob: bytes | None) -> tuple[TensorBlob, ...]:
    if not blob:
        return ()
    try:
        (n,) = _LEN.unpack_from(blob, 0)
        header = json.loads(blob[_LEN.size : _LEN.size + n])
        offset = _LEN.size + n
        tensors = []
        for entry in header:
            dtype = np.dtype(entry["dtype"])
            if dtype.kind not in _ALLOWED_KINDS:
                raise CodecError(f"refusing non-numeric dtype {dtype}")
            size = int(entry["nbytes"])
            data = blob[offset : offset + size]
            if len(data) != size:
                raise CodecError("tensor blob is shorter than its header says")
            offset += size
            tensors.append(TensorBlob(str(entry["name"]), dtype.str,
                                      tuple(int(d) for d in entry["shape"]), bytes(data)))
        return tuple(tensors)
    except (KeyError, TypeError, ValueError, struct.error) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"corrupt tensor blob: {exc}") from exc
