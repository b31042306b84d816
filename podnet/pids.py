"""Processes known by PID across restarts of whoever started them. A PID is given again once its process is
gone, so a recorded PID names the same process only while the kernel's start time for it is the one
recorded beside it: the cluster supervisor and the node agent's netns pods both record the two together.
"""

from __future__ import annotations

from pathlib import Path


def start_time(pid: int) -> str | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), None when it is gone or a zombie (as
    good as gone). A zombie whose threads still run is not gone: a process's first thread can end before the
    others (SIGKILL takes them one by one), and until the last ends, the process's sockets stay open."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # after the command name, which may hold spaces and ')'
    state, threads, started = fields[0], fields[17], fields[19]
    return None if state == "Z" and threads == "1" else started
