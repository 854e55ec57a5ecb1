"""Running the app under uvicorn, in the foreground or on a background thread."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn

from modelyard.serving.app import create_app
from modelyard.serving.grpc_v2 import GrpcListen
from modelyard.yard import Yard


def uvicorn_config(yard: Yard, host: str, port: int, log_level: str = "warning",
                   grpc_port: int = 0) -> uvicorn.Config:
    """``grpc_port``: serve OIP v2 over gRPC there too, on the same host (0: no gRPC)."""
    app = create_app(yard, grpc=GrpcListen(host, grpc_port))
    return uvicorn.Config(app, host=host, port=port, log_level=log_level,
                          loop="auto", http="auto", access_log=False,
                          timeout_graceful_shutdown=5)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class BackgroundServer:
    """The real server on a thread: for the demo and for tests. With ``grpc``, OIP v2 over
    gRPC on a free port as well (``grpc_target``)."""

    def __init__(self, yard: Yard, host: str = "127.0.0.1", port: int = 0,
                 grpc: bool | int = False) -> None:
        """``grpc``: True for a free port, or the port number."""
        self.host = host
        self.port = port or free_port(host)
        self.grpc_port = (free_port(host) if grpc is True else int(grpc)) if grpc else 0
        self.server = uvicorn.Server(uvicorn_config(yard, self.host, self.port,
                                                    grpc_port=self.grpc_port))
        self.thread = threading.Thread(target=self.server.run, name="modelyard-server",
                                       daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the gRPC server (as tritonclient.grpc and grpc channels take it)."""
        if not self.grpc_port:
            raise RuntimeError("this server has no gRPC; pass grpc=True")
        return f"{self.host}:{self.grpc_port}"

    def start(self, timeout_s: float = 60.0) -> BackgroundServer:
        self.thread.start()
        deadline = time.monotonic() + timeout_s
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server stopped during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError("the server did not start in time")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
