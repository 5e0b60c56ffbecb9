//! Local ingest: a client on the server's own machine hands the server
//! large files by descriptor, and the server chunks, hashes and stores them
//! itself, instead of the client hashing them and sending every byte over
//! TCP.
//!
//! Over the network an upload costs the client a read, FastCDC and BLAKE3,
//! and the server a socket read, a copy and BLAKE3 again (it must check
//! every chunk, since the store is shared by every owner). When both ends
//! share a machine, a descriptor passed over a Unix socket (`SCM_RIGHTS`)
//! lets the server read the file once and hash it once, so the same chunks
//! land in the store for about half the CPU. The server reads only what the
//! client could open: the client opens the file and passes the open
//! descriptor, never a path.
//!
//! The protocol, on a Unix stream socket: each message is a 4-byte
//! little-endian length and that many bytes of JSON; a `file` request
//! carries its descriptor in the same `sendmsg`. The client sends `hello`
//! with its API token first, then one `file` request at a time, each
//! answered before the next is sent (a large file's answer comes after a
//! `progress` message every [`PROGRESS_EVERY`] bytes).
//!
//! Only the protocol and the client's hook into the scan live here (see
//! [`Ingest`]); the server's side is `podder_server::ingest`.

use std::fs::File;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;

use podder_core::ChunkId;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage,
    SendFlags, recvmsg, sendmsg,
};
use serde::{Deserialize, Serialize};

use crate::chunker::ChunkRef;

/// The socket's file name in the server's data directory.
pub const SOCKET_NAME: &str = "ingest.sock";

/// Files of this size and more are handed over; smaller ones are read and
/// batched by the client, where one request carries many files.
pub const MIN_FILE: u64 = 4 * 1024 * 1024;

/// The server reports progress through a file every this many bytes.
pub const PROGRESS_EVERY: u64 = 32 * 1024 * 1024;

/// The largest message either side accepts: a reply lists every chunk of a
/// file (about 70 bytes each), so this covers files of several hundred GiB.
pub const MAX_MESSAGE: usize = 256 * 1024 * 1024;

/// What the client asks.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// The first message: who is asking.
    Hello { token: String },
    /// Store the file whose descriptor comes with this message; `size` is
    /// its size when the client opened it, `path` its name in the tree (for
    /// messages only).
    File { size: u64, path: String },
}

/// What the server answers. An `error` ends the request (and, after a
/// `hello`, the connection).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Reply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// After `hello`: the owner the token belongs to, and the server
    /// process's instance name (as `GET /chunks/local` gives it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// While a large file is stored: how many of its bytes are done. Such
    /// messages come before the file's final answer (which has none), so a
    /// progress bar moves during a long file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u64>,
    /// After `file`: the file's chunks in order, and their lengths.
    #[serde(default)]
    pub ids: Vec<ChunkId>,
    #[serde(default)]
    pub lens: Vec<u32>,
    /// Chunks (and their bytes) the store did not hold before.
    #[serde(default)]
    pub new_chunks: u64,
    #[serde(default)]
    pub new_bytes: u64,
}

impl Reply {
    pub fn error(msg: impl Into<String>) -> Reply {
        Reply { error: Some(msg.into()), ..Reply::default() }
    }

    /// The file's chunks with their offsets.
    pub fn chunk_refs(&self) -> io::Result<Vec<ChunkRef>> {
        if self.ids.len() != self.lens.len() {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "the server's chunk list is malformed"));
        }
        let mut offset = 0u64;
        Ok(self
            .ids
            .iter()
            .zip(&self.lens)
            .map(|(&id, &len)| {
                let r = ChunkRef { id, offset, len };
                offset += u64::from(len);
                r
            })
            .collect())
    }
}

/// What handing one file over gave.
#[derive(Clone, Debug, Default)]
pub struct Ingested {
    pub chunks: Vec<ChunkRef>,
    /// Chunks the store did not hold before, and their bytes.
    pub new_chunks: u64,
    pub new_bytes: u64,
}

/// A failure of the server's side (it could not store a file), as opposed
/// to a file that cannot be read: the scan stops with its message.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct IngestError(pub String);

/// Hands files to a server on this machine; given to the scan through
/// `ScanOptions::ingest`.
pub trait Ingest: Send + Sync {
    /// Has the server chunk and store the open `file` (`len` bytes when it
    /// was opened; `rel` its path in the tree), calling `progress` with the
    /// bytes done so far now and then; `None` when the server will not take
    /// it now (no connection to be had), so the scan hashes it itself.
    /// Errors of the server's side are [`IngestError`]s inside the
    /// `io::Error`.
    fn ingest(&self, file: &File, len: u64, rel: &str, progress: &dyn Fn(u64)) -> io::Result<Option<Ingested>>;
}

/// Sends one message, with `fd` attached when given.
pub fn send(sock: &UnixStream, msg: &impl Serialize, fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let body = serde_json::to_vec(msg)?;
    let mut buf = Vec::with_capacity(4 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&body);
    let mut sent = 0;
    if let Some(fd) = fd {
        let fds = [fd];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        control.push(SendAncillaryMessage::ScmRights(&fds));
        sent = loop {
            match sendmsg(sock, &[IoSlice::new(&buf)], &mut control, SendFlags::NOSIGNAL) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        };
    }
    (&*sock).write_all(&buf[sent..])
}

/// Receives one message and the descriptors that came with it; `None` when
/// the other side closed the connection between messages.
pub fn recv(sock: &UnixStream) -> io::Result<Option<(Vec<u8>, Vec<OwnedFd>)>> {
    let mut fds = Vec::new();
    let mut head = [0u8; 4];
    if !read_with_fds(sock, &mut head, &mut fds)? {
        return Ok(None);
    }
    let len = u32::from_le_bytes(head) as usize;
    if len > MAX_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("a message of {len} bytes is too large")));
    }
    let mut body = vec![0u8; len];
    if !read_with_fds(sock, &mut body, &mut fds)? && len > 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(Some((body, fds)))
}

/// Fills `buf`, keeping descriptors that arrive meanwhile. False when the
/// connection ended before the first byte.
fn read_with_fds(sock: &UnixStream, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> io::Result<bool> {
    let mut n = 0;
    while n < buf.len() {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = match recvmsg(sock, &mut [IoSliceMut::new(&mut buf[n..])], &mut control, RecvFlags::CMSG_CLOEXEC) {
            Ok(got) => got,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = msg {
                fds.extend(received);
            }
        }
        if got.flags.contains(ReturnFlags::CTRUNC) {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "too many descriptors came with one message"));
        }
        if got.bytes == 0 {
            if n == 0 {
                return Ok(false);
            }
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        n += got.bytes;
    }
    Ok(true)
}

/// Reads a message's JSON.
pub fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> io::Result<T> {
    serde_json::from_slice(body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads `len` bytes of a file from offset 0 with `pread`, never moving the
/// descriptor's offset (which a passed descriptor shares with the client).
pub struct PositionalReader<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl<'a> PositionalReader<'a> {
    pub fn new(file: &'a File, len: u64) -> PositionalReader<'a> {
        PositionalReader { file, pos: 0, end: len }
    }

    /// Bytes read so far.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl Read for PositionalReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf.len().min((self.end - self.pos) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Where the holes of a passed file are, without moving its offset for
/// good (the client shares it): `SEEK_DATA` and `SEEK_HOLE` move it, so it
/// is put back when this is dropped.
pub struct Holes<'a> {
    file: &'a File,
    offset: u64,
}

impl<'a> Holes<'a> {
    pub fn new(file: &'a File) -> io::Result<Holes<'a>> {
        let offset = rustix::fs::seek(file, rustix::fs::SeekFrom::Current(0))?;
        Ok(Holes { file, offset })
    }

    /// Where data begins at or after `pos`: `pos` itself outside a hole,
    /// the hole's end inside one, `None` when only a hole follows. File
    /// systems without holes report all of a file as data.
    pub fn data_from(&self, pos: u64) -> io::Result<Option<u64>> {
        match rustix::fs::seek(self.file, rustix::fs::SeekFrom::Data(pos)) {
            Ok(at) => Ok(Some(at)),
            Err(rustix::io::Errno::NXIO) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Where the next hole begins at or after `pos`, which must hold data
    /// (the end of the file counts as a hole).
    pub fn hole_from(&self, pos: u64) -> io::Result<u64> {
        Ok(rustix::fs::seek(self.file, rustix::fs::SeekFrom::Hole(pos))?)
    }
}

impl Drop for Holes<'_> {
    fn drop(&mut self) {
        let _ = rustix::fs::seek(self.file, rustix::fs::SeekFrom::Start(self.offset));
    }
}

/// Is this descriptor a regular file of exactly `size` bytes? Says what is
/// wrong otherwise.
pub fn check_file(fd: impl AsFd, size: u64) -> Result<(), String> {
    let st = rustix::fs::fstat(&fd).map_err(|e| format!("the descriptor cannot be examined: {e}"))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err("it is not a regular file".into());
    }
    if st.st_size as u64 != size {
        return Err(format!("it changed during the upload (it was {size} bytes, it is now {})", st.st_size));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    #[test]
    fn a_descriptor_travels_with_its_message() {
        let (a, b) = UnixStream::pair().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"hello, server").unwrap();
        let file = File::open(&path).unwrap();
        send(&a, &Request::Hello { token: "t".into() }, None).unwrap();
        send(&a, &Request::File { size: 13, path: "f".into() }, Some(file.as_fd())).unwrap();
        drop(a);

        let (body, fds) = recv(&b).unwrap().unwrap();
        assert!(fds.is_empty());
        assert!(matches!(parse::<Request>(&body).unwrap(), Request::Hello { token } if token == "t"));
        let (body, mut fds) = recv(&b).unwrap().unwrap();
        assert!(matches!(parse::<Request>(&body).unwrap(), Request::File { size: 13, .. }));
        assert_eq!(fds.len(), 1);
        let got = File::from(fds.pop().unwrap());
        check_file(&got, 13).unwrap();
        let mut data = Vec::new();
        PositionalReader::new(&got, 13).read_to_end(&mut data).unwrap();
        assert_eq!(data, b"hello, server");
        assert!(recv(&b).unwrap().is_none(), "a closed connection ends cleanly");
    }

    #[test]
    fn only_regular_files_of_the_stated_size_pass() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"abc").unwrap();
        let file = File::open(&path).unwrap();
        assert!(check_file(&file, 4).unwrap_err().contains("changed during the upload"));
        let d = File::open(dir.path()).unwrap();
        assert!(check_file(&d, 0).unwrap_err().contains("not a regular file"));
    }

    #[test]
    fn a_reply_gives_offsets() {
        let (x, y) = (ChunkId::of(b"x"), ChunkId::of(b"y"));
        let reply = Reply { ids: vec![x, y], lens: vec![10, 5], ..Reply::default() };
        let refs = reply.chunk_refs().unwrap();
        assert_eq!(refs, vec![ChunkRef { id: x, offset: 0, len: 10 }, ChunkRef { id: y, offset: 10, len: 5 }]);
        assert!(Reply { ids: vec![x], ..Reply::default() }.chunk_refs().is_err());
    }
}
