#!/usr/bin/env bash
# One crypto stack (ring) and no OpenSSL linkage: these crates must not be in the tree.
# `cryptoki` (CA keys in a PKCS#11 token) is allowed: it is an interface to the token, not a
# crypto stack. The token makes keys and signatures; ring hashes what is signed and verifies
# every signature the token returns. The PKCS#11 module is loaded at run time (dlopen) only
# when configured, so it never shows among our binaries' linked libraries.
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for banned in aws-lc-rs aws-lc-sys openssl-sys openssl native-tls; do
  if cargo tree --workspace --all-features -e normal,build,dev -i "$banned" >/dev/null 2>&1; then
    echo "check-deps: $banned is in the dependency tree:"
    cargo tree --workspace -e normal,build,dev -i "$banned" | head -20
    status=1
  fi
done
# No binary of ours links libssl/libcrypto.
for bin in target/debug/devid-server target/debug/devid target/debug/devid-agent target/debug/libdevid_mosquitto.so; do
  if [ -e "$bin" ] && ldd "$bin" 2>/dev/null | grep -Eq 'libssl|libcrypto'; then
    echo "check-deps: $bin links OpenSSL"
    status=1
  fi
done
[ $status -eq 0 ] && echo "check-deps: ring only, no OpenSSL linkage"
exit $status
