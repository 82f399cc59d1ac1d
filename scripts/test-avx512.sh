#!/usr/bin/env bash
# The CPU kernels' tests on an emulated CPU with AVX-512 (VNNI), which this machine lacks: builds the
# kernels crate's test binaries statically (x86_64-unknown-linux-gnu, +crt-static), packs them into an
# initramfs with a static busybox as /init, and boots Debian's cloud kernel on it in Bochs, a full-system
# emulator whose `corei7_icelake_u` and `tigerlake` models have AVX-512 F/BW/DQ/VL + VNNI
# (`corei7_skylake_x`: AVX-512 without VNNI). qemu-user's TCG has no AVX-512 and Intel SDE is not in a
# registry, so Bochs it is. The guest prints its /proc/cpuinfo flags, runs every test binary with this
# script's arguments (libtest filters and flags, e.g. `every_kernel_family_matches`), prints an end
# marker with each exit code and powers off; the serial console is streamed here. Exits non-zero if a
# test binary failed, no test ran, the kernel panicked, or the wall-clock limit passed.
# EMBER_EXPECT_ISA (e.g. avx512vnni) is handed to the guest, so quant.rs fails if the family the run is
# for was not detected instead of testing the AVX2 or portable kernels again. Bochs interprets every
# instruction (tens of MIPS): a correctness run only, timings mean nothing; the whole suite takes about
# 2.5 minutes of wall clock (boot ~35 s, quant ~80 s, kernels ~30 s) on a 2-core Zen 3.
# Bochs 2.7 has no CPU model with AVX-VNNI (the VEX `vpdpbusd` of Alder Lake / Sapphire Rapids raises
# #UD on every model): only the AVX-512 VNNI encoding can be tested here.
# Debian's Bochs has no `nogui` display: it then runs with `rfb`, a VNC server on a port in 5900-5949
# that no one needs to connect to, for the length of the run.
#
# Installs what it lacks, once, with apt: bochs, bochsbios, vgabios, xorriso, isolinux, syslinux-common,
# cpio; and downloads (apt-get download, not installed) a Debian cloud kernel and busybox-static into
# target/bochs-avx512/. Where those cannot be had it says so and exits 0, unless EMBER_REQUIRE_AVX512=1.
#
#   scripts/test-avx512.sh [test binary args...]
#
# Environment:
#   EMBER_BOCHS_CPU        Bochs CPU model (default corei7_icelake_u; `bochs -help cpu` lists them)
#   EMBER_AVX512_TESTS     which test binaries, by target name: ember_kernels (the lib's unit tests),
#                          kernels, quant, rowwise (default: all, in that order)
#   EMBER_AVX512_TIMEOUT   wall-clock limit in seconds for the emulated run (default 1800)
#   EMBER_BOCHS_BINARIES   run these static executables instead of building the kernels tests
#   EMBER_BOCHS_MEGS       guest memory in MiB (default 1024)
#   EMBER_BOCHS_APPEND     extra kernel command line (e.g. loglevel=7 to see the boot)
#   EMBER_BOCHS_KEEP=1     keep the work directory (/tmp/bochs-avx512.*: bochsrc, ISO, logs)
#   EMBER_EXPECT_ISA, EMBER_CPU_ISA, RUST_BACKTRACE, RUST_TEST_THREADS: passed to the guest's tests
set -euo pipefail
cd "$(dirname "$0")/.."
target=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-target}
cpu=${EMBER_BOCHS_CPU:-corei7_icelake_u}
limit=${EMBER_AVX512_TIMEOUT:-1800}
megs=${EMBER_BOCHS_MEGS:-1024}

skip() {
  echo "test-avx512: skipped: $*" >&2
  [ "${EMBER_REQUIRE_AVX512:-0}" = 1 ] && exit 1
  exit 0
}
fail() {
  echo "test-avx512: FAILED: $*" >&2
  exit 1
}

sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
apt_install() {
  $sudo apt-get install -y --no-install-recommends "$@" >&2 ||
    { $sudo apt-get update >&2 && $sudo apt-get install -y --no-install-recommends "$@" >&2; }
}

isolinux_bin=/usr/lib/ISOLINUX/isolinux.bin
ldlinux_c32=/usr/lib/syslinux/modules/bios/ldlinux.c32
bios=/usr/share/bochs/BIOS-bochs-latest
vgabios=/usr/share/vgabios/vgabios.bin
if ! command -v bochs >/dev/null || ! command -v xorriso >/dev/null || ! command -v cpio >/dev/null ||
  [ ! -f "$isolinux_bin" ] || [ ! -f "$ldlinux_c32" ] || [ ! -f "$bios" ] || [ ! -f "$vgabios" ]; then
  pkgs=(bochs bochsbios vgabios xorriso isolinux syslinux-common cpio)
  apt_install "${pkgs[@]}" || skip "apt-get could not install ${pkgs[*]}"
fi
models=$(bochs -help cpu 2>&1 || true)
grep -qx "$cpu" <<<"$models" || fail "this Bochs has no CPU model $cpu (bochs -help cpu)"

# The guest's kernel and /init, downloaded once from the apt archive (not installed).
cache="$target_dir/bochs-avx512"
mkdir -p "$cache"
apt_download() { # PACKAGE: fetch its .deb into $cache/dl and unpack it into $cache/PACKAGE
  rm -rf "$cache/dl" && mkdir -p "$cache/dl"
  local opts=()
  [ "$(id -u)" = 0 ] && opts=(-o APT::Sandbox::User=root)
  (cd "$cache/dl" && apt-get download "${opts[@]}" "$1" >&2) ||
    { $sudo apt-get update >&2 && (cd "$cache/dl" && apt-get download "${opts[@]}" "$1" >&2); } || return 1
  rm -rf "${cache:?}/$1" && dpkg-deb -x "$cache"/dl/*.deb "$cache/$1" && rm -rf "$cache/dl"
}
kernels=("$cache"/linux-image-*/boot/vmlinuz-*)
vmlinuz=""
[ -f "${kernels[0]}" ] && vmlinuz=${kernels[0]}
if [ -z "$vmlinuz" ]; then
  kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
  if [ -z "$kpkg" ]; then
    $sudo apt-get update >&2 || true
    kpkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}')
  fi
  [ -n "$kpkg" ] || skip "apt knows no linux-image-cloud-amd64 (a Debian archive is needed)"
  apt_download "$kpkg" || skip "apt-get could not download $kpkg"
  find "$cache/$kpkg" -mindepth 1 -maxdepth 1 ! -name boot -exec rm -rf {} + # the modules: not needed
  kernels=("$cache/$kpkg"/boot/vmlinuz-*)
  vmlinuz=${kernels[0]}
fi
busybox="$cache/busybox-static/bin/busybox"
if [ ! -x "$busybox" ]; then
  apt_download busybox-static || skip "apt-get could not download busybox-static"
fi

# The test binaries: static, so the guest needs no libc; the explicit --target keeps these RUSTFLAGS
# out of the host build in target/release.
names=()
paths=()
if [ -n "${EMBER_BOCHS_BINARIES:-}" ]; then
  for p in $EMBER_BOCHS_BINARIES; do
    [ -x "$p" ] || fail "EMBER_BOCHS_BINARIES: $p is not an executable"
    names+=("$(basename "$p")")
    paths+=("$p")
  done
else
  want=${EMBER_AVX512_TESTS:-ember_kernels kernels quant rowwise}
  json=$(RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" cargo test --release -p ember-kernels \
    --target "$target" --no-run --message-format=json-render-diagnostics)
  for name in $want; do
    path=$(sed -n 's/.*"target":{[^}]*"name":"'"$name"'".*"profile":{[^}]*"test":true.*"executable":"\([^"]*\)".*/\1/p' \
      <<<"$json" | tail -n1)
    [ -n "$path" ] || fail "no test binary named $name in ember-kernels (EMBER_AVX512_TESTS: ember_kernels kernels quant rowwise)"
    names+=("$name")
    paths+=("$path")
  done
fi

work=$(mktemp -d /tmp/bochs-avx512.XXXXXX)
bochs_pid=""
cleanup() {
  if [ -n "$bochs_pid" ]; then kill "$bochs_pid" 2>/dev/null || true; fi
  if [ "${EMBER_BOCHS_KEEP:-0}" = 1 ]; then echo "test-avx512: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

# initramfs: /init (busybox sh), the binaries in run order, their environment and arguments.
root="$work/root"
mkdir -p "$root"/{bin,proc,sys,dev,tmp,tests}
cp "$busybox" "$root/bin/busybox"
for i in "${!names[@]}"; do
  cp "${paths[$i]}" "$root/tests/${names[$i]}"
  echo "${names[$i]}" >>"$root/tests/order"
done
quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }
: >"$root/env"
for var in EMBER_EXPECT_ISA EMBER_CPU_ISA RUST_BACKTRACE RUST_TEST_THREADS; do
  if [ -n "${!var:-}" ]; then echo "export $var=$(quote "${!var}")" >>"$root/env"; fi
done
: >"$root/args"
for arg in "$@"; do printf '%s\n' "$arg" >>"$root/args"; done
cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin HOME=/tmp TMPDIR=/tmp
. /env
echo "EMBER-AVX512: init, uptime $(cut -d' ' -f1 /proc/uptime)s"
grep -m1 '^model name' /proc/cpuinfo
grep -m1 '^flags' /proc/cpuinfo
set --
while IFS= read -r a; do set -- "$@" "$a"; done </args
failures=0
cd /tmp
while read -r name; do
  echo "EMBER-AVX512: begin $name"
  "/tests/$name" "$@"
  rc=$?
  echo "EMBER-AVX512: end $name rc=$rc"
  [ "$rc" = 0 ] || failures=$((failures + 1))
done </tests/order
echo "EMBER-AVX512: done failures=$failures"
sleep 1
poweroff -f
EOF
chmod +x "$root/init"
mkdir -p "$work/iso/isolinux"
(cd "$root" && find . | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$work/iso/isolinux/initrd.gz"
cp "$vmlinuz" "$work/iso/isolinux/vmlinuz"
cp "$isolinux_bin" "$ldlinux_c32" "$work/iso/isolinux/"
# Bochs 2.7's CPUID leaf 0xD is wrong for the compacted (XSAVES/XSAVEC) format and for PKRU, which makes
# Linux turn XSAVE, and with it AVX, off; and the kernel's FSRM `rep movsb` memmove crashes the Ice Lake
# model's boot. clearcpuid= hides them from the kernel only: user space sees the model's CPUID as is.
cat >"$work/iso/isolinux/isolinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /isolinux/vmlinuz
  INITRD /isolinux/initrd.gz
  APPEND console=ttyS0,115200 panic=0 quiet mitigations=off nokaslr tsc=reliable no_timer_check lpj=3000000 clearcpuid=xsaves,xsavec,pku,fsrm ${EMBER_BOCHS_APPEND:-}
EOF
xorriso -as mkisofs -quiet -o "$work/boot.iso" -b isolinux/isolinux.bin -c isolinux/boot.cat \
  -no-emul-boot -boot-load-size 4 -boot-info-table "$work/iso" 2>/dev/null

serial="$work/serial.log"
# Sound goes to Bochs' dummy drivers: its default ALSA output, on a machine with no sound card, ends in
# glibc's "buffer overflow detected" abort before the guest starts.
write_bochsrc() { # DISPLAY_LIBRARY_LINE
  cat >"$work/bochsrc" <<EOF
$1
romimage: file=$bios
vgaromimage: file=$vgabios
cpu: model=$cpu, count=1, ips=400000000
memory: guest=$megs, host=$megs
pci: enabled=1, chipset=i440fx
ata0-master: type=cdrom, path=$work/boot.iso, status=inserted
boot: cdrom
com1: enabled=1, mode=file, dev=$serial
clock: sync=none
speaker: enabled=0
sound: waveoutdrv=dummy, waveindrv=dummy, midioutdrv=dummy
log: $work/bochs.log
panic: action=fatal
error: action=ignore
info: action=ignore
debug: action=ignore
EOF
}
# A Bochs built with its debugger (Debian's) stops at the first instruction until told to continue.
dbg=()
usage=$(bochs -help 2>&1 || true)
if grep -q -- '^ *-rc ' <<<"$usage"; then
  echo c >"$work/continue.rc"
  dbg=(-rc "$work/continue.rc")
fi
start_bochs() {
  : >"$serial"
  bochs -q -f "$work/bochsrc" "${dbg[@]}" </dev/null >"$work/bochs.out" 2>&1 &
  bochs_pid=$!
}
# Headless: the `nogui` display where this Bochs has it, else a VNC server (rfb) no one connects to.
write_bochsrc "display_library: nogui"
start_bochs
sleep 2
if ! kill -0 "$bochs_pid" 2>/dev/null && grep -q "'nogui' not available" "$work/bochs.out"; then
  write_bochsrc 'display_library: rfb, options="timeout=0"'
  start_bochs
fi

echo "test-avx512: booting $(basename "$vmlinuz") on Bochs $cpu with ${names[*]} $*" >&2
t0=$SECONDS
printed=0
done_line=""
panicked=""
timed_out=""
timings=()
began=$t0
while :; do
  total=$(wc -l <"$serial")
  if [ "$total" -gt "$printed" ]; then
    while IFS= read -r line; do
      printf '%s\n' "$line"
      case $line in
        "EMBER-AVX512: init"*) timings+=("boot $((SECONDS - t0))s") began=$SECONDS ;;
        "EMBER-AVX512: end "*)
          read -r _ _ ended rc <<<"$line"
          timings+=("$ended $((SECONDS - began))s $rc")
          began=$SECONDS
          ;;
        "EMBER-AVX512: done"*) done_line=$line ;;
        *"Kernel panic"*) panicked=$line ;;
      esac
    done < <(sed -n "$((printed + 1)),${total}p" "$serial" | tr -d '\r')
    printed=$total
  fi
  if [ -n "$done_line" ] || [ -n "$panicked" ]; then break; fi
  kill -0 "$bochs_pid" 2>/dev/null || break
  if [ $((SECONDS - t0)) -ge "$limit" ]; then
    timed_out=1
    break
  fi
  sleep 2
done
# After the end marker the guest powers off by itself (Bochs exits on the ACPI soft-off): give it a
# moment; otherwise (panic, time limit) stop it now.
if [ -n "$done_line" ]; then
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$bochs_pid" 2>/dev/null || break; sleep 1; done
fi
kill "$bochs_pid" 2>/dev/null || true
wait "$bochs_pid" 2>/dev/null || true
bochs_pid=""
# A last partial line (no newline) is printed here.
sed -n "$((printed + 1)),\$p" "$serial" | tr -d '\r'

echo "test-avx512: wall clock on this machine (Bochs $cpu): ${timings[*]:-none}; total $((SECONDS - t0))s" >&2
[ -z "$timed_out" ] || fail "no end marker within EMBER_AVX512_TIMEOUT=${limit}s"
[ -z "$panicked" ] || fail "the guest kernel panicked: $panicked"
if [ -z "$done_line" ]; then
  tail -n 20 "$work/bochs.out" >&2
  fail "Bochs exited without the end marker"
fi
grep -q '^flags.* avx512f' "$serial" || echo "test-avx512: note: the guest CPU ($cpu) has no avx512f" >&2
results=$(tr -d '\r' <"$serial" | grep -c '^test result: ' || true)
passed=$(tr -d '\r' <"$serial" | sed -n 's/^test result: [a-zA-Z]*\. \([0-9]*\) passed.*/\1/p' | awk '{s += $1} END {print s + 0}')
[ "${done_line#*failures=}" = 0 ] || fail "${done_line#EMBER-AVX512: }"
if [ -z "${EMBER_BOCHS_BINARIES:-}" ]; then
  [ "$results" = "${#names[@]}" ] || fail "$results test summaries for ${#names[@]} test binaries"
  [ "$passed" -gt 0 ] || fail "no test ran (do the filters match any test?)"
fi
echo "test-avx512: ok: $passed tests passed on Bochs $cpu" >&2
