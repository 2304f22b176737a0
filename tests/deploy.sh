#!/usr/bin/env bash
# Deployment checks: the systemd unit (verify, and a hardening exposure of at most
# 2.0), the install script into a staging root, and the Debian package (built with
# cargo-deb, its contents and maintainer scripts checked, unpacked into a scratch
# root and run). Called by tests/run.sh after the cargo tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PATH:/usr/sbin:/sbin"
bin="$PWD/target/debug/edgecam"
work="$(mktemp -d -t edgecam-deploy-XXXXXX)"
trap 'rm -rf "$work"' EXIT
fail() { echo "deploy check failed: $*" >&2; exit 1; }
passed=0

# 1. The unit.
if command -v systemd-analyze >/dev/null; then
  sed "s|/usr/bin/edgecam|$bin|g" systemd/edgecam.service > "$work/edgecam.service"
  systemd-analyze verify "$work/edgecam.service" || fail "systemd-analyze verify"
  score=$(systemd-analyze security --offline=true "$work/edgecam.service" 2>/dev/null \
    | sed -n 's/.*Overall exposure level for edgecam.service: \([0-9.]*\).*/\1/p')
  [ -n "$score" ] || fail "no exposure score from systemd-analyze security"
  awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "exposure $score > 2.0"
  echo "systemd unit: verified, exposure $score"
  passed=$((passed + 1))
else
  echo "systemd-analyze not available: unit checks skipped"
fi

# 2. The install script, twice (idempotent), into a staging root; then uninstall.
stage="$work/stage"
mkdir -p "$work/certs"
printf 'dummy\n' > "$work/certs/private.pem.key"
bash deploy/install.sh --binary "$bin" --root "$stage" --certs "$work/certs" >/dev/null
bash deploy/install.sh --binary "$bin" --root "$stage" --certs "$work/certs" >/dev/null
for f in usr/bin/edgecam lib/systemd/system/edgecam.service etc/edgecam/edgecam.toml; do
  [ -f "$stage/$f" ] || fail "install.sh did not install $f"
done
[ "$(stat -c %a "$stage/etc/edgecam/certs/private.pem.key")" = 600 ] || fail "key is not 0600"
[ "$(stat -c %a "$stage/etc/edgecam/edgecam.toml")" = 640 ] || fail "config is not 0640"
"$stage/usr/bin/edgecam" check-config --values-only "$stage/etc/edgecam/edgecam.toml" >/dev/null \
  || fail "installed configuration does not validate"
bash deploy/uninstall.sh --root "$stage" --purge >/dev/null
[ ! -e "$stage/usr/bin/edgecam" ] && [ ! -e "$stage/etc/edgecam" ] || fail "uninstall --purge left files"
echo "install.sh / uninstall.sh: staged, idempotent, modes right, removed"
passed=$((passed + 1))

# 3. The Debian package.
if ! command -v cargo-deb >/dev/null; then
  echo "installing cargo-deb"
  cargo install cargo-deb --locked --quiet
fi
# The package is what is checked here, not the code's speed: it is built without
# the release profile's whole-program (fat) LTO, which alone takes over ten minutes
# on two cores. `cargo deb` without these variables builds the package to ship.
deb=$(CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
  cargo deb --locked 2>/dev/null | tail -n 1)
[ -f "$deb" ] || fail "cargo deb produced no package"
contents=$(dpkg-deb -c "$deb")
for f in ./usr/bin/edgecam ./etc/edgecam/edgecam.toml ./usr/lib/systemd/system/edgecam.service ./usr/share/doc/edgecam/remote-config.md; do
  grep -q " $f\$" <<<"$contents" || fail "package lacks $f"
done
dpkg-deb -I "$deb" conffiles | grep -qx /etc/edgecam/edgecam.toml || fail "edgecam.toml is not a conffile"
dpkg-deb -I "$deb" postinst | grep -q "adduser --system" || fail "postinst does not create the user"
dpkg-deb -I "$deb" postinst | grep -q "deb-systemd-helper" || fail "postinst does not enable the unit"
scratch="$work/scratch"
dpkg-deb -x "$deb" "$scratch"
"$scratch/usr/bin/edgecam" --version | grep -q "release build" || fail "packaged binary is not a release build"
"$scratch/usr/bin/edgecam" check-config --values-only "$scratch/etc/edgecam/edgecam.toml" >/dev/null \
  || fail "packaged configuration does not validate"
echo "debian package: $(basename "$deb"), $(du -h "$deb" | cut -f1), contents and scripts checked"
passed=$((passed + 1))

echo "deploy: $passed passed, 0 failed"
