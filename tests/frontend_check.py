"""Drive the real ComfyUI frontend in headless Chromium (Chrome DevTools Protocol) against a running server.

Run by tests/test_server.py with ComfyUI's Python (it needs aiohttp, which ComfyUI requires):

    python tests/frontend_check.py SERVER_URL UI_WORKFLOW_DIR SCREENSHOT.png

Checks, printed as one JSON object on the last line of stdout:
- the pack's web extension registered in the page;
- every UI workflow loads in the frontend, and the prompt the frontend makes from it
  (app.graphToPrompt) equals its API twin in workflows/api/ (so the two formats agree);
- queuing the quick start (3 steps per stage, 16 px start) fills the loss readout of every
  CaG Optimize node from the server's "cag.progress" events, without page errors after start-up;
  a screenshot of the graph is saved.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--window-size=1600,1000",
]
APP = "window.comfyAPI.app.app"


class Page:
    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        self.errors: list[str] = []
        self.pending: dict[int, asyncio.Future] = {}

    async def listen(self):
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self.pending:
                self.pending.pop(data["id"]).set_result(data)
            elif data.get("method") == "Runtime.exceptionThrown":
                details = data["params"]["exceptionDetails"]
                self.errors.append(details.get("exception", {}).get("description") or details.get("text", ""))

    async def send(self, method: str, **params):
        msg_id = next(self.ids)
        future = asyncio.get_running_loop().create_future()
        self.pending[msg_id] = future
        await self.ws.send_json({"id": msg_id, "method": method, "params": params})
        reply = await asyncio.wait_for(future, 120)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    async def evaluate(self, expression: str):
        result = await self.send("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page error in {expression[:80]!r}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_until(self, expression: str, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if await self.evaluate(expression):
                return
            await asyncio.sleep(0.5)
        raise TimeoutError(f"timed out waiting for {what}")


def start_chromium(profile: str) -> tuple[subprocess.Popen, str]:
    binary = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if binary is None:
        raise SystemExit("no chromium binary found")
    process = subprocess.Popen(
        [binary, *CHROMIUM_FLAGS, "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    for line in process.stderr:  # "DevTools listening on ws://127.0.0.1:PORT/devtools/browser/..."
        if "DevTools listening on" in line:
            return process, line.split("ws://", 1)[1].split("/", 1)[0]
    raise SystemExit("chromium exited before opening its DevTools port")


async def close_dialogs(page: Page) -> None:
    """Close the template browser a fresh profile opens (Escape, then any close button)."""
    for _ in range(3):
        for kind in ("rawKeyDown", "keyUp"):
            await page.send("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape", windowsVirtualKeyCode=27)
        await asyncio.sleep(0.3)
    await page.evaluate(
        "document.querySelectorAll('.p-dialog-close-button, .p-dialog-header-close').forEach(b => b.click())")


def strip_meta(prompt: dict) -> dict:
    return {k: {"class_type": v.get("class_type"), "inputs": v.get("inputs")} for k, v in prompt.items()}


async def check(server: str, workflow_dir: Path, screenshot: Path) -> dict:
    profile = tempfile.mkdtemp(prefix="cag-chromium-")
    browser, devtools = start_chromium(profile)
    result: dict = {}
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://{devtools}/json/list") as response:
                target = next(t for t in await response.json() if t["type"] == "page")
            async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                page = Page(ws)
                listener = asyncio.create_task(page.listen())
                await page.send("Runtime.enable")
                await page.send("Page.enable")
                await page.send("Page.navigate", url=server)
                # window.app is set once app.setup() has registered every node definition.
                await page.wait_until("!!window.app?.graph && !!window.comfyAPI?.app?.app", 120, "the ComfyUI app")
                await page.wait_until(
                    f"{APP}.extensions?.some(e => e.name === 'comfyui-cag.lossReadout')", 60, "the pack's extension")
                result["extension_registered"] = True
                # Errors while the frontend boots a fresh profile are its own, not the pack's.
                result["startup_errors"], page.errors = page.errors, []

                result["ui_matches_api"] = {}
                for path in sorted(workflow_dir.glob("*.json")):
                    ui = json.loads(path.read_text())
                    api = json.loads((workflow_dir / "api" / path.name).read_text())
                    made = await page.evaluate(
                        f"(async () => {{ await {APP}.loadGraphData({json.dumps(ui)}, true, true, null, "
                        "{showMissingNodesDialog: false, showMissingModelsDialog: false});"
                        f" return (await {APP}.graphToPrompt()).output; }})()")
                    same = strip_meta(made) == strip_meta(api)
                    result["ui_matches_api"][path.name] = same or {"frontend": strip_meta(made), "file": strip_meta(api)}

                quick = json.loads((workflow_dir / "cag_quick_start.json").read_text())
                optimize_ids = [n["id"] for n in quick["nodes"] if n["type"] == "CaGOptimize"]
                await page.evaluate(
                    f"(async () => {{ const app = {APP}; await app.loadGraphData({json.dumps(quick)});"
                    " for (const node of app.graph._nodes) for (const w of node.widgets ?? []) {"
                    "   if (node.type === 'CaGOptimize' && w.name === 'steps') w.value = 3;"
                    "   if (node.type === 'CaGInitNoise' && (w.name === 'width' || w.name === 'height')) w.value = 16; }"
                    " await app.queuePrompt(0, 1); })()")
                done = " && ".join(
                    f"(n => n?.cagReadout && n.cagReadout.step === n.cagReadout.total)({APP}.graph.getNodeById({i}))"
                    for i in optimize_ids)
                await page.wait_until(done, 300, "the loss readouts of all CaG Optimize nodes")
                result["readouts"] = await page.evaluate(
                    f"[{', '.join(f'{APP}.graph.getNodeById({i}).cagReadout' for i in optimize_ids)}]")
                await close_dialogs(page)
                await page.evaluate(
                    f"(() => {{ const app = {APP}; try {{ app.extensionManager.command.execute('Comfy.Canvas.FitView'); }}"
                    " catch (e) { app.canvas.ds.reset?.(); } app.graph.setDirtyCanvas(true, true); })()")
                await asyncio.sleep(1)  # let the canvas redraw with the final readout
                shot = await page.send("Page.captureScreenshot", format="png")
                screenshot.write_bytes(base64.b64decode(shot["data"]))
                result["page_errors"] = page.errors
                listener.cancel()
    finally:
        browser.terminate()
        browser.wait(timeout=30)
        shutil.rmtree(profile, ignore_errors=True)
    return result


if __name__ == "__main__":
    url, folder, shot_path = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    print(json.dumps(asyncio.run(check(url, folder, shot_path))))
