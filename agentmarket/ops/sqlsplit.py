"""Split a SQL script into statements the way the Supabase CLI does.

`supabase db push` records each migration in `supabase_migrations.schema_migrations.statements`
as the list of statements its tokenizer produced. `agentmarket migrate` records the same list, so
either tool sees the other's work as its own. The rules (from the CLI's documented behaviour):

* a `;` outside quotes, comments, dollar-quoted bodies and parentheses ends a statement;
* `'…'` and `"…"` quotes, with a doubled delimiter as escape; `--` line and nested `/* */` comments;
* `$tag$ … $tag$` bodies; a backslash outside quotes escapes the next character;
* parentheses and `BEGIN ATOMIC … END` bodies hold their semicolons until the first closing
  `)` / `END` outside quotes;
* statements keep their comments and inner whitespace; trailing `;` and surrounding whitespace are
  trimmed, and empty statements dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["split"]

_TAG_CHARS = "_"


class _State:
    def next(self, ch: str, data: list[str]) -> _State | None:  # None: statement ends here
        raise NotImplementedError


class _Ready(_State):
    def next(self, ch: str, data: list[str]) -> _State | None:
        if ch == "$":
            return _Tag(offset=len(data) - 1)
        if ch in ("'", '"'):
            return _Quote(delimiter=ch)
        if ch == "-":
            return _CommentStart()
        if ch == "/":
            return _Block()
        if ch == "\\":
            return _Escape()
        if ch == ";":
            return None
        if ch == "(":
            return _Atomic(prev=self, delimiter=")")
        if ch in ("c", "C"):
            tail = "".join(data[-7:])
            if len(tail) == 7 and tail[1:].upper() == "ATOMIC" and tail[0].isspace():
                return _Atomic(prev=self, delimiter="END")
        return self


class _CommentStart(_State):
    def next(self, ch: str, data: list[str]) -> _State | None:
        if ch == "-":
            return _Dollar(delimiter="\n")  # nothing is escaped inside a line comment
        return _Ready().next(ch, data)


@dataclass
class _Block(_State):
    depth: int = 0

    def next(self, ch: str, data: list[str]) -> _State | None:
        window = "".join(data[-2:])
        if window == "/*":
            self.depth += 1
            return self
        if self.depth == 0:
            return _Ready().next(ch, data)
        if window == "*/":
            self.depth -= 1
            if self.depth == 0:
                return _Ready()
        return self


@dataclass
class _Quote(_State):
    delimiter: str
    escape: bool = False

    def next(self, ch: str, data: list[str]) -> _State | None:
        if self.escape:
            if ch == self.delimiter:  # a doubled delimiter stays inside the quote
                self.escape = False
                return self
            return _Ready().next(ch, data)
        if ch == self.delimiter:
            self.escape = True
        return self


@dataclass
class _Dollar(_State):
    delimiter: str

    def next(self, ch: str, data: list[str]) -> _State | None:
        n = len(self.delimiter)
        if len(data) >= n and "".join(data[-n:]) == self.delimiter:
            return _Ready()
        return self


@dataclass
class _Tag(_State):
    offset: int

    def next(self, ch: str, data: list[str]) -> _State | None:
        if ch == "$":
            return _Dollar(delimiter="".join(data[self.offset :]))
        if ch.isalpha() or ch.isdigit() or ch in _TAG_CHARS:
            return self
        return _Ready().next(ch, data)


class _Escape(_State):
    def next(self, ch: str, data: list[str]) -> _State | None:
        return _Ready()


@dataclass
class _Atomic(_State):
    prev: _State
    delimiter: str = ")"

    def next(self, ch: str, data: list[str]) -> _State | None:
        current = self.prev.next(ch, data)
        if current is not None:  # a `;` inside the body does not end the statement
            self.prev = current
        if isinstance(self.prev, _Ready):
            n = len(self.delimiter)
            if "".join(data[-n:]).upper() == self.delimiter.upper():
                return _Ready()
        return self


def split(sql: str) -> list[str]:
    """Statements of `sql`, each as written (comments kept), without trailing `;` or outer space."""
    statements: list[str] = []
    state: _State = _Ready()
    data: list[str] = []
    for ch in sql:
        data.append(ch)
        nxt = state.next(ch, data)
        if nxt is None:
            _emit(statements, "".join(data))
            data = []
            state = _Ready()
        else:
            state = nxt
    if data:
        _emit(statements, "".join(data))
    return statements


def _emit(statements: list[str], token: str) -> None:
    trimmed = token.rstrip(";").strip()
    if trimmed:
        statements.append(trimmed)
