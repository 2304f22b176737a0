#!/usr/bin/env bash
# Fetches the ONNX Runtime shared library for the optional `onnxruntime` plate
# reading backend (a build with `--features ort`) into a directory (default
# /var/lib/edgecam/models, or $1) as libonnxruntime.so, for the architecture $2
# (x86_64 or aarch64; default: this machine's). It comes out of the PyPI wheel
# onnxruntime 1.22.0 (MIT), the version the `ort` crate 2.0.0-rc.10 expects, and is
# checked against its sha256.
set -euo pipefail
dest="${1:-/var/lib/edgecam/models}"
arch="${2:-$(uname -m)}"
version="1.22.0"
declare -A sums=(
  [x86_64]=7520bc1b4f649ee8fa956442a66ded303e8fd3b465b0159b7e893bdc87df4e38
  [aarch64]=50a440a8a15515eef4f48ae6471c361032cc162769045ebf662099396642259c
)
sum="${sums[$arch]:-}"
[ -n "$sum" ] || { echo "no onnxruntime library known for $arch (x86_64 or aarch64)" >&2; exit 1; }
if echo "$sum  $dest/libonnxruntime.so" | sha256sum -c --quiet - >/dev/null 2>&1; then
  echo "libonnxruntime.so in $dest is present and checks out"; exit 0
fi
command -v python3 >/dev/null || { echo "python3 is needed to fetch the library" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The library inside does not depend on the Python version: take the cp311 wheel.
wheel="onnxruntime-$version-cp311-cp311-manylinux_2_27_$arch.manylinux_2_28_$arch.whl"
python3 - "$wheel" "$work/ort.whl" <<'PY'
import re, sys, urllib.parse, urllib.request
wanted, out = sys.argv[1], sys.argv[2]
index = "https://pypi.org/simple/onnxruntime/"
page = urllib.request.urlopen(index).read().decode()
for href in re.findall(r'href="([^"]+)"', page):
    if urllib.parse.urlparse(href).path.rsplit("/", 1)[-1] == wanted:
        urllib.request.urlretrieve(urllib.parse.urljoin(index, href.split("#")[0]), out)
        break
else:
    sys.exit(f"{wanted} not found on {index}")
PY
mkdir -p "$dest"
python3 - "$work/ort.whl" "$dest/libonnxruntime.so.part" "$version" <<'PY'
import sys, zipfile
wheel, out, version = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(f"onnxruntime/capi/libonnxruntime.so.{version}") as src, open(out, "wb") as dst:
    dst.write(src.read())
PY
echo "$sum  $dest/libonnxruntime.so.part" | sha256sum -c --quiet - || { echo "checksum mismatch for libonnxruntime.so" >&2; exit 1; }
mv "$dest/libonnxruntime.so.part" "$dest/libonnxruntime.so"
echo "onnxruntime $version ($arch) fetched into $dest/libonnxruntime.so"
