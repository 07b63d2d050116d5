"""Verifying Supabase access tokens locally (docs/api.md#authentication).

A token is trusted only if it is signed by one of two sources, chosen by its `alg` header:

- HS256 with `SUPABASE_JWT_SECRET` (legacy projects and the local stack), only when a secret is
  configured;
- ES256, RS256 or EdDSA with a public key from `SUPABASE_URL/auth/v1/.well-known/jwks.json`,
  picked by the token's `kid`.

Symmetric and asymmetric keys never meet: an HS256 token is checked against the shared secret and
nothing else (a JWKS public key is never used as an HMAC secret), and a JWKS key is bound to its own
algorithm (PyJWT refuses a token whose `alg` differs from the key's). Anything else, `none`
included, is refused before any key is looked at.

Claims are checked as PostgREST would need them: `exp` present, `exp`/`nbf`/`iat` JSON numbers
(not "9999999999", not true), `sub` the canonical lower-case UUID text, and nothing PostgreSQL
cannot hold in `request.jwt.claims` (NaN, lone surrogates).

Every verification failure is `InvalidToken`; a validly signed anon key (role `anon`) is not a
user and raises `AnonymousToken` (an `Unauthorized`); failing to fetch the JWKS with nothing
usable cached is our problem, `ServiceUnavailable`. No error message or log line contains the token.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import httpx
import jwt
import structlog
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from agentmarket.core.config import Settings
from agentmarket.core.errors import AnonymousToken, InvalidToken, ServiceUnavailable
from agentmarket.core.jsontext import json_problems

__all__ = ["ANON_ROLE", "MAX_TOKEN_LENGTH", "USER_ROLE", "TokenVerifier", "User", "bearer_token"]

log = structlog.get_logger(__name__)

HMAC_ALGORITHM: Final = "HS256"
JWKS_ALGORITHMS: Final = frozenset({"ES256", "RS256", "EdDSA"})
JWKS_PATH: Final = "/auth/v1/.well-known/jwks.json"
ANON_ROLE: Final = "anon"
USER_ROLE: Final = "authenticated"
# Longer than any real access token (GoTrue's are ~1 KiB even with fat metadata); a cap keeps
# hostile input from costing base64/JSON work.
MAX_TOKEN_LENGTH: Final = 16_384
MIN_HMAC_SECRET_BYTES: Final = 32
JWKS_FETCH_TIMEOUT: Final = httpx.Timeout(5.0)

# NumericDate claims (RFC 7519 §2): JSON numbers. PyJWT reads them with int(), so it would take
# "9999999999" or true.
NUMERIC_CLAIMS: Final = ("exp", "nbf", "iat")

# RFC 6750 §2.1: `Bearer` (any case), one or more spaces, a b64token.
_BEARER_RE: Final = re.compile(r"([A-Za-z]+) +([A-Za-z0-9\-._~+/]+=*)")


@dataclass(frozen=True)
class User:
    """A signed-in user, from a verified access token."""

    id: uuid.UUID
    email: str | None
    role: str
    """The token's `role` claim (always "authenticated": other roles are refused)."""
    is_admin: bool
    """`app_metadata.role == "admin"`. `user_metadata` is writable by the user and never counts."""
    claims: dict[str, Any]
    """The verified claims, as PostgREST would put them in `request.jwt.claims`."""


def bearer_token(authorization_header: str | None) -> str | None:
    """The token in `Authorization: Bearer <token>`; None when the header is absent or blank.

    Any other shape (another scheme, no token, junk characters) raises `InvalidToken`: a client
    that sent credentials should learn they were unreadable rather than be treated as anonymous.
    """
    if authorization_header is None or not authorization_header.strip():
        return None
    match = _BEARER_RE.fullmatch(authorization_header.strip())
    if match is None or match.group(1).lower() != "bearer":
        raise InvalidToken("The Authorization header must be `Bearer <access token>`.")
    return match.group(2)


def _usable_key(jwk: jwt.PyJWK) -> bool:
    """Only public signature keys for an allowed asymmetric algorithm, of the matching type."""
    if jwk.algorithm_name not in JWKS_ALGORITHMS or not jwk.key_id:
        return False
    if jwk.public_key_use not in (None, "sig"):
        return False
    key: object = jwk.key
    match jwk.algorithm_name:
        case "ES256":
            return isinstance(key, ec.EllipticCurvePublicKey) and isinstance(
                key.curve, ec.SECP256R1
            )
        case "RS256":
            return isinstance(key, rsa.RSAPublicKey)
        case "EdDSA":
            return isinstance(key, ed25519.Ed25519PublicKey)
    return False


def _parse_jwks(document: object) -> dict[str, jwt.PyJWK]:
    """Keys by `kid`. Keys PyJWT cannot use, or we do not allow, are skipped, not fatal."""
    if not isinstance(document, dict):
        raise ValueError("JWKS is not a JSON object")
    try:
        key_set = jwt.PyJWKSet.from_dict(document)
    except jwt.PyJWKSetError as exc:
        raise ValueError(str(exc)) from exc
    keys: dict[str, jwt.PyJWK] = {}
    for jwk in key_set.keys:
        if _usable_key(jwk) and jwk.key_id is not None:
            keys.setdefault(jwk.key_id, jwk)
    return keys


def _check_claim_types(claims: Mapping[str, Any]) -> None:
    """Time claims are numbers, and the claims are JSON that PostgreSQL can hold: they become
    `request.jwt.claims` (no NaN, no lone surrogates, no NUL)."""
    for name in NUMERIC_CLAIMS:
        value = claims.get(name)
        if name in claims and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise InvalidToken(f"The access token's {name} claim is not a number.")
    if json_problems(claims):
        raise InvalidToken("The access token's claims are not valid JSON text.")


class TokenVerifier:
    """Verifies Supabase access tokens; one per process, shared by all requests.

    The JWKS is fetched lazily, cached for `jwks_ttl_seconds`, and refetched early when a token
    names an unknown `kid` (key rotation), but never more often than once per
    `min_refresh_interval_seconds`, so random `kid`s cannot make us hammer the endpoint. Concurrent
    refreshes share one fetch. If a fetch fails, the cached set keeps being used for up to
    `jwks_max_stale_seconds` past its TTL.
    """

    def __init__(
        self,
        *,
        jwt_secret: str | None,
        jwks_url: str | None,
        issuer: str | None,
        audience: str = USER_ROLE,
        http: httpx.AsyncClient | None = None,
        jwks_ttl_seconds: float = 600,
        min_refresh_interval_seconds: float = 30,
        leeway_seconds: float = 0,
        jwks_max_stale_seconds: float = 3600,
    ) -> None:
        if not jwt_secret and not jwks_url:
            raise ValueError("token verification needs a JWT secret and/or a JWKS URL")
        if jwt_secret is not None and len(jwt_secret.encode()) < MIN_HMAC_SECRET_BYTES:
            raise ValueError(f"the JWT secret must be at least {MIN_HMAC_SECRET_BYTES} bytes")
        self._secret = jwt_secret or None
        self._jwks_url = jwks_url or None
        self._issuer = issuer
        self._audience = audience
        self._http = http
        self._owns_http = http is None
        self._ttl = jwks_ttl_seconds
        self._min_refresh = min_refresh_interval_seconds
        self._leeway = leeway_seconds
        self._max_stale = jwks_max_stale_seconds
        self._clock: Callable[[], float] = time.monotonic
        self._lock = asyncio.Lock()
        self._keys: dict[str, jwt.PyJWK] | None = None
        self._fetched_at = 0.0
        self._last_attempt: float | None = None

    @classmethod
    def from_settings(
        cls, settings: Settings, http: httpx.AsyncClient | None = None
    ) -> TokenVerifier:
        secret = settings.supabase_jwt_secret
        return cls(
            jwt_secret=secret.get_secret_value() if secret is not None else None,
            jwks_url=settings.supabase_url.rstrip("/") + JWKS_PATH
            if settings.supabase_url
            else None,
            issuer=settings.jwt_issuer,
            http=http,
        )

    async def aclose(self) -> None:
        """Close the HTTP client if this verifier created it (a passed-in one is the caller's)."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def verify(self, token: str) -> User:
        """The user a token belongs to; `InvalidToken` unless it is a valid user access token."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("The access token is malformed.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("The access token is malformed.") from None
        alg = header.get("alg")

        key: str | jwt.PyJWK
        algorithms: list[str]
        if alg == HMAC_ALGORITHM:
            if self._secret is None:
                raise InvalidToken("The access token's signing algorithm is not accepted.")
            key, algorithms = self._secret, [HMAC_ALGORITHM]
        elif isinstance(alg, str) and alg in JWKS_ALGORITHMS:
            if self._jwks_url is None:
                raise InvalidToken("The access token's signing algorithm is not accepted.")
            kid = header.get("kid")
            if not isinstance(kid, str) or not kid:
                raise InvalidToken("The access token does not name its signing key.")
            key = await self._signing_key(kid)
            # The key is bound to one algorithm; PyJWT refuses a token whose alg differs.
            algorithms = sorted(JWKS_ALGORITHMS)
        else:
            raise InvalidToken("The access token's signing algorithm is not accepted.")

        claims = self._decode(token, key, algorithms)
        _check_claim_types(claims)
        return self._user(claims)

    def _decode(self, token: str, key: str | jwt.PyJWK, algorithms: list[str]) -> dict[str, Any]:
        """Signature, exp (required), nbf and iat. Audience and issuer are checked afterwards,
        once the anon key (which has neither) has been told apart."""
        try:
            return jwt.decode(
                token,
                key,
                algorithms=algorithms,
                options={
                    "require": ["exp"],
                    "verify_aud": False,
                    "verify_iss": False,
                    "enforce_minimum_key_length": True,
                },
                leeway=self._leeway,
            )
        except jwt.ExpiredSignatureError:
            raise InvalidToken("The access token has expired; sign in again.") from None
        except jwt.InvalidSignatureError:
            raise InvalidToken("The access token's signature is invalid.") from None
        except jwt.MissingRequiredClaimError:
            raise InvalidToken("The access token has no expiry.") from None
        except jwt.ImmatureSignatureError:
            raise InvalidToken("The access token is not valid yet.") from None
        except jwt.PyJWTError:
            raise InvalidToken("The access token is invalid.") from None

    def _user(self, claims: dict[str, Any]) -> User:
        role = claims.get("role")
        if not isinstance(role, str) or not role:
            raise InvalidToken("The access token has no role.")
        if role == ANON_ROLE:
            raise AnonymousToken()
        if role != USER_ROLE:
            raise InvalidToken("The access token is not a user's access token.")

        aud = claims.get("aud")
        audiences = [aud] if isinstance(aud, str) else aud
        if not isinstance(audiences, list) or self._audience not in audiences:
            raise InvalidToken("The access token is for another audience.")
        if self._issuer is not None and claims.get("iss") != self._issuer:
            raise InvalidToken("The access token was issued by another project.")

        sub = claims.get("sub")
        if not isinstance(sub, str):
            raise InvalidToken("The access token has no subject.")
        # One spelling only: uuid.UUID also reads urn:uuid:…, {…}, upper case and bare hex, which
        # PostgreSQL's auth.uid() would read differently or not at all.
        try:
            user_id = uuid.UUID(sub)
        except ValueError:
            user_id = None
        if user_id is None or str(user_id) != sub:
            raise InvalidToken("The access token's subject is not a user id.")

        email = claims.get("email")
        app_metadata = claims.get("app_metadata")
        is_admin = isinstance(app_metadata, Mapping) and app_metadata.get("role") == "admin"
        return User(
            id=user_id,
            email=email if isinstance(email, str) and email else None,
            role=role,
            is_admin=is_admin,
            claims=claims,
        )

    # JWKS cache

    def _cached(self, now: float, max_age: float) -> dict[str, jwt.PyJWK] | None:
        if self._keys is not None and now - self._fetched_at < max_age:
            return self._keys
        return None

    async def _signing_key(self, kid: str) -> jwt.PyJWK:
        fresh = self._cached(self._clock(), self._ttl)
        if fresh is not None and kid in fresh:
            return fresh[kid]
        async with self._lock:
            now = self._clock()
            fresh = self._cached(now, self._ttl)
            if fresh is not None and kid in fresh:  # another request refreshed meanwhile
                return fresh[kid]
            if self._last_attempt is None or now - self._last_attempt >= self._min_refresh:
                await self._refresh()
            usable = self._cached(self._clock(), self._ttl + self._max_stale)
        if usable is None:
            raise ServiceUnavailable("could not fetch signing keys")
        try:
            return usable[kid]
        except KeyError:
            raise InvalidToken("The access token's signing key is unknown.") from None

    async def _refresh(self) -> None:
        """Fetch the JWKS once; on failure keep what is cached (the caller decides if usable)."""
        assert self._jwks_url is not None
        self._last_attempt = self._clock()
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=JWKS_FETCH_TIMEOUT)
        try:
            response = await self._http.get(
                self._jwks_url,
                headers={"Accept": "application/json"},
                timeout=JWKS_FETCH_TIMEOUT,
            )
            response.raise_for_status()
            keys = _parse_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            log.warning(
                "auth.jwks.fetch_failed",
                url=self._jwks_url,
                error=type(exc).__name__,
                reason=str(exc)[:200],
                cached=self._keys is not None,
            )
            return
        if not keys:
            log.warning("auth.jwks.no_usable_keys", url=self._jwks_url)
            return
        self._keys = keys
        self._fetched_at = self._clock()
        log.info("auth.jwks.refreshed", url=self._jwks_url, kids=sorted(keys))
