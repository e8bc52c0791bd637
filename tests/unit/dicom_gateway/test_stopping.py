"""Stop signals waited for without a lock, and a shutdown bounded by the kernel."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicom_gateway.stopping import StopSignals

ROOT = str(Path(__file__).resolve().parents[3])


@pytest.fixture
def stops() -> Iterator[StopSignals]:
    caught = StopSignals([signal.SIGUSR1])
    yield caught
    caught.close()


def test_a_signal_ends_the_wait_and_says_which(stops: StopSignals) -> None:
    assert not stops.wait(0.01)
    os.kill(os.getpid(), signal.SIGUSR1)
    started = time.monotonic()
    assert stops.wait(10)
    assert time.monotonic() - started < 5
    assert stops.received == signal.SIGUSR1
    assert stops.wait(0)  # it stays told


def test_a_readable_pipe_ends_the_wait_without_a_signal(stops: StopSignals) -> None:
    read, write = os.pipe()
    try:
        assert not stops.wait(0.01, read)
        os.close(write)  # the other end gone: EOF is readable
        write = -1
        assert stops.wait(10, read)
        assert stops.received is None
    finally:
        os.close(read)
        if write != -1:
            os.close(write)


def test_a_descriptor_above_fd_setsize_can_be_watched(stops: StopSignals) -> None:
    """A receiver's lifeline keeps the gateway's descriptor number, which is high in a
    gateway holding many associations: select() refuses those above 1023."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2100:
        pytest.skip("the descriptor limit is below 2100")
    read, write = os.pipe()
    high = 2000
    if soft != resource.RLIM_INFINITY and soft <= high:
        resource.setrlimit(resource.RLIMIT_NOFILE, (high + 100, hard))
    try:
        os.dup2(read, high)
        assert not stops.wait(0.01, high)
        os.write(write, b"x")
        assert stops.wait(10, high)
    finally:
        for fd in (read, write, high):
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_close_gives_back_the_previous_handler() -> None:
    previous = signal.getsignal(signal.SIGUSR2)
    caught = StopSignals([signal.SIGUSR2])
    assert signal.getsignal(signal.SIGUSR2) is not previous
    caught.close()
    assert signal.getsignal(signal.SIGUSR2) is previous


# The main thread waits in the tightest loop there is, so a signal nearly always lands inside
# a wait. With ``threading.Event`` (its handler calling ``set()``) about half of these
# processes deadlocked for good; every one must end.
_SPIN = """
import signal, sys
from dicom_gateway.stopping import StopSignals
stops = StopSignals([signal.SIGTERM])
sys.stdout.write("ready\\n")
sys.stdout.flush()
while not stops.wait(0):
    pass
sys.exit(3)
"""


def test_sigterm_landing_inside_a_wait_always_stops_the_loop() -> None:
    env = {**os.environ, "PYTHONPATH": ROOT}
    for attempt in range(8):
        child = subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE, env=env)
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n"
            time.sleep(0.01 * attempt)
            child.send_signal(signal.SIGTERM)
            assert child.wait(10) == 3
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()


_HANG_AT_EXIT = """
import threading
from dicom_gateway.stopping import exit_if_not_done_in
exit_if_not_done_in(0.5)
threading.Thread(target=threading.Event().wait).start()  # joined at exit: forever
"""


def test_a_shutdown_that_hangs_is_ended_by_the_kernel() -> None:
    env = {**os.environ, "PYTHONPATH": ROOT}
    child = subprocess.Popen([sys.executable, "-c", _HANG_AT_EXIT], env=env)
    try:
        assert child.wait(20) == -signal.SIGALRM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
