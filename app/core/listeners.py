"""One listening socket per uvicorn worker (``SO_REUSEPORT``), so connections spread evenly.

uvicorn's multi-worker mode binds one socket in its supervisor and every worker accepts on
that same socket. The worker that wakes first accepts every connection waiting, so a burst
of keep-alive connections lands mostly on one worker (27 of 32 wrk connections on one of two
workers). The busy worker then sets the latency of most requests while the other has little
to do.

With ``SO_REUSEPORT`` (Linux 3.9+) each worker listens on a socket of its own, bound to the
same address, and the kernel assigns every new connection to one of the listening sockets by
a hash of its addresses and ports: evenly on average, whoever is awake. This is what nginx's
``reuseport`` and Envoy do; uvicorn does not offer it (its pull request #2472 is open).

How it fits uvicorn's supervisor, which hands its sockets to every worker it starts or
restarts by pickling them: :class:`ReusePortSocket` pickles as its address, not as its file
descriptor, so unpickling it in a worker binds a new ``SO_REUSEPORT`` socket there. The
supervisor's own socket is bound (it holds the port, and a port already in use fails at
once) but never listens, so the kernel sends it no connection. Only listening sockets take
part in the hash.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

logger = logging.getLogger(__name__)


def reuse_port_supported() -> bool:
    """True where ``SO_REUSEPORT`` balances connections across sockets (Linux).

    Other systems accept the option but (macOS, the BSDs without ``SO_REUSEPORT_LB``) send
    every connection to one socket, which would be worse than sharing one.
    """
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


class ReusePortSocket(socket.socket):
    """A TCP socket bound with ``SO_REUSEPORT`` that re-binds itself wherever it is unpickled.

    Create it with :func:`bind_reuse_port`.
    """

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        host, port = self.getsockname()[:2]
        return bind_reuse_port, (host, port)


def reserve_port(host: str, port: int) -> ReusePortSocket:
    """The supervisor's socket: :func:`bind_reuse_port` once the port is known to be free.

    ``SO_REUSEPORT`` lets any socket of the same user with the option join the port, so a
    second server started by mistake would quietly share it; a plain bind first (released at
    once) fails when anything holds the port, as it would without ``SO_REUSEPORT``.

    Raises:
        OSError: the port is in use (``errno.EADDRINUSE``) or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
        port = probe.getsockname()[1]
    return bind_reuse_port(host, port)


def bind_reuse_port(host: str, port: int) -> ReusePortSocket:
    """A new TCP socket bound to ``(host, port)`` with ``SO_REUSEADDR`` and ``SO_REUSEPORT``.

    It does not listen: the server that uses it calls ``listen`` (uvicorn's
    ``loop.create_server(sock=...)``), and only then does it take connections.

    Args:
        host: an IPv4 or IPv6 address (``127.0.0.1``, ``0.0.0.0``, ``::``).
        port: a TCP port; 0 picks a free one (then bind the others to the port it got).

    Raises:
        OSError: the address is taken by a socket without ``SO_REUSEPORT`` or of another
            user, or cannot be bound.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = ReusePortSocket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve_app(app_import: str, *, host: str, port: int, workers: int, access_log: bool) -> None:
    """Serve the ASGI app at ``app_import`` (``"module:attribute"``) with uvicorn until
    SIGTERM/SIGINT: ``python -m app serve`` and the benchmark's ceiling both use it, so the
    two are served alike.

    With more than one worker on Linux, uvicorn's supervisor starts, pings and restarts the
    workers and each worker listens on a ``SO_REUSEPORT`` socket of its own (this module);
    otherwise ``uvicorn.run`` with its own listener. No ``server`` header is sent, logging is
    left to the caller's configuration (``log_config=None``).

    Raises:
        OSError: the port is in use by another program.
    """
    import uvicorn  # noqa: PLC0415 - only serving needs it
    from uvicorn.supervisors import Multiprocess  # noqa: PLC0415

    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "workers": workers,
        "log_config": None,
        "server_header": False,  # no "server: uvicorn" advertised
        "access_log": access_log,
    }
    if workers <= 1 or not reuse_port_supported():
        uvicorn.run(app_import, **options)
        return
    config = uvicorn.Config(app_import, **options)
    sock = reserve_port(host, port)
    logger.info("%d workers, each listening on its own SO_REUSEPORT socket", workers)
    try:
        Multiprocess(config, sockets=[sock]).run()
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
