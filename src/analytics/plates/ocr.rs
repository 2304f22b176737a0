//! The text detector's and recogniser's inputs and outputs (PP-OCRv4, as RapidOCR
//! runs them), without the inference itself: letterboxing and normalising, boxes
//! from the detector's probability map, crops for the recogniser, CTC decoding.

use super::decode::Lattice;
use crate::analytics::raster::{dilate, regions, Image};

/// A line of text: a rotated rectangle in image pixels, and the axis-aligned box
/// around it (clamped to the image).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextBox {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
    /// Mean detector probability over the region.
    pub score: f32,
    /// Centre of the rotated rectangle.
    pub cx: f32,
    pub cy: f32,
    /// Its length along the text and its height across it.
    pub len: f32,
    pub thick: f32,
    /// Angle of the text's direction from the x axis, radians (within ±45°).
    pub angle: f32,
}

impl TextBox {
    /// The rotated rectangle `(cx, cy, len, thick, angle)`, with the axis-aligned
    /// box around it clamped to a `width` x `height` image.
    pub fn rotated(
        (cx, cy, len, thick, angle): (f32, f32, f32, f32, f32),
        score: f32,
        width: u32,
        height: u32,
    ) -> Self {
        let (c, s) = (angle.cos(), angle.sin());
        let half_w = (len * c.abs() + thick * s.abs()) / 2.0;
        let half_h = (len * s.abs() + thick * c.abs()) / 2.0;
        let x0 = (cx - half_w).clamp(0.0, width as f32);
        let y0 = (cy - half_h).clamp(0.0, height as f32);
        let x1 = (cx + half_w).clamp(0.0, width as f32);
        let y1 = (cy + half_h).clamp(0.0, height as f32);
        Self {
            x: x0,
            y: y0,
            w: x1 - x0,
            h: y1 - y0,
            score,
            cx,
            cy,
            len,
            thick,
            angle,
        }
    }

    /// The same box, `more` thicker above and below.
    pub fn thickened(&self, more: f32, width: u32, height: u32) -> Self {
        Self::rotated(
            (
                self.cx,
                self.cy,
                self.len,
                self.thick + 2.0 * more,
                self.angle,
            ),
            self.score,
            width,
            height,
        )
    }

    /// The same box, `more` longer at each end.
    pub fn lengthened(&self, more: f32, width: u32, height: u32) -> Self {
        Self::rotated(
            (
                self.cx,
                self.cy,
                self.len + 2.0 * more,
                self.thick,
                self.angle,
            ),
            self.score,
            width,
            height,
        )
    }
}

/// The rotated rectangle around a region's pixels: its long axis from the
/// pixels' second moments, its extent along and across it. `(cx, cy, len,
/// thick, angle)` in map pixels.
fn min_rect(pixels: &[usize], w: usize) -> (f32, f32, f32, f32, f32) {
    let n = pixels.len() as f32;
    let (mut mx, mut my) = (0f32, 0f32);
    for &i in pixels {
        mx += (i % w) as f32;
        my += (i / w) as f32;
    }
    (mx, my) = (mx / n, my / n);
    let (mut sxx, mut syy, mut sxy) = (0f32, 0f32, 0f32);
    for &i in pixels {
        let (dx, dy) = ((i % w) as f32 - mx, (i / w) as f32 - my);
        sxx += dx * dx;
        syy += dy * dy;
        sxy += dx * dy;
    }
    let mut angle = 0.5 * (2.0 * sxy).atan2(sxx - syy);
    // Text lines on plates run left to right: keep the angle within ±45°.
    let quarter = std::f32::consts::FRAC_PI_2;
    if angle > quarter / 2.0 {
        angle -= quarter;
    } else if angle < -quarter / 2.0 {
        angle += quarter;
    }
    let (c, s) = (angle.cos(), angle.sin());
    let (mut u0, mut u1, mut v0, mut v1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for &i in pixels {
        let (dx, dy) = ((i % w) as f32 - mx, (i / w) as f32 - my);
        let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
        (u0, u1, v0, v1) = (u0.min(u), u1.max(u), v0.min(v), v1.max(v));
    }
    // Pixels are unit squares: the extent is one more than the centres' span.
    let (uc, vc) = ((u0 + u1) / 2.0, (v0 + v1) / 2.0);
    (
        mx + uc * c - vc * s + 0.5,
        my + uc * s + vc * c + 0.5,
        u1 - u0 + 1.0,
        v1 - v0 + 1.0,
        angle,
    )
}

/// Writes the BGR channels of a pixel, normalised to [-1, 1], into a CHW tensor.
fn put(t: &mut [f32], plane: usize, i: usize, rgb: [f32; 3]) {
    // PP-OCR models take BGR, (x / 255 - 0.5) / 0.5.
    t[i] = rgb[2] / 127.5 - 1.0;
    t[plane + i] = rgb[1] / 127.5 - 1.0;
    t[2 * plane + i] = rgb[0] / 127.5 - 1.0;
}

/// A part of an image, in pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub x: f32,
    pub y: f32,
    pub w: f32,
    pub h: f32,
}

impl Window {
    /// All of `img`.
    pub fn whole(img: &Image) -> Self {
        Self {
            x: 0.0,
            y: 0.0,
            w: img.width as f32,
            h: img.height as f32,
        }
    }
}

/// The detector input for the part `win` of `img`: scaled (up or down) to fit a
/// `cw` x `ch` canvas, aspect kept, the rest left at 0, CHW. Returns it and the
/// scale; a box found in it maps back with [`detector_boxes`]' `origin` at
/// `(win.x, win.y)`.
pub fn window_input(img: &Image, win: Window, cw: usize, ch: usize) -> (Vec<f32>, f32) {
    let scale = (cw as f32 / win.w).min(ch as f32 / win.h);
    let (w, h) = (
        ((win.w * scale) as usize).min(cw),
        ((win.h * scale) as usize).min(ch),
    );
    let plane = cw * ch;
    let mut t = vec![0f32; 3 * plane];
    for y in 0..h {
        for x in 0..w {
            let p = img.sample(
                win.x + (x as f32 + 0.5) / scale - 0.5,
                win.y + (y as f32 + 0.5) / scale - 0.5,
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
/// image (the map's top left corner at `origin` in the image).
pub fn detector_boxes(
    prob: &[f32],
    (mw, mh): (usize, usize),
    (scale, origin): (f32, (f32, f32)),
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
    for pixels in regions(&mask, mw, mh) {
        if pixels.len() < 9 {
            continue;
        }
        // The mean over the region itself, not its axis-aligned box: a tilted line
        // fills little of its box.
        let score = pixels.iter().map(|&i| prob[i]).sum::<f32>() / pixels.len() as f32;
        if score < box_thresh {
            continue;
        }
        let (cx, cy, len, thick, angle) = min_rect(&pixels, mw);
        if len < 3.0 || thick < 3.0 {
            continue;
        }
        let d = len * thick * unclip / (2.0 * (len + thick));
        let b = TextBox::rotated(
            (
                origin.0 + cx / scale,
                origin.1 + cy / scale,
                (len + 2.0 * d) / scale,
                (thick + 2.0 * d) / scale,
                angle,
            ),
            score,
            img.width,
            img.height,
        );
        if b.w >= 4.0 && b.h >= 4.0 {
            out.push(b);
        }
    }
    out
}

/// The recogniser input for a box: the rotated rectangle straightened and resized
/// to `rh` pixels high (aspect kept, at most `rw` wide), padded to `rw`, CHW.
pub fn recogniser_input(img: &Image, b: &TextBox, rh: usize, rw: usize) -> Vec<f32> {
    let scale = rh as f32 / b.thick.max(1.0);
    let w = ((b.len * scale).ceil() as usize).clamp(1, rw);
    let su = b.len / w as f32;
    let sv = b.thick / rh as f32;
    let (c, s) = (b.angle.cos(), b.angle.sin());
    let plane = rh * rw;
    let mut t = vec![0f32; 3 * plane];
    for y in 0..rh {
        let v = (y as f32 + 0.5) * sv - b.thick / 2.0;
        for x in 0..w {
            let u = (x as f32 + 0.5) * su - b.len / 2.0;
            let p = img.sample(b.cx + u * c - v * s - 0.5, b.cy + u * s + v * c - 0.5);
            put(&mut t, plane, y * rw + x, p);
        }
    }
    t
}

/// One recognised letter or digit (upper case) on the best path, and how sure the
/// recogniser was of it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Glyph {
    pub ch: char,
    pub p: f32,
}

/// A recognised line of text.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Decoded {
    pub text: String,
    /// Mean probability of its characters.
    pub confidence: f32,
    /// Its letters and digits, in order (other characters are left out).
    pub glyphs: Vec<Glyph>,
    /// The recogniser's probabilities of blank, letters and digits per step, for
    /// the layout-constrained decoding.
    pub lattice: Lattice,
}

/// The recogniser's characters: `chars[i]` is class `i + 1` (class 0 is CTC's
/// blank), and which classes are letters or digits (upper case), found once.
pub struct Dictionary {
    chars: Vec<String>,
    /// Class `i` as an upper-case letter or digit (class 0, blank, is none).
    symbols: Vec<Option<char>>,
}

impl Dictionary {
    pub fn new(chars: Vec<String>) -> Self {
        let symbols = std::iter::once(None)
            .chain(chars.iter().map(|c| as_alnum(c)))
            .collect();
        Self { chars, symbols }
    }

    /// How many classes the recogniser must have: blank and one per character.
    pub fn classes(&self) -> usize {
        self.symbols.len()
    }

    /// Class `i`'s text.
    fn get(&self, i: usize) -> Option<&String> {
        self.chars.get(i.wrapping_sub(1))
    }

    /// Class `i` as an upper-case letter or digit, if it is one.
    fn alnum(&self, i: usize) -> Option<char> {
        as_alnum(self.get(i)?)
    }
}

fn as_alnum(s: &str) -> Option<char> {
    let mut chars = s.chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphanumeric() => Some(c.to_ascii_uppercase()),
        _ => None,
    }
}

/// Greedy CTC decoding of `steps` x `classes` probabilities: the best class per
/// step, repeats collapsed, blanks (class 0) dropped.
pub fn ctc_decode(probs: &[f32], steps: usize, classes: usize, dict: &Dictionary) -> Decoded {
    let mut out = Decoded::default();
    let mut confs = Vec::new();
    let mut last = 0usize;
    // The row where the current character is likeliest.
    let mut peak: Option<(usize, f32)> = None;
    let alnum = |i: usize| dict.alnum(i);
    let close = |peak: &mut Option<(usize, f32)>, last: usize, out: &mut Decoded| {
        if let (Some((_, p)), Some(ch)) = (peak.take(), alnum(last)) {
            out.glyphs.push(Glyph { ch, p });
        }
    };
    out.lattice = Lattice::from_probs(probs, steps, classes, &dict.symbols);
    for s in 0..steps {
        let row = &probs[s * classes..(s + 1) * classes];
        let (best, p) =
            row.iter().enumerate().fold(
                (0, f32::MIN),
                |acc, (i, &v)| if v > acc.1 { (i, v) } else { acc },
            );
        if best != last {
            close(&mut peak, last, &mut out);
            if best != 0 {
                if let Some(ch) = dict.get(best) {
                    out.text.push_str(ch);
                    confs.push(p);
                }
            }
        }
        if best != 0 && peak.is_none_or(|(_, q)| p > q) {
            peak = Some((s, p));
        }
        last = best;
    }
    close(&mut peak, last, &mut out);
    out.confidence = if confs.is_empty() {
        0.0
    } else {
        confs.iter().sum::<f32>() / confs.len() as f32
    };
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_collapses_repeats_and_drops_blanks() {
        let dict = Dictionary::new(["A", "B"].iter().map(|s| s.to_string()).collect());
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
        let d = ctc_decode(&flat, 6, 3, &dict);
        assert_eq!(d.text, "AAB");
        assert!((d.confidence - (0.8 + 0.7 + 0.8) / 3.0).abs() < 1e-5);
    }

    #[test]
    fn each_character_keeps_its_peak_probability_and_the_lattice_every_step() {
        let dict = Dictionary::new(["G", "6", "-"].iter().map(|s| s.to_string()).collect());
        // Steps: G (0.5) G (0.8) blank "-" 6 → "G-6", glyphs G and 6.
        let rows = [
            [0.2, 0.5, 0.3, 0.0],
            [0.05, 0.8, 0.15, 0.0],
            [0.9, 0.05, 0.05, 0.0],
            [0.1, 0.0, 0.0, 0.9],
            [0.3, 0.1, 0.6, 0.0],
        ];
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let d = ctc_decode(&flat, 5, 4, &dict);
        assert_eq!(d.text, "G-6");
        let g: Vec<(char, f32)> = d.glyphs.iter().map(|g| (g.ch, g.p)).collect();
        assert_eq!(g, vec![('G', 0.8), ('6', 0.6)]);
        // "-" is no plate character: the lattice counts it as none.
        let best = super::super::decode::search(&d.lattice, 8, None, 0);
        assert_eq!(best[0].text, "G6");
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
        let boxes = detector_boxes(&prob, (mw, mh), (0.5, (0.0, 0.0)), &img, p);
        assert_eq!(boxes.len(), 1, "{boxes:?}");
        let b = boxes[0];
        // The region (dilated by one) is 22x8 at (19, 9) in the map; grown by
        // 22*8*1.6/60 ≈ 4.7; scale 0.5 doubles it.
        assert!((b.x - 2.0 * (19.0 - 4.69)).abs() < 1.0, "{b:?}");
        assert!(b.w > 2.0 * 22.0 && b.h > 2.0 * 8.0, "{b:?}");
        assert!(b.angle.abs() < 1e-3, "{b:?}");
    }

    #[test]
    fn a_tilted_line_gets_a_rotated_box_scored_over_itself() {
        let (mw, mh) = (100, 60);
        let mut prob = vec![0f32; mw * mh];
        // A line 60 long, 5 thick, rising 10° to the right.
        let angle = -10f32.to_radians();
        for y in 0..mh {
            for x in 0..mw {
                let (dx, dy) = (x as f32 + 0.5 - 50.0, y as f32 + 0.5 - 30.0);
                let (u, v) = (
                    dx * angle.cos() + dy * angle.sin(),
                    -dx * angle.sin() + dy * angle.cos(),
                );
                if u.abs() < 30.0 && v.abs() < 2.5 {
                    prob[y * mw + x] = 0.9;
                }
            }
        }
        let img = Image {
            width: 100,
            height: 60,
            rgb: vec![0; 100 * 60 * 3],
        };
        let p = DetParams {
            thresh: 0.3,
            box_thresh: 0.5,
            unclip: 1.6,
        };
        let boxes = detector_boxes(&prob, (mw, mh), (1.0, (0.0, 0.0)), &img, p);
        assert_eq!(
            boxes.len(),
            1,
            "the axis-aligned box is mostly empty: {boxes:?}"
        );
        let b = boxes[0];
        assert!((b.angle - angle).abs() < 0.03, "{b:?}");
        assert!(
            (b.cx - 50.0).abs() < 1.0 && (b.cy - 30.0).abs() < 1.0,
            "{b:?}"
        );
        // 60 x 5, dilated by one, grown by the unclip distance (about 5) each side.
        assert!(
            b.len > 70.0 && b.len < 80.0 && b.thick > 15.0 && b.thick < 22.0,
            "{b:?}"
        );
    }

    #[test]
    fn the_detector_input_keeps_the_aspect_and_pads() {
        let img = Image {
            width: 100,
            height: 50,
            rgb: vec![255; 100 * 50 * 3],
        };
        let (t, scale) = window_input(&img, Window::whole(&img), 64, 64);
        assert!((scale - 0.64).abs() < 1e-6);
        assert!((t[0] - 1.0).abs() < 1e-6, "white is 1");
        assert_eq!(t[40 * 64], 0.0, "below the image: padding");
    }

    #[test]
    fn a_window_is_enlarged_and_its_boxes_map_back_to_the_image() {
        // A black image with a white square at x 60..70, y 20..30.
        let (w, h) = (100u32, 50u32);
        let mut rgb = vec![0u8; (w * h * 3) as usize];
        for y in 20..30 {
            for x in 60..70 {
                let i = ((y * w + x) * 3) as usize;
                rgb[i..i + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let img = Image {
            width: w,
            height: h,
            rgb,
        };
        // The window 50..90 x 10..30, four times larger in a 160x80 canvas.
        let win = Window {
            x: 50.0,
            y: 10.0,
            w: 40.0,
            h: 20.0,
        };
        let (t, scale) = window_input(&img, win, 160, 80);
        assert!((scale - 4.0).abs() < 1e-6);
        // Canvas (60, 60) is image (65, 25): white; canvas (20, 20) is (55, 15): black.
        assert!((t[60 * 160 + 60] - 1.0).abs() < 1e-6);
        assert!((t[20 * 160 + 20] + 1.0).abs() < 1e-6);
        // A probability map at the canvas's resolution, text where the square is.
        let mut prob = vec![0f32; 160 * 80];
        for y in 40..80 {
            for x in 40..80 {
                prob[y * 160 + x] = 0.9;
            }
        }
        let p = DetParams {
            thresh: 0.3,
            box_thresh: 0.5,
            unclip: 1.0,
        };
        let boxes = detector_boxes(&prob, (160, 80), (scale, (win.x, win.y)), &img, p);
        assert_eq!(boxes.len(), 1, "{boxes:?}");
        let b = boxes[0];
        assert!(
            (b.cx - 65.0).abs() < 1.0 && (b.cy - 25.0).abs() < 1.0,
            "centred on the square in the image: {b:?}"
        );
    }
}
