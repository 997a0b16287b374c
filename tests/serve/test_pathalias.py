"""PathAliasMiddleware: no server folder in an answer, the alias read back on the way in."""

from __future__ import annotations

import json
import os

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from cmce.serve.pathalias import PathAliasMiddleware, new_alias


@pytest.fixture()
def served(tmp_path):
    """A small Starlette app that names files of ``tmp_path/cache`` as Gradio does, behind the middleware."""
    cache = tmp_path / "cache"
    (cache / "abc").mkdir(parents=True)
    photo = cache / "abc" / "photo.json"  # a served file whose bytes name the folder: never rewritten
    photo.write_text(json.dumps({"path": str(photo)}))
    seen: dict = {}

    async def answer(request: Request):
        return JSONResponse({"path": str(photo), "url": f"http://x/gradio_api/file={photo}"})

    async def stream(request: Request):
        text = f'data: {{"path": "{photo}"}}\n\n'
        cut = text.index(str(cache)) + 5  # the folder's name split between two chunks

        async def chunks():
            yield text[:cut]
            yield text[cut:]
        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def echo(request: Request):
        seen["body"], seen["length"] = await request.body(), request.headers.get("content-length")
        return PlainTextResponse(json.loads(seen["body"])["path"])

    async def file(request: Request):
        path = request.path_params["path"]
        seen["file"] = path
        if not os.path.isfile(path):
            return JSONResponse({"detail": f"File not found: {path}."}, status_code=404)
        return FileResponse(path, media_type="application/json")

    app = Starlette(routes=[Route("/answer", answer), Route("/stream", stream), Route("/echo", echo, methods=["POST"]),
                            Route("/gradio_api/file={path:path}", file)])
    alias = new_alias()
    client = TestClient(PathAliasMiddleware(app, aliases={str(cache): alias}))
    return client, alias, cache, photo, seen


def test_answers_name_the_alias_and_their_length_is_right(served):
    client, alias, cache, photo, _ = served
    response = client.get("/answer")
    assert str(cache) not in response.text and int(response.headers["content-length"]) == len(response.content)
    assert response.json() == {"path": f"{alias}/abc/photo.json", "url": f"http://x/gradio_api/file={alias}/abc/photo.json"}
    streamed = client.get("/stream").text
    assert streamed == f'data: {{"path": "{alias}/abc/photo.json"}}\n\n'


def test_the_alias_is_read_back_in_file_urls_and_bodies(served):
    client, alias, cache, photo, seen = served
    response = client.get(f"/gradio_api/file={alias}/abc/photo.json")
    assert response.status_code == 200 and seen["file"] == str(photo)
    assert response.json() == {"path": str(photo)}  # a file's own bytes pass untouched
    body = json.dumps({"path": f"{alias}/abc/photo.json"}).encode()
    echoed = client.post("/echo", content=body, headers={"content-type": "application/json"})
    assert json.loads(seen["body"]) == {"path": str(photo)} and int(seen["length"]) == len(seen["body"])
    assert echoed.text == f"{alias}/abc/photo.json"  # and the answer names the alias again
    missing = client.get(f"/gradio_api/file={alias}/abc/missing.png")
    assert missing.status_code == 404 and seen["file"] == str(cache / "abc" / "missing.png")
    assert missing.json() == {"detail": f"File not found: {alias}/abc/missing.png."}  # a refusal names no folder


def test_an_alias_must_be_plain():
    with pytest.raises(ValueError, match="letters, digits"):
        PathAliasMiddleware(None, aliases={"/tmp/x": "a/b"})
    with pytest.raises(ValueError, match="cannot alias"):
        PathAliasMiddleware(None, aliases={"/": "root"})
