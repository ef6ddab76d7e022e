#!/usr/bin/env python3
"""Screenshots a reporter page in headless Chromium, optionally with a cookie (a signed-in session), through the
DevTools protocol: chromium --remote-debugging-port, Network.setCookie, Page.navigate, Page.captureScreenshot.

  scripts/screenshot.py URL OUT.png [--cookie name=value] [--width 1280] [--height 900]

Needs Debian's chromium and PyPI's websocket-client."""
import argparse, base64, json, os, shutil, subprocess, tempfile, time, urllib.request
import websocket

p = argparse.ArgumentParser()
p.add_argument("url"); p.add_argument("out")
p.add_argument("--cookie"); p.add_argument("--width", type=int, default=1280); p.add_argument("--height", type=int, default=900)
a = p.parse_args()
profile = tempfile.mkdtemp(prefix="devci-chromium-")
port = 9222 + os.getpid() % 500
chrome = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--remote-debugging-port={port}",
                           f"--user-data-dir={profile}", f"--window-size={a.width},{a.height}", "about:blank"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    for _ in range(100):
        try:
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json"))
            page = next(t for t in targets if t["type"] == "page")
            break
        except Exception:
            time.sleep(0.1)
    ws = websocket.create_connection(page["webSocketDebuggerUrl"])
    n = [0]
    def call(method, **params):
        n[0] += 1
        ws.send(json.dumps({"id": n[0], "method": method, "params": params}))
        while True:
            reply = json.loads(ws.recv())
            if reply.get("id") == n[0]:
                return reply.get("result", {})
    call("Network.enable"); call("Page.enable")
    call("Emulation.setDeviceMetricsOverride", width=a.width, height=a.height, deviceScaleFactor=1, mobile=False)
    if a.cookie:
        name, value = a.cookie.split("=", 1)
        call("Network.setCookie", name=name, value=value, url=a.url, httpOnly=True, sameSite="Strict")
    call("Page.navigate", url=a.url)
    time.sleep(2)
    shot = call("Page.captureScreenshot", format="png")
    open(a.out, "wb").write(base64.b64decode(shot["data"]))
finally:
    chrome.kill(); chrome.wait(); shutil.rmtree(profile, ignore_errors=True)
