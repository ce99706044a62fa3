#!/usr/bin/env bash
# Installs what the benchmark suite needs, if missing (Debian packages):
#   etcd-server, etcd-client   the Raft key-value store boundkv is compared with (3.4)
#   protobuf-compiler          protoc, for the etcd-client crate's gRPC code (the `etcd` feature)
# The etcd-server package starts (and enables) a single-node etcd service where systemd runs;
# the suite runs its own three members on 127.0.0.1, so the service is stopped and disabled.
set -euo pipefail
packages=(etcd-server etcd-client protobuf-compiler)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "bench/setup.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
    sudo=sudo
fi
if ((${#missing[@]} > 0)); then
    echo "bench/setup.sh: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if command -v systemctl >/dev/null && systemctl is-enabled etcd >/dev/null 2>&1; then
    $sudo systemctl disable --now etcd >/dev/null 2>&1 || true
fi
# Without systemd the package may have left a daemon running from its init script.
pkill -x etcd -U etcd 2>/dev/null || true
