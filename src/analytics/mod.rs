//! On-device analytics on the frames the video stage hands over. People counting:
//! the algorithm in [`people`] (pure), its stage in [`counting`].

mod counting;
pub mod people;

pub use counting::PeopleCounting;
pub use people::{Counter, InDirection, LineConfig, Params, Tally, ZoneConfig};
