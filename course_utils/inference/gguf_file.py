"""GGUF, the llama.cpp file format, read by hand.

Layout (little-endian)::

    magic "GGUF" | version u32 | n_tensors u64 | n_kv u64
    n_kv × (key: string, value_type u32, value)          # metadata: architecture, tokenizer, ...
    n_tensors × (name: string, n_dims u32, dims u64 × n_dims, ggml_type u32, offset u64)
    padding to `general.alignment` (default 32)
    tensor data (each tensor at data_start + offset)

A string is ``u64 length + UTF-8 bytes``; an array is ``u32 item type + u64 count + items``.
``dims`` are listed fastest-varying first (GGML order), so a PyTorch ``(out, in)`` weight has
``dims = [in, out]``.

**Q4_1** stores blocks of 32 weights in 20 bytes: ``d`` (fp16 scale), ``m`` (fp16 minimum) and
16 bytes of 4-bit codes; byte ``j`` holds weight ``j`` in its low nibble and weight ``j + 16`` in
its high nibble. ``w = d · q + m`` — 5 bits/weight. **Q4_0** (18 bytes) is symmetric,
``w = d · (q - 8)``, 4.5 bits/weight; **Q8_0** (34 bytes) is ``w = d · q`` with int8 ``q``,
8.5 bits/weight. K-quants (Q4_K, Q5_K, Q6_K, …) group 256 weights in a super-block whose 8 or 16
sub-block scales are themselves quantized to 6 or 8 bits, which lowers the constant overhead;
``_M``/``_S`` mixes keep sensitive tensors (e.g. ``attn_v``, ``ffn_down``) at more bits.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from course_utils import checks

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# ggml type id → (name, weights per block, bytes per block), for the types this course reads
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4), 1: ("F16", 1, 2), 2: ("Q4_0", 32, 18), 3: ("Q4_1", 32, 20),
    6: ("Q5_0", 32, 22), 7: ("Q5_1", 32, 24), 8: ("Q8_0", 32, 34), 12: ("Q4_K", 256, 144),
    13: ("Q5_K", 256, 176), 14: ("Q6_K", 256, 210), 30: ("BF16", 1, 2),
}
# GGUF metadata value types → struct format (8: string, 9: array are handled apart)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@dataclass
class TensorInfo:
    """One entry of the tensor table: ``shape`` in PyTorch order (slowest first)."""

    name: str
    shape: tuple[int, ...]
    ggml_type: str
    offset: int  # absolute byte offset of the data in the file
    n_bytes: int


@dataclass
class GGUFFile:
    """What :func:`read_gguf` parsed: version, metadata (key → value) and the tensor table."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: dict[str, TensorInfo] = field(default_factory=dict)

    def raw(self, name: str) -> np.ndarray:
        """The tensor's bytes, as a read-only uint8 view of the memory-mapped file."""
        info = self.tensors[name]
        return np.memmap(self.path, dtype=np.uint8, mode="r", offset=info.offset, shape=(info.n_bytes,))


class _Cursor:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.pos)[0]
        self.pos += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        text = self.data[self.pos:self.pos + n].decode("utf-8", errors="replace")
        self.pos += n
        return text

    def value(self, kind: int) -> Any:
        if kind == 8:
            return self.string()
        if kind == 9:
            item_kind, count = self.unpack("<I"), self.unpack("<Q")
            return [self.value(item_kind) for _ in range(count)]
        if kind not in _SCALARS:
            raise ValueError(f"unknown GGUF value type {kind} at byte {self.pos}")
        return self.unpack(_SCALARS[kind])


def read_gguf(path: str | Path) -> GGUFFile:
    """Parse the header, metadata and tensor table of a GGUF file (the data stays on disk)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path={str(path)!r} is not a file")
    with open(path, "rb") as fh:
        head = fh.read(24)
        if head[:4] != GGUF_MAGIC:
            raise ValueError(f"{path} is not a GGUF file (magic {head[:4]!r}, expected {GGUF_MAGIC!r})")
        size = path.stat().st_size
        # metadata + tensor table come first; read a generous prefix (grows if needed)
        prefix = 1 << 22
        while True:
            fh.seek(0)
            data = fh.read(min(prefix, size))
            try:
                return _parse(path, data)
            except struct.error:
                if prefix >= size:
                    raise
                prefix *= 4


def _parse(path: Path, data: bytes) -> GGUFFile:
    cur = _Cursor(data)
    cur.pos = 4
    version, n_tensors, n_kv = cur.unpack("<I"), cur.unpack("<Q"), cur.unpack("<Q")
    metadata = {}
    for _ in range(n_kv):
        key = cur.string()
        metadata[key] = cur.value(cur.unpack("<I"))
    entries = []
    for _ in range(n_tensors):
        name = cur.string()
        n_dims = cur.unpack("<I")
        dims = [cur.unpack("<Q") for _ in range(n_dims)]
        type_id, offset = cur.unpack("<I"), cur.unpack("<Q")
        entries.append((name, dims, type_id, offset))
    alignment = int(metadata.get("general.alignment", DEFAULT_ALIGNMENT))
    data_start = -(-cur.pos // alignment) * alignment
    tensors = {}
    for name, dims, type_id, offset in entries:
        if type_id not in GGML_TYPES:
            raise ValueError(f"tensor {name!r} has ggml type {type_id}, which this reader does not know")
        type_name, block, block_bytes = GGML_TYPES[type_id]
        n = int(np.prod(dims))
        tensors[name] = TensorInfo(name, tuple(reversed(dims)), type_name, data_start + offset, n // block * block_bytes)
    return GGUFFile(path, version, metadata, tensors)


def dequantize_q4_1(raw: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Q4_1 by hand: per block of 20 bytes, ``d = fp16(bytes 0-1)``, ``m = fp16(bytes 2-3)``,
    codes ``q_j = byte[4 + j] & 0xF`` (weights 0–15) and ``q_{j+16} = byte[4 + j] >> 4``
    (weights 16–31); ``w = d · q + m`` in float32."""
    checks.instance("raw", raw, np.ndarray)
    if raw.dtype != np.uint8 or raw.size % 20:
        raise ValueError(f"raw must be uint8 bytes in whole 20-byte Q4_1 blocks, got {raw.dtype} × {raw.size}")
    blocks = np.asarray(raw).reshape(-1, 20)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    m = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    packed = blocks[:, 4:]
    q = np.concatenate([packed & 0x0F, packed >> 4], axis=1).astype(np.float32)
    w = d * q + m
    if w.size != int(np.prod(shape)):
        raise ValueError(f"shape={shape} holds {int(np.prod(shape))} values, the bytes hold {w.size}")
    return w.reshape(shape)


def gguf_requantize(w: np.ndarray, qtype: str) -> tuple[np.ndarray, int]:
    """Quantize a float32 array (last dimension a multiple of the block size) to the GGUF type
    ``qtype`` with the ``gguf`` package (llama.cpp's reference quantizers in numpy) and dequantize
    it back → ``(ŵ float32, bytes stored)``."""
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize, quantize

    checks.one_of("qtype", qtype, ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"))
    kind = GGMLQuantizationType[qtype]
    packed = quantize(np.ascontiguousarray(w, dtype=np.float32), kind)
    return dequantize(packed, kind).reshape(w.shape), int(packed.nbytes)


def bits_per_weight(ggml_type: str) -> float:
    """Bits per weight of a GGML type, constants included (Q4_1: 20 bytes / 32 = 5.0)."""
    for name, block, block_bytes in GGML_TYPES.values():
        if name == ggml_type:
            return 8 * block_bytes / block
    raise ValueError(f"ggml_type={ggml_type!r}: expected one of {[v[0] for v in GGML_TYPES.values()]}")


def shipped_gguf_path(name: str = "smollm2-135m-instruct") -> Path:
    """The GGUF file inside the offline model's wheel."""
    from course_utils.models import OFFLINE_CAUSAL_LMS, package_dir

    info = OFFLINE_CAUSAL_LMS[name]
    return package_dir(info["package"], info["pip"]) / info["gguf_file"]
