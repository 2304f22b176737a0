//! On-device analytics on the frames the video stage hands over. Object detection
//! (persons, vehicles): [`detector`] (so far on stills and files). People counting:
//! the algorithm in [`people`] (pure), its stage in [`counting`]. Plate reading:
//! the reader and tracker in [`plates`], the stage in [`reading`].

mod counting;
pub mod detector;
pub mod people;
pub mod plates;
mod reading;

pub use counting::PeopleCounting;
pub use people::{Counter, InDirection, LineConfig, Params, Tally, ZoneConfig};
pub use reading::PlateReading;
