//! The `/growthmesh/sync/2` wire format: length-prefixed frames of opaque bytes, refused before reading when too long.
//!
//! A request frame is a 4-byte big-endian length followed by that many bytes. A response frame has the same
//! prefix, then one status byte (`0` accepted, `1` refused) and either the body or a one-byte refusal code.
//!
//! An oversized request is not an error of `read_request`: libp2p drops request-read errors without saying which
//! peer sent them, so the codec returns `Request::TooLarge` (body unread, nothing allocated) and the event loop
//! refuses it, counts it and penalizes the sender; writing that refusal then fails on purpose so libp2p resets the
//! stream instead of waiting for a body it will never read. Response errors caused by the peer have kind `InvalidData`;
//! libp2p reports those with the peer, so the event loop penalizes on that kind and not on timeouts or closes.

use std::{fmt, io};

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{StreamProtocol, request_response};

/// The request-response protocol carrying sync messages.
pub(crate) const PROTOCOL: StreamProtocol = StreamProtocol::new("/growthmesh/sync/2");

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
    /// The request is larger than the node's `max_sync_message_bytes`.
    TooLarge,
}

impl Refusal {
    fn code(self) -> u8 {
        match self {
            Refusal::RateLimited => 1,
            Refusal::NotMember => 2,
            Refusal::Busy => 3,
            Refusal::TooLarge => 4,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Refusal::RateLimited),
            2 => Some(Refusal::NotMember),
            3 => Some(Refusal::Busy),
            4 => Some(Refusal::TooLarge),
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
            Refusal::TooLarge => "request too large",
        })
    }
}

/// A sync request as read off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Request {
    /// A request within the size limit.
    Frame(Vec<u8>),
    /// The prefix announced `length` bytes, more than the limit; the body was not read.
    TooLarge { length: usize },
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
    #[error("stream reset after refusing an oversized request whose body was not read")]
    BodyUnread,
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
    type Request = Request;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Request>
    where
        T: AsyncRead + Unpin + Send,
    {
        let length = read_length(io).await?;
        if length > self.max_message_bytes {
            return Ok(Request::TooLarge { length });
        }
        Ok(Request::Frame(read_body(io, length).await?))
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
        request: Request,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        match request {
            Request::Frame(body) => write_frame(io, &body, self.max_message_bytes).await,
            Request::TooLarge { length } => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                FrameError::TooLarge {
                    length,
                    limit: self.max_message_bytes,
                },
            )),
        }
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
        let reset = response == Response::Refused(Refusal::TooLarge);
        let frame = encode_response(response);
        write_frame(io, &frame, self.max_message_bytes + 1).await?;
        if reset {
            // The oversized body is still unread. Closing gracefully would leave a sender that ran out of flow
            // control credit blocked until its timeout; an error makes libp2p drop the stream, which resets it.
            return Err(io::Error::other(FrameError::BodyUnread));
        }
        Ok(())
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
    let length = read_length(io).await?;
    if length > limit {
        return Err(FrameError::TooLarge { length, limit }.into());
    }
    read_body(io, length).await
}

async fn read_length<T>(io: &mut T) -> io::Result<usize>
where
    T: AsyncRead + Unpin,
{
    let mut prefix = [0u8; LENGTH_PREFIX_BYTES];
    io.read_exact(&mut prefix).await?;
    Ok(usize::try_from(u32::from_be_bytes(prefix)).unwrap_or(usize::MAX))
}

/// Reads exactly `length` bytes, growing the buffer as they arrive rather than allocating what the prefix claims.
async fn read_body<T>(io: &mut T, length: usize) -> io::Result<Vec<u8>>
where
    T: AsyncRead + Unpin,
{
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
        block_on(codec.write_request(&PROTOCOL, &mut wire, Request::Frame(b"hello".to_vec())))
            .expect("write");
        let mut wire = Cursor::new(wire.into_inner());
        let request = block_on(codec.read_request(&PROTOCOL, &mut wire)).expect("read");
        assert_eq!(request, Request::Frame(b"hello".to_vec()));
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
    fn oversized_request_is_refused_without_reading_the_body() {
        let mut codec = SyncCodec::new(16);
        // The prefix claims 4 GiB; no body follows, so any attempt to read it would fail with EOF instead.
        let mut wire = Cursor::new(frame(u32::MAX, &[]));
        let request = block_on(codec.read_request(&PROTOCOL, &mut wire)).expect("read");
        assert_eq!(
            request,
            Request::TooLarge {
                length: u32::MAX as usize
            }
        );
        assert_eq!(wire.position(), LENGTH_PREFIX_BYTES as u64);
    }

    #[test]
    fn too_large_refusal_is_written_then_resets() {
        let mut codec = SyncCodec::new(16);
        let mut wire = Cursor::new(Vec::new());
        let refusal = Response::Refused(Refusal::TooLarge);
        let error = block_on(codec.write_response(&PROTOCOL, &mut wire, refusal.clone()))
            .expect_err("reset requested");
        assert_eq!(error.kind(), io::ErrorKind::Other);
        let mut wire = Cursor::new(wire.into_inner());
        let read = block_on(codec.read_response(&PROTOCOL, &mut wire)).expect("refusal readable");
        assert_eq!(read, refusal);
    }

    #[test]
    fn oversized_response_is_an_error_without_reading_the_body() {
        let mut codec = SyncCodec::new(16);
        let mut wire = Cursor::new(frame(18, &[0; 18]));
        let error = block_on(codec.read_response(&PROTOCOL, &mut wire)).expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert_eq!(wire.position(), LENGTH_PREFIX_BYTES as u64);
    }

    #[test]
    fn oversized_write_is_refused() {
        let mut codec = SyncCodec::new(4);
        let mut wire = Cursor::new(Vec::new());
        let error = block_on(codec.write_request(&PROTOCOL, &mut wire, Request::Frame(vec![0; 5])))
            .expect_err("refused");
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        let response = Response::Accepted(vec![0; 5]);
        let error =
            block_on(codec.write_response(&PROTOCOL, &mut wire, response)).expect_err("refused");
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
