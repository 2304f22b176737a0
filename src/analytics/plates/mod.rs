//! Licence-plate reading on stills (`edgecam read-plates`, `edgecam eval-plates`):
//! PP-OCRv4 text detection and recognition through tract, then plate-format rules
//! per region.
//!
//! Partial: the daemon stage (frames → tracking → one event per vehicle) is not
//! built yet.

mod ocr;
mod onnx_meta;
mod reader;
pub mod rules;

pub use ocr::Image;
pub use reader::PlateReader;
pub use rules::Region;
