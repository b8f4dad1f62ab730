#!/usr/bin/env python3
"""A strategy that routes by a user property, end to end with Eclipse paho-mqtt 2.x (MQTT 5).

Usage: paho_route_by_property.py HOST PORT GROUP

Two paho workers join the shared group GROUP on `jobs/#`, each with the SUBSCRIBE user property
`region` (eu, us). A paho publisher sends 20 QoS 1 jobs with the PUBLISH user property
`region` alternating eu/us, then 10 without one. The group's strategy (fixture
`sdk_by_property`) must hand every eu job to the eu worker and every us job to the us worker;
jobs without a region go round robin, so each worker gets some. Exits 0 on success; prints
what went wrong and exits 1 otherwise. Every wait is bounded.
"""

import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TIMEOUT = 10.0


def client(name, host, port):
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{name}-{uuid.uuid4().hex[:6]}",
        protocol=mqtt.MQTTv5,
    )
    connected = threading.Event()
    c.on_connect = lambda *args: connected.set()
    c.connect(host, port)
    c.loop_start()
    if not connected.wait(TIMEOUT):
        print(f"{name}: no CONNACK")
        sys.exit(1)
    return c


def main():
    host, port, group = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    received = {"eu": [], "us": []}
    lock = threading.Lock()
    workers = []
    for region in ("eu", "us"):
        w = client(f"worker-{region}", host, port)
        subscribed = threading.Event()
        w.on_subscribe = lambda *args, ev=subscribed: ev.set()

        def on_message(_c, _u, message, region=region):
            with lock:
                received[region].append(message.payload.decode())

        w.on_message = on_message
        props = Properties(PacketTypes.SUBSCRIBE)
        props.UserProperty = [("region", region)]
        w.subscribe(f"$share/{group}/jobs/#", qos=1, properties=props)
        if not subscribed.wait(TIMEOUT):
            print(f"worker-{region}: no SUBACK")
            sys.exit(1)
        workers.append(w)

    publisher = client("publisher", host, port)
    sent = 0
    for i in range(20):
        region = "eu" if i % 2 == 0 else "us"
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("region", region)]
        publisher.publish(f"jobs/{i}", f"{region}:{i}", qos=1, properties=props).wait_for_publish(TIMEOUT)
        sent += 1
    for i in range(10):
        publisher.publish(f"jobs/plain/{i}", f"none:{i}", qos=1).wait_for_publish(TIMEOUT)
        sent += 1

    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        with lock:
            if len(received["eu"]) + len(received["us"]) >= sent:
                break
        time.sleep(0.05)
    time.sleep(0.3)  # a duplicate would arrive now
    with lock:
        total = len(received["eu"]) + len(received["us"])
        wrong = [(w, p) for w in ("eu", "us") for p in received[w] if p.split(":")[0] not in (w, "none")]
        plain = {w: sum(1 for p in received[w] if p.startswith("none:")) for w in ("eu", "us")}
    ok = True
    if total != sent:
        print(f"{total} of {sent} jobs arrived: {received}")
        ok = False
    if wrong:
        print(f"jobs at the wrong region's worker: {wrong}")
        ok = False
    if min(plain.values()) == 0:
        print(f"jobs without a region did not go round robin: {plain}")
        ok = False
    for c in workers + [publisher]:
        c.disconnect()
        c.loop_stop()
    if ok:
        print(f"ok: {received}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
