//! Clips: one playable Matroska file for a time range, cut from the recorded
//! segments that cover it by remuxing (no decoding, no re-encoding).
//!
//! Precision: whole segments. The clip starts at the start of the first segment that
//! overlaps the range and ends at the end of the last one; `Clip` says which range it
//! really holds. A segment still being written (the newest one, written to within the
//! last few seconds) is left out: it is not finished yet.
//!
//! Blocking: call it from a blocking thread. The output is written next to its final
//! name and renamed into place when complete, so a reader never sees half a clip.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use gstreamer as gst;
use gstreamer::prelude::*;

use super::segments::{self, Segment};

/// A segment modified more recently than this is taken to be still recording.
const STILL_WRITING: Duration = Duration::from_secs(5);

/// What a cut produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Clip {
    pub path: PathBuf,
    /// The range the clip really covers (whole segments).
    pub from: SystemTime,
    pub to: SystemTime,
    /// The segments it was cut from, oldest first.
    pub segments: Vec<PathBuf>,
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error("the range is empty: it must end after it starts")]
    EmptyRange,
    #[error("no finished recording covers {from} .. {to}")]
    NoRecording { from: String, to: String },
    #[error("recordings directory {dir}: {source}")]
    Recordings {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot build the remuxer: {0}")]
    Build(String),
    #[error("remuxing failed: {0}")]
    Remux(String),
    #[error("remuxing did not finish within {0:?}")]
    Timeout(Duration),
    #[error("cannot write {path}: {source}")]
    Output {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The finished segments of `dir` that a clip of `[from, to)` would be made of.
pub fn plan(
    dir: &Path,
    from: SystemTime,
    to: SystemTime,
    now: SystemTime,
) -> Result<Vec<Segment>, ClipError> {
    if to <= from {
        return Err(ClipError::EmptyRange);
    }
    let mut all = segments::scan(dir).map_err(|source| ClipError::Recordings {
        dir: dir.to_owned(),
        source,
    })?;
    if all
        .last()
        .is_some_and(|s| now.duration_since(s.end).unwrap_or_default() < STILL_WRITING)
    {
        all.pop();
    }
    let parts = segments::covering(&all, from, to);
    if parts.is_empty() {
        return Err(ClipError::NoRecording {
            from: humantime::format_rfc3339_millis(from).to_string(),
            to: humantime::format_rfc3339_millis(to).to_string(),
        });
    }
    Ok(parts)
}

/// Cuts `[from, to)` from the recordings in `dir` into `out`.
pub fn cut(
    dir: &Path,
    from: SystemTime,
    to: SystemTime,
    out: &Path,
    timeout: Duration,
) -> Result<Clip, ClipError> {
    let parts = plan(dir, from, to, SystemTime::now())?;
    let partial = out.with_extension("mkv.partial");
    let result = remux(&parts, &partial, timeout).and_then(|()| {
        std::fs::rename(&partial, out).map_err(|source| ClipError::Output {
            path: out.to_owned(),
            source,
        })
    });
    if let Err(e) = result {
        // Best effort: the partial file is useless; a failure to remove it is harmless.
        if let Err(rm) = std::fs::remove_file(&partial) {
            if rm.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %partial.display(), error = %rm, "cannot remove a partial clip");
            }
        }
        return Err(e);
    }
    let bytes = std::fs::metadata(out)
        .map_err(|source| ClipError::Output {
            path: out.to_owned(),
            source,
        })?
        .len();
    Ok(Clip {
        path: out.to_owned(),
        from: parts[0].start,
        to: parts[parts.len() - 1].end,
        segments: parts.into_iter().map(|s| s.path).collect(),
        bytes,
    })
}

/// splitmuxsrc reads the parts as one stream with continuous timestamps;
/// matroskamux writes it out as it came.
fn remux(parts: &[Segment], out: &Path, timeout: Duration) -> Result<(), ClipError> {
    gst::init().map_err(|e| ClipError::Build(e.to_string()))?;
    // Built from a description, not element by element: `ElementFactory::make` and
    // `Pipeline::new` go through glib's object constructor, whose only use of GIO
    // would make every build of the daemon load libgio and its dependencies at
    // start-up (0.5-0.8 MiB of RSS, README), video or not.
    let pipeline = gst::parse::launch(
        "splitmuxsrc name=src matroskamux name=mux ! filesink name=sink sync=false",
    )
    .map_err(|e| ClipError::Build(e.to_string()))?
    .downcast::<gst::Bin>()
    .map_err(|_| ClipError::Build("the remuxer is not a bin".into()))?;
    let element = |name: &str| {
        pipeline
            .by_name(name)
            .ok_or_else(|| ClipError::Build(format!("the remuxer has no {name}")))
    };
    let (src, mux, sink) = (element("src")?, element("mux")?, element("sink")?);
    sink.set_property("location", out.to_string_lossy().to_string());

    let files: Vec<String> = parts
        .iter()
        .map(|s| s.path.to_string_lossy().into_owned())
        .collect();
    src.connect("format-location", false, move |_| Some(files.to_value()));
    let mux_weak = mux.downgrade();
    src.connect_pad_added(move |_, pad| {
        let Some(mux) = mux_weak.upgrade() else {
            return;
        };
        let Some(sink_pad) = mux.request_pad_simple("video_%u") else {
            tracing::error!("the muxer refused a video pad");
            return;
        };
        if let Err(e) = pad.link(&sink_pad) {
            tracing::error!(error = ?e, "cannot link a clip stream to the muxer");
        }
    });

    let bus = pipeline
        .bus()
        .ok_or_else(|| ClipError::Build("pipeline without a bus".into()))?;
    let outcome = match pipeline.set_state(gst::State::Playing) {
        Err(e) => Err(ClipError::Remux(
            first_error(&bus).unwrap_or_else(|| e.to_string()),
        )),
        Ok(_) => match bus.timed_pop_filtered(
            gst::ClockTime::from_nseconds(timeout.as_nanos() as u64),
            &[gst::MessageType::Eos, gst::MessageType::Error],
        ) {
            None => Err(ClipError::Timeout(timeout)),
            Some(msg) => match msg.view() {
                gst::MessageView::Error(e) => Err(ClipError::Remux(e.error().to_string())),
                _ => Ok(()),
            },
        },
    };
    if let Err(e) = pipeline.set_state(gst::State::Null) {
        tracing::warn!(error = %e, "cannot stop the remuxer cleanly");
    }
    outcome
}

fn first_error(bus: &gst::Bus) -> Option<String> {
    let msg = bus.timed_pop_filtered(
        gst::ClockTime::from_mseconds(500),
        &[gst::MessageType::Error],
    )?;
    match msg.view() {
        gst::MessageView::Error(e) => Some(e.error().to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_or_uncovered_range_is_refused_with_a_reason() {
        let dir = tempfile::tempdir().unwrap();
        let t = SystemTime::now();
        assert!(matches!(
            plan(dir.path(), t, t, t),
            Err(ClipError::EmptyRange)
        ));
        let err = plan(dir.path(), t - Duration::from_secs(60), t, t).unwrap_err();
        assert!(
            err.to_string().starts_with("no finished recording covers"),
            "{err}"
        );
    }
}
