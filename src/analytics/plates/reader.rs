//! The plate reader on one image: text detection, recognition of each text box,
//! plate-format rules; best candidate first.

use std::path::{Path, PathBuf};

use super::ocr::{self, TextBox};
use super::rules::{Reading, Rules};
use crate::analytics::inference::{load_model, Backend, Inference, LoadError};
use crate::analytics::raster::Image;

/// The detector's input by default (one optimised plan per size; tract needs a
/// fixed shape): 1280x720 frames fill it at RapidOCR's 736-pixel short side.
pub const DET_SIZE: [usize; 2] = [1312, 736];
/// The detector's input for a second look at a small line of text (`zoom`):
/// the part of the image around the line, enlarged.
pub const ZOOM_SIZE: [usize; 2] = [480, 288];
/// The line's box height (grown by DB's unclip, so about one and a half times its
/// letters' height) that the second look enlarges it to, in detector pixels.
/// Chosen on the development set among 48, 64 and 80 (docs/plates.md).
const ZOOM_THICK: f32 = 64.0;
/// A line is looked at again only when that enlarges it at least this much, and
/// by at most `ZOOM_MAX`.
const ZOOM_MIN: f32 = 1.3;
const ZOOM_MAX: f32 = 4.0;
/// At most this many lines of an image get a second look (the most probable
/// text first).
const ZOOM_LINES: usize = 6;
/// The recogniser's input: 48 high, at most 320 wide (RapidOCR's shape).
pub const REC_H: usize = 48;
pub const REC_W: usize = 320;

pub const DETECTOR_FILE: &str = "ch_PP-OCRv4_det_infer.onnx";
pub const RECOGNISER_FILE: &str = "ch_PP-OCRv4_rec_infer.onnx";
/// edgecam's own plate recogniser, trained on rendered plates (`train/`):
/// 32 high, at most 192 wide; blank, `0-9`, `A-Z`.
pub const PLATE_RECOGNISER_FILE: &str = "edgecam-plate-rec.onnx";
pub const PLATE_REC_H: usize = 32;
pub const PLATE_REC_W: usize = 192;

/// Which recognisers read each text box.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Recognisers {
    /// PP-OCRv4's general text recogniser only (the default: the most accurate
    /// on real photographs, docs/plates.md).
    #[default]
    Ppocr,
    /// edgecam's plate recogniser only.
    Edgecam,
    /// Both; their readings are pooled.
    Both,
}

impl Recognisers {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ppocr" => Some(Self::Ppocr),
            "edgecam" => Some(Self::Edgecam),
            "both" => Some(Self::Both),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlateError {
    #[error("model {path}: {reason} (deploy/fetch-models.sh fetches the models)")]
    Model { path: PathBuf, reason: String },
    /// The ONNX Runtime library, not a model, is missing or cannot be loaded.
    #[error("onnxruntime library {library}: {reason} (deploy/fetch-onnxruntime.sh DIR puts libonnxruntime.so in DIR)")]
    Runtime { library: PathBuf, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

impl From<LoadError> for PlateError {
    fn from(e: LoadError) -> Self {
        match e {
            LoadError::Model { path, reason } => Self::Model { path, reason },
            LoadError::Runtime { library, reason } => Self::Runtime { library, reason },
        }
    }
}

/// A plate read from an image.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PlateRead {
    pub text: String,
    /// The geometric mean of its characters' probabilities times how well the
    /// text fits the region's formats.
    pub confidence: f32,
    /// `[x, y, width, height]` in image pixels.
    #[serde(rename = "box")]
    pub bbox: [u32; 4],
    /// What the recogniser read before the format rules.
    pub raw: String,
}

/// A line of text read by [`PlateReader::read_line`].
#[derive(Debug, Clone, serde::Serialize)]
pub struct LineRead {
    /// Plates, best first.
    pub plates: Vec<PlateRead>,
    /// Each recogniser's own reading: its letters and digits, greedy.
    pub read: std::collections::BTreeMap<&'static str, String>,
}

/// A character read with at least this probability is sure.
const SURE: f32 = 0.9;

/// Detector thresholds (RapidOCR's defaults).
const DET: ocr::DetParams = ocr::DetParams {
    thresh: 0.3,
    box_thresh: 0.5,
    unclip: 1.6,
};

/// A text recogniser: its model, input size and character table.
struct Rec {
    model: Box<dyn Inference>,
    dict: ocr::Dictionary,
    /// Input height and (most) width.
    size: [usize; 2],
}

impl Rec {
    /// Loads the recogniser at `path` for input `h` x `w`; its character table
    /// comes from the model's metadata (`character`, one a line; PP-OCR's tables
    /// end in a space that is not written there: `space`).
    fn load(
        path: &Path,
        backend: &Backend,
        h: usize,
        w: usize,
        space: bool,
    ) -> Result<Self, PlateError> {
        let bytes = std::fs::read(path).map_err(|e| PlateError::Model {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        let chars =
            super::onnx_meta::metadata(&bytes, "character").ok_or_else(|| PlateError::Model {
                path: path.to_owned(),
                reason: "no character list in its metadata".into(),
            })?;
        drop(bytes);
        let mut dict: Vec<String> = chars.lines().map(str::to_owned).collect();
        if space {
            dict.push(" ".into());
        }
        let model = load_model(backend, path, [1, 3, h, w])?;
        let dict = ocr::Dictionary::new(dict);
        // The recogniser's classes must be its character table's (and blank): a
        // model with another table would read wrong characters, not fail.
        let (shape, _) = model
            .run(vec![0.0; 3 * h * w])
            .map_err(|e| PlateError::Model {
                path: path.to_owned(),
                reason: e,
            })?;
        if shape.len() != 3 || shape[2] != dict.classes() {
            return Err(PlateError::Model {
                path: path.to_owned(),
                reason: format!(
                    "its output {shape:?} does not match its character table of {} characters and blank",
                    dict.classes() - 1
                ),
            });
        }
        Ok(Self {
            model,
            dict,
            size: [h, w],
        })
    }

    fn recognise(&self, img: &Image, b: &TextBox) -> Result<ocr::Decoded, PlateError> {
        let [h, w] = self.size;
        let input = ocr::recogniser_input(img, b, h, w);
        let (shape, probs) = self.model.run(input).map_err(PlateError::Inference)?;
        let (steps, classes) = (shape[1], shape[2]);
        Ok(ocr::ctc_decode(&probs, steps, classes, &self.dict))
    }
}

pub struct PlateReader {
    det: Box<dyn Inference>,
    /// The same detector at `ZOOM_SIZE`, for the second look at small lines.
    zoom: Option<Box<dyn Inference>>,
    /// PP-OCRv4's recogniser, edgecam's, or both (at least one).
    ppocr: Option<Rec>,
    plate: Option<Rec>,
    rules: Rules,
    /// The detector's input, width and height.
    det_size: [usize; 2],
}

impl PlateReader {
    /// Loads the text detector and `recognisers` from `dir` for `backend`, the
    /// detector for input of `det_size` (width, height; multiples of 32); with
    /// `zoom`, also for the second look at small lines.
    pub fn load(
        dir: &Path,
        rules: Rules,
        backend: &Backend,
        det_size: [usize; 2],
        recognisers: Recognisers,
        zoom: bool,
    ) -> Result<Self, PlateError> {
        let [det_w, det_h] = det_size;
        let ppocr = match recognisers {
            Recognisers::Edgecam => None,
            _ => Some(Rec::load(
                &dir.join(RECOGNISER_FILE),
                backend,
                REC_H,
                REC_W,
                true,
            )?),
        };
        let plate = match recognisers {
            Recognisers::Ppocr => None,
            _ => Some(Rec::load(
                &dir.join(PLATE_RECOGNISER_FILE),
                backend,
                PLATE_REC_H,
                PLATE_REC_W,
                false,
            )?),
        };
        let det = load_model(backend, &dir.join(DETECTOR_FILE), [1, 3, det_h, det_w])?;
        let zoom = if zoom {
            let [w, h] = ZOOM_SIZE;
            Some(load_model(backend, &dir.join(DETECTOR_FILE), [1, 3, h, w])?)
        } else {
            None
        };
        Ok(Self {
            det,
            zoom,
            ppocr,
            plate,
            rules,
            det_size,
        })
    }

    /// Text boxes in the image. With `zoom`, each small line that could be a
    /// plate is looked at again, enlarged: the boxes found then inside its box
    /// take its place (the detector cuts the ends of small lines short, and
    /// merges a plate's text with what is printed above or below it).
    pub fn detect(&self, img: &Image) -> Result<Vec<TextBox>, PlateError> {
        let boxes = detect_in(&*self.det, self.det_size, img, ocr::Window::whole(img))?;
        let Some(zoom) = &self.zoom else {
            return Ok(boxes);
        };
        // Each line's window, kept for the `ZOOM_LINES` most probable lines.
        let mut windows: Vec<Option<ocr::Window>> =
            boxes.iter().map(|b| zoom_window(b, img)).collect();
        let mut order: Vec<usize> = (0..boxes.len()).filter(|&i| windows[i].is_some()).collect();
        order.sort_by(|&a, &b| boxes[b].score.total_cmp(&boxes[a].score));
        for &i in order.iter().skip(ZOOM_LINES) {
            windows[i] = None;
        }
        let mut out: Vec<TextBox> = Vec::with_capacity(boxes.len());
        for (b, win) in boxes.iter().zip(windows) {
            let found: Vec<TextBox> = match win {
                Some(win) => detect_in(&**zoom, ZOOM_SIZE, img, win)?
                    .into_iter()
                    .filter(|z| inside(z, b))
                    .collect(),
                None => Vec::new(),
            };
            if found.is_empty() {
                out.push(*b);
            }
            for z in found {
                // Windows overlap: a line found twice is kept once.
                if !out.iter().any(|o| same_line(o, &z)) {
                    out.push(z);
                }
            }
        }
        Ok(out)
    }

    /// The recognisers that read each box, in turn (0: PP-OCR, 1: edgecam's).
    fn recognisers(&self) -> impl Iterator<Item = (usize, &Rec)> {
        [&self.ppocr, &self.plate]
            .into_iter()
            .enumerate()
            .filter_map(|(k, r)| r.as_ref().map(|r| (k, r)))
    }

    /// The layouts and weights the reader decodes with.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// Reads `img` as one line of text that fills it (a plate already cropped
    /// to its main line): no detection, one crop; the recognisers' readings pooled.
    /// Also what each recogniser read alone (greedy, before the layouts), by name.
    pub fn read_line(&self, img: &Image) -> Result<LineRead, PlateError> {
        let (w, h) = (img.width as f32, img.height as f32);
        let b = TextBox::rotated((w / 2.0, h / 2.0, w, h, 0.0), 1.0, img.width, img.height);
        let mut votes = Vec::new();
        let mut read = std::collections::BTreeMap::new();
        for (k, rec) in self.recognisers() {
            let d = rec.recognise(img, &b)?;
            let weight = if k == 1 { self.rules.params.plate } else { 1.0 };
            vote(
                &mut votes,
                self.rules.readings(&d.text, &d.lattice),
                weight,
                &d.text,
                b,
            );
            let alone: String = d.glyphs.iter().map(|g| g.ch).collect();
            read.insert(if k == 1 { "edgecam" } else { "ppocr" }, alone);
        }
        votes.sort_by(|a, b| b.score.total_cmp(&a.score));
        let plates = votes
            .into_iter()
            .map(|v| PlateRead {
                text: v.text,
                confidence: v.confidence,
                bbox: [0, 0, img.width, img.height],
                raw: v.raw,
            })
            .collect();
        Ok(LineRead { plates, read })
    }

    /// Plates in the image, best first.
    pub fn read(&self, img: &Image) -> Result<Vec<PlateRead>, PlateError> {
        self.read_with(img, &self.rules, &mut Memo::default())
    }

    /// Plates in the image decoded with `rules`; the text boxes and each crop's
    /// recognition are kept in `memo`, so that the same image can be decoded again
    /// with other rules without running the models (`eval-plates --folds`).
    pub fn read_with(
        &self,
        img: &Image,
        rules: &Rules,
        memo: &mut Memo,
    ) -> Result<Vec<PlateRead>, PlateError> {
        let mut out: Vec<PlateRead> = Vec::new();
        if memo.boxes.is_none() {
            memo.boxes = Some(self.detect(img)?);
        }
        let boxes = memo.boxes.clone().unwrap_or_default();
        for (n, b) in boxes.into_iter().enumerate() {
            // A plate is wider than high; skip tall boxes and slivers.
            if !readable(&b) {
                continue;
            }
            // The recogniser's confusions depend on the crop: read five (DB's unclip
            // is tight at the ends of a line, so each gives the first and last
            // characters more room: a little, more, a little with more room above
            // and below, a little with less, more with more) and keep the plate text
            // whose readings score most summed over them.
            let crops = [
                b.lengthened(b.thick * 0.15, img.width, img.height),
                b.lengthened(b.thick * 0.4, img.width, img.height),
                b.lengthened(b.thick * 0.15, img.width, img.height)
                    .thickened(b.thick * 0.1, img.width, img.height),
                b.lengthened(b.thick * 0.15, img.width, img.height)
                    .thickened(-b.thick * 0.05, img.width, img.height),
                b.lengthened(b.thick * 0.4, img.width, img.height)
                    .thickened(b.thick * 0.1, img.width, img.height),
            ];
            let mut votes: Vec<Vote> = Vec::new();
            // What each recogniser read of the first crop, when every character
            // was sure.
            let mut sure_first: [Option<Option<String>>; 2] = [None, None];
            'crops: for (i, crop) in crops.into_iter().enumerate() {
                let mut agreed = i == 1;
                let mut short = i == 0;
                for (k, rec) in self.recognisers() {
                    let d = match memo.crops.get(&(n, i, k)) {
                        Some(d) => d,
                        None => {
                            let d = rec.recognise(img, &crop)?;
                            memo.crops.entry((n, i, k)).or_insert(d)
                        }
                    };
                    short &= d.glyphs.len() < 4;
                    let readings = rules.readings(&d.text, &d.lattice);
                    // The first two crops read the same, every character sure (a
                    // plate, or a word that is none): the other three would not
                    // change it.
                    let sure = d
                        .glyphs
                        .iter()
                        .all(|g| g.p >= SURE)
                        .then(|| readings.first().map(|r| r.text.clone()));
                    agreed &= sure.is_some() && sure == sure_first[k];
                    if i == 0 {
                        sure_first[k] = sure;
                    }
                    let weight = if k == 1 { rules.params.plate } else { 1.0 };
                    vote(&mut votes, readings, weight, &d.text, crop);
                }
                // Too short to be a plate on the first crop: not worth more.
                if short {
                    votes.clear();
                    break 'crops;
                }
                if agreed {
                    break 'crops;
                }
            }
            let Some(Vote {
                text,
                confidence,
                raw,
                crop: b,
                ..
            }) = votes.into_iter().max_by(|a, b| a.score.total_cmp(&b.score))
            else {
                continue;
            };
            let read = PlateRead {
                text,
                confidence,
                bbox: [b.x as u32, b.y as u32, b.w as u32, b.h as u32],
                raw,
            };
            match out.iter_mut().find(|r| r.text == read.text) {
                Some(r) if r.confidence < read.confidence => *r = read,
                Some(_) => {}
                None => out.push(read),
            }
        }
        out.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
        Ok(out)
    }
}

/// Runs the text detector `det` (input `size`, width and height) on the part
/// `win` of `img`; boxes in image pixels.
fn detect_in(
    det: &dyn Inference,
    size: [usize; 2],
    img: &Image,
    win: ocr::Window,
) -> Result<Vec<TextBox>, PlateError> {
    let (input, scale) = ocr::window_input(img, win, size[0], size[1]);
    let (shape, prob) = det.run(input).map_err(PlateError::Inference)?;
    let (mh, mw) = (shape[shape.len() - 2], shape[shape.len() - 1]);
    Ok(ocr::detector_boxes(
        &prob,
        (mw, mh),
        (scale, (win.x, win.y)),
        img,
        DET,
    ))
}

/// Whether a box is shaped like a line the reader reads: longer than high, and
/// not a sliver.
fn readable(b: &TextBox) -> bool {
    b.len >= b.thick * 1.2 && b.thick >= 8.0
}

/// The part of `img` to look at again for the line `b`, or none when the line
/// is not worth it (not readable, or already large): centred on it, enlarged
/// so that the line is `ZOOM_THICK` high (by `ZOOM_MIN` to `ZOOM_MAX`) with its
/// length and some room in the window, and moved inside the image.
fn zoom_window(b: &TextBox, img: &Image) -> Option<ocr::Window> {
    if !readable(b) {
        return None;
    }
    let [zw, zh] = ZOOM_SIZE.map(|v| v as f32);
    let scale = (ZOOM_THICK / b.thick)
        .min(ZOOM_MAX)
        .min(zw / (b.w * 1.5))
        .min(zh / (b.h * 2.0));
    if scale < ZOOM_MIN {
        return None;
    }
    let (w, h) = (
        (zw / scale).min(img.width as f32),
        (zh / scale).min(img.height as f32),
    );
    let x = (b.cx - w / 2.0).clamp(0.0, img.width as f32 - w);
    let y = (b.cy - h / 2.0).clamp(0.0, img.height as f32 - h);
    Some(ocr::Window { x, y, w, h })
}

/// Whether the centre of `z` lies in the axis-aligned box around `b`.
fn inside(z: &TextBox, b: &TextBox) -> bool {
    (b.x..=b.x + b.w).contains(&z.cx) && (b.y..=b.y + b.h).contains(&z.cy)
}

/// Whether two boxes are the same line (centres within half the line's height).
fn same_line(a: &TextBox, b: &TextBox) -> bool {
    let d = a.thick.min(b.thick) / 2.0;
    (a.cx - b.cx).abs() < d && (a.cy - b.cy).abs() < d
}

/// What [`PlateReader::read_with`] keeps of an image: its text boxes, and the
/// recognition of each (box, crop) by each recogniser.
#[derive(Default)]
pub struct Memo {
    boxes: Option<Vec<TextBox>>,
    /// By (box, crop, recogniser).
    crops: std::collections::HashMap<(usize, usize, usize), ocr::Decoded>,
}

/// One plate text's votes over the crops of a box.
struct Vote {
    text: String,
    /// The readings' scores summed.
    score: f32,
    /// The best confidence, and the raw text and crop that gave it.
    confidence: f32,
    raw: String,
    crop: TextBox,
}

/// Adds one crop's readings to the votes, their scores times `weight`.
fn vote(votes: &mut Vec<Vote>, readings: Vec<Reading>, weight: f32, raw: &str, crop: TextBox) {
    for r in readings {
        match votes.iter_mut().find(|v| v.text == r.text) {
            Some(v) => {
                v.score += weight * r.score;
                if r.confidence > v.confidence {
                    (v.confidence, v.raw, v.crop) = (r.confidence, raw.to_owned(), crop);
                }
            }
            None => votes.push(Vote {
                text: r.text,
                score: weight * r.score,
                confidence: r.confidence,
                raw: raw.to_owned(),
                crop,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(width: u32, height: u32) -> Image {
        Image {
            width,
            height,
            rgb: vec![0; (width * height * 3) as usize],
        }
    }

    fn line(cx: f32, cy: f32, len: f32, thick: f32) -> TextBox {
        TextBox::rotated((cx, cy, len, thick, 0.0), 0.9, 1280, 720)
    }

    #[test]
    fn a_small_line_is_looked_at_again_enlarged_and_centred() {
        let img = image(1280, 720);
        let b = line(600.0, 400.0, 100.0, 32.0);
        let w = zoom_window(&b, &img).expect("a 32-pixel line is enlarged twice");
        // Enlarged to ZOOM_THICK (64) high: twice, so the window is half the input.
        assert!(
            (w.w - 240.0).abs() < 0.1 && (w.h - 144.0).abs() < 0.1,
            "{w:?}"
        );
        assert!((w.x + w.w / 2.0 - 600.0).abs() < 0.1 && (w.y + w.h / 2.0 - 400.0).abs() < 0.1);
    }

    #[test]
    fn a_large_line_or_a_sliver_is_not_looked_at_again() {
        let img = image(1280, 720);
        assert_eq!(zoom_window(&line(600.0, 400.0, 200.0, 60.0), &img), None);
        assert_eq!(
            zoom_window(&line(600.0, 400.0, 20.0, 30.0), &img),
            None,
            "taller than long"
        );
        assert_eq!(
            zoom_window(&line(600.0, 400.0, 50.0, 6.0), &img),
            None,
            "a sliver"
        );
    }

    #[test]
    fn a_long_line_is_enlarged_less_so_that_it_fits_with_room() {
        let img = image(1280, 720);
        // 32 high would be enlarged twice, but 300 long needs 450 pixels of window.
        let w = zoom_window(&line(600.0, 400.0, 300.0, 32.0), &img);
        assert_eq!(w, None, "480 / 450 is less than ZOOM_MIN");
        let w = zoom_window(&line(600.0, 400.0, 200.0, 32.0), &img).expect("enlarged 1.6 times");
        assert!((w.w - 300.0).abs() < 0.1, "{w:?}");
    }

    #[test]
    fn a_window_at_the_edge_is_moved_inside_the_image() {
        let img = image(640, 360);
        let w = zoom_window(
            &TextBox::rotated((10.0, 350.0, 60.0, 20.0, 0.0), 0.9, 640, 360),
            &img,
        )
        .expect("a 20-pixel line");
        assert_eq!((w.x, w.y + w.h), (0.0, 360.0), "{w:?}");
        // A window larger than the image is the whole image.
        let tiny = image(100, 60);
        let w = zoom_window(
            &TextBox::rotated((50.0, 30.0, 40.0, 12.0, 0.0), 0.9, 100, 60),
            &tiny,
        )
        .expect("a 12-pixel line");
        assert_eq!((w.x, w.y, w.w, w.h), (0.0, 0.0, 100.0, 60.0));
    }

    #[test]
    fn a_line_found_again_belongs_to_the_box_around_its_centre_and_twins_count_once() {
        let first = line(600.0, 400.0, 100.0, 40.0);
        let again = line(596.0, 396.0, 110.0, 24.0);
        let elsewhere = line(700.0, 400.0, 50.0, 24.0);
        assert!(inside(&again, &first));
        assert!(!inside(&elsewhere, &first));
        assert!(same_line(&again, &line(600.0, 400.0, 108.0, 26.0)));
        assert!(
            !same_line(&again, &line(600.0, 420.0, 108.0, 26.0)),
            "a line below"
        );
    }
}
