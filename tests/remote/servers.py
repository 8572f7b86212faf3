"""Servers the remote-storage tests start on 127.0.0.1: moto's S3 API, a Range-honouring HTTP file server, and a
fault proxy between a client and either of them.

``FaultProxy`` forwards TCP connections to an upstream port; ``arm(mode, n)`` makes the next ``n`` connections
fail: 'reset' (closed with RST before any answer), '503' (answers one ``503 SlowDown`` in S3's XML), '403'
(answers one ``403 AccessDenied``, as S3 does to an expired signature), 'stall' (accepts and never answers;
released when the proxy stops). ``connections`` counts what it saw.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

LOOPBACK = "127.0.0.1"


class RangeHandler(BaseHTTPRequestHandler):
    """GET/HEAD of files under the server's ``root``, with single ``bytes=a-b`` ranges (206), as nginx does."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet test output
        pass

    def _file(self) -> Path | None:
        rel = self.path.split("?", 1)[0].lstrip("/")
        path = (self.server.root / rel).resolve()  # type: ignore[attr-defined]
        if self.server.root not in path.parents or not path.is_file():  # type: ignore[attr-defined]
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return None
        return path

    def do_HEAD(self) -> None:
        path = self._file()
        if path is not None:
            self.send_response(200)
            self.send_header("Content-Length", str(path.stat().st_size))
            self.send_header("Accept-Ranges", "bytes")
            self.end_headers()

    def do_GET(self) -> None:
        path = self._file()
        if path is None:
            return
        size = path.stat().st_size
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        self.server.requests.append((self.path, self.headers.get("Range")))  # type: ignore[attr-defined]
        with open(path, "rb") as f:  # only the range is read, as nginx does
            if m:
                a = int(m.group(1))
                b = min(int(m.group(2)) if m.group(2) else size - 1, size - 1)
                if a >= size:
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{size}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                f.seek(a)
                body = f.read(b + 1 - a)
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {a}-{b}/{size}")
            else:
                body = f.read()
                self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(body)


class RangeServer:
    def __init__(self, root: Path) -> None:
        self.httpd = ThreadingHTTPServer((LOOPBACK, 0), RangeHandler)
        self.httpd.daemon_threads = True
        self.httpd.root = Path(root).resolve()  # type: ignore[attr-defined]
        self.httpd.requests = []  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def requests(self) -> list:
        return self.httpd.requests  # type: ignore[attr-defined]

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


SLOWDOWN = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code><Message>Please reduce your request '
            b'rate.</Message><RequestId>1</RequestId></Error>')
DENIED = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code><Message>Request has expired'
          b'</Message><RequestId>1</RequestId></Error>')


class FaultProxy:
    def __init__(self, upstream_port: int) -> None:
        self.upstream = upstream_port
        self.sock = socket.create_server((LOOPBACK, 0))
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.plan: list[str] = []
        self.connections = 0
        self.faults = 0
        self.stop_event = threading.Event()
        self.open: list[socket.socket] = []
        self.bytes_down = 0  # bytes relayed from the server to clients (what a client fetched)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def arm(self, mode: str, n: int) -> None:
        """The next ``n`` connections fail with ``mode``; open keep-alive connections are cut first, so the
        client's next request opens a new connection and meets the fault."""
        assert mode in ("reset", "503", "403", "stall")
        with self.lock:
            self.plan += [mode] * n
            for s in self.open:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
                except OSError:
                    pass
            self.open.clear()

    def disarm(self) -> None:
        with self.lock:
            self.plan.clear()

    def _serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop_event.is_set():
            try:
                conn, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            with self.lock:
                self.connections += 1
                mode = self.plan.pop(0) if self.plan else "pass"
                self.faults += mode != "pass"
                self.open.append(conn)
            threading.Thread(target=self._handle, args=(conn, mode), daemon=True).start()

    def _handle(self, conn: socket.socket, mode: str) -> None:
        try:
            if mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()
                return
            if mode in ("503", "403"):
                _read_request_head(conn)
                status, body = (b"503 Slow Down", SLOWDOWN) if mode == "503" else (b"403 Forbidden", DENIED)
                conn.sendall(b"HTTP/1.1 " + status + b"\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                conn.close()
                return
            if mode == "stall":
                self.stop_event.wait()
                conn.close()
                return
            up = socket.create_connection((LOOPBACK, self.upstream))
            with self.lock:
                self.open.append(up)
            t = threading.Thread(target=_pipe, args=(up, conn, self._count), daemon=True)
            t.start()
            _pipe(conn, up)
            t.join(30)
        except OSError:
            pass

    def _count(self, n: int) -> None:
        with self.lock:
            self.bytes_down += n

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(5)
        self.sock.close()
        with self.lock:
            for s in self.open:
                try:
                    s.close()
                except OSError:
                    pass


def _read_request_head(conn: socket.socket) -> None:
    data = b""
    conn.settimeout(5)
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length:\s*(\d+)", head)
    left = int(m.group(1)) - len(rest) if m else 0
    while left > 0:
        chunk = conn.recv(min(left, 65536))
        if not chunk:
            return
        left -= len(chunk)


def _pipe(src: socket.socket, dst: socket.socket, count=None) -> None:
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
            if count is not None:
                count(len(data))
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def moto_server():
    """moto's S3 server in this process on a free loopback port (as s3fs's own tests run it)."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=LOOPBACK, port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return server, port


def s3_env(port: int) -> dict[str, str]:
    return {"AWS_ENDPOINT_URL": f"http://{LOOPBACK}:{port}", "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
