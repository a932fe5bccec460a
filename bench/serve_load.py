"""`finetune serve` under load: dynamic batching against one-request-at-a-time scoring, side by side in one run.

    python -m bench.serve_load [--model models/student-onnx] [--seconds 20] [--clients 1 16 64]

For each server (the server before this work: each request scored alone in a 16-thread pool on uvicorn's
pure-Python h11 parser and asyncio loop; the same on httptools + uvloop, `--max-batch 0`; the default: dynamic
batching; dynamic batching in two processes, `--workers 2`; each batching server with the prediction log on too) and
each client count, a client in a second process (asyncio + aiohttp, one connection per client)
keeps that many one-text requests in flight for `--seconds`, cycling through the test split's texts: requests/s,
p50/p99 latency, errors. A thread-pool client under one GIL seldom has 16 requests in flight; this one does. Then,
for the body limit, a 50 MB body is posted to each server: status, seconds to the answer, the server's RSS before
and after. Last, what batching does to the answers: every test text scored alone
and in batches of --max-batch (as the batcher groups them), label agreement and the largest probability change.
Writes bench/results/serve_load.json and SERVE.md.

    python -m bench.serve_load overhead [--workers 1 2] [--rounds 8] [--round-seconds 5]

The prediction log's cost alone: servers with and without `--log-dir` up at once, the client alternating between
them round by round (bench/results/serve_log_overhead.json, a section of SERVE.md).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

from bench.common import OUT, ROOT


async def _load(url: str, texts: list[str], clients: int, seconds: float) -> dict:
    import aiohttp

    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def client(i: int) -> None:
        nonlocal errors
        k = i
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    async with session.post(url + "/predict", json={"texts": [texts[k % len(texts)]]}) as r:
                        await r.read()
                        ok = r.status == 200
                except aiohttp.ClientError:
                    ok = False
                lat.append((time.perf_counter() - t0) * 1000)
                errors += not ok
                k += clients

    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    lat.sort()
    return {"clients": clients, "seconds": round(wall, 2), "requests": len(lat),
            "requests_per_s": round(len(lat) / wall, 1), "p50_ms": round(lat[len(lat) // 2], 1),
            "p99_ms": round(lat[min(len(lat) - 1, int(len(lat) * 0.99))], 1), "errors": errors}


def client_main(args: argparse.Namespace) -> None:
    texts = json.loads(Path(args.texts).read_text())
    print(json.dumps(asyncio.run(_load(args.url, texts, args.clients, args.seconds))))


def write_texts(texts: list[str]) -> Path:
    """The texts the load client cycles through, in a file for its process."""
    path = ROOT / "bench" / "work" / "serve_texts.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(texts))
    return path


def load(url: str, texts_file: Path, clients: int, seconds: float) -> dict:
    """One load run: the client in its own process (it must not share the server's GIL), its result."""
    out = subprocess.run([sys.executable, __file__, "client", "--url", url, "--texts", str(texts_file),
                          "--clients", str(clients), "--seconds", str(seconds)], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mib(pid: int) -> float:
    """The server's resident memory, its worker processes (--workers) included."""
    import psutil

    proc = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [proc, *proc.children(recursive=True)]) / 2**20


def start_server(model: str, extra: list[str], cwd: Path = ROOT) -> tuple[subprocess.Popen, str]:
    """`finetune serve` of the code in `cwd` (a checkout: `python -m` imports the package from there)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.commands.serve", "--model", model, "--port", str(port),
                             *extra], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    if wait_healthy(url):
        return proc, url
    proc.kill()
    raise RuntimeError(f"server {extra} did not start")


def wait_healthy(url: str, tries: int = 600) -> bool:
    """Poll GET /health until the server answers 200 (about two minutes at most)."""
    import httpx

    for _ in range(tries):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return True
        except httpx.HTTPError:
            time.sleep(0.2)
    return False


def big_body(url: str, pid: int) -> dict:
    """A 50 MB JSON body (many short texts): the status, how long until the answer, the server's RSS after."""
    import httpx

    body = json.dumps({"texts": ["x" * 1000] * 50_000}).encode()
    before = rss_mib(pid)
    t0 = time.perf_counter()
    try:
        status = httpx.post(url + "/predict", content=body, headers={"content-type": "application/json"},
                            timeout=120).status_code
    except httpx.HTTPError as e:
        status = type(e).__name__
    secs = time.perf_counter() - t0
    time.sleep(1)
    return {"body_mb": round(len(body) / 1e6, 1), "status": status, "seconds": round(secs, 3),
            "server_rss_mib_before": round(before), "server_rss_mib_after": round(rss_mib(pid))}


def answers(model: str, texts: list[str], max_batch: int) -> dict:
    """Each text alone vs in consecutive groups of max_batch (what the batcher does under load)."""
    import numpy as np

    from pipeline.core.scoring import open_model

    scorer = open_model(model)
    norm, status = scorer.normalise(texts)
    ok = [norm[i] for i, s in enumerate(status) if s == "ok"]
    alone = np.concatenate([scorer.proba([t]) for t in ok])
    grouped = np.concatenate([scorer.proba(ok[i:i + max_batch]) for i in range(0, len(ok), max_batch)])
    return {"texts": len(ok), "max_batch": max_batch,
            "label_agreement": float((alone.argmax(1) == grouped.argmax(1)).mean()),
            "max_abs_probability_change": float(np.abs(alone - grouped).max()),
            "mean_abs_probability_change": float(np.abs(alone - grouped).mean())}


def log_overhead(model: str, texts: list[str], workers: int, clients: int, rounds: int, seconds: float,
                 max_batch: int) -> dict:
    """Requests/s with and without `--log-dir`, both servers up at once (an idle one costs nothing) and the client
    alternating between them, A B B A A B ...: a machine whose speed drifts over the run slows both alike, which
    one server after the other cannot promise on a shared machine. Each round pair gives a ratio; the median and a
    bootstrap 95% CI of the mean ratio say what logging costs."""
    import numpy as np

    texts_file = write_texts(texts)
    log_dir = ROOT / "bench" / "work" / "serve_log_overhead"
    base = ["--max-batch", str(max_batch), "--workers", str(workers)]
    procs = []
    try:
        plain, plain_url = start_server(model, base)
        procs.append(plain)
        logged, logged_url = start_server(model, [*base, "--log-dir", str(log_dir)])
        procs.append(logged)
        rps: dict[str, list[float]] = {"plain": [], "log": []}
        for i in range(rounds):
            order = [("plain", plain_url), ("log", logged_url)]
            for name, url in (order if i % 2 == 0 else order[::-1]):
                rps[name].append(load(url, texts_file, clients, seconds)["requests_per_s"])
            print(f"workers {workers} round {i}: plain {rps['plain'][-1]}, log {rps['log'][-1]}", flush=True)
    finally:
        for p in procs:
            p.terminate()
            p.wait(timeout=60)
    ratio = np.array(rps["log"]) / np.array(rps["plain"])
    boot = np.random.default_rng(0).choice(ratio, (10_000, len(ratio))).mean(1)
    return {"requests_per_s": rps, "ratio_log_over_plain": [round(float(x), 4) for x in ratio],
            "median_ratio": round(float(np.median(ratio)), 4), "mean_ratio": round(float(ratio.mean()), 4),
            "mean_ratio_ci95": [round(float(np.quantile(boot, 0.025)), 4), round(float(np.quantile(boot, 0.975)), 4)]}


def model_ceiling(model: str, texts: list[str], seconds: float = 5.0) -> dict:
    """The model alone, no HTTP: texts/s when it is called with 1, 16 or 64 texts at a time (OnnxClassifier.logits,
    which sorts and cuts batches as serve does), and PackagedModel.score with one text (normalising and the result dicts
    included). The most any server on this machine could answer, whatever its HTTP cost."""
    from pipeline.core.scoring import open_model

    scorer = open_model(model)
    onnx = scorer.onnx
    onnx.logits(texts[:64])
    out: dict = {}
    for name, per_call, fn in (("logits, 1 text per call", 1, onnx.logits),
                               ("logits, 16 texts per call", 16, onnx.logits),
                               ("logits, 64 texts per call", 64, onnx.logits),
                               ("Scorer.score, 1 text per call", 1, scorer.score)):
        n, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for i in range(0, len(texts), per_call):
                fn(texts[i:i + per_call])
                n += len(texts[i:i + per_call])
        out[name] = round(n / (time.perf_counter() - t0))
        print(name, out[name], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd")
    c = sub.add_parser("client")
    c.add_argument("--url", required=True)
    c.add_argument("--texts", required=True)
    c.add_argument("--clients", type=int, required=True)
    c.add_argument("--seconds", type=float, required=True)
    sub.add_parser("ceiling", help="the model alone, no HTTP (bench/results/serve_ceiling.json)")
    sub.add_parser("md", help="rewrite SERVE.md from the JSON files")
    o = sub.add_parser("overhead", help="the prediction log's cost, servers with and without it up side by side, "
                                        "the client alternating between them (bench/results/serve_log_overhead.json)")
    o.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    o.add_argument("--rounds", type=int, default=8)
    o.add_argument("--round-seconds", type=float, default=5.0)
    o.add_argument("--overhead-clients", type=int, default=16)
    ap.add_argument("--model", default="models/student-onnx")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--max-batch", type=int, default=64)
    ap.add_argument("--wait-ms", type=float, default=0.0)
    ap.add_argument("--out", default="serve_load.json", help="file name under bench/results/ (the md: SERVE.md only "
                                                            "for the default)")
    args = ap.parse_args()
    if args.cmd == "client":
        return client_main(args)
    if args.cmd == "md":
        return write_md(json.loads((OUT / "serve_load.json").read_text()))

    from pipeline.core.io import read_table

    if args.cmd == "overhead":
        texts = read_table(ROOT / "data" / "processed" / "test.parquet")["text"].tolist()
        o = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
             "date": time.strftime("%Y-%m-%d"), "model": args.model, "clients": args.overhead_clients,
             "rounds": args.rounds, "round_seconds": args.round_seconds,
             "by_workers": {str(w): log_overhead(args.model, texts, w, args.overhead_clients, args.rounds,
                                                 args.round_seconds, args.max_batch) for w in args.workers}}
        (OUT / "serve_log_overhead.json").write_text(json.dumps(o, indent=2) + "\n")
        return write_md(json.loads((OUT / "serve_load.json").read_text()))

    if args.cmd == "ceiling":
        texts = read_table(ROOT / "data" / "processed" / "test.parquet")["text"].tolist()[:512]
        c = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
             "date": time.strftime("%Y-%m-%d"), "model": args.model,
             "texts_per_s": model_ceiling(args.model, texts)}
        (OUT / "serve_ceiling.json").write_text(json.dumps(c, indent=2) + "\n")
        return write_md(json.loads((OUT / "serve_load.json").read_text()))

    texts = read_table(ROOT / "data" / "processed" / "test.parquet")["text"].tolist()
    texts_file = write_texts(texts)
    servers = {"before: one request at a time, h11 + asyncio": ["--max-batch", "0", "--max-body-mb", "1000",
                                                                "--http", "h11", "--loop", "asyncio"],
               "one request at a time (--max-batch 0, 16 threads)": ["--max-batch", "0", "--max-body-mb", "1000"],
               f"dynamic batching (--max-batch {args.max_batch}, --batch-wait-ms {args.wait_ms:g})":
                   ["--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.wait_ms)],
               "dynamic batching, 2 processes of 1 thread (--workers 2)":
                   ["--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.wait_ms), "--workers", "2"],
               "dynamic batching + prediction log (--log-dir)":
                   ["--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.wait_ms), "--log-dir",
                    str(ROOT / "bench" / "work" / "serve_log")],
               "--workers 2 + prediction log (--log-dir)":
                   ["--max-batch", str(args.max_batch), "--batch-wait-ms", str(args.wait_ms), "--workers", "2",
                    "--log-dir", str(ROOT / "bench" / "work" / "serve_log")]}
    result: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
                    "date": time.strftime("%Y-%m-%d"),
                    "model": args.model, "seconds_per_run": args.seconds, "servers": {}}
    for name, extra in servers.items():
        proc, url = start_server(args.model, extra)
        try:
            runs = []
            for n in args.clients:
                runs.append(load(url, texts_file, n, args.seconds))
                print(name, runs[-1], flush=True)
            result["servers"][name] = {"load": runs, "body_50mb": big_body(url, proc.pid)}
            print(name, result["servers"][name]["body_50mb"], flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result["answers"] = answers(args.model, texts, args.max_batch)
    (OUT / args.out).write_text(json.dumps(result, indent=2) + "\n")
    if args.out == "serve_load.json":
        write_md(result)


def write_md(r: dict) -> None:
    import numpy as np

    names = list(r["servers"])
    lines = ["# Serving under load: dynamic batching vs one request at a time", "",
             f"Machine: {r['machine']}; run {r.get('date', 'undated')}. "
             f"Model: `{r['model']}`. Written by `python -m bench.serve_load`; both servers "
             f"in one run, {r['seconds_per_run']} s per client count; the client is a second process (asyncio + "
             "aiohttp) keeping that many one-text requests in flight.", "",
             "| clients | server | requests/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for i, n in enumerate(r["servers"][names[0]]["load"]):
        for name in names:
            x = r["servers"][name]["load"][i]
            lines.append(f"| {x['clients']} | {name} | {x['requests_per_s']} | {x['p50_ms']} | {x['p99_ms']} | "
                         f"{x['errors']} |")
        base = r["servers"][names[0]]["load"][i]["requests_per_s"]
        for name in names[1:]:
            x = r["servers"][name]["load"][i]["requests_per_s"]
            lines.append(f"| {n['clients']} | **{name} / before** | **{x / base:.2f}×** | | | |")
    lines += ["", "A 50 MB request body:", "",
              "| server | status | seconds to answer | server RSS before → after (MiB) |", "|---|---|---|---|"]
    for name in names:
        b = r["servers"][name]["body_50mb"]
        lines.append(f"| {name} | {b['status']} | {b['seconds']} | {b['server_rss_mib_before']} → "
                     f"{b['server_rss_mib_after']} |")
    a = r["answers"]
    lines += ["", f"What batching does to the answers ({a['texts']} test texts, each alone vs in groups of "
              f"{a['max_batch']}): label agreement {a['label_agreement']:.2%}, largest probability change "
              f"{a['max_abs_probability_change']:.4f}, mean {a['mean_abs_probability_change']:.5f}. The int8 model "
              "quantises activations per batch, so batch mates move a text's probabilities slightly.", ""]
    ceiling_file = OUT / "serve_ceiling.json"
    if ceiling_file.is_file():
        c = json.loads(ceiling_file.read_text())
        before = r["servers"][names[0]]["load"]
        at16 = next((x["requests_per_s"] for x in before if x["clients"] == 16), None)
        lines += ["## The ceiling: the model alone", "",
                  f"`python -m bench.serve_load ceiling` (machine: {c['machine']}; run {c.get('date', 'undated')}): "
                  f"texts/s of `{c['model']}` called "
                  "in-process, no HTTP, no client sharing the cores.", "", "| call | texts/s |", "|---|---|"]
        lines += [f"| {k} | {v:,} |" for k, v in c["texts_per_s"].items()]
        if at16:
            lines += ["", f"2× the earlier server's {at16:,} req/s at 16 clients is {2 * at16:,.0f} req/s. On this "
                      "CPU, texts scored together cost more each than texts scored alone (the shorter ones are "
                      "padded to the longest, and the int8 kernels gain little from more rows), so a batching "
                      "server's best is the one-text rate above, before any HTTP work and with the load client "
                      "taking its share of the two cores."]
    overhead_file = OUT / "serve_log_overhead.json"
    if overhead_file.is_file():
        o = json.loads(overhead_file.read_text())
        lines += ["", "## What the prediction log costs", "",
                  f"`python -m bench.serve_load overhead` (machine: {o['machine']}; run {o['date']}): the same server "
                  f"with and without `--log-dir`, both up at once, {o['clients']} clients alternating between them "
                  f"in {o['rounds']} pairs of {o['round_seconds']:g}-second rounds (A B, B A, ...), so a machine "
                  "that slows during the run slows both alike.", "",
                  "| server | requests/s without log (median) | with log (median) | with/without per pair: median | "
                  "mean [95% CI] |", "|---|---|---|---|---|"]
        for w, x in o["by_workers"].items():
            lo, hi = x["mean_ratio_ci95"]
            lines.append(f"| --workers {w} | {np.median(x['requests_per_s']['plain']):.0f} | "
                         f"{np.median(x['requests_per_s']['log']):.0f} | {x['median_ratio']:.3f} | "
                         f"{x['mean_ratio']:.3f} [{lo:.3f}, {hi:.3f}] |")
    notes = OUT / "serve_notes.md"  # what the numbers mean, written by hand after looking at several runs
    if notes.is_file():
        lines += ["", notes.read_text().rstrip("\n")]
    (OUT / "SERVE.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
