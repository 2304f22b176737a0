#!/usr/bin/env bash
# Fetches the OCR models for plate reading into a models directory (default
# /var/lib/edgecam/models, or $1): the PP-OCRv4 text detector and recogniser ONNX
# files inside the PyPI package rapidocr-onnxruntime (Apache-2.0), checked against
# their sha256; third-party models are never committed to this repository. It also
# puts there edgecam's own plate recogniser (models/edgecam-plate-rec.onnx, trained
# by train/train.sh), checked against the sha256 its recipe records.
set -euo pipefail
dest="${1:-/var/lib/edgecam/models}"
here="$(cd "$(dirname "$0")/.." && pwd)"
ours="$here/models/edgecam-plate-rec.onnx"
ours_sum=$(sed -n 's/^ *"sha256": "\([0-9a-f]\{64\}\)".*/\1/p' "$here/models/edgecam-plate-rec.json")
[ -n "$ours_sum" ] || { echo "no sha256 in models/edgecam-plate-rec.json" >&2; exit 1; }
echo "$ours_sum  $ours" | sha256sum -c --quiet - || { echo "checksum mismatch for $ours" >&2; exit 1; }
mkdir -p "$dest"
if ! cmp -s "$ours" "$dest/edgecam-plate-rec.onnx"; then
  cp "$ours" "$dest/edgecam-plate-rec.onnx.part"
  mv "$dest/edgecam-plate-rec.onnx.part" "$dest/edgecam-plate-rec.onnx"
fi
version="1.4.4"
declare -A sums=(
  [ch_PP-OCRv4_det_infer.onnx]=d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9
  [ch_PP-OCRv4_rec_infer.onnx]=48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b
)
have_all=1
for f in "${!sums[@]}"; do
  if ! echo "${sums[$f]}  $dest/$f" | sha256sum -c --quiet - >/dev/null 2>&1; then have_all=0; fi
done
if [ "$have_all" = 1 ]; then echo "models in $dest are present and check out"; exit 0; fi

command -v python3 >/dev/null || { echo "python3 is needed to fetch the models" >&2; exit 1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if python3 -m pip --version >/dev/null 2>&1; then
  python3 -m pip download --quiet --no-deps -d "$work" "rapidocr-onnxruntime==$version"
else
  # No pip: the wheel straight from PyPI's simple index (PEP 503).
  url=$(python3 - "$version" <<'PY'
import re, sys, urllib.parse, urllib.request
v = sys.argv[1]
index = "https://pypi.org/simple/rapidocr-onnxruntime/"
page = urllib.request.urlopen(index).read().decode()
for href in re.findall(r'href="([^"]+)"', page):
    name = urllib.parse.urlparse(href).path.rsplit("/", 1)[-1]
    if name == f"rapidocr_onnxruntime-{v}-py3-none-any.whl":
        print(urllib.parse.urljoin(index, href.split("#")[0]))
        break
else:
    sys.exit(f"rapidocr-onnxruntime {v} not found on {index}")
PY
)
  python3 -c "import sys, urllib.request; urllib.request.urlretrieve(sys.argv[1], sys.argv[2])" "$url" "$work/rapidocr.whl"
fi
mkdir -p "$dest"
python3 - "$work" "$dest" "${!sums[@]}" <<'PY'
import glob, os, sys, zipfile
work, dest, names = sys.argv[1], sys.argv[2], sys.argv[3:]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in names:
        with z.open(f"rapidocr_onnxruntime/models/{name}") as src, open(os.path.join(dest, name + ".part"), "wb") as out:
            out.write(src.read())
PY
for f in "${!sums[@]}"; do
  echo "${sums[$f]}  $dest/$f.part" | sha256sum -c --quiet - || { echo "checksum mismatch for $f" >&2; exit 1; }
  mv "$dest/$f.part" "$dest/$f"
done
echo "models fetched into $dest"
