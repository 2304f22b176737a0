# Sourced by tests/run.sh and deploy/demo.sh: installs the Debian 12 packages they
# need, by package name, and checks before any build that every external program
# and GStreamer element they start is there, naming the package that provides it.
#
#   source deploy/prereqs.sh
#   install_packages PKG...             # apt-get install what dpkg does not list as installed
#   preflight "PROGRAM:PACKAGE"...      # exit 1 naming every missing program's package
#   preflight_gst "ELEMENT:PACKAGE"...  # the same for GStreamer elements (gst-inspect-1.0)

# Debian keeps daemons (mosquitto, haproxy) in sbin, which a user's PATH may lack.
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

# The GStreamer elements edgecam and its tests build pipelines from, with the
# package that ships each on Debian 12.
GST_ELEMENTS=(
  videotestsrc:gstreamer1.0-plugins-base videoconvert:gstreamer1.0-plugins-base
  videoscale:gstreamer1.0-plugins-base videorate:gstreamer1.0-plugins-base
  appsrc:gstreamer1.0-plugins-base appsink:gstreamer1.0-plugins-base
  decodebin:gstreamer1.0-plugins-base textoverlay:gstreamer1.0-x
  clockoverlay:gstreamer1.0-x tee:libgstreamer1.0-0 queue:libgstreamer1.0-0
  filesrc:libgstreamer1.0-0 filesink:libgstreamer1.0-0 fakesink:libgstreamer1.0-0
  clocksync:libgstreamer1.0-0
  splitmuxsink:gstreamer1.0-plugins-good splitmuxsrc:gstreamer1.0-plugins-good
  matroskamux:gstreamer1.0-plugins-good matroskademux:gstreamer1.0-plugins-good
  mp4mux:gstreamer1.0-plugins-good qtdemux:gstreamer1.0-plugins-good
  jpegenc:gstreamer1.0-plugins-good rtspsrc:gstreamer1.0-plugins-good
  rtph264depay:gstreamer1.0-plugins-good rtph264pay:gstreamer1.0-plugins-good
  rtph265depay:gstreamer1.0-plugins-good
  h264parse:gstreamer1.0-plugins-bad h265parse:gstreamer1.0-plugins-bad
  x264enc:gstreamer1.0-plugins-ugly
  avdec_h264:gstreamer1.0-libav avdec_h265:gstreamer1.0-libav
)

_sudo() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Installs those of the named packages that dpkg does not list as installed.
install_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ "${#missing[@]}" -eq 0 ] && return 0
  echo "installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "need root or sudo to run apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  _sudo apt-get update -qq
  _sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Each argument is PROGRAM:PACKAGE; reports every missing program at once.
preflight() {
  local bad=0 pair
  for pair in "$@"; do
    if ! command -v "${pair%%:*}" >/dev/null 2>&1; then
      echo "preflight: ${pair%%:*} is missing (Debian package ${pair#*:})" >&2
      bad=1
    fi
  done
  [ "$bad" -eq 0 ] || exit 1
}

# Each argument is ELEMENT:PACKAGE; reports every missing element at once.
preflight_gst() {
  local bad=0 pair
  for pair in "$@"; do
    if ! gst-inspect-1.0 --exists "${pair%%:*}" 2>/dev/null; then
      echo "preflight: GStreamer element ${pair%%:*} is missing (Debian package ${pair#*:})" >&2
      bad=1
    fi
  done
  [ "$bad" -eq 0 ] || exit 1
}
