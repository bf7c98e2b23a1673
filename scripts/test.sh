#!/usr/bin/env bash
# Run every test of the workspace on a Debian machine: install the Debian packages the test
# suite needs (as root), then `cargo test --workspace` with any extra arguments passed on, e.g.
#   scripts/test.sh --test it config_examples::
set -euo pipefail

# Debian packages the tests need, as package:binary (the binary shows the package is there).
# Each later issue that adds a real peer adds it here.
PACKAGES=(
    sip-tester:sipp   # SIPp, the interop tests' UAC and UAS
    nftables:nft      # nft, for a network-namespace test
    iproute2:ip       # ip netns, for a network-namespace test
)

cd "$(dirname "${BASH_SOURCE[0]}")/.."

have() { # have BINARY: on PATH, or in an sbin directory (often not on a user's PATH)
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

missing=()
for entry in "${PACKAGES[@]}"; do
    have "${entry#*:}" || missing+=("${entry%%:*}")
done

if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "run as root: apt-get install -y ${missing[*]}" >&2
        exit 2
    fi
    apt-get -o DPkg::Lock::Timeout=300 update
    DEBIAN_FRONTEND=noninteractive apt-get install -y -o DPkg::Lock::Timeout=300 "${missing[@]}"
fi

if [ -f "${HOME:-}/.cargo/env" ]; then
    # shellcheck source=/dev/null
    . "${HOME:-}/.cargo/env"
fi

exec cargo test --workspace "$@"
