"""One ``SO_REUSEPORT`` socket per worker: the kernel spreads connections over the workers.

With uvicorn's one shared socket, the worker awake first accepted a whole burst of
keep-alive connections (27 of 32 in one benchmark run), and that worker set the latency of
most requests. These tests run on the real kernel (Linux, like production).
"""

from __future__ import annotations

import errno
import io
import pickle
import socket
from multiprocessing.reduction import ForkingPickler

import pytest

from app.core.listeners import ReusePortSocket, reserve_port, reuse_port_supported

pytestmark = pytest.mark.skipif(not reuse_port_supported(), reason="SO_REUSEPORT is Linux's")


def _as_a_worker_gets_it(sock: socket.socket) -> socket.socket:
    """``sock`` through the pickling uvicorn's supervisor uses to hand it to a new worker."""
    buffer = io.BytesIO()
    ForkingPickler(buffer).dump([sock])
    unpickled: list[socket.socket] = pickle.loads(buffer.getvalue())
    return unpickled[0]


def _accept_all(server: socket.socket) -> int:
    server.setblocking(False)
    accepted = 0
    while True:
        try:
            conn, _ = server.accept()
        except BlockingIOError:
            return accepted
        conn.close()
        accepted += 1


def test_each_worker_gets_its_own_socket_and_a_share_of_the_connections() -> None:
    """Two workers' copies of the supervisor's socket are two sockets on the same port; 64
    connections are split between them by the kernel (never all to one: p < 1e-10)."""
    supervisor = reserve_port("127.0.0.1", 0)
    port = supervisor.getsockname()[1]
    workers = [_as_a_worker_gets_it(supervisor) for _ in range(2)]
    clients: list[socket.socket] = []
    try:
        assert all(isinstance(w, ReusePortSocket) for w in workers)
        assert len({supervisor.fileno(), *(w.fileno() for w in workers)}) == 3
        assert {w.getsockname() for w in workers} == {("127.0.0.1", port)}
        for worker in workers:
            worker.listen(128)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(64)]
        shares = [_accept_all(w) for w in workers]
        assert sum(shares) == 64
        assert min(shares) >= 8, shares
    finally:
        for sock in [*clients, *workers, supervisor]:
            sock.close()


def test_a_port_in_use_is_refused_even_by_a_second_copy_of_this_server() -> None:
    """SO_REUSEPORT would let a second server join the port quietly; reserve_port refuses."""
    first = reserve_port("127.0.0.1", 0)
    port = first.getsockname()[1]
    worker = _as_a_worker_gets_it(first)
    worker.listen(16)
    other = socket.socket()
    try:
        with pytest.raises(OSError) as second_server:
            reserve_port("127.0.0.1", port)
        assert second_server.value.errno == errno.EADDRINUSE
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        with pytest.raises(OSError) as plain_listener:
            reserve_port("127.0.0.1", other.getsockname()[1])
        assert plain_listener.value.errno == errno.EADDRINUSE
    finally:
        for sock in (other, worker, first):
            sock.close()
