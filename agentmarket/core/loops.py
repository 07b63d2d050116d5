"""The event loop the processes run on: uvloop when it can be imported (uvicorn[standard] brings
it), the standard asyncio loop otherwise. `serve` passes `uvicorn_loop()` to uvicorn; the worker
runs its coroutine with `run`. Each process logs `running_loop_name()` once at startup."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Coroutine
from types import ModuleType
from typing import Any, Literal, TypeVar

__all__ = ["loop_factory", "run", "running_loop_name", "uvicorn_loop", "uvloop_module"]

T = TypeVar("T")


def uvloop_module() -> ModuleType | None:
    """uvloop, or None when it is not installed (or cannot be imported on this platform)."""
    try:
        return importlib.import_module("uvloop")
    except ImportError:
        return None


def uvicorn_loop() -> Literal["uvloop", "asyncio"]:
    """uvicorn's `loop` setting: uvloop when importable, else the standard loop."""
    return "uvloop" if uvloop_module() is not None else "asyncio"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    uvloop = uvloop_module()
    if uvloop is None:
        return asyncio.new_event_loop
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop when importable."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)


def running_loop_name() -> str:
    """`uvloop` or `asyncio`: what the running loop is (for the startup log line)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.split(".")[0] == "uvloop" else "asyncio"
