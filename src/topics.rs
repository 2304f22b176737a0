//! The topic map, and the checks that keep every topic inside the broker's limits.
//!
//! | topic                          | direction | QoS | retained | what                          |
//! |--------------------------------|-----------|-----|----------|-------------------------------|
//! | `<camera-id>/events/<kind>`    | up        | 1   | no       | a batch of events of one kind |
//! | `<camera-id>/status`           | up        | 1   | yes      | `online` birth / `offline` will |
//! | `<camera-id>/status/metrics`   | up        | 0   | no       | periodic metrics              |
//! | `<camera-id>/config`           | down      | 1   | yes      | remote configuration          |
//! | `<camera-id>/config/status`    | up        | 1   | yes      | outcome of the last config    |
//! | `<camera-id>/file/request`     | down      | 1   | no       | upload requests               |
//! | `<camera-id>/file/response`    | up        | 1   | no       | states of upload requests     |

/// Why a topic cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopicError {
    #[error("topic is {len} bytes, the limit is {max}")]
    TooLong { len: usize, max: usize },
    #[error("topic has {slashes} slashes, the limit is {max}")]
    TooDeep { slashes: usize, max: usize },
}

/// Longest event kind accepted.
pub const MAX_KIND_LEN: usize = 64;

/// A camera id usable as MQTT client id and as a topic level.
pub fn valid_camera_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':' | b'.'))
}

/// An event kind usable as a topic level.
pub fn valid_kind(kind: &str) -> bool {
    (1..=MAX_KIND_LEN).contains(&kind.len())
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'))
}

/// A fleet group name usable as a topic level.
pub fn valid_group(group: &str) -> bool {
    (1..=64).contains(&group.len())
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// Checks a topic against the byte-length and depth ceilings.
pub fn check_topic(topic: &str, max_bytes: usize, max_slashes: usize) -> Result<(), TopicError> {
    if topic.len() > max_bytes {
        return Err(TopicError::TooLong {
            len: topic.len(),
            max: max_bytes,
        });
    }
    let slashes = topic.bytes().filter(|&b| b == b'/').count();
    if slashes > max_slashes {
        return Err(TopicError::TooDeep {
            slashes,
            max: max_slashes,
        });
    }
    Ok(())
}

/// Builds the topics of one camera.
#[derive(Debug, Clone)]
pub struct Topics {
    camera_id: String,
}

impl Topics {
    pub fn new(camera_id: &str) -> Self {
        Self {
            camera_id: camera_id.to_owned(),
        }
    }

    /// `<camera-id>/events/<kind>`.
    pub fn events(&self, kind: &str) -> String {
        format!("{}/events/{kind}", self.camera_id)
    }

    /// `<camera-id>/status` (retained birth and last will).
    pub fn status(&self) -> String {
        format!("{}/status", self.camera_id)
    }

    /// `<camera-id>/status/metrics`.
    pub fn metrics(&self) -> String {
        format!("{}/status/metrics", self.camera_id)
    }

    /// `<camera-id>/config`: the camera's own retained configuration.
    pub fn config(&self) -> String {
        format!("{}/config", self.camera_id)
    }

    /// `<camera-id>/config/status`: the retained outcome of the last configuration.
    pub fn config_status(&self) -> String {
        format!("{}/config/status", self.camera_id)
    }

    /// `<camera-id>/file/request`: upload requests from the cloud.
    pub fn file_request(&self) -> String {
        format!("{}/file/request", self.camera_id)
    }

    /// `<camera-id>/file/response`: the states of those requests.
    pub fn file_response(&self) -> String {
        format!("{}/file/response", self.camera_id)
    }

    /// `fleet/<group>/config`: the group's retained configuration.
    pub fn group_config(group: &str) -> String {
        format!("fleet/{group}/config")
    }

    /// The longest topic this camera can publish to (an event of the longest kind).
    pub fn longest_fixed(&self) -> String {
        self.events(&"k".repeat(MAX_KIND_LEN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_topic_has_camera_events_kind() {
        assert_eq!(Topics::new("cam-7").events("plate"), "cam-7/events/plate");
    }

    #[test]
    fn topic_over_seven_slashes_is_refused() {
        assert_eq!(
            check_topic("a/b/c/d/e/f/g/h/i", 256, 7),
            Err(TopicError::TooDeep { slashes: 8, max: 7 })
        );
        assert_eq!(check_topic("a/b/c/d/e/f/g/h", 256, 7), Ok(()));
    }

    #[test]
    fn topic_over_256_bytes_is_refused() {
        let t = "x".repeat(257);
        assert_eq!(
            check_topic(&t, 256, 7),
            Err(TopicError::TooLong { len: 257, max: 256 })
        );
    }

    #[test]
    fn camera_id_and_kind_reject_wildcards_and_separators() {
        assert!(valid_camera_id("ABC_12-x:y.z"));
        for bad in ["", "a/b", "a+b", "a#", "a b"] {
            assert!(!valid_camera_id(bad), "{bad:?}");
        }
        assert!(valid_kind("plate_read-2"));
        for bad in ["", "Plate", "a/b", "+", &"k".repeat(65)] {
            assert!(!valid_kind(bad), "{bad:?}");
        }
    }
}
