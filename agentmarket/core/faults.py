"""Forced faults: the one way to make the functions or the worker fail unexpectedly on purpose, so
that tests can watch what an unexpected error does (a 500 problem, a failed reply, a Sentry event
with no secret in it). Only with APP_ENV=test: in any other environment nothing here is wired in
(the middleware and the job runner check the setting once, when they are built).

* HTTP: a request with the header `X-Agentmarket-Fault: raise` fails as its response starts,
  after its route ran (so the user, the route and its database work are all there).
* Worker: a reply whose last user message contains `[[agentmarket:fault]]` fails after its
  request to the model is built (context, tags and the decrypted key are all there).

Each exception's text deliberately repeats what must never reach an error report (the request's
Authorization header; the user's message and the deployment's API key): a test then greps the
report for them.
"""

from __future__ import annotations

from typing import Final

__all__ = ["FAULT_HEADER", "FAULT_MARKER", "ForcedFault"]

FAULT_HEADER: Final = "x-agentmarket-fault"
FAULT_MARKER: Final = "[[agentmarket:fault]]"


class ForcedFault(RuntimeError):
    """An unexpected error forced by a test (APP_ENV=test only)."""
