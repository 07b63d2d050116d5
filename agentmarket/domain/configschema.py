"""Validate a deployment's config against its agent's `config_schema` (JSON Schema 2020-12).

What goes in: the `config` object of a deploy/reconfigure request. What comes out: the non-secret
fields with defaults applied (stored in `agent_deployments.config`), the secret (`writeOnly`) fields
to be sealed into `private.deployment_secrets`, and, in partial mode, the required fields still
missing. What is refused: `InvalidConfig` listing every problem at once, each as a JSON Pointer into
the request body ("/config/...") with a short message of our own. jsonschema's messages quote the
offending value, which for a secret field would be the secret itself, so none of them is ever used.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from jsonschema.exceptions import ValidationError, best_match

from agentmarket.core.errors import FieldError, InvalidConfig
from agentmarket.domain.urls import url_problem

__all__ = [
    "CONFIG_POINTER",
    "FORMAT_CHECKER",
    "KNOWLEDGE_BASE",
    "RefusedURL",
    "ValidatedConfig",
    "knowledge_base_bytes",
    "secret_fields",
    "validate_config",
]

CONFIG_POINTER = "/config"
KNOWLEDGE_BASE = "knowledge_base"

_TYPE_NAMES = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "object": "an object",
    "array": "an array",
    "null": "null",
}

_FORMAT_NAMES = {
    "uri": "URL",
    "uri-reference": "URL or relative reference",
    "iri": "URL",
    "email": "email address",
    "idn-email": "email address",
    "date": "date (YYYY-MM-DD)",
    "date-time": "date and time (RFC 3339)",
    "time": "time (HH:MM:SS)",
    "uuid": "UUID",
    "ipv4": "IPv4 address",
    "ipv6": "IPv6 address",
    "hostname": "host name",
    "regex": "regular expression",
}

_MAX_ENUM_LISTED = 12

# jsonschema's own `email` check only asks for an "@"; a support address needs a bit more.
_EMAIL = re.compile(r"[^@\s]+@[^@\s.]+(?:\.[^@\s.]+)+")


def _is_email(instance: object) -> bool:
    return not isinstance(instance, str) or _EMAIL.fullmatch(instance) is not None


class RefusedURL(ValueError):
    """A well-formed URL the policy refuses; its message completes "the field …"."""


def _policy_uri_check(*, allow_http: bool) -> Callable[[object], bool]:
    syntax = Draft202012Validator.FORMAT_CHECKER.checkers.get("uri", (None, ()))[0]

    def is_allowed_uri(instance: object) -> bool:
        if not isinstance(instance, str):
            return True
        if syntax is not None and not syntax(instance):
            return False
        problem = url_problem(instance, allow_http=allow_http)
        if problem is not None:
            raise RefusedURL(problem)
        return True

    return is_allowed_uri


def _format_checker(*, allow_http_urls: bool = False) -> FormatChecker:
    """Draft 2020-12's checkers plus a stricter `email` and our URL policy on `uri`.

    `uri` syntax is only checked when `rfc3986-validator` (or `rfc3987`) is importable: jsonschema
    registers that checker silently when it is. The unit tests assert it is registered. On top of
    the syntax, `agentmarket.urls` decides which URLs are allowed (https, public hosts, no
    credentials; http too with `allow_http_urls`).
    """
    checker = FormatChecker(formats=())
    checker.checkers.update(Draft202012Validator.FORMAT_CHECKER.checkers)
    checker.checks("email")(_is_email)
    checker.checks("uri", raises=RefusedURL)(_policy_uri_check(allow_http=allow_http_urls))
    return checker


FORMAT_CHECKER = _format_checker()
_FORMAT_CHECKERS = {False: FORMAT_CHECKER, True: _format_checker(allow_http_urls=True)}

# Stands in for a secret kept from an earlier save while validating, so that `required`,
# `dependentRequired`, `if`/`then` and the like see the field as present.
_KEPT = "kept-secret-placeholder"


@dataclass(frozen=True)
class ValidatedConfig:
    public: dict[str, Any]  # non-secret fields, schema defaults applied
    secrets: dict[str, str]  # top-level writeOnly string fields present in the input
    missing_required: list[str]  # top-level required fields still missing (partial mode only)


def secret_fields(schema: Mapping[str, Any]) -> set[str]:
    """Top-level properties marked `writeOnly: true`."""
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        return set()
    return {
        name
        for name, sub in properties.items()
        if isinstance(sub, Mapping) and sub.get("writeOnly") is True
    }


def validate_config(
    schema: Mapping[str, Any],
    config: Any,
    *,
    defaults: Mapping[str, Any] | None = None,
    keep_secrets: Iterable[str] = (),
    partial: bool = False,
    allow_http_urls: bool = False,
    max_knowledge_base_bytes: int | None = None,
) -> ValidatedConfig:
    """Validate `config`, or raise `InvalidConfig` with every problem found.

    In order: the agent's `defaults` (its default_config) fill absent top-level non-secret fields;
    schema `default`s fill absent properties, recursively (array items included); then the result
    is validated. An empty-string secret counts as absent. `keep_secrets` names secrets already
    stored for the deployment: they satisfy `required` without being sent again. With `partial`,
    missing top-level required fields are returned in `missing_required` instead of failing.
    `format: uri` fields must be https URLs of public hosts (`agentmarket.urls`); with
    `allow_http_urls` (the ALLOW_HTTP_URLS setting, for development) http ones too.
    `max_knowledge_base_bytes` (MAX_KNOWLEDGE_BASE_BYTES) caps the `knowledge_base` field, as
    compact UTF-8 JSON (`knowledge_base_bytes`).
    """
    if not isinstance(config, Mapping):
        raise InvalidConfig(errors=[FieldError(CONFIG_POINTER, "must be an object")])

    secret_names = secret_fields(schema)
    data: dict[str, Any] = copy.deepcopy(dict(config))
    for name in secret_names:
        if data.get(name) == "":
            del data[name]
    supplied_secrets = {name: data[name] for name in secret_names if name in data}

    for name, value in (defaults or {}).items():
        if name not in secret_names and name not in data:
            data[name] = copy.deepcopy(value)
    _apply_schema_defaults(schema, data, skip=secret_names)

    kept = {name for name in keep_secrets if name in secret_names and name not in data}
    for name in kept:
        data[name] = _KEPT

    problems: set[FieldError] = {
        FieldError(_pointer((name,)), "must be a string")
        for name, value in supplied_secrets.items()
        if not isinstance(value, str)
    }
    problems.update(_size_problems(data, max_knowledge_base_bytes))
    missing: set[str] = set()
    validator = Draft202012Validator(schema, format_checker=_FORMAT_CHECKERS[allow_http_urls])
    for error in validator.iter_errors(data):
        if partial and error.validator == "required" and not error.absolute_path:
            missing.update(_missing_properties(error))
            continue
        problems.update(_describe(error))

    kept_pointers = [_pointer((name,)) for name in kept]
    problems = {
        p
        for p in problems
        if not any(p.path == k or p.path.startswith(k + "/") for k in kept_pointers)
    }
    if problems:
        raise InvalidConfig(errors=sorted(problems, key=_sort_key))

    return ValidatedConfig(
        public={k: v for k, v in data.items() if k not in secret_names},
        secrets={k: v for k, v in supplied_secrets.items() if isinstance(v, str)},
        missing_required=sorted(missing),
    )


def knowledge_base_bytes(value: Any) -> int:
    """The size of a `knowledge_base` value as compact UTF-8 JSON (what the cap measures)."""
    return len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def _size_problems(
    data: Mapping[str, Any], max_knowledge_base_bytes: int | None
) -> set[FieldError]:
    if max_knowledge_base_bytes is None or KNOWLEDGE_BASE not in data:
        return set()
    if knowledge_base_bytes(data[KNOWLEDGE_BASE]) <= max_knowledge_base_bytes:
        return set()
    message = f"must be at most {max_knowledge_base_bytes} bytes as compact UTF-8 JSON"
    return {FieldError(_pointer((KNOWLEDGE_BASE,)), message)}


def _apply_schema_defaults(schema: Any, instance: Any, *, skip: Iterable[str] = ()) -> None:
    """Fill absent properties from `default`, descending into objects and array items."""
    if not isinstance(schema, Mapping):
        return
    if isinstance(instance, dict):
        properties = schema.get("properties")
        if isinstance(properties, Mapping):
            skipped = set(skip)
            for name, sub in properties.items():
                if not isinstance(sub, Mapping) or name in skipped:
                    continue
                if name not in instance and "default" in sub:
                    instance[name] = copy.deepcopy(sub["default"])
                if name in instance:
                    _apply_schema_defaults(sub, instance[name])
    elif isinstance(instance, list):
        prefix_items = schema.get("prefixItems")
        prefix = list(prefix_items) if isinstance(prefix_items, list) else []
        items = schema.get("items")
        for index, item in enumerate(instance):
            _apply_schema_defaults(prefix[index] if index < len(prefix) else items, item)


def _describe(error: ValidationError) -> Iterator[FieldError]:
    """Our own message(s) for one jsonschema error; never quotes the instance."""
    path = _pointer(error.absolute_path)
    keyword = error.validator
    value = error.validator_value
    schema = error.schema if isinstance(error.schema, Mapping) else {}

    if keyword == "required":
        for name in _missing_properties(error):
            yield FieldError(_join(path, name), "is required")
    elif keyword == "additionalProperties":
        for name in _unexpected_properties(error.instance, schema):
            yield FieldError(_join(path, name), "is not allowed")
    elif keyword == "dependentRequired":
        instance = error.instance if isinstance(error.instance, Mapping) else {}
        for name, needed in (value if isinstance(value, Mapping) else {}).items():
            if name in instance:
                for other in needed:
                    if other not in instance:
                        yield FieldError(_join(path, other), f"is required when {name} is set")
    elif keyword in ("anyOf", "oneOf"):
        yield from _describe_alternatives(error, path)
    elif keyword == "format" and isinstance(error.cause, RefusedURL):
        yield FieldError(path, str(error.cause))
    else:
        yield FieldError(path, _message(str(keyword), value))


def _describe_alternatives(error: ValidationError, path: str) -> Iterator[FieldError]:
    """anyOf/oneOf: list the allowed values when every branch is a const/enum, else the most
    relevant branch's error (jsonschema's `best_match`), else a generic message."""
    context = error.context
    if not context:  # oneOf matched more than one branch
        yield FieldError(path, "matches more than one of the allowed forms")
        return
    if all(e.validator in ("const", "enum") and not e.relative_path for e in context):
        allowed: list[Any] = []
        for e in context:
            value = e.validator_value
            values = [value] if e.validator == "const" or not isinstance(value, list) else value
            allowed.extend(v for v in values if v not in allowed)
        yield FieldError(path, _message("enum", allowed))
        return
    here = [e for e in context if not e.relative_path]
    if len(here) == len(context) and all(e.validator == "type" for e in here):
        types: list[str] = []
        for e in here:
            value = e.validator_value
            names = [value] if isinstance(value, str) else value if isinstance(value, list) else []
            types.extend(t for t in names if t not in types)
        yield FieldError(path, _message("type", types))
        return
    # A branch whose type matched says more than "must be null" from one whose type did not.
    best = best_match([e for e in context if e.validator != "type"] or context)
    if best is None:  # pragma: no cover - context is not empty
        yield FieldError(path, "does not match any of the allowed forms")
        return
    yield from _describe(best)


def _message(keyword: str, value: Any) -> str:
    """Our message for a failed keyword whose schema value is `value`."""
    describe = _KEYWORD_MESSAGES.get(keyword)
    return describe(value) if describe is not None else "is invalid"


def _type_message(value: Any) -> str:
    names = [value] if isinstance(value, str) else list(value)
    return "must be " + " or ".join(_TYPE_NAMES.get(n, n) for n in names)


def _enum_message(value: Any) -> str:
    if isinstance(value, Sequence) and 0 < len(value) <= _MAX_ENUM_LISTED:
        return "must be one of: " + ", ".join(
            v if isinstance(v, str) else json.dumps(v) for v in value
        )
    return "is not one of the allowed values"


def _count(value: Any, noun: str) -> str:
    return f"{value} {noun}{'' if value == 1 else 's'}"


_KEYWORD_MESSAGES: dict[str, Callable[[Any], str]] = {
    "type": _type_message,
    "enum": _enum_message,
    "const": lambda value: f"must be {json.dumps(value)}",
    "format": lambda value: f"must be a valid {_FORMAT_NAMES.get(str(value), str(value))}",
    "pattern": lambda _: "is not in the expected format",
    "minLength": lambda value: (
        "must not be empty" if value == 1 else f"must be at least {value} characters"
    ),
    "maxLength": lambda value: f"must be at most {value} characters",
    "minimum": lambda value: f"must be at least {_show(value)}",
    "maximum": lambda value: f"must be at most {_show(value)}",
    "exclusiveMinimum": lambda value: f"must be greater than {_show(value)}",
    "exclusiveMaximum": lambda value: f"must be less than {_show(value)}",
    "multipleOf": lambda value: f"must be a multiple of {_show(value)}",
    "minItems": lambda value: f"must have at least {_count(value, 'item')}",
    "maxItems": lambda value: f"must have at most {_count(value, 'item')}",
    "uniqueItems": lambda _: "must not contain duplicates",
    "minProperties": lambda value: f"must have at least {_count(value, 'field')}",
    "maxProperties": lambda value: f"must have at most {_count(value, 'field')}",
    "unevaluatedProperties": lambda _: "has fields that are not allowed",
}


def _missing_properties(error: ValidationError) -> list[str]:
    instance = error.instance if isinstance(error.instance, Mapping) else {}
    required = error.validator_value if isinstance(error.validator_value, list) else []
    return [name for name in required if isinstance(name, str) and name not in instance]


def _unexpected_properties(instance: Any, schema: Mapping[str, Any]) -> list[str]:
    if not isinstance(instance, Mapping):
        return []
    declared = schema.get("properties") or {}
    patterns = list(schema.get("patternProperties") or {})
    return [
        name
        for name in instance
        if name not in declared and not any(re.search(p, name) for p in patterns)
    ]


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _escape(token: str | int) -> str:
    return str(token).replace("~", "~0").replace("/", "~1")


def _pointer(tokens: Iterable[str | int]) -> str:
    return CONFIG_POINTER + "".join("/" + _escape(t) for t in tokens)


def _join(pointer: str, name: str) -> str:
    return pointer + "/" + _escape(name)


def _sort_key(problem: FieldError) -> tuple[list[tuple[int, int, str]], str]:
    segments = [
        (0, int(s), "") if s.isascii() and s.isdigit() else (1, 0, s)
        for s in problem.path.split("/")
    ]
    return segments, problem.message
