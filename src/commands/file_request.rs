//! `<camera-id>/file/request`: what a request may say, and every reason to refuse
//! one before anything is opened. Pure: no file system, no network (the media
//! directory check that needs the file system is in `upload::media`).
//!
//! Schema: `docs/schemas/file-request.json`.
//!
//! A build without the `uploads` feature reads only a request's id (to refuse it,
//! `commands::refusal`); the rest is the upload stage's.
#![cfg_attr(not(feature = "uploads"), allow(dead_code))]

use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// Longest `request_id`.
pub const MAX_REQUEST_ID: usize = 128;
/// Longest range a clip may cover.
pub const MAX_CLIP: Duration = Duration::from_secs(3600);

/// What to upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum What {
    /// A file, relative to the media directory; only normal components.
    File(String),
    /// A clip cut from the recordings.
    Range { from: SystemTime, to: SystemTime },
    /// The snapshot of an event (`snapshots/<event_id>.jpg` in the media directory).
    Event(String),
}

/// Where to upload it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Where {
    /// One PUT of the whole file to a URL made by the web app, with its headers.
    Presigned {
        url: String,
        headers: Vec<(String, String)>,
    },
    /// S3 multipart upload with the device's own credentials.
    S3 { bucket: String, key: String },
}

/// A request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRequest {
    pub request_id: String,
    pub what: What,
    pub target: Where,
    /// After this the request is refused (`expires_at`, or `sent_at` + `ttl`,
    /// the earlier when both are given).
    pub expires: Option<SystemTime>,
}

/// The reason given for a request that arrived after it expired; the answer's
/// `reason` starts with it.
pub const EXPIRED: &str = "expired";

impl FileRequest {
    /// Why the request may no longer be carried out at `now`, if it has expired.
    pub fn expired(&self, now: SystemTime) -> Option<String> {
        let at = self.expires?;
        let late = now.duration_since(at).ok()?;
        Some(format!(
            "{EXPIRED}: the request expired at {} and reached the camera {} s later",
            humantime::format_rfc3339_seconds(at),
            late.as_secs()
        ))
    }
}

/// Why a request is refused; `request_id` when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub request_id: Option<String>,
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    request_id: String,
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    event_id: Option<String>,
    #[serde(default)]
    presigned: Option<WirePresigned>,
    #[serde(default)]
    s3: Option<WireS3>,
    #[serde(default)]
    expires_at: Option<String>,
    #[serde(default)]
    sent_at: Option<String>,
    #[serde(default)]
    ttl: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WirePresigned {
    url: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireS3 {
    bucket: String,
    key: String,
}

/// Limits that come from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    pub max_request_bytes: usize,
    pub allow_plain_http: bool,
}

fn reject(request_id: Option<&str>, reason: impl Into<String>) -> Rejection {
    Rejection {
        request_id: request_id.map(str::to_owned),
        reason: reason.into(),
    }
}

/// A request id usable as a job key and in file names.
/// The `request_id` of a request read as loose JSON, when it is a valid one:
/// even a malformed request then gets an answer its sender can match.
pub fn lenient_id(request: Option<&serde_json::Value>) -> Option<String> {
    request
        .and_then(|v| v.get("request_id"))
        .and_then(|v| v.as_str())
        .filter(|id| valid_request_id(id))
        .map(str::to_owned)
}

pub fn valid_request_id(id: &str) -> bool {
    (1..=MAX_REQUEST_ID).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':'))
        && !id.starts_with('.')
}

/// A path relative to the media directory made of normal components only: not
/// absolute, no `..` or `.`, no empty component, no backslash or control character.
pub fn valid_relative_path(p: &str) -> Result<(), String> {
    if p.is_empty() || p.len() > 1024 {
        return Err("the file name must be 1-1024 bytes".into());
    }
    if p.starts_with('/') {
        return Err(format!(
            "{p:?} is absolute: name a file relative to the media directory"
        ));
    }
    if p.chars().any(|c| c.is_control() || c == '\\') {
        return Err("the file name holds a control character or a backslash".into());
    }
    for part in p.split('/') {
        match part {
            "" => return Err(format!("{p:?} has an empty path component")),
            "." | ".." => {
                return Err(format!(
                    "{p:?} leaves or names the directory itself ({part:?})"
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Parses and checks a request payload.
pub fn parse(payload: &[u8], policy: Policy) -> Result<FileRequest, Rejection> {
    if payload.len() > policy.max_request_bytes {
        return Err(reject(
            None,
            format!(
                "the request is {} bytes; at most {} are accepted",
                payload.len(),
                policy.max_request_bytes
            ),
        ));
    }
    // The id first, so that even a malformed request gets an answer it can match.
    let loose: Option<serde_json::Value> = serde_json::from_slice(payload).ok();
    let id = lenient_id(loose.as_ref());
    let id = id.as_deref();
    let mut de = serde_json::Deserializer::from_slice(payload);
    let wire: Wire = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if loose.is_none() {
            reject(id, format!("the request is not valid JSON: {inner}"))
        } else if path == "." {
            reject(id, format!("invalid request: {inner}"))
        } else {
            reject(id, format!("invalid request at {path}: {inner}"))
        }
    })?;
    if !valid_request_id(&wire.request_id) {
        return Err(reject(
            None,
            format!(
                "request_id must be 1-{MAX_REQUEST_ID} characters from A-Z a-z 0-9 _ - . : (not starting with .)"
            ),
        ));
    }
    let id = Some(wire.request_id.as_str());

    let what = match (&wire.file, &wire.from, &wire.to, &wire.event_id) {
        (Some(file), None, None, None) => {
            valid_relative_path(file).map_err(|r| reject(id, r))?;
            What::File(file.clone())
        }
        (None, Some(from), Some(to), None) => {
            let t = |name: &str, v: &str| {
                humantime::parse_rfc3339_weak(v).map_err(|_| {
                    reject(
                        id,
                        format!("{name} must be an RFC 3339 UTC time, found {v:?}"),
                    )
                })
            };
            let (from, to) = (t("from", from)?, t("to", to)?);
            let span = to
                .duration_since(from)
                .map_err(|_| reject(id, "to must be after from"))?;
            if span.is_zero() {
                return Err(reject(id, "to must be after from"));
            }
            if span > MAX_CLIP {
                return Err(reject(
                    id,
                    format!("a clip covers at most {} s", MAX_CLIP.as_secs()),
                ));
            }
            What::Range { from, to }
        }
        (None, None, None, Some(event)) => {
            if !valid_request_id(event) {
                return Err(reject(
                    id,
                    "event_id must be 1-128 characters from A-Z a-z 0-9 _ - . :",
                ));
            }
            What::Event(event.clone())
        }
        (None, Some(_), None, None) | (None, None, Some(_), None) => {
            return Err(reject(id, "a time range needs both from and to"))
        }
        _ => {
            return Err(reject(
                id,
                "name exactly one of: file, a time range (from and to), event_id",
            ))
        }
    };

    let target = match (wire.presigned, wire.s3) {
        (Some(p), None) => {
            crate::urls::check_url(&p.url, policy.allow_plain_http).map_err(|r| reject(id, r))?;
            for (name, value) in &p.headers {
                let token = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
                let forbidden = ["host", "content-length", "transfer-encoding", "connection"]
                    .contains(&name.to_ascii_lowercase().as_str());
                if !token || forbidden || value.chars().any(|c| c.is_control()) {
                    return Err(reject(id, format!("header {name:?} cannot be set")));
                }
            }
            Where::Presigned {
                url: p.url,
                headers: p.headers.into_iter().collect(),
            }
        }
        (None, Some(s3)) => {
            let bucket_ok = (3..=63).contains(&s3.bucket.len())
                && s3
                    .bucket
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
            if !bucket_ok {
                return Err(reject(
                    id,
                    format!("{:?} is not an S3 bucket name", s3.bucket),
                ));
            }
            if s3.key.is_empty() || s3.key.len() > 1024 || s3.key.chars().any(|c| c.is_control()) {
                return Err(reject(
                    id,
                    "the S3 key must be 1-1024 bytes without control characters",
                ));
            }
            Where::S3 {
                bucket: s3.bucket,
                key: s3.key,
            }
        }
        _ => return Err(reject(id, "name exactly one destination: presigned or s3")),
    };
    let time = |name: &str, v: &str| {
        humantime::parse_rfc3339_weak(v).map_err(|_| {
            reject(
                id,
                format!("{name} must be an RFC 3339 UTC time, found {v:?}"),
            )
        })
    };
    let by_time = wire
        .expires_at
        .as_deref()
        .map(|v| time("expires_at", v))
        .transpose()?;
    let by_ttl = match (wire.ttl, wire.sent_at.as_deref()) {
        (None, None) => None,
        (Some(0), _) => return Err(reject(id, "ttl must be at least 1 (seconds)")),
        (Some(ttl), Some(sent)) => Some(
            time("sent_at", sent)?
                .checked_add(Duration::from_secs(ttl))
                .ok_or_else(|| reject(id, "ttl is too large"))?,
        ),
        (Some(_), None) => {
            return Err(reject(
                id,
                "ttl needs sent_at (when the request was made): the camera cannot tell how long it waited",
            ))
        }
        (None, Some(_)) => return Err(reject(id, "sent_at is only used with ttl")),
    };
    let expires = match (by_time, by_ttl) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    Ok(FileRequest {
        request_id: wire.request_id,
        what,
        target,
        expires,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        max_request_bytes: 16 * 1024,
        allow_plain_http: false,
    };

    fn reason(json: &str) -> String {
        parse(json.as_bytes(), POLICY).unwrap_err().reason
    }

    #[test]
    fn a_file_to_a_presigned_url_parses() {
        let r = parse(
            br#"{"request_id":"r1","file":"snapshots/a.jpg","presigned":{"url":"https://b.s3.amazonaws.com/k?X-Amz-Signature=1","headers":{"content-type":"image/jpeg"}}}"#,
            POLICY,
        )
        .unwrap();
        assert_eq!(r.what, What::File("snapshots/a.jpg".into()));
        assert!(matches!(r.target, Where::Presigned { ref headers, .. } if headers.len() == 1));
    }

    #[test]
    fn a_range_to_s3_parses() {
        let r = parse(
            br#"{"request_id":"r2","from":"2026-11-22T06:00:00Z","to":"2026-11-22T06:01:00Z","s3":{"bucket":"clips","key":"cam/1.mkv"}}"#,
            POLICY,
        )
        .unwrap();
        assert!(matches!(r.what, What::Range { .. }));
    }

    #[test]
    fn hostile_paths_are_refused_before_anything_is_opened() {
        for (path, why) in [
            ("../../etc/passwd", "leaves"),
            ("/etc/shadow", "absolute"),
            ("a/../../b", "leaves"),
            ("a//b", "empty"),
            ("a\\b", "backslash"),
            ("./a", "leaves"),
        ] {
            let json = format!(
                r#"{{"request_id":"r","file":{},"s3":{{"bucket":"bkt","key":"k"}}}}"#,
                serde_json::to_string(path).unwrap()
            );
            let r = reason(&json);
            assert!(r.contains(why), "{path}: {r}");
        }
    }

    #[test]
    fn malformed_requests_say_what_is_wrong_and_keep_the_id_when_readable() {
        let r = parse(b"{not json", POLICY).unwrap_err();
        assert!(r.reason.contains("not valid JSON"), "{r:?}");
        assert_eq!(r.request_id, None);
        let r = parse(
            br#"{"request_id":"r9","s3":{"bucket":"bkt","key":"k"}}"#,
            POLICY,
        )
        .unwrap_err();
        assert_eq!(r.request_id.as_deref(), Some("r9"));
        assert!(r.reason.contains("exactly one of"), "{r:?}");
        assert!(reason(r#"{"file":"a","s3":{"bucket":"bkt","key":"k"}}"#).contains("request_id"));
        assert!(reason(r#"{"request_id":"r","file":"a"}"#).contains("destination"));
        assert!(reason(r#"{"request_id":"r","file":"a","s3":{"bucket":"bkt"}}"#).contains("key"));
        assert!(
            reason(r#"{"request_id":"r","file":"a","s3":{"bucket":"bkt","key":"k"},"x":1}"#)
                .contains("unknown field")
        );
        assert!(reason(
            r#"{"request_id":"r","from":"2026-11-22T06:00:00Z","s3":{"bucket":"bkt","key":"k"}}"#
        )
        .contains("both from and to"));
        assert!(reason(r#"{"request_id":"r","from":"2026-11-22T06:00:00Z","to":"2026-11-22T05:00:00Z","s3":{"bucket":"bkt","key":"k"}}"#)
            .contains("after"));
    }

    #[test]
    fn plain_http_and_oversized_requests_are_refused() {
        let http = r#"{"request_id":"r","file":"a","presigned":{"url":"http://127.0.0.1:9/b/k"}}"#;
        assert!(reason(http).contains("plain-HTTP"));
        let allowed = Policy {
            allow_plain_http: true,
            ..POLICY
        };
        assert!(parse(http.as_bytes(), allowed).is_ok());
        let big = format!(r#"{{"request_id":"r","file":"{}"}}"#, "a".repeat(1 << 20));
        assert!(reason(&big).contains("at most 16384"));
    }

    #[test]
    fn a_request_expires_at_its_time_or_after_its_ttl_whichever_is_first() {
        let at = |t: &str| humantime::parse_rfc3339(t).unwrap();
        let dest = r#""file":"a","s3":{"bucket":"bkt","key":"k"}"#;
        let req = |extra: &str| {
            parse(
                format!(r#"{{"request_id":"r",{dest}{extra}}}"#).as_bytes(),
                POLICY,
            )
        };
        assert_eq!(req("").unwrap().expires, None);
        let r = req(r#","expires_at":"2026-11-29T10:00:00Z""#).unwrap();
        assert_eq!(r.expires, Some(at("2026-11-29T10:00:00Z")));
        assert_eq!(r.expired(at("2026-11-29T09:59:59Z")), None);
        let why = r.expired(at("2026-11-29T10:00:42Z")).unwrap();
        assert!(why.starts_with(EXPIRED), "{why}");
        assert!(why.contains("42 s later"), "{why}");
        let r = req(r#","sent_at":"2026-11-29T09:00:00Z","ttl":600"#).unwrap();
        assert_eq!(r.expires, Some(at("2026-11-29T09:10:00Z")));
        let both =
            r#","expires_at":"2026-11-29T09:05:00Z","sent_at":"2026-11-29T09:00:00Z","ttl":600"#;
        assert_eq!(req(both).unwrap().expires, Some(at("2026-11-29T09:05:00Z")));
    }

    #[test]
    fn expiry_fields_that_cannot_be_read_are_refused() {
        let dest = r#""file":"a","s3":{"bucket":"bkt","key":"k"}"#;
        let why = |extra: &str| reason(&format!(r#"{{"request_id":"r",{dest}{extra}}}"#));
        assert!(why(r#","expires_at":"tomorrow""#).contains("expires_at must be"));
        assert!(why(r#","ttl":60"#).contains("needs sent_at"));
        assert!(why(r#","ttl":0,"sent_at":"2026-11-29T09:00:00Z""#).contains("at least 1"));
        assert!(why(r#","sent_at":"2026-11-29T09:00:00Z""#).contains("only used with ttl"));
        assert!(why(r#","ttl":-5,"sent_at":"2026-11-29T09:00:00Z""#).contains("ttl"));
        assert!(
            why(r#","ttl":18446744073709551615,"sent_at":"2026-11-29T09:00:00Z""#)
                .contains("too large")
        );
    }

    #[test]
    fn headers_that_would_break_the_request_are_refused() {
        let json = r#"{"request_id":"r","file":"a","presigned":{"url":"https://h/k","headers":{"Content-Length":"1"}}}"#;
        assert!(reason(json).contains("cannot be set"));
    }
}
