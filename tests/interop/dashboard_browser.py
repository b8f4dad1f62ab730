"""Drives the dashboard in a real browser (Debian's Chromium through Playwright) against a
running sharq: a group made by the test appears, a member's share of the traffic changes as
messages flow and a second member joins, search finds one group among a thousand, and the
strategy control swaps the group's strategy through the admin API.

usage: dashboard_browser.py HTTP_ADDR MQTT_PORT TOKEN SCREENSHOT_PATH
"""
import json
import sys
import threading
import time
import urllib.request

import paho.mqtt.client as mqtt
from playwright.sync_api import sync_playwright, expect

HTTP, MQTT_PORT, TOKEN, SCREENSHOT = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
GROUP, FILTER = "browser", "jobs/#"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def client(client_id):
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", MQTT_PORT)
    c.loop_start()
    return c


def member(client_id):
    c = client(client_id)
    c.subscribe(f"$share/{GROUP}/{FILTER}", qos=1)
    return c


stop = threading.Event()


def publish_forever():
    p = client("dashboard-producer")
    n = 0
    while not stop.is_set():
        p.publish("jobs/x", str(n).encode(), qos=1)
        n += 1
        time.sleep(0.01)
    p.disconnect()


def share(page, client_id):
    bar = page.locator(f'#d-members .bar[data-client="{client_id}"]')
    if bar.count() == 0:
        return None
    return float(bar.get_attribute("data-share"))


def wait_for(what, condition, limit=20.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def main():
    first = member("worker-a")
    publisher = threading.Thread(target=publish_forever, daemon=True)
    publisher.start()
    second = None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(f"http://{HTTP}/#token={TOKEN}")
        expect(page.locator("#status")).to_have_text("live", timeout=15000)
        # Among a thousand groups the test declared, the busiest (ours) comes first.
        row = page.locator("#groups tbody tr", has_text=GROUP).first
        expect(row).to_be_visible(timeout=15000)
        expect(page.locator("#count")).to_contain_text("of 1001", timeout=15000)
        page.fill("#search", "idle-0999")
        expect(page.locator("#groups tbody tr")).to_have_count(1, timeout=5000)
        page.fill("#search", GROUP)
        page.locator("#groups tbody tr", has_text=GROUP).first.click()
        expect(page.locator("#d-name")).to_have_text(GROUP)
        wait_for("worker-a to take everything", lambda: (share(page, "worker-a") or 0) > 0.99)
        second = member("worker-b")
        wait_for("worker-a's share to fall as worker-b joins", lambda: (share(page, "worker-a") or 1) < 0.75)
        wait_for("worker-b to take a share", lambda: (share(page, "worker-b") or 0) > 0.25)
        expect(page.locator("#events")).to_contain_text("member joined", timeout=5000)

        # A wrong token is refused and said so, and changes nothing.
        page.fill("#s-token", "wrong")
        page.fill("#s-strategy", "round_robin")
        page.click("#swap button[type=submit]")
        expect(page.locator("#s-result")).to_contain_text("refused", timeout=15000)
        page.fill("#s-token", TOKEN)
        page.fill("#s-strategy", "least_inflight")
        page.fill("#s-params", "{}")
        page.click("#swap button[type=submit]")
        expect(page.locator("#s-result")).to_contain_text("now least_inflight", timeout=15000)
        with urllib.request.urlopen(f"http://{HTTP}/api/v1/groups/{GROUP}") as reply:
            detail = json.load(reply)
        assert detail["filters"][0]["strategy"] == "least_inflight", detail
        expect(page.locator("#events")).to_contain_text("strategy swapped", timeout=5000)
        expect(page.locator("#d-strategy")).to_contain_text("least_inflight", timeout=5000)
        page.fill("#search", "")
        time.sleep(2.5)  # let the charts gather a few points for the screenshot
        page.evaluate("document.getElementById('detail').scrollTop = 0")
        page.screenshot(path=SCREENSHOT)
        browser.close()
    stop.set()
    publisher.join()
    first.disconnect()
    if second:
        second.disconnect()
    print("dashboard ok")


main()
