#!/usr/bin/env bash
# Removes edgecam from a device: stops and disables the service, removes the binary,
# unit and docs. Keeps configuration, certificates, state (the outbox) and the
# service user unless --purge is given.
#
#   deploy/uninstall.sh [--purge] [--root DIR]
set -euo pipefail
purge=0
root=""
while [ $# -gt 0 ]; do
  case "$1" in
    --purge) purge=1; shift ;;
    --root) root="$(realpath -m "$2")"; shift 2 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
done
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl disable --now edgecam.service 2>/dev/null || true
fi
rm -f "$root/usr/bin/edgecam" "$root/lib/systemd/system/edgecam.service"
rm -rf "$root/usr/share/doc/edgecam"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
fi
if [ "$purge" -eq 1 ]; then
  rm -rf "$root/etc/edgecam" "$root/var/lib/edgecam" "$root/var/log/edgecam"
  if [ -z "$root" ] && getent passwd edgecam >/dev/null; then
    userdel edgecam 2>/dev/null || true
  fi
  echo "edgecam removed, with its configuration, certificates and state"
else
  echo "edgecam removed; /etc/edgecam and /var/lib/edgecam kept (--purge removes them)"
fi
