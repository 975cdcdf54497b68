"""The transport floor of ``edgefleet bench serving``: a minimal responder on a tenant's topic.

It subscribes to the tenant's shared request topic with the same client library as the agent's data
path (``--link lean``: ``edgefleet.mqtt.lean``; ``--link paho``: ``MqttLink``) and answers every request
on its Response Topic with its Correlation Data and one result frame encoded once at start: no decode,
no model, no bookkeeping. Whatever a request costs the agent beyond this process's CPU per request is
edgefleet's own path. ``--reply-shape`` sizes the reply (a float32 tensor; default 1,10, the MLP's output):
a camera frame's floor answers with a mask as large as the agent's. It reads requests as the agent does
(a large payload is a view of the buffer it was read into). Run as ``python -m edgefleet.bench.echo --port P
--prefix X --tenant T --link lean``; it prints ``ready`` once subscribed and stops on SIGTERM or when stdin
closes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

import numpy as np

from edgefleet.mqtt import Inbound, MqttSettings, data_link
from edgefleet.wire import Topics
from edgefleet.wire.tensors import CONTENT_TYPE, encode_result

STATUS_OK = [("ef-status", "ok")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgefleet.bench.echo")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--prefix", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--link", choices=("lean", "paho"), default="lean")
    p.add_argument("--reply-shape", default="1,10", help="shape of the float32 tensor every reply carries")
    args = p.parse_args(argv)
    topics = Topics(args.prefix)
    shape = tuple(int(d) for d in args.reply_shape.split(","))
    reply = encode_result({"y": np.zeros(shape, np.float32)}, {"device": "echo", "batch": 1})
    # as the agent reads requests: a large one's payload is a view of the buffer it was read into
    link = data_link(MqttSettings(port=args.port), f"echo-{args.link}", args.link, payload_views=True)

    def on_request(msg: Inbound) -> None:
        if msg.response_topic:
            link.publish(msg.response_topic, reply, qos=msg.qos, correlation_data=msg.correlation_data,
                         content_type=CONTENT_TYPE, user_properties=STATUS_OK)

    link.subscribe(topics.infer_shared(args.tenant), on_request, qos=1)
    link.start()
    if not link.wait_connected(10):
        print("no broker", flush=True)
        return 1
    print("ready", flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def until_stdin_closes() -> None:
        sys.stdin.read()
        done.set()

    threading.Thread(target=until_stdin_closes, daemon=True).start()
    done.wait()
    link.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
