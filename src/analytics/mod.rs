//! On-device analytics on the frames the video stage hands over. Object detection
//! (persons, vehicles): the model in [`detector`], its stage in [`detection`],
//! shared by the analytics; tracking of its boxes in [`tracking`]. People counting:
//! the algorithm in [`people`] (pure), its stage in [`counting`]. Plate reading:
//! the reader and tracker in [`plates`], the stage in [`reading`].

mod config;
mod counting;
mod detection;
pub mod detector;
pub mod inference;
pub mod motion;
pub mod people;
pub mod plates;
pub mod raster;
mod reading;
pub mod tracking;

pub use config::{
    PeopleConfig, PlatesBackend, PlatesConfig, TrafficConfig, PEOPLE_TUNABLE, PLATES_TUNABLE,
    TRAFFIC_TUNABLE,
};
pub use counting::{Counted, Counting};
pub use detection::{
    input_size_for, DetectedQueue, DetectorConfig, Input, ObjectDetection, DETECTOR_TUNABLE,
    NAME as DETECTION,
};
pub use people::{Counter, InDirection, LineConfig, Params, Tally, TrackCounter, ZoneConfig};
pub use reading::{read_vehicles, PlateReading, VehicleBox, NAME as PLATE_READING};
