"""CIFAR python-format batches for the tests: as Python 2's cPickle and Python 3 wrote them,
and crafted ones that would run code if they were unpickled."""

from __future__ import annotations

import builtins
import os
import pickle
from pathlib import Path

import numpy as np


def write_pickle(path: Path, obj: dict) -> None:
    """The CIFAR python format: Python-2-era pickles whose dict keys are bytes."""
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def cifar_batch(rng: np.random.Generator, n: int, label_key: bytes, classes: int) -> dict:
    return {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: rng.integers(0, classes, n).tolist(),
        b"batch_label": b"test batch",
    }


def python2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's cPickle wrote the CIFAR files (protocol 2, str as BINSTRING,
    numpy's ``numpy.core.multiarray._reconstruct``), assembled opcode by opcode."""

    def s(text: bytes) -> bytes:
        return pickle.SHORT_BINSTRING + bytes([len(text)]) + text

    def g(module: str, name: str) -> bytes:
        return pickle.GLOBAL + f"{module}\n{name}\n".encode()

    def i(n: int) -> bytes:
        return pickle.BININT + n.to_bytes(4, "little", signed=True)

    raw = np.ascontiguousarray(data).tobytes()
    dtype = g("numpy", "dtype") + s(b"u1") + i(0) + i(1) + pickle.TUPLE3 + pickle.REDUCE
    dtype += pickle.MARK + i(3) + s(b"|") + pickle.NONE * 3 + i(-1) + i(-1) + i(0)
    dtype += pickle.TUPLE + pickle.BUILD
    array = g("numpy.core.multiarray", "_reconstruct") + g("numpy", "ndarray")
    array += i(0) + pickle.TUPLE1 + s(b"b") + pickle.TUPLE3 + pickle.REDUCE
    array += pickle.MARK + i(1) + i(data.shape[0]) + i(data.shape[1]) + pickle.TUPLE2 + dtype
    array += pickle.NEWFALSE + pickle.BINSTRING + len(raw).to_bytes(4, "little") + raw
    array += pickle.TUPLE + pickle.BUILD
    items = s(b"data") + array + s(b"labels") + pickle.EMPTY_LIST
    items += pickle.MARK + b"".join(i(y) for y in labels) + pickle.APPENDS
    items += s(b"batch_label") + s(b"training batch 1 of 1")
    return pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + items + pickle.SETITEMS + b"."


class Payload:
    """What an attacker ships as a CIFAR batch: unpickling it would call ``call(*args)``."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def crafted_batches(sentinel: Path) -> list[object]:
    """Every way a crafted batch could write ``sentinel``: a shell command, open(), exec()."""
    return [
        Payload(os.system, f"touch {sentinel}"),
        Payload(builtins.open, str(sentinel), "w"),
        Payload(builtins.exec, f"open({str(sentinel)!r}, 'w')"),
        # hidden inside the format's own structure: a dict whose data is the payload
        {b"data": Payload(os.system, f"touch {sentinel}"), b"labels": [0]},
    ]
