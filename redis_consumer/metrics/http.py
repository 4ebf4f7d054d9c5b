"""A tiny threaded HTTP server for /metrics and health probes (worker and exporter share it).

prometheus_client's own server only serves /metrics; probes need their own status codes, so
routes map a path to a callable returning (status, content type, body).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

Route = Callable[[], "tuple[int, str, bytes]"]
TEXT = "text/plain; charset=utf-8"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _handler(routes: dict[str, Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "redis-consumer"

        def do_GET(self) -> None:
            route = routes.get(self.path.split("?", 1)[0])
            if route is None:
                status, ctype, body = 404, TEXT, b"not found\n"
            else:
                try:
                    status, ctype, body = route()
                except Exception:
                    log.exception("metrics route %s failed", self.path)
                    status, ctype, body = 500, TEXT, b"internal error\n"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

        def log_message(self, format: str, *args) -> None:
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


class HTTPServer:
    """Serve `routes` on `host:port` from a daemon thread; `.port` is the bound port (0 picks one)."""

    def __init__(self, routes: dict[str, Route], port: int, host: str = "") -> None:
        self._server = _Server((host, port), _handler(routes))
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, name=f"metrics-http-{self.port}", daemon=True)

    def start(self) -> HTTPServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def close(self) -> None:
        """Release the socket after `serve_forever` returned."""
        self._server.server_close()

    def serve_forever(self) -> None:
        """Serve on the calling thread (the exporter's main loop)."""
        self._server.serve_forever()
