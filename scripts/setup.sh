#!/usr/bin/env bash
# Installs the Debian packages boundkv's tests and tools need, if they are missing.
# Idempotent; needs root or sudo, and only the package registry.
#   strace: durability tests watch the fdatasync calls from outside the process.
#   iproute2, nftables, libfaketime, faketime: the consistency suite's network namespaces,
#   partitions and per-node clocks (tests/setup-jepsen.sh installs the same set).
set -euo pipefail

packages=(strace iproute2 nftables libfaketime faketime)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
fi
echo "setup: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
