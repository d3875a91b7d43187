#!/usr/bin/env python3
"""Byte-exact interop of lowrank's safetensors reader/writer with the Python `safetensors` library.

Usage: safetensors_python.py PATH/TO/safetensors_copy

For each case, the `safetensors` library (Rust core) writes a file; safetensors_copy reads every
tensor and the metadata with lowrank and writes them again; the output must be byte-identical to
the input, and the library must load it back to the same arrays. Exits 77 (CTest: skipped) when
numpy or safetensors cannot be imported.

Two things lowrank cannot reproduce, by design, are not tested for bytes:
- more than one metadata key: the Rust crate serialises a HashMap, so its key order changes from
  run to run; lowrank writes keys sorted. That case is compared as parsed JSON + identical data.
- metadata={} (an empty dict): the library writes "__metadata__":{}, lowrank writes no entry
  (it cannot tell {} from None). The files still read back the same.
"""

import ctypes
import json
import os
import struct
import subprocess
import sys
import tempfile

try:
    import numpy as np
    import safetensors
    from safetensors import TensorSpec, serialize
    from safetensors.numpy import load_file, save_file
except ImportError as error:  # pragma: no cover - environment dependent
    print(f"SKIP: {error} (install numpy and safetensors in the LOWRANK_PYTHON venv)")
    sys.exit(77)


def header_of(data: bytes):
    n = struct.unpack("<Q", data[:8])[0]
    return n, json.loads(data[8 : 8 + n])


def special_floats(dtype, shape, rng):
    """Random values with NaN, infinities and -0.0 mixed in."""
    values = rng.standard_normal(int(np.prod(shape))).astype(dtype)
    specials = np.array([np.nan, np.inf, -np.inf, -0.0], dtype=dtype)
    values[: min(len(values), 4)] = specials[: min(len(values), 4)]
    return values.reshape(shape)


def numpy_cases():
    rng = np.random.default_rng(0)
    ints = lambda dtype, shape: rng.integers(  # noqa: E731
        np.iinfo(dtype).min, np.iinfo(dtype).max, size=shape, dtype=dtype, endpoint=True
    )
    yield "all_dtypes", {
        "f64": special_floats(np.float64, (3, 5), rng),
        "f32": special_floats(np.float32, (7,), rng),
        "f16": special_floats(np.float16, (2, 3, 4), rng),
        "i64": ints(np.int64, (4, 2)),
        "i32": ints(np.int32, (9,)),
        "i16": ints(np.int16, (3, 3)),
        "i8": ints(np.int8, (5,)),
        "u8": ints(np.uint8, (6, 1)),
        "mask": rng.integers(0, 2, size=(11,)).astype(np.bool_),
    }, {"format": "pt"}
    yield "scalars_and_empty", {
        "scalar_f32": np.array(3.5, dtype=np.float32),
        "scalar_i64": np.array(-7, dtype=np.int64),
        "scalar_bool": np.array(True),
        "empty": np.zeros((0,), dtype=np.float32),
        "empty_3d": np.zeros((3, 0, 2), dtype=np.float16),
        "empty_i8": np.zeros((0, 4), dtype=np.int8),
    }, None
    # Name order is bytewise ("B" < "_" < "a" < "é"); names with characters JSON must escape.
    yield "names", {
        "a": np.ones((2,), dtype=np.float32),
        "B": np.ones((2,), dtype=np.float32),
        "_x": np.ones((1,), dtype=np.float32),
        "é.weight": np.ones((1,), dtype=np.float32),
        'quote"back\\slash': np.ones((1,), dtype=np.float32),
        "ctl\n\t\x01\x7f/\u2028": np.ones((1,), dtype=np.float32),
        "model.layers.10.w": np.ones((1,), dtype=np.float32),
        "model.layers.9.w": np.ones((1,), dtype=np.float32),
    }, {"ünïcode \"key\"\n": "välue\x1f"}
    yield "single", {"weight": rng.standard_normal((300, 170)).astype(np.float32)}, None
    yield "no_tensors", {}, {"a": "b"}
    yield "no_tensors_no_metadata", {}, None
    # Header lengths that need 0..7 bytes of padding.
    for k in range(8):
        yield f"padding_{k}", {"t" * (k + 1): np.arange(k + 1, dtype=np.int32)}, None


def bf16_case(path):
    """numpy has no bfloat16: write raw bytes through the library's own serializer."""
    raw = bytes(range(256)) * 3  # every bit pattern, 384 values
    buf = ctypes.create_string_buffer(raw, len(raw))
    spec = lambda dtype, shape, n: TensorSpec(  # noqa: E731
        dtype=dtype, shape=shape, data_ptr=ctypes.addressof(buf), data_len=n
    )
    tensors = {
        "bf16": spec("bfloat16", [16, 24], 768),
        "f16": spec("float16", [384], 768),
        "f32": spec("float32", [2, 96], 768),
        "bf16_small": spec("bfloat16", [3], 6),
    }
    data = bytes(serialize(tensors, metadata={"format": "pt"}))
    with open(path, "wb") as f:
        f.write(data)


def run_copy(tool, pairs):
    """One run of the tool for all (src, dst) pairs: libtorch loads once."""
    args = [path for pair in pairs for path in pair]
    result = subprocess.run([tool, *args], capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"safetensors_copy failed ({result.returncode}): {result.stderr}")


def same_arrays(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    tool = sys.argv[1]
    print(f"safetensors {safetensors.__version__}, numpy {np.__version__}")
    failures = []
    with tempfile.TemporaryDirectory(prefix="lowrank-interop-") as tmp:
        path = lambda name: os.path.join(tmp, f"{name}.safetensors")  # noqa: E731
        out = lambda name: os.path.join(tmp, f"{name}.out.safetensors")  # noqa: E731

        # Write every input with the library, then copy them all with lowrank in one run.
        cases = list(numpy_cases())
        for name, tensors, metadata in cases:
            save_file(tensors, path(name), metadata=metadata)
        bf16_case(path("bf16"))
        multi = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
        save_file(multi, path("metadata"), metadata={"format": "pt", "zeta": "1", "alpha": "2", "mid": "3"})
        save_file(multi, path("empty_meta"), metadata={})
        names = [name for name, _, _ in cases] + ["bf16", "metadata", "empty_meta"]
        run_copy(tool, [(path(n), out(n)) for n in names])

        for name, tensors, metadata in cases:
            if read(path(name)) != read(out(name)):
                failures.append(f"{name}: output differs from the library's bytes")
                continue
            back = load_file(out(name))
            if set(back) != set(tensors) or not all(same_arrays(back[k], v) for k, v in tensors.items()):
                failures.append(f"{name}: library reads different tensors back")

        if read(path("bf16")) != read(out("bf16")):
            failures.append("bf16: output differs from the library's bytes")
        with safetensors.safe_open(out("bf16"), framework="numpy") as f:  # header only: numpy lacks bf16
            if sorted(f.keys()) != ["bf16", "bf16_small", "f16", "f32"]:
                failures.append("bf16: library lists different tensors")

        # Several metadata keys: the library's order is a HashMap's; compare parsed headers and data.
        a, b = read(path("metadata")), read(out("metadata"))
        (na, ha), (nb, hb) = header_of(a), header_of(b)
        keys = list(hb["__metadata__"])
        if na != nb or ha != hb or a[8 + na :] != b[8 + nb :] or keys != sorted(keys):
            failures.append("metadata: parsed header, data or lowrank's sorted key order differ")

        # metadata={}: the library writes "__metadata__":{}, lowrank omits it; same tensors back.
        if not same_arrays(load_file(out("empty_meta"))["w"], multi["w"]) or "__metadata__" in header_of(
            read(out("empty_meta"))
        )[1]:
            failures.append("empty metadata: unexpected output")

        # A truncated file is refused with a message naming it, and no output is left behind.
        with open(path("truncated"), "wb") as f:
            f.write(read(path("single"))[:-5])
        result = subprocess.run([tool, path("truncated"), out("truncated")], capture_output=True, text=True)
        if result.returncode != 1 or "truncated.safetensors" not in result.stderr or os.path.exists(out("truncated")):
            failures.append(f"truncated: expected a clean refusal, got {result.returncode}: {result.stderr}")
        leftovers = [f for f in os.listdir(tmp) if ".tmp-" in f]
        if leftovers:
            failures.append(f"temporary files left behind: {leftovers}")

    for failure in failures:
        print("FAIL:", failure)
    print(f"{len(names) + 1} cases checked, {len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
