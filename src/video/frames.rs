//! Frames for analytics, and the queue that hands them over. Policy when full:
//! drop the oldest (analytics want the newest picture), counted.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::metrics::Metrics;

/// One RGB frame at the analytics size.
// Read by the analytics stages, which are not built yet.
#[allow(dead_code)]
#[derive(Debug, Clone)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    /// Packed RGB, `width * height * 3` bytes.
    pub rgb: Vec<u8>,
    /// When the camera captured it (wall clock), as best known.
    pub captured_at: SystemTime,
}

/// Packed RGB from a GStreamer RGB buffer, whose rows are padded to a multiple of
/// four bytes.
pub fn packed_rgb(data: &[u8], width: u32, height: u32) -> Vec<u8> {
    let row = (width * 3) as usize;
    let stride = row.div_ceil(4) * 4;
    if stride == row {
        return data[..(row * height as usize).min(data.len())].to_vec();
    }
    data.chunks(stride)
        .take(height as usize)
        .flat_map(|r| &r[..row.min(r.len())])
        .copied()
        .collect()
}

/// A bounded queue from the GStreamer streaming thread to the analytics stage.
#[derive(Clone)]
pub struct FrameQueue {
    inner: Arc<(Mutex<VecDeque<Frame>>, Notify)>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl FrameQueue {
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            inner: Arc::new((Mutex::new(VecDeque::with_capacity(capacity)), Notify::new())),
            capacity: capacity.max(1),
            metrics,
        }
    }

    /// Adds a frame, dropping (and counting) the oldest when full. Never blocks.
    pub fn push(&self, frame: Frame) {
        let (queue, notify) = &*self.inner;
        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.len() >= self.capacity {
            q.pop_front();
            Metrics::add(&self.metrics.frames_dropped, 1);
        }
        q.push_back(frame);
        drop(q);
        notify.notify_one();
    }

    /// The oldest waiting frame, waiting for one if needed.
    #[allow(dead_code)] // the analytics stages' side
    pub async fn pop(&self) -> Frame {
        let (queue, notify) = &*self.inner;
        loop {
            let notified = notify.notified();
            if let Some(f) = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
                return f;
            }
            notified.await;
        }
    }

    #[allow(dead_code)] // the analytics stages' side
    pub fn len(&self) -> usize {
        self.inner.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Frame {
        Frame {
            width: 1,
            height: 1,
            rgb: vec![n, n, n],
            captured_at: SystemTime::now(),
        }
    }

    #[test]
    fn padded_rows_are_packed() {
        // 2 pixels wide: 6 bytes a row, padded to 8.
        let data = [1, 2, 3, 4, 5, 6, 0, 0, 7, 8, 9, 10, 11, 12, 0, 0];
        assert_eq!(packed_rgb(&data, 2, 2), (1..=12).collect::<Vec<u8>>());
        let packed = [1u8; 12 * 2];
        assert_eq!(packed_rgb(&packed, 4, 2), packed.to_vec());
    }

    #[tokio::test]
    async fn full_queue_drops_the_oldest_and_counts_it() {
        let metrics = Arc::new(Metrics::default());
        let q = FrameQueue::new(2, metrics.clone());
        for n in 1..=4 {
            q.push(frame(n));
        }
        assert_eq!(q.len(), 2);
        assert_eq!(Metrics::get(&metrics.frames_dropped), 2);
        assert_eq!(q.pop().await.rgb[0], 3);
        assert_eq!(q.pop().await.rgb[0], 4);
    }
}
