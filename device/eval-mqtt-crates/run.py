#!/usr/bin/env python3
"""devid-agent against eval-rumqttc (DEVID-1 through rumqttc-v5-next), one broker, one run.

Reuses device/scripts/bench.py's setup: a devid-server (temp data dir), --devices registered
devices plus two publishers (message_auth off / required), a broker certificate and token, and
Mosquitto 2.0.11 with the devid plugin on a plain 127.0.0.1 listener (per-address handshake
bounds lifted, as in bench.py). Then, alternating the two clients (agent, eval, agent, eval, ...)
for --rounds rounds: full-handshake connects (concurrency 32; the crate with its default
outgoing in-flight bound and with 64) and publishes (256 B, QoS 0 and 1,
no protection), and once the capability check (MAC user properties, re-authentication).
Prints every result as JSON and a table of medians with min-max.

Usage: device/eval-mqtt-crates/run.py [--devices 64] [--duration 10] [--publish-seconds 5]
       [--rounds 3]
Build first: cargo build --release -p devid-server -p devid-mosquitto -p devid-device (root),
             cargo build --release (here)
"""

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
spec = importlib.util.spec_from_file_location("bench", os.path.join(ROOT, "device/scripts/bench.py"))
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def register(url, token, serial, outdir, policy=None):
    r = bench.call(url, token, "POST", "/v1/devices", {"hardware_serial": serial, "generate_key": True})
    crt = os.path.join(outdir, f"{r['client_id']}.crt")
    with open(crt, "w") as f:
        f.write(r["certificate"].rstrip("\n") + "\n" + "".join(bench.pem_blocks(r["chain"])[:-1]))
    key = os.path.join(outdir, f"{r['client_id']}.key")
    with open(key, "w") as f:
        f.write(r["private_key"])
    os.chmod(key, 0o600)
    if policy:
        bench.call(url, token, "PUT", f"/v1/devices/{r['client_id']}/policy", {"message_auth": policy})
    return crt, key


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stdout, out.stderr, file=sys.stderr)
        sys.exit(f"failed: {' '.join(cmd[:3])}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(json.dumps(r), flush=True)
    return r


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--publish-seconds", type=float, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", default="release", help="of the workspace binaries")
    ap.add_argument("--check-only", action="store_true")
    a = ap.parse_args()
    bins = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), a.profile)
    server_bin, agent = os.path.join(bins, "devid-server"), os.path.join(bins, "devid-agent")
    plugin = os.path.join(bins, "libdevid_mosquitto.so")
    evalbin = os.path.join(HERE, "target", "release", "eval-rumqttc")
    for f in (server_bin, agent, plugin, evalbin):
        if not os.path.exists(f):
            sys.exit(f"missing {f}: build it first")
    work = tempfile.mkdtemp(prefix="devid-eval-mqtt-")
    procs = []
    try:
        data = os.path.join(work, "server")
        port = bench.free_port()
        srv = subprocess.Popen([server_bin, "--listen", f"127.0.0.1:{port}", "--data-dir", data],
                               stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "server.log"), "w"))
        procs.append(srv)
        bench.wait_port(port, srv, "devid-server")
        url = f"http://127.0.0.1:{port}"
        token = open(os.path.join(data, "admin.token")).read().strip()
        root = os.path.join(data, "ca", "root.crt")
        fleet, pubdir = os.path.join(work, "fleet"), os.path.join(work, "publishers")
        os.mkdir(fleet)
        os.mkdir(pubdir)
        pub = {p: register(url, token, f"pub-{p}", pubdir, p) for p in ("off", "required")}
        for i in range(a.devices):
            register(url, token, f"bench-{i:05d}", fleet)
        name = "mqtt.bench"
        bkey = os.path.join(work, "broker.key")
        csr = subprocess.run(
            ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", bkey, "-subj", f"/CN={name}", "-addext", f"subjectAltName=DNS:{name}"],
            check=True, capture_output=True, text=True).stdout
        b = bench.call(url, token, "POST", "/v1/brokers", {"name": name, "csr": csr})
        bchain = os.path.join(work, "broker-chain.pem")
        with open(bchain, "w") as f:
            f.write(b["certificate"].rstrip("\n") + "\n" + "".join(bench.pem_blocks(b["chain"])[:-1]))
        t = bench.call(url, token, "POST", "/v1/tokens", {"role": "broker", "name": name})
        with open(os.path.join(work, "broker.token"), "w") as f:
            f.write(t["token"])
        with open(os.path.join(work, "ticket.keys"), "w") as f:
            f.write("1 " + os.urandom(32).hex() + "\n")
        os.chmod(os.path.join(work, "ticket.keys"), 0o600)
        mport = bench.free_port()
        conf = os.path.join(work, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("\n".join([
                "per_listener_settings false", "allow_anonymous false", "user root",
                "persistence false", f"log_dest file {work}/mosquitto.log", "log_type error",
                "log_type warning", "log_type information", f"listener {mport} 127.0.0.1",
                f"plugin {plugin}", f"plugin_opt_service_url {url}",
                f"plugin_opt_token_file {work}/broker.token", f"plugin_opt_trust_anchor {root}",
                f"plugin_opt_broker_cert {bchain}", f"plugin_opt_broker_key {bkey}",
                f"plugin_opt_state_dir {work}/state", "plugin_opt_max_staleness 300",
                "plugin_opt_hello_rate 100000", "plugin_opt_hello_burst 100000",
                "plugin_opt_max_pending_per_address 1000",
                f"plugin_opt_ticket_key_file {work}/ticket.keys", ""]))
        mq = subprocess.Popen([bench.MOSQUITTO, "-c", conf], stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(work, "mosquitto.stderr"), "w"))
        procs.append(mq)
        bench.wait_port(mport, mq, "mosquitto")
        bench.wait_log(os.path.join(work, "mosquitto.log"), "caught up with the revocation feed", mq, "mosquitto")

        brk = ["--broker", f"127.0.0.1:{mport}", "--root", root, "--broker-name", name,
               "--broker-pid", str(mq.pid)]
        crt, key = pub["required"]
        check = run([evalbin, "check", *brk, "--cert", crt, "--key", key])
        if a.check_only:
            return
        results = {}
        for _ in range(a.rounds):
            for client in ("devid-agent", "rumqttc-v5-next", "rumqttc-v5-next, in-flight bound 64"):
                if client == "devid-agent":
                    cmd = [agent, "bench", "connect", *brk, "--devices", fleet, "--mode", "devid1",
                           "--concurrency", str(a.concurrency), "--duration", str(a.duration), "--json"]
                else:
                    cmd = [evalbin, "connect", *brk, "--devices", fleet,
                           "--concurrency", str(a.concurrency), "--duration", str(a.duration)]
                    if "64" in client:
                        # The crate's default bound is 65535, and per-connection tables follow it.
                        cmd += ["--inflight", "64"]
                results.setdefault(("connect", client), []).append(run(cmd))
            for qos in (0, 1):
                for client in ("devid-agent", "rumqttc-v5-next"):
                    crt, key = pub["off"]
                    if client == "devid-agent":
                        cmd = [agent, "bench", "publish", *brk, "--cert", crt, "--key", key,
                               "--no-resume", "--qos", str(qos), "--size", "256",
                               "--duration", str(a.publish_seconds), "--json"]
                    else:
                        cmd = [evalbin, "publish", *brk, "--cert", crt, "--key", key,
                               "--qos", str(qos), "--size", "256", "--duration", str(a.publish_seconds)]
                    results.setdefault((f"publish QoS {qos}", client), []).append(run(cmd))
        print()
        print(f"capability check: {check['check']}")
        print("| measure | client | median /s | min-max /s | client CPU % (median) | broker CPU % (median) |")
        print("|---|---|---:|---:|---:|---:|")
        for (what, client), rs in results.items():
            rates = [r["per_second"] for r in rs]
            ccpu = [100 * (r["client_cpu_seconds"] or 0) / r["seconds"] for r in rs]
            bcpu = [100 * (r["broker_cpu_seconds"] or 0) / r["seconds"] for r in rs]
            print(f"| {what} | {client} | {statistics.median(rates):,.0f} | {min(rates):,.0f}-{max(rates):,.0f} "
                  f"| {statistics.median(ccpu):.0f} | {statistics.median(bcpu):.0f} |")
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
