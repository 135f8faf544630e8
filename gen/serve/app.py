"""The review UI as a Starlette app: server-rendered pages (Jinja2) over one Store, plus the token guard.

Reads go through gen.serve.jobs and gen.serve.records (read-only transactions); the one write is a review mark
(gen.store.reviews.add_review, a single INSERT).
"""
from __future__ import annotations

import hmac
from urllib.parse import parse_qs, urlencode, urlsplit

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from gen.errors import GenError
from gen.serve import pages
from gen.serve.records import RecordFilter
from gen.store.reviews import ReviewAction, add_review

TOKEN_COOKIE = "gen_token"
TOKEN_HEADER = "x-gen-token"


class TokenGuard:
    """Every request carries the token: `X-Gen-Token` or `Authorization: Bearer` header, or the cookie that a
    first visit with `?token=` sets (then redirected to the same address without it). Otherwise 401."""

    def __init__(self, app, token: str):
        self.app = app
        self.token = token.encode("utf-8")

    def _ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(presented.encode("utf-8"), self.token)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        auth = request.headers.get("authorization", "")
        bearer = auth[7:] if auth.lower().startswith("bearer ") else None
        if self._ok(request.headers.get(TOKEN_HEADER)) or self._ok(bearer) or self._ok(request.cookies.get(TOKEN_COOKIE)):
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if self._ok((query.get("token") or [None])[0]):
            rest = urlencode({k: v for k, v in query.items() if k != "token"}, doseq=True)
            response = RedirectResponse(request.url.path + (f"?{rest}" if rest else ""), status_code=303)
            response.set_cookie(TOKEN_COOKIE, self.token.decode("utf-8"), httponly=True, samesite="strict")
            return await response(scope, receive, send)
        response = PlainTextResponse("401: this gen serve needs its token (?token=..., or the X-Gen-Token header)\n",
                                     status_code=401)
        await response(scope, receive, send)


def make_app(store, *, reviewer: str, token: str | None = None):
    """The ASGI app over `store`; with `token`, wrapped so that every request must carry it."""

    def jobs_page(request: Request) -> Response:  # sync: Starlette runs it in a thread
        return HTMLResponse(pages.jobs_page(store))

    def job_page(request: Request) -> Response:  # sync: Starlette runs it in a thread
        html = pages.job_page(store, request.path_params["job_id"])
        return HTMLResponse(html) if html is not None else _not_found("no such job")

    def records_page(request: Request) -> Response:  # sync: Starlette runs it in a thread
        try:
            flt = _filter(request)
        except ValueError as exc:
            return PlainTextResponse(f"400: {exc}\n", status_code=400)
        html = pages.records_page(store, request.path_params["job_id"], flt)
        return HTMLResponse(html) if html is not None else _not_found("no such job")

    def record_page(request: Request) -> Response:  # sync: Starlette runs it in a thread
        html = pages.record_page(store, request.path_params["record_id"], message=request.query_params.get("m"))
        return HTMLResponse(html) if html is not None else _not_found("no such record")

    async def review(request: Request) -> Response:
        if not _same_origin(request):
            return PlainTextResponse("403: review marks are accepted from this site's own pages only\n",
                                     status_code=403)
        record_id = request.path_params["record_id"]
        form = parse_qs((await request.body()).decode("utf-8"))
        action = (form.get("action") or [""])[0]
        reason = (form.get("reason") or [""])[0]
        try:
            await _in_thread(add_review, store, record_id=record_id, action=action, reason=reason, who=reviewer)
        except GenError as exc:
            return RedirectResponse(f"/records/{record_id}?{urlencode({'m': str(exc)})}", status_code=303)
        done = "excluded from export" if action == ReviewAction.EXCLUDE else "included in export"
        return RedirectResponse(f"/records/{record_id}?{urlencode({'m': f'marked: {done}'})}", status_code=303)

    routes = [
        Route("/", jobs_page),
        Route("/jobs/{job_id}", job_page),
        Route("/jobs/{job_id}/records", records_page),
        Route("/records/{record_id:int}", record_page),
        Route("/records/{record_id:int}/review", review, methods=["POST"]),
    ]
    app = Starlette(routes=routes)
    return TokenGuard(app, token) if token else app


async def _in_thread(fn, *args, **kwargs):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(fn, *args, **kwargs)


def _not_found(what: str) -> Response:
    return HTMLResponse(pages.not_found(what), status_code=404)


def _same_origin(request: Request) -> bool:
    """A cross-site form post (another page in the same browser) is refused: Origin, when sent, is this host."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


def _filter(request: Request) -> RecordFilter:
    q = request.query_params

    def number(name: str, kind):
        raw = (q.get(name) or "").strip()
        if not raw:
            return None
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"{name} must be a number, not {raw!r}") from None

    return RecordFilter(kind=q.get("kind", ""), category=q.get("category", ""), constraint=q.get("constraint", ""),
                        min_score=number("min_score", float), verified=q.get("verified", ""),
                        code_check=q.get("code_check", ""), language=q.get("language", ""),
                        q=q.get("q", "").strip(), after=number("after", int) or 0)
