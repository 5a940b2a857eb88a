"""A local HTTP file server with scripted faults, for testing downloads without the internet.

Serves in-memory files on 127.0.0.1 from a background thread and records every request (method, path, headers,
status, body bytes sent). Each file can drop the connection after N bytes, stall, ignore ``Range``, answer a
fixed status (always, or for the first N requests, with the file's extra headers such as ``Retry-After``),
or be throttled. Used as a context manager; stopping it also ends stalled handlers.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class ServedFile:
    """One file and the faults to inject while serving it."""

    data: bytes
    status: int | None = None  # answer every GET/HEAD with this status and no body...
    status_times: int | None = None  # ...or only the first this many GETs, then serve the file
    drop_after: int | None = None  # close the connection after this many body bytes of a response...
    drop_times: int = 1  # ...for this many responses
    stall_after: int | None = None  # stop sending (but keep the connection) after this many body bytes
    ignore_range: bool = False  # always answer 200 with the whole body
    throttle_s: float = 0.0  # pause between chunks
    chunk: int = 64 * 1024
    etag: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class RequestRecord:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0
    body_bytes: int = 0
    time: float = field(default_factory=time.monotonic)


class FaultyServer:
    """``with FaultyServer() as srv: srv.files['/a.bin'] = ServedFile(b'...'); srv.url('/a.bin')``."""

    def __init__(self) -> None:
        self.files: dict[str, ServedFile] = {}
        self.requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def url(self, path: str) -> str:
        assert self._httpd is not None, "server not started"
        return f"http://127.0.0.1:{self._httpd.server_address[1]}{path}"

    def requests_for(self, path: str, method: str = "GET") -> list[RequestRecord]:
        with self._lock:
            return [r for r in self.requests if r.path == path and r.method == method]

    def __enter__(self) -> FaultyServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                """Keep the test output quiet."""

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _serve(self, body: bool) -> None:
                path = self.path.split("?", 1)[0]
                record = RequestRecord(self.command, path, {k: v for k, v in self.headers.items()})
                with server._lock:
                    server.requests.append(record)
                    spec = server.files.get(path)
                    code = None if spec is None else spec.status
                    if spec is not None and spec.status is not None and spec.status_times is not None:
                        if spec.status_times > 0:
                            spec.status_times -= 1
                        else:
                            code = None
                    drop = None
                    if spec is not None and body and spec.drop_after is not None and spec.drop_times > 0:
                        spec.drop_times -= 1
                        drop = spec.drop_after
                if spec is None or code is not None:
                    code = 404 if spec is None else code
                    record.status = code
                    self.send_response(code)
                    self.send_header("Content-Length", "0")
                    if spec is not None:
                        for key, value in spec.headers.items():
                            self.send_header(key, value)
                    self.end_headers()
                    return
                data, start = spec.data, 0
                rng = self.headers.get("Range")
                match = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if_range = self.headers.get("If-Range")
                range_ok = match is not None and not spec.ignore_range
                if range_ok and if_range is not None and spec.etag is not None and if_range != spec.etag:
                    range_ok = False
                if range_ok:
                    start = int(match.group(1))  # type: ignore[union-attr]
                    if start >= len(data):
                        record.status = 416
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    record.status = 206
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    record.status = 200
                    self.send_response(200)
                if not spec.ignore_range:
                    self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Content-Type", "application/octet-stream")
                if spec.etag is not None:
                    self.send_header("ETag", spec.etag)
                for key, value in spec.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if not body:
                    return
                sent, pos = 0, start
                try:
                    while pos < len(data):
                        n = min(spec.chunk, len(data) - pos)
                        if drop is not None:
                            n = min(n, drop - sent)
                        if spec.stall_after is not None:
                            n = min(n, max(spec.stall_after - sent, 0))
                        if n <= 0:
                            if drop is not None and sent >= drop:
                                break
                            server._stop.wait(3600)  # stall until the server stops
                            break
                        with server._lock:  # counted before the write so the client cannot outrun it
                            record.body_bytes = sent + n
                        self.wfile.write(data[pos : pos + n])
                        self.wfile.flush()
                        sent += n
                        pos += n
                        if spec.throttle_s:
                            time.sleep(spec.throttle_s)
                except (BrokenPipeError, ConnectionResetError):  # the client hung up: end this connection
                    self.close_connection = True
                if drop is not None or pos < len(data):
                    self.close_connection = True

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._httpd is not None and self._thread is not None
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)
