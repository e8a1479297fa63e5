#!/usr/bin/env bash
# Install every system dependency rewind needs to build and test (idempotent).
#   bash scripts/setup.sh          build + test dependencies
#   bash scripts/setup.sh --bench  also the peers scripts/bench.sh compares with (criu)
set -euo pipefail

want=(gcc libc6-dev python3 make sqlite3 gdb binutils iproute2 util-linux mount)
# Real programs of tests/tests/real_programs.rs (each test skips, saying so, without its program).
want+=(perl nodejs tcl openjdk-17-jdk-headless)
# MPI (tests/tests/mpi.rs: fails, never skips, without mpicc).
want+=(mpich libmpich-dev)
if [[ "${1:-}" == "--bench" ]]; then
    want+=(criu)
fi

missing=()
for pkg in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: need root to install packages (run as root or with sudo)" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found; install a Rust toolchain (rustup) first" >&2
    exit 1
fi
# The engine needs ptrace of its own children and root-only restores
# (clone3 set_tid, PR_SET_MM_MAP); say so early rather than fail in a test.
if [[ -r /proc/sys/kernel/yama/ptrace_scope ]] && [[ $(cat /proc/sys/kernel/yama/ptrace_scope) -ge 3 ]]; then
    echo "setup: ptrace is disabled (kernel.yama.ptrace_scope=3); rewind cannot work here" >&2
    exit 1
fi
echo "setup: ok"
