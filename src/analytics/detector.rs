//! Object detection on one image: persons and vehicles (any of the 80 COCO
//! classes) with NanoDet-m at 416x416 through tract. `deploy/fetch-detector.sh`
//! fetches and converts the model (`nanodet-m-416.onnx`).
//!
//! The model: input 1x3x416x416, the image squashed to the square, BGR,
//! normalised with NanoDet's means and deviations; for each stride (8, 16, 32) a
//! score per class for every grid cell (already through a sigmoid) and, per cell,
//! the distances from the cell's centre (at (i + 0.5) x stride) to the box's four
//! sides as a distribution over 11 bins (GFL: softmax, expectation, x stride).
//! Pure apart from [`Detector::detect`]'s inference (tract, or ONNX Runtime with
//! the `ort` feature): preprocessing, decoding and non-maximum suppression are
//! unit-tested.

use std::path::{Path, PathBuf};

use super::inference::{load_model, Backend, Inference, LoadError, Outputs};
use super::raster::View;

/// The model file in the models directory.
pub const MODEL_FILE: &str = "nanodet-m-416.onnx";
/// The model's square input side.
pub const SIZE: usize = 416;
const STRIDES: [usize; 3] = [8, 16, 32];
/// Distance bins per side (GFL's reg_max + 1).
const BINS: usize = 11;
const MEAN_BGR: [f32; 3] = [103.53, 116.28, 123.675];
const STD_BGR: [f32; 3] = [57.375, 57.12, 58.395];
/// Boxes of one class overlapping more than this are one object.
pub const NMS_IOU: f32 = 0.6;

/// The COCO classes, in the model's order.
pub const CLASSES: [&str; 80] = [
    "person",
    "bicycle",
    "car",
    "motorcycle",
    "airplane",
    "bus",
    "train",
    "truck",
    "boat",
    "traffic light",
    "fire hydrant",
    "stop sign",
    "parking meter",
    "bench",
    "bird",
    "cat",
    "dog",
    "horse",
    "sheep",
    "cow",
    "elephant",
    "bear",
    "zebra",
    "giraffe",
    "backpack",
    "umbrella",
    "handbag",
    "tie",
    "suitcase",
    "frisbee",
    "skis",
    "snowboard",
    "sports ball",
    "kite",
    "baseball bat",
    "baseball glove",
    "skateboard",
    "surfboard",
    "tennis racket",
    "bottle",
    "wine glass",
    "cup",
    "fork",
    "knife",
    "spoon",
    "bowl",
    "banana",
    "apple",
    "sandwich",
    "orange",
    "broccoli",
    "carrot",
    "hot dog",
    "pizza",
    "donut",
    "cake",
    "chair",
    "couch",
    "potted plant",
    "bed",
    "dining table",
    "toilet",
    "tv",
    "laptop",
    "mouse",
    "remote",
    "keyboard",
    "cell phone",
    "microwave",
    "oven",
    "toaster",
    "sink",
    "refrigerator",
    "book",
    "clock",
    "vase",
    "scissors",
    "teddy bear",
    "hair drier",
    "toothbrush",
];

#[derive(Debug, thiserror::Error)]
pub enum DetectorError {
    #[error("detector model {path}: {reason} (deploy/fetch-detector.sh fetches it)")]
    Model { path: PathBuf, reason: String },
    /// The ONNX Runtime library is missing or cannot be loaded (the message says
    /// how to fetch it).
    #[error("detector: {0}")]
    Runtime(String),
    #[error("detector inference failed: {0}")]
    Inference(String),
}

/// One object found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Detection {
    /// Its COCO class name.
    pub class: &'static str,
    /// Sigmoid score, 0 to 1.
    pub score: f32,
    /// Left, top, right, bottom in the image's pixels.
    #[serde(rename = "box")]
    pub bbox: [f32; 4],
}

/// The detector: the model planned for one input size on one backend.
pub struct Detector {
    model: Box<dyn Inference>,
    /// Input width and height.
    size: [usize; 2],
}

impl Detector {
    /// Loads and checks the model for a `[width, height]` input (multiples of
    /// 32) on `backend`: it must give the six outputs described in the module
    /// header.
    pub fn load_sized(
        path: &Path,
        size: [usize; 2],
        backend: &Backend,
    ) -> Result<Self, DetectorError> {
        let err = |reason: String| DetectorError::Model {
            path: path.to_owned(),
            reason,
        };
        if size
            .iter()
            .any(|s| *s % 32 != 0 || !(64..=2048).contains(s))
        {
            return Err(err(format!(
                "input size {size:?}: multiples of 32 from 64 to 2048 wanted"
            )));
        }
        let [w, h] = size;
        let model = load_model(backend, path, [1, 3, h, w]).map_err(|e| match e {
            LoadError::Model { reason, .. } => err(reason),
            e @ LoadError::Runtime { .. } => DetectorError::Runtime(e.to_string()),
        })?;
        let detector = Self { model, size };
        // A blank image checks the outputs' shapes once, at load.
        let outputs = detector
            .infer(vec![0.0; 3 * w * h])
            .map_err(|e| err(e.to_string()))?;
        Heads::find(&outputs, size).map_err(err)?;
        Ok(detector)
    }

    /// The input size, `[width, height]`.
    pub fn size(&self) -> [usize; 2] {
        self.size
    }

    fn infer(&self, input: Vec<f32>) -> Result<Outputs, DetectorError> {
        self.model.run_all(input).map_err(DetectorError::Inference)
    }

    /// Objects in `img` scoring at least `min_score`, best first, after
    /// non-maximum suppression per class.
    pub fn detect(&self, img: View<'_>, min_score: f32) -> Result<Vec<Detection>, DetectorError> {
        let [w, h] = self.size;
        let outputs = self.infer(input(img, self.size))?;
        let heads = Heads::find(&outputs, self.size).map_err(DetectorError::Inference)?;
        let found = heads.decode(
            min_score,
            self.size,
            img.width as f32 / w as f32,
            img.height as f32 / h as f32,
        );
        Ok(nms(found, NMS_IOU))
    }
}

/// The model's input: `img` squashed to `[width, height]` (bilinear, sampled as
/// `View::sample` samples), BGR, normalised, NCHW. Where each column and row
/// samples is worked out once, not per pixel: about 4 ms less a frame
/// (docs/detector.md).
pub fn input(img: View<'_>, [w, h]: [usize; 2]) -> Vec<f32> {
    let plane = w * h;
    let mut t = vec![0f32; 3 * plane];
    let (iw, ih) = (img.width as usize, img.height as usize);
    if iw == 0 || ih == 0 {
        return t;
    }
    let (xs, ys) = (taps(w, iw), taps(h, ih));
    let scale = STD_BGR.map(|s| 1.0 / s);
    for (y, &(y0, y1, fy)) in ys.iter().enumerate() {
        let (above, below) = (&img.rgb[y0 * iw * 3..], &img.rgb[y1 * iw * 3..]);
        for (x, &(x0, x1, fx)) in xs.iter().enumerate() {
            let i = y * w + x;
            for k in 0..3 {
                let top = above[x0 * 3 + k] as f32 * (1.0 - fx) + above[x1 * 3 + k] as f32 * fx;
                let bottom = below[x0 * 3 + k] as f32 * (1.0 - fx) + below[x1 * 3 + k] as f32 * fx;
                let v = top * (1.0 - fy) + bottom * fy;
                // RGB in, BGR planes out.
                let c = 2 - k;
                t[c * plane + i] = (v - MEAN_BGR[c]) * scale[c];
            }
        }
    }
    t
}

/// For each of `n` output pixels along one axis of a picture `len` pixels long:
/// the two pixels it samples between and the weight of the second.
fn taps(n: usize, len: usize) -> Vec<(usize, usize, f32)> {
    let step = len as f32 / n as f32;
    (0..n)
        .map(|i| {
            let p = ((i as f32 + 0.5) * step - 0.5).max(0.0);
            let p0 = p.floor();
            let a = p0 as usize;
            (a.min(len - 1), (a + 1).min(len - 1), p - p0)
        })
        .collect()
}

/// The outputs, by stride: class scores (cells x 80) and distance bins (cells x 44).
struct Heads<'a> {
    scores: [&'a [f32]; 3],
    distances: [&'a [f32]; 3],
}

impl<'a> Heads<'a> {
    /// Finds each stride's two outputs by their shapes (their order and names
    /// depend on the conversion).
    fn find(outputs: &'a [(Vec<usize>, Vec<f32>)], [w, h]: [usize; 2]) -> Result<Self, String> {
        let mut scores = [&[][..]; 3];
        let mut distances = [&[][..]; 3];
        for (k, stride) in STRIDES.iter().enumerate() {
            let cells = (w / stride) * (h / stride);
            let with = |width: usize| {
                outputs
                    .iter()
                    .find(|(shape, _)| shape[..] == [1, cells, width])
                    .map(|(_, v)| &v[..])
                    .ok_or_else(|| {
                        let shapes: Vec<&Vec<usize>> = outputs.iter().map(|(s, _)| s).collect();
                        format!("no output of shape [1, {cells}, {width}] (outputs: {shapes:?})")
                    })
            };
            scores[k] = with(CLASSES.len())?;
            distances[k] = with(4 * BINS)?;
        }
        Ok(Self { scores, distances })
    }

    /// Every cell and class scoring at least `min_score`, as boxes scaled by
    /// (`sx`, `sy`) from the model's input to the image.
    fn decode(&self, min_score: f32, [w, _]: [usize; 2], sx: f32, sy: f32) -> Vec<Detection> {
        let mut out = Vec::new();
        for (k, stride) in STRIDES.iter().enumerate() {
            let side = w / stride;
            let s = *stride as f32;
            for (cell, scores) in self.scores[k].chunks_exact(CLASSES.len()).enumerate() {
                for (class, &score) in scores.iter().enumerate() {
                    if score < min_score {
                        continue;
                    }
                    let (cx, cy) = (
                        ((cell % side) as f32 + 0.5) * s,
                        ((cell / side) as f32 + 0.5) * s,
                    );
                    let bins = &self.distances[k][cell * 4 * BINS..(cell + 1) * 4 * BINS];
                    let [l, t, r, b] = [0, 1, 2, 3]
                        .map(|side| expected_bin(&bins[side * BINS..(side + 1) * BINS]) * s);
                    out.push(Detection {
                        class: CLASSES[class],
                        score,
                        bbox: [(cx - l) * sx, (cy - t) * sy, (cx + r) * sx, (cy + b) * sy],
                    });
                }
            }
        }
        out
    }
}

/// The expected bin of a distribution given as logits (softmax, then the mean).
fn expected_bin(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let (mut sum, mut weighted) = (0f32, 0f32);
    for (i, &l) in logits.iter().enumerate() {
        let e = (l - max).exp();
        sum += e;
        weighted += e * i as f32;
    }
    weighted / sum
}

/// Intersection over union of two boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let w = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let h = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = w * h;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Best first; a box overlapping a better one of its class by more than
/// `max_iou` is dropped.
pub fn nms(found: Vec<Detection>, max_iou: f32) -> Vec<Detection> {
    nms_by(found, max_iou, |a, b| a == b)
}

/// Best first; a box overlapping a better one of a class that `same` pairs with
/// its own by more than `max_iou` is dropped.
pub fn nms_by(
    mut found: Vec<Detection>,
    max_iou: f32,
    same: impl Fn(&str, &str) -> bool,
) -> Vec<Detection> {
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::new();
    for d in found {
        if !kept
            .iter()
            .any(|k| same(k.class, d.class) && iou(&k.bbox, &d.bbox) > max_iou)
        {
            kept.push(d);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(class: &'static str, score: f32, bbox: [f32; 4]) -> Detection {
        Detection { class, score, bbox }
    }

    #[test]
    fn iou_of_equal_disjoint_and_half_overlapping_boxes() {
        let a = [0.0, 0.0, 10.0, 10.0];
        assert_eq!(iou(&a, &a), 1.0);
        assert_eq!(iou(&a, &[20.0, 20.0, 30.0, 30.0]), 0.0);
        assert!((iou(&a, &[5.0, 0.0, 15.0, 10.0]) - 1.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn nms_keeps_the_best_of_overlapping_boxes_of_one_class_only() {
        let kept = nms(
            vec![
                det("person", 0.5, [0.0, 0.0, 10.0, 20.0]),
                det("person", 0.9, [1.0, 0.0, 11.0, 20.0]),
                det("car", 0.4, [1.0, 0.0, 11.0, 20.0]),
                det("person", 0.6, [50.0, 0.0, 60.0, 20.0]),
            ],
            NMS_IOU,
        );
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.6, 0.4]);
    }

    #[test]
    fn a_peaked_distribution_gives_its_bin() {
        let mut logits = [0f32; BINS];
        logits[3] = 50.0;
        assert!((expected_bin(&logits) - 3.0).abs() < 1e-4);
        // Two equal peaks: the middle.
        logits[5] = 50.0;
        assert!((expected_bin(&logits) - 4.0).abs() < 1e-4);
    }

    /// A non-square input (rows are `width / stride` cells long).
    const WH: [usize; 2] = [416, 320];

    /// Outputs for a [`WH`] input where only `cell` of stride 16 scores `score`
    /// for `class`, with sides at `bins` (left, top, right, bottom) bins from its
    /// centre.
    fn outputs(
        cell: usize,
        class: usize,
        score: f32,
        bins: [usize; 4],
    ) -> Vec<(Vec<usize>, Vec<f32>)> {
        let mut out = Vec::new();
        for stride in STRIDES {
            let cells = (WH[0] / stride) * (WH[1] / stride);
            let mut scores = vec![0.01; cells * CLASSES.len()];
            let mut dist = vec![0.0; cells * 4 * BINS];
            if stride == 16 {
                scores[cell * CLASSES.len() + class] = score;
                for (side, bin) in bins.iter().enumerate() {
                    dist[cell * 4 * BINS + side * BINS + bin] = 50.0;
                }
            }
            // Distances first: the shapes, not the order, say which is which.
            out.push((vec![1, cells, 4 * BINS], dist));
            out.push((vec![1, cells, CLASSES.len()], scores));
        }
        out
    }

    #[test]
    fn a_cell_decodes_to_a_box_around_its_centre_scaled_to_the_image() {
        // Stride 16: 26 cells a row; cell 2 * 26 + 3 has its centre at (56, 40).
        let outs = outputs(2 * 26 + 3, 2, 0.8, [1, 2, 3, 4]);
        let heads = Heads::find(&outs, WH).unwrap();
        let found = heads.decode(0.5, WH, 2.0, 1.0);
        assert_eq!(found.len(), 1);
        let d = &found[0];
        assert_eq!(d.class, "car");
        assert_eq!(d.score, 0.8);
        let want = [
            (56.0 - 16.0) * 2.0,
            40.0 - 32.0,
            (56.0 + 48.0) * 2.0,
            40.0 + 64.0,
        ];
        for (got, want) in d.bbox.iter().zip(want) {
            assert!((got - want).abs() < 1e-2, "{:?} vs {want:?}", d.bbox);
        }
        // Below the threshold: nothing.
        assert!(heads.decode(0.9, WH, 1.0, 1.0).is_empty());
    }

    #[test]
    fn outputs_of_the_wrong_shape_are_named() {
        let mut outs = outputs(0, 0, 0.9, [1, 1, 1, 1]);
        outs.remove(0);
        let err = Heads::find(&outs, WH).err().unwrap();
        assert!(err.contains("[1, 2080, 44]"), "{err}");
        // Outputs for another input size do not fit.
        let outs = outputs(0, 0, 0.9, [1, 1, 1, 1]);
        assert!(Heads::find(&outs, [SIZE, SIZE]).is_err());
    }

    #[test]
    fn the_input_samples_each_pixel_as_the_bilinear_sampler_does() {
        // A picture with no two pixels alike, shrunk and enlarged.
        let (iw, ih) = (37u32, 23u32);
        let rgb: Vec<u8> = (0..iw * ih * 3).map(|i| (i * 97 % 251) as u8).collect();
        let img = View {
            width: iw,
            height: ih,
            rgb: &rgb,
        };
        for [w, h] in [[16, 8], [64, 32], [37, 23]] {
            let t = input(img, [w, h]);
            let (sx, sy) = (iw as f32 / w as f32, ih as f32 / h as f32);
            for y in 0..h {
                for x in 0..w {
                    let [r, g, b] =
                        img.sample((x as f32 + 0.5) * sx - 0.5, (y as f32 + 0.5) * sy - 0.5);
                    for (c, v) in [b, g, r].into_iter().enumerate() {
                        let want = (v - MEAN_BGR[c]) / STD_BGR[c];
                        let got = t[c * w * h + y * w + x];
                        assert!(
                            (got - want).abs() < 1e-5,
                            "{w}x{h} ({x}, {y}) {c}: {got} {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_input_is_bgr_normalised_and_planar() {
        let rgb = [[200u8, 100, 50]; 4].concat();
        let img = View {
            width: 2,
            height: 2,
            rgb: &rgb,
        };
        let t = input(img, [SIZE, SIZE]);
        assert_eq!(t.len(), 3 * SIZE * SIZE);
        let plane = SIZE * SIZE;
        assert!((t[0] - (50.0 - MEAN_BGR[0]) / STD_BGR[0]).abs() < 1e-4);
        assert!((t[plane] - (100.0 - MEAN_BGR[1]) / STD_BGR[1]).abs() < 1e-4);
        assert!((t[2 * plane + 7] - (200.0 - MEAN_BGR[2]) / STD_BGR[2]).abs() < 1e-4);
    }
}
