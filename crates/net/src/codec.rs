//! The `/growthmesh/sync/1` wire format: length-prefixed frames of opaque bytes, refused before reading when too long.
//!
//! A request frame is a 4-byte big-endian length followed by that many bytes. A response frame has the same
//! prefix, then one status byte (`0` accepted, `1` refused) and either the body or a one-byte refusal code.
//! Errors caused by what the peer sent have kind `InvalidData`, so the event loop can penalize the peer for them
//! and not for timeouts or closed connections.

use std::{fmt, io};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};

/// The request-response protocol carrying sync messages.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/growthmesh/sync/1");

const LENGTH_PREFIX_BYTES: usize = 4;
const STATUS_ACCEPTED: u8 = 0;
const STATUS_REFUSED: u8 = 1;

/// Why a node refused to serve a request, without reading it further.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The requester sent more requests than `max_requests_per_peer_per_second` allows.
    RateLimited,
    /// The requester is not in the member set and has no temporary allowance.
    NotMember,
    /// The node has too many requests in flight, or its consumer is not keeping up.
    Busy,
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::RateLimited => 1,
            Refusal::NotMember => 2,
            Refusal::Busy => 3,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Refusal::RateLimited),
            2 => Some(Refusal::NotMember),
            3 => Some(Refusal::Busy),
            _ => None,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Refusal::RateLimited => "rate limited",
            Refusal::NotMember => "not a member",
            Refusal::Busy => "busy",
        })
    }
}

/// What a node answers to a sync request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Response {
    Accepted(Vec<u8>),
    Refused(Refusal),
}

/// Why a frame from a peer was not accepted; carried inside an `io::Error` of kind `InvalidData`.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FrameError {
    #[error("frame of {length} bytes exceeds the limit of {limit} bytes")]
    TooLarge { length: usize, limit: usize },
    #[error("response frame is empty")]
    EmptyResponse,
    #[error("response status byte {status} is unknown")]
    UnknownStatus { status: u8 },
    #[error("refusal frame is malformed")]
    MalformedRefusal,
}

impl From<FrameError> for io::Error {
    fn from(error: FrameError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, error)
    }
}

/// Request-response codec for sync messages; `max_message_bytes` bounds request and response bodies alike.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SyncCodec {
    max_message_bytes: usize,
}

impl SyncCodec {
    pub(crate) fn new(max_message_bytes: usize) -> Self {
        Self { max_message_bytes }
    }
}

impl request_response::Codec for SyncCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_frame(io, self.max_message_bytes).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        // One extra byte for the status.
        let frame = read_frame(io, self.max_message_bytes + 1).await?;
        decode_response(frame).map_err(io::Error::from)
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_frame(io, &request, self.max_message_bytes).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        let frame = encode_response(response);
        write_frame(io, &frame, self.max_message_bytes + 1).await
    }
}

fn encode_response(response: Response) -> Vec<u8> {
    match response {
        Response::Accepted(body) => {
            let mut frame = Vec::with_capacity(body.len() + 1);
            frame.push(STATUS_ACCEPTED);
            frame.extend_from_slice(&body);
            frame
        }
        Response::Refused(refusal) => vec![STATUS_REFUSED, refusal.code()],
    }
}

fn decode_response(mut frame: Vec<u8>) -> Result<Response, FrameError> {
    match frame.first().copied() {
        None => Err(FrameError::EmptyResponse),
        Some(STATUS_ACCEPTED) => {
            frame.remove(0);
            Ok(Response::Accepted(frame))
        }
        Some(STATUS_REFUSED) => match frame.as_slice() {
            [_, code] => Refusal::from_code(*code)
                .map(Response::Refused)
                .ok_or(FrameError::MalformedRefusal),
            _ => Err(FrameError::MalformedRefusal),
        },
        Some(status) => Err(FrameError::UnknownStatus { status }),
    }
}

/// Reads one frame; the length is checked against `limit` before any of the body is read or allocated.
async fn read_frame<T>(io: &mut T, limit: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin,
{
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    io.read_exact(&mut prefix).await?;
    let length = usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX);
    if length > limit {
        return Err(FrameError::TooLarge { length, limit }.into());
    }
    // Grow the buffer as bytes arrive rather than trusting the prefix with an allocation up front.
    let mut body = Vec::new();
    io.take(length as u64).read_to_end(&mut body).await?;
    if body.len() != length {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(body)
}

async fn write_frame<T>(io: &mut T, body: &[u8], limit: usize) -> io::Result<()>
where
    T: AsyncWrite + Unpin,
{
    let length = u32::try_from(body.len())
        .ok()
        .filter(|_| body.len() <= limit)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                FrameError::TooLarge {
                    length: body.len(),
                    limit,
                },
            )
        })?;
    io.write_all(&length.to_be_bytes()).await?;
    io.write_all(body).await?;
    io.flush().await
}

#[cfg(test)]
mod tests {
    use futures::{executor::block_on, io::Cursor};
    use libp2p::request_response::Codec;

    use super::*;

    fn frame(length: u32, body: &[u8]) -> Vec<u8> {
        let mut bytes = length.to_be_bytes().to_vec();
        bytes.extend_from_slice(body);
        bytes
    }

    #[test]
    fn request_round_trip() {
        let mut codec = SyncCodec::new(16);
        let mut wire = Cursor::new(Vec::new());
        block_on(codec.write_request(&PROTOCOL, &mut wire, b"hello".to_vec())).expect("write");
        let mut wire = Cursor::new(wire.into_inner());
        let request = block_on(codec.read_request(&PROTOCOL, &mut wire)).expect("read");
        assert_eq!(request, b"hello");
    }

    #[test]
    fn response_round_trip() {
        let mut codec = SyncCodec::new(16);
        for response in [
            Response::Accepted(Vec::new()),
            Response::Accepted(vec![0; 16]),
            Response::Refused(Refusal::RateLimited),
            Response::Refused(Refusal::NotMember),
            Response::Refused(Refusal::Busy),
        ] {
            let mut wire = Cursor::new(Vec::new());
            block_on(codec.write_response(&PROTOCOL, &mut wire, response.clone())).expect("write");
            let mut wire = Cursor::new(wire.into_inner());
            let read = block_on(codec.read_response(&PROTOCOL, &mut wire)).expect("read");
            assert_eq!(read, response);
        }
    }

    #[test]
    fn oversized_prefix_is_refused_without_reading_the_body() {
        let mut codec = SyncCodec::new(16);
        // The prefix claims 4 GiB; no body follows, so any attempt to read it would fail with EOF instead.
        let mut wire = Cursor::new(frame(u32::MAX, &[]));
        let error = block_on(codec.read_request(&PROTOCOL, &mut wire)).expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(wire.position(), LENGTH_PREFIX_BYTES as u64);
    }

    #[test]
    fn oversized_write_is_refused() {
        let mut codec = SyncCodec::new(4);
        let mut wire = Cursor::new(Vec::new());
        let error =
            block_on(codec.write_request(&PROTOCOL, &mut wire, vec![0; 5])).expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert!(wire.into_inner().is_empty());
    }

    #[test]
    fn truncated_frame_is_an_eof_not_a_penalty() {
        let mut codec = SyncCodec::new(16);
        let mut wire = Cursor::new(frame(10, b"abc"));
        let error = block_on(codec.read_request(&PROTOCOL, &mut wire)).expect_err("truncated");
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[test]
    fn malformed_responses_are_invalid_data() {
        let mut codec = SyncCodec::new(16);
        for body in [
            &[][..],
            &[7][..],
            &[STATUS_REFUSED][..],
            &[STATUS_REFUSED, 99][..],
            &[STATUS_REFUSED, 1, 1][..],
        ] {
            let length = u32::try_from(body.len()).expect("small");
            let mut wire = Cursor::new(frame(length, body));
            let error = block_on(codec.read_response(&PROTOCOL, &mut wire)).expect_err("malformed");
            assert_eq!(error.kind(), io::ErrorKind::InvalidData, "body {body:?}");
        }
    }
}
