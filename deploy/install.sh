#!/usr/bin/env bash
# Installs edgecam on a device, idempotently: binary, unit, configuration, service
# user, directories, certificates; then enables and starts the service.
#
#   deploy/install.sh [--binary PATH] [--config FILE] [--certs DIR] [--no-start] [--root DIR]
#
#   --binary   the edgecam binary for this device (default: target/release/edgecam)
#   --config   edgecam.toml to install (default: keep the installed one, or install
#              config.example.toml to edit)
#   --certs    directory with the CA, device certificate and private key; copied to
#              /etc/edgecam/certs/, 0600, owned by the service user
#   --no-start enable the service but do not (re)start it
#   --root     stage into this directory instead of / (no user, no systemd); for tests
#              and image builders
#
# Run again to upgrade: the binary and unit are replaced, the configuration is kept
# unless --config is given, and a running service is restarted.
set -euo pipefail
cd "$(dirname "$0")/.."

binary="target/release/edgecam"
config=""
certs=""
start=1
root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) binary="$2"; shift 2 ;;
    --config) config="$2"; shift 2 ;;
    --certs) certs="$2"; shift 2 ;;
    --no-start) start=0; shift ;;
    --root) root="$(realpath -m "$2")"; shift 2 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done

[ -x "$binary" ] || { echo "no executable at $binary (build with: cargo build --release)" >&2; exit 1; }
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
  echo "run as root (or use --root DIR to stage)" >&2; exit 1
fi
if [ -n "$config" ]; then
  "$binary" check-config --values-only "$config" >/dev/null || { echo "refusing an invalid --config" >&2; exit 1; }
fi

user=edgecam
live=0
[ -z "$root" ] && live=1

if [ "$live" -eq 1 ] && ! getent passwd "$user" >/dev/null; then
  useradd --system --user-group --no-create-home --home-dir /var/lib/edgecam \
    --shell /usr/sbin/nologin "$user"
  echo "created system user $user"
fi
owner() { [ "$live" -eq 1 ] && chown "$@" || true; }

install -D -m 0755 "$binary" "$root/usr/bin/edgecam"
install -D -m 0644 systemd/edgecam.service "$root/lib/systemd/system/edgecam.service"
install -D -m 0644 config.example.toml "$root/usr/share/doc/edgecam/config.example.toml"
install -d -m 0750 "$root/etc/edgecam"
install -d -m 0750 "$root/etc/edgecam/certs"
owner root:"$user" "$root/etc/edgecam"
owner "$user:$user" "$root/etc/edgecam/certs"

conf="$root/etc/edgecam/edgecam.toml"
if [ -n "$config" ]; then
  install -m 0640 "$config" "$conf"
elif [ ! -e "$conf" ]; then
  install -m 0640 config.example.toml "$conf"
  echo "installed the example configuration at /etc/edgecam/edgecam.toml: edit [identity] before starting"
  start=0
fi
owner root:"$user" "$conf"

if [ -n "$certs" ]; then
  for f in "$certs"/*; do
    [ -f "$f" ] || continue
    install -m 0600 "$f" "$root/etc/edgecam/certs/$(basename "$f")"
    owner "$user:$user" "$root/etc/edgecam/certs/$(basename "$f")"
  done
fi

if [ "$live" -eq 0 ]; then
  echo "staged into $root"
  exit 0
fi
if [ ! -d /run/systemd/system ]; then
  echo "systemd is not running: installed, not enabled"
  exit 0
fi
systemctl daemon-reload
systemctl enable edgecam.service >/dev/null
if [ "$start" -eq 1 ]; then
  if /usr/bin/edgecam check-config "$conf"; then
    systemctl restart edgecam.service
    echo "edgecam started: journalctl -u edgecam -f"
  else
    echo "configuration or certificates not ready: fix them, then systemctl start edgecam" >&2
  fi
fi
