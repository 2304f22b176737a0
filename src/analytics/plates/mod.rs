//! Licence-plate reading on stills (`edgecam read-plates`, `edgecam eval-plates`):
//! PP-OCRv4 text detection and recognition through tract, then decoding against the
//! plate layouts of the camera's countries.
//! [`tracker`] follows plates across frames (pure); the daemon's stage is
//! `analytics::reading`.

pub mod decode;
mod ocr;
mod onnx_meta;
mod reader;
pub mod rules;
pub mod tracker;
pub mod unread;

pub use reader::{LineRead, Memo, PlateError, PlateReader, Recognisers, DET_SIZE};
pub use rules::{Region, Rules};
