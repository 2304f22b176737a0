#!/usr/bin/env bash
# edgecam on built-in defaults, no cloud account: a local AWS-like endpoint (haproxy
# requiring a client certificate and ALPN x-amzn-mqtt-ca, in front of Mosquitto),
# edgecam with its synthetic event source, and a subscriber printing what arrives.
#
#   bash deploy/demo.sh            # runs for 20 s
#   DEMO_SECONDS=60 bash deploy/demo.sh
#
# Installs, by package name, what it needs and a fresh Debian 12 lacks (mosquitto,
# mosquitto-clients, haproxy, openssl, a C compiler, the GStreamer headers edgecam
# builds against; deploy/prereqs.sh) with apt-get (root or sudo). Needs a Rust
# toolchain (rustup). Everything else lives in a temp dir that is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${DEMO_SECONDS:-20}"

source deploy/prereqs.sh
install_packages gcc libc6-dev pkg-config libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev \
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good mosquitto mosquitto-clients haproxy openssl git
preflight cc:gcc pkg-config:pkg-config mosquitto:mosquitto mosquitto_sub:mosquitto-clients \
  haproxy:haproxy openssl:openssl
command -v cargo >/dev/null || { echo "cargo not found: install Rust (https://rustup.rs)" >&2; exit 1; }

echo "building edgecam..."
cargo build --quiet --bin edgecam
bin="$PWD/target/debug/edgecam"

work="$(mktemp -d -t edgecam-demo-XXXXXX)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
  done
}
wait_port() {
  for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return; sleep 0.1; done
  echo "port $1 did not open" >&2; exit 1
}

cd "$work"
camera="demo-cam"
ec="-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
openssl req -x509 $ec -keyout ca.key -out ca.pem -days 1 -subj /CN=edgecam-demo-ca 2>/dev/null
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n' > server.ext
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' > client.ext
for pair in server:localhost client:$camera; do
  name="${pair%%:*}"; cn="${pair#*:}"
  openssl req $ec -keyout "$name.key" -out "$name.csr" -subj "/CN=$cn" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -out "$name.pem" -days 1 -extfile "$name.ext" 2>/dev/null
done
cat server.pem server.key > server-bundle.pem

mqtt_port="$(free_port)"
front_port="$(free_port)"
cat > mosquitto.conf <<CONF
user $(id -un)
listener $mqtt_port 127.0.0.1
allow_anonymous true
CONF
cat > haproxy.cfg <<CONF
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend iot
  bind 127.0.0.1:$front_port ssl crt $work/server-bundle.pem ca-file $work/ca.pem verify required alpn x-amzn-mqtt-ca
  tcp-request session reject unless { ssl_fc_alpn -m str x-amzn-mqtt-ca }
  default_backend mosquitto
backend mosquitto
  server m 127.0.0.1:$mqtt_port
CONF
mosquitto -c mosquitto.conf >mosquitto.log 2>&1 & pids+=($!)
wait_port "$mqtt_port"
haproxy -db -f haproxy.cfg >haproxy.log 2>&1 & pids+=($!)
wait_port "$front_port"

# Identity and the synthetic source; every other value is a built-in default
# (ALPN x-amzn-mqtt-ca, AWS IoT Core's ceilings, a durable outbox).
cat > edgecam.toml <<CONF
[identity]
camera_id = "$camera"
broker_host = "127.0.0.1"
broker_port = $front_port
ca_file = "$work/ca.pem"
cert_file = "$work/client.pem"
key_file = "$work/client.key"
[storage]
state_dir = "$work/state"
[health]
metrics_interval = "10s"
[synthetic]
enabled = true
rate_per_sec = 2.0
[log]
target = "stderr"
CONF
"$bin" check-config edgecam.toml

echo "subscribed to $camera/# on the broker; edgecam publishes through the TLS+ALPN front on port $front_port"
echo "---"
mosquitto_sub -p "$mqtt_port" -h 127.0.0.1 -t "$camera/#" -v & pids+=($!)
"$bin" run --config edgecam.toml 2> edgecam.log & edgecam_pid=$!
pids+=("$edgecam_pid")
sleep "$seconds"
kill -TERM "$edgecam_pid"
wait "$edgecam_pid" || true
sleep 0.5
echo "---"
echo "edgecam log (last lines):"
tail -n 5 edgecam.log
"$bin" outbox stats --config edgecam.toml
