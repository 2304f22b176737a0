//! On-device analytics on the frames the video stage hands over. People counting:
//! the algorithm in [`people`] (pure), its stage in [`counting`]. Plate reading on
//! stills: [`plates`].

mod counting;
pub mod people;
pub mod plates;

pub use counting::PeopleCounting;
pub use people::{Counter, InDirection, LineConfig, Params, Tally, ZoneConfig};
