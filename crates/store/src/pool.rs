//! A small pool of byte buffers, for buffers that would otherwise be
//! allocated per chunk or per window: a fresh multi-MiB buffer costs a page
//! fault and a zeroed page per 4 KiB, which showed up as a tenth of a large
//! upload's CPU on both sides.

use std::sync::Mutex;

/// Buffers given back, up to `keep` of them and of at most `max_capacity`
/// bytes each. Meant to live in a `static`.
pub struct BufPool {
    bufs: Mutex<Vec<Vec<u8>>>,
    keep: usize,
    max_capacity: usize,
}

impl BufPool {
    pub const fn new(keep: usize, max_capacity: usize) -> BufPool {
        BufPool { bufs: Mutex::new(Vec::new()), keep, max_capacity }
    }

    /// A buffer from the pool (as it was given back: its length and bytes
    /// are kept, so one kept at full length needs no zeroing), or an empty one.
    pub fn take(&self) -> Vec<u8> {
        self.bufs.lock().unwrap_or_else(|e| e.into_inner()).pop().unwrap_or_default()
    }

    /// Gives a buffer back, unless the pool is full or it is too large.
    pub fn give(&self, buf: Vec<u8>) {
        if buf.capacity() <= self.max_capacity {
            let mut bufs = self.bufs.lock().unwrap_or_else(|e| e.into_inner());
            if bufs.len() < self.keep {
                bufs.push(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_come_back_up_to_the_limits() {
        static POOL: BufPool = BufPool::new(1, 1024);
        POOL.give(vec![7u8; 100]);
        POOL.give(vec![8u8; 100]); // the pool holds one
        POOL.give(vec![0u8; 4096]); // too large
        let b = POOL.take();
        assert_eq!(b, vec![7u8; 100], "kept as given");
        assert!(POOL.take().is_empty(), "then a fresh one");
    }
}
