"""`mops results serve`: a store's objects over HTTP, read-only, for readers who cannot reach the store.

The chart runs it beside the results volume, so `mops results` on a laptop reads a PersistentVolumeClaim
through the Kubernetes API server's service proxy (the user's own credentials and RBAC; nothing
else exposes the volume). Nothing can be written through it.

    GET /health              200 "ok" while the process runs (the pod's probes)
    GET /v1/store            {"url", "ok", "error"}: can the server list its store right now?
    GET /v1/list/<prefix>    [{"key", "size"}, ...] under <prefix> ("" for everything)
    GET /v1/get/<key>        the object's bytes (404 when there is none)
"""

from __future__ import annotations

import json
import logging
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from modelops.results.blobs import BlobNotFound, Blobs
from modelops.results.store import JOBS
from modelops.results.url import StoreError

logger = logging.getLogger("modelops.results.server")


class _Handler(BaseHTTPRequestHandler):
    server: ResultsServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = unquote(urlsplit(self.path).path)
        try:
            if path == "/health":
                self._send(HTTPStatus.OK, b"ok\n", "text/plain")
            elif path == "/v1/store":
                self._json(self.server.store_status())
            elif path.startswith("/v1/list/"):
                prefix = path[len("/v1/list/"):].strip("/")
                self._json([{"key": b.key, "size": b.size} for b in self.server.blobs.list(prefix)])
            elif path.startswith("/v1/get/"):
                self._send(HTTPStatus.OK, self.server.blobs.get(path[len("/v1/get/"):]), "application/octet-stream")
            else:
                self._send(HTTPStatus.NOT_FOUND, b"no such path\n", "text/plain")
        except BlobNotFound as exc:
            self._send(HTTPStatus.NOT_FOUND, f"{exc}\n".encode(), "text/plain")
        except StoreError as exc:
            status = HTTPStatus.BAD_REQUEST if "store key" in str(exc) else HTTPStatus.SERVICE_UNAVAILABLE
            self._send(status, f"{exc}\n".encode(), "text/plain")

    def _json(self, value) -> None:
        self._send(HTTPStatus.OK, json.dumps(value).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        logger.debug("%s %s", self.address_string(), format % args)


class ResultsServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, blobs: Blobs, url: str, host: str, port: int):
        self.blobs, self.url = blobs, url
        super().__init__((host, port), _Handler)

    def store_status(self) -> dict:
        try:
            self.blobs.list(JOBS)
        except StoreError as exc:
            return {"url": self.url, "ok": False, "error": str(exc)}
        return {"url": self.url, "ok": True, "error": None}

    def start_background(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, name="results-server", daemon=True)
        thread.start()
        return thread
