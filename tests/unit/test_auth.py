from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import jwt
import pytest
import respx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from agentmarket.core.auth import TokenVerifier, User, bearer_token
from agentmarket.core.config import get_settings
from agentmarket.core.errors import AnonymousToken, InvalidToken, ServiceUnavailable, Unauthorized

SECRET = "test-secret-that-is-at-least-32-bytes-long!!"
SUPABASE_URL = "https://abcdefgh.supabase.co"
ISSUER = f"{SUPABASE_URL}/auth/v1"
JWKS_URL = f"{SUPABASE_URL}/auth/v1/.well-known/jwks.json"
USER_ID = uuid.UUID("3f1c2a7e-5b4d-4c6e-9a8b-1d2e3f4a5b6c")


# Keys and tokens


@functools.cache
def ec_key(name: str) -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@functools.cache
def rsa_key(name: str) -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def ec_jwk(kid: str) -> dict[str, Any]:
    jwk = ECAlgorithm.to_jwk(ec_key(kid).public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}


def rsa_jwk(kid: str) -> dict[str, Any]:
    jwk = RSAAlgorithm.to_jwk(rsa_key(kid).public_key(), as_dict=True)
    return {**jwk, "kid": kid, "alg": "RS256", "use": "sig"}


def jwks(*keys: dict[str, Any]) -> dict[str, Any]:
    return {"keys": list(keys)}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "iss": ISSUER,
        "sub": str(USER_ID),
        "email": "alice@example.com",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "role": "authenticated",
        "aal": "aal1",
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret, algorithm="HS256")


def es256(payload: dict[str, Any], kid: str, *, key_name: str | None = None) -> str:
    return jwt.encode(payload, ec_key(key_name or kid), algorithm="ES256", headers={"kid": kid})


def rs256(payload: dict[str, Any], kid: str) -> str:
    return jwt.encode(payload, rsa_key(kid), algorithm="RS256", headers={"kid": kid})


def hand_signed_hs256(payload: dict[str, Any], key: bytes, header: dict[str, Any]) -> str:
    """HS256 signed by hand: PyJWT refuses to use a PEM public key as an HMAC secret."""
    signing_input = (
        b64url(json.dumps({**header, "alg": "HS256"}).encode())
        + "."
        + b64url(json.dumps(payload).encode())
    )
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# Fixtures


@pytest.fixture
def router() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as mock:
        yield mock


@pytest.fixture
def jwks_route(router: respx.MockRouter) -> respx.Route:
    return router.get(JWKS_URL).mock(
        return_value=httpx.Response(200, json=jwks(ec_jwk("ec-1"), rsa_jwk("rsa-1")))
    )


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def hs_verifier() -> TokenVerifier:
    return TokenVerifier(jwt_secret=SECRET, jwks_url=None, issuer=ISSUER)


def make_jwks_verifier(http: httpx.AsyncClient, **kwargs: Any) -> TokenVerifier:
    params: dict[str, Any] = {"jwt_secret": None, "jwks_url": JWKS_URL, "issuer": ISSUER}
    params.update(kwargs)
    return TokenVerifier(http=http, **params)


@pytest.fixture
def jwks_verifier(http: httpx.AsyncClient, jwks_route: respx.Route) -> TokenVerifier:
    return make_jwks_verifier(http)


async def assert_invalid(verifier: TokenVerifier, token: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        await verifier.verify(token)
    assert token not in str(info.value)
    assert token not in info.value.detail
    return info.value


# HS256


async def test_valid_hs256_token_gives_the_user(hs_verifier: TokenVerifier) -> None:
    payload = claims()
    user = await hs_verifier.verify(hs256(payload))
    assert user == User(
        id=USER_ID,
        email="alice@example.com",
        role="authenticated",
        is_admin=False,
        claims=payload,
    )


async def test_admin_comes_from_app_metadata_only(hs_verifier: TokenVerifier) -> None:
    admin = await hs_verifier.verify(hs256(claims(app_metadata={"role": "admin"})))
    assert admin.is_admin is True

    self_declared = await hs_verifier.verify(
        hs256(claims(user_metadata={"role": "admin"}, app_metadata={"provider": "email"}))
    )
    assert self_declared.is_admin is False

    no_metadata = await hs_verifier.verify(hs256(claims(app_metadata=None)))
    assert no_metadata.is_admin is False


async def test_blank_email_is_none(hs_verifier: TokenVerifier) -> None:
    user = await hs_verifier.verify(hs256(claims(email="", phone="+15555550100")))
    assert user.email is None


async def test_expired_token_is_invalid(hs_verifier: TokenVerifier) -> None:
    error = await assert_invalid(hs_verifier, hs256(claims(exp=int(time.time()) - 10)))
    assert "expired" in error.detail


async def test_leeway_accepts_a_just_expired_token() -> None:
    verifier = TokenVerifier(jwt_secret=SECRET, jwks_url=None, issuer=None, leeway_seconds=60)
    user = await verifier.verify(hs256(claims(exp=int(time.time()) - 10)))
    assert user.id == USER_ID


async def test_bad_signature_is_invalid(hs_verifier: TokenVerifier) -> None:
    await assert_invalid(
        hs_verifier, hs256(claims(), secret="another-secret-of-at-least-32-bytes!!")
    )
    header, _payload, signature = hs256(claims()).split(".")
    tampered_payload = b64url(json.dumps(claims(app_metadata={"role": "admin"})).encode())
    await assert_invalid(hs_verifier, f"{header}.{tampered_payload}.{signature}")


async def test_alg_none_is_invalid(hs_verifier: TokenVerifier) -> None:
    body = b64url(json.dumps(claims()).encode())
    for header in ({"alg": "none"}, {"alg": "none", "typ": "JWT"}, {"alg": "None"}):
        token = f"{b64url(json.dumps(header).encode())}.{body}."
        await assert_invalid(hs_verifier, token)


@pytest.mark.parametrize("alg", ["HS384", "HS512", "PS256", "ES384", "RS512", None, 7])
async def test_algorithms_outside_the_allow_list_are_invalid(
    hs_verifier: TokenVerifier, alg: object
) -> None:
    token = hand_signed_hs256(claims(), SECRET.encode(), {})
    header, rest = token.split(".", 1)
    forged_header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    assert header != forged_header
    await assert_invalid(hs_verifier, f"{forged_header}.{rest}")


@pytest.mark.parametrize("token", ["", "abc", "a.b", "a.b.c", "x" * 20_000, "..."])
async def test_garbage_is_invalid(hs_verifier: TokenVerifier, token: str) -> None:
    with pytest.raises(InvalidToken):
        await hs_verifier.verify(token)


async def test_wrong_audience_is_invalid(hs_verifier: TokenVerifier) -> None:
    await assert_invalid(hs_verifier, hs256(claims(aud="someone-else")))
    await assert_invalid(hs_verifier, hs256(claims(aud=None)))
    await assert_invalid(hs_verifier, hs256(claims(aud=["x", "y"])))
    accepted = await hs_verifier.verify(hs256(claims(aud=["x", "authenticated"])))
    assert accepted.id == USER_ID


async def test_wrong_issuer_is_invalid_when_an_issuer_is_configured(
    hs_verifier: TokenVerifier,
) -> None:
    await assert_invalid(hs_verifier, hs256(claims(iss="https://evil.supabase.co/auth/v1")))
    await assert_invalid(hs_verifier, hs256(claims(iss=None)))


async def test_issuer_is_not_checked_when_none_is_configured() -> None:
    verifier = TokenVerifier(jwt_secret=SECRET, jwks_url=None, issuer=None)
    user = await verifier.verify(hs256(claims(iss="http://127.0.0.1:54321/auth/v1")))
    assert user.id == USER_ID
    assert (await verifier.verify(hs256(claims(iss=None)))).id == USER_ID


async def test_missing_exp_is_invalid(hs_verifier: TokenVerifier) -> None:
    await assert_invalid(hs_verifier, hs256(claims(exp=None)))


async def test_token_from_the_future_is_invalid(hs_verifier: TokenVerifier) -> None:
    await assert_invalid(hs_verifier, hs256(claims(iat=int(time.time()) + 600)))
    await assert_invalid(hs_verifier, hs256(claims(nbf=int(time.time()) + 600)))


@pytest.mark.parametrize("sub", ["not-a-uuid", "", 42, None])
async def test_subject_must_be_a_uuid(hs_verifier: TokenVerifier, sub: object) -> None:
    await assert_invalid(hs_verifier, hs256(claims(sub=sub)))


@pytest.mark.parametrize(
    "sub",
    [
        f"urn:uuid:{USER_ID}",
        f"{{{USER_ID}}}",
        f"{{{str(USER_ID).upper()}}}",
        str(USER_ID).upper(),
        USER_ID.hex,
        "3f1c2a7e5b4d-4c6e-9a8b-1d2e-3f4a5b6c",
    ],
)
async def test_subject_must_be_the_canonical_uuid_text(
    hs_verifier: TokenVerifier, sub: str
) -> None:
    # Python's uuid.UUID reads all of these as the same id; PostgreSQL does not (urn:uuid:), and
    # a user id must have one spelling wherever it is compared.
    assert uuid.UUID(sub) == USER_ID
    error = await assert_invalid(hs_verifier, hs256(claims(sub=sub)))
    assert error.detail == "The access token's subject is not a user id."


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", ["9999999999", "1", True, False, [1], {"n": 1}])
async def test_time_claims_must_be_json_numbers(
    hs_verifier: TokenVerifier, claim: str, value: object
) -> None:
    error = await assert_invalid(hs_verifier, hs256(claims(**{claim: value})))
    assert error.code == "invalid_token"


@pytest.mark.parametrize("claim", ["nbf", "iat"])
async def test_time_claims_may_be_fractional(hs_verifier: TokenVerifier, claim: str) -> None:
    assert (await hs_verifier.verify(hs256(claims(**{claim: time.time() - 1.5})))).id == USER_ID


@pytest.mark.parametrize(
    "extra",
    [{"email": "a\ud800@example.com"}, {"user_metadata": {"x": float("nan")}}, {"k\udc00": 1}],
)
async def test_claims_must_be_storable_json(
    hs_verifier: TokenVerifier, extra: dict[str, Any]
) -> None:
    # They become request.jwt.claims in PostgreSQL, which has no NaN and no lone surrogates.
    error = await assert_invalid(hs_verifier, hs256(claims(**extra)))
    assert error.detail == "The access token's claims are not valid JSON text."


async def test_missing_role_is_invalid(hs_verifier: TokenVerifier) -> None:
    await assert_invalid(hs_verifier, hs256(claims(role=None)))


async def test_anon_key_is_not_a_user(hs_verifier: TokenVerifier) -> None:
    now = int(time.time())
    anon_key = hs256(
        {"iss": "supabase", "ref": "abcdefgh", "role": "anon", "iat": now, "exp": now + 60}
    )
    with pytest.raises(Unauthorized) as info:
        await hs_verifier.verify(anon_key)
    assert type(info.value) is AnonymousToken
    assert anon_key not in str(info.value)


async def test_forged_anon_key_is_still_invalid(hs_verifier: TokenVerifier) -> None:
    now = int(time.time())
    payload = {"iss": "supabase", "role": "anon", "iat": now, "exp": now + 60}
    await assert_invalid(hs_verifier, hs256(payload, secret="not-the-project-secret-but-32-bytes!"))


async def test_service_role_key_is_not_a_user(hs_verifier: TokenVerifier) -> None:
    await assert_invalid(hs_verifier, hs256(claims(role="service_role")))


def test_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenVerifier(jwt_secret="short", jwks_url=None, issuer=None)


def test_a_verifier_needs_a_key_source() -> None:
    with pytest.raises(ValueError, match="JWT secret and/or a JWKS URL"):
        TokenVerifier(jwt_secret=None, jwks_url=None, issuer=None)


# JWKS: algorithm confusion


async def test_hs256_is_refused_when_only_jwks_is_configured(
    jwks_verifier: TokenVerifier, jwks_route: respx.Route
) -> None:
    await assert_invalid(jwks_verifier, hs256(claims()))
    assert jwks_route.call_count == 0  # refused before any key is looked at


async def test_hs256_signed_with_the_jwks_public_key_is_refused(
    jwks_verifier: TokenVerifier, http: httpx.AsyncClient, jwks_route: respx.Route
) -> None:
    for public_key in (ec_key("ec-1").public_key(), rsa_key("rsa-1").public_key()):
        pem = public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        for kid in ("ec-1", "rsa-1"):
            forged = hand_signed_hs256(claims(), pem, {"kid": kid, "typ": "JWT"})
            await assert_invalid(jwks_verifier, forged)
            # Also when a secret is configured too: the secret is the only HMAC key.
            both = make_jwks_verifier(http, jwt_secret=SECRET)
            error = await assert_invalid(both, forged)
            assert "signature" in error.detail


async def test_symmetric_key_published_in_the_jwks_is_never_used(
    router: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    oct_secret = b"an-hmac-key-in-the-jwks-32-bytes-long!"
    router.get(JWKS_URL).mock(
        return_value=httpx.Response(
            200,
            json=jwks(ec_jwk("ec-1"), {"kty": "oct", "kid": "oct-1", "k": b64url(oct_secret)}),
        )
    )
    verifier = make_jwks_verifier(http, min_refresh_interval_seconds=0)
    assert (await verifier.verify(es256(claims(), "ec-1"))).id == USER_ID
    await assert_invalid(verifier, hand_signed_hs256(claims(), oct_secret, {"kid": "oct-1"}))
    # Claiming an asymmetric algorithm does not make the oct key usable either.
    forged = hand_signed_hs256(claims(), oct_secret, {"kid": "oct-1"})
    header = b64url(json.dumps({"alg": "ES256", "kid": "oct-1"}).encode())
    await assert_invalid(verifier, header + forged[forged.index(".") :])


async def test_token_alg_must_match_the_key_alg(jwks_verifier: TokenVerifier) -> None:
    # An ES256 token that names the RSA key's kid: the key is bound to RS256.
    await assert_invalid(jwks_verifier, es256(claims(), "rsa-1", key_name="ec-1"))
    # An RS256 token that names the EC key.
    rs = jwt.encode(claims(), rsa_key("rsa-1"), algorithm="RS256", headers={"kid": "ec-1"})
    await assert_invalid(jwks_verifier, rs)


async def test_asymmetric_token_needs_a_kid(jwks_verifier: TokenVerifier) -> None:
    token = jwt.encode(claims(), ec_key("ec-1"), algorithm="ES256")
    await assert_invalid(jwks_verifier, token)


async def test_asymmetric_token_is_refused_without_a_jwks(hs_verifier: TokenVerifier) -> None:
    await assert_invalid(hs_verifier, es256(claims(), "ec-1"))


# JWKS: verification


async def test_valid_es256_token_from_the_jwks(
    jwks_verifier: TokenVerifier, jwks_route: respx.Route
) -> None:
    payload = claims(app_metadata={"role": "admin"})
    user = await jwks_verifier.verify(es256(payload, "ec-1"))
    assert user == User(
        id=USER_ID, email="alice@example.com", role="authenticated", is_admin=True, claims=payload
    )
    await jwks_verifier.verify(es256(claims(), "ec-1"))
    assert jwks_route.call_count == 1  # cached
    request = jwks_route.calls.last.request
    assert request.method == "GET"


async def test_valid_rs256_token_from_the_jwks(jwks_verifier: TokenVerifier) -> None:
    user = await jwks_verifier.verify(rs256(claims(), "rsa-1"))
    assert user.id == USER_ID


async def test_eddsa_token_from_the_jwks(router: respx.MockRouter, http: httpx.AsyncClient) -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    jwk = {**OKPAlgorithm.to_jwk(private.public_key(), as_dict=True), "kid": "ed-1"}
    router.get(JWKS_URL).mock(return_value=httpx.Response(200, json=jwks(jwk)))
    verifier = make_jwks_verifier(http)
    token = jwt.encode(claims(), private, algorithm="EdDSA", headers={"kid": "ed-1"})
    assert (await verifier.verify(token)).id == USER_ID


async def test_jwks_checks_claims_too(jwks_verifier: TokenVerifier) -> None:
    await assert_invalid(jwks_verifier, es256(claims(exp=int(time.time()) - 5), "ec-1"))
    await assert_invalid(jwks_verifier, es256(claims(aud="other"), "ec-1"))
    await assert_invalid(jwks_verifier, es256(claims(iss="https://other/auth/v1"), "ec-1"))
    await assert_invalid(jwks_verifier, es256(claims(), "ec-1", key_name="someone-else"))


async def test_unusable_keys_in_the_jwks_are_skipped(
    router: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    router.get(JWKS_URL).mock(
        return_value=httpx.Response(
            200,
            json=jwks(
                {"kty": "EC", "crv": "P-999", "kid": "bad-curve", "x": "AA", "y": "AA"},
                {"kty": "WAT", "kid": "bad-kty"},
                {"kty": "RSA", "kid": "no-modulus"},
                "not-an-object",  # type: ignore[arg-type]
                {**ec_jwk("enc-1"), "use": "enc"},
                {k: v for k, v in ec_jwk("no-kid").items() if k != "kid"},
                ec_jwk("ec-1"),
            ),
        )
    )
    verifier = make_jwks_verifier(http)
    assert (await verifier.verify(es256(claims(), "ec-1"))).id == USER_ID
    await assert_invalid(verifier, es256(claims(), "enc-1"))


async def test_unknown_kid_is_invalid(
    jwks_verifier: TokenVerifier, jwks_route: respx.Route
) -> None:
    error = await assert_invalid(jwks_verifier, es256(claims(), "not-in-the-jwks"))
    assert "unknown" in error.detail
    assert jwks_route.call_count == 1


async def test_rotation_to_a_new_key_is_picked_up_on_an_unknown_kid(
    router: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    route = router.get(JWKS_URL).mock(return_value=httpx.Response(200, json=jwks(ec_jwk("old"))))
    verifier = make_jwks_verifier(http, min_refresh_interval_seconds=0)
    assert (await verifier.verify(es256(claims(), "old"))).id == USER_ID

    route.mock(return_value=httpx.Response(200, json=jwks(ec_jwk("new"))))
    assert (await verifier.verify(es256(claims(), "new"))).id == USER_ID
    assert route.call_count == 2
    assert (await verifier.verify(es256(claims(), "new"))).id == USER_ID
    assert route.call_count == 2

    # The old key was revoked: its tokens are refused after the refresh.
    await assert_invalid(verifier, es256(claims(), "old"))


async def test_cache_expires_after_the_ttl(
    router: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    route = router.get(JWKS_URL).mock(return_value=httpx.Response(200, json=jwks(ec_jwk("ec-1"))))
    verifier = make_jwks_verifier(http, jwks_ttl_seconds=600)
    clock = FakeClock()
    verifier._clock = clock
    await verifier.verify(es256(claims(), "ec-1"))
    clock.now += 599
    await verifier.verify(es256(claims(), "ec-1"))
    assert route.call_count == 1
    clock.now += 2
    await verifier.verify(es256(claims(), "ec-1"))
    assert route.call_count == 2


async def test_random_kids_cannot_force_refetches(
    jwks_verifier: TokenVerifier, jwks_route: respx.Route
) -> None:
    clock = FakeClock()
    jwks_verifier._clock = clock
    await jwks_verifier.verify(es256(claims(), "ec-1"))
    assert jwks_route.call_count == 1

    for _ in range(10):
        clock.now += 1
        await assert_invalid(jwks_verifier, es256(claims(), uuid.uuid4().hex, key_name="ec-1"))
    assert jwks_route.call_count == 1  # all within 30 s of the last fetch

    clock.now += 30
    for _ in range(10):
        await assert_invalid(jwks_verifier, es256(claims(), uuid.uuid4().hex, key_name="ec-1"))
    assert jwks_route.call_count == 2  # one refresh for the whole burst

    assert (await jwks_verifier.verify(es256(claims(), "ec-1"))).id == USER_ID
    assert jwks_route.call_count == 2


async def test_concurrent_verifications_share_one_fetch(
    jwks_verifier: TokenVerifier, jwks_route: respx.Route
) -> None:
    tokens = [es256(claims(), "ec-1") for _ in range(20)] + [rs256(claims(), "rsa-1")] * 5
    users = await asyncio.gather(*(jwks_verifier.verify(t) for t in tokens))
    assert {u.id for u in users} == {USER_ID}
    assert jwks_route.call_count == 1


# JWKS: failures


@pytest.mark.parametrize(
    "failure",
    [
        httpx.ConnectError("connection refused"),
        httpx.ReadTimeout("timed out"),
        httpx.Response(500, text="oops"),
        httpx.Response(404),
        httpx.Response(200, text="<html>not json</html>"),
        httpx.Response(200, json=["not", "an", "object"]),
        httpx.Response(200, json={"keys": []}),
        httpx.Response(200, json={"keys": [{"kty": "WAT", "kid": "x"}]}),
        httpx.Response(200, json={"keys": [{"kty": "oct", "kid": "x", "k": b64url(b"k" * 32)}]}),
    ],
)
async def test_jwks_unavailable_with_nothing_cached_is_service_unavailable(
    router: respx.MockRouter, http: httpx.AsyncClient, failure: Exception | httpx.Response
) -> None:
    route = router.get(JWKS_URL)
    if isinstance(failure, httpx.Response):
        route.mock(return_value=failure)
    else:
        route.mock(side_effect=failure)
    verifier = make_jwks_verifier(http)
    token = es256(claims(), "ec-1")
    with pytest.raises(ServiceUnavailable, match="could not fetch signing keys") as info:
        await verifier.verify(token)
    assert token not in str(info.value)


async def test_jwks_down_but_cached_keeps_verifying(
    jwks_verifier: TokenVerifier, jwks_route: respx.Route
) -> None:
    clock = FakeClock()
    jwks_verifier._clock = clock
    await jwks_verifier.verify(es256(claims(), "ec-1"))
    jwks_route.mock(side_effect=httpx.ConnectError("down"))

    # Fresh cache: no fetch needed for a known kid.
    clock.now += 10
    assert (await jwks_verifier.verify(es256(claims(), "ec-1"))).id == USER_ID
    # An unknown kid tries a refresh, fails, and falls back to the cached set: still unknown.
    clock.now += 60
    await assert_invalid(jwks_verifier, es256(claims(), "rotated", key_name="ec-1"))
    assert jwks_route.call_count == 2
    assert (await jwks_verifier.verify(es256(claims(), "ec-1"))).id == USER_ID

    # Past the TTL the refresh fails, but the stale set is still usable for a while.
    clock.now += 600
    assert (await jwks_verifier.verify(rs256(claims(), "rsa-1"))).id == USER_ID
    assert jwks_route.call_count == 3

    # Too stale: our failure, not the caller's.
    clock.now += 3600
    with pytest.raises(ServiceUnavailable):
        await jwks_verifier.verify(es256(claims(), "ec-1"))


async def test_failed_fetches_are_throttled_then_retried(
    router: respx.MockRouter, http: httpx.AsyncClient
) -> None:
    route = router.get(JWKS_URL).mock(side_effect=httpx.ConnectError("down"))
    verifier = make_jwks_verifier(http)
    clock = FakeClock()
    verifier._clock = clock
    for _ in range(5):
        with pytest.raises(ServiceUnavailable):
            await verifier.verify(es256(claims(), "ec-1"))
    assert route.call_count == 1

    route.mock(side_effect=None, return_value=httpx.Response(200, json=jwks(ec_jwk("ec-1"))))
    clock.now += 30
    assert (await verifier.verify(es256(claims(), "ec-1"))).id == USER_ID
    assert route.call_count == 2


# Construction and lifecycle


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("APP_ENV", "SUPABASE_URL", "SUPABASE_JWT_SECRET"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.usefixtures("clean_env")
async def test_from_settings_uses_the_project_jwks_and_issuer(
    jwks_route: respx.Route,
) -> None:
    settings = get_settings(
        _env_file=None, supabase_url=SUPABASE_URL + "/", supabase_jwt_secret=None
    )
    verifier = TokenVerifier.from_settings(settings)
    try:
        assert (await verifier.verify(es256(claims(), "ec-1"))).id == USER_ID
        await assert_invalid(verifier, hs256(claims()))  # no secret: asymmetric only
        await assert_invalid(verifier, es256(claims(iss="http://127.0.0.1:54321/auth/v1"), "ec-1"))
    finally:
        await verifier.aclose()
    assert jwks_route.call_count == 1


@pytest.mark.usefixtures("clean_env")
async def test_from_settings_local_stack_uses_the_secret_only() -> None:
    settings = get_settings(_env_file=None, supabase_jwt_secret=SECRET)
    verifier = TokenVerifier.from_settings(settings)
    user = await verifier.verify(hs256(claims(iss="http://127.0.0.1:54321/auth/v1")))
    assert user.id == USER_ID
    await assert_invalid(verifier, es256(claims(), "ec-1"))
    await verifier.aclose()


async def test_aclose_closes_only_a_client_it_created(
    jwks_route: respx.Route, http: httpx.AsyncClient
) -> None:
    shared = make_jwks_verifier(http)
    await shared.verify(es256(claims(), "ec-1"))
    await shared.aclose()
    assert not http.is_closed

    own = TokenVerifier(jwt_secret=None, jwks_url=JWKS_URL, issuer=ISSUER)
    await own.verify(es256(claims(), "ec-1"))
    client = own._http
    assert client is not None
    await own.aclose()
    assert client.is_closed
    await own.aclose()  # idempotent


# bearer_token


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("   ", None),
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc.def.ghi", "abc.def.ghi"),
        ("BEARER abc.def.ghi", "abc.def.ghi"),
        ("  Bearer   abc.def-_ghi  ", "abc.def-_ghi"),
        ("Bearer abc+/~=", "abc+/~="),
    ],
)
def test_bearer_token_parses(header: str | None, expected: str | None) -> None:
    assert bearer_token(header) == expected


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "abc.def.ghi",
        "Basic dXNlcjpwYXNz",
        "Token abc",
        "Bearer abc def",
        "Bearer abc,def",
        "Bearer=abc",
        "Bearer\tabc",
        'Bearer "abc"',
        "Bearer ab=c",
    ],
)
def test_bearer_token_rejects_malformed_headers(header: str) -> None:
    with pytest.raises(InvalidToken) as info:
        bearer_token(header)
    assert "dXNlcjpwYXNz" not in str(info.value)
