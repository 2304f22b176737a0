#!/usr/bin/env bash
# Cross-builds edgecam for 64-bit ARM (aarch64) without Docker, and runs the result
# under qemu to check it.
#
#   bash deploy/cross-aarch64.sh [SYSROOT]      (default SYSROOT: target/sysroot-arm64)
#
# 1. An arm64 Debian 12 sysroot made with debootstrap (first stage only: packages
#    unpacked, nothing run), with the -dev packages the build links against (libc,
#    GStreamer; EDGECAM_SYSROOT_DEV adds more, comma-separated). Installing :arm64
#    -dev packages with apt on the build machine would remove their amd64 twins;
#    unpacking them into a sysroot does not.
# 2. cargo build --release for aarch64-unknown-linux-gnu, linking with
#    aarch64-linux-gnu-gcc --sysroot, pkg-config pointed into the sysroot.
# 3. qemu-aarch64-static -L SYSROOT runs `edgecam --version`, `check-config`, a
#    real outbox round trip (`emit`, `outbox stats`) and, when the OCR models are in
#    EDGECAM_MODELS (default target/models; deploy/fetch-models.sh), `read-plates`
#    on a drawn plate with tract.
#
# EDGECAM_CROSS_PROFILE picks the cargo profile (default release; release-small
# for the smallest binary) and EDGECAM_CROSS_FEATURES the feature flags (say
# --no-default-features for the core build, README "A smaller build"); the checks
# under qemu skip what such a build leaves out.
#
# Needs root (debootstrap, apt-get for missing tools). The mirror is the build
# machine's own apt source unless DEBIAN_MIRROR is set.
set -euo pipefail
cd "$(dirname "$0")/.."
sysroot="$(realpath -m "${1:-target/sysroot-arm64}")"
target=aarch64-unknown-linux-gnu
dev_packages="libc6-dev,libgstreamer1.0-dev,libgstreamer-plugins-base1.0-dev${EDGECAM_SYSROOT_DEV:+,$EDGECAM_SYSROOT_DEV}"

missing=()
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v aarch64-linux-gnu-gcc >/dev/null || missing+=(gcc-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null || missing+=(qemu-user-static)
command -v pkg-config >/dev/null || missing+=(pkg-config)
if [ "${#missing[@]}" -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
rustup target list --installed | grep -qx "$target" || rustup target add "$target"

mirror="${DEBIAN_MIRROR:-}"
if [ -z "$mirror" ]; then
  mirror=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
fi
if [ -z "$mirror" ]; then
  mirror=$(awk '$1 == "deb" { print $2; exit }' /etc/apt/sources.list 2>/dev/null || true)
fi
[ -n "$mirror" ] || { echo "no Debian mirror found: set DEBIAN_MIRROR" >&2; exit 1; }

stamp="$sysroot/.edgecam-sysroot"
recipe="2 $dev_packages"   # bump the number when the steps below change
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$recipe" ]; then
  echo "making the arm64 sysroot in $sysroot (packages: $dev_packages)"
  rm -rf "$sysroot"
  debootstrap --arch=arm64 --variant=minbase --foreign --include="$dev_packages" bookworm "$sysroot" "$mirror"
  # The first stage unpacks only the base system; the included packages and their
  # dependencies wait in the cache: unpack them all into the sysroot.
  for deb in "$sysroot"/var/cache/apt/archives/*.deb; do
    dpkg-deb -x "$deb" "$sysroot"
  done
  # Absolute symlinks inside the sysroot must resolve inside it.
  find "$sysroot/usr/lib/aarch64-linux-gnu" -maxdepth 1 -type l -lname '/*' | while read -r link; do
    ln -sf "$sysroot$(readlink "$link")" "$link"
  done
  echo "$recipe" > "$stamp"
fi

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C link-arg=--sysroot=$sysroot"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CFLAGS_aarch64_unknown_linux_gnu="--sysroot=$sysroot"
export PKG_CONFIG_ALLOW_CROSS=1
export PKG_CONFIG_SYSROOT_DIR="$sysroot"
export PKG_CONFIG_LIBDIR="$sysroot/usr/lib/aarch64-linux-gnu/pkgconfig:$sysroot/usr/share/pkgconfig"
profile="${EDGECAM_CROSS_PROFILE:-release}"
# shellcheck disable=SC2086 # the feature flags are words
cargo build --locked --profile "$profile" ${EDGECAM_CROSS_FEATURES:-} --target "$target"
bin="target/$target/$profile/edgecam"
file "$bin" 2>/dev/null || true
ls -l "$bin"

run() { GST_REGISTRY_FORK=no qemu-aarch64-static -L "$sysroot" "$bin" "$@"; }
version=$(run --version)
echo "$version"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
sed -e "s|/var/lib/edgecam|$work/state|" config.example.toml > "$work/edgecam.toml"
if ! grep -q "uploads" <<<"$version"; then
  # A build without uploads refuses `upload.enabled = true` (the example's).
  sed -i '/^\[upload\]$/,/^enabled = true$/ s/^enabled = true$/enabled = false/' "$work/edgecam.toml"
fi
run check-config --values-only "$work/edgecam.toml"
run emit --config "$work/edgecam.toml" --count 100 --payload '{"probe":true}'
stats=$(run outbox stats --config "$work/edgecam.toml")
grep -q "depth            100 events" <<<"$stats" || { echo "$stats"; echo "outbox round trip failed" >&2; exit 1; }
checked="--version, check-config, outbox round trip"
models="${EDGECAM_MODELS:-target/models}"
if [ -f "$models/ch_PP-OCRv4_det_infer.onnx" ] && grep -q "analytics" <<<"$version"; then
  gst-launch-1.0 -q videotestsrc pattern=white num-buffers=1 ! video/x-raw,width=800,height=450 \
    ! textoverlay text=ABC1234 "font-desc=Sans Bold 60" color=0xff101010 shaded-background=false \
    ! videoconvert ! jpegenc ! filesink location="$work/plate.jpg"
  read=$(run read-plates --json --models "$models" "$work/plate.jpg")
  grep -q '"text":"ABC1234"' <<<"$read" || { echo "$read"; echo "plate reading failed" >&2; exit 1; }
  checked="$checked, read-plates ($(sed -n 's/.*"ms":\([0-9]*\).*/\1/p' <<<"$read") ms under qemu)"
fi
echo "aarch64 build checked under qemu: $checked"
