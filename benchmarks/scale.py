"""Benchmark: the operator with many trackers against a real API server.

Creates N trackers (frequency 1 hour) in a control plane of its own and starts
the operator. It measures the time until every tracker has had its first
check, and the operator's memory and CPU. It then restarts the operator and
counts provider calls, which must be zero because no tracker is due.

Run: .venv/bin/python benchmarks/scale.py --trackers 10000
(``make control-plane`` first, or set KUBEBUILDER_ASSETS). Everything runs on
127.0.0.1 and stops when the benchmark ends. Results go to stdout as JSON.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import kubernetes

from replytracker.controlplane import ControlPlane, find_assets
from replytracker.fake_provider import FakeProvider, FakeProviderServer

REPO = Path(__file__).resolve().parents[1]
NAMESPACE = "bench"
ACCOUNTS = 50


def _proc_stats(pid: int) -> dict[str, float]:
    """Return resident memory (now and peak, MiB) and CPU seconds used so far by ``pid``."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(rest.split()[0]) / 1024
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(stat[11]) + int(stat[12])) / ticks  # utime + stime
    return {"rss_mib": round(fields["VmRSS"], 1), "peak_rss_mib": round(fields["VmHWM"], 1), "cpu_seconds": round(cpu, 1)}


def _create_trackers(api: kubernetes.client.CustomObjectsApi, count: int) -> float:
    def create(index: int) -> None:
        body = {
            "apiVersion": "replytracker.dev/v1alpha1",
            "kind": "MessageTracker",
            "metadata": {"name": f"t-{index:05d}"},
            "spec": {"accountId": f"acc-{index % ACCOUNTS}", "threadId": f"thread-{index}", "frequency": 1},
        }
        api.create_namespaced_custom_object("replytracker.dev", "v1alpha1", NAMESPACE, "messagetrackers", body)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(create, range(count)))
    return time.monotonic() - started


def _checked(api: kubernetes.client.CustomObjectsApi) -> int:
    items = api.list_namespaced_custom_object("replytracker.dev", "v1alpha1", NAMESPACE, "messagetrackers")["items"]
    return sum(1 for item in items if (item.get("status") or {}).get("checkCount", 0) >= 1)


def _start_operator(plane: ControlPlane, provider: FakeProviderServer, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(plane.kubeconfig),
        "REPLYTRACKER_API_URL": provider.api_url,
        "REPLYTRACKER_API_KEY": "k",
        "REPLYTRACKER_API_SECRET": "s",
        "REPLYTRACKER_METRICS_PORT": "0",
    }
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "replytracker.cli", "run", "--namespace", NAMESPACE],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def run(count: int, *, settle_seconds: float, deadline_seconds: float) -> dict[str, Any]:
    assets = find_assets()
    workdir = Path(tempfile.mkdtemp(prefix="replytracker-bench-"))
    results: dict[str, Any] = {
        "trackers": count,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
    }
    with ControlPlane(assets=assets, workdir=workdir) as plane:
        plane.kubectl("apply", "-f", str(REPO / "crds" / "messagetracker.yaml"))
        plane.kubectl("wait", "--for=condition=Established", "crd/messagetrackers.replytracker.dev", "--timeout=60s")
        plane.kubectl("create", "namespace", NAMESPACE)
        client = kubernetes.config.new_client_from_config(config_file=str(plane.kubeconfig))
        api = kubernetes.client.CustomObjectsApi(client)

        fake = FakeProvider(api_key="k", api_secret="s", rate_limit=10**9)
        for index in range(ACCOUNTS):
            fake.add_account(f"acc-{index}")
        with FakeProviderServer(fake) as provider:
            results["create_seconds"] = round(_create_trackers(api, count), 1)

            operator = _start_operator(plane, provider, workdir / "operator.log")
            started = time.monotonic()
            while _checked(api) < count:
                if time.monotonic() - started > deadline_seconds:
                    raise TimeoutError(f"not every tracker was checked within {deadline_seconds} s")
                time.sleep(2)
            results["first_checks"] = {
                "seconds_until_all_checked": round(time.monotonic() - started, 1),
                "provider_calls": len(fake.calls(path="personal_messages")),
                "operator": _proc_stats(operator.pid),
            }
            time.sleep(settle_seconds)
            results["steady"] = {"after_seconds": settle_seconds, "operator": _proc_stats(operator.pid)}
            _stop(operator)

            calls_before = len(fake.calls(path="personal_messages"))
            operator = _start_operator(plane, provider, workdir / "operator.log")
            time.sleep(settle_seconds)
            results["restart"] = {
                "after_seconds": settle_seconds,
                "provider_calls_after_restart": len(fake.calls(path="personal_messages")) - calls_before,
                "operator": _proc_stats(operator.pid),
            }
            _stop(operator)
        client.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trackers", type=int, default=10000, help="number of trackers to create")
    parser.add_argument("--settle-seconds", type=float, default=60, help="wait before each steady-state reading")
    parser.add_argument("--deadline-seconds", type=float, default=1800, help="give up after this long")
    args = parser.parse_args()
    print(json.dumps(run(args.trackers, settle_seconds=args.settle_seconds, deadline_seconds=args.deadline_seconds), indent=2))


if __name__ == "__main__":
    main()
