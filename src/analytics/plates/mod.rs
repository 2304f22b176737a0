//! Licence-plate reading on stills (`edgecam read-plates`, `edgecam eval-plates`):
//! PP-OCRv4 text detection and recognition through tract, then plate-format rules
//! per region.
//! [`tracker`] follows plates across frames (pure); the daemon's stage is
//! `analytics::reading`.

mod ocr;
mod onnx_meta;
mod reader;
pub mod rules;
pub mod tracker;

pub use ocr::Image;
pub use reader::{Backend, PlateError, PlateReader, DET_SIZE};
pub use rules::{Region, Rules};
