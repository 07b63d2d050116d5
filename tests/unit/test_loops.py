"""The event loop choice: uvloop when importable, the standard loop otherwise."""

from __future__ import annotations

import asyncio
import sys

import pytest

from agentmarket.core import loops


async def loop_name() -> str:
    return loops.running_loop_name()


def test_uvloop_is_used_when_importable() -> None:
    assert loops.uvloop_module() is not None  # uvicorn[standard] installs it
    assert loops.uvicorn_loop() == "uvloop"
    assert loops.run(loop_name()) == "uvloop"


def test_the_standard_loop_when_uvloop_cannot_be_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` raises ImportError
    assert loops.uvloop_module() is None
    assert loops.uvicorn_loop() == "asyncio"
    assert loops.loop_factory() is asyncio.new_event_loop
    assert loops.run(loop_name()) == "asyncio"
