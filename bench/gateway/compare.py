"""Runs the gateway benchmark (see run.sh): starts the fast backend, lamina gateway and the
LiteLLM proxy on free loopback ports, drives each with the `load` example, and prints a
table and the ratios. Standard library only."""
import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_healthy(url, proc, limit=120.0):
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        if proc.poll() is not None:
            sys.exit(f"{url}: the process exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.monotonic() - t0
        except Exception:
            pass
        time.sleep(0.005)
    sys.exit(f"{url} did not come up in {limit} s")


def rss_mb(pid):
    """Resident memory of a process and its children, MB."""
    total = 0
    pids = [pid]
    try:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
        pids += [int(p) for p in out.split()]
    except Exception:
        pass
    for p in pids:
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def load(examples, url, *extra):
    out = subprocess.run([f"{examples}/load", url, *extra], capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lamina", required=True)
    ap.add_argument("--examples", required=True)
    ap.add_argument("--litellm", required=True)
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--redis", help="redis-server binary: also measure a gateway whose key limits live in Redis")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    # Both gateways check a client key (LiteLLM refuses to start without a master key).
    secret = "sk-" + os.urandom(32).hex()
    procs = []
    try:
        bport = free_port()
        backend = subprocess.Popen([f"{a.examples}/fast_backend", f"127.0.0.1:{bport}"], stderr=subprocess.DEVNULL)
        procs.append(backend)
        wait_healthy(f"http://127.0.0.1:{bport}/health", backend)
        base = f"http://127.0.0.1:{bport}/v1"

        lport = free_port()
        cfg = os.path.join(tmp, "gateway.toml")
        with open(cfg, "w") as f:
            f.write(f'[[backend]]\nname = "fast"\nkind = "openai"\nurl = "{base}"\n\n'
                    f'[[model]]\nname = "fast"\ndeployments = [{{ backend = "fast", model = "fast" }}]\n'
                    f'price = {{ input = 0.15, output = 0.60 }}\n\n'
                    f'[[key]]\nname = "bench"\nkey = "{secret}"\n'
                    # Limits that never refuse, so that each request is checked and charged.
                    f'budget = 1000000.0\nrpm = 100000000\n')
        lamina = subprocess.Popen([a.lamina, "gateway", "--config", cfg, "--listen", f"127.0.0.1:{lport}"], stderr=subprocess.DEVNULL)
        procs.append(lamina)
        lamina_start = wait_healthy(f"http://127.0.0.1:{lport}/health", lamina)
        fleet = None
        if a.redis:
            rport = free_port()
            procs.append(subprocess.Popen([a.redis, "--port", str(rport), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", tmp],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(0.5)
            fcfg = os.path.join(tmp, "fleet.toml")
            with open(cfg) as src, open(fcfg, "w") as f:
                f.write(f'[gateway]\nstate = "redis://127.0.0.1:{rport}/0"\n\n' + src.read())
            fport = free_port()
            fleet = subprocess.Popen([a.lamina, "gateway", "--config", fcfg, "--listen", f"127.0.0.1:{fport}"], stderr=subprocess.DEVNULL)
            procs.append(fleet)
            wait_healthy(f"http://127.0.0.1:{fport}/health", fleet)

        tport = free_port()
        lcfg = os.path.join(tmp, "litellm.yaml")
        with open(lcfg, "w") as f:
            f.write(f"model_list:\n  - model_name: fast\n    litellm_params:\n      model: openai/fast\n"
                    f"      api_base: {base}\n      api_key: none\n"
                    f"general_settings:\n  master_key: {secret}\n"
                    f"litellm_settings:\n  telemetry: false\n")
        env = dict(os.environ, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False", LITELLM_LOG="ERROR")
        litellm = subprocess.Popen([a.litellm, "--config", lcfg, "--host", "127.0.0.1", "--port", str(tport), "--num_workers", "1"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        procs.append(litellm)
        litellm_start = wait_healthy(f"http://127.0.0.1:{tport}/health/liveliness", litellm)

        targets = {"direct": (base, a.n), "lamina": (f"http://127.0.0.1:{lport}/v1", a.n), "litellm": (f"http://127.0.0.1:{tport}/v1", max(50, a.n // 4))}
        if fleet:
            targets["lamina+redis"] = (f"http://127.0.0.1:{fport}/v1", a.n)
        key = ["--key", secret]
        res = {}
        for name, (url, n) in targets.items():
            load(a.examples, url, "--requests", "50", *key)  # warm up connections and caches
            plain = load(a.examples, url, "--requests", str(n), *key)
            stream = load(a.examples, url, "--requests", str(n), "--stream", *key)
            busy = load(a.examples, url, "--seconds", str(a.seconds), "--concurrency", str(a.concurrency), *key)
            res[name] = {"plain": plain, "stream": stream, "busy": busy}
        res["lamina"]["rss_mb"] = rss_mb(lamina.pid)
        res["litellm"]["rss_mb"] = rss_mb(litellm.pid)
        res["lamina"]["start_s"] = lamina_start
        res["litellm"]["start_s"] = litellm_start
        if fleet:
            res["lamina+redis"]["rss_mb"] = rss_mb(fleet.pid)
            res["lamina+redis"]["start_s"] = float("nan")

        d = res["direct"]
        print(f"fast backend direct: p50 {d['plain']['p50_ms']:.3f} ms, p99 {d['plain']['p99_ms']:.3f} ms, "
              f"stream first chunk p50 {d['stream']['ttft_p50_ms']:.3f} ms, {d['busy']['rps']:.0f} req/s at concurrency {a.concurrency}")
        print(f"{'':10} {'start s':>8} {'+p50 ms':>8} {'+p99 ms':>8} {'+ttft p50':>9} {'req/s':>8} {'errors':>6} {'RSS MB':>7}")
        for name in [n for n in ("lamina", "lamina+redis", "litellm") if n in res]:
            r = res[name]
            print(f"{name:10} {r['start_s']:8.3f} {r['plain']['p50_ms'] - d['plain']['p50_ms']:8.3f} {r['plain']['p99_ms'] - d['plain']['p99_ms']:8.3f} "
                  f"{r['stream']['ttft_p50_ms'] - d['stream']['ttft_p50_ms']:9.3f} {r['busy']['rps']:8.0f} "
                  f"{r['plain']['errors'] + r['stream']['errors'] + r['busy']['errors']:6d} {r['rss_mb']:7.1f}")
        lm, ll = res["lamina"], res["litellm"]
        print(f"ratios (lamina vs litellm): req/s {lm['busy']['rps'] / ll['busy']['rps']:.1f}x, "
              f"added p99 {(ll['plain']['p99_ms'] - d['plain']['p99_ms']) / max(1e-3, lm['plain']['p99_ms'] - d['plain']['p99_ms']):.0f}x less, "
              f"start {ll['start_s'] / lm['start_s']:.0f}x faster, RSS {ll['rss_mb'] / lm['rss_mb']:.1f}x less")
        print(json.dumps(res))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
