from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agentmarket.core.errors import FieldError, InvalidConfig
from agentmarket.core.paths import seeds_dir
from agentmarket.domain.configschema import FORMAT_CHECKER, secret_fields, validate_config

GOOD_KEY = "sk-" + "a1B2c3D4e5F6g7H8i9J0" * 2

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": ["company_name", "knowledge_base", "openai_api_key"],
    "dependentRequired": {"webhook_token": ["webhook_url"]},
    "properties": {
        "company_name": {"type": "string", "minLength": 1, "maxLength": 20},
        "tone": {"type": "string", "enum": ["friendly", "formal"], "default": "friendly"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2, "default": 0.7},
        "knowledge_base": {
            "type": "array",
            "minItems": 1,
            "maxItems": 20,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["title", "content"],
                "properties": {
                    "title": {"type": "string", "minLength": 1, "maxLength": 50},
                    "content": {"type": "string", "minLength": 1},
                    "pinned": {"type": "boolean", "default": False},
                },
            },
        },
        "style": {
            "type": "object",
            "default": {},
            "properties": {
                "emoji": {"type": "boolean", "default": False},
                "signature": {"type": "string", "default": "— The team"},
            },
        },
        "docs_url": {"type": "string", "format": "uri"},
        "escalation_email": {"type": "string", "format": "email"},
        "webhook_url": {"type": "string", "format": "uri"},
        "openai_api_key": {
            "type": "string",
            "writeOnly": True,
            "pattern": "^sk-[A-Za-z0-9_-]{20,}$",
            "maxLength": 256,
        },
        "webhook_token": {"type": "string", "writeOnly": True, "minLength": 8},
    },
}

ARTICLE = {"title": "Refunds", "content": "Within 30 days."}


def valid(**overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "company_name": "Acme",
        "knowledge_base": [dict(ARTICLE)],
        "openai_api_key": GOOD_KEY,
    }
    config.update(overrides)
    return config


def errors_of(config: Any, schema: dict[str, Any] | None = None, **kwargs: Any) -> list[FieldError]:
    with pytest.raises(InvalidConfig) as excinfo:
        validate_config(schema or SCHEMA, config, **kwargs)
    return excinfo.value.errors


# --- valid configs and defaults --------------------------------------------------------------


def test_valid_config_gets_defaults_recursively() -> None:
    result = validate_config(SCHEMA, valid())
    assert result.public == {
        "company_name": "Acme",
        "tone": "friendly",
        "temperature": 0.7,
        "knowledge_base": [{"title": "Refunds", "content": "Within 30 days.", "pinned": False}],
        "style": {"emoji": False, "signature": "— The team"},
    }
    assert result.secrets == {"openai_api_key": GOOD_KEY}
    assert result.missing_required == []


def test_nested_defaults_fill_only_absent_fields() -> None:
    config = valid(style={"emoji": True}, knowledge_base=[{**ARTICLE, "pinned": True}, ARTICLE])
    result = validate_config(SCHEMA, config)
    assert result.public["style"] == {"emoji": True, "signature": "— The team"}
    assert [a["pinned"] for a in result.public["knowledge_base"]] == [True, False]


def test_agent_defaults_merge_under_the_users_config() -> None:
    defaults = {"company_name": "Default Co", "tone": "formal", "temperature": 1.5}
    result = validate_config(SCHEMA, valid(temperature=0.1), defaults=defaults)
    assert result.public["company_name"] == "Acme"  # the user's value wins
    assert result.public["tone"] == "formal"  # the agent default beats the schema default
    assert result.public["temperature"] == 0.1


def test_agent_defaults_never_supply_secrets() -> None:
    config = valid()
    del config["openai_api_key"]
    defaults = {"openai_api_key": GOOD_KEY, "company_name": "Default Co"}
    assert errors_of(config, defaults=defaults) == [
        FieldError("/config/openai_api_key", "is required")
    ]


def test_inputs_and_schema_are_not_mutated() -> None:
    schema = copy.deepcopy(SCHEMA)
    config = valid(style={})
    before = copy.deepcopy(config)
    defaults = {"tone": "formal"}
    result = validate_config(schema, config, defaults=defaults)
    result.public["style"]["emoji"] = "changed"
    assert config == before
    assert schema == SCHEMA
    assert defaults == {"tone": "formal"}
    assert validate_config(schema, valid()).public["style"] == {
        "emoji": False,
        "signature": "— The team",
    }


# --- errors ----------------------------------------------------------------------------------


def test_every_error_is_reported_at_once_with_pointers() -> None:
    config = {
        "company_name": "",
        "tone": "rude",
        "temperature": 3,
        "knowledge_base": [ARTICLE, {"title": "x" * 51}, {"title": 5, "content": "c", "bad": 1}],
        "docs_url": "not a url",
        "escalation_email": "nobody",
        "openai_api_key": "pk-live-123",
        "surprise": True,
    }
    assert errors_of(config) == [
        FieldError("/config/company_name", "must not be empty"),
        FieldError("/config/docs_url", "must be a valid URL"),
        FieldError("/config/escalation_email", "must be a valid email address"),
        FieldError("/config/knowledge_base/1/content", "is required"),
        FieldError("/config/knowledge_base/1/title", "must be at most 50 characters"),
        FieldError("/config/knowledge_base/2/bad", "is not allowed"),
        FieldError("/config/knowledge_base/2/title", "must be a string"),
        FieldError("/config/openai_api_key", "is not in the expected format"),
        FieldError("/config/surprise", "is not allowed"),
        FieldError("/config/temperature", "must be at most 2"),
        FieldError("/config/tone", "must be one of: friendly, formal"),
    ]


def test_errors_are_sorted_with_numeric_indices() -> None:
    articles = [dict(ARTICLE) for _ in range(12)]
    articles[2]["title"] = ""
    articles[10]["title"] = ""
    paths = [e.path for e in errors_of(valid(knowledge_base=articles))]
    assert paths == ["/config/knowledge_base/2/title", "/config/knowledge_base/10/title"]


def test_missing_required() -> None:
    assert errors_of({"tone": "formal"}) == [
        FieldError("/config/company_name", "is required"),
        FieldError("/config/knowledge_base", "is required"),
        FieldError("/config/openai_api_key", "is required"),
    ]


def test_additional_properties_each_named() -> None:
    errors = errors_of(valid(extra_one=1, extra_two="x", **{"a/b~c": 0}))
    assert errors == [
        FieldError("/config/a~1b~0c", "is not allowed"),
        FieldError("/config/extra_one", "is not allowed"),
        FieldError("/config/extra_two", "is not allowed"),
    ]


def test_odd_property_names_sort_and_escape() -> None:
    errors = errors_of(valid(**{"²": 1, "10": 1, "9": 1, "~": 1}))
    assert [e.path for e in errors] == ["/config/9", "/config/10", "/config/~0", "/config/²"]


def test_pattern_properties_are_not_additional() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {"a": {"type": "string"}},
        "patternProperties": {"^x_": {"type": "integer"}},
    }
    assert validate_config(schema, {"a": "1", "x_n": 2}).public == {"a": "1", "x_n": 2}
    assert errors_of({"y": 1, "x_n": "no"}, schema) == [
        FieldError("/config/x_n", "must be an integer"),
        FieldError("/config/y", "is not allowed"),
    ]


@pytest.mark.parametrize("value", ["friendly", "formal"])
def test_enum_accepts_listed_values(value: str) -> None:
    assert validate_config(SCHEMA, valid(tone=value)).public["tone"] == value


@pytest.mark.parametrize("value", ["Friendly", "", "casual"])
def test_enum_refuses_others(value: str) -> None:
    assert errors_of(valid(tone=value)) == [
        FieldError("/config/tone", "must be one of: friendly, formal")
    ]


def test_uri_and_email_formats_are_checked() -> None:
    # `uri` needs rfc3986-validator (or rfc3987) importable; without it jsonschema skips it.
    assert {"uri", "email"} <= set(FORMAT_CHECKER.checkers)


@pytest.mark.parametrize(
    "url",
    [
        "https://docs.example.com",
        "https://example.com/a/b?c=d#e",
        "HTTPS://Docs.Example.com:8443/x",
        "https://93.184.215.14/",
        "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]/",
        "https://localhost.example.com/",
        "https://1.2.3.example/",
        "https://docs.example.com./",
    ],
)
def test_good_urls(url: str) -> None:
    assert validate_config(SCHEMA, valid(docs_url=url)).public["docs_url"] == url
    assert validate_config(SCHEMA, valid(webhook_url=url)).public["webhook_url"] == url


def url_errors(url: str, *, allow_http_urls: bool = False) -> list[FieldError]:
    return errors_of(valid(webhook_url=url), allow_http_urls=allow_http_urls)


@pytest.mark.parametrize(
    "url",
    [
        "http://docs.example.com",
        "ftp://example.com/file",
        "file:///etc/passwd",
        "gopher://example.com:70/_x",
        "javascript:alert(1)",
        "data:text/html,hi",
        "ws://example.com/socket",
    ],
)
def test_only_https_urls(url: str) -> None:
    assert url_errors(url) == [FieldError("/config/webhook_url", "must be an https:// URL")]


def test_http_urls_when_the_setting_allows_them() -> None:
    url = "http://docs.example.com/a"
    result = validate_config(SCHEMA, valid(docs_url=url), allow_http_urls=True)
    assert result.public["docs_url"] == url
    assert url_errors("file:///etc/passwd", allow_http_urls=True) == [
        FieldError("/config/webhook_url", "must be an http:// or https:// URL")
    ]
    assert url_errors("http://127.0.0.1:8080/", allow_http_urls=True) == [
        FieldError("/config/webhook_url", NON_PUBLIC)
    ]
    assert url_errors("http://localhost:8080/", allow_http_urls=True) == [
        FieldError("/config/webhook_url", "must not point to localhost")
    ]


@pytest.mark.parametrize(
    "url",
    ["https://user:pass@example.com/", "https://user@example.com/", "https://:pw@example.com/"],
)
def test_credentials_in_urls_are_refused(url: str) -> None:
    assert url_errors(url) == [
        FieldError("/config/webhook_url", "must not contain a user name or password")
    ]


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost/",
        "https://LOCALHOST:443/x",
        "https://localhost./",
        "https://a.b.localhost/",
    ],
)
def test_localhost_is_refused(url: str) -> None:
    assert url_errors(url) == [FieldError("/config/webhook_url", "must not point to localhost")]


NON_PUBLIC = "must not point to a private, loopback, link-local, multicast or reserved IP address"


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "127.1",  # WHATWG/inet_aton short forms, decimal, octal and hex: what HTTP clients do
        "2130706433",
        "0x7f000001",
        "0x7f.0.0.1",
        "0177.0.0.1",
        "017700000001",
        "127.0.0.1.",
        "0",
        "0.0.0.0",  # noqa: S104 - a URL host here, nothing binds to it
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # carrier-grade NAT
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "192.0.2.1",  # documentation
        "[::1]",
        "[::]",
        "[0:0:0:0:0:0:0:1]",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[::ffff:10.0.0.1]",
        "[::127.0.0.1]",
        "[fe80::1]",
        "[fc00::1]",
        "[fd12:3456::1]",
        "[ff02::1]",
        "[2001:db8::1]",
        "[2002:7f00:1::]",  # 6to4 wrapping 127.0.0.1
        "[64:ff9b::a00:1]",
    ],
)
def test_non_public_ip_literals_are_refused(host: str) -> None:
    assert url_errors(f"https://{host}/hook") == [FieldError("/config/webhook_url", NON_PUBLIC)]


@pytest.mark.parametrize(
    "url",
    [
        "https://256.0.0.1/",  # looks numeric, so it is an IPv4 address, and an invalid one
        "https://1.2.3.4.5/",
        "https://0x100000000/",
        "https://09.0.0.1/",
        "https://%31%32%37.0.0.1/",
        "https://[fe80::1%25eth0]/",
        "https://[v1.fe]/",
        "https:///path",
        "https://a..b/",
        "https://example.com:99999/",
    ],
)
def test_hosts_that_are_not_valid_are_refused(url: str) -> None:
    assert url_errors(url) == [FieldError("/config/webhook_url", "must be a valid URL")]


@given(url=st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_url_checks_never_crash(url: str) -> None:
    errors: list[FieldError] = []
    try:
        validate_config(SCHEMA, valid(webhook_url="https://" + url))
    except InvalidConfig as exc:
        errors = exc.errors
    assert {e.path for e in errors} <= {"/config/webhook_url"}


@pytest.mark.parametrize(
    "url", ["not a url", "docs.example.com", "https://exa mple.com", "/relative/path", ""]
)
def test_bad_urls(url: str) -> None:
    assert errors_of(valid(docs_url=url)) == [FieldError("/config/docs_url", "must be a valid URL")]


@pytest.mark.parametrize("email", ["hr@example.com", "first.last+tag@mail.example.co.uk"])
def test_good_emails(email: str) -> None:
    assert (
        validate_config(SCHEMA, valid(escalation_email=email)).public["escalation_email"] == email
    )


@pytest.mark.parametrize("email", ["nobody", "a@", "@example.com", "a b@example.com", "a@b", ""])
def test_bad_emails(email: str) -> None:
    assert errors_of(valid(escalation_email=email)) == [
        FieldError("/config/escalation_email", "must be a valid email address")
    ]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("sk-short", "is not in the expected format"),
        ("sk-" + "x" * 300, "must be at most 256 characters"),
        (12345, "must be a string"),
        (None, "must be a string"),
        (["sk-" + "x" * 30], "must be a string"),
    ],
)
def test_bad_api_keys(value: Any, message: str) -> None:
    assert FieldError("/config/openai_api_key", message) in errors_of(valid(openai_api_key=value))


def test_non_string_secret_without_a_type_is_refused() -> None:
    schema = {"type": "object", "properties": {"token": {"writeOnly": True}}}
    assert errors_of({"token": 42}, schema) == [FieldError("/config/token", "must be a string")]
    assert validate_config(schema, {"token": "abc"}).secrets == {"token": "abc"}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("temperature", -1, "must be at least 0"),
        ("temperature", "hot", "must be a number"),
        ("knowledge_base", [], "must have at least 1 item"),
        ("knowledge_base", [ARTICLE] * 21, "must have at most 20 items"),
        ("knowledge_base", "articles", "must be an array"),
        ("style", [], "must be an object"),
        ("company_name", "x" * 21, "must be at most 20 characters"),
    ],
)
def test_messages(field: str, value: Any, message: str) -> None:
    assert errors_of(valid(**{field: value})) == [FieldError(f"/config/{field}", message)]


def test_dependent_required() -> None:
    assert errors_of(valid(webhook_token="token-123456")) == [
        FieldError("/config/webhook_url", "is required when webhook_token is set")
    ]
    result = validate_config(
        SCHEMA, valid(webhook_token="token-123456", webhook_url="https://hooks.example.com/x")
    )
    assert result.secrets == {"openai_api_key": GOOD_KEY, "webhook_token": "token-123456"}
    assert result.public["webhook_url"] == "https://hooks.example.com/x"


@pytest.mark.parametrize("config", [None, [], "config", 3, True])
def test_config_must_be_an_object(config: Any) -> None:
    assert errors_of(config) == [FieldError("/config", "must be an object")]


def test_any_of_reports_the_best_matching_branch_error() -> None:
    schema = {
        "type": "object",
        "properties": {
            "limit": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}]},
            "mode": {"oneOf": [{"const": "a"}, {"const": "b"}]},
        },
    }
    assert validate_config(schema, {"limit": None, "mode": "a"}).public == {
        "limit": None,
        "mode": "a",
    }
    assert errors_of({"limit": 0, "mode": "c"}, schema) == [
        FieldError("/config/limit", "must be at least 1"),
        FieldError("/config/mode", "must be one of: a, b"),
    ]
    assert errors_of({"limit": "many"}, schema) == [
        FieldError("/config/limit", "must be an integer or null")
    ]


def test_one_of_matching_several_branches() -> None:
    schema = {"type": "object", "properties": {"n": {"oneOf": [{"minimum": 0}, {"maximum": 10}]}}}
    assert errors_of({"n": 5}, schema) == [
        FieldError("/config/n", "matches more than one of the allowed forms")
    ]


def test_other_keywords_get_a_generic_message() -> None:
    schema = {"type": "object", "properties": {"n": {"not": {"type": "string"}}}}
    assert errors_of({"n": "secret-ish"}, schema) == [FieldError("/config/n", "is invalid")]


# --- secrets never leak ----------------------------------------------------------------------


def _all_messages(config: dict[str, Any]) -> list[str]:
    try:
        validate_config(SCHEMA, config)
    except InvalidConfig as exc:
        return [exc.detail, *(f"{e.path} {e.message}" for e in exc.errors)]
    return []


@settings(database=None, max_examples=200, deadline=None)
@given(
    secret=st.one_of(
        st.text(min_size=6, max_size=300),
        st.from_regex(r"sk-[A-Za-z0-9_-]{3,40}[^A-Za-z0-9_-]?", fullmatch=True),
    )
)
def test_no_error_message_contains_the_secret(secret: str) -> None:
    # Other invalid fields too, so that many kinds of message are produced alongside.
    base = valid(docs_url="nope", tone="loud", knowledge_base=[{"title": ""}], extra=1)
    baseline = _all_messages({**base, "openai_api_key": "sk-?"})
    assume(not any(secret in text for text in baseline))
    for config in (
        {**base, "openai_api_key": secret},
        {**valid(), "openai_api_key": secret},
        {**valid(), "webhook_token": secret},
        {**valid(), "openai_api_key": [secret]},
    ):
        for text in _all_messages(config):
            assert secret not in text


# --- secrets: split, keep, empty -------------------------------------------------------------


def test_secret_fields() -> None:
    assert secret_fields(SCHEMA) == {"openai_api_key", "webhook_token"}
    assert secret_fields({"type": "object"}) == set()
    assert secret_fields({"properties": {"a": {"writeOnly": False}, "b": True}}) == set()


def test_secrets_are_split_from_public() -> None:
    result = validate_config(
        SCHEMA,
        valid(webhook_url="https://hooks.example.com/x", webhook_token="token-123456"),
    )
    assert "openai_api_key" not in result.public
    assert "webhook_token" not in result.public
    assert GOOD_KEY not in repr(result.public)
    assert result.secrets == {"openai_api_key": GOOD_KEY, "webhook_token": "token-123456"}


def test_empty_secret_counts_as_absent() -> None:
    assert errors_of(valid(openai_api_key="")) == [
        FieldError("/config/openai_api_key", "is required")
    ]
    result = validate_config(SCHEMA, valid(openai_api_key=""), keep_secrets=["openai_api_key"])
    assert result.secrets == {}
    # an empty optional secret is simply dropped, and does not trigger dependentRequired
    assert validate_config(SCHEMA, valid(webhook_token="")).secrets == {"openai_api_key": GOOD_KEY}


def test_kept_secrets_satisfy_required() -> None:
    config = valid()
    del config["openai_api_key"]
    result = validate_config(SCHEMA, config, keep_secrets=["openai_api_key"])
    assert result.secrets == {}
    assert "openai_api_key" not in result.public
    assert result.missing_required == []


def test_kept_secret_satisfies_dependent_required_only_on_its_own_side() -> None:
    assert errors_of(valid(), keep_secrets=["webhook_token"]) == [
        FieldError("/config/webhook_url", "is required when webhook_token is set")
    ]
    result = validate_config(
        SCHEMA, valid(webhook_url="https://hooks.example.com/x"), keep_secrets=["webhook_token"]
    )
    assert result.secrets == {"openai_api_key": GOOD_KEY}


def test_a_new_secret_replaces_a_kept_one_and_is_validated() -> None:
    result = validate_config(
        SCHEMA, valid(openai_api_key=GOOD_KEY + "Z"), keep_secrets=["openai_api_key"]
    )
    assert result.secrets == {"openai_api_key": GOOD_KEY + "Z"}
    assert errors_of(valid(openai_api_key="bad"), keep_secrets=["openai_api_key"]) == [
        FieldError("/config/openai_api_key", "is not in the expected format")
    ]


def test_keep_secrets_only_applies_to_secret_fields() -> None:
    config = valid()
    del config["company_name"]
    assert errors_of(config, keep_secrets=["company_name"]) == [
        FieldError("/config/company_name", "is required")
    ]


# --- partial mode ----------------------------------------------------------------------------


def test_partial_lists_missing_required() -> None:
    result = validate_config(SCHEMA, {"company_name": "Acme"}, partial=True)
    assert result.missing_required == ["knowledge_base", "openai_api_key"]
    assert result.public["company_name"] == "Acme"
    assert result.public["tone"] == "friendly"
    assert result.secrets == {}


def test_partial_respects_kept_secrets() -> None:
    result = validate_config(
        SCHEMA, {"company_name": "Acme"}, partial=True, keep_secrets=["openai_api_key"]
    )
    assert result.missing_required == ["knowledge_base"]


def test_partial_still_fails_on_other_errors() -> None:
    config = {"company_name": "Acme", "tone": "loud", "knowledge_base": [{"title": "t"}]}
    assert errors_of(config, partial=True) == [
        FieldError("/config/knowledge_base/0/content", "is required"),
        FieldError("/config/tone", "must be one of: friendly, formal"),
    ]
    assert errors_of({"webhook_token": "token-123456"}, partial=True) == [
        FieldError("/config/webhook_url", "is required when webhook_token is set")
    ]


def test_partial_with_nothing_missing() -> None:
    assert validate_config(SCHEMA, valid(), partial=True).missing_required == []


# --- the catalog -----------------------------------------------------------------------------

SEED_FILES = sorted((seeds_dir() / "agents").glob("*.yaml"))


def _dummy_secrets(schema: dict[str, Any]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    for name in secret_fields(schema):
        secrets[name] = GOOD_KEY if name == "openai_api_key" else "dummy-secret-value-1234"
    return secrets


def test_catalog_is_present() -> None:
    assert len(SEED_FILES) >= 10


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: p.stem)
def test_each_seed_schema_accepts_its_defaults(path: Path) -> None:
    agent = yaml.safe_load(path.read_text(encoding="utf-8"))
    schema, defaults = agent["config_schema"], agent["default_config"]
    secrets = _dummy_secrets(schema)
    config: dict[str, Any] = dict(secrets)
    dependent = schema.get("dependentRequired", {})
    for name in secrets:
        for needed in dependent.get(name, []):
            config.setdefault(needed, defaults.get(needed, "https://hooks.example.com/agent"))

    result = validate_config(schema, config, defaults=defaults)
    assert result.secrets == secrets
    assert result.missing_required == []
    for name, value in defaults.items():
        assert result.public[name] == value
    assert not secret_fields(schema) & set(result.public)

    # Without secrets, the defaults alone are a valid partial config missing only secrets.
    partial = validate_config(schema, {}, defaults=defaults, partial=True)
    assert set(partial.missing_required) <= secret_fields(schema)
    added = set(config) - set(secrets) - set(defaults)
    assert partial.public == {k: v for k, v in result.public.items() if k not in added}
