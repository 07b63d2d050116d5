from agentmarket.ops.sqlsplit import split


def test_splits_on_top_level_semicolons_and_trims() -> None:
    assert split("select 1;\n  select 2 ;\n\n") == ["select 1", "select 2"]


def test_keeps_comments_inside_statements() -> None:
    sql = "-- initial schema\ncreate table t (\n  id int -- trailing comment\n);\n"
    assert split(sql) == ["-- initial schema\ncreate table t (\n  id int -- trailing comment\n)"]


def test_semicolons_in_quotes_comments_and_dollar_bodies_do_not_split() -> None:
    sql = (
        "insert into t values ('a;b'), ('it''s;');\n"
        'select "we;ird" from t;\n'
        "/* block; comment */ select 3;\n"
        "create function f() returns int language plpgsql as $body$\n"
        "begin\n  -- inner; comment\n  return 1;\nend;\n$body$;\n"
        "do $$ begin perform 1; end $$;\n"
    )
    assert split(sql) == [
        "insert into t values ('a;b'), ('it''s;')",
        'select "we;ird" from t',
        "/* block; comment */ select 3",
        "create function f() returns int language plpgsql as $body$\n"
        "begin\n  -- inner; comment\n  return 1;\nend;\n$body$",
        "do $$ begin perform 1; end $$",
    ]


def test_comment_after_semicolon_starts_the_next_statement() -> None:
    assert split("select 3; -- about four\nselect 4;") == ["select 3", "-- about four\nselect 4"]


def test_trailing_comment_only_chunk_is_kept_and_empty_chunks_dropped() -> None:
    assert split("select 3;;\n;select 4;\n-- trailing comment only\n") == [
        "select 3",
        "select 4",
        "-- trailing comment only",
    ]


def test_parentheses_and_begin_atomic_hold_semicolons() -> None:
    sql = (
        "create function g() returns int language sql begin atomic select 1; select 2; end;\n"
        "select (1);\n"
    )
    assert split(sql) == [
        "create function g() returns int language sql begin atomic select 1; select 2; end",
        "select (1)",
    ]


def test_nested_block_comments() -> None:
    assert split("/* a /* b; */ c; */ select 1; select 2") == [
        "/* a /* b; */ c; */ select 1",
        "select 2",
    ]
