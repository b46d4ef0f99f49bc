#!/usr/bin/env python3
"""Connect-rate benchmark of DEVID-1 against the TLS 1.3 mutual-TLS baseline, one Mosquitto.

Starts a devid-server (temp data dir, free port), registers --devices devices, enrols a broker
certificate (openssl makes the key and CSR), starts Mosquitto 2.0.11 with the devid plugin on a
plain listener and a TLS listener (require_certificate, set_tcp_nodelay), then runs
`devid-agent bench connect` in modes devid1, resume and mtls against it, with the broker's PID so
its CPU is reported too, and mode plain (anonymous MQTT over TCP) against a second Mosquitto of the
same binary without the plugin: the broker's connect ceiling. Everything listens on 127.0.0.1 and is stopped by PID at the end.

Usage: device/scripts/bench.py [--profile release|debug] [--devices 64] [--concurrency 32]
       [--duration 10] [--modes devid1,resume,mtls,plain]
Build first: cargo build --release -p devid-server -p devid-mosquitto -p devid-device
"""

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MOSQUITTO = "/usr/sbin/mosquitto"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port}")


def wait_log(path, text, proc, what, timeout=30):
    """Waits until the log file at `path` contains `text`."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"{what} exited with {proc.returncode}")
        try:
            with open(path) as f:
                if text in f.read():
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit(f"{what}: no {text!r} in {path} after {timeout} s")


def call(url, token, method, path, body):
    req = urllib.request.Request(
        url + path,
        method=method,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def pem_blocks(text):
    out, cur = [], []
    for line in text.splitlines():
        cur.append(line)
        if line.startswith("-----END"):
            out.append("\n".join(cur) + "\n")
            cur = []
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--profile", default="release")
    ap.add_argument("--devices", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--modes", default="devid1,resume,mtls,plain")
    ap.add_argument("--publish-seconds", type=float, default=0,
                    help="also measure publish throughput (256-byte payloads, QoS 0 and 1) "
                         "with message auth off vs required (MAC, seal), this long per run")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    a = ap.parse_args()
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    bins = os.path.join(target, a.profile)
    server_bin = os.path.join(bins, "devid-server")
    agent_bin = os.path.join(bins, "devid-agent")
    plugin = os.path.join(bins, "libdevid_mosquitto.so")
    for f in (server_bin, agent_bin, plugin):
        if not os.path.exists(f):
            sys.exit(f"missing {f}: build it first")

    work = tempfile.mkdtemp(prefix="devid-bench-")
    procs = []
    try:
        data = os.path.join(work, "server")
        port = free_port()
        log = open(os.path.join(work, "server.log"), "w")
        srv = subprocess.Popen(
            [server_bin, "--listen", f"127.0.0.1:{port}", "--data-dir", data],
            stdout=subprocess.DEVNULL, stderr=log)
        procs.append(srv)
        wait_port(port, srv, "devid-server")
        url = f"http://127.0.0.1:{port}"
        token = open(os.path.join(data, "admin.token")).read().strip()
        root = os.path.join(data, "ca", "root.crt")

        fleet = os.path.join(work, "fleet")
        os.mkdir(fleet)
        pubdir = os.path.join(work, "publishers")
        os.mkdir(pubdir)
        publishers = {}
        for mode in ("off", "required"):
            r = call(url, token, "POST", "/v1/devices",
                     {"hardware_serial": f"pub-{mode}", "generate_key": True})
            chain = pem_blocks(r["chain"])[:-1]
            crt = os.path.join(pubdir, f"{r['client_id']}.crt")
            with open(crt, "w") as f:
                f.write(r["certificate"].rstrip("\n") + "\n" + "".join(chain))
            kp = os.path.join(pubdir, f"{r['client_id']}.key")
            with open(kp, "w") as f:
                f.write(r["private_key"])
            os.chmod(kp, 0o600)
            call(url, token, "PUT", f"/v1/devices/{r['client_id']}/policy", {"message_auth": mode})
            publishers[mode] = (crt, kp)
        for i in range(a.devices):
            r = call(url, token, "POST", "/v1/devices",
                     {"hardware_serial": f"bench-{i:05d}", "generate_key": True})
            chain = pem_blocks(r["chain"])[:-1]  # issuing CA(s), without the root
            with open(os.path.join(fleet, f"{r['client_id']}.crt"), "w") as f:
                f.write(r["certificate"].rstrip("\n") + "\n" + "".join(chain))
            kp = os.path.join(fleet, f"{r['client_id']}.key")
            with open(kp, "w") as f:
                f.write(r["private_key"])
            os.chmod(kp, 0o600)

        name = "mqtt.bench"
        bkey = os.path.join(work, "broker.key")
        csr = subprocess.run(
            ["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", bkey, "-subj", f"/CN={name}",
             "-addext", f"subjectAltName=DNS:{name}"],
            check=True, capture_output=True, text=True).stdout
        b = call(url, token, "POST", "/v1/brokers", {"name": name, "csr": csr})
        bchain = os.path.join(work, "broker-chain.pem")
        with open(bchain, "w") as f:
            f.write(b["certificate"].rstrip("\n") + "\n" + "".join(pem_blocks(b["chain"])[:-1]))
        t = call(url, token, "POST", "/v1/tokens", {"role": "broker", "name": name})
        with open(os.path.join(work, "broker.token"), "w") as f:
            f.write(t["token"])

        with open(os.path.join(work, "ticket.keys"), "w") as f:
            f.write("1 " + os.urandom(32).hex() + "\n")
        os.chmod(os.path.join(work, "ticket.keys"), 0o600)

        mport, tport = free_port(), free_port()
        conf = os.path.join(work, "mosquitto.conf")
        with open(conf, "w") as f:
            f.write("\n".join([
                "per_listener_settings false", "allow_anonymous false", "user root",
                "persistence false", f"log_dest file {work}/mosquitto.log",
                "log_type error", "log_type warning", "log_type information",
                f"listener {mport} 127.0.0.1",
                f"listener {tport} 127.0.0.1", f"cafile {root}", f"certfile {bchain}",
                f"keyfile {bkey}", "require_certificate true", "set_tcp_nodelay true",
                f"plugin {plugin}", f"plugin_opt_service_url {url}",
                f"plugin_opt_token_file {work}/broker.token",
                f"plugin_opt_trust_anchor {root}", f"plugin_opt_broker_cert {bchain}",
                f"plugin_opt_broker_key {bkey}", f"plugin_opt_state_dir {work}/state",
                "plugin_opt_max_staleness 300",
                # Every load device connects from 127.0.0.1: lift the per-address handshake
                # bounds, whose defaults (10 ClientHellos/s) would measure the rate limit.
                "plugin_opt_hello_rate 100000", "plugin_opt_hello_burst 100000",
                "plugin_opt_max_pending_per_address 1000",
                f"plugin_opt_ticket_key_file {work}/ticket.keys", ""]))
        mq = subprocess.Popen([MOSQUITTO, "-c", conf], stdout=subprocess.DEVNULL,
                              stderr=open(os.path.join(work, "mosquitto.stderr"), "w"))
        procs.append(mq)
        wait_port(mport, mq, "mosquitto")
        wait_port(tport, mq, "mosquitto (TLS)")
        # Devices connecting before the plugin's first catch-up with the feed would be refused.
        wait_log(os.path.join(work, "mosquitto.log"), "caught up with the revocation feed", mq,
                 "mosquitto")

        # The plain-TCP anonymous baseline: the same Mosquitto binary without the plugin (with
        # it, every client without devid is refused).
        pport = free_port()
        pconf = os.path.join(work, "mosquitto-plain.conf")
        with open(pconf, "w") as f:
            f.write("\n".join([
                "allow_anonymous true", "user root", "persistence false",
                f"log_dest file {work}/mosquitto-plain.log", "log_type error",
                f"listener {pport} 127.0.0.1", ""]))
        plain_mq = subprocess.Popen([MOSQUITTO, "-c", pconf], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL)
        procs.append(plain_mq)
        wait_port(pport, plain_mq, "mosquitto (plain)")

        results = []
        for mode in a.modes.split(","):
            port = {"mtls": tport, "plain": pport}.get(mode, mport)
            pid = plain_mq.pid if mode == "plain" else mq.pid
            out = subprocess.run(
                [agent_bin, "bench", "connect", "--broker", f"127.0.0.1:{port}", "--devices", fleet,
                 "--root", root, "--broker-name", name, "--concurrency", str(a.concurrency),
                 "--duration", str(a.duration), "--mode", mode,
                 "--broker-pid", str(pid), "--json"],
                capture_output=True, text=True)
            if out.returncode != 0:
                print(out.stdout, out.stderr, file=sys.stderr)
                sys.exit(f"bench {mode} failed")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            print(json.dumps(r), flush=True)
        pub_results = []
        if a.publish_seconds > 0:
            runs = [("off", "none", q) for q in (0, 1)] + \
                   [("required", p, q) for p in ("mac", "seal") for q in (0, 1)]
            for policy, protect, qos in runs:
                crt, kp = publishers[policy]
                out = subprocess.run(
                    [agent_bin, "bench", "publish", "--broker", f"127.0.0.1:{mport}",
                     "--cert", crt, "--key", kp, "--root", root, "--broker-name", name,
                     "--no-resume", "--qos", str(qos), "--size", "256", "--protect", protect,
                     "--duration", str(a.publish_seconds), "--broker-pid", str(mq.pid),
                     "--json"],
                    capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stdout, out.stderr, file=sys.stderr)
                    sys.exit(f"bench publish {policy}/{protect}/{qos} failed")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                r["policy"] = policy
                pub_results.append(r)
                print(json.dumps(r), flush=True)
        print()
        if pub_results:
            print("| message auth | protection | QoS | messages/s | client CPU % | broker CPU % |")
            print("|---|---|---|---|---|---|")
            for r in pub_results:
                s_ = r["seconds"]
                print(f"| {r['policy']} | {r['protect']} | {r['qos']} | {r['per_second']:.0f} "
                      f"| {100 * (r['client_cpu_seconds'] or 0) / s_:.0f} "
                      f"| {100 * (r['broker_cpu_seconds'] or 0) / s_:.0f} |")
            print()
        print("| mode | connects/s | p50 ms | p99 ms | client CPU % | broker CPU % | errors |")
        print("|---|---|---|---|---|---|---|")
        for r in results:
            s = r["seconds"]
            print(f"| {r['mode']} | {r['per_second']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
                  f"| {100 * (r['client_cpu_seconds'] or 0) / s:.0f} "
                  f"| {100 * (r['broker_cpu_seconds'] or 0) / s:.0f} "
                  f"| {sum(r['errors'].values())} |")
    finally:
        for p in reversed(procs):
            p.kill()
            p.wait()
        if a.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
