//! Frames for analytics, and the queues that hand them over: one per analytic,
//! each frame shared between them. Policy when full: drop the oldest (analytics
//! want the newest picture), counted in that analytic's counter. A queue whose
//! analytic is switched off takes nothing (not a loss: nobody wants the frames).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::metrics::Metrics;

/// One RGB frame at the analytics size.
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

/// Which counter a queue's drops go to.
pub type DropCounter = fn(&Metrics) -> &AtomicU64;

struct Inner<T> {
    queue: Mutex<VecDeque<Arc<T>>>,
    notify: Notify,
    wanted: AtomicBool,
}

/// A bounded queue of shared items (frames, or frames with what was detected in
/// them) from one stage to another: never blocks the sender, drops the oldest.
pub struct Queue<T> {
    inner: Arc<Inner<T>>,
    capacity: usize,
    metrics: Arc<Metrics>,
    dropped: DropCounter,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            capacity: self.capacity,
            metrics: self.metrics.clone(),
            dropped: self.dropped,
        }
    }
}

/// A bounded queue from the GStreamer streaming thread to one analytics stage.
pub type FrameQueue = Queue<Frame>;

impl<T> Queue<T> {
    /// A queue of `capacity` frames whose drops count in `dropped`; it takes
    /// frames until [`FrameQueue::set_wanted`] says otherwise.
    pub fn new(capacity: usize, metrics: Arc<Metrics>, dropped: DropCounter) -> Self {
        Self {
            inner: Arc::new(Inner {
                queue: Mutex::new(VecDeque::with_capacity(capacity)),
                notify: Notify::new(),
                wanted: AtomicBool::new(true),
            }),
            capacity: capacity.max(1),
            metrics,
            dropped,
        }
    }

    /// Whether the stage reading this queue wants anything now.
    pub fn wanted(&self) -> bool {
        self.inner.wanted.load(Relaxed)
    }

    /// Whether the analytic reading this queue is on; while off, frames are not
    /// queued (and the waiting ones are let go).
    pub fn set_wanted(&self, wanted: bool) {
        self.inner.wanted.store(wanted, Relaxed);
        if !wanted {
            self.lock().clear();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Arc<T>>> {
        self.inner.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a frame, dropping (and counting) the oldest when full. Never blocks.
    pub fn push(&self, frame: Arc<T>) {
        if !self.inner.wanted.load(Relaxed) {
            return;
        }
        let mut q = self.lock();
        if q.len() >= self.capacity {
            q.pop_front();
            Metrics::add((self.dropped)(&self.metrics), 1);
        }
        q.push_back(frame);
        drop(q);
        self.inner.notify.notify_one();
    }

    /// The oldest waiting frame, waiting for one if needed.
    pub async fn pop(&self) -> Arc<T> {
        loop {
            let notified = self.inner.notify.notified();
            if let Some(f) = self.lock().pop_front() {
                return f;
            }
            notified.await;
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Arc<Frame> {
        Arc::new(Frame {
            width: 1,
            height: 1,
            rgb: vec![n, n, n],
            captured_at: SystemTime::now(),
        })
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
        let q = FrameQueue::new(2, metrics.clone(), |m| &m.frames_dropped);
        for n in 1..=4 {
            q.push(frame(n));
        }
        assert_eq!(q.len(), 2);
        assert_eq!(Metrics::get(&metrics.frames_dropped), 2);
        assert_eq!(q.pop().await.rgb[0], 3);
        assert_eq!(q.pop().await.rgb[0], 4);
    }

    #[test]
    fn an_unwanted_queue_takes_nothing_and_counts_no_loss() {
        let metrics = Arc::new(Metrics::default());
        let q = FrameQueue::new(2, metrics.clone(), |m| &m.frames_dropped);
        q.push(frame(1));
        q.set_wanted(false);
        assert_eq!(q.len(), 0);
        for n in 2..=5 {
            q.push(frame(n));
        }
        assert_eq!(q.len(), 0);
        assert_eq!(Metrics::get(&metrics.frames_dropped), 0);
        q.set_wanted(true);
        q.push(frame(6));
        assert_eq!(q.len(), 1);
    }
}
