"""Who looks at the dashboard: anonymous, or a user who signed in with one of their API tokens.

Signing in stores the token in a cookie that scripts cannot read
(``HttpOnly``) and browsers send only to this site's own pages
(``SameSite=Strict``; ``Secure`` when the page came over HTTPS). The
server keeps nothing: the cookie is checked like an ``Authorization:
Token`` header, so a deleted token signs its user out at once, on every
server of the lab.

Every form that changes something carries a form token derived from the
cookie's secret (an HMAC), checked on POST, and the request's ``Origin``,
when the browser sends one, must be this server: a page of another site
can neither send the cookie nor know the form token.
"""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request
from sqlalchemy import Engine

from server.errors import Forbidden
from server.identity import ANONYMOUS, Caller

COOKIE = "lava_dispatch_token"
MAX_AGE = 8 * 3600  # a browser session of a working day


def caller(request: Request, engine: Engine | None) -> Caller:
    """The signed-in user (a cookie whose token no longer exists reads as anonymous)."""
    secret = request.cookies.get(COOKIE)
    if not secret:
        return ANONYMOUS
    from server.auth import user_for_token

    found = user_for_token(secret, engine=engine)
    return Caller(found.username, found.is_admin) if found is not None else ANONYMOUS


def form_token(request: Request) -> str:
    """The token every state-changing form of this signed-in browser carries ('' when signed out)."""
    secret = request.cookies.get(COOKIE)
    if not secret:
        return ""
    return hmac.new(secret.encode(), b"lava-dispatch dashboard form", hashlib.sha256).hexdigest()


def check_form(request: Request, given: str | None) -> None:
    """Refuse a POST that another site could have sent (wrong Origin, missing or wrong form token)."""
    if not same_origin(request):
        raise Forbidden("this form was sent from another site")
    expected = form_token(request)
    if not expected or not given or not hmac.compare_digest(expected, given):
        raise Forbidden("the form has expired or did not come from this dashboard: load the page again")


def secure(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto") == "https"


def same_origin(request: Request) -> bool:
    """The browser's ``Origin`` (when it sends one) is this server, as the browser reached it."""
    origin = request.headers.get("origin")
    scheme = "https" if secure(request) else request.url.scheme
    return not origin or origin.rstrip("/") == f"{scheme}://{request.headers.get('host', '')}"


__all__ = ["COOKIE", "MAX_AGE", "caller", "form_token", "check_form", "secure", "same_origin"]
