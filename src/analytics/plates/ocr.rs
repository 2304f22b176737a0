//! The text detector's and recogniser's inputs and outputs (PP-OCRv4, as RapidOCR
//! runs them), without the inference itself: letterboxing and normalising, boxes
//! from the detector's probability map, crops for the recogniser, CTC decoding.

use crate::analytics::people::{components, dilate};

/// An RGB image.
#[derive(Debug, Clone)]
pub struct Image {
    pub width: u32,
    pub height: u32,
    /// Packed RGB.
    pub rgb: Vec<u8>,
}

impl Image {
    fn px(&self, x: u32, y: u32) -> [u8; 3] {
        let i = ((y.min(self.height - 1) * self.width + x.min(self.width - 1)) * 3) as usize;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// Bilinear sample at (x, y) in pixels.
    fn sample(&self, x: f32, y: f32) -> [f32; 3] {
        let (x, y) = (x.max(0.0), y.max(0.0));
        let (x0, y0) = (x.floor() as u32, y.floor() as u32);
        let (fx, fy) = (x - x0 as f32, y - y0 as f32);
        let (a, b, c, d) = (
            self.px(x0, y0),
            self.px(x0 + 1, y0),
            self.px(x0, y0 + 1),
            self.px(x0 + 1, y0 + 1),
        );
        let mut out = [0f32; 3];
        for k in 0..3 {
            let top = a[k] as f32 * (1.0 - fx) + b[k] as f32 * fx;
            let bottom = c[k] as f32 * (1.0 - fx) + d[k] as f32 * fx;
            out[k] = top * (1.0 - fy) + bottom * fy;
        }
        out
    }
}

/// A box in image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    /// Mean detector probability inside.
    pub score: f32,
}

/// Writes the BGR channels of a pixel, normalised to [-1, 1], into a CHW tensor.
fn put(t: &mut [f32], plane: usize, i: usize, rgb: [f32; 3]) {
    // PP-OCR models take BGR, (x / 255 - 0.5) / 0.5.
    t[i] = rgb[2] / 127.5 - 1.0;
    t[plane + i] = rgb[1] / 127.5 - 1.0;
    t[2 * plane + i] = rgb[0] / 127.5 - 1.0;
}

/// The detector input: `img` scaled to fit a `cw` x `ch` canvas (aspect kept, the
/// rest left at 0, mid-grey after normalisation), CHW. Returns it and the scale.
pub fn detector_input(img: &Image, cw: usize, ch: usize) -> (Vec<f32>, f32) {
    let scale = (cw as f32 / img.width as f32).min(ch as f32 / img.height as f32);
    let (w, h) = (
        ((img.width as f32 * scale) as usize).min(cw),
        ((img.height as f32 * scale) as usize).min(ch),
    );
    let plane = cw * ch;
    let mut t = vec![0f32; 3 * plane];
    for y in 0..h {
        for x in 0..w {
            let p = img.sample(
                (x as f32 + 0.5) / scale - 0.5,
                (y as f32 + 0.5) / scale - 0.5,
            );
            put(&mut t, plane, y * cw + x, p);
        }
    }
    (t, scale)
}

/// Thresholds of the detector's post-processing.
#[derive(Debug, Clone, Copy)]
pub struct DetParams {
    /// Probability for a text pixel.
    pub thresh: f32,
    /// Mean probability for a text box.
    pub box_thresh: f32,
    /// How much to grow a box (DB's unclip ratio).
    pub unclip: f32,
}

/// Detector post-processing: threshold the probability map (`mw` x `mh`), dilate,
/// take connected regions with a mean probability of at least `box_thresh`, grow
/// each by the DB "unclip" distance (`area * ratio / perimeter`), scale back to the
/// image.
pub fn detector_boxes(
    prob: &[f32],
    (mw, mh): (usize, usize),
    scale: f32,
    img: &Image,
    p: DetParams,
) -> Vec<TextBox> {
    let DetParams {
        thresh,
        box_thresh,
        unclip,
    } = p;
    let mask: Vec<bool> = prob.iter().map(|p| *p > thresh).collect();
    let mask = dilate(&mask, mw, mh);
    let mut out = Vec::new();
    for blob in components(&mask, mw, mh) {
        let [bx, by, bw, bh] = blob.bbox;
        if bw < 3 || bh < 3 {
            continue;
        }
        let mut sum = 0f32;
        for y in by..by + bh {
            for x in bx..bx + bw {
                sum += prob[y as usize * mw + x as usize];
            }
        }
        let score = sum / (bw * bh) as f32;
        if score < box_thresh {
            continue;
        }
        let (w, h) = (bw as f32, bh as f32);
        let d = w * h * unclip / (2.0 * (w + h));
        let (x0, y0) = ((bx as f32 - d).max(0.0), (by as f32 - d).max(0.0));
        let (x1, y1) = (
            (bx as f32 + w + d).min(mw as f32),
            (by as f32 + h + d).min(mh as f32),
        );
        let b = TextBox {
            x: x0 / scale,
            y: y0 / scale,
            w: (x1 - x0) / scale,
            h: (y1 - y0) / scale,
            score,
        };
        if b.x < img.width as f32 && b.y < img.height as f32 && b.w >= 4.0 && b.h >= 4.0 {
            out.push(b);
        }
    }
    out
}

/// The recogniser input for a box: the crop resized to `rh` pixels high (aspect
/// kept, at most `rw` wide), padded to `rw`, CHW.
pub fn recogniser_input(img: &Image, b: &TextBox, rh: usize, rw: usize) -> Vec<f32> {
    let scale = rh as f32 / b.h.max(1.0);
    let w = ((b.w * scale).ceil() as usize).clamp(1, rw);
    let sx = b.w / w as f32;
    let sy = b.h / rh as f32;
    let plane = rh * rw;
    let mut t = vec![0f32; 3 * plane];
    for y in 0..rh {
        for x in 0..w {
            let p = img.sample(
                b.x + (x as f32 + 0.5) * sx - 0.5,
                b.y + (y as f32 + 0.5) * sy - 0.5,
            );
            put(&mut t, plane, y * rw + x, p);
        }
    }
    t
}

/// Greedy CTC decoding of `steps` x `classes` probabilities: the best class per
/// step, repeats collapsed, blanks (class 0) dropped. `dict[i]` is class `i + 1`.
/// Returns the text and the mean probability of its characters.
pub fn ctc_decode(probs: &[f32], steps: usize, classes: usize, dict: &[String]) -> (String, f32) {
    let mut text = String::new();
    let mut confs = Vec::new();
    let mut last = 0usize;
    for s in 0..steps {
        let row = &probs[s * classes..(s + 1) * classes];
        let (best, p) =
            row.iter().enumerate().fold(
                (0, f32::MIN),
                |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
            );
        if best != 0 && best != last {
            if let Some(ch) = dict.get(best - 1) {
                text.push_str(ch);
                confs.push(p);
            }
        }
        last = best;
    }
    let conf = if confs.is_empty() {
        0.0
    } else {
        confs.iter().sum::<f32>() / confs.len() as f32
    };
    (text, conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_collapses_repeats_and_drops_blanks() {
        let dict: Vec<String> = ["A", "B"].iter().map(|s| s.to_string()).collect();
        // Steps: A A blank A B B → "AAB".
        let rows = [
            [0.1, 0.8, 0.1],
            [0.1, 0.9, 0.0],
            [0.9, 0.05, 0.05],
            [0.2, 0.7, 0.1],
            [0.1, 0.1, 0.8],
            [0.1, 0.2, 0.7],
        ];
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let (text, conf) = ctc_decode(&flat, 6, 3, &dict);
        assert_eq!(text, "AAB");
        assert!((conf - (0.8 + 0.7 + 0.8) / 3.0).abs() < 1e-5);
    }

    #[test]
    fn a_bright_region_of_the_map_becomes_a_grown_box_in_image_pixels() {
        let (mw, mh) = (64, 32);
        let mut prob = vec![0f32; mw * mh];
        for y in 10..16 {
            for x in 20..40 {
                prob[y * mw + x] = 0.9;
            }
        }
        let img = Image {
            width: 128,
            height: 64,
            rgb: vec![0; 128 * 64 * 3],
        };
        let p = DetParams {
            thresh: 0.3,
            box_thresh: 0.5,
            unclip: 1.6,
        };
        let boxes = detector_boxes(&prob, (mw, mh), 0.5, &img, p);
        assert_eq!(boxes.len(), 1, "{boxes:?}");
        let b = boxes[0];
        // The region (dilated by one) is 22x8 at (19, 9) in the map; grown by
        // 22*8*1.6/60 ≈ 4.7; scale 0.5 doubles it.
        assert!((b.x - 2.0 * (19.0 - 4.69)).abs() < 1.0, "{b:?}");
        assert!(b.w > 2.0 * 22.0 && b.h > 2.0 * 8.0, "{b:?}");
    }

    #[test]
    fn the_detector_input_keeps_the_aspect_and_pads() {
        let img = Image {
            width: 100,
            height: 50,
            rgb: vec![255; 100 * 50 * 3],
        };
        let (t, scale) = detector_input(&img, 64, 64);
        assert!((scale - 0.64).abs() < 1e-6);
        assert!((t[0] - 1.0).abs() < 1e-6, "white is 1");
        assert_eq!(t[40 * 64], 0.0, "below the image: padding");
    }
}
