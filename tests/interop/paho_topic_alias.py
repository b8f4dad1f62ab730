#!/usr/bin/env python3
"""Server-to-client topic aliases, received by Eclipse paho-mqtt 2.x (MQTT 5).

Usage: paho_topic_alias.py HOST PORT

A paho client connects with Topic Alias Maximum 2, subscribes, and publishes four QoS 1
messages to itself on topic A, then one each on B and C (C takes the alias of the least
recently used topic). paho does not resolve incoming aliases itself, so the script keeps the
client-side alias table as an application would, and checks what arrives:
- the first message on a topic carries the topic and an alias in 1..2;
- later ones carry the alias alone (empty topic), and it resolves to the published topic.
Exits 0 on success; prints what went wrong and exits 1 otherwise. Every wait is bounded.
"""

import sys
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

TIMEOUT = 5.0


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    prefix = f"alias-{uuid.uuid4().hex[:8]}"
    sent = [f"{prefix}/A"] * 4 + [f"{prefix}/B", f"{prefix}/C", f"{prefix}/A"]
    received = []
    cond = threading.Condition()
    connected = threading.Event()
    subscribed = threading.Event()

    def on_connect(client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            print(f"CONNACK refused: {reason_code}")
        connected.set()

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, message):
        alias = getattr(message.properties, "TopicAlias", None)
        with cond:
            received.append((message.topic, alias, message.payload.decode()))
            cond.notify_all()

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=prefix, protocol=mqtt.MQTTv5
    )
    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    properties = Properties(PacketTypes.CONNECT)
    properties.TopicAliasMaximum = 2
    client.connect(host, port, keepalive=30, clean_start=True, properties=properties)
    client.loop_start()
    try:
        if not connected.wait(TIMEOUT):
            return fail("no CONNACK")
        client.subscribe(f"{prefix}/#", qos=1)
        if not subscribed.wait(TIMEOUT):
            return fail("no SUBACK")
        for i, topic in enumerate(sent):
            client.publish(topic, str(i), qos=1).wait_for_publish(TIMEOUT)
        with cond:
            if not cond.wait_for(lambda: len(received) >= len(sent), TIMEOUT):
                return fail(f"only {len(received)} of {len(sent)} messages: {received}")
    finally:
        client.disconnect()
        client.loop_stop()

    table = {}
    received.sort(key=lambda r: int(r[2]))
    for (topic, alias, payload), expected in zip(received, sent):
        if alias is None or not 1 <= alias <= 2:
            return fail(f"message {payload}: alias {alias} outside 1..2: {received}")
        if topic:
            table[alias] = topic
        if table.get(alias) != expected:
            return fail(f"message {payload}: alias {alias} resolves to {table.get(alias)}, published on {expected}: {received}")
    aliased_only = sum(1 for topic, _, _ in received if topic == "")
    if aliased_only < 3:
        return fail(f"expected the repeats on A to go by alias alone: {received}")
    print(f"ok: {received}")
    return 0


def fail(message):
    print(f"FAIL: {message}")
    return 1


if __name__ == "__main__":
    sys.exit(main())
