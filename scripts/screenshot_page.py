"""The docs' screenshot of serve's page (docs/img/serve-page.png), taken as the browser test takes it.

    python scripts/screenshot_page.py [--model models/student-onnx] [--text "..."]

Starts `finetune serve` on the model, opens GET / in Debian's headless chromium, types the text, presses Explain
and saves the page once the label and the highlighted words are shown.
"""
from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="models/student-onnx")
    ap.add_argument("--text", default="URGENT! You have won a FREE prize. Txt CLAIM to 81010 now")
    ap.add_argument("--out", default=str(ROOT / "docs" / "img" / "serve-page.png"))
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "pipeline.commands.serve", "--model", args.model, "--port",
                               str(port), "--workers", "1"], cwd=ROOT)
    url = f"http://127.0.0.1:{port}"
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=900,860"):
        opts.add_argument(arg)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=opts, service=service)
    try:
        for _ in range(300):
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        driver.get(url + "/")
        driver.find_element(By.ID, "text").send_keys(args.text)
        driver.find_element(By.ID, "go").click()
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, "result").is_displayed())
        driver.save_screenshot(args.out)
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
