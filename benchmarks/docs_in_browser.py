"""/docs in a real browser, offline: headless Chromium (CDP) renders the Swagger UI, lists /predict, and
"Authorize" takes a key that then opens /model.

    apt-get install chromium                          # once
    unshare -n sh -c 'ip link set lo up && python benchmarks/docs_in_browser.py MODEL --out /tmp/docs'

Inside `unshare -n` only the loopback exists: nothing can be fetched from a CDN. Starts `dfd serve` with a fresh
key on 127.0.0.1, drives the page like a person (click, type, click), writes docs.png and authorized.png to --out
and prints (and writes docs_in_browser.json) what it found. A check run by hand: CI has no browser.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websockets
import yaml


async def drive(url: str, key: str, out: Path) -> dict:
    proc = subprocess.Popen(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=1280,1400",
                             "--remote-debugging-port=9333", "about:blank"], stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            targets = json.load(urllib.request.urlopen("http://127.0.0.1:9333/json"))
            page = [t for t in targets if t["type"] == "page"][0]
            break
        except Exception:
            time.sleep(0.2)
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=50_000_000) as ws:
        n, found = [0], {}

        async def call(method, **params):
            n[0] += 1
            await ws.send(json.dumps({"id": n[0], "method": method, "params": params}))
            while True:
                msg = json.loads(await ws.recv())
                if msg.get("id") == n[0]:
                    return msg.get("result", msg)

        async def js(expr):
            r = await call("Runtime.evaluate", expression=expr, awaitPromise=True, returnByValue=True)
            return r.get("result", {}).get("value")

        async def until(expr, secs=15):
            t0 = time.time()
            while time.time() - t0 < secs:
                if await js(expr):
                    return True
                await asyncio.sleep(0.2)
            return False

        await call("Page.enable")
        await call("Page.navigate", url=f"{url}/docs")
        found["rendered"] = await until("!!document.querySelector('.opblock-summary-path')")
        found["paths"] = (await js("[...document.querySelectorAll('.opblock-summary-path')].map(e => e.textContent)"))
        found["unable_to_render"] = await js("document.body.innerText.includes('Unable to render')")
        shot = await call("Page.captureScreenshot", format="png")
        (out / "docs.png").write_bytes(base64.b64decode(shot["data"]))
        found["authorize_button"] = await until("!!document.querySelector('.btn.authorize')")
        await js("document.querySelector('.btn.authorize').click()")
        await until("!!document.querySelector('.modal-ux input')")
        found["schemes"] = (await js("[...document.querySelectorAll('.modal-ux h4')].map(e => e.textContent)"))
        # type the key into the apiKey input the way a person would (React sees input events)
        await js("""(() => { const inp = [...document.querySelectorAll('.modal-ux input')].pop(); inp.focus(); })()""")
        await call("Input.insertText", text=key)
        await js("""(() => { const forms = [...document.querySelectorAll('.modal-ux form')]; const f = forms.pop();
                 f.querySelector('button.authorize').click(); })()""")
        found["authorized"] = (await until("document.querySelector('.modal-ux').innerText.includes('Authorized')"))
        shot = await call("Page.captureScreenshot", format="png")
        (out / "authorized.png").write_bytes(base64.b64decode(shot["data"]))
        await js("document.querySelector('.modal-ux .btn-done, .modal-ux .close-modal').click()")
        # call /predict from the page with the key the UI holds: GET /model through Swagger's own request path
        status = await js("""(async () => { const a = ui.authSelectors.authorized().toJS();
                 const key = a.apiKey ? a.apiKey.value : null;
                 const r = await fetch('/model', {headers: {'X-API-Key': key}}); return [Object.keys(a), r.status]; })()""")
        found["key_schemes_held"], found["model_status_with_held_key"] = status
    proc.terminate()
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--params", type=Path, default=Path("params.yaml"))
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--out", type=Path, default=Path("/tmp/docs_in_browser"))
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    settings = yaml.safe_load(args.params.read_text())
    settings["serve"].update(api_keys_file=str(tmp / "keys.txt"), request_log="")
    (tmp / "params.yaml").write_text(yaml.safe_dump(settings, sort_keys=False))
    dfd = str(Path(sys.executable).with_name("dfd"))
    key = subprocess.run([dfd, "serve", "keys", "add", "browser", "--params", str(tmp / "params.yaml")],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    server = subprocess.Popen([dfd, "serve", "--model", args.model, "--port", str(args.port), "--params",
                               str(tmp / "params.yaml")], stderr=(tmp / "server.log").open("wb"))
    url = f"http://127.0.0.1:{args.port}"
    try:
        for _ in range(300):
            try:
                if urllib.request.urlopen(f"{url}/ready", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.2)
        found = asyncio.run(drive(url, key, args.out))
    finally:
        server.terminate()
        server.wait(timeout=60)
    print(json.dumps(found, indent=1))
    (args.out / "docs_in_browser.json").write_text(json.dumps(found, indent=1) + "\n")
    ok = found.get("rendered") and "/predict" in found.get("paths", []) and found.get("authorized") and \
        found.get("model_status_with_held_key") == 200
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
