#!/usr/bin/env python3
"""Code size of the sensor library as firmware links it: builds libdevid_sensor_c.a (release),
links the C test program against it with -ffunction-sections and --gc-sections (so only what
the program reaches stays), and splits the linked bytes by where they came from, from the
linker map: the devid-sensor crates, ring (Rust, and its C/assembly objects), core, and the
Rust std runtime that a hosted static library brings (panics, unwinding, backtraces) and a
no_std firmware build with panic=abort does not.

Usage: sensor-c/scripts/code_size.py   (from anywhere in the repository)
"""
import collections
import os
import re
import subprocess
import sys
import tempfile

root = subprocess.check_output(["git", "rev-parse", "--show-toplevel"], text=True).strip()
env = dict(os.environ, CARGO_INCREMENTAL="0")
subprocess.check_call(["cargo", "build", "--release", "-p", "devid-sensor-c", "-q"], cwd=root, env=env)
target = os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target"))
lib = os.path.join(target, "release", "libdevid_sensor_c.a")
members = subprocess.check_output(["ar", "t", lib], text=True).split()
# ring's C and assembly objects are named <hash>-<file>.o; find the hashes from ring's own files.
ring_c = {m.split("-")[0] for m in members if re.search(r"-(aes_nohw|crypto|mem|sha256-x86_64-elf|ghash-x86_64-elf|chacha-armv4-linux32|sha256-armv8-linux64)\.o$", m)}

with tempfile.TemporaryDirectory() as d:
    prog, mapfile = os.path.join(d, "prog"), os.path.join(d, "prog.map")
    subprocess.check_call([
        "cc", "-Os", "-ffunction-sections", "-fdata-sections",
        "-I", os.path.join(root, "sensor/include"),
        os.path.join(root, "sensor-c/tests/c/vectors.c"), lib,
        "-Wl,--gc-sections", "-Wl,-Map=" + mapfile,
        "-lgcc_s", "-lutil", "-lrt", "-lpthread", "-lm", "-ldl", "-lc", "-o", prog,
    ])
    out = subprocess.run([prog], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit("the C program failed:\n" + out.stdout)
    total = subprocess.check_output(["size", prog], text=True)
    lines = open(mapfile).read().split("\n")

start = next(i for i, l in enumerate(lines) if l.startswith("Linker script and memory map"))
sizes = collections.Counter()
pending = None
for l in lines[start:]:
    m = re.match(r"^ (\.[\w.$]+)\s*$", l)
    if m:
        pending = m.group(1)
        continue
    m = re.match(r"^ (\.[\w.$]+)?\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)\s+(\S+)", l)
    sec, pending = (m.group(1) or pending) if m else None, None
    if not m or sec is None or int(m.group(2), 16) == 0:
        continue
    kind = ("text" if sec.startswith(".text") else "rodata" if sec.startswith(".rodata")
            else "data" if sec.startswith((".data", ".bss")) else None)
    if kind is None:
        continue
    mm = re.search(r"\.a\((.*)\)", m.group(4))
    if not mm:
        group = "C program and libc"
    else:
        name = mm.group(1)
        if name.startswith("devid_sensor_c-"):
            group = "devid-sensor-c (the C ABI)"
        elif name.startswith("devid_sensor-"):
            group = "devid-sensor"
        elif name.startswith("ring-"):
            group = "ring (Rust)"
        elif name.split("-")[0] in ring_c:
            group = "ring (C and assembly)"
        elif re.match(r"(core|compiler_builtins)-", name):
            group = "core + compiler_builtins"
        else:
            group = "std runtime (hosted build only)"
    sizes[(group, kind)] += int(m.group(3), 16)

print(total.strip())
print(f"{'from':34} {'text':>8} {'rodata':>8} {'data+bss':>9}")
for g in sorted({g for g, _ in sizes}, key=lambda g: -sizes[(g, "text")]):
    print(f"{g:34} {sizes[(g, 'text')]:8} {sizes[(g, 'rodata')]:8} {sizes[(g, 'data')]:9}")
