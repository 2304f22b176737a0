//! The process's memory allocator: the system's (glibc's malloc), except for
//! large blocks, which are mapped from the kernel on their own and, once freed,
//! kept on a small shelf for the next large block that fits.
//!
//! Why: the models (the object detector, the plate reader's text detector and
//! recognisers) allocate and free their working tensors, up to tens of MiB
//! each, on every frame. glibc carves blocks that large from its heaps once a
//! few have been freed (its mapping threshold rises with them), and the holes
//! they leave do not fit the next plan's tensors: with a vehicle in view the
//! daemon's peak grew by a third. Mapping each large block on its own gives the
//! memory back at once, but the kernel then clears every page again on first
//! touch: a third more time per plate frame read, a seventh per detector frame.
//! The models' large blocks alive at once are few (about 50 MiB while the
//! plate reader reads a frame) against the gigabytes they allocate over a
//! minute, so the shelf hands a freed block, already in memory, to the next
//! request it fits (the smallest that does, at most `MAX_FIT` times too big),
//! keeps them while the large blocks in use and on the shelf stay within
//! `FOOTPRINT` (the longest unused go first) and gives back those unused for
//! `MAX_WAIT_MS`. Each block starts with a page
//! that records its length. Measured in docs/detector.md, "Large blocks".

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// Blocks from this size up bypass glibc's heaps.
pub const LARGE: usize = 1 << 20;

/// At most this much memory in large blocks, in use and on the shelf
/// together: the shelf keeps a freed block only within what the blocks in use
/// leave of it, so it holds most between two models' runs and little at the
/// peak of one.
pub const FOOTPRINT: usize = 64 << 20;

/// At most this many freed blocks wait on the shelf.
const SLOTS: usize = 64;

/// A block that waited this long is given back to the kernel (milliseconds):
/// the memory of a model that stopped running does not stay held.
pub const MAX_WAIT_MS: u64 = 10_000;

/// A block from the shelf serves a request at most this many times smaller.
const MAX_FIT: usize = 4;

/// The alignment a mapping always has (the smallest page of the platforms we
/// build for); larger alignments go to the system allocator. Also the header
/// before each block, which records the mapping's length.
const MAP_ALIGN: usize = 4096;

/// The large blocks' bookkeeping, pure (the allocator maps and unmaps): the
/// freed ones waiting to be used again, by address and length, and the bytes
/// of those in use.
#[derive(Debug)]
pub struct Shelf {
    /// `(address, length, when put, in ms)`; length 0 is an empty slot.
    slots: [(usize, usize, u64); SLOTS],
    /// Bytes on the shelf.
    bytes: usize,
    /// Bytes of the large blocks in use.
    in_use: usize,
    footprint: usize,
}

impl Shelf {
    pub const fn new(footprint: usize) -> Self {
        Self {
            slots: [(0, 0, 0); SLOTS],
            bytes: 0,
            in_use: 0,
            footprint,
        }
    }

    /// The smallest waiting block of `len` bytes or more (at most `MAX_FIT`
    /// times more), now in use: its address and length. `None`: map one and
    /// say so with `mapped`.
    pub fn take(&mut self, len: usize) -> Option<(usize, usize)> {
        let i = (0..SLOTS)
            .filter(|&i| {
                let l = self.slots[i].1;
                l >= len && l <= len.saturating_mul(MAX_FIT)
            })
            .min_by_key(|&i| self.slots[i].1)?;
        let block = self.remove(i);
        self.in_use += block.1;
        Some(block)
    }

    /// A block of `len` bytes was freshly mapped and is in use. Returns the
    /// blocks to unmap to stay within the footprint, longest waiting first.
    pub fn mapped(&mut self, len: usize) -> Evicted {
        self.in_use += len;
        let mut evicted = Evicted::default();
        self.make_room(0, &mut evicted);
        evicted
    }

    /// A block in use was freed at `now` (ms): it goes on the shelf. Returns
    /// the blocks to unmap: those that waited `MAX_WAIT_MS` or more, those
    /// longest waiting to stay within the footprint, or the block itself when
    /// the blocks in use leave no room for it.
    pub fn put(&mut self, addr: usize, len: usize, now: u64) -> Evicted {
        self.in_use = self.in_use.saturating_sub(len);
        let mut evicted = self.trim(now);
        if self.in_use + len > self.footprint {
            evicted.push((addr, len));
            return evicted;
        }
        self.make_room(len, &mut evicted);
        let free = self.slots.iter_mut().find(|s| s.1 == 0).expect("made room");
        *free = (addr, len, now);
        self.bytes += len;
        evicted
    }

    /// Takes the longest waiting blocks off until `more` bytes and a slot fit.
    fn make_room(&mut self, more: usize, evicted: &mut Evicted) {
        while self.bytes > 0
            && (self.in_use + self.bytes + more > self.footprint
                || (more > 0 && !self.slots.iter().any(|s| s.1 == 0)))
        {
            let oldest = (0..SLOTS)
                .filter(|&i| self.slots[i].1 != 0)
                .min_by_key(|&i| self.slots[i].2)
                .expect("bytes on the shelf are in a slot");
            evicted.push(self.remove(oldest));
        }
    }

    /// The blocks that waited `MAX_WAIT_MS` or more at `now`, off the shelf.
    pub fn trim(&mut self, now: u64) -> Evicted {
        let mut evicted = Evicted::default();
        for i in 0..SLOTS {
            let (_, len, when) = self.slots[i];
            if len != 0 && now.saturating_sub(when) >= MAX_WAIT_MS {
                evicted.push(self.remove(i));
            }
        }
        evicted
    }

    fn remove(&mut self, i: usize) -> (usize, usize) {
        let (addr, len, _) = self.slots[i];
        self.slots[i] = (0, 0, 0);
        self.bytes -= len;
        (addr, len)
    }

    /// Bytes waiting on the shelf.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Blocks to unmap, without allocating: at most every slot and the new block.
#[derive(Debug)]
pub struct Evicted {
    blocks: [(usize, usize); SLOTS + 1],
    n: usize,
}

impl Default for Evicted {
    fn default() -> Self {
        Self {
            blocks: [(0, 0); SLOTS + 1],
            n: 0,
        }
    }
}

impl Evicted {
    fn push(&mut self, block: (usize, usize)) {
        self.blocks[self.n] = block;
        self.n += 1;
    }

    pub fn blocks(&self) -> &[(usize, usize)] {
        &self.blocks[..self.n]
    }
}

/// The allocator (`#[global_allocator]` in main.rs).
pub struct Allocator;

static SHELF: Mutex<Shelf> = Mutex::new(Shelf::new(FOOTPRINT));

/// A monotonic clock in milliseconds that neither allocates nor fails: the
/// coarse clock (cheap, a few ms of resolution is plenty), else the precise one.
fn now_ms() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec to write to.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut t) } != 0 {
        // SAFETY: as above.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    }
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

/// Gives back to the kernel the blocks that waited `MAX_WAIT_MS` or more, when
/// no model has run since (a freed block is otherwise checked at the next one).
/// The health stage calls it every few seconds.
pub fn trim() {
    let evicted = match SHELF.lock() {
        Ok(mut s) => s.trim(now_ms()),
        Err(_) => return,
    };
    // SAFETY: off the shelf: nothing uses them.
    unsafe { unmap_all(&evicted) };
}

fn large(layout: &Layout) -> bool {
    layout.size() >= LARGE && layout.align() <= MAP_ALIGN
}

/// The mapping's length for a block of `size` bytes: its header and whole pages.
fn mapped_len(size: usize) -> usize {
    MAP_ALIGN + size.div_ceil(MAP_ALIGN) * MAP_ALIGN
}

/// A fresh mapping (zeroed by the kernel), or null.
unsafe fn map(len: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping has no preconditions.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

unsafe fn unmap_all(blocks: &Evicted) {
    for &(addr, len) in blocks.blocks() {
        // SAFETY: each is a whole mapping of ours that nothing uses any more.
        unsafe { libc::munmap(addr as *mut libc::c_void, len) };
    }
}

/// A large block of at least `size` bytes, after its header: from the shelf
/// (`true`: reused, its old contents still there) or freshly mapped; null if
/// the kernel has no memory.
unsafe fn large_block(size: usize) -> (*mut u8, bool) {
    let len = mapped_len(size);
    let reused = SHELF.lock().ok().and_then(|mut s| s.take(len));
    let (base, len, reused) = match reused {
        Some((addr, len)) => (addr as *mut u8, len, true),
        None => {
            // SAFETY: see `map`.
            let base = unsafe { map(len) };
            if base.is_null() {
                return (base, false);
            }
            if let Ok(mut s) = SHELF.lock() {
                let evicted = s.mapped(len);
                drop(s);
                // SAFETY: off the shelf: nothing uses them.
                unsafe { unmap_all(&evicted) };
            }
            (base, len, false)
        }
    };
    // SAFETY: the mapping starts with a header page of ours.
    unsafe {
        base.cast::<usize>().write(len);
        (base.add(MAP_ALIGN), reused)
    }
}

/// The mapping under a large block: its start and length.
unsafe fn mapping(ptr: *mut u8) -> (usize, usize) {
    // SAFETY: `ptr` came from `large_block`, a page after the header.
    unsafe {
        let base = ptr.sub(MAP_ALIGN);
        (base as usize, base.cast::<usize>().read())
    }
}

// SAFETY: large blocks are mappings of at least the layout's size and a header
// page, page aligned (at least the layout's alignment), each given out once
// until freed; everything else is the system allocator's. Nothing here
// allocates: the shelf's lock is a futex, the eviction list lives on the stack.
unsafe impl GlobalAlloc for Allocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if large(&layout) {
            // SAFETY: see the impl.
            unsafe { large_block(layout.size()).0 }
        } else {
            // SAFETY: forwarded as is.
            unsafe { System.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if !large(&layout) {
            // SAFETY: forwarded as is.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // SAFETY: see the impl.
        let (p, reused) = unsafe { large_block(layout.size()) };
        if reused {
            // SAFETY: the block holds at least `size` bytes.
            unsafe { std::ptr::write_bytes(p, 0, layout.size()) };
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !large(&layout) {
            // SAFETY: forwarded as is.
            return unsafe { System.dealloc(ptr, layout) };
        }
        // SAFETY: a large block of ours.
        let (base, len) = unsafe { mapping(ptr) };
        let evicted = match SHELF.lock() {
            Ok(mut s) => s.put(base, len, now_ms()),
            Err(_) => {
                let mut e = Evicted::default();
                e.push((base, len));
                e
            }
        };
        // SAFETY: off the shelf, or the freed block itself.
        unsafe { unmap_all(&evicted) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's layout is valid; the new one has its alignment.
        let new = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !large(&layout) && !large(&new) {
            // SAFETY: forwarded as is.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a large block of ours, the rest of its mapping after the header.
        if large(&layout) && large(&new) && new_size <= unsafe { mapping(ptr).1 } - MAP_ALIGN {
            return ptr;
        }
        // SAFETY: a new block, the common part copied, the old one freed.
        unsafe {
            let p = self.alloc(new);
            if !p.is_null() {
                std::ptr::copy_nonoverlapping(ptr, p, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            p
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A shelf holding `blocks` (address, length), freed in that order.
    fn shelf(footprint: usize, blocks: &[(usize, usize)]) -> Shelf {
        let mut s = Shelf::new(footprint);
        for &(_, len) in blocks {
            assert!(s.mapped(len).blocks().is_empty());
        }
        for (t, &(addr, len)) in blocks.iter().enumerate() {
            assert!(s.put(addr, len, t as u64).blocks().is_empty());
        }
        s
    }

    #[test]
    fn a_request_gets_the_smallest_waiting_block_it_fits_not_one_far_too_big() {
        let mut s = shelf(
            64 << 20,
            &[(0x1000, 8 << 20), (0x2000, 3 << 20), (0x3000, 40 << 20)],
        );
        assert_eq!(s.take(41 << 20), None);
        assert_eq!(s.take(2 << 20), Some((0x2000, 3 << 20)));
        assert_eq!(s.take(2 << 20), Some((0x1000, 8 << 20)));
        assert_eq!(s.take(2 << 20), None);
        assert_eq!(s.bytes(), 40 << 20);
    }

    #[test]
    fn blocks_in_use_push_the_longest_waiting_off_the_shelf() {
        let mut s = shelf(
            8 << 20,
            &[(0x1000, 2 << 20), (0x2000, 2 << 20), (0x3000, 2 << 20)],
        );
        // A fresh 4 MiB block in use: 4 + 6 > 8, the longest waiting goes.
        assert_eq!(s.mapped(4 << 20).blocks(), &[(0x1000, 2 << 20)]);
        assert_eq!(s.bytes(), 4 << 20);
        // One from the shelf changes nothing: it was counted already.
        assert_eq!(s.take(2 << 20), Some((0x2000, 2 << 20)));
        assert_eq!(s.bytes(), 2 << 20);
        // Freed, the 4 MiB block fits beside the last one waiting.
        assert!(s.put(0x4000, 4 << 20, 10).blocks().is_empty());
        assert_eq!(s.bytes(), 6 << 20);
        // Another 4 MiB in use, 6 with the 2 MiB block still out: the 6 MiB
        // waiting do not fit beside them, and go oldest first.
        assert_eq!(
            s.mapped(4 << 20).blocks(),
            &[(0x3000, 2 << 20), (0x4000, 4 << 20)]
        );
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn a_freed_block_with_no_room_left_beside_those_in_use_is_unmapped_at_once() {
        let mut s = Shelf::new(4 << 20);
        assert!(s.mapped(8 << 20).blocks().is_empty());
        assert_eq!(s.put(0x1000, 8 << 20, 0).blocks(), &[(0x1000, 8 << 20)]);
        assert!(s.mapped(3 << 20).blocks().is_empty());
        assert!(s.mapped(2 << 20).blocks().is_empty());
        assert_eq!(s.put(0x2000, 2 << 20, 1).blocks(), &[(0x2000, 2 << 20)]);
        assert_eq!(s.bytes(), 0);
    }

    #[test]
    fn every_slot_taken_gives_up_the_oldest_however_small() {
        let blocks: Vec<_> = (0..SLOTS).map(|i| (0x1000 * (i + 1), LARGE)).collect();
        let mut s = shelf(usize::MAX / 2, &blocks);
        assert!(s.mapped(LARGE).blocks().is_empty());
        assert_eq!(s.put(0xdead000, LARGE, 100).blocks(), &[(0x1000, LARGE)]);
    }

    #[test]
    fn a_block_that_waited_too_long_goes_back_at_the_next_put_or_trim() {
        let mut s = shelf(64 << 20, &[(0x1000, 2 << 20)]);
        assert!(s.mapped(4 << 20).blocks().is_empty());
        assert!(s.put(0x2000, 4 << 20, 5_000).blocks().is_empty());
        assert!(s.trim(MAX_WAIT_MS - 1).blocks().is_empty());
        assert!(s.mapped(2 << 20).blocks().is_empty());
        let out = s.put(0x3000, 2 << 20, MAX_WAIT_MS);
        assert_eq!(out.blocks(), &[(0x1000, 2 << 20)]);
        assert_eq!(s.trim(5_000 + MAX_WAIT_MS).blocks(), &[(0x2000, 4 << 20)]);
        assert_eq!(s.bytes(), 2 << 20);
        assert_eq!(s.take(2 << 20), Some((0x3000, 2 << 20)));
    }

    #[test]
    fn the_shelf_clock_runs_forward_in_milliseconds() {
        let a = now_ms();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let b = now_ms();
        assert!(a > 0 && (30..1_000).contains(&(b - a)), "{a} then {b}");
    }

    #[test]
    fn large_blocks_are_page_aligned_zeroed_when_asked_and_grow() {
        let a = Allocator;
        let layout = Layout::from_size_align(3 << 20, 64).unwrap();
        // SAFETY: a valid layout; the block is written within its size and freed once.
        unsafe {
            let p = a.alloc_zeroed(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % MAP_ALIGN, 0);
            assert_eq!(*p.add(layout.size() - 1), 0);
            std::ptr::write_bytes(p, 7, layout.size());
            a.dealloc(p, layout);
            let q = a.alloc_zeroed(layout);
            assert!((0..layout.size()).step_by(4093).all(|i| *q.add(i) == 0));
            *q = 9;
            let r = a.realloc(q, layout, 5 << 20);
            assert_eq!(*r, 9);
            // Shrinking stays in place; below `LARGE` it moves to the system's.
            let r5 = Layout::from_size_align(5 << 20, 64).unwrap();
            assert_eq!(a.realloc(r, r5, 4 << 20), r);
            let small = a.realloc(r, Layout::from_size_align(4 << 20, 64).unwrap(), 100);
            assert_eq!(*small, 9);
            a.dealloc(small, Layout::from_size_align(100, 64).unwrap());
        }
    }
}
