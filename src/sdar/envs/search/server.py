"""A Search-R1-compatible retrieval server for any ``Retriever`` (``sdar serve-retriever``).

API (the one Search-R1 and verl-agent call):

* ``POST /retrieve`` with
  ``{"queries": [str, ...], "topk": int = 3, "return_scores": bool = false}``
  answers ``{"result": [[{"document": {"id", "contents"}, "score": float}, ...], ...]}`` with
  scores, or ``{"result": [[{"id", "contents"}, ...], ...]}`` without.
* ``GET /health`` answers ``{"status": "ok", "retriever": name, "documents": n}``.

Bad requests get status 400 and ``{"error": "..."}`` saying what is wrong. The standard library's
threading HTTP server is enough here: retrieval itself is the cost, not the HTTP layer. Its
defaults are not: the listen backlog is raised from Python's 5 to ``LISTEN_BACKLOG`` (a training
step's burst of parallel searches otherwise gets connection resets), a client that stalls
mid-request is dropped after ``client_timeout`` seconds, and a client that resets its connection is
logged as one line instead of a traceback.
"""

from __future__ import annotations

import json
import logging
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sdar.envs.search.retrievers import Retriever

log = logging.getLogger(__name__)

MAX_QUERIES_PER_REQUEST = 4096
MAX_TOPK = 100
MAX_BODY_BYTES = 16 * 1024 * 1024
LISTEN_BACKLOG = 1024
"""Connections the kernel queues before accepting (capped by ``net.core.somaxconn``)."""
CLIENT_TIMEOUT_S = 60.0


class _Server(ThreadingHTTPServer):
    request_queue_size = LISTEN_BACKLOG
    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        """A client that went away is the client's business: one line, not a traceback."""
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError, socket.timeout)):
            log.info("client %s:%s: %s (%s)", *client_address[:2],
                     "connection reset" if isinstance(err, ConnectionResetError) else "connection lost",
                     type(err).__name__)
            return
        super().handle_error(request, client_address)


class RetrievalServer:
    """Serves ``retriever`` on ``host:port`` (port 0 picks a free port; see ``port``).

    Use ``start()`` to serve from a background thread (tests, notebooks) or ``serve_forever()`` to
    block (the CLI); ``close()`` stops it. Also a context manager that starts and closes.
    """

    def __init__(self, retriever: Retriever, host: str = "127.0.0.1", port: int = 8000,
                 client_timeout: float = CLIENT_TIMEOUT_S):
        if client_timeout <= 0:
            raise ValueError(f"client_timeout must be positive seconds, got {client_timeout}")
        self.retriever = retriever
        # `timeout` bounds every read from and write to a client's socket
        handler = type("RetrievalHandler", (_Handler,), {"retriever": retriever, "timeout": client_timeout})
        self.httpd = _Server((host, port), handler)
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return self.httpd.server_address[0]

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    @property
    def url(self) -> str:
        """The retrieve endpoint, e.g. ``http://127.0.0.1:8000/retrieve``."""
        return f"http://{self.host}:{self.port}/retrieve"

    def start(self) -> RetrievalServer:
        # a short poll interval makes close() return quickly
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, args=(0.1,), name="retrieval-server", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self.httpd.serve_forever()

    def close(self) -> None:
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.httpd.server_close()

    def __enter__(self) -> RetrievalServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _BadRequest(ValueError):
    pass


def parse_request(body: bytes) -> tuple[list[str], int, bool]:
    """Validate a ``/retrieve`` body: ``(queries, topk, return_scores)``, or ``ValueError``."""
    try:
        request = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise _BadRequest(f"body is not JSON: {err}") from None
    if not isinstance(request, dict):
        raise _BadRequest("body must be a JSON object with a 'queries' list")
    queries = request.get("queries")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise _BadRequest("'queries' must be a list of strings")
    if len(queries) > MAX_QUERIES_PER_REQUEST:
        raise _BadRequest(
            f"at most {MAX_QUERIES_PER_REQUEST} queries per request, got {len(queries)}"
        )
    topk = request.get("topk", 3)
    if isinstance(topk, bool) or not isinstance(topk, int) or not 1 <= topk <= MAX_TOPK:
        raise _BadRequest(f"'topk' must be an integer in [1, {MAX_TOPK}], got {topk!r}")
    return_scores = request.get("return_scores", False)
    if not isinstance(return_scores, bool):
        raise _BadRequest(f"'return_scores' must be true or false, got {return_scores!r}")
    return queries, topk, return_scores


class _Handler(BaseHTTPRequestHandler):
    retriever: Retriever
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:  # route access logs to logging, not stderr
        log.debug("%s " + fmt, self.address_string(), *args)

    def _send(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/health":
            self._send(
                200,
                {
                    "status": "ok",
                    "retriever": self.retriever.name,
                    "documents": len(getattr(self.retriever, "documents", [])),
                },
            )
        else:
            self._send(
                404, {"error": f"unknown path {self.path!r}; use POST /retrieve or GET /health"}
            )

    def do_POST(self) -> None:
        if self.path.rstrip("/") != "/retrieve":
            self._send(404, {"error": f"unknown path {self.path!r}; use POST /retrieve"})
            return
        try:
            length = int(self.headers.get("Content-Length", "0"))
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            self._send(
                400, {"error": f"need a JSON body of 1..{MAX_BODY_BYTES} bytes with Content-Length"}
            )
            return
        try:
            queries, topk, return_scores = parse_request(self.rfile.read(length))
        except _BadRequest as err:
            self._send(400, {"error": str(err)})
            return
        try:
            results = self.retriever.retrieve(queries, topk)
        except Exception as err:  # report, keep serving
            log.exception("retrieval failed")
            self._send(500, {"error": f"retrieval failed: {type(err).__name__}: {err}"})
            return
        if return_scores:
            payload = [
                [{"document": p.document.to_json(), "score": p.score} for p in row]
                for row in results
            ]
        else:
            payload = [[p.document.to_json() for p in row] for row in results]
        self._send(200, {"result": payload})


__all__ = ["MAX_QUERIES_PER_REQUEST", "MAX_TOPK", "RetrievalServer", "parse_request"]
