"""The preference centre over HTTP: ``POST /v1/privacy/links`` (scope ``privacy``) makes a signed, expiring
link; ``/privacy/{token}`` is the person's page and its forms.

The pages are server-rendered HTML that works without JavaScript. Every answer under ``/privacy/`` carries
strict security headers (:data:`SECURITY_HEADERS`: a CSP that allows only this origin's stylesheet and
forms, no framing, no referrer since the token is in the URL, no caching). Every form POST must carry the
CSRF field bound to the link and to the ``kairos_pc`` cookie (SameSite=Strict, HttpOnly), and its
``Origin``, when the browser sends a real one, must be this site's. After a POST the browser is sent back
to the page (303, Post/Redirect/Get) with a status message picked from a fixed list (never echoed input).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from kairos import audit
from kairos.api._common import authenticate, check_scope, error_response, json_body, json_response, read_body, runtime
from kairos.collect import iso
from kairos.errors import KairosError, NotFoundError, ValidationError, http_status, unknown_field
from kairos.identity import profile_id_for
from kairos.privacy import centre
from kairos.privacy.consents import wait_applied
from kairos.privacy.links import (
    CSRF_COOKIE,
    LinkClaims,
    LinkGone,
    LinkRefused,
    create_link,
    csrf_field,
    csrf_ok,
    new_csrf_cookie,
    open_link,
    parse_ttl,
)
from kairos.privacy.preferences import read_preferences
from kairos.runtime import Kairos
from kairos.store import ApiKey

__all__ = ["SECURITY_HEADERS", "routes"]

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=(), interest-cohort=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
MAX_FORM = 16 * 1024
MAX_FIELDS = 200
WAIT_APPLIED_SECONDS = 3.0  # how long a form waits for its event to reach the profile before redirecting
NOTICES = {
    "consents": "Your choices are saved.",
    "preferences": "Your preferences are saved.",
    "nothing": "Nothing changed.",
    "erasure": "Your request to delete your data is under way. This page will stop working once it is done.",
}
_BODY_FIELDS = {"profile", "ttl"}

_env = Environment(
    loader=PackageLoader("kairos.privacy", "templates"),
    autoescape=select_autoescape(["html"]),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _day(value: Any) -> str:
    """An ISO date-time or epoch ms as "24 Nov 2026" (UTC)."""
    when = _datetime(value)
    return when.strftime("%d %b %Y").lstrip("0") if when else ""


def _moment(value: Any) -> str:
    when = _datetime(value)
    return when.strftime("%d %b %Y, %H:%M UTC").lstrip("0") if when else ""


def _datetime(value: Any) -> datetime | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


_env.filters["day"] = _day
_env.filters["moment"] = _moment
_STATIC = resources.files("kairos.privacy").joinpath("static")
_ASSETS = {
    "centre.css": (_STATIC.joinpath("centre.css").read_bytes(), "text/css"),
    "icon.svg": (_STATIC.joinpath("icon.svg").read_bytes(), "image/svg+xml"),
}


# -- the API: links -------------------------------------------------------------------------------------
def _make_link(kairos: Kairos, request: Request, body: Any) -> tuple[dict[str, Any], int, str]:
    """The link's answer, its status and the profile id it names (the audit entry's target)."""
    if not isinstance(body, dict):
        raise ValidationError("the body must be a JSON object", code="invalid_body", field="body")
    unknown = sorted(set(body) - _BODY_FIELDS)
    if unknown:
        raise unknown_field(unknown[0])
    ref = body.get("profile")
    if not isinstance(ref, str) or not ref or len(ref) > 600 or "\x00" in ref:
        raise ValidationError(
            "profile must be a profile id or type:value identity of 1 to 600 characters, without NUL",
            code="invalid_ref",
            field="profile",
        )
    settings = kairos.settings.privacy
    ttl = parse_ttl(body.get("ttl"), settings.link_ttl, settings.link_max_ttl)
    try:
        pk = kairos.resolve(ref)
    except ValidationError as exc:
        raise ValidationError(exc.message, code=exc.code, field="profile") from None
    if pk is None or kairos.view(pk) is None:
        raise NotFoundError("no profile for this reference", field="profile")
    base = settings.public_url or _origin(request)
    link = create_link(kairos, pk, ttl, base + request.scope.get("root_path", ""))
    return {"url": link.url, "expires_at": iso(link.expires_at)}, 201, profile_id_for(pk)


async def post_link(request: Request) -> Response:
    """``POST /v1/privacy/links``; every request from a valid key is audited (``privacy.link``, the profile id
    as target when one was found: never the reference sent, which may be an e-mail address)."""
    kairos = runtime(request)
    key: ApiKey | None = None
    try:
        key = await authenticate(request)
        check_scope(key, "privacy")
        body = await json_body(request)
        answer, status, target = await run_in_threadpool(_make_link, kairos, request, body)
    except KairosError as exc:
        if key is not None:
            await run_in_threadpool(audit.record, kairos, key, "privacy.link", "", http_status(exc), {"code": exc.code})
        return error_response(exc)
    detail = {"expires_at": answer["expires_at"]}
    await run_in_threadpool(audit.record, kairos, key, "privacy.link", target, status, detail)
    return json_response(answer, status)


def _origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.url.netloc}"


# -- the pages ------------------------------------------------------------------------------------------
def _html(body: str, status: int = 200, headers: dict[str, str] | None = None) -> HTMLResponse:
    return HTMLResponse(body, status, headers={**SECURITY_HEADERS, **(headers or {})})


def _render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    root = request.scope.get("root_path", "")
    return _html(_env.get_template(template).render(root=root, **context), status)


_REFUSED = {
    "link_invalid": ("This link does not work", "The link is not valid. It may have been copied incompletely."),
    "link_expired": ("This link has expired", "Links to this page work for a limited time only."),
    "link_gone": (
        "There is no data behind this link",
        "We hold no data about you under this link any more. If you asked us to delete your data, that is done.",
    ),
    "csrf": ("This form has expired", "Open the page again from your link and try once more."),
    "bad_form": ("We could not read this form", "Open the page again from your link and try once more."),
    "erased": ("Your data has been deleted", "We no longer hold any data about you under this link."),
    "busy": ("Please try again in a moment", "We could not reach your data just now. Nothing was changed."),
}


def _refused(request: Request, code: str, status: int) -> HTMLResponse:
    heading, message = _REFUSED[code]
    return _render(request, "refused.html", status, title=heading, heading=heading, message=message)


PageWork = Callable[[Request, Kairos, LinkClaims, int, str], Awaitable[Response]]


def _page(work: PageWork) -> Callable[[Request], Awaitable[Response]]:
    """A page route: opens the link (refusing a bad one with a page that shows no data), hands the CSRF
    cookie (made when the browser has none), and answers with the security headers."""

    async def endpoint(request: Request) -> Response:
        kairos = runtime(request)
        token = request.path_params["token"]
        try:
            claims, pk = await run_in_threadpool(open_link, kairos, token)
        except LinkRefused as exc:
            if isinstance(exc, LinkGone) and request.query_params.get("done") == "erasure":
                return _refused(request, "erased", exc.status)  # back from "delete" after the erasure ran
            return _refused(request, exc.code, exc.status)
        except KairosError as exc:
            return _refused(request, "busy", 503) if exc.transient else _refused(request, "link_invalid", 403)
        cookie = request.cookies.get(CSRF_COOKIE) or ""
        fresh = not (0 < len(cookie) <= 100 and cookie.isascii() and cookie.replace("-", "").replace("_", "").isalnum())
        if fresh:
            cookie = new_csrf_cookie()
        try:
            response = await work(request, kairos, claims, pk, cookie)
        except KairosError as exc:
            if exc.transient:  # the store is busy or restarting: nothing was done, the same request may work
                return _refused(request, "busy", 503)
            if isinstance(exc, NotFoundError):  # erased while the request ran
                return _refused(request, "link_gone", 410)
            return _refused(request, "csrf", 403) if exc.code == "csrf" else _refused(request, "bad_form", 400)
        if fresh:
            root = request.scope.get("root_path", "")
            secure = request.url.scheme == "https" or (kairos.settings.privacy.public_url or "").startswith("https:")
            response.set_cookie(
                CSRF_COOKIE, cookie, path=f"{root}/privacy/", httponly=True, samesite="strict", secure=secure
            )
        return response

    endpoint.__name__ = work.__name__
    return endpoint


def _fresh_view(kairos: Kairos, pk: int) -> dict[str, Any]:
    """The profile as it is now, bypassing the read cache (a form's change must show at once)."""
    profile = kairos.profile(pk)
    if profile is None:
        raise NotFoundError("no profile", field="token")
    return kairos.profile_view(profile, [profile_id_for(k) for k in kairos.store.state.merged_keys(pk)])


def _show(
    request: Request,
    kairos: Kairos,
    claims: LinkClaims,
    pk: int,
    cookie: str,
    *,
    status: int = 200,
    errors: dict[str, str] | None = None,
    submitted: dict[str, str] | None = None,
) -> HTMLResponse:
    view = _fresh_view(kairos, pk)
    notice = NOTICES.get(request.query_params.get("done", ""))
    return _render(
        request,
        "centre.html",
        status,
        title="Your data and your choices",
        page=centre.page(kairos, pk, view, errors=errors),
        token=request.path_params["token"],
        csrf=csrf_field(kairos, claims, cookie),
        notice=notice,
        errors=errors or {},
        submitted=submitted or {},
        masked=kairos.settings.privacy.mask_identities,
        expires=claims.expires_at,
    )


async def _form(request: Request, kairos: Kairos, claims: LinkClaims, cookie: str) -> list[tuple[str, str]]:
    """The form's fields, after the CSRF and Origin checks (a :class:`KairosError` with code ``csrf`` or
    ``bad_form`` otherwise: the page route turns it into a page)."""
    origin = request.headers.get("origin")
    # With Referrer-Policy no-referrer, browsers send "Origin: null" on a same-origin form POST, so "null" proves
    # nothing either way; the CSRF field decides then.
    if origin is not None and origin != "null" and origin not in _own_origins(request, kairos):
        raise KairosError("cross-origin form", code="csrf")
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise KairosError("cross-site form", code="csrf")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise KairosError("not a form", code="bad_form")
    raw = await read_body(request, MAX_FORM)
    try:
        fields = parse_qsl(
            raw.decode("ascii"), keep_blank_values=True, encoding="utf-8", errors="strict", max_num_fields=MAX_FIELDS
        )
    except (UnicodeDecodeError, ValueError):
        raise KairosError("unreadable form", code="bad_form") from None
    if any("\x00" in k or "\x00" in v for k, v in fields):
        raise KairosError("NUL in a form", code="bad_form")
    sent = [v for k, v in fields if k == "csrf"]
    if len(sent) != 1 or not csrf_ok(kairos, claims, request.cookies.get(CSRF_COOKIE), sent[0]):
        raise KairosError("missing or wrong CSRF field", code="csrf")
    return [(k, v) for k, v in fields if k != "csrf"]


def _own_origins(request: Request, kairos: Kairos) -> set[str]:
    own = {_origin(request)}
    public = kairos.settings.privacy.public_url
    if public:
        parts = urlsplit(public)
        own.add(f"{parts.scheme}://{parts.netloc}")
    return own


def _back(request: Request, done: str) -> RedirectResponse:
    root = request.scope.get("root_path", "")
    url = f"{root}/privacy/{request.path_params['token']}?done={done}#notice"
    return RedirectResponse(url, 303, headers=SECURITY_HEADERS)


def _wait_applied(kairos: Kairos, seq: int) -> None:
    """Wait (briefly) until the processor applied log position ``seq``, so the page shows the change."""
    wait_applied(kairos, seq, WAIT_APPLIED_SECONDS)


@_page
async def show_page(request: Request, kairos: Kairos, claims: LinkClaims, pk: int, cookie: str) -> Response:
    return await run_in_threadpool(_show, request, kairos, claims, pk, cookie)


@_page
async def post_consents(request: Request, kairos: Kairos, claims: LinkClaims, pk: int, cookie: str) -> Response:
    fields = await _form(request, kairos, claims, cookie)
    wanted = {v for k, v in fields if k == "consent"}
    purposes = kairos.settings.consent.purposes
    if wanted - set(purposes):
        raise KairosError("unknown purpose", code="bad_form")

    def save() -> str:
        state = centre.consent_state(kairos, _fresh_view(kairos, pk))
        changed = {
            key: key in wanted for key in purposes if bool((state.get(key) or {}).get("granted")) != (key in wanted)
        }
        if not changed:
            return "nothing"
        _wait_applied(kairos, centre.record_choices(kairos, pk, consents=changed))
        return "consents"

    return _back(request, await run_in_threadpool(save))


@_page
async def post_preferences(request: Request, kairos: Kairos, claims: LinkClaims, pk: int, cookie: str) -> Response:
    fields = await _form(request, kairos, claims, cookie)
    prefs = kairos.settings.privacy.preferences

    def save() -> Response:
        view = _fresh_view(kairos, pk)
        changed, errors = read_preferences(prefs, fields, view.get("traits") or {})
        if errors:
            submitted = {k[5:]: v for k, v in fields if k.startswith("pref.") and prefs.get(k[5:], None)}
            return _show(request, kairos, claims, pk, cookie, status=400, errors=errors, submitted=submitted)
        if not changed:
            return _back(request, "nothing")
        _wait_applied(kairos, centre.record_choices(kairos, pk, traits=changed))
        return _back(request, "preferences")

    return await run_in_threadpool(save)


@_page
async def post_download(request: Request, kairos: Kairos, claims: LinkClaims, pk: int, cookie: str) -> Response:
    await _form(request, kairos, claims, cookie)
    data = await run_in_threadpool(centre.export_all, kairos, pk)
    stamp = datetime.fromtimestamp(kairos.clock.now() / 1000, UTC).strftime("%Y-%m-%d")
    return Response(
        msgspec.json.format(msgspec.json.encode(data), indent=2),
        200,
        media_type="application/json",
        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="my-data-{stamp}.json"'},
    )


@_page
async def confirm_delete(request: Request, kairos: Kairos, claims: LinkClaims, pk: int, cookie: str) -> Response:
    return _render(
        request,
        "confirm_delete.html",
        title="Delete all your data?",
        token=request.path_params["token"],
        csrf=csrf_field(kairos, claims, cookie),
    )


@_page
async def post_delete(request: Request, kairos: Kairos, claims: LinkClaims, pk: int, cookie: str) -> Response:
    fields = await _form(request, kairos, claims, cookie)
    if ("confirm", "yes") not in fields:
        raise KairosError("not confirmed", code="bad_form")
    await run_in_threadpool(centre.erase_all, kairos, pk)
    return _back(request, "erasure")


async def asset(request: Request) -> Response:
    """The stylesheet and the icon: Kairos serves its pages' assets itself (no third-party host)."""
    content, media_type = _ASSETS[request.url.path.rsplit("/", 1)[1]]
    return Response(content, 200, media_type=media_type, headers={**SECURITY_HEADERS, "Cache-Control": "max-age=3600"})


routes = [
    Route("/v1/privacy/links", post_link, methods=["POST"]),
    Route("/privacy/assets/centre.css", asset, methods=["GET"]),
    Route("/privacy/assets/icon.svg", asset, methods=["GET"]),
    Route("/privacy/{token}", show_page, methods=["GET"]),
    Route("/privacy/{token}/consents", post_consents, methods=["POST"]),
    Route("/privacy/{token}/preferences", post_preferences, methods=["POST"]),
    Route("/privacy/{token}/download", post_download, methods=["POST"]),
    Route("/privacy/{token}/delete", confirm_delete, methods=["GET"]),
    Route("/privacy/{token}/delete", post_delete, methods=["POST"]),
]
