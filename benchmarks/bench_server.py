"""Load on `nodeflow serve`: many queued jobs, many WebSocket clients.

    .venv/bin/python -m benchmarks.bench_server [--jobs 200] [--clients 20] [--steps 10]

Starts a real server (subprocess, free loopback port, a fresh data folder), connects
``--clients`` ComfyUI WebSocket clients (``/ws?clientId=``), then each client queues its
share of ``--jobs`` ComfyUI-format jobs on the bundled model at 32x32 (distinct seeds, so
every job samples). Prints: start-up time, jobs per minute, submit latency (median, p99),
server RSS (after start, after the first job, after all jobs) with the cache's size and
budget, and whether every client got every event of each of its jobs, in order, and none
of another client's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
import websocket

from tests.support.server_harness import Server, comfy_prompt


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Client(threading.Thread):
    def __init__(self, url: str, sid: str):
        super().__init__(daemon=True)
        self.sid = sid
        self.ws = websocket.create_connection(f"{url}/ws?clientId={sid}", timeout=600)
        self.messages: list[dict] = []
        self.closed = False
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                raw = self.ws.recv()
            except Exception:
                return
            if isinstance(raw, str) and raw:
                self.messages.append(json.loads(raw))
            elif not raw:
                self.closed = not self.stop.is_set()
                return


def check_order(messages: list[dict], job_ids: set[str], steps: int) -> list[str]:
    """Problems with one client's events: missing, out of order, or another client's."""
    problems = []
    by_job: dict[str, list[dict]] = {}
    for message in messages:
        prompt_id = message.get("data", {}).get("prompt_id")
        if prompt_id is None:
            continue
        if prompt_id not in job_ids:
            problems.append(f"got an event of another client's job {prompt_id}")
        by_job.setdefault(prompt_id, []).append(message)
    for job_id in job_ids:
        events = by_job.get(job_id, [])
        types = [e["type"] for e in events]
        progress = [e["data"]["value"] for e in events if e["type"] == "progress"]
        executed = [e["data"]["node"] for e in events if e["type"] == "executed"]
        ok = (types[:1] == ["execution_start"] and types[-2:] == ["execution_success", "executing"]
              and events[-1]["data"]["node"] is None and progress == list(range(1, steps + 1)) and executed == ["9"]
              and types.index("executed") > max(i for i, t in enumerate(types) if t == "progress"))
        if not ok:
            problems.append(f"job {job_id}: events {types}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        server = Server(Path(folder))
        started = time.perf_counter()
        server.start()
        startup = time.perf_counter() - started
        pid = server.process.pid
        rss_start = rss_mb(pid)
        try:
            warm = server.post("/prompt", json={"prompt": comfy_prompt(steps=args.steps, seed=10**6)}).json()
            server.wait_job(warm["prompt_id"], timeout=600)
            rss_warm = rss_mb(pid)

            clients = [Client(server.ws_url, f"bench-{i}") for i in range(args.clients)]
            for client in clients:
                client.start()
            owned: dict[str, set[str]] = {c.sid: set() for c in clients}
            latencies = []
            session = requests.Session()
            begin = time.perf_counter()
            for index in range(args.jobs):
                client = clients[index % len(clients)]
                body = {"prompt": comfy_prompt(steps=args.steps, seed=index), "client_id": client.sid}
                sent = time.perf_counter()
                response = session.post(server.url + "/prompt", json=body, timeout=60)
                latencies.append(time.perf_counter() - sent)
                response.raise_for_status()
                owned[client.sid].add(response.json()["prompt_id"])
            submitted = time.perf_counter() - begin
            deadline = time.monotonic() + 3600
            while server.get("/v1/health").json()["queue_remaining"] and time.monotonic() < deadline:
                time.sleep(0.2)
            elapsed = time.perf_counter() - begin
            time.sleep(1.0)  # the last messages reach the clients
            health = server.get("/v1/health").json()
            rss_end = rss_mb(pid)
            statuses = [j["status"] for j in server.get("/v1/jobs", params={"limit": 10_000}).json()["jobs"]]
            for client in clients:
                client.stop.set()
                client.ws.close()
            problems = [p for c in clients for p in check_order(c.messages, owned[c.sid], args.steps)]
        finally:
            server.stop()

    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(round(0.99 * (len(latencies) - 1))))]
    cache = health["cache"]
    print(f"jobs: {args.jobs} ComfyUI-format txt2img on the bundled model, 32x32, {args.steps} steps; "
          f"{args.clients} WebSocket clients")
    print(f"start-up to first answer: {startup:.2f} s")
    print(f"throughput: {args.jobs / elapsed * 60:.1f} jobs/min ({elapsed:.1f} s; all submitted in {submitted:.2f} s)")
    print(f"submit latency: median {statistics.median(latencies) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    print(f"server RSS: {rss_start:.0f} MB after start (no torch), {rss_warm:.0f} MB after the first job, "
          f"{rss_end:.0f} MB after all jobs (growth {rss_end - rss_warm:+.0f} MB); cache {cache['bytes'] / 2**20:.0f} MB "
          f"of a {cache['budget_bytes'] / 2**20:.0f} MB budget, {cache['entries']} entries")
    print(f"clients closed early by the server: {sum(c.closed for c in clients)}")
    print(f"job statuses: { {s: statuses.count(s) for s in set(statuses)} }")
    print(f"events: {'every client got every event of its jobs, in order, and no other job' if not problems else ''}")
    for problem in problems[:10]:
        print(f"  PROBLEM {problem}")
    return 1 if problems or set(statuses) != {"done"} else 0


if __name__ == "__main__":
    sys.exit(main())
