//! A bare Kafka protocol client for tests that need exact control over
//! what is sent: one request at a time over a plain TCP connection, with
//! requests and responses encoded by the `kafka-protocol` crate (the same
//! codec as the server, but the client side of it), or raw bytes.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::RequestHeader;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

pub struct Wire {
    stream: TcpStream,
    correlation_id: i32,
}

impl Wire {
    pub fn connect(addr: &str) -> Wire {
        let stream = TcpStream::connect(addr).expect("connect to the Kafka listener");
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("set a read timeout");
        Wire {
            stream,
            correlation_id: 0,
        }
    }

    /// Sends `request` as `version` and decodes the answer.
    pub fn send<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        self.try_send(request, version)
            .expect("the server answers the request")
    }

    /// Like `send`, but `None` when the server closes the connection.
    pub fn try_send<R: Request>(&mut self, request: &R, version: i16) -> Option<R::Response> {
        self.correlation_id += 1;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation_id)
            .with_client_id(Some(StrBytes::from_static_str("weir-tests")));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .expect("encode the header");
        request
            .encode(&mut body, version)
            .expect("encode the request");
        let mut frame = self.roundtrip(&body)?;
        let header_version = <R::Response as HeaderVersion>::header_version(version);
        let header = kafka_protocol::messages::ResponseHeader::decode(&mut frame, header_version)
            .expect("decode the response header");
        assert_eq!(header.correlation_id, self.correlation_id);
        Some(R::Response::decode(&mut frame, version).expect("decode the response"))
    }

    /// Sends `body` with its size prefix; the answer's body, or `None` when
    /// the connection is closed instead.
    pub fn roundtrip(&mut self, body: &[u8]) -> Option<Bytes> {
        let mut frame = BytesMut::with_capacity(body.len() + 4);
        frame.put_i32(body.len() as i32);
        frame.extend_from_slice(body);
        self.send_raw(&frame)
    }

    /// Writes `bytes` and waits for nothing (the start of a frame left
    /// unfinished, say).
    pub fn write_only(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .expect("write to the Kafka listener");
    }

    /// Writes `bytes` as they are; the next answer's body, or `None` when
    /// the connection is closed instead.
    pub fn send_raw(&mut self, bytes: &[u8]) -> Option<Bytes> {
        self.stream.write_all(bytes).ok()?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let size = (&size[..]).get_i32();
        let mut answer = vec![0u8; size as usize];
        self.stream.read_exact(&mut answer).ok()?;
        Some(Bytes::from(answer))
    }
}
