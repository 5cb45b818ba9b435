//! The protobuf codec of every generated service and client: prost's, except that a message
//! that does not decode (truncated or garbage bytes, a wrong wire type, invalid UTF-8 in a
//! string field) is INVALID_ARGUMENT with `ErrorInfo` reason `MALFORMED_REQUEST`, not prost's
//! INTERNAL: a county system must read it as its own fault, not the gateway's. The call layer
//! audits it like any refused call.

use std::collections::HashMap;
use std::marker::PhantomData;

use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;
use tonic_types::{ErrorDetails, StatusExt};

/// The `ErrorInfo.domain` of every error the gateway gives.
pub const ERROR_DOMAIN: &str = "yrd-gateway";

/// The reason of a message that does not decode.
pub const MALFORMED_REQUEST: &str = "MALFORMED_REQUEST";

/// [`tonic_prost::ProstCodec`] with [`MALFORMED_REQUEST`] for messages that do not decode.
#[derive(Debug, Clone)]
pub struct Codec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for Codec<T, U> {
    fn default() -> Self {
        Codec(PhantomData)
    }
}

impl<T, U> tonic::codec::Codec for Codec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = MessageDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageDecoder(PhantomData)
    }
}

/// Decodes one message of type `U`.
#[derive(Debug, Clone, Default)]
pub struct MessageDecoder<U>(PhantomData<U>);

impl<U: Message + Default> Decoder for MessageDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        U::decode(buf).map(Some).map_err(|e| malformed::<U>(&e))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// INVALID_ARGUMENT, `MALFORMED_REQUEST`, naming the message type and what prost found.
pub fn malformed<U>(error: &prost::DecodeError) -> Status {
    let message = std::any::type_name::<U>()
        .rsplit("::")
        .next()
        .unwrap_or("message");
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!(
            "the {message} message does not decode as protobuf ({error}); nothing was done: \
             check the bytes sent and the .proto the client was built from"
        ),
        ErrorDetails::with_error_info(
            MALFORMED_REQUEST,
            ERROR_DOMAIN,
            HashMap::from([("message".to_string(), message.to_string())]),
        ),
    )
}
