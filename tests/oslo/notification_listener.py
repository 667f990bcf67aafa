#!/usr/bin/env python3
"""Listens to snapq's notifications through the real oslo.messaging notification listener,
as ceilometer or any OpenStack service would.

    SNAPQ_AMQP_URL=amqp://... python notification_listener.py --topic T --count N --timeout S

The broker URL comes from the environment (SNAPQ_AMQP_URL, used with oslo's `rabbit://`
driver), never from argv. The control exchange is oslo's default, `openstack`.

Prints "listening" on stderr once consuming, then one JSON line on stdout per notification:

    {"priority": "info", "publisher_id": ..., "event_type": ..., "payload": {...},
     "ctxt": {...}, "metadata": {...}}

and exits after --count notifications (0) or after --timeout seconds (1).
"""

import argparse
import json
import os
import sys
import threading
import warnings

warnings.filterwarnings("ignore")

from oslo_config import cfg  # noqa: E402
import oslo_messaging  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--topic", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--timeout", type=float, required=True)
    args = parser.parse_args()

    url = os.environ.get("SNAPQ_AMQP_URL")
    if not url:
        sys.exit("SNAPQ_AMQP_URL is not set")
    for scheme in ("amqp://", "amqps://"):
        if url.startswith(scheme):
            url = "rabbit://" + url[len(scheme):]
    cfg.CONF([], project="snapq-notification-test")
    transport = oslo_messaging.get_notification_transport(cfg.CONF, url=url)

    seen = []
    done = threading.Event()
    lock = threading.Lock()

    class Endpoint:
        def _record(self, priority, ctxt, publisher_id, event_type, payload, metadata):
            with lock:
                seen.append(1)
                print(json.dumps({"priority": priority, "publisher_id": publisher_id,
                                  "event_type": event_type, "payload": payload,
                                  "ctxt": ctxt, "metadata": metadata}), flush=True)
                if len(seen) >= args.count:
                    done.set()

        def info(self, ctxt, publisher_id, event_type, payload, metadata):
            self._record("info", ctxt, publisher_id, event_type, payload, metadata)

        def error(self, ctxt, publisher_id, event_type, payload, metadata):
            self._record("error", ctxt, publisher_id, event_type, payload, metadata)

    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(topic=args.topic)], [Endpoint()],
        executor="threading")
    listener.start()
    print("listening", file=sys.stderr, flush=True)
    ok = done.wait(args.timeout)
    listener.stop()
    listener.wait()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
