"""`keep_freed_heap` (podnet/process.py), in a fresh Python each time, read back through glibc's own
account of its heap (mallinfo2): a 16 MB block comes from the heap instead of a mapping of its own, and
forty megabytes of 64 KB buffers, freed, stay at the heap's top instead of going back to the kernel, so
the next buffers do not fault their pages in again. Without the call, the same program shows
glibc's defaults."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROGRAM = """
import ctypes, json, sys
sys.path.insert(0, sys.argv[1])
if sys.argv[2] == "keep":
    from podnet.process import keep_freed_heap
    keep_freed_heap()

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
mapped_before = libc.mallinfo2().hblks
block = bytearray(16 << 20)  # held to the end: glibc moves its thresholds when a mapped block is freed
mapped_while_held = libc.mallinfo2().hblks - mapped_before
buffers = [bytearray(1 << 16) for _ in range(640)]  # forty megabytes of super-packet-sized buffers
del buffers
kept_at_top = libc.mallinfo2().keepcost
print(json.dumps({"mapped": mapped_while_held, "kept_at_top": kept_at_top}))
"""


def heap_after(mode: str) -> dict:
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(REPO), mode], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_packet_process_keeps_freed_memory_in_its_heap():
    kept = heap_after("keep")
    assert kept["mapped"] == 0, kept
    assert kept["kept_at_top"] >= 30 << 20, kept  # most of the forty


def test_without_it_glibc_maps_big_blocks_and_gives_freed_memory_back():
    plain = heap_after("plain")
    assert plain["mapped"] == 1, plain
    assert plain["kept_at_top"] < 1 << 20, plain
