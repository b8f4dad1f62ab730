"""Issue #14: how long a hung member's messages are stuck before they flow again elsewhere.

Two members share group `hang` (QoS 1, manual acks). A publisher sends RATE msg/s. After WARMUP
seconds member A stops acknowledging (it stays connected: a hung worker). Every message A received
and never acknowledged must reach member B; for each, the time from A's receipt to B's receipt is
the stuck time. Prints one JSON line: count, and the median / p95 / max stuck time in ms.

usage: ack_timeout_recovery.py PORT ACK_TIMEOUT_MS
"""
import json
import statistics
import sys
import threading
import time

import paho.mqtt.client as mqtt

PORT, TIMEOUT_MS = int(sys.argv[1]), int(sys.argv[2])
RATE, WARMUP, AFTER = 500, 1.0, max(3.0, TIMEOUT_MS / 1000 * 3)

lock = threading.Lock()
got_a, got_b = {}, {}
hung = threading.Event()


def member(name, log, acks):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5, manual_ack=True)

    def on_message(client, _userdata, msg):
        now = time.monotonic()
        with lock:
            log.setdefault(int(msg.payload), now)
        if acks():
            client.ack(msg.mid, msg.qos)

    c.on_message = on_message
    c.connect("127.0.0.1", PORT)
    c.subscribe("$share/hang/h/#", qos=1)
    c.loop_start()
    return c


a = member("member-a", got_a, lambda: not hung.is_set())
b = member("member-b", got_b, lambda: True)
time.sleep(0.3)
p = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="publisher", protocol=mqtt.MQTTv5)
p.connect("127.0.0.1", PORT)
p.loop_start()
start = time.monotonic()
n = 0
while time.monotonic() - start < WARMUP + AFTER:
    if not hung.is_set() and time.monotonic() - start > WARMUP:
        hung.set()
    p.publish("h/x", str(n).encode(), qos=1)
    n += 1
    time.sleep(1 / RATE)
time.sleep(TIMEOUT_MS / 1000 + 1.0)
with lock:
    hung_at = start + WARMUP
    stuck = [got_b[m] - t for m, t in got_a.items() if t >= hung_at and m in got_b]
    missing = [m for m, t in got_a.items() if t >= hung_at and m not in got_b]
    lost = [m for m in range(n) if m not in got_a and m not in got_b]
for c in (a, b, p):
    c.loop_stop()
ms = sorted(s * 1000 for s in stuck)
print(json.dumps({
    "ack_timeout_ms": TIMEOUT_MS,
    "published": n,
    "held_by_hung_member": len(stuck) + len(missing),
    "not_redelivered": len(missing),
    "lost": len(lost),
    "stuck_ms_median": round(statistics.median(ms), 1) if ms else None,
    "stuck_ms_p95": round(ms[int(len(ms) * 0.95) - 1], 1) if ms else None,
    "stuck_ms_max": round(ms[-1], 1) if ms else None,
}))
