//! What the pipeline is made of, without running anything: the source, and the
//! `gst-launch` description of the whole pipeline (unit-tested).

use super::{Codec, RtspTransport, VideoConfig};

/// Where the video comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A moving test pattern with a clock overlay.
    Test,
    /// An RTSP camera stream (credentials may be in the URL).
    Rtsp(String),
    /// A V4L2 device.
    V4l2(String),
    /// A video file played in a loop at its own pace (demos, tests): decoded and
    /// re-encoded for recording like a raw source.
    File(String),
}

/// Characters that cannot appear in a source (they would break out of the quoted
/// launch-description value).
fn safe(s: &str) -> bool {
    !s.is_empty()
        && !s
            .chars()
            .any(|c| c == '"' || c == '\\' || c.is_whitespace() || c.is_control())
}

impl Source {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "test" {
            Ok(Source::Test)
        } else if (s.starts_with("rtsp://") || s.starts_with("rtsps://")) && safe(s) && s.len() > 8
        {
            Ok(Source::Rtsp(s.to_owned()))
        } else if let Some(dev) = s.strip_prefix("v4l2://") {
            if dev.starts_with("/dev/") && safe(dev) {
                Ok(Source::V4l2(dev.to_owned()))
            } else {
                Err(format!("expected v4l2:///dev/<device>, found {s:?}"))
            }
        } else if let Some(path) = s.strip_prefix("file://") {
            if path.starts_with('/') && safe(path) {
                Ok(Source::File(path.to_owned()))
            } else {
                Err(format!("expected file:///<absolute path>, found {s:?}"))
            }
        } else {
            Err(format!(
                "expected test, rtsp://…, v4l2:///dev/… or file:///…, found {s:?}"
            ))
        }
    }

    /// The URL without its password, for logs.
    pub fn redacted(&self) -> String {
        match self {
            Source::Rtsp(url) => match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    let creds = &url[scheme + 3..at];
                    let user = creds.split(':').next().unwrap_or("");
                    format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
                }
                _ => url.clone(),
            },
            Source::Test => "test".to_owned(),
            Source::V4l2(dev) => format!("v4l2://{dev}"),
            Source::File(path) => format!("file://{path}"),
        }
    }
}

/// Names of the elements the stage looks up.
pub const TEE: &str = "t";
pub const RECORDER: &str = "rec";
pub const FRAMES: &str = "frames";
/// The queue in front of the analytics decoder (RTSP): its overruns are encoded
/// frames dropped.
pub const DECODER_QUEUE: &str = "decq";

/// The pipeline: source → tee → (recording without re-encoding when the source is
/// encoded) and (decoded, rate-limited, scaled RGB frames into an appsink).
/// `clock_overlay`: stamp the test pattern with the time (needs GStreamer's pango
/// plugin; without it the pattern runs bare).
pub fn describe(cfg: &VideoConfig, source: &Source, clock_overlay: bool) -> String {
    let segment_ns = cfg.segment_duration.as_nanos();
    let record = format!(
        "splitmuxsink name={RECORDER} muxer-factory=matroskamux max-size-time={segment_ns} \
         send-keyframe-requests=true async-finalize=false"
    );
    let analytics = format!(
        "videorate drop-only=true ! videoscale ! videoconvert ! \
         video/x-raw,format=RGB,width={w},height={h},framerate={fps}/1 ! \
         appsink name={FRAMES} max-buffers=1 drop=true sync=false emit-signals=false",
        w = cfg.analytics_width,
        h = cfg.analytics_height,
        fps = cfg.analytics_fps,
    );
    let leaky = "queue leaky=downstream max-size-buffers=2 max-size-bytes=0 max-size-time=0";
    let raw_caps = format!(
        "video/x-raw,width={},height={},framerate={}/1",
        cfg.width, cfg.height, cfg.framerate
    );
    let encode = format!(
        "videoconvert ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={} ! \
         video/x-h264,profile=baseline ! h264parse",
        cfg.framerate
    );
    match source {
        Source::Test => {
            let overlay = if clock_overlay {
                "clockoverlay time-format=\"%Y-%m-%d %H:%M:%S\" ! "
            } else {
                ""
            };
            format!(
                "videotestsrc is-live=true pattern=ball ! {raw_caps} ! {overlay}tee name={TEE} \
                 {TEE}. ! queue ! {encode} ! {record} \
                 {TEE}. ! {leaky} ! {analytics}"
            )
        }
        Source::V4l2(dev) => format!(
            "v4l2src device=\"{dev}\" ! {raw_caps} ! tee name={TEE} \
             {TEE}. ! queue ! {encode} ! {record} \
             {TEE}. ! {leaky} ! {analytics}"
        ),
        // `clocksync` paces the file to real time; the stage loops it with
        // segment seeks, so running time keeps growing across loops.
        Source::File(path) => format!(
            "filesrc location=\"{path}\" ! decodebin ! videoconvert ! videoscale ! videorate ! \
             {raw_caps} ! clocksync ! tee name={TEE} \
             {TEE}. ! queue ! {encode} ! {record} \
             {TEE}. ! {leaky} ! {analytics}"
        ),
        Source::Rtsp(url) => {
            let (depay, parse, decode) = match cfg.codec {
                Codec::H264 => ("rtph264depay", "h264parse", "avdec_h264"),
                Codec::H265 => ("rtph265depay", "h265parse", "avdec_h265"),
            };
            // Encoded frames are dropped only when the decoder falls two seconds
            // behind (dropping one breaks the picture until the next keyframe);
            // decoded frames are dropped freely after it.
            let decoder_queue = format!(
                "queue name={DECODER_QUEUE} leaky=downstream max-size-buffers=0 \
                 max-size-bytes=0 max-size-time=2000000000"
            );
            let protocols = match cfg.rtsp_transport {
                RtspTransport::Tcp => "tcp",
                RtspTransport::Udp => "udp",
            };
            format!(
                "rtspsrc location=\"{url}\" protocols={protocols} latency=200 ! {depay} ! \
                 {parse} config-interval=-1 ! tee name={TEE} \
                 {TEE}. ! queue ! {record} \
                 {TEE}. ! {decoder_queue} ! {decode} ! {leaky} ! {analytics}"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_parse_and_refuse_what_would_break_the_description() {
        assert_eq!(Source::parse("test"), Ok(Source::Test));
        assert_eq!(
            Source::parse("rtsp://u:p@10.0.0.5:554/stream1"),
            Ok(Source::Rtsp("rtsp://u:p@10.0.0.5:554/stream1".into()))
        );
        assert_eq!(
            Source::parse("v4l2:///dev/video0"),
            Ok(Source::V4l2("/dev/video0".into()))
        );
        assert_eq!(
            Source::parse("file:///var/lib/edgecam/demo.mp4"),
            Ok(Source::File("/var/lib/edgecam/demo.mp4".into()))
        );
        for bad in [
            "",
            "rtsp://",
            "rtsp://h/\" ! filesink",
            "rtsp://a b",
            "v4l2://video0",
            "file://demo.mp4",
            "file:///a\" ! fakesink",
            "http://x",
        ] {
            assert!(Source::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn password_is_redacted_in_logs() {
        let s = Source::parse("rtsp://admin:secret@cam/s").unwrap();
        assert_eq!(s.redacted(), "rtsp://admin:***@cam/s");
    }

    #[test]
    fn rtsp_records_without_reencoding_and_decodes_only_for_analytics() {
        let cfg = VideoConfig::default();
        let d = describe(&cfg, &Source::parse("rtsp://cam/s").unwrap(), true);
        let record = d.split("t. ").nth(1).unwrap();
        assert!(
            record.contains("splitmuxsink") && !record.contains("enc"),
            "{record}"
        );
        assert!(d.contains("protocols=tcp"));
        let analytics = d.split("t. ").nth(2).unwrap();
        assert!(
            analytics.contains("avdec_h264") && analytics.contains("framerate=5/1"),
            "{analytics}"
        );
        // Nothing leaks between the tee and the decoder but a two-second queue.
        let before_decoder = analytics.split("avdec_h264").next().unwrap();
        assert!(
            before_decoder.contains("max-size-time=2000000000")
                && before_decoder.matches("queue").count() == 1,
            "{before_decoder}"
        );
        assert!(d.contains("max-size-time=60000000000"));
    }
}
