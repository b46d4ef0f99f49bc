#!/usr/bin/env bash
# Makes sure what the tests need is installed and running: openssl and curl (independent
# checkers; curl is the EST client of the EST tests),
# Mosquitto 2.0 (the real broker the end-to-end tests start on their own ports) and its stock
# clients mosquitto_pub/mosquitto_sub (the mutual-TLS end-to-end test), SoftHSM2 and
# pkcs11-tool (opensc) for the CA-keys-in-a-token tests, PostgreSQL at 127.0.0.1:5432 with trust
# auth, cargo-machete (the unused-dependency check of .ci/run), and openapi-spec-validator (the
# independent checker of the served OpenAPI document) in a Python virtual environment of its own
# under target/tools/openapi-venv, and pkilint (RFC 5280 lints of the certificates and CRLs devid
# makes) in another under target/tools/pkilint-venv, and Debian's chromium and chromium-driver
# (the web console's test drives a headless Chromium through chromedriver).
# Idempotent; installs from Debian's packages, crates.io and PyPI when missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

if ! command -v cargo-machete >/dev/null 2>&1; then
  echo "setup: installing cargo-machete"
  cargo install --locked --quiet cargo-machete --version 0.9.2
fi

need_apt=()
command -v openssl >/dev/null 2>&1 || need_apt+=(openssl)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need_apt+=(mosquitto)
command -v mosquitto_pub >/dev/null 2>&1 && command -v mosquitto_sub >/dev/null 2>&1 ||
  need_apt+=(mosquitto-clients)
command -v pg_ctlcluster >/dev/null 2>&1 || need_apt+=(postgresql)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need_apt+=(python3 python3-venv)
command -v softhsm2-util >/dev/null 2>&1 || need_apt+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need_apt+=(opensc)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

openapi_venv="$root/target/tools/openapi-venv"
if ! "$openapi_venv/bin/openapi-spec-validator" --version >/dev/null 2>&1; then
  echo "setup: installing openapi-spec-validator into $openapi_venv"
  rm -rf "$openapi_venv"
  python3 -m venv "$openapi_venv"
  "$openapi_venv/bin/pip" install --quiet --disable-pip-version-check openapi-spec-validator==0.9.0
fi

# Cisco's libest estclient, the reference EST client (RFC 7030), for the EST interop tests:
# Debian ships it from trixie on (libest-utils). On an older Debian the two packages are
# fetched from trixie's pool with apt (a source list of their own, removed at once) and
# unpacked under target/tools/libest; they link only libc and OpenSSL 3.
libest_dir="$root/target/tools/libest"
if ! [ -x "$libest_dir/usr/bin/estclient" ] || ! ls "$libest_dir"/usr/lib/*/libest.so.3 >/dev/null 2>&1; then
  echo "setup: installing libest's estclient into $libest_dir"
  export DEBIAN_FRONTEND=noninteractive
  list=/etc/apt/sources.list.d/devid-libest-trixie.list
  if ! apt-cache show libest-utils >/dev/null 2>&1; then
    echo "deb http://deb.debian.org/debian trixie main" >"$list"
    apt-get update -qq
  fi
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download -qq libest-utils libest3 >/dev/null 2>&1) || status=$?
  if [ -e "$list" ]; then
    rm -f "$list"
    apt-get update -qq
  fi
  [ "${status:-0}" -eq 0 ] || { echo "setup: could not download libest-utils"; exit 1; }
  rm -rf "$libest_dir"
  mkdir -p "$libest_dir"
  for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$libest_dir"; done
  rm -rf "$tmp"
fi

pkilint_venv="$root/target/tools/pkilint-venv"
if ! "$pkilint_venv/bin/lint_pkix_cert" --help >/dev/null 2>&1; then
  echo "setup: installing pkilint into $pkilint_venv"
  rm -rf "$pkilint_venv"
  python3 -m venv "$pkilint_venv"
  "$pkilint_venv/bin/pip" install --quiet --disable-pip-version-check pkilint==0.13.3
fi

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  echo "setup: starting PostgreSQL"
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  conf=/etc/postgresql/$version/main/pg_hba.conf
  # Trust local TCP connections: the tests create and drop their own databases.
  if ! grep -q '^host all all 127.0.0.1/32 trust' "$conf"; then
    sed -i '1i host all all 127.0.0.1/32 trust' "$conf"
  fi
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
  done
fi
pg_isready -h 127.0.0.1 -p 5432
