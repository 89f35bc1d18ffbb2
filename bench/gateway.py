"""Gateway overhead: direct calls vs through `stillhouse gateway` vs through the LiteLLM proxy, in one run.

All three front the shared stub (`../shared/bench/collect_bench/stub_server.py`, 0 ms latency) on loopback.
One aiohttp client drives each target: `--serial` requests one at a time give the added latency (p50/p99 of
the per-request time minus the direct call's), then `--n` requests at `--concurrency` give the most req/s.
The gateway runs as `stillhouse gateway` (a subprocess, with a key, its rpm/tpm bookkeeping and its request
log on); LiteLLM runs as `litellm --config` from its own venv (never our dependency). It has no virtual keys
here, which would need its Postgres: it checks one master key per request and keeps no log, less work than
ours. Targets: p50 added <= 1 ms, and at least 3x LiteLLM's req/s.

    python -m venv /tmp/gw-litellm && /tmp/gw-litellm/bin/pip install 'litellm[proxy]' uvicorn httptools uvloop
    PYTHONPATH=src nice -n 10 python bench/gateway.py --litellm-venv /tmp/gw-litellm
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import aiohttp
import numpy as np

STUB = Path(__file__).resolve().parents[2] / "shared/bench/collect_bench/stub_server.py"
BODY = {"model": "stub-model", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _process(cmd: list[str], url: str, env: dict[str, str] | None = None, timeout: float = 120):
    """Start a server, wait until `url` answers (any status), stop it at the end."""
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    urllib.request.urlopen(url, timeout=2)
                    break
                except Exception as e:
                    if getattr(e, "code", None):  # an HTTP error status: it is up
                        break
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        sys.exit(f"{cmd[0]} did not start: {log.read()[-2000:].decode(errors='replace')}")
                    time.sleep(0.3)
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=30)


async def _drive(url: str, key: str, n: int, concurrency: int) -> tuple[np.ndarray, float]:
    """Per-request seconds and overall req/s for n requests at the given concurrency."""
    times: list[float] = []
    headers = {"Authorization": f"Bearer {key}"}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            t = time.perf_counter()
            async with session.post(url, json=BODY, headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status
            times.append(time.perf_counter() - t)

        for _ in range(20):  # warm connections
            await one()
        times.clear()
        queue = iter(range(n))

        async def worker() -> None:
            for _ in queue:
                await one()

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return np.array(times), n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--litellm-venv", type=Path, default=Path("/tmp/gw-litellm"))
    parser.add_argument("--serial", type=int, default=1000, help="one-at-a-time requests for added latency")
    parser.add_argument("--n", type=int, default=4000, help="requests for the throughput run")
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    python = args.litellm_venv / "bin/python"
    if not python.exists():
        sys.exit(f"no venv at {args.litellm_venv}; make one as the docstring says")
    work = Path(tempfile.mkdtemp(prefix="stillhouse-bench-gateway-"))
    stub_port, gw_port, lite_port = _port(), _port(), _port()
    stub = f"http://127.0.0.1:{stub_port}/v1"
    keys = work / "keys.sqlite"
    cli = [sys.executable, "-m", "stillhouse.cli"]
    key = subprocess.run(
        [*cli, "keys", "create", "bench", "--rpm", "10000000", "--tpm", "1000000000", "--keys", str(keys)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    (work / "litellm.yaml").write_text(
        f"model_list:\n  - model_name: stub-model\n    litellm_params:\n      model: openai/stub-model\n"
        f"      api_base: {stub}\n      api_key: none\n"
        "litellm_settings:\n  telemetry: false\n  drop_params: true\n"
    )
    stub_cmd = [str(python), str(STUB), "--port", str(stub_port), "--tokens", "16"]
    gw_cmd = [
        *cli,
        "gateway",
        "--upstream",
        stub,
        "--port",
        str(gw_port),
        "--keys",
        str(keys),
        "--log",
        str(work / "log"),
    ]
    lite_cmd = [
        str(args.litellm_venv / "bin/litellm"),
        "--config",
        str(work / "litellm.yaml"),
        "--port",
        str(lite_port),
        "--host",
        "127.0.0.1",
        "--num_workers",
        "1",
    ]
    master = "sk-bench-" + "0" * 32  # LiteLLM refuses to start without a master key; it checks it per request
    lite_env = {"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR", "LITELLM_MASTER_KEY": master}
    targets = {  # name: (url, key)
        "direct": (f"{stub}/chat/completions", "none"),
        "stillhouse gateway": (f"http://127.0.0.1:{gw_port}/v1/chat/completions", key),
        "LiteLLM proxy": (f"http://127.0.0.1:{lite_port}/v1/chat/completions", master),
    }
    results = {}
    with (
        _process(stub_cmd, f"{stub}/models"),
        _process(gw_cmd, targets["stillhouse gateway"][0].replace("chat/completions", "models")),
        _process(lite_cmd, f"http://127.0.0.1:{lite_port}/health/liveliness", env=lite_env),
    ):
        for name, (url, target_key) in targets.items():
            serial, _ = asyncio.run(_drive(url, target_key, args.serial, 1))
            _, rps = asyncio.run(_drive(url, target_key, args.n, args.concurrency))
            results[name] = (serial, rps)
            print(
                f"{name:<20} p50 {np.median(serial) * 1e3:6.2f} ms  p99 {np.quantile(serial, 0.99) * 1e3:6.2f} ms  "
                f"C={args.concurrency}: {rps:7.0f} req/s",
                flush=True,
            )
    direct = results["direct"][0]
    print(f"\nadded latency over direct ({args.serial} serial requests), most req/s at C={args.concurrency}:")
    for name in ("stillhouse gateway", "LiteLLM proxy"):
        serial, rps = results[name]
        print(
            f"  {name:<20} p50 +{(np.median(serial) - np.median(direct)) * 1e3:.2f} ms  "
            f"p99 +{(np.quantile(serial, 0.99) - np.quantile(direct, 0.99)) * 1e3:.2f} ms  {rps:.0f} req/s"
        )
    ratio = results["stillhouse gateway"][1] / results["LiteLLM proxy"][1]
    print(f"  stillhouse / LiteLLM req/s: {ratio:.1f}x (target >= 3x); stillhouse p50 added target <= 1 ms")
    from stillhouse.gateway.log import read_log

    sent = 2 * 20 + args.serial + args.n
    print(f"  gateway log: {read_log(work / 'log', ['status']).num_rows} rows for {sent} requests sent, in {work}")


if __name__ == "__main__":
    main()
