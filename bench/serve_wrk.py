"""`finetune serve` as the README starts it (no options), loaded by wrk, a C client that is not the bottleneck.

    python -m bench.serve_wrk [--model models/student-onnx] [--seconds 10] [--repeats 3] [--connections 1 16 64]
    python -m bench.serve_wrk --against REV [--rounds 6]   # this code's default server vs the one at commit REV

A Python client on the same 2 cores cannot offer the load (issue 35: an httpx asyncio client reached 335 req/s at
16 clients against a server that answers wrk's 16 connections at 1,434 req/s), so its latencies look better than a
real load gets. For each server — the default (`--workers auto`), and one process (`--workers 1`, the default before
issue 35) for comparison — and each connection count, wrk (Debian's `wrk`, `apt-get install wrk`) keeps that many
connections busy with one-text POST /predict requests for `--seconds`, cycling through the SMS test split's texts:
requests/s, p50/p99 latency, errors (non-2xx and socket errors), and the server's resident memory, workers included.
Each count is run `--repeats` times: the table gives medians and the range of p99, which at 64 connections on 2
cores (wrk's two threads competing with the server for them) moves from run to run.
Writes bench/results/serve_wrk.json and SERVE_WRK.md, with the machine and date.
`--against REV` answers "did this change slow /predict?": the default server of this checkout and of commit REV (a
git worktree), both up at once, loaded in turn by wrk at 16 connections, alternating which goes first, `--rounds`
times; the medians and each round's ratio. Writes serve_ab.json and SERVE_AB.md.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import time
from pathlib import Path

from bench.common import OUT, ROOT, machine
from bench.serve_load import rss_mib, start_server

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {%s}
local i = 0
request = function()
  i = i %% #bodies + 1
  return wrk.format(nil, "/predict", nil, bodies[i])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests": %%d, "duration_us": %%d, "p50_us": %%d, "p99_us": %%d, ' ..
    '"errors": %%d, "non_2xx": %%d}\\n', summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def lua_script(texts: list[str]) -> Path:
    """wrk's script: one JSON body per text, each a Lua long string (no escaping to get wrong)."""
    bodies = ",".join(f"[==[{json.dumps({'texts': [t]})}]==]" for t in texts if "]==]" not in t)
    path = ROOT / "bench" / "work" / "serve_wrk.lua"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(LUA % bodies)
    return path


def wrk(url: str, script: Path, connections: int, seconds: float) -> dict:
    threads = min(connections, 2)
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", "-s", str(script),
                          "--timeout", "10s", url], capture_output=True, text=True, check=True).stdout
    r = json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:])
    wall = r["duration_us"] / 1e6
    return {"connections": connections, "seconds": round(wall, 2), "requests": r["requests"],
            "requests_per_s": round(r["requests"] / wall, 1), "p50_ms": round(r["p50_us"] / 1000, 2),
            "p99_ms": round(r["p99_us"] / 1000, 2), "errors": r["errors"] + r["non_2xx"]}


def repeated(url: str, script: Path, connections: int, seconds: float, repeats: int) -> dict:
    import statistics

    runs = [wrk(url, script, connections, seconds) for _ in range(repeats)]
    med = {k: statistics.median(r[k] for r in runs) for k in ("requests_per_s", "p50_ms", "p99_ms")}
    return {"connections": connections, **med, "p99_range_ms": [min(r["p99_ms"] for r in runs),
                                                               max(r["p99_ms"] for r in runs)],
            "errors": sum(r["errors"] for r in runs), "requests": sum(r["requests"] for r in runs), "runs": runs}


SERVERS = {"default (no options: --workers auto)": [], "--workers 1 (the default before)": ["--workers", "1"]}


def run(model: str, seconds: float, connections: list[int], repeats: int, servers: dict | None = None) -> dict:
    import httpx
    import pandas as pd

    texts = pd.read_parquet(ROOT / "data" / "processed" / "test.parquet")["text"].tolist()[:200]
    script = lua_script(texts)
    servers = SERVERS if servers is None else servers
    out: dict = {"machine": machine(), "client": "wrk " + subprocess.run(["wrk", "-v"], capture_output=True,
                                                                          text=True).stdout.split()[1],
                 "model": model, "seconds": seconds, "repeats": repeats, "servers": {}}
    for name, extra in servers.items():
        proc, url = start_server(model, extra)
        try:
            health = httpx.get(url + "/health").json()
            wrk(url, script, 4, 3)  # warm-up: every worker's first batches
            rows = [repeated(url, script, c, seconds, repeats) for c in connections]
            out["servers"][name] = {"workers": health["workers"], "rss_mib": round(rss_mib(proc.pid)), "runs": rows}
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        time.sleep(2)
    return out


def against(rev: str, model: str, seconds: float, rounds: int, connections: int = 16) -> dict:
    import statistics

    import pandas as pd

    tree = ROOT / "bench" / "work" / f"serve-at-{rev}"
    if not tree.exists():
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True,
                       capture_output=True)
    script = lua_script(pd.read_parquet(ROOT / "data" / "processed" / "test.parquet")["text"].tolist()[:200])
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True).stdout.strip()
    names = {f"this checkout ({head}, uncommitted changes included)": ROOT, f"commit {rev}": tree}
    procs = {name: start_server(model, [], cwd) for name, cwd in names.items()}
    runs: dict[str, list] = {name: [] for name in names}
    try:
        for _, url in procs.values():
            wrk(url, script, 4, 3)  # warm-up
        for r in range(rounds):
            order = list(procs) if r % 2 == 0 else list(procs)[::-1]
            for name in order:
                runs[name].append(wrk(procs[name][1], script, connections, seconds))
    finally:
        for proc, _ in procs.values():
            proc.terminate()
            proc.wait(timeout=60)
    a, b = runs.values()
    summary = {name: {k: statistics.median(x[k] for x in rs) for k in ("requests_per_s", "p50_ms", "p99_ms")}
               | {"errors": sum(x["errors"] for x in rs)} for name, rs in runs.items()}
    ratios = [x["requests_per_s"] / y["requests_per_s"] for x, y in zip(a, b)]
    return {"machine": machine(), "client": "wrk", "model": model, "connections": connections, "seconds": seconds,
            "rounds": rounds, "servers": summary, "throughput_ratio_per_round": [round(x, 3) for x in ratios],
            "runs": runs}


def report_against(res: dict) -> str:
    m = res["machine"]
    lines = [f"# /predict before and after a change, side by side ({res['client']}, {res['connections']} connections)",
             "", f"Machine: {m.get('cpu', '')}, {m.get('cores', '')} cores; {m.get('date', '')}. Model: "
             f"`{res['model']}`; one text per request; {res['rounds']} rounds of {res['seconds']} s per server, the "
             "two servers alternating which goes first. Produced by `python -m bench.serve_wrk --against REV`.", "",
             "| server | req/s (median) | p50 ms | p99 ms | errors |", "|---|---|---|---|---|"]
    for name, s in res["servers"].items():
        lines.append(f"| {name} | {s['requests_per_s']:,.0f} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['errors']} |")
    r = res["throughput_ratio_per_round"]
    lines += ["", f"Throughput of the first over the second, round by round: {', '.join(f'{x:.3f}' for x in r)} "
                  f"(median {sorted(r)[len(r) // 2]:.3f}).", ""]
    return "\n".join(lines)


def report(res: dict) -> str:
    m = res["machine"]
    lines = [f"# `finetune serve` under a C load generator ({res['client']})", "",
             f"Machine: {m.get('cpu', '')}, {m.get('cores', '')} cores; {m.get('date', '')}. Model: `{res['model']}`; "
             f"one text per request (the SMS test split's, cycled); each row the median of {res['repeats']} runs of "
             f"{res['seconds']} s, after a 3 s warm-up.",
             "Produced by `python -m bench.serve_wrk`.", "",
             "| server | workers x threads | memory | connections | req/s | p50 ms | p99 ms (range) | errors |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in res["servers"].items():
        w = s["workers"]
        for r in s["runs"]:
            lines.append(f"| {name} | {w['count']} x {w['threads'] or 'library'} | {s['rss_mib']} MiB | "
                         f"{r['connections']} | {r['requests_per_s']:,.0f} | {r['p50_ms']} | {r['p99_ms']} "
                         f"({r['p99_range_ms'][0]}–{r['p99_range_ms'][1]}) | {r['errors']} |")
    lines += ["", "What `--workers auto` chose: " + next(iter(res["servers"].values()))["workers"]["chosen"], ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(ROOT / "models" / "student-onnx"))
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--connections", type=int, nargs="+", default=[1, 16, 64])
    ap.add_argument("--against", metavar="REV", help="A/B this checkout's default server against commit REV's")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")
    if args.against:
        res = against(args.against, args.model, args.seconds, args.rounds)
        (OUT / "serve_ab.json").write_text(json.dumps(res, indent=2) + "\n")
        (OUT / "SERVE_AB.md").write_text(report_against(res))
        print(report_against(res))
        return
    res = run(args.model, args.seconds, args.connections, args.repeats)
    (OUT / "serve_wrk.json").write_text(json.dumps(res, indent=2) + "\n")
    (OUT / "SERVE_WRK.md").write_text(report(res))
    print(Path(OUT / "SERVE_WRK.md").read_text())


if __name__ == "__main__":
    main()
