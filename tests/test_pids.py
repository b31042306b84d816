"""A process counts as gone only once none of its threads runs: its sockets stay open until the last ends."""

import socket
import subprocess
import sys
import time

from podnet.pids import start_time

# The first thread ends (the exit system call, not exit_group) while a second holds a listening socket open
# until told to end: the kernel shows the process as a zombie meanwhile.
FIRST_THREAD_ENDS_FIRST = r"""
import ctypes, socket, sys, threading
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
print(listener.getsockname()[1], flush=True)
threading.Thread(target=sys.stdin.read).start()
ctypes.CDLL(None).syscall(60, 0)
"""


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


def _wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_zombie_whose_other_thread_still_listens_is_alive_until_that_thread_ends():
    process = subprocess.Popen([sys.executable, "-c", FIRST_THREAD_ENDS_FIRST], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        _wait_for(lambda: _state(process.pid) == "Z")
        assert start_time(process.pid) is not None
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass  # still listening: the process is not gone

        process.stdin.close()  # the second thread's read ends, and with it the process
        _wait_for(lambda: start_time(process.pid) is None)
        assert _state(process.pid) == "Z"  # not reaped yet: a zombie with no thread left
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except ConnectionRefusedError:
            pass
        else:
            raise AssertionError(f"port {port} still accepts connections")
    finally:
        process.kill()
        process.wait()


def test_a_running_process_has_its_start_time_and_a_reaped_one_none():
    process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started = start_time(process.pid)
    assert started is not None and started.isdigit()
    process.stdin.close()
    process.wait()
    assert start_time(process.pid) is None
