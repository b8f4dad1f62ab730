#!/usr/bin/env python3
"""Wildcard subscriptions beside one deny rule, with Eclipse paho-mqtt 2.x, in MQTT 3.1.1 and 5.

Usage: paho_acl_wildcards.py HOST PORT [paho|deny-subtree]

Modelled on what Eclipse Paho's interoperability suite (paho.mqtt.testing, client_test.py and
client_test5.py) does with wildcards, run against a sharq broker whose ACL holds the two lines
that suite is run with:

    topic readwrite #
    topic deny test/nosubscribe

plus a user `writer` (password `w`) with `topic write #`, so that something is published on the
denied topic for delivery to filter. Anonymous clients are the suite's clients. Checked in each
protocol version (mode `paho`):

- SUBACK: `#`, `+/+`, `TopicA/#` and `TopicA/+` are granted; `test/nosubscribe` is refused
  (0x80 in 3.1.1, 0x87 in 5);
- live messages on the suite's topics arrive through overlapping wildcards (once or twice, as
  the suite's test_overlapping_subscriptions allows), and one on `test/nosubscribe` never does;
- retained messages (the suite's test_retained_messages: `TopicA/B`, `Topic/C`, `TopicA/C` at
  QoS 0, 1, 2) arrive on `+/+` and `#`; the retained one on `test/nosubscribe` does not;
- `$share/g/#` is granted, and its members never get `test/nosubscribe`.

Mode `deny-subtree` is run under `topic readwrite #` / `topic deny test/#`: a filter whose whole
reach is denied (`test/#`, `test/+`, `test/nosubscribe`) is refused, `+/+` and `#` granted.

"Never arrives" is checked without sleeping: the denied message is published first by the same
client, so in the broker's per-session order it would come before the sentinel that is waited
for. Exits 0 on success, 1 with what went wrong otherwise. Every wait is bounded.
"""

import sys
import threading
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

TIMEOUT = 5.0
DENIED = "test/nosubscribe"
# The topics and wildcards of the Paho suite's tests.
TOPICS = ("TopicA", "TopicA/B", "Topic/C", "TopicA/C", "/TopicA")


class Client:
    """A paho client whose SUBACKs and messages are waited for with a bound."""

    def __init__(self, host, port, protocol, username=None, shared=None):
        # Members of one shared group share their condition and message list.
        self.cond, self.messages = shared if shared else (threading.Condition(), [])
        self.subacks = {}
        self.connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"paho-acl-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        if username:
            self.client.username_pw_set(username, username[0])
        self.client.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self.connected.wait(TIMEOUT):
            raise AssertionError("no CONNACK")

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cond:
            self.subacks[mid] = [rc.value for rc in reason_codes]
            self.cond.notify_all()

    def _on_message(self, client, userdata, message):
        with self.cond:
            self.messages.append((message.topic, message.payload, message.retain))
            self.cond.notify_all()

    def subscribe(self, filters, qos=2):
        result, mid = self.client.subscribe([(f, qos) for f in filters])
        if result != mqtt.MQTT_ERR_SUCCESS:
            raise AssertionError(f"SUBSCRIBE not sent: {result}")
        with self.cond:
            if not self.cond.wait_for(lambda: mid in self.subacks, TIMEOUT):
                raise AssertionError(f"no SUBACK for {filters}")
            return self.subacks[mid]

    def publish(self, topic, payload, qos=1, retain=False):
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        info.wait_for_publish(TIMEOUT)
        if not info.is_published():
            raise AssertionError(f"publish on {topic} not acknowledged")

    def wait_for(self, what, condition):
        with self.cond:
            if not self.cond.wait_for(lambda: condition(self.messages), TIMEOUT):
                raise AssertionError(f"{what}: got {self.messages}")
            return list(self.messages)

    def topics(self):
        with self.cond:
            return [t for t, _, _ in self.messages]

    def close(self):
        self.client.disconnect()
        self.client.loop_stop()


def check(failures, name, condition, detail):
    if not condition:
        failures.append(f"{name}: {detail}")


def paho_mode(host, port, protocol, name, refused, failures):
    writer = Client(host, port, protocol, "writer")
    try:
        # SUBACKs, as test_subscribe_failure and the wildcard tests see them.
        subscriber = Client(host, port, protocol)
        codes = subscriber.subscribe(["#", "+/+", DENIED, "TopicA/#", "TopicA/+"])
        check(failures, name, codes == [2, 2, refused, 2, 2],
              f"SUBACK {codes}, expected [2, 2, {refused:#x}, 2, 2]")

        # Live messages, the denied one first, through overlapping wildcards.
        writer.publish(DENIED, b"denied")
        for qos, topic in enumerate(TOPICS):
            writer.publish(topic, f"live {topic}".encode(), qos=qos % 3)
        writer.publish("sentinel/live", b"end")
        got = subscriber.wait_for("live sentinel", lambda m: any(t == "sentinel/live" for t, _, _ in m))
        topics = [t for t, _, _ in got]
        check(failures, name, DENIED not in topics, f"live message on {DENIED} delivered: {topics}")
        for topic in TOPICS:
            # Overlapping subscriptions: one copy or one per subscription, never none.
            check(failures, name, topics.count(topic) >= 1,
                  f"live {topic} arrived {topics.count(topic)} times: {topics}")
        subscriber.close()

        # Retained messages, as test_retained_messages publishes them, plus one on the denied
        # topic and a sentinel no `+/+` matches.
        writer.publish(DENIED, b"denied", qos=1, retain=True)
        retained = {"TopicA/B": 0, "Topic/C": 1, "TopicA/C": 2}
        for topic, qos in retained.items():
            writer.publish(topic, b"retained", qos=qos, retain=True)
        writer.publish("sentinel", b"end", qos=1, retain=True)
        for wildcard in ("+/+", "#"):
            reader = Client(host, port, protocol)
            codes = reader.subscribe([wildcard])
            check(failures, name, codes == [2], f"SUBACK {codes} for {wildcard}")
            # Sent after everything the first SUBSCRIBE brought.
            reader.subscribe(["sentinel"])
            expected = len(retained) + (2 if wildcard == "#" else 1)
            got = reader.wait_for(f"retained on {wildcard}", lambda m: len(m) >= expected)
            topics = sorted(t for t, _, _ in got)
            want = sorted(list(retained) + ["sentinel"] * (expected - len(retained)))
            check(failures, name, topics == want,
                  f"retained on {wildcard}: {topics}, expected {want}")
            check(failures, name, all(r for _, _, r in got), f"RETAIN not set: {got}")
            reader.close()
        for topic in list(retained) + [DENIED, "sentinel"]:
            writer.publish(topic, b"", qos=1, retain=True)

        # A shared subscription over everything: its members never get the denied topic.
        shared = (threading.Condition(), [])
        members = [Client(host, port, protocol, shared=shared) for _ in range(2)]
        for member in members:
            codes = member.subscribe(["$share/g/#"], qos=1)
            check(failures, name, codes == [1], f"SUBACK {codes} for $share/g/#")
        count = 6
        for i in range(count):
            if i % 3 == 0:
                writer.publish(DENIED, b"denied")
            writer.publish(f"work/{i}", b"job")
        # Each denied copy was handed to a member before the jobs published after it. A group
        # left lingering by the previous protocol's run may also bring what it queued
        # meanwhile (the denied messages of this run's earlier steps among them).
        def jobs(messages):
            return sorted(t for t, _, _ in messages if t.startswith("work/"))

        got = members[0].wait_for("shared jobs", lambda m: len(jobs(m)) >= count)
        received = [t for t, _, _ in got]
        check(failures, name, DENIED not in received, f"a member got {DENIED}: {received}")
        check(failures, name, jobs(got) == sorted(f"work/{i}" for i in range(count)),
              f"shared members got {received}")
        for member in members:
            member.close()
    finally:
        writer.close()


def deny_subtree_mode(host, port, protocol, name, refused, failures):
    client = Client(host, port, protocol)
    try:
        filters = ["test/#", "test/+", DENIED, "+/+", "#"]
        codes = client.subscribe(filters)
        want = [refused, refused, refused, 2, 2]
        check(failures, name, codes == want, f"SUBACK {codes} for {filters}, expected {want}")
    finally:
        client.close()


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "paho"
    run = {"paho": paho_mode, "deny-subtree": deny_subtree_mode}[mode]
    failures = []
    for protocol, name, refused in [
        (mqtt.MQTTv311, "MQTT 3.1.1", 0x80),
        (mqtt.MQTTv5, "MQTT 5", 0x87),
    ]:
        run(host, port, protocol, name, refused, failures)
    if failures:
        print("\n".join(failures), file=sys.stderr)
        sys.exit(1)
    print(f"acl wildcards ({mode}): ok")


if __name__ == "__main__":
    main()
