"""Resident memory and its peak, read from Linux's ``/proc/self``, for benchmarks that measure what
one piece of work adds to a process already holding its inputs.

The kernel's peak counter (``VmHWM``) can be set back to the current resident size, so each measured
step gets a peak of its own without starting a fresh process (which would measure the interpreter
and the imports as well)."""
from __future__ import annotations


def memory_bytes(field: str) -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (the peak since the last ``reset_peak``), in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def reset_peak() -> None:
    """Start ``VmHWM`` again from the current resident size. Raises when the kernel does not allow
    it: a peak that silently included everything before would be a wrong measurement."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError as err:
        raise RuntimeError(f"cannot reset the peak-RSS counter (/proc/self/clear_refs): {err}") from None
