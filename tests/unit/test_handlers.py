"""The liveness probe of the scheduler."""

from __future__ import annotations

import asyncio

import kopf
import pytest

from replytracker.handlers import scheduler_alive


class FakeEngine:
    tracked = 3


def test_probe_reports_tracked_count():
    async def go():
        task = asyncio.create_task(asyncio.sleep(10))
        try:
            return scheduler_alive(memo=kopf.Memo(engine_task=task, engine=FakeEngine()))
        finally:
            task.cancel()

    assert asyncio.run(go()) == 3


def test_probe_fails_when_scheduler_stopped():
    async def go():
        task = asyncio.create_task(asyncio.sleep(0))
        await task
        scheduler_alive(memo=kopf.Memo(engine_task=task, engine=FakeEngine()))

    with pytest.raises(kopf.PermanentError, match="not running"):
        asyncio.run(go())
