"""`agentmarket`: the operator's command line (migrate, seed, check-env, token, admin, verify)."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Any, TypeAlias

import psycopg
from pydantic import ValidationError

from agentmarket.core import loops, paths
from agentmarket.core.config import (
    LOCAL_LOGIN_PASSWORDS,
    AppEnv,
    MissingSetting,
    Settings,
    check_env,
    get_settings,
)
from agentmarket.db.pool import connect
from agentmarket.ops import migrate, seed, tokens

__all__ = ["build_parser", "main", "print_summary", "render_openapi"]


def _settings() -> Settings:
    try:
        return get_settings()
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]).upper() or "settings"
            print(f"invalid setting {where}: {err['msg']}", file=sys.stderr)
        raise SystemExit(2) from None


def _process_urls(settings: Settings, *names: str) -> None:
    """The serve/worker processes' own logins must be known before they start (prod: set)."""
    try:
        for name in names:
            getattr(settings, name)
    except MissingSetting as exc:
        print(f"error: {exc} (see .env.example and docs/operations.md)", file=sys.stderr)
        raise SystemExit(2) from None


def _connect(settings: Settings) -> psycopg.Connection:
    try:
        return connect(settings)
    except psycopg.OperationalError as exc:
        # The message names host and port, never the password.
        print(f"cannot connect to the database: {str(exc).strip()}", file=sys.stderr)
        raise SystemExit(3) from None


# --- migrate -------------------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    settings = _settings()
    directory = Path(args.dir) if args.dir else paths.migrations_dir()
    with _connect(settings) as conn:
        if args.action == "status":
            return _migrate_status(conn, directory)
        shim_needed = not args.no_shim and migrate.needs_local_shim(conn)
        if args.dry_run:
            return _migrate_dry_run(conn, directory, shim_needed=shim_needed)
        return _migrate_up(conn, directory, settings, args, shim_needed=shim_needed)


def _migrate_status(conn: psycopg.Connection, directory: Path) -> int:
    entries = migrate.status(conn, directory)
    width = max((len(e.version) for e in entries), default=7)
    for e in entries:
        print(f"{e.version:<{width}}  {e.state.value:<8}  {e.name}")
    pending = sum(e.state is migrate.MigrationState.PENDING for e in entries)
    bad = [
        e
        for e in entries
        if e.state in (migrate.MigrationState.EDITED, migrate.MigrationState.MISSING)
    ]
    print(f"{len(entries)} migrations, {pending} pending, {len(bad)} in conflict")
    return 1 if bad else 0


def _migrate_dry_run(conn: psycopg.Connection, directory: Path, *, shim_needed: bool) -> int:
    if shim_needed:
        print("would apply sql/local_supabase.sql (plain PostgreSQL detected)")
    try:
        todo = migrate.up(conn, directory, dry_run=True)
    except migrate.MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for f in todo:
        print(f"would apply {f.filename} ({len(f.statements)} statements)")
    print("nothing to apply" if not todo else f"{len(todo)} to apply")
    return 0


def _migrate_up(
    conn: psycopg.Connection,
    directory: Path,
    settings: Settings,
    args: argparse.Namespace,
    *,
    shim_needed: bool,
) -> int:
    if args.backup:
        migrate.backup(settings.direct_database_url, Path(args.backup))
        print(f"backup written to {args.backup}")
    if shim_needed:
        migrate.apply_local_shim(conn, paths.local_shim_path())
        print("applied sql/local_supabase.sql (plain PostgreSQL: Supabase roles and auth shim)")
    try:
        applied = migrate.up(
            conn,
            directory,
            on_apply=lambda f: print(f"applied {f.filename} ({len(f.statements)} statements)"),
        )
    except migrate.MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("database is up to date" if not applied else f"{len(applied)} migrations applied")
    if not args.no_shim and settings.app_env is not AppEnv.PROD and migrate.is_plain_postgres(conn):
        for role in migrate.enable_local_logins(conn, LOCAL_LOGIN_PASSWORDS):
            print(f"local login {role} enabled with its development password (.env.example)")
    for column in migrate.store_settings(conn, **migrate.stored_settings(settings)):
        name = migrate.STORED_SETTINGS[column]
        print(f"stored {name.upper()}={getattr(settings, name)}")
    return 0


# --- seed ----------------------------------------------------------------------------------------


def cmd_seed(args: argparse.Namespace) -> int:
    directory = Path(args.dir) if args.dir else paths.seeds_dir() / "agents"
    try:
        agents = seed.load_catalog(directory)
    except seed.SeedError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.write_sql or args.check_sql:
        target = Path(args.sql_file) if args.sql_file else paths.seed_sql_path()
        rendered = seed.render_sql(agents)
        if args.check_sql:
            current = target.read_text(encoding="utf-8") if target.exists() else ""
            if current != rendered:
                print(
                    f"{target} is out of date: run `agentmarket seed --write-sql`", file=sys.stderr
                )
                return 1
            print(f"{target} matches seeds/")
            return 0
        target.write_text(rendered, encoding="utf-8")
        print(f"wrote {target} ({len(agents)} agents)")
        return 0
    settings = _settings()
    with _connect(settings) as conn:
        result = seed.apply(conn, agents)
        print(
            f"seeded {result.agents} agents: {result.agents_changed} rows changed, "
            f"{result.prompts_changed} prompts changed"
        )
        if args.summary:
            print_summary(seed.summary(conn))
    return 0


def print_summary(s: seed.CatalogSummary) -> None:
    print(f"catalog: {s.published} published agents ({s.unpublished} unpublished)")
    for title, counts in (
        ("categories", s.by_category),
        ("kinds", s.by_kind),
        ("pricing", s.by_pricing),
    ):
        print(f"  {title:<11} " + ", ".join(f"{name} {count}" for name, count in counts))


# --- check-env -----------------------------------------------------------------------------------


def cmd_check_env(args: argparse.Namespace) -> int:
    settings = _settings()
    problems = check_env(settings)
    print(f"APP_ENV={settings.app_env.value}")
    if not problems:
        print("all settings present")
        return 0
    for p in problems:
        marker = "missing" if p.required else "note   "
        print(f"  {marker}  {p.setting}: {p.problem}")
    required = [p for p in problems if p.required]
    print(f"{len(required)} required setting(s) missing or invalid" if required else "ok")
    return 1 if required else 0


# --- token ---------------------------------------------------------------------------------------


def cmd_token(args: argparse.Namespace) -> int:
    settings = _settings()
    try:
        user, token = tokens.issue_local_token(
            settings, email=args.email, admin=args.admin, ttl_seconds=args.ttl
        )
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        # The message names host and port, never the password.
        print(f"cannot connect to the database: {str(exc).strip()}", file=sys.stderr)
        return 3
    print(token)
    print(f"user {user.id} <{user.email}>{' (admin)' if args.admin else ''}", file=sys.stderr)
    return 0


# --- admin / verify --hosted ----------------------------------------------------------------------


def cmd_admin(args: argparse.Namespace) -> int:
    """Grant or revoke the admin role: on the hosted project when SUPABASE_URL and
    SUPABASE_SERVICE_ROLE_KEY are set, else in the local database (--local / --hosted decide)."""
    from supabase import AuthError

    from agentmarket.ops import admin

    settings = _settings()
    grant = args.action == "grant"
    target = admin.admin_target(settings, admin.AdminTarget(args.target) if args.target else None)
    try:
        if target is admin.AdminTarget.HOSTED:
            if not settings.supabase_url or settings.supabase_service_role_key is None:
                print("--hosted needs SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY", file=sys.stderr)
                return 2
            change = admin.set_admin_hosted(
                url=settings.supabase_url,
                service_role_key=settings.supabase_service_role_key.get_secret_value(),
                email=args.email,
                admin=grant,
            )
        else:
            with _connect(settings) as conn:
                change = admin.set_admin_local(conn, email=args.email, admin=grant)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except admin.UnknownUser:
        print(
            f"error: no user with email {args.email.strip().lower()!r} ({target})", file=sys.stderr
        )
        return 1
    except AuthError as exc:  # the Auth admin API refused (its message names no key)
        print(f"error: the Auth admin API refused: {exc.message}", file=sys.stderr)
        return 1
    state = "an admin" if change.is_admin else "not an admin"
    verb = "now" if change.changed else "already"
    print(f"{change.email} ({change.user_id}) is {verb} {state} ({target})")
    if change.changed:
        print("tokens issued before this keep their old claims until they expire", file=sys.stderr)
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check a hosted project through PostgREST with the anon key; a checklist, non-zero when a
    check failed (each named)."""
    from agentmarket.ops import hosted

    if not args.hosted:
        print("verify checks a hosted project: pass --hosted", file=sys.stderr)
        return 2
    settings = _settings()
    if not settings.supabase_url or settings.supabase_anon_key is None:
        print("verify --hosted needs SUPABASE_URL and SUPABASE_ANON_KEY", file=sys.stderr)
        return 2
    project = hosted.HostedProject(
        url=settings.supabase_url,
        anon_key=settings.supabase_anon_key.get_secret_value(),
        user_email=settings.verify_user_email,
        user_password=(
            settings.verify_user_password.get_secret_value()
            if settings.verify_user_password
            else None
        ),
        access_token=(
            settings.verify_access_token.get_secret_value()
            if settings.verify_access_token
            else None
        ),
    )
    checks = hosted.verify_hosted(project)
    print(f"verify {settings.supabase_url}")
    for check in checks:
        mark = "skip" if check.ok is None else "ok" if check.ok else "FAIL"
        print(f"  {mark:<4}  {check.name:<15} {check.detail}")
    failed = [c.name for c in checks if c.ok is False]
    if failed:
        print(f"{len(failed)} check(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    print("all checks passed")
    return 0


def _entry_point(name: str) -> EntryPoint:
    found = entry_points(group="agentmarket.apps", name=name)
    if not found:
        raise SystemExit(f"the {name!r} app is not installed (pip install -e .)")
    return next(iter(found))


def _app(name: str) -> Any:
    """One of the product's processes: `http` (the functions' app factory) or `worker` (runs the
    chat worker until SIGTERM). They live outside this package, which never imports them; their
    packages register them as `agentmarket.apps` entry points (pyproject.toml)."""
    return _entry_point(name).load()


def _app_target(name: str) -> str:
    """The entry point's import string (`module:attribute`), for uvicorn's worker processes."""
    return str(_entry_point(name).value)


# --- serve ---------------------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    settings = _settings()
    _process_urls(settings, "api_url", "api_direct_url")
    if args.workers < 1:
        print("error: --workers must be at least 1", file=sys.stderr)
        return 2
    options: dict[str, Any] = {
        "host": args.host,
        "port": args.port,
        "loop": loops.uvicorn_loop(),
        "access_log": False,  # the app logs one canonical line per request
        "log_level": settings.log_level.lower(),
        "proxy_headers": True,
        # SIGTERM: in-flight requests get this long; streams end at once (functions/shutdown.py).
        "timeout_graceful_shutdown": math.ceil(settings.shutdown_grace_seconds),
    }
    if args.workers == 1:
        uvicorn.run(_app("http")(settings), **options)
        return 0
    # N processes: uvicorn starts each from an import string and calls the factory there with no
    # arguments (the settings come from the same environment). Each builds its own app: its own
    # pool and its own LISTEN connection.
    uvicorn.run(_app_target("http"), factory=True, workers=args.workers, **options)
    return 0


# --- openapi -------------------------------------------------------------------------------------


def render_openapi() -> str:
    import json

    spec = _app("http")(get_settings()).openapi()
    return json.dumps(spec, indent=2, ensure_ascii=False) + "\n"


def cmd_openapi(args: argparse.Namespace) -> int:
    target = paths.project_root() / "docs" / "openapi.json"
    rendered = render_openapi()
    if args.check:
        if not target.exists() or target.read_text(encoding="utf-8") != rendered:
            print(f"{target} is out of date: run `agentmarket openapi --write`", file=sys.stderr)
            return 1
        print(f"{target} matches the app")
        return 0
    if args.write:
        target.write_text(rendered, encoding="utf-8")
        print(f"wrote {target}")
        return 0
    sys.stdout.write(rendered)
    return 0


# --- bench ---------------------------------------------------------------------------------------


def _bench_limits(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import UTC, datetime

    from agentmarket.devtools import bench, bench_limits

    command = (
        f"agentmarket bench limits --concurrency {args.concurrency} --requests {args.requests}"
        f" --pause-ms {args.pause_ms}"
    )
    run = bench_limits.run_limits(
        settings.database_url.get_secret_value(),
        concurrency=args.concurrency,
        sends=args.requests,
        pause_ms=args.pause_ms,
    )
    measured = f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"
    section = bench_limits.limits_report(f"./scripts/dev setup && {command} --write", run, measured)
    print(section)
    if args.write:
        print(f"wrote {bench.write_section(section, 'Limits: what they add to a chat send')}")
    return 0


def _bench_chat(args: argparse.Namespace, settings: Settings) -> int:
    from agentmarket.devtools import bench

    plan = bench.ChatPlan(
        messages=args.messages,
        connections=args.connections,
        levels=tuple(int(x) for x in args.levels.split(",")),
        turns=args.turns,
        ttft_ms=args.ttft_ms,
        long_tokens=args.long_tokens,
        long_tps=args.long_tps,
        long_conversations=args.long_conversations,
        long_turns=args.long_turns,
        targets=tuple(args.targets.split(",")),
        users=args.users,
    )
    unknown = set(plan.targets) - set(bench.TARGETS)
    if unknown or not plan.targets:
        raise SystemExit(f"--targets: choose from {', '.join(bench.TARGETS)}")
    command = (
        f"agentmarket bench chat --messages {plan.messages} --connections {plan.connections}"
        f" --levels {args.levels} --turns {plan.turns} --ttft-ms {plan.ttft_ms}"
        f" --long-tokens {plan.long_tokens} --long-tps {plan.long_tps:g}"
        f" --long-conversations {plan.long_conversations} --long-turns {plan.long_turns}"
    )
    if plan.targets != tuple(bench.TARGETS):
        command += f" --targets {','.join(plan.targets)}"
    if plan.users:
        command += f" --users {plan.users}"
    results = bench.run_chat(settings, plan)
    _bench_output(
        args,
        as_json=bench.chat_json(results),
        section=bench.chat_report(f"./scripts/dev setup && {command} --write", results),
        title="Chat pipeline against a naive proxy: POST /api/agents/{id}/chat (streaming)",
    )
    return 0


def _bench_output(args: argparse.Namespace, *, as_json: str, section: str, title: str) -> None:
    """A bench's results: as JSON (`--json`) or its docs/benchmarks.md section on stdout, and
    that section written there with `--write`."""
    from agentmarket.devtools import bench

    print(as_json if args.json else section)
    if args.write:
        print(f"wrote {bench.write_section(section, title)}", file=sys.stderr)


def _bench_soak(args: argparse.Namespace, settings: Settings) -> int:
    from agentmarket.devtools import bench_soak

    plan = bench_soak.SoakPlan(
        seconds=args.minutes * 60,
        fault_rate=args.fault_rate,
        kill_every=args.kill_every,
        conversations=args.clients,
    )
    command = (
        f"agentmarket bench soak --minutes {args.minutes:g} --fault-rate {plan.fault_rate:g}"
        f" --kill-every {plan.kill_every:g} --clients {plan.conversations}"
    )
    report = bench_soak.run_soak(settings, plan)
    _bench_output(
        args,
        as_json=bench_soak.soak_json(report),
        section=bench_soak.soak_report(f"./scripts/dev setup && {command} --write", report),
        title=bench_soak.TITLE,
    )
    return 0 if report.ok else 1


def _bench_lighthouse(args: argparse.Namespace, settings: Settings) -> int:
    from agentmarket.devtools import bench_lighthouse

    command = f"./scripts/lighthouse --runs {args.runs}" + (
        " --form-factor desktop" if args.form_factor == "desktop" else ""
    )
    results = bench_lighthouse.run_lighthouse(
        settings, runs=args.runs, url=args.url, form_factor=args.form_factor
    )
    _bench_output(
        args,
        as_json=bench_lighthouse.lighthouse_json(results),
        section=bench_lighthouse.lighthouse_report(
            f"./scripts/dev setup && (cd web && npm ci && npm run build) && {command} --write",
            results,
        ),
        title=bench_lighthouse.TITLE,
    )
    return 0


def _bench_analytics(args: argparse.Namespace, settings: Settings) -> int:
    from agentmarket.devtools import bench, bench_analytics
    from agentmarket.devtools.analytics_fixture import Fixture

    command = f"agentmarket bench analytics --calls {args.calls}" + (
        " --fixture" if args.fixture else ""
    )
    run = bench_analytics.run_analytics(
        settings, fixture=Fixture() if args.fixture else None, calls=args.calls
    )
    section = bench_analytics.analytics_report(
        "createdb bench && DATABASE_URL=…/bench agentmarket migrate up && … seed && "
        f"DATABASE_URL=…/bench {command} --write",
        run,
    )
    print(section)
    if args.write:
        print(f"wrote {bench.write_section(section, bench_analytics.TITLE)}", file=sys.stderr)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from agentmarket.devtools import bench

    settings = _settings()
    if args.scenario == "lighthouse":
        return _bench_lighthouse(args, settings)
    if args.scenario == "analytics":
        return _bench_analytics(args, settings)
    if args.scenario == "soak":
        return _bench_soak(args, settings)
    if args.scenario == "limits":
        return _bench_limits(args, settings)
    if args.scenario == "chat":
        return _bench_chat(args, settings)
    command = (
        f"agentmarket bench catalog --concurrency {args.concurrency} "
        f"--requests {args.requests} --seconds {args.seconds}"
    )
    results = bench.run_catalog(
        settings, concurrency=args.concurrency, requests=args.requests, seconds=args.seconds
    )
    print(bench.as_json(results))
    if args.write:
        section = bench.report(
            "Catalog list: GET /api/marketplace/agents",
            f"./scripts/dev setup && {command} --write",
            results,
            [
                "HTTP rows: the real server process (uvicorn, one worker unless the row says "
                "--workers 2) with the default "
                "5 s catalog cache, anonymous callers cycling through 8 queries (5 distinct "
                "searches). wrk (C) measures the server; the httpx row adds a Python client on "
                "the same two cores. The psycopg row runs the same transaction (role + claims "
                "set) and `search_agents` query directly on every request, uncached: the cost "
                "of answering from the database each time.",
            ],
        )
        print(f"wrote {bench.write_section(section, 'Catalog list: GET /api/marketplace/agents')}")
    return 0


# --- stats ---------------------------------------------------------------------------------------

# The CLI reads the reports as an admin caller through the API's own login: the claims a verified
# admin token carries (app_metadata.role = admin), so the same SQL checks pass.
_CLI_ADMIN_CLAIMS = {
    "sub": "00000000-0000-0000-0000-000000000000",
    "role": "authenticated",
    "app_metadata": {"role": "admin"},
}


def cmd_stats(args: argparse.Namespace) -> int:
    from agentmarket.core.errors import AppError
    from agentmarket.db.caller import CallerSession
    from agentmarket.db.pool import create_pool
    from agentmarket.domain.models import AnalyticsQuery
    from agentmarket.services import analytics

    settings = _settings()
    try:
        params = AnalyticsQuery.model_validate(
            {
                "from": args.from_,
                "to": args.to,
                "tz": args.tz,
                "agent": args.agent,
                "category": args.category,
                "kind": args.kind,
            }
        )
    except ValidationError as exc:
        for err in exc.errors():
            print(f"invalid --{err['loc'][0]}: {err['msg']}", file=sys.stderr)
        return 2

    async def read() -> Any:
        pool = create_pool(settings, min_size=1, max_size=1)
        await pool.open()
        try:
            async with CallerSession(pool, _CLI_ADMIN_CLAIMS) as db:
                if args.metrics:
                    return await analytics.marketplace_metrics(db=db, params=params)
                return await analytics.marketplace_stats(db=db, params=params)
        finally:
            await pool.close()

    try:
        report = loops.run(read())
    except AppError as exc:
        where = "; ".join(f"{e.path}: {e.message}" for e in exc.errors)
        print(f"error: {exc.detail}{' (' + where + ')' if where else ''}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        print(f"cannot connect to the database: {str(exc).strip()}", file=sys.stderr)
        return 3
    if args.csv:
        rows = analytics.metrics_rows(report) if args.metrics else analytics.stats_rows(report)
        for line in analytics.csv_lines(rows):
            sys.stdout.write(line)
    elif args.json:
        print(report.model_dump_json(by_alias=True, indent=2))
    else:
        print(_stats_text(report) if not args.metrics else _metrics_text(report))
    return 0


def _stats_text(report: Any) -> str:
    r = report
    lines = [
        f"marketplace stats {r.range.from_} .. {r.range.to} ({r.range.tz})",
        f"now: {r.now.active_deployments} active deployments of {r.now.active_agents} agents",
        f"totals: {r.totals.deployments} deployments, {r.totals.conversations} conversations, "
        f"{r.totals.user_messages} user messages, {r.totals.unique_users} unique users",
        f"feedback: {r.feedback.likes} likes, {r.feedback.dislikes} dislikes, "
        f"like ratio {r.feedback.like_ratio}",
        f"survey: {r.survey.responses} responses, satisfaction {r.survey.avg_satisfaction}, "
        f"ease of use {r.survey.avg_ease_of_use}, NPS {r.survey.nps}",
        "",
        f"{'day':<12}{'deploys':>9}{'convs':>9}{'messages':>10}{'users':>8}",
        *(
            f"{d.day!s:<12}{d.deployments:>9}{d.conversations:>9}{d.user_messages:>10}"
            f"{d.unique_users:>8}"
            for d in r.days
        ),
        "",
        f"{'#':>3} {'agent':<32}{'deploys':>9}{'convs':>9}{'messages':>10}{'users':>8}",
        *(
            f"{a.rank:>3} {a.slug:<32}{a.deployments:>9}{a.conversations:>9}{a.messages:>10}"
            f"{a.unique_users:>8}"
            for a in r.popular_agents
        ),
    ]
    return "\n".join(lines)


def _metrics_text(report: Any) -> str:
    def cell(value: Any) -> str:
        return "-" if value is None else str(value)

    def row(label: str, m: Any) -> str:
        return (
            f"{label:<32}{m.replies:>8}{m.failed:>7}{cell(m.error_rate):>8}"
            f"{m.retries:>8}{m.rate_limited:>8}{cell(m.latency_ms.p50):>10}"
            f"{cell(m.latency_ms.p95):>10}{cell(m.ttft_ms.p50):>10}"
        )

    r = report
    header = (
        f"{'':<32}{'replies':>8}{'failed':>7}{'err':>8}{'retries':>8}{'429s':>8}"
        f"{'lat p50':>10}{'lat p95':>10}{'ttft p50':>10}"
    )
    lines = [
        f"marketplace metrics {r.range.from_} .. {r.range.to} ({r.range.tz})",
        header,
        row("overall", r.overall),
        *(row(a.slug, a) for a in r.agents),
        "",
        header.replace(" " * 32, f"{'day':<32}", 1),
        *(row(str(d.day), d) for d in r.days),
    ]
    return "\n".join(lines)


# --- rotate-secrets -------------------------------------------------------------------------------


def cmd_rotate_secrets(args: argparse.Namespace) -> int:
    from agentmarket.domain.secrets import SecretBox
    from agentmarket.ops.rotation import rotate_secrets

    settings = _settings()
    box = SecretBox(settings.encryption_keys)
    with _connect(settings) as conn:
        result = rotate_secrets(conn, box, dry_run=args.dry_run)
    verb = "would re-encrypt" if args.dry_run else "re-encrypted"
    print(f"{verb} {result.rotated} secret(s) with key {box.current_key_id!r}")
    for deployment_id, field in result.unreadable:
        print(f"  unreadable: deployment {deployment_id} field {field} (its key is not listed)")
    return 1 if result.unreadable else 0


# --- worker / offline model -----------------------------------------------------------------------


def cmd_worker(args: argparse.Namespace) -> int:
    settings = _settings()
    _process_urls(settings, "worker_url")
    if args.processes < 1:
        print("error: --processes must be at least 1", file=sys.stderr)
        return 2
    status = _app("worker")(
        settings,
        concurrency=args.concurrency,
        lease_seconds=args.lease_seconds,
        grace_seconds=args.grace_seconds,
        processes=args.processes,
    )
    return int(status or 0)


def cmd_offline_model(args: argparse.Namespace) -> int:
    from agentmarket.devtools import offline_model

    offline_model.serve(args.host, args.port, offline_model.config_from_args(args))
    return 0


# What `add_subparsers()` returns (argparse does not export its type).
_Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentmarket", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_migrate,
        _add_seed,
        _add_check_env,
        _add_token,
        _add_admin,
        _add_verify,
        _add_openapi,
        _add_bench,
        _add_stats,
        _add_rotate_secrets,
        _add_worker,
        _add_offline_model,
        _add_serve,
    ):
        add(sub)
    return parser


def _add_migrate(sub: _Subparsers) -> None:
    p = sub.add_parser("migrate", help="apply or inspect database migrations")
    p.add_argument("action", nargs="?", choices=("up", "status"), default="up")
    p.add_argument("--dry-run", action="store_true", help="show what would be applied")
    p.add_argument("--backup", metavar="FILE", help="pg_dump the database to FILE first")
    p.add_argument("--no-shim", action="store_true", help="never apply sql/local_supabase.sql")
    p.add_argument("--dir", help="migrations directory (default supabase/migrations)")
    p.set_defaults(func=cmd_migrate)


def _add_seed(sub: _Subparsers) -> None:
    p = sub.add_parser("seed", help="upsert the curated catalog from seeds/")
    p.add_argument("--dir", help="agent files directory (default seeds/agents)")
    p.add_argument("--summary", action="store_true", help="print the catalog summary")
    p.add_argument("--write-sql", action="store_true", help="regenerate supabase/seed.sql")
    p.add_argument("--check-sql", action="store_true", help="fail if supabase/seed.sql drifted")
    p.add_argument("--sql-file", help="seed SQL path (default supabase/seed.sql)")
    p.set_defaults(func=cmd_seed)


def _add_check_env(sub: _Subparsers) -> None:
    p = sub.add_parser("check-env", help="list missing or placeholder settings")
    p.set_defaults(func=cmd_check_env)


def _add_token(sub: _Subparsers) -> None:
    p = sub.add_parser("token", help="create a local user and print an access token")
    p.add_argument("--email", required=True)
    p.add_argument("--admin", action="store_true", help="give the user the admin role")
    p.add_argument("--ttl", type=int, default=tokens.DEFAULT_TTL_SECONDS, help="seconds")
    p.set_defaults(func=cmd_token)


def _add_admin(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "admin",
        help="grant or revoke the admin role (app_metadata.role), locally or on the hosted project",
    )
    p.add_argument("action", choices=("grant", "revoke"))
    p.add_argument("--email", required=True)
    target = p.add_mutually_exclusive_group()
    target.add_argument(
        "--local",
        dest="target",
        action="store_const",
        const="local",
        help="the database at DATABASE_URL, by SQL",
    )
    target.add_argument(
        "--hosted",
        dest="target",
        action="store_const",
        const="hosted",
        help="the Auth admin API at SUPABASE_URL (SUPABASE_SERVICE_ROLE_KEY)",
    )
    p.set_defaults(func=cmd_admin, target=None)


def _add_verify(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "verify", help="check a hosted project the way its clients use it (anon key, PostgREST)"
    )
    p.add_argument(
        "--hosted", action="store_true", help="the project at SUPABASE_URL (SUPABASE_ANON_KEY)"
    )
    p.set_defaults(func=cmd_verify)


def _add_openapi(sub: _Subparsers) -> None:
    p = sub.add_parser("openapi", help="print the HTTP API's OpenAPI spec")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="write docs/openapi.json")
    mode.add_argument("--check", action="store_true", help="fail if docs/openapi.json drifted")
    p.set_defaults(func=cmd_openapi)


def _add_bench(sub: _Subparsers) -> None:
    p = sub.add_parser("bench", help="run a benchmark (results to docs/benchmarks.md)")
    p.add_argument(
        "scenario", choices=("analytics", "catalog", "chat", "limits", "soak", "lighthouse")
    )
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--requests", type=int, default=5000, help="for the Python clients")
    p.add_argument("--seconds", type=int, default=10, help="for wrk")
    p.add_argument("--levels", default="10,50", help="chat: concurrent conversations")
    p.add_argument("--turns", type=int, default=20, help="chat: measured turns per conversation")
    p.add_argument("--ttft-ms", type=int, default=200, help="chat: the model's time to first token")
    p.add_argument("--messages", type=int, default=1000, help="chat: throughput run size")
    p.add_argument(
        "--connections", type=int, default=32, help="chat: connections of the throughput run"
    )
    p.add_argument("--long-tokens", type=int, default=300, help="chat: words of a long reply")
    p.add_argument("--long-tps", type=float, default=100.0, help="chat: long replies' pace")
    p.add_argument("--long-conversations", type=int, default=10, help="chat: long replies at once")
    p.add_argument("--long-turns", type=int, default=2, help="chat: long replies per conversation")
    p.add_argument(
        "--users",
        type=int,
        default=0,
        help="chat: users the conversations are shared among (0: one per conversation)",
    )
    p.add_argument(
        "--targets",
        default="ours,sdk,raw",
        help="chat: which targets run (ours, sdk: the naive proxy, raw: the raw proxy)",
    )
    p.add_argument(
        "--json", action="store_true", help="chat, soak, lighthouse: print the results as JSON"
    )
    p.add_argument("--runs", type=int, default=3, help="lighthouse: audits (the median is shown)")
    p.add_argument(
        "--url", default=None, help="lighthouse: audit this page instead of a server started for it"
    )
    p.add_argument(
        "--form-factor",
        choices=("mobile", "desktop"),
        default="mobile",
        help="lighthouse: Lighthouse's mobile (default) or desktop audit",
    )
    p.add_argument(
        "--pause-ms", type=int, default=200, help="limits: each user's pause between sends"
    )
    p.add_argument("--minutes", type=float, default=5.0, help="soak: how long the load runs")
    p.add_argument(
        "--fault-rate", type=float, default=0.3, help="soak: share of model calls faulted"
    )
    p.add_argument(
        "--kill-every",
        type=float,
        default=60.0,
        help="soak: SIGKILL and restart the worker this often, in seconds (0 = never)",
    )
    p.add_argument("--clients", type=int, default=8, help="soak: conversations at once")
    p.add_argument(
        "--fixture",
        action="store_true",
        help="analytics: first fill the (throwaway, message-free) database with 1 M messages",
    )
    p.add_argument("--calls", type=int, default=25, help="analytics: calls per endpoint")
    p.add_argument("--write", action="store_true", help="update docs/benchmarks.md")
    p.set_defaults(func=cmd_bench)


def _add_stats(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "stats", help="marketplace analytics for a range of days (as GET /api/admin/marketplace/…)"
    )
    p.add_argument("--from", dest="from_", help="first day, YYYY-MM-DD (default: 29 days ago)")
    p.add_argument("--to", help="last day, YYYY-MM-DD (default: today in --tz)")
    p.add_argument("--tz", default="UTC", help="IANA time zone the days are counted in")
    p.add_argument("--agent", help="only this agent (slug)")
    p.add_argument("--category")
    p.add_argument("--kind", choices=("chat", "content", "support"))
    p.add_argument("--metrics", action="store_true", help="replies, errors, latency instead")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--csv", action="store_true", help="the API's CSV (section,day,agent,…)")
    out.add_argument("--json", action="store_true", help="the API's JSON")
    p.set_defaults(func=cmd_stats)


def _add_rotate_secrets(sub: _Subparsers) -> None:
    p = sub.add_parser(
        "rotate-secrets", help="re-encrypt stored secrets with the first SECRETS_ENCRYPTION_KEY"
    )
    p.add_argument("--dry-run", action="store_true", help="count, change nothing")
    p.set_defaults(func=cmd_rotate_secrets)


def _add_worker(sub: _Subparsers) -> None:
    p = sub.add_parser("worker", help="run the chat worker")
    p.add_argument("--concurrency", type=int, default=8, help="replies written at once")
    p.add_argument("--lease-seconds", type=int, default=30, help="job lease, renewed while working")
    p.add_argument(
        "--grace-seconds",
        type=float,
        default=20.0,
        help="on SIGTERM, how long running replies may finish before they are handed back",
    )
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="worker processes, each with its own pool and LISTEN connection",
    )
    p.set_defaults(func=cmd_worker)


def _add_offline_model(sub: _Subparsers) -> None:
    from agentmarket.devtools import offline_model

    p = sub.add_parser("offline-model", help="run the offline OpenAI-compatible model server")
    offline_model.add_arguments(p)  # --host, --port, timing and fault options
    p.set_defaults(func=cmd_offline_model)


def _add_serve(sub: _Subparsers) -> None:
    p = sub.add_parser("serve", help="run the HTTP functions (uvicorn)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="uvicorn worker processes, each with its own pool and LISTEN connection",
    )
    p.set_defaults(func=cmd_serve)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
