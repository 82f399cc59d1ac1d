#!/usr/bin/env bash
# The CPU kernels' AArch64 family (NEON + dot product) on this x86-64 machine: cross-compiles the kernels
# crate for aarch64-unknown-linux-gnu and runs its tests under qemu's user-mode emulator, whose `-cpu max`
# has the dot-product instructions. The tests compare every family the CPU offers with the portable
# kernels bit for bit; EMBER_EXPECT_ISA=neon makes them fail if the family was not detected, so the run
# cannot quietly test the portable code twice. Then the `ember` binary for aarch64 answers a greedy prompt
# with both registry models through those kernels. (Timings under an emulator mean nothing: this is a
# correctness run only.)
#
# Installs what it lacks, once: the Rust target (rustup), and Debian's cross linker and qemu-user (apt).
# Where those cannot be installed it says so and exits 0, unless EMBER_REQUIRE_AARCH64=1.
#
#   scripts/test-aarch64.sh [extra cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu

skip() {
  echo "test-aarch64: skipped: $*" >&2
  [ "${EMBER_REQUIRE_AARCH64:-0}" = 1 ] && exit 1
  exit 0
}

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target" >&2 || skip "rustup could not add $target"
fi
if ! command -v qemu-aarch64 >/dev/null || ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  pkgs=(qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross)
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get install -y --no-install-recommends "${pkgs[@]}" >&2 ||
    { $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends "${pkgs[@]}" >&2; } ||
    skip "apt-get could not install ${pkgs[*]}"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu -cpu max"
export EMBER_EXPECT_ISA=neon
cargo clippy --release -p ember-kernels --target "$target" --all-targets -- -D warnings
cargo test --release -p ember-kernels --target "$target" "$@"

# End to end: the registry models (fetched on first use, as on x86) answer through the NEON kernels.
cargo build --release --target "$target" --bin ember
ember="${CARGO_TARGET_DIR:-target}/$target/release/ember"
for model in smollm2-135m-instruct qwen2.5-coder-0.5b-instruct; do
  # shellcheck disable=SC2086 # the runner is a command line
  answer=$($CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER "$ember" generate --model "$model" \
    --prompt "The capital of France is" --max-tokens 8 --temperature 0)
  echo "test-aarch64: $model, greedy: The capital of France is$answer"
  grep -q Paris <<<"$answer" || { echo "test-aarch64: $model did not name Paris" >&2; exit 1; }
done
