"""`python -m recsys_fewshot.serve run_dir=PATH [host=127.0.0.1] [port=8000] [threads=N] ...`

A trained run over HTTP, answering JSON (docs/usage/recommend.md, "Serving over HTTP"):

  GET  /health                               the run: folder, task, head, users, items
  GET  /recommend?user_id=ID&k=20            top-k of a user of the run: {user_id, items: [{item_id, score, rank}]}
  POST /recommend {"user_id": ID, "k": 20}   the same; {"history": [{"item_id": ID, "rating": 4}], "k": 20}
                                             ranks for a history given with the request (a new user)
  POST /score {"pairs": [[user, item], ...]} the model's score of each pair
  GET  /similar?item_id=ID&k=10              the most similar items by cosine of the item vectors

port=0 takes a free port (the line printed at start names it). threads: torch's CPU threads (default 1: a
request ranks one user). Other key=value arguments override the saved config, as for recommend (dataset.root=...,
trainer.cpu=true). Needs the serve extra: pip install -e '.[serve]'.
"""

from __future__ import annotations

import signal
import socket
import sys
import threading
from typing import Any, Optional

import numpy as np
import pandas as pd

from recsys_fewshot.posted import check_new_users
from recsys_fewshot.serving_io import command_args
from recsys_fewshot.serving import VECTOR_KINDS, ServeError, check_k

OWN_KEYS = ("run_dir", "host", "port", "threads")
ENDPOINTS = {"GET": ("/health", "/recommend", "/similar"), "POST": ("/recommend", "/score")}
INSTALL = "pip install -e '.[serve]' (in a checkout) or pip install 'recsys-fewshot[serve]'"
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RequestError(Exception):
    """A request refused with an HTTP status and a one-line message naming the field or id."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def serves_history(trained) -> bool:
    """Whether the run's head ranks for a history posted with the request (`posted.check_new_users`)."""
    try:
        check_new_users(trained)
    except ServeError:
        return False
    return True


def check_servable(trained) -> None:
    """The server's main answer is a top-k list: a head that scores pairs only is refused at start, with the
    message `recommend` gives."""
    if not trained.capabilities.full_ranking:
        raise ServeError(f"head {trained.head} scores (user, item) pairs only (one language-model call per pair): "
                         "score chosen pairs with score(), or rank with a head that scores every item")


# --- request fields --------------------------------------------------------------------------
def field_k(value: Any, default: int) -> int:
    if value is None:
        return default
    if isinstance(value, bool):  # JSON true would pass int()
        raise RequestError(422, f"k={value}: expected a whole number >= 1")
    try:
        return check_k(value)
    except ServeError as err:
        raise RequestError(422, str(err)) from None


def field_id(value: Any, name: str) -> str:
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RequestError(422, f"{name}: required (one id)")
    if isinstance(value, (dict, list, bool, float)):
        raise RequestError(422, f"{name}={value!r}: expected one id (a string or a whole number)")
    return str(value).strip()


def field_exclude(value: Any):
    if value is None:
        return True
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in ("true", "1", "yes", "false", "0", "no", "all"):
        return "all" if lowered == "all" else lowered in ("true", "1", "yes")
    raise RequestError(422, f"exclude_known={value}: expected true, false or all")


def known(rows: dict[str, int], ids: list[str], kind: str) -> list[int]:
    """The model rows of `ids` (`rows`: raw id -> row); 404 naming the ids of `kind` the run's data do not have."""
    missing = [i for i in ids if i not in rows]
    if missing:
        listed = ", ".join(repr(m) for m in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise RequestError(404, f"{kind} id{'s' if len(missing) > 1 else ''} {listed} not in the run's data")
    return [rows[i] for i in ids]


def ranked(frame: pd.DataFrame, id_column: str) -> list[dict]:
    """Rows as JSON objects; float32 scores become the float64 of the same value (exact round trip)."""
    return [{"item_id": i, "score": s, "rank": r} for i, s, r in
            zip(frame[id_column].tolist(), frame["score"].to_numpy(np.float64).tolist(), frame["rank"].tolist())]


def history_frame(rows: Any, user: str) -> pd.DataFrame:
    """The posted history as `recommend(history=...)` takes it: user_id, item_id[, rating]."""
    if not isinstance(rows, list) or not rows:
        raise RequestError(422, "history: expected a non-empty list of {\"item_id\": ..., \"rating\": ...}")
    items, ratings = [], []
    for n, row in enumerate(rows):
        if not isinstance(row, dict) or row.get("item_id") in (None, ""):
            raise RequestError(422, f"history[{n}]: no item_id")
        items.append(field_id(row["item_id"], f"history[{n}].item_id"))
        rating = row.get("rating")
        if rating is not None and (isinstance(rating, bool) or not isinstance(rating, (int, float))):
            raise RequestError(422, f"history[{n}].rating={rating!r}: expected a number")
        ratings.append(rating)
    frame = pd.DataFrame({"user_id": user, "item_id": items})
    given = [r is not None for r in ratings]
    if any(given):
        if not all(given):
            raise RequestError(422, f"history[{given.index(False)}]: no rating (give one on every row or on none)")
        frame["rating"] = np.asarray(ratings, np.float32)
    return frame


# --- the service -----------------------------------------------------------------------------
class Service:
    """The loaded run and the answers, HTTP aside. One model: calls into it take a lock (the user tower's
    history is set on the model for the length of a call), and run in worker threads so the event loop keeps
    answering (`/health`, request parsing) while one is ranking."""

    def __init__(self, trained):
        self.trained = trained
        self.lock = threading.Lock()
        self.history = serves_history(trained)
        # raw id -> model row, looked up per request in a dict (a pandas Index lookup costs more than the ranking)
        self.users = {u: n for n, u in enumerate(trained.user_ids)}
        self.items = {i: n for n, i in enumerate(trained.item_ids)}

    def health(self) -> dict:
        t = self.trained
        return {"status": "ok", "run_dir": str(t.run_dir.resolve()), "task": t.task, "head": t.head,
                "users": len(t.user_ids), "items": len(t.item_ids), "history": self.history}

    def recommend(self, body: dict) -> dict:
        k = field_k(body.get("k"), 20)
        exclude = field_exclude(body.get("exclude_known"))
        if body.get("history") is not None:
            return self.recommend_history(body, k)
        user = field_id(body.get("user_id"), "user_id")
        rows = np.asarray(known(self.users, [user], "user"), np.int64)
        with self.lock:  # `recommend([user], ...)`'s own steps, the id already resolved
            frames = list(self.trained.iter_recommendations(rows, k, exclude))  # to the end: the history is unset
        frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
        return {"user_id": user, "items": ranked(frame, "item_id")}

    def recommend_history(self, body: dict, k: int) -> dict:
        user = field_id(body["user_id"], "user_id") if body.get("user_id") is not None else "new"
        frame = history_frame(body["history"], user)
        known(self.items, list(dict.fromkeys(frame["item_id"])), "item")
        with self.lock:
            out = self.trained.recommend(history=frame, k=k)
        return {"user_id": user, "items": ranked(out, "item_id")}

    def score(self, body: dict) -> dict:
        pairs = body.get("pairs")
        if not isinstance(pairs, list) or not pairs:
            raise RequestError(422, "pairs: expected a non-empty list of [user_id, item_id]")
        for n, pair in enumerate(pairs):
            if not isinstance(pair, list) or len(pair) != 2:
                raise RequestError(422, f"pairs[{n}]: expected [user_id, item_id]")
        frame = pd.DataFrame({"user_id": [field_id(u, f"pairs[{n}][0]") for n, (u, _) in enumerate(pairs)],
                              "item_id": [field_id(i, f"pairs[{n}][1]") for n, (_, i) in enumerate(pairs)]})
        known(self.users, list(dict.fromkeys(frame["user_id"])), "user")
        known(self.items, list(dict.fromkeys(frame["item_id"])), "item")
        with self.lock:
            out = self.trained.score(frame, unknown="error")
        return {"scores": [{"user_id": u, "item_id": i, "score": s} for u, i, s in
                           zip(out["user_id"].tolist(), out["item_id"].tolist(),
                               out["score"].to_numpy(np.float64).tolist())]}

    def similar(self, body: dict) -> dict:
        item = field_id(body.get("item_id"), "item_id")
        k = field_k(body.get("k"), 10)
        vectors = body.get("vectors")
        if vectors is not None and vectors not in VECTOR_KINDS:
            raise RequestError(422, f"vectors={vectors}: expected model or text")
        known(self.items, [item], "item")
        with self.lock:
            frame = self.trained.similar_items([item], k=k, vectors=vectors, unknown="error")
        return {"item_id": item, "items": ranked(frame, "similar_id")}


def create_app(trained):
    """The Starlette application serving `trained` (a `TrainedRun`)."""
    import json

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    check_servable(trained)
    service = Service(trained)

    async def answer(method, body: dict) -> JSONResponse:
        try:
            return JSONResponse(await run_in_threadpool(method, body))
        except RequestError as err:
            return JSONResponse({"error": err.message}, status_code=err.status)
        except ServeError as err:  # what the run itself refuses (e.g. vectors=model on a head without them)
            return JSONResponse({"error": str(err)}, status_code=400)

    async def read_json(request) -> dict:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise HTTPException(400, f"body: not JSON ({getattr(err, 'msg', err)})") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "body: expected a JSON object")
        return body

    async def health(request):
        return JSONResponse(service.health())

    async def recommend(request):
        body = dict(request.query_params) if request.method == "GET" else await read_json(request)
        return await answer(service.recommend, body)

    async def score(request):
        return await answer(service.score, await read_json(request))

    async def similar(request):
        return await answer(service.similar, dict(request.query_params))

    async def error(request, exc: HTTPException):  # unknown paths, wrong methods, unreadable bodies: JSON too
        message = exc.detail
        if exc.status_code in (404, 405) and request.url.path not in ENDPOINTS.get(request.method, ()):
            offered = ", ".join(f"{m} {p}" for m, paths in ENDPOINTS.items() for p in paths)
            message = f"{request.method} {request.url.path}: {exc.detail.lower()} (offered: {offered})"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)

    async def failure(request, exc: Exception):  # a bug or a model that failed: JSON, and uvicorn logs the traceback
        return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)

    routes = [Route("/health", health, methods=["GET"]), Route("/recommend", recommend, methods=["GET", "POST"]),
              Route("/score", score, methods=["POST"]), Route("/similar", similar, methods=["GET"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: error, Exception: failure})


# --- command line ----------------------------------------------------------------------------
def listen(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn. Bound here rather than by uvicorn so that a refused address is one line and
    exit status 1, and port=0's free port is known before the start line is printed."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as err:
        raise ServeError(f"host={host}: {err.strerror}") from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as err:
        sock.close()
        raise ServeError(f"host={host} port={port}: {err.strerror}") from None
    return sock


def check_args(own: dict[str, str]) -> tuple[str, int, int]:
    host = own.get("host", "127.0.0.1").strip()
    if not host:
        raise ServeError("host=: expected a host name or address")
    port = own.get("port", "8000").strip()
    if not port.isdigit() or int(port) > 65535:
        raise ServeError(f"port={port}: expected a whole number from 0 to 65535")
    # one thread by default: a request ranks one user, too little work to split, and idle OpenMP threads spinning
    # on a busy machine made single-user requests 1.2x (ML-100K) to 3x (50k items) slower with two
    threads = own.get("threads", "1").strip()
    if not threads.isdigit() or int(threads) < 1:
        raise ServeError(f"threads={threads}: expected a whole number >= 1")
    return host, int(port), int(threads)


def run(own: dict[str, str], overrides: list[str]) -> int:
    host, port, threads = check_args(own)
    try:
        import starlette  # noqa: F401
        import uvicorn
    except ImportError:
        raise ServeError(f"serving over HTTP needs the serve extra: {INSTALL}") from None
    import torch

    from recsys_fewshot.serving import load_run

    torch.set_num_threads(threads)
    trained = load_run(own["run_dir"], overrides)
    app = create_app(trained)
    sock = listen(host, port)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"serve: {trained.run_dir} ({trained.head}, task={trained.task}, {len(trained.user_ids)} users, "
          f"{len(trained.item_ids)} items) on http://{shown}:{bound}", file=sys.stderr, flush=True)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    # uvicorn stops gracefully on SIGINT / SIGTERM, then raises the signal again for the handler it found:
    # this one notes it, so Ctrl-C ends with a line rather than a KeyboardInterrupt traceback
    stopped: list[int] = []
    previous = {sig: signal.signal(sig, lambda sig, frame: stopped.append(sig)) for sig in STOP_SIGNALS}
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"serve: stopped{f' ({signal.Signals(stopped[-1]).name})' if stopped else ''}", file=sys.stderr)
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    parsed = command_args(argv, __doc__, OWN_KEYS)
    if isinstance(parsed, int):
        return parsed
    own, overrides = parsed
    try:
        return run(own, overrides)
    except KeyboardInterrupt:  # Ctrl-C while loading
        print("serve: interrupted", file=sys.stderr)
        return 130
    except (ServeError, OSError, ValueError, KeyError) as err:  # errors name the file, key or id: no traceback
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"serve: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
