"""Graceful shutdown of the API, against the real processes (docs/operations.md#graceful-shutdown).

A client streams a long reply from API process A; A gets SIGTERM. The stream ends at once with
`stream.closing` (reason "shutdown", retry_ms) instead of holding the shutdown, a blocking send in
flight on A is answered (202, the reply as it stands), and A exits well within
SHUTDOWN_GRACE_SECONDS. The client resumes with Last-Event-ID on API process B: the text it
assembles has no gap and no repeat and equals the stored reply.
"""

from __future__ import annotations

import concurrent.futures
import signal
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Stack, deploy, wait_http
from tests.e2e.resume import SSE, Follow, Log, resume
from tests.procs import free_port

pytestmark = [pytest.mark.db, pytest.mark.e2e]

GRACE = 30  # SHUTDOWN_GRACE_SECONDS (the default)


def serve(stack: Stack) -> str:
    """Another API process on the stack's database; its base URL."""
    port = free_port()
    process = stack.spawn("api", "serve", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/readyz", process)
    return base


def test_sigterm_closes_streams_and_the_client_resumes_on_another_instance(stack: Stack) -> None:
    api_a, api_b = serve(stack), serve(stack)
    process_a = stack.processes[-2]
    token = stack.token("shutdown@example.com")
    headers = {"Authorization": f"Bearer {token}"}
    with (
        httpx.Client(base_url=api_a, headers=headers, timeout=60) as a,
        httpx.Client(base_url=api_b, headers=headers, timeout=60) as b,
    ):
        deployment = deploy(a)
        follow = Follow()
        # A reply of about 10 s (200 words at 20 tokens a second).
        body = {"message": "a long one [[tps:20]] [[long:200]]"}
        with a.stream("POST", f"/api/agents/{deployment}/chat", json=body, headers=SSE) as response:
            assert response.status_code == 200
            follow.read(response, until=lambda f: len(f.text) > 100)

            # A blocking send in flight on A when the signal comes.
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                blocking = pool.submit(
                    a.post,
                    f"/api/agents/{deployment}/chat",
                    json={"message": "blocking [[tps:20]] [[long:200]]"},
                )
                time.sleep(1)
                signalled = time.monotonic()
                process_a.popen.send_signal(signal.SIGTERM)
                follow.read(response)  # the rest of A's stream
                closed_after = time.monotonic() - signalled
                answered: httpx.Response = blocking.result(timeout=GRACE)

        assert follow.final is None
        assert follow.closing is not None
        assert follow.closing["reason"] == "shutdown" and follow.closing["retry_ms"] > 0
        assert closed_after < 5, closed_after
        assert answered.status_code == 202, answered.text
        assert answered.json()["assistant_message"]["status"] in ("queued", "running")
        # A exits once nothing is in flight, long before the grace period is over.
        process_a.popen.wait(timeout=GRACE)
        exited_after = time.monotonic() - signalled
        assert exited_after < 10, exited_after

        # The client resumes on B from the last event it saw.
        time.sleep(follow.closing["retry_ms"] / 1000)
        log = Log()
        resume(b, log, follow)
        assert follow.final is not None and follow.final["status"] == "completed"
        stored: dict[str, Any] = b.get(f"/api/messages/{follow.reply_id}").json()
        assert follow.text == stored["content"] == follow.final["content"]
        assert log.unavailable == [] and log.errors == []
