#!/usr/bin/env python3
"""Interop check with Eclipse paho-mqtt 2.x against a running sharq broker.

Usage: paho_check.py HOST PORT

For MQTT 3.1.1 and 5.0: publish/subscribe at QoS 0, 1 and 2, a retained message, and a will
message (sent when the will client's socket is dropped). Exits 0 on success; prints what went
wrong and exits 1 otherwise. Every wait is bounded.
"""

import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TIMEOUT = 5.0


class Client:
    def __init__(self, host, port, protocol, name, will=None):
        self.messages = []
        self.cond = threading.Condition()
        self.connected = threading.Event()
        self.subscribed = threading.Event()
        self.published = set()
        self.protocol = protocol
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"paho-{name}-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=False)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish
        if protocol == mqtt.MQTTv5:
            self.client.connect(host, port, keepalive=30, clean_start=True)
        else:
            self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT):
            raise AssertionError(f"{name}: no CONNACK")

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print(f"connect refused: {reason_code}", file=sys.stderr)
            return
        self.connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        self.subscribed.set()

    def _on_message(self, client, userdata, message):
        with self.cond:
            self.messages.append(message)
            self.cond.notify_all()

    def _on_publish(self, client, userdata, mid, reason_code, properties):
        with self.cond:
            self.published.add(mid)
            self.cond.notify_all()

    def subscribe(self, topic, qos):
        self.subscribed.clear()
        self.client.subscribe(topic, qos)
        if not self.subscribed.wait(TIMEOUT):
            raise AssertionError(f"no SUBACK for {topic}")

    def publish(self, topic, payload, qos, retain=False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(TIMEOUT)
        if not info.is_published():
            raise AssertionError(f"publish to {topic} at QoS {qos} not completed")

    def wait_message(self, topic):
        deadline = time.monotonic() + TIMEOUT
        with self.cond:
            while True:
                for m in self.messages:
                    if m.topic == topic:
                        self.messages.remove(m)
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no message on {topic}")
                self.cond.wait(left)

    def stop(self):
        self.client.disconnect()
        self.client.loop_stop()


def check(host, port, protocol, label):
    base = f"interop/paho/{label}/{uuid.uuid4().hex[:6]}"
    sub = Client(host, port, protocol, f"{label}-sub")
    pub = Client(host, port, protocol, f"{label}-pub")
    sub.subscribe(f"{base}/#", 2)
    for qos in (0, 1, 2):
        topic = f"{base}/qos{qos}"
        payload = f"paho {label} qos {qos}".encode()
        pub.publish(topic, payload, qos)
        m = sub.wait_message(topic)
        assert m.payload == payload, (m.payload, payload)
        assert m.qos == qos, (m.qos, qos)

    # Retained: stored, then delivered to a later subscriber with the retain flag.
    retained_topic = f"{base}-retained"
    pub.publish(retained_topic, b"kept", 1, retain=True)
    late = Client(host, port, protocol, f"{label}-late")
    late.subscribe(retained_topic, 1)
    m = late.wait_message(retained_topic)
    assert m.payload == b"kept" and m.retain, (m.payload, m.retain)
    pub.publish(retained_topic, b"", 1, retain=True)  # clear it
    late.stop()

    # Will: a client whose socket is dropped without DISCONNECT.
    will_topic = f"{base}/will"
    doomed = Client(host, port, protocol, f"{label}-doomed", will=(will_topic, b"gone"))
    doomed.client.loop_stop()
    doomed.client.socket().close()
    m = sub.wait_message(will_topic)
    assert m.payload == b"gone", m.payload

    sub.stop()
    pub.stop()
    print(f"paho {label}: ok")


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    try:
        check(host, port, mqtt.MQTTv311, "v311")
        check(host, port, mqtt.MQTTv5, "v5")
    except AssertionError as e:
        print(f"paho interop failed: {e!r}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
