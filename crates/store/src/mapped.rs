//! [`MappedFile`]: a read-only memory map of a file that another program
//! may shrink at any time, without that killing this process.
//!
//! Why: local ingest (see [`crate::ingest`]) reads whole files a client
//! hands over. Reading them through a map instead of `pread` spares the
//! kernel's copy of every byte into a buffer: a third of the CPU time of
//! cutting, hashing and storing a large file. But a page of a map past the
//! end of a file that was truncated meanwhile raises `SIGBUS`, whose
//! default action ends the process, and the file belongs to the client.
//!
//! So the first map installs a `SIGBUS` handler. When the faulting address
//! lies in a live map, the handler marks that map as changed and replaces
//! the rest of it, from the faulting page on, with zero pages
//! (`MAP_FIXED`), and returns: the read is retried and finds zeros. The
//! reader checks [`MappedFile::changed`] when done and fails the file.
//! Callers must therefore never trust bytes read from a map that
//! [`changed`](MappedFile::changed): whatever they derive from it (a chunk
//! id, for instance) must come from one copy of the bytes, and the copy must
//! be what they keep, so that it stays self-consistent whatever the map
//! showed. Any other `SIGBUS` goes to the handler that was there before
//! (Rust's own, which reports stack overflows), or gets the default action.
//!
//! Live maps are kept in a fixed table of [`SLOTS`] entries, read by the
//! handler without locks; when it is full, [`MappedFile::map`] returns
//! `None` and the caller reads with `pread` instead.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

/// Maps live at once, at most.
pub const SLOTS: usize = 256;

struct Slot {
    /// Taken by a live map (set before `start`/`end`, cleared after).
    used: AtomicBool,
    /// The map's page-aligned range; `start == 0`: none.
    start: AtomicUsize,
    end: AtomicUsize,
    /// A `SIGBUS` hit the map.
    changed: AtomicBool,
}

#[allow(clippy::declare_interior_mutable_const)]
const FREE: Slot = Slot {
    used: AtomicBool::new(false),
    start: AtomicUsize::new(0),
    end: AtomicUsize::new(0),
    changed: AtomicBool::new(false),
};
static TABLE: [Slot; SLOTS] = [FREE; SLOTS];

/// The handler that was installed before ours, for faults that are not ours.
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);
/// The page size, read once before any map exists (for the handler).
static PAGE: AtomicUsize = AtomicUsize::new(4096);

/// A file's first `len` bytes, mapped read-only; unmapped when dropped.
pub struct MappedFile {
    ptr: *mut libc::c_void,
    len: usize,
    slot: usize,
}

// The map is read-only, and its slot is only written by the signal handler
// (atomically) and by `Drop`.
unsafe impl Send for MappedFile {}
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps the first `len` bytes of `file`; `None` when it cannot be (no
    /// free slot, no handler, a file system without maps, `len` 0): the
    /// caller then reads the file instead.
    pub fn map(file: &File, len: u64) -> Option<MappedFile> {
        MappedFile::map_range(file, 0, len)
    }

    /// Maps `len` bytes of `file` from `offset`, which must be a multiple
    /// of the page size; `None` as for [`MappedFile::map`].
    pub fn map_range(file: &File, offset: u64, len: u64) -> Option<MappedFile> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        let offset = libc::off_t::try_from(offset).ok()?;
        INSTALL.call_once(install);
        if !INSTALLED.load(Ordering::SeqCst) || !(offset as u64).is_multiple_of(page_size() as u64) {
            return None;
        }
        let slot = TABLE
            .iter()
            .position(|s| s.used.compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst).is_ok())?;
        // SAFETY: a fresh private read-only map of a file we hold open; the
        // kernel picks the address.
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_PRIVATE, file.as_raw_fd(), offset)
        };
        if ptr == libc::MAP_FAILED {
            TABLE[slot].used.store(false, Ordering::SeqCst);
            return None;
        }
        let s = &TABLE[slot];
        s.changed.store(false, Ordering::SeqCst);
        s.end.store(ptr as usize + len.next_multiple_of(page_size()), Ordering::SeqCst);
        s.start.store(ptr as usize, Ordering::SeqCst);
        // SAFETY: a hint on our own map; its failure changes nothing.
        unsafe { libc::madvise(ptr, len, libc::MADV_SEQUENTIAL) };
        Some(MappedFile { ptr, len, slot })
    }

    /// The mapped bytes. Zeros where the file had shrunk when they were
    /// read, and then [`MappedFile::changed`] is true.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr..ptr+len` stays mapped and readable until drop (the
        // handler only ever replaces pages with readable zero pages).
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }

    /// Whether the file shrank (or a page could not be read) while mapped:
    /// some of [`MappedFile::bytes`] read as zeros instead of the file's.
    pub fn changed(&self) -> bool {
        TABLE[self.slot].changed.load(Ordering::SeqCst)
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        let s = &TABLE[self.slot];
        s.start.store(0, Ordering::SeqCst);
        s.end.store(0, Ordering::SeqCst);
        // SAFETY: our own map, no longer lent out (`bytes` borrows self).
        unsafe { libc::munmap(self.ptr, self.len) };
        s.used.store(false, Ordering::SeqCst);
    }
}

fn page_size() -> usize {
    PAGE.load(Ordering::Relaxed)
}

fn install() {
    // SAFETY: sysconf, and sigaction with a zeroed struct filled in as its
    // manual says. PREVIOUS is set here, before INSTALLED lets any map (and
    // so any fault of ours) exist.
    unsafe {
        let page = libc::sysconf(libc::_SC_PAGESIZE);
        if page > 0 {
            PAGE.store(page as usize, Ordering::Relaxed);
        }
        let mut new: libc::sigaction = std::mem::zeroed();
        new.sa_sigaction = on_sigbus as *const () as usize;
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigemptyset(&mut new.sa_mask);
        let mut old: libc::sigaction = std::mem::zeroed();
        if libc::sigaction(libc::SIGBUS, &new, &mut old) != 0 {
            tracing::warn!(error = %std::io::Error::last_os_error(), "no SIGBUS handler: files are read, not mapped");
            return;
        }
        let _ = PREVIOUS.set(old);
    }
    INSTALLED.store(true, Ordering::SeqCst);
}

/// The `SIGBUS` handler: only atomics, `mmap` and `sigaction` (system calls).
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    for s in &TABLE {
        let (start, end) = (s.start.load(Ordering::SeqCst), s.end.load(Ordering::SeqCst));
        if start == 0 || addr < start || addr >= end {
            continue;
        }
        s.changed.store(true, Ordering::SeqCst);
        let page = addr & !(page_size() - 1);
        // SAFETY: replaces pages of a live map of ours with zero pages of
        // the same protection; the faulting read is retried on them.
        let zeros = unsafe {
            libc::mmap(
                page as *mut libc::c_void,
                end - page,
                libc::PROT_READ,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if zeros != libc::MAP_FAILED {
            return;
        }
        break;
    }
    // Not ours (or the zero pages could not be put in): as if we were not here.
    // SAFETY: calling the previous handler with the arguments we got, or
    // restoring the default action so that the retried access ends the
    // process as it would have.
    unsafe {
        match PREVIOUS.get() {
            Some(old) if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN => {
                if old.sa_flags & libc::SA_SIGINFO != 0 {
                    let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                        std::mem::transmute(old.sa_sigaction);
                    f(sig, info, ctx);
                } else {
                    let f: extern "C" fn(libc::c_int) = std::mem::transmute(old.sa_sigaction);
                    f(sig);
                }
            }
            _ => {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(libc::SIGBUS, &dfl, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_mapped_file_reads_as_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..3 * 4096 + 7).map(|i| (i % 251) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let m = MappedFile::map(&File::open(&path).unwrap(), data.len() as u64).unwrap();
        assert_eq!(m.bytes(), &data[..]);
        assert!(!m.changed());
        assert!(MappedFile::map(&File::open(&path).unwrap(), 0).is_none(), "nothing to map");
    }

    #[test]
    fn a_file_truncated_while_mapped_reads_as_zeros_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 16 * 4096]).unwrap();
        drop(f);
        let m = MappedFile::map(&File::open(&path).unwrap(), 16 * 4096).unwrap();
        assert_eq!(m.bytes()[0], 7);
        // Another program cuts the file to 3 pages and a bit.
        File::options().write(true).open(&path).unwrap().set_len(3 * 4096 + 100).unwrap();
        let bytes = m.bytes();
        assert_eq!(bytes[3 * 4096 + 99], 7, "what is left reads as before");
        // Without the handler, this read would end the process with SIGBUS.
        assert_eq!(bytes[10 * 4096], 0);
        assert!(m.changed());
        assert!(bytes[4 * 4096..].iter().all(|&b| b == 0));
        // Another map of the same file is unaffected by the first's fault.
        let again = MappedFile::map(&File::open(&path).unwrap(), 3 * 4096 + 100).unwrap();
        assert!(again.bytes().iter().all(|&b| b == 7));
        assert!(!again.changed());
    }

    #[test]
    fn a_range_from_a_page_boundary_maps_that_part() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let data: Vec<u8> = (0..200_000).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        let f = File::open(&path).unwrap();
        let m = MappedFile::map_range(&f, 65536, 100_000).unwrap();
        assert_eq!(m.bytes(), &data[65536..165536]);
        assert!(MappedFile::map_range(&f, 1000, 10).is_none(), "not on a page boundary");
    }

    #[test]
    fn slots_are_given_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        for _ in 0..3 * SLOTS {
            let m = MappedFile::map(&File::open(&path).unwrap(), 3).unwrap();
            assert_eq!(m.bytes(), b"abc");
        }
    }
}
