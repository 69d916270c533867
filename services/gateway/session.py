"""login and logout: CloudStack's session authentication, as its own UI uses it.

``login`` (POST, with ``username``, ``password`` and optionally ``domain``) answers the
session's ``sessionkey`` with who logged in, and sets the ``JSESSIONID`` and
``sessionkey`` cookies. A later request is the user's when it carries the cookie and the
``sessionkey`` parameter (``services.gateway.http.caller_of``), unsigned; ``logout`` ends
the session. Both are answered before any caller is known, so they are not registered
commands (listApis does not list them, as CloudMonkey's sync could not name them).
"""

from __future__ import annotations

from aiohttp import web

from services.gateway.api import Caller, Context, Declaration, Field, Param, Params, Shape
from shared import passwords
from shared.domain.accounts import ROOT_DOMAIN, ROOT_DOMAIN_ID
from shared.errors import AUTH_ERROR, ApiError
from shared.eventstore import Repository

SESSION_COOKIE = "JSESSIONID"
KEY_COOKIE = "sessionkey"
COOKIE_PATH = "/client"
ACCOUNT_TYPES = {"user": 0, "admin": 1}
# The domain names a login may give: snapdeploy has CloudStack's ROOT domain only.
ROOT_NAMES = ("", "/", "root", "root/", "/root", "/root/")

LOGIN = Shape("login", "the session a login opened", (
    Field("sessionkey", "string", "the session's key: send it as the sessionkey parameter "
          "of every request, with the JSESSIONID cookie"),
    Field("userid", "string", "the UUID of the user"),
    Field("username", "string", "the user's name"),
    Field("account", "string", "the name of the user's account"),
    Field("accountid", "string", "the UUID of the user's account"),
    Field("domainid", "string", "the UUID of the user's domain"),
    Field("type", "integer", "the account type: 0 user, 1 admin"),
    Field("timeout", "integer", "seconds without a request after which the session ends"),
), relates=False)

LOGIN_PARAMS = Declaration(
    "login", "Logs a user in with their password and opens a session (the JSESSIONID and "
    "sessionkey cookies). Not listed by listApis: it is answered before any caller is "
    "known.", response=LOGIN, answer="fields", params=(
        Param("username", "string", "the user's name", required=True),
        Param("password", "string", "the user's password", required=True,
              length=passwords.MAX_PASSWORD_LENGTH),
        Param("domain", "string", "the user's domain path (ROOT, or /)"),
        Param("domainid", "uuid", "the UUID of the user's domain"),
    ))


async def _account_lives(ctx: Context, account_id: str) -> bool:
    """Whether the account still exists: a deleted account's users log in no more, and
    their sessions end with it."""
    return await Repository(ctx.store).account(account_id) is not None


def login_failed(username: str) -> ApiError:
    return ApiError(AUTH_ERROR, f"Failed to authenticate user {username[:64]} in domain "
                    f"{ROOT_DOMAIN}; please provide valid credentials")


async def open_session(ctx: Context, values: dict[str, str]) -> web.Response:
    """``login``: check the password, open a session, answer it with its cookies.

    Raises:
        ApiError: 431 for a missing parameter, 401 (CloudStack's text) for a wrong
            username, password or domain.
    """
    params = Params(LOGIN_PARAMS, values)
    username, password = params.text("username"), params.text("password")
    assert username is not None and password is not None
    domain, domain_id = params.text("domain"), params.uuid("domainid")
    if (domain or "").lower() not in ROOT_NAMES or domain_id not in (None, ROOT_DOMAIN_ID):
        raise login_failed(username)
    async with ctx.store.pool.acquire() as conn:
        found = await passwords.check_login(conn, username, password)
        if found is None or not await _account_lives(ctx, found.account_id):
            raise login_failed(username)
        session = await passwords.open_session(conn, found)
    body = {
        "sessionkey": session.session_key, "userid": found.user_id,
        "username": found.user_name, "account": found.account_name,
        "accountid": found.account_id, "domainid": ROOT_DOMAIN_ID,
        "type": ACCOUNT_TYPES.get(found.role, 0), "timeout": session.timeout_s,
        "registered": "false", "timezone": "UTC",
    }
    response = web.json_response({"loginresponse": body})
    response.set_cookie(SESSION_COOKIE, session.session_id, path=COOKIE_PATH, httponly=True,
                        samesite="Lax")
    # Readable by the page, as CloudStack's UI reads it back after a reload.
    response.set_cookie(KEY_COOKIE, session.session_key, path=COOKIE_PATH, samesite="Lax")
    return response


async def close_session(ctx: Context, request: web.Request) -> web.Response:
    """``logout``: end the session the cookie names (if any) and clear the cookies."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id:
        async with ctx.store.pool.acquire() as conn:
            await passwords.close_session(conn, session_id)
    response = web.json_response({"logoutresponse": {"description": "success"}})
    response.del_cookie(SESSION_COOKIE, path=COOKIE_PATH)
    response.del_cookie(KEY_COOKIE, path=COOKIE_PATH)
    return response


async def session_caller(ctx: Context, request: web.Request,
                         values: dict[str, str]) -> Caller | None:
    """The user whose live session the request's cookie names and whose ``sessionkey``
    it carries; None when it carries no session at all.

    Raises:
        ApiError: 401 for a session that is not (or no longer) valid.
    """
    session_id = request.cookies.get(SESSION_COOKIE)
    session_key = values.get("sessionkey")
    if not session_id or not session_key:
        return None
    async with ctx.store.pool.acquire() as conn:
        found = await passwords.resume_session(conn, session_id, session_key)
    if found is None or not await _account_lives(ctx, found.account_id):
        raise ApiError(AUTH_ERROR, "unable to verify user credentials: the session has ended "
                       "or its sessionkey does not match; log in again")
    return Caller(found.account_id, found.account_name, found.user_id, found.user_name,
                  found.role)
