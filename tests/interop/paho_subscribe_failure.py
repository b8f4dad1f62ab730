#!/usr/bin/env python3
"""Paho's `test_subscribe_failure`, as paho.mqtt.testing's client_test runs it, against a sharq
broker whose ACL denies `test/nosubscribe`.

Usage: paho_subscribe_failure.py HOST PORT

A 3.1.1 client subscribing to `test/nosubscribe` at QoS 2 must get SUBACK return code 0x80; a v5
client must get reason code 0x87 (Not authorized); a permitted topic is granted in the same run.
Exits 0 on success, 1 with what went wrong otherwise. Every wait is bounded.
"""

import sys
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TIMEOUT = 5.0


def subscribe_codes(host, port, protocol, topics):
    subacks = []
    done = threading.Event()
    connected = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"paho-subfail-{uuid.uuid4().hex[:8]}",
        protocol=protocol,
    )

    def on_connect(client, userdata, flags, reason_code, properties):
        connected.set()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subacks.append([rc.value for rc in reason_codes])
        done.set()

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.connect(host, port, keepalive=30)
    client.loop_start()
    try:
        if not connected.wait(TIMEOUT):
            raise AssertionError("no CONNACK")
        client.subscribe([(t, 2) for t in topics])
        if not done.wait(TIMEOUT):
            raise AssertionError("no SUBACK")
        return subacks[0]
    finally:
        client.disconnect()
        client.loop_stop()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    failures = []
    for protocol, name, refused in [
        (mqtt.MQTTv311, "3.1.1", 0x80),
        (mqtt.MQTTv5, "5", 0x87),
    ]:
        codes = subscribe_codes(host, port, protocol, ["test/nosubscribe", "test/ok"])
        if codes != [refused, 2]:
            failures.append(f"MQTT {name}: SUBACK {codes}, expected [{refused:#x}, 2]")
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    print("subscribe failure: ok")


if __name__ == "__main__":
    main()
