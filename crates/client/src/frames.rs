//! Reading a framed chunk stream (see `podder_core::api::frames`) from a
//! response body as it arrives, without buffering the whole body.

use bytes::{Buf, Bytes, BytesMut};
use podder_core::ChunkId;
use podder_core::api::frames;

use crate::ClientError;

pub struct FrameReader {
    resp: reqwest::Response,
    buf: BytesMut,
    done: bool,
}

impl FrameReader {
    pub(crate) fn new(resp: reqwest::Response) -> Self {
        FrameReader { resp, buf: BytesMut::new(), done: false }
    }

    /// The next chunk, checked against its id; `None` at the end.
    pub async fn next(&mut self) -> Result<Option<(ChunkId, Bytes)>, ClientError> {
        loop {
            if self.buf.len() >= frames::HEADER {
                let mut h = [0u8; frames::HEADER];
                h.copy_from_slice(&self.buf[..frames::HEADER]);
                let (id, len) = frames::parse_header(&h);
                if len > frames::MAX_CHUNK {
                    return Err(ClientError::Protocol(format!("chunk {id} is {len} bytes, over the limit")));
                }
                if self.buf.len() >= frames::HEADER + len {
                    self.buf.advance(frames::HEADER);
                    let data = self.buf.split_to(len).freeze();
                    if ChunkId::of(&data) != id {
                        return Err(ClientError::Protocol(format!("chunk {id} arrived corrupted")));
                    }
                    return Ok(Some((id, data)));
                }
            }
            if self.done {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Err(ClientError::Protocol("the chunk stream ended in the middle of a chunk".into()));
            }
            match self.resp.chunk().await.map_err(ClientError::Http)? {
                Some(b) => self.buf.extend_from_slice(&b),
                None => self.done = true,
            }
        }
    }
}
