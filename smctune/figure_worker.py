"""A figure helper process (figure_batch.py). It imports matplotlib and draws one throw-away figure
(the first figure a process draws pays for loading fonts), says ``READY``, then draws the jobs it is
sent one at a time, answering each with an outcome: ``None`` when drawn, ``("user", message)`` for
an error the user must fix, ``("error", text)`` for anything else (the parent draws that one itself).
It exits at the end of its input.

Messages are length-prefixed frames, so a job that cannot be unpickled here costs that job only,
not the stream. This module imports nothing heavy at the top: the parent imports it for the framing.
"""
from __future__ import annotations

import os
import pickle
import struct
import sys

READY = b"ready"
_LENGTH = struct.Struct(">Q")


def write_frame(stream, data: bytes) -> None:
    stream.write(_LENGTH.pack(len(data)) + data)
    stream.flush()


def read_frame(stream) -> bytes:
    """One frame's bytes; EOFError at the end of the stream (or in the middle of a frame)."""
    header = _read_exactly(stream, _LENGTH.size)
    return _read_exactly(stream, _LENGTH.unpack(header)[0])


def _read_exactly(stream, size: int) -> bytes:
    data = stream.read(size)
    if data is None or len(data) < size:
        raise EOFError("figure helper stream ended")
    return data


def main() -> None:
    results = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())   # stray prints must not corrupt the frames
    import importlib

    from smctune.figures import warm_up

    warm_up()
    importlib.import_module("smctune.report")   # plot_curves lives there
    from smctune.errors import UserError

    write_frame(results, READY)
    jobs = sys.stdin.buffer
    while True:
        try:
            frame = read_frame(jobs)
        except EOFError:
            break
        try:
            pickle.loads(frame).run()
            outcome = None
        except UserError as err:
            outcome = ("user", str(err))
        except Exception as err:  # noqa: BLE001 - reported; the parent redraws it
            outcome = ("error", f"{type(err).__name__}: {err}")
        write_frame(results, pickle.dumps(outcome))
    results.close()


if __name__ == "__main__":
    main()
