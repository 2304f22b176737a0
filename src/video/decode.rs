//! Decoding a video file into analytics frames outside the daemon (the
//! `count-people` command): the same RGB frames the pipeline's appsink delivers.

use std::path::Path;
use std::time::{Duration, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;

use super::frames::{packed_rgb, Frame};

/// Decodes `path` to RGB frames `width` wide (the height keeps the aspect ratio)
/// at `fps`, calling `each` with every frame and its time from the start of the
/// file. Blocking.
pub fn file_frames(
    path: &Path,
    width: u32,
    fps: u32,
    mut each: impl FnMut(Frame, Duration),
) -> Result<u64, String> {
    gst::init().map_err(|e| e.to_string())?;
    let pipeline = gst::parse::launch(&format!(
        "filesrc name=src ! decodebin ! videoconvert ! videoscale ! videorate ! \
         video/x-raw,format=RGB,width={width},pixel-aspect-ratio=1/1,framerate={fps}/1 ! \
         appsink name=sink sync=false"
    ))
    .map_err(|e| e.to_string())?
    .downcast::<gst::Pipeline>()
    .map_err(|_| "not a pipeline".to_owned())?;
    let src = pipeline.by_name("src").ok_or("no source")?;
    src.set_property("location", path.to_string_lossy().to_string());
    let sink = pipeline
        .by_name("sink")
        .and_then(|s| s.downcast::<gst_app::AppSink>().ok())
        .ok_or("no appsink")?;
    pipeline
        .set_state(gst::State::Playing)
        .map_err(|e| format!("cannot play {}: {e}", path.display()))?;
    let mut n = 0;
    while let Ok(sample) = sink.pull_sample() {
        let (Some(buffer), Some(caps)) = (sample.buffer(), sample.caps()) else {
            continue;
        };
        let Some(s) = caps.structure(0) else { continue };
        let (Ok(w), Ok(h)) = (s.get::<i32>("width"), s.get::<i32>("height")) else {
            continue;
        };
        let Ok(map) = buffer.map_readable() else {
            continue;
        };
        let at = buffer
            .pts()
            .map(|p| Duration::from_nanos(p.nseconds()))
            .unwrap_or_default();
        let (w, h) = (w as u32, h as u32);
        let rgb = packed_rgb(map.as_slice(), w, h);
        n += 1;
        each(
            Frame {
                width: w,
                height: h,
                rgb,
                captured_at: SystemTime::UNIX_EPOCH + at,
            },
            at,
        );
    }
    let error = pipeline.bus().and_then(|bus| {
        bus.pop_filtered(&[gst::MessageType::Error])
            .and_then(|m| match m.view() {
                gst::MessageView::Error(e) => Some(e.error().to_string()),
                _ => None,
            })
    });
    if let Err(e) = pipeline.set_state(gst::State::Null) {
        tracing::warn!(error = %e, "cannot stop the decoder cleanly");
    }
    match error {
        Some(e) => Err(format!("{}: {e}", path.display())),
        None if n == 0 => Err(format!("{}: no video frames", path.display())),
        None => Ok(n),
    }
}
