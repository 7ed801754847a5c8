"""kopf handlers: start the engine, feed it every MessageTracker event, stop it.

Only event-watching handlers are used, so kopf neither adds finalizers nor
writes annotations to the trackers: deleting a tracker never waits for the
operator, even when the operator is not running.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import kopf
from prometheus_client import start_http_server

from replytracker import metrics
from replytracker.engine import Engine
from replytracker.events import EventRecorder
from replytracker.kube import KubeClient, load_config
from replytracker.models import GROUP, PLURAL, VERSION
from replytracker.provider import ProviderClient
from replytracker.settings import Settings

logger = logging.getLogger(__name__)

# Set by ``replytracker run`` before kopf starts: True when the operator
# watches only namespaces named exactly, without globs.
exact_namespaces_only = False


@kopf.on.startup()
async def start_engine(memo: kopf.Memo, settings: kopf.OperatorSettings, **_: Any) -> None:
    """Read the settings, open the clients and start the scheduler task."""
    # One replica runs at a time (the Deployment uses strategy Recreate), so
    # kopf's peering, which needs cluster-wide CRDs of its own, is not used.
    settings.peering.standalone = True
    if exact_namespaces_only:
        # Watching named namespaces needs no cluster-wide lookups, and a
        # namespaced install's Role does not allow them: without this, kopf
        # retries forbidden CRD and namespace scans for about a minute.
        settings.scanning.disabled = True
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300

    config = Settings()
    api_client = load_config()
    provider = ProviderClient(
        base_url=config.api_url,
        timeout_seconds=config.request_timeout_seconds,
        response_wait_seconds=config.response_wait_seconds,
    )
    http = httpx.AsyncClient(timeout=config.request_timeout_seconds, follow_redirects=False)
    kube = KubeClient(api_client)
    events = EventRecorder(kube, period_seconds=config.event_period_seconds)
    engine = Engine(settings=config, kube=kube, provider=provider, http=http, events=events)
    memo.engine = engine
    memo.clients = (provider, http, api_client)
    memo.phase_collector = metrics.register_trackers(engine.phases)
    if config.metrics_port:
        server, _ = start_http_server(config.metrics_port, addr=config.metrics_address)
        memo.metrics_server = server
        logger.info("Serving metrics on %s:%d/metrics.", config.metrics_address, config.metrics_port)
    memo.engine_task = asyncio.create_task(engine.run(), name="replytracker-engine")
    memo.engine_task.add_done_callback(_report_engine_exit)
    logger.info(
        "reply-tracker started: provider %s, minimum interval %g s, default webhook %s.",
        config.api_url,
        config.min_frequency_seconds,
        "set" if config.webhook_url else "not set",
    )


@kopf.on.cleanup()
async def stop_engine(memo: kopf.Memo, **_: Any) -> None:
    """Cancel the scheduler and close the clients."""
    task: asyncio.Task[None] | None = memo.get("engine_task")
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()
        server.server_close()
    collector = memo.get("phase_collector")
    if collector is not None:
        metrics.unregister(collector)
    clients = memo.get("clients")
    if clients is not None:
        provider, http, api_client = clients
        await provider.aclose()
        await http.aclose()
        api_client.close()
    logger.info("reply-tracker stopped.")


def _report_engine_exit(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.critical("The scheduler stopped: %r. The liveness probe now fails.", task.exception())


@kopf.on.probe(id="scheduler")
def scheduler_alive(memo: kopf.Memo, **_: Any) -> int:
    """Report the number of trackers, and fail the liveness endpoint once the scheduler has stopped."""
    task: asyncio.Task[None] | None = memo.get("engine_task")
    if task is None or task.done():
        # A permanent error fails the probe at once, so kopf's endpoint returns HTTP 500.
        raise kopf.PermanentError("the reply-tracker scheduler is not running")
    engine: Engine = memo.engine
    return engine.tracked


# async, so that kopf calls it on the event loop: the engine is not thread-safe.
@kopf.on.event(GROUP, VERSION, PLURAL)
async def on_tracker_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Pass each event to the engine; ``type`` is None for objects listed at start."""
    engine: Engine = memo.engine
    if type == "DELETED":
        engine.forget(body["metadata"]["uid"])
    else:
        engine.observe(body)
