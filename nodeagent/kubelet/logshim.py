"""`python -m podnet.nodeagent.kubelet.logshim LOGFILE STDOUT_FD STDERR_FD`: what conmon is to CRI-O, for
one netns container instance: reads the container's stdout and stderr pipes and writes them to LOGFILE in
the CRI logging format with the time each line came, until both pipes end.

It runs in its own session, apart from the node agent, so a container keeps its output going (and never
meets a closed pipe) while the agent restarts.
"""

from __future__ import annotations

import os
import selectors
import sys
import time
from pathlib import Path

from podnet.nodeagent.kubelet.logs import LogWriter, Record, begin_instance, records_of


def start_log_shim(directory: Path, instance: int) -> tuple[int, int, int]:
    """Starts the shim of instance `instance` of a container whose logs live in `directory`; returns its
    PID (the caller reaps it) and the write ends of its stdout and stderr pipes, for the container (the
    caller closes them)."""
    path = begin_instance(directory, instance)
    stdout_read, stdout_write = os.pipe()
    stderr_read, stderr_write = os.pipe()
    try:
        for fd in (stdout_read, stderr_read):
            os.set_inheritable(fd, True)
        argv = [sys.executable, "-m", "podnet.nodeagent.kubelet.logshim", str(path), str(stdout_read), str(stderr_read)]
        # Its own session: stopping the container's process group leaves the shim to read the last words.
        pid = os.posix_spawn(sys.executable, argv, os.environ,
                       file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)], setsid=True)
    except OSError:
        os.close(stdout_write)
        os.close(stderr_write)
        raise
    finally:
        os.close(stdout_read)
        os.close(stderr_read)
    return pid, stdout_write, stderr_write


def main(argv: list[str]) -> int:
    path, stdout_fd, stderr_fd = Path(argv[0]), int(argv[1]), int(argv[2])
    writer = LogWriter(path)
    selector = selectors.DefaultSelector()
    pending: dict[int, bytearray] = {}
    for fd, stream in ((stdout_fd, "stdout"), (stderr_fd, "stderr")):
        selector.register(fd, selectors.EVENT_READ, stream)
        pending[fd] = bytearray()
    while selector.get_map():
        for key, _ in selector.select():
            data = os.read(key.fd, 65536)
            now = time.time()
            if data:
                writer.write(records_of(key.data, data, now, pending[key.fd]))
                continue
            selector.unregister(key.fd)
            if pending[key.fd]:  # the last words, without a newline
                writer.write([Record(now, key.data, bytes(pending[key.fd]))])
    writer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
