"""The retrieval server and client under faults (issue: nothing lost, nothing clobbered).

A burst of concurrent connections, a client that stalls, a client that resets, and a Search
environment pointed at a server that is not there: each is real sockets on loopback.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time

import pytest
from helpers import free_port

from sdar.envs.search.retrievers import BM25Retriever, Document, HTTPRetriever, RetrieverError
from sdar.envs.search.server import RetrievalServer

CORPUS = [Document(str(i), f'"Title {i}"\nPassage number {i} about topic {i % 3}.') for i in range(12)]


@pytest.fixture(scope="module")
def bm25():
    return BM25Retriever(CORPUS)


def _burst(url: str, clients: int) -> list[str]:
    """``clients`` threads connect at once, each sends one /retrieve; returns the failures."""
    start = threading.Barrier(clients)
    failures: list[str] = []

    def one(i: int) -> None:
        start.wait()
        try:
            HTTPRetriever(url, timeout=30, retries=0).retrieve([f"topic {i % 3}"], topk=1)
        except Exception as err:  # noqa: BLE001 - every failure is counted
            failures.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return failures


def test_a_burst_of_200_connections_is_served_without_resets(bm25):
    with RetrievalServer(bm25, host="127.0.0.1", port=0) as server:
        failures = _burst(server.url, 200)
    assert failures == [], f"{len(failures)} of 200 failed, e.g. {failures[:3]}"


def test_a_stalled_client_is_timed_out_and_the_server_keeps_serving(bm25):
    with RetrievalServer(bm25, host="127.0.0.1", port=0, client_timeout=0.5) as server:
        stalled = socket.create_connection((server.host, server.port))
        stalled.sendall(b"POST /retrieve HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"queries\"")  # never finishes
        stalled.settimeout(10)
        t0 = time.monotonic()
        assert stalled.recv(1024) == b""  # the server gave up on it and closed the connection
        assert time.monotonic() - t0 < 5
        stalled.close()
        assert HTTPRetriever(server.url, timeout=5, retries=0).retrieve(["topic 1"], topk=1)


def test_a_client_reset_is_logged_as_one_line(bm25, caplog, capfd):
    with RetrievalServer(bm25, host="127.0.0.1", port=0) as server, caplog.at_level(logging.INFO):
        client = socket.create_connection((server.host, server.port))
        client.sendall(b"POST /retrieve HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{\"queries\": [")
        time.sleep(0.2)
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        client.close()  # linger 0: the kernel sends RST, the server's read fails with a reset
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and "reset" not in caplog.text:
            time.sleep(0.05)
        assert HTTPRetriever(server.url, timeout=5, retries=0).retrieve(["topic 1"], topk=1)
    resets = [r for r in caplog.records if "reset" in r.getMessage()]
    assert len(resets) == 1 and "\n" not in resets[0].getMessage() and resets[0].exc_info is None
    assert "Traceback" not in capfd.readouterr().err


def test_the_client_check_fails_fast_naming_the_url(bm25):
    url = f"http://127.0.0.1:{free_port()}/retrieve"  # closed again: nothing listens there
    t0 = time.monotonic()
    with pytest.raises(RetrieverError, match=f"retrieval server at {url} did not answer"):
        HTTPRetriever(url, timeout=2, retries=2, backoff=5.0).check()
    assert time.monotonic() - t0 < 2  # one request, no retries and back-off
    with RetrievalServer(bm25, host="127.0.0.1", port=0) as server:
        HTTPRetriever(server.url, timeout=5).check()
