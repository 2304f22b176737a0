#!/usr/bin/env bash
# Runs the whole test suite on Debian 12, first installing what the tests start:
# Mosquitto (the broker), haproxy (the AWS-like ALPN front on 443), openssl
# (certificates made at test time) and GStreamer with its plugins; then the deployment checks (tests/deploy.sh:
# systemd unit, install script, Debian package). Needs a Rust toolchain (rustup) and root or sudo
# for apt-get when something is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]; }

missing=()
have mosquitto || missing+=(mosquitto)
have haproxy || missing+=(haproxy)
have openssl || missing+=(openssl)
have curl || missing+=(curl)
have python3 || missing+=(python3)
have pkg-config || missing+=(pkg-config)
have cc || missing+=(gcc)
have systemd-analyze || missing+=(systemd)
have dpkg-deb || missing+=(dpkg)
# GStreamer: headers to build, plugins the video tests run (test pattern, x264,
# Matroska, RTSP client and the test RTSP server, decoding, the clock overlay).
gst_packages=(libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstrtspserver-1.0-dev gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav
  gstreamer1.0-x)
for p in "${gst_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" ca-certificates >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain (https://rustup.rs), then run this again" >&2
  exit 1
fi

cargo build --locked --bins
./target/debug/edgecam check-config --values-only config.example.toml
# The OCR models the plate-reading tests use (from PyPI, checked by sha256; kept
# across runs).
export EDGECAM_TEST_MODELS="$PWD/target/models"
bash deploy/fetch-models.sh "$EDGECAM_TEST_MODELS"
cargo test --locked
bash tests/deploy.sh
# The optional ONNX Runtime backend of plate reading: built with its feature (only
# the plates tests), its library from PyPI (checked by sha256), compared with tract.
bash deploy/fetch-onnxruntime.sh "$EDGECAM_TEST_MODELS"
cargo test --locked --features ort --test plates onnxruntime
