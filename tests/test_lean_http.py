"""The load generator's lean HTTP client (loadtest.lean_http) against the test service: answers
read whole, errors read as answers, one kept-alive connection reused, a connection the peer
closed replaced; a chunked answer from a loopback server of this test's own."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from loadtest.lean_http import LeanHttpClient

MODEL = "all-MiniLM-L6-v2"
JSON = {"content-type": "application/json"}


def body(texts) -> bytes:
    return orjson.dumps({"model": MODEL, "input": texts})


@pytest.mark.integration
def test_answers_and_errors_over_one_kept_alive_connection(service):
    async def go():
        client = LeanHttpClient(service.http_url, JSON, connections=4)
        ok = await client.post("/v1/embeddings", body(["a lean client", "two texts"]))
        bad = await client.post("/v1/embeddings", body([]))
        again = await client.post("/v1/embeddings", body(["after the error"]))
        kept = len(client.idle)
        await client.close()
        return ok, bad, again, kept

    ok, bad, again, kept = asyncio.run(go())
    assert ok.status == 200 and int(ok.headers["content-length"]) == len(ok.body)
    doc = orjson.loads(ok.body)
    assert [d["index"] for d in doc["data"]] == [0, 1] and len(doc["data"][0]["embedding"]) == 384
    assert "x-inference-time" in ok.headers  # header names read, lower-cased
    assert bad.status == 400 and orjson.loads(bad.body)["error"]["param"] == "input", bad.body
    assert again.status == 200 and len(orjson.loads(again.body)["data"]) == 1
    assert kept == 1  # three requests in turn: one connection, back in the pool each time
    assert ok.headers_s > 0 and ok.body_s >= 0


@pytest.mark.integration
def test_a_kept_alive_connection_closed_under_it_is_replaced(service):
    async def go():
        client = LeanHttpClient(service.http_url, JSON, connections=1)
        first = await client.post("/v1/embeddings", body(["first"]))
        dead = client.idle[0]
        dead.writer.transport.abort()  # the connection is gone when the next request takes it
        second = await client.post("/v1/embeddings", body(["second"]))
        fresh = client.idle[0]
        await client.close()
        return first, second, dead is not fresh

    first, second, replaced = asyncio.run(go())
    assert first.status == second.status == 200
    assert replaced


def test_a_chunked_answer_is_read_whole():
    async def handle(reader, writer):
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n"
                     b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def go():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        client = LeanHttpClient(f"http://127.0.0.1:{port}", JSON, connections=1)
        answer = await client.post("/x", b"{}")
        await client.close()
        server.close()
        await server.wait_closed()
        return answer

    answer = asyncio.run(go())
    assert (answer.status, answer.body, answer.headers["content-type"]) == (200, b"hello, world", "text/plain")


def test_only_plain_http_is_spoken():
    with pytest.raises(ValueError, match="plain http"):
        LeanHttpClient("https://127.0.0.1:8443", JSON, connections=1)
