#!/usr/bin/env bash
# Installs what boundkv's consistency suite needs, if missing (Debian packages):
#   iproute2   network namespaces and veth pairs (one namespace per node)
#   nftables   partitions, cut inside each node's namespace
#   libfaketime + faketime   per-node system clock offsets, changed while nodes run
#   strace     the durability tests
# Idempotent; needs root (namespaces need it anyway) or sudo, and only the package registry.
set -euo pipefail
packages=(iproute2 nftables libfaketime faketime strace)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "setup-jepsen: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
fi
echo "setup-jepsen: installing ${missing[*]}" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
