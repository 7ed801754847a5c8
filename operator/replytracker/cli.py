"""The ``replytracker`` command line."""

from __future__ import annotations

import argparse
import logging
import sys


def _run(args: argparse.Namespace) -> int:
    import kopf

    from replytracker import handlers  # importing registers the handlers

    if not args.all_namespaces and not args.namespace:
        print("replytracker run: pass --all-namespaces or at least one --namespace NAME", file=sys.stderr)
        return 2
    handlers.exact_namespaces_only = not args.all_namespaces and not any(
        char in name for name in args.namespace for char in "*?[!"
    )
    # kopf's verbose mode logs its own internals at debug level, so --verbose
    # raises only the operator's loggers and leaves kopf's to --debug.
    kopf.configure(debug=args.debug, log_prefix=True)
    if args.verbose or args.debug:
        logging.getLogger("replytracker").setLevel(logging.DEBUG)
    # The Kubernetes client logs response bodies at debug level, Secrets
    # included, and the HTTP libraries log every request: keep them quiet
    # whatever the verbosity.
    for name in ("kubernetes.client.rest", "urllib3", "httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not args.debug:
        # kopf logs each watch event it hands to a handler; at thousands of
        # trackers that drowns everything else. Its warnings and errors stay.
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        clusterwide=args.all_namespaces,
        namespaces=args.namespace or (),
        liveness_endpoint=args.liveness,
        standalone=True,
    )
    return 0


def _fake_provider(args: argparse.Namespace) -> int:
    from replytracker.fake_provider import run_fake_provider

    run_fake_provider(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        api_secret=args.api_secret,
        mode=args.mode,
        pending_polls=args.pending_polls,
        rate_limit=args.rate_limit,
    )
    return 0


def _receiver(args: argparse.Namespace) -> int:
    from replytracker.receiver import run_receiver

    run_receiver(host=args.host, port=args.port, secret=args.secret)
    return 0


def _crd(args: argparse.Namespace) -> int:
    from replytracker.crd import render_crd

    sys.stdout.write(render_crd())
    return 0


def _demo(args: argparse.Namespace) -> int:
    from replytracker.demo import run_demo

    return run_demo(keep_running=args.keep_running)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="replytracker",
        description="Kubernetes operator that watches message threads for replies and calls a webhook.",
    )
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run the operator against the current kubeconfig or the in-cluster config",
        description="Run the operator. Settings come from REPLYTRACKER_* environment variables (see README).",
    )
    scope = run.add_mutually_exclusive_group()
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="watch trackers in every namespace")
    scope.add_argument(
        "--namespace", "-n", action="append", metavar="NAME", help="watch this namespace (repeatable; globs allowed)"
    )
    run.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve kopf's liveness endpoint, for example http://0.0.0.0:8080/healthz",
    )
    run.add_argument("--verbose", "-v", action="store_true", help="log more")
    run.add_argument("--debug", action="store_true", help="log everything, including kopf's internals")
    run.set_defaults(handler=_run)

    fake = commands.add_parser("fake-provider", help="serve a fake WeLink-compatible provider for tests")
    fake.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    fake.add_argument("--port", type=int, default=8090, help="port to listen on (default 8090)")
    fake.add_argument("--api-key", default="test-key", help="API key the fake accepts (default test-key)")
    fake.add_argument("--api-secret", default="test-secret", help="API secret the fake accepts (default test-secret)")
    fake.add_argument(
        "--mode", choices=["sync", "async"], default="sync", help="answer at once, or through get_response"
    )
    fake.add_argument(
        "--pending-polls", type=int, default=1, help="get_response polls that return PENDING before the result"
    )
    fake.add_argument(
        "--rate-limit", type=int, default=150, help="message-sync requests per account per rolling hour"
    )
    fake.set_defaults(handler=_fake_provider)

    receiver = commands.add_parser("receiver", help="serve a webhook receiver that prints and verifies deliveries")
    receiver.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    receiver.add_argument("--port", type=int, default=8091, help="port to listen on (default 8091)")
    receiver.add_argument("--secret", default=None, help="signing key to verify X-Replytracker-Signature with")
    receiver.set_defaults(handler=_receiver)

    crd = commands.add_parser("crd", help="print the MessageTracker CustomResourceDefinition")
    crd.set_defaults(handler=_crd)

    demo = commands.add_parser(
        "demo",
        help="run the local demo: control plane, fake provider, webhook receiver, operator and a sample tracker",
    )
    demo.add_argument(
        "--keep-running", action="store_true", help="keep everything running after the reply, until Ctrl-C"
    )
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "run":
        # `run` leaves logging to kopf.configure, which installs its own handler.
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.handler(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
