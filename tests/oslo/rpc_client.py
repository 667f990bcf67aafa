#!/usr/bin/env python3
"""Drives snapq through the real oslo.messaging RPC client, as an OpenStack service would.

    SNAPQ_AMQP_URL=amqp://... python rpc_client.py --topic T --method snapshot_instance \
        --version 1.0 --timeout 10 --kwargs '{"disk": "vms/x_disk", ...}' \
        --context '{"project_id": "p1"}' [--cast] [--allowed-exmods m1,m2]

The broker URL comes from the environment (SNAPQ_AMQP_URL, snapq's `amqp://` URI, used with
oslo's `rabbit://` driver), never from argv, so its password does not show in process listings. The control exchange is oslo's default, `openstack`.

Prints exactly one JSON line on stdout:

    {"ok": true, "result": ..., "seconds": ..., "setup_seconds": ..., "reply_q": ...}
    {"ok": false, "exc_type": ..., "value": ..., "python_class": ..., "module": ...,
     "seconds": ..., "setup_seconds": ..., "reply_q": ...}

`seconds` times only the call (or cast) itself: the connections and the reply queue are set
up beforehand (`setup_seconds`). `exc_type` is the remote exception's class name whether the
client re-raised it (its module is in --allowed-exmods) or wrapped it in a RemoteError;
`module` is the remote module, known only when re-raised. `reply_q` is the reply queue oslo
declared (null for a cast), so the caller can delete it.

`snapq.exceptions` does not exist in Python; this driver provides it as a module whose every
attribute is an Exception subclass, so that snapq's failures can be re-raised with their module
when it is allowed.
"""

import argparse
import json
import os
import sys
import time
import types
import warnings

warnings.filterwarnings("ignore")

from oslo_config import cfg  # noqa: E402
import oslo_messaging  # noqa: E402

REMOTE_POSTFIX = "_Remote"


def install_snapq_exceptions():
    """A `snapq.exceptions` module that makes up any exception class asked of it."""
    package = types.ModuleType("snapq")
    package.__path__ = []
    module = types.ModuleType("snapq.exceptions")
    classes = {}

    def getattr_(name):
        if name.startswith("__"):
            raise AttributeError(name)
        if name not in classes:
            classes[name] = type(name, (Exception,), {"__module__": "snapq.exceptions"})
        return classes[name]

    module.__getattr__ = getattr_
    package.exceptions = module
    sys.modules.setdefault("snapq", package)
    sys.modules.setdefault("snapq.exceptions", module)


def strip_remote(name):
    if name and name.endswith(REMOTE_POSTFIX):
        return name[: -len(REMOTE_POSTFIX)]
    return name


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topic", required=True)
    parser.add_argument("--method", default="snapshot_instance")
    parser.add_argument("--version", default="1.0", help="the client Target's version")
    parser.add_argument("--timeout", type=float, default=10.0, help="call timeout, seconds")
    parser.add_argument("--kwargs", default="{}", help="the method's arguments, a JSON object")
    parser.add_argument("--context", default="{}", help="the request context, a JSON object")
    parser.add_argument("--cast", action="store_true", help="cast instead of call")
    parser.add_argument("--server", default=None, help="aim at topic.<server> (prepare(server=...))")
    parser.add_argument(
        "--allowed-exmods",
        default="",
        help="comma-separated modules whose remote exceptions the client re-raises",
    )
    args = parser.parse_args()

    url = os.environ.get("SNAPQ_AMQP_URL")
    if not url:
        sys.exit("SNAPQ_AMQP_URL is not set")
    # snapq's URL is an AMQP URI; oslo names the driver in the scheme. The vhost (`%2f`) is
    # unquoted by oslo itself.
    for scheme in ("amqp://", "amqps://"):
        if url.startswith(scheme):
            url = "rabbit://" + url[len(scheme):]
    kwargs = json.loads(args.kwargs)
    context = json.loads(args.context)
    allowed = [m for m in args.allowed_exmods.split(",") if m]
    if "snapq.exceptions" in allowed:
        install_snapq_exceptions()

    cfg.CONF(args=[], project="snapq-oslo-test", default_config_files=[], default_config_dirs=[])
    transport = oslo_messaging.get_rpc_transport(cfg.CONF, url=url, allowed_remote_exmods=allowed)
    target = oslo_messaging.Target(topic=args.topic, version=args.version or None)
    client = oslo_messaging.get_rpc_client(transport, target, timeout=args.timeout)
    if args.server:
        client = client.prepare(server=args.server)

    out = {"reply_q": None}
    setup_started = time.monotonic()
    try:
        # Connect (and declare the reply queue) before the clock starts, so that `seconds` is
        # the worker's answer time, not connection set-up. Private API, hence best effort.
        driver = transport._driver
        with driver._get_connection():
            pass
        if not args.cast:
            out["reply_q"] = driver._get_reply_q()
    except Exception as e:  # noqa: BLE001 (only the timing gets worse)
        out["setup_error"] = f"{type(e).__name__}: {e}"
    out["setup_seconds"] = round(time.monotonic() - setup_started, 4)

    started = time.monotonic()
    try:
        if args.cast:
            client.cast(context, args.method, **kwargs)
            result = None
        else:
            result = client.call(context, args.method, **kwargs)
        out.update(ok=True, result=result)
    except oslo_messaging.RemoteError as e:
        out.update(
            ok=False,
            exc_type=e.exc_type,
            value=e.value,
            python_class=f"{type(e).__module__}.{type(e).__name__}",
            module=None,
        )
    except Exception as e:  # noqa: BLE001 (reported, not hidden)
        cls = type(e)
        remote = cls.__module__.endswith(REMOTE_POSTFIX)
        out.update(
            ok=False,
            exc_type=strip_remote(cls.__name__),
            value=str(e).rstrip("\n"),
            python_class=f"{cls.__module__}.{cls.__name__}",
            module=strip_remote(cls.__module__) if remote else None,
        )
    out["seconds"] = round(time.monotonic() - started, 4)
    try:
        transport.cleanup()
    except Exception:  # noqa: BLE001
        pass
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
