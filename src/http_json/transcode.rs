//! Between JSON and protobuf: the request message built from an HTTP request's path
//! variables, query string and JSON body (proto3 JSON mapping, by prost-reflect), and gRPC
//! response messages written back as JSON.

use std::collections::HashMap;

use bytes::{Buf, BytesMut};
use prost::Message;
use prost_reflect::{DeserializeOptions, DynamicMessage, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value};
use tonic::Status;
use tonic_types::{ErrorDetails, StatusExt};

use super::routes::{BodyTarget, Route, field_path, percent_decode};
use crate::wire::{ERROR_DOMAIN, MALFORMED_REQUEST};

/// INVALID_ARGUMENT `MALFORMED_REQUEST` for a request that does not map onto `message`,
/// with the offending parameter as a field violation when there is one.
pub fn malformed(message: &str, field: Option<&str>, why: &str) -> Status {
    let mut details = ErrorDetails::with_error_info(
        MALFORMED_REQUEST,
        ERROR_DOMAIN,
        HashMap::from([("message".to_string(), message.to_string())]),
    );
    if let Some(field) = field {
        details.add_bad_request_violation(field, why);
    }
    Status::with_error_details(
        tonic::Code::InvalidArgument,
        format!(
            "the request does not map onto {message} ({why}); nothing was done: \
             see /openapi.json for the fields of each route"
        ),
        details,
    )
}

/// The protobuf request of `route` from the path variables' values, the raw query string and
/// the body.
pub fn request_message(
    route: &Route,
    path_values: &[(String, String)],
    query: Option<&str>,
    body: &[u8],
) -> Result<Vec<u8>, Status> {
    let input = route.method.input();
    let name = input.name().to_string();
    let bad = |field: Option<&str>, why: &str| malformed(&name, field, why);
    let has_body = body.iter().any(|b| !b.is_ascii_whitespace());
    let parsed = || -> Result<Value, Status> {
        serde_json::from_slice(body).map_err(|e| bad(None, &format!("the body is not JSON: {e}")))
    };
    let mut root = match &route.body {
        BodyTarget::None if has_body => {
            return Err(bad(
                None,
                &format!("{} {} takes no body", route.verb, route.template.text()),
            ));
        }
        BodyTarget::None => Map::new(),
        BodyTarget::Whole if !has_body => Map::new(),
        BodyTarget::Whole => match parsed()? {
            Value::Object(map) => map,
            _ => return Err(bad(None, "the body must be a JSON object")),
        },
        BodyTarget::Field(field) => {
            let mut map = Map::new();
            if has_body {
                map.insert(field.clone(), parsed()?);
            }
            map
        }
    };
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(key), Some(value)) = (percent_decode(key, true), percent_decode(value, true))
        else {
            return Err(bad(None, "the query string is not percent-encoded UTF-8"));
        };
        if route.body == BodyTarget::Whole {
            return Err(bad(
                Some(&key),
                "this route takes every field in its JSON body, none in the query string",
            ));
        }
        let fields = field_path(&input, &key)
            .ok_or_else(|| bad(Some(&key), &format!("{name} has no field `{key}`")))?;
        let Some(last) = fields.last() else {
            return Err(bad(Some(&key), "an empty field name"));
        };
        if fields
            .iter()
            .rev()
            .skip(1)
            .any(|f| f.is_list() || f.is_map())
            || last.is_map()
        {
            return Err(bad(
                Some(&key),
                "only scalar fields can be set in the query string",
            ));
        }
        let json = query_value(last, &value).map_err(|why| bad(Some(&key), &why))?;
        set(&mut root, &fields, json, last.is_list());
    }
    for (field, value) in path_values {
        let fields = field_path(&input, field).ok_or_else(|| bad(Some(field), "no such field"))?;
        set(&mut root, &fields, Value::String(value.clone()), false);
    }
    let options = DeserializeOptions::new().deny_unknown_fields(true);
    let message =
        DynamicMessage::deserialize_with_options(input.clone(), Value::Object(root), &options)
            .map_err(|e| bad(None, &e.to_string()))?;
    Ok(message.encode_to_vec())
}

/// A query parameter's text as the JSON value its field takes: numbers and booleans parsed
/// (64-bit integers, enums, timestamps and the like stay strings, as proto3 JSON reads them).
fn query_value(field: &FieldDescriptor, text: &str) -> Result<Value, String> {
    Ok(match field.kind() {
        Kind::Bool => match text {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return Err(format!("`{text}` is not true or false")),
        },
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::from(
            text.parse::<i32>()
                .map_err(|_| format!("`{text}` is not a 32-bit integer"))?,
        ),
        Kind::Uint32 | Kind::Fixed32 => Value::from(
            text.parse::<u32>()
                .map_err(|_| format!("`{text}` is not an unsigned 32-bit integer"))?,
        ),
        Kind::Enum(e) => {
            if let Ok(number) = text.parse::<i32>() {
                Value::from(number)
            } else if e.get_value_by_name(text).is_some() {
                Value::String(text.to_string())
            } else {
                return Err(format!(
                    "`{text}` is not a value of {} ({})",
                    e.name(),
                    e.values()
                        .map(|v| v.name().to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        Kind::Message(m) if !is_string_like(&m) => {
            return Err(format!(
                "{} cannot be given in the query string",
                m.full_name()
            ));
        }
        _ => Value::String(text.to_string()),
    })
}

/// Messages whose proto3 JSON form is a string (so a query parameter can carry them).
fn is_string_like(message: &MessageDescriptor) -> bool {
    matches!(
        message.full_name(),
        "google.protobuf.Timestamp"
            | "google.protobuf.Duration"
            | "google.protobuf.FieldMask"
            | "google.protobuf.StringValue"
            | "google.protobuf.Int64Value"
            | "google.protobuf.UInt64Value"
            | "google.protobuf.BytesValue"
    )
}

/// Sets `value` at the nested `fields` of `root`, reusing the key the object already has for
/// a field (its JSON name or its proto name), appending when `list`.
fn set(root: &mut Map<String, Value>, fields: &[FieldDescriptor], value: Value, list: bool) {
    let Some((last, parents)) = fields.split_last() else {
        return;
    };
    let mut object = root;
    for field in parents {
        let key = key_of(object, field);
        let slot = object
            .entry(key)
            .or_insert_with(|| Value::Object(Map::new()));
        if !slot.is_object() {
            *slot = Value::Object(Map::new());
        }
        let Value::Object(inner) = slot else { return };
        object = inner;
    }
    let key = key_of(object, last);
    if list {
        match object
            .entry(key)
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) => items.push(value),
            other => *other = Value::Array(vec![value]),
        }
    } else {
        object.insert(key, value);
    }
}

fn key_of(object: &Map<String, Value>, field: &FieldDescriptor) -> String {
    if object.contains_key(field.name()) {
        field.name().to_string()
    } else {
        field.json_name().to_string()
    }
}

/// One gRPC length-prefixed message as a frame of a request body.
pub fn grpc_frame(message: &[u8]) -> bytes::Bytes {
    let mut frame = BytesMut::with_capacity(5 + message.len());
    frame.extend_from_slice(&[0]);
    frame.extend_from_slice(&(message.len() as u32).to_be_bytes());
    frame.extend_from_slice(message);
    frame.freeze()
}

/// Takes the next whole gRPC message off `buf` (`None`: not all of it has arrived yet).
pub fn next_message(buf: &mut BytesMut) -> Result<Option<bytes::Bytes>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    if buf[0] != 0 {
        return Err("a compressed response message (the gateway does not compress)".into());
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return Ok(None);
    }
    buf.advance(5);
    Ok(Some(buf.split_to(len).freeze()))
}

/// A response message (protobuf bytes of `output`) as proto3 JSON.
pub fn message_json(output: &MessageDescriptor, bytes: &[u8]) -> Result<Vec<u8>, String> {
    let message = DynamicMessage::decode(output.clone(), bytes)
        .map_err(|e| format!("the {} answer does not decode: {e}", output.name()))?;
    serde_json::to_vec(&message).map_err(|e| e.to_string())
}
