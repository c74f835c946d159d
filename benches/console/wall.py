#!/usr/bin/env python3
"""The wall under load (docs/PERFORMANCE.md, "The wall at 1,000 transfers a second").

Starts a gateway (release build) on a fresh site, opens the wall in Debian's headless Chromium
with an operator's .p12 (as docs/CONSOLE.md sets a browser up), drives `liandong bench` at a
fixed rate, and reads, every second, what the page has drawn (window.liandong.wall: events, batches)
against the transfers the gateway had committed a moment before (`/metrics`). Reports the
events per second the browser drew, how many committed transfers it had not drawn yet at each
reading (a wall that falls behind grows this without bound), and whether the day's counter on
the wall equals what was submitted.

    python3 benches/console/wall.py [--rate 1000] [--duration 30] [--concurrency 64]

Needs chromium, chromium-driver, libnss3-tools and the AutoSelectCertificateForUrls policy
(.ci/run installs and writes them). Python's standard library only.
"""
import argparse, json, os, shutil, socket, subprocess, sys, tempfile, time, urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(ROOT, "target", "release", "liandong")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def webdriver(port, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method,
                                     headers={"content-type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())["value"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=30)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build it first: cargo build --release")
    work = tempfile.mkdtemp(prefix="liandong-wall-")
    site = os.path.join(work, "site")
    https, admin = free_port(), free_port()
    subprocess.run([BIN, "init", site, "--listen", f"127.0.0.1:{https}", "--admin", f"127.0.0.1:{admin}"],
                   check=True, stdout=subprocess.DEVNULL)
    config = os.path.join(site, "liandong.toml")
    with open(config, "a") as f:  # one generator identity at the rate asked: lift its quotas
        f.write("\n[limits.endpoint]\nsubmit = { per_second = 1000000, burst = 1000000 }\n"
                "immediate = { per_second = 1000000, burst = 1000000 }\n"
                "status = { per_second = 1000000, burst = 1000000 }\nread = { per_second = 1000000, burst = 1000000 }\n")
    gateway = subprocess.Popen([BIN, "serve", "--config", config], env=dict(os.environ, RUST_LOG="warn"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    driver = None
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        with open(os.path.join(work, "pass"), "w") as f:
            f.write("bench")
        issued = subprocess.run([BIN, "certs", "issue", "--dir", os.path.join(site, "ca"), "operator", "wall",
                                 "--p12", os.path.join(work, "pass")], check=True, capture_output=True, text=True).stdout
        p12 = next(l.split()[1] for l in issued.splitlines() if l.strip().startswith("pkcs#12:"))
        home = os.path.join(work, "home")
        db = "sql:" + os.path.join(home, ".pki", "nssdb")
        os.makedirs(os.path.join(home, ".pki", "nssdb"))
        subprocess.run(["certutil", "-N", "-d", db, "--empty-password"], check=True)
        subprocess.run(["certutil", "-A", "-d", db, "-n", "root", "-t", "C,,", "-i", os.path.join(site, "ca", "root.pem")], check=True)
        subprocess.run(["pk12util", "-i", p12, "-d", db, "-W", "bench"], check=True, stdout=subprocess.DEVNULL)
        port = free_port()
        driver = subprocess.Popen(["chromedriver", f"--port={port}"], env=dict(os.environ, HOME=home),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            try:
                webdriver(port, "GET", "/status")
                break
            except Exception:
                time.sleep(0.1)
        session = webdriver(port, "POST", "/session", {"capabilities": {"alwaysMatch": {"goog:chromeOptions": {
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1920,1080",
                     f"--user-data-dir={os.path.join(home, 'profile')}"]}}}})["sessionId"]
        call = lambda method, path, body=None: webdriver(port, method, f"/session/{session}{path}", body)
        script = lambda js: call("POST", "/execute/sync", {"script": js, "args": []})
        call("POST", "/url", {"url": f"https://127.0.0.1:{https}/console/#/wall"})
        for _ in range(200):
            if script("return document.getElementById('stream-status')?.dataset.live === 'true'"):
                break
            time.sleep(0.05)
        bench = subprocess.Popen([BIN, "bench", "--config", config, "--concurrency", str(args.concurrency), "--rate", str(args.rate),
                                  "--duration", f"{args.duration}s", "--json"], stdout=subprocess.PIPE, text=True)
        def submitted():
            metrics = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=5).read().decode()
            line = next(l for l in metrics.splitlines() if l.startswith("liandong_submissions_total "))
            return int(float(line.split()[1]))

        samples, start = [], time.time()
        while bench.poll() is None:
            time.sleep(1)
            committed = submitted()
            wall = script("return window.liandong.wall")
            # behind: transfers committed (read just before) that the wall had not drawn yet
            samples.append((time.time() - start, wall["events"], wall["batches"], committed - wall["events"]))
        report = json.loads(bench.stdout.read())
        time.sleep(3)
        wall = script("return window.liandong.wall")
        total = int(script("return document.getElementById('today-total').innerText"))
        lags = [max(0, behind) for _, _, _, behind in samples[1:]]
        events_per_second = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(samples, samples[1:])]
        lags.sort()
        events_per_second.sort()
        print(json.dumps({
            "offered_per_second": args.rate,
            "submitted": report.get("ok"),
            "submitted_per_second": report.get("per_second") or report.get("throughput"),
            "wall_events": wall["events"],
            "wall_batches": wall["batches"],
            "wall_events_per_second_median": events_per_second[len(events_per_second) // 2] if events_per_second else None,
            "behind_transfers_median": lags[len(lags) // 2] if lags else None,
            "behind_transfers_max": lags[-1] if lags else None,
            "todays_counter": total,
        }, indent=2))
    finally:
        if driver:
            driver.kill()
        subprocess.run(["pkill", "-f", "--", f"--user-data-dir={work}"], check=False)
        gateway.terminate()
        gateway.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
