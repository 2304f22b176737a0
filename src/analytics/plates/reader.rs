//! The plate reader on one image: text detection, recognition of each text box,
//! plate-format rules; best candidate first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::ocr::{self, Image, TextBox};
use super::rules::{Reading, Rules};

/// The detector's input by default (one optimised plan per size; tract needs a
/// fixed shape): 1280x720 frames fill it at RapidOCR's 736-pixel short side.
pub const DET_SIZE: [usize; 2] = [1312, 736];
/// The recogniser's input: 48 high, at most 320 wide (RapidOCR's shape).
pub const REC_H: usize = 48;
pub const REC_W: usize = 320;

pub const DETECTOR_FILE: &str = "ch_PP-OCRv4_det_infer.onnx";
pub const RECOGNISER_FILE: &str = "ch_PP-OCRv4_rec_infer.onnx";

#[derive(Debug, thiserror::Error)]
pub enum PlateError {
    #[error("model {path}: {reason} (deploy/fetch-models.sh fetches the models)")]
    Model { path: PathBuf, reason: String },
    #[error("inference failed: {0}")]
    Inference(String),
}

/// One model, run on one NCHW input of its fixed shape.
pub trait Inference: Send + Sync {
    /// The first output: shape and values.
    fn run(&self, input: Vec<f32>) -> Result<(Vec<usize>, Vec<f32>), String>;
}

/// The runtime that runs the models.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// tract: pure Rust, built in.
    Tract,
    /// ONNX Runtime, loaded at run time from `library` (builds with the `ort`
    /// feature only); `sessions` sessions per model so that as many readers can
    /// run at once.
    Onnxruntime { library: PathBuf, sessions: usize },
}

/// tract, pure Rust: one optimised plan for the fixed input shape.
pub struct Tract {
    plan: Arc<TypedRunnableModel>,
    shape: [usize; 4],
}

impl Tract {
    pub fn load(path: &Path, shape: [usize; 4]) -> Result<Self, PlateError> {
        let err = |e: TractError| PlateError::Model {
            path: path.to_owned(),
            reason: format!("{e:#}"),
        };
        let plan = tract_onnx::onnx()
            .model_for_path(path)
            .map_err(err)?
            .with_input_fact(0, f32::fact(shape).into())
            .map_err(err)?
            .into_optimized()
            .map_err(err)?
            .into_runnable()
            .map_err(err)?;
        Ok(Self { plan, shape })
    }
}

impl Inference for Tract {
    fn run(&self, input: Vec<f32>) -> Result<(Vec<usize>, Vec<f32>), String> {
        let t = Tensor::from_shape(&self.shape, &input).map_err(|e| e.to_string())?;
        let out = self.plan.run(tvec!(t.into())).map_err(|e| e.to_string())?;
        let o = out[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| e.to_string())?;
        Ok((o.shape().to_vec(), o.iter().copied().collect()))
    }
}

/// ONNX Runtime through the `ort` crate, its shared library loaded at run time
/// (`load-dynamic`; it comes inside the `onnxruntime` wheel for each platform).
/// A session runs one input at a time: a reader takes the first idle one.
#[cfg(feature = "ort")]
pub struct Ort {
    sessions: Vec<std::sync::Mutex<ort::session::Session>>,
    shape: [usize; 4],
}

#[cfg(feature = "ort")]
impl Ort {
    pub fn load(
        library: &Path,
        path: &Path,
        shape: [usize; 4],
        sessions: usize,
    ) -> Result<Self, PlateError> {
        use ort::session::{builder::GraphOptimizationLevel, Session};
        let err = |e: ort::Error| PlateError::Model {
            path: path.to_owned(),
            reason: format!("onnxruntime ({}): {e}", library.display()),
        };
        if !library.exists() {
            return Err(PlateError::Model {
                path: path.to_owned(),
                reason: format!("no onnxruntime library at {}", library.display()),
            });
        }
        // The first call loads the library; later ones reuse it.
        ort::init_from(library.display().to_string())
            .with_name("edgecam")
            .commit()
            .map_err(err)?;
        let sessions = (0..sessions.max(1))
            .map(|_| {
                Session::builder()
                    .and_then(|b| b.with_optimization_level(GraphOptimizationLevel::Level3))
                    .and_then(|b| b.with_intra_threads(1))
                    .and_then(|b| b.commit_from_file(path))
                    .map(std::sync::Mutex::new)
                    .map_err(err)
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { sessions, shape })
    }
}

#[cfg(feature = "ort")]
impl Inference for Ort {
    fn run(&self, input: Vec<f32>) -> Result<(Vec<usize>, Vec<f32>), String> {
        let shape: Vec<i64> = self.shape.iter().map(|d| *d as i64).collect();
        let t = ort::value::Tensor::from_array((shape, input)).map_err(|e| e.to_string())?;
        let mut session = self
            .sessions
            .iter()
            .find_map(|s| s.try_lock().ok())
            .unwrap_or_else(|| self.sessions[0].lock().unwrap_or_else(|e| e.into_inner()));
        let out = session.run(ort::inputs![t]).map_err(|e| e.to_string())?;
        let (shape, data) = out[0]
            .try_extract_tensor::<f32>()
            .map_err(|e| e.to_string())?;
        Ok((shape.iter().map(|d| *d as usize).collect(), data.to_vec()))
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

/// A character read with at least this probability is sure.
const SURE: f32 = 0.9;

/// Detector thresholds (RapidOCR's defaults).
const DET: ocr::DetParams = ocr::DetParams {
    thresh: 0.3,
    box_thresh: 0.5,
    unclip: 1.6,
};

pub struct PlateReader {
    det: Box<dyn Inference>,
    rec: Box<dyn Inference>,
    dict: ocr::Dictionary,
    rules: Rules,
    /// The detector's input, width and height.
    det_size: [usize; 2],
}

impl PlateReader {
    /// Loads the two models from `dir` for `backend`, the detector for input of
    /// `det_size` (width, height; multiples of 32).
    pub fn load(
        dir: &Path,
        rules: Rules,
        backend: &Backend,
        det_size: [usize; 2],
    ) -> Result<Self, PlateError> {
        let [det_w, det_h] = det_size;
        let det_path = dir.join(DETECTOR_FILE);
        let rec_path = dir.join(RECOGNISER_FILE);
        let bytes = std::fs::read(&rec_path).map_err(|e| PlateError::Model {
            path: rec_path.clone(),
            reason: e.to_string(),
        })?;
        let chars =
            super::onnx_meta::metadata(&bytes, "character").ok_or_else(|| PlateError::Model {
                path: rec_path.clone(),
                reason: "no character list in its metadata".into(),
            })?;
        let mut dict: Vec<String> = chars.lines().map(str::to_owned).collect();
        dict.push(" ".into());
        let (det, rec): (Box<dyn Inference>, Box<dyn Inference>) = match backend {
            Backend::Tract => (
                Box::new(Tract::load(&det_path, [1, 3, det_h, det_w])?),
                Box::new(Tract::load(&rec_path, [1, 3, REC_H, REC_W])?),
            ),
            #[cfg(feature = "ort")]
            Backend::Onnxruntime { library, sessions } => (
                Box::new(Ort::load(
                    library,
                    &det_path,
                    [1, 3, det_h, det_w],
                    *sessions,
                )?),
                Box::new(Ort::load(
                    library,
                    &rec_path,
                    [1, 3, REC_H, REC_W],
                    *sessions,
                )?),
            ),
            #[cfg(not(feature = "ort"))]
            Backend::Onnxruntime { .. } => {
                return Err(PlateError::Model {
                    path: det_path,
                    reason: "this build has no onnxruntime backend (build with --features ort)"
                        .into(),
                })
            }
        };
        let dict = ocr::Dictionary::new(dict);
        // The recogniser's classes must be its character table's (and blank): a
        // model with another table would read wrong characters, not fail.
        let (shape, _) = rec
            .run(vec![0.0; 3 * REC_H * REC_W])
            .map_err(|e| PlateError::Model {
                path: rec_path.clone(),
                reason: e,
            })?;
        if shape.len() != 3 || shape[2] != dict.classes() {
            return Err(PlateError::Model {
                path: rec_path,
                reason: format!(
                    "its output {shape:?} does not match its character table of {} characters and blank",
                    dict.classes() - 1
                ),
            });
        }
        Ok(Self {
            det,
            rec,
            dict,
            rules,
            det_size,
        })
    }

    /// Text boxes in the image.
    pub fn detect(&self, img: &Image) -> Result<Vec<TextBox>, PlateError> {
        let (input, scale) = ocr::detector_input(img, self.det_size[0], self.det_size[1]);
        let (shape, prob) = self.det.run(input).map_err(PlateError::Inference)?;
        let (mh, mw) = (shape[shape.len() - 2], shape[shape.len() - 1]);
        Ok(ocr::detector_boxes(&prob, (mw, mh), scale, img, DET))
    }

    /// Reads the text in one box.
    pub fn recognise(&self, img: &Image, b: &TextBox) -> Result<ocr::Decoded, PlateError> {
        let input = ocr::recogniser_input(img, b, REC_H, REC_W);
        let (shape, probs) = self.rec.run(input).map_err(PlateError::Inference)?;
        let (steps, classes) = (shape[1], shape[2]);
        Ok(ocr::ctc_decode(&probs, steps, classes, &self.dict))
    }

    /// The layouts and weights the reader decodes with.
    pub fn rules(&self) -> &Rules {
        &self.rules
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
            if b.len < b.thick * 1.2 || b.thick < 8.0 {
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
            // What the first crop read, when every character was sure.
            let mut sure_first: Option<Option<String>> = None;
            for (i, crop) in crops.into_iter().enumerate() {
                let d = match memo.crops.get(&(n, i)) {
                    Some(d) => d,
                    None => {
                        let d = self.recognise(img, &crop)?;
                        memo.crops.entry((n, i)).or_insert(d)
                    }
                };
                // Too short to be a plate on the first crop: not worth more.
                if i == 0 && d.glyphs.len() < 4 {
                    break;
                }
                let readings = rules.readings(&d.text, &d.lattice);
                // The first two crops read the same, every character sure (a plate,
                // or a word that is none): the other three would not change it.
                let sure = d
                    .glyphs
                    .iter()
                    .all(|g| g.p >= SURE)
                    .then(|| readings.first().map(|r| r.text.clone()));
                let agreed = i == 1 && sure.is_some() && sure == sure_first;
                if i == 0 {
                    sure_first = sure;
                }
                vote(&mut votes, readings, &d.text, crop);
                if agreed {
                    break;
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

/// What [`PlateReader::read_with`] keeps of an image: its text boxes, and the
/// recognition of each (box, crop).
#[derive(Default)]
pub struct Memo {
    boxes: Option<Vec<TextBox>>,
    crops: std::collections::HashMap<(usize, usize), ocr::Decoded>,
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

/// Adds one crop's readings to the votes.
fn vote(votes: &mut Vec<Vote>, readings: Vec<Reading>, raw: &str, crop: TextBox) {
    for r in readings {
        match votes.iter_mut().find(|v| v.text == r.text) {
            Some(v) => {
                v.score += r.score;
                if r.confidence > v.confidence {
                    (v.confidence, v.raw, v.crop) = (r.confidence, raw.to_owned(), crop);
                }
            }
            None => votes.push(Vote {
                text: r.text,
                score: r.score,
                confidence: r.confidence,
                raw: raw.to_owned(),
                crop,
            }),
        }
    }
}
