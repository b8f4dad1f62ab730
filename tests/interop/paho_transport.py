#!/usr/bin/env python3
"""Eclipse paho-mqtt 2.x over TLS, WebSocket and secure WebSocket against a running sharq.

Usage: paho_transport.py MODE HOST PORT [CA [CERT KEY]]
  MODE: tls | ws | wss. CA verifies the server's certificate (tls, wss); CERT and KEY are a
  client certificate to present.

For MQTT 3.1.1 and 5.0: a subscriber and a publisher connect over the transport, and a QoS 1
message goes from one to the other. Exits 0 on success; prints what went wrong and exits 1
otherwise. Every wait is bounded.
"""

import sys
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TIMEOUT = 5.0


def client(mode, host, port, protocol, ca, cert, key, name):
    transport = "websockets" if mode in ("ws", "wss") else "tcp"
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"paho-{mode}-{name}-{uuid.uuid4().hex[:8]}",
        protocol=protocol,
        transport=transport,
    )
    if transport == "websockets":
        c.ws_set_options(path="/mqtt")
    if mode in ("tls", "wss"):
        c.tls_set(ca_certs=ca, certfile=cert, keyfile=key)
    connected = threading.Event()
    failure = []

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            failure.append(str(reason_code))
        connected.set()

    c.on_connect = on_connect
    c.connect(host, port, keepalive=30)
    c.loop_start()
    if not connected.wait(TIMEOUT):
        raise AssertionError(f"{mode} {name}: no CONNACK")
    if failure:
        raise AssertionError(f"{mode} {name}: refused: {failure}")
    return c


def round_trip(mode, host, port, protocol, ca, cert, key):
    topic = f"paho/{mode}/{uuid.uuid4().hex[:8]}"
    received = []
    got = threading.Event()
    subscribed = threading.Event()
    sub = client(mode, host, port, protocol, ca, cert, key, "sub")

    def on_message(client, userdata, message):
        received.append(message.payload)
        got.set()

    sub.on_message = on_message
    sub.on_subscribe = lambda *args: subscribed.set()
    sub.subscribe(topic, qos=1)
    if not subscribed.wait(TIMEOUT):
        raise AssertionError(f"{mode}: no SUBACK")
    pub = client(mode, host, port, protocol, ca, cert, key, "pub")
    payload = f"hello over {mode}".encode()
    info = pub.publish(topic, payload, qos=1)
    info.wait_for_publish(TIMEOUT)
    if not got.wait(TIMEOUT):
        raise AssertionError(f"{mode}: message not received")
    if received != [payload]:
        raise AssertionError(f"{mode}: received {received!r}")
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()


def main():
    mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    ca = sys.argv[4] if len(sys.argv) > 4 else None
    cert = sys.argv[5] if len(sys.argv) > 5 else None
    key = sys.argv[6] if len(sys.argv) > 6 else None
    try:
        for protocol in (mqtt.MQTTv311, mqtt.MQTTv5):
            round_trip(mode, host, port, protocol, ca, cert, key)
    except Exception as e:  # noqa: BLE001 - any failure is reported the same way
        print(f"FAILED: {e}")
        sys.exit(1)
    print("ok")


if __name__ == "__main__":
    main()
