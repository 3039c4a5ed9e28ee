"""Read back what W&B recorded in an offline run (its .wandb file), for tests.

The file is a LevelDB-style log: a 7-byte header, then 32 KiB blocks of records, each with a
7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last) holding protobuf
``Record`` messages. wandb no longer ships a Python reader, so this is a minimal one.
"""

from __future__ import annotations

import struct
from pathlib import Path

BLOCK = 32768


def read_records(path: Path) -> list:
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path}: not a .wandb file"
    pos, chunks, records = 7, b"", []
    while pos + 7 <= len(data):
        left_in_block = BLOCK - pos % BLOCK
        if left_in_block < 7:
            pos += left_in_block
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left_in_block  # zero padding to the end of the block
            continue
        payload = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 2):
            chunks = payload
        else:
            chunks += payload
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(chunks)
            records.append(record)
            chunks = b""
    return records


def history(path: Path) -> list[dict[str, str]]:
    """One dict per logged step: key -> JSON-encoded value (``_step`` included)."""
    rows = []
    for r in read_records(path):
        if r.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): i.value_json for i in r.history.item})
    return rows


def config_keys(path: Path) -> set[str]:
    keys: set[str] = set()
    for r in read_records(path):
        if r.WhichOneof("record_type") in ("config", "run"):
            cfg = r.config if r.WhichOneof("record_type") == "config" else r.run.config
            keys |= {(i.key or "/".join(i.nested_key)) for i in cfg.update}
    return keys


def wait_until_complete(path: Path, timeout: float = 60.0) -> None:
    """Wait for the run's final ``exit`` record: wandb's writer process may lag behind
    ``run.finish()`` on a loaded machine."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in read_records(path)):
                return
        except Exception:  # noqa: BLE001 - a record still being written
            pass
        time.sleep(0.2)
    raise AssertionError(f"{path}: no exit record after {timeout} s")
