//! The OpenAPI 3 document of the HTTP/JSON surface, generated from the descriptors built into
//! the binary: one operation per route (path variables, query parameters or JSON body), one
//! schema per message in its proto3 JSON form, descriptions from the protos' comments. The
//! gateway serves it at `/openapi.json`; `docs/openapi.json` is the same document, kept in the
//! repository (`yrd-gateway openapi > docs/openapi.json`), and a test fails when it is stale.

use std::collections::{BTreeMap, BTreeSet};

use prost_reflect::{FieldDescriptor, FileDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::routes::{BodyTarget, Route};
use super::{Api, api};

/// The document as pretty-printed JSON (an error document if the build's routes are broken),
/// generated once: it depends only on the descriptors built into the binary.
pub fn document() -> &'static str {
    static DOCUMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let value = match api() {
            Ok(api) => generate(api),
            Err(e) => json!({ "error": e }),
        };
        let mut text = serde_json::to_string_pretty(&value).unwrap_or_default();
        text.push('\n');
        text
    });
    &DOCUMENT
}

fn generate(api: &Api) -> Value {
    let mut schemas = Schemas::default();
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for route in api.routes.iter() {
        let operation = operation(route, &mut schemas);
        paths
            .entry(route.template.openapi_path().0)
            .or_default()
            .insert(route.verb.as_str().to_ascii_lowercase(), operation);
    }
    let mut components = schemas.done();
    components.insert("google.rpc.Status".into(), status_schema());
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "yrd-gateway HTTP/JSON API",
            "version": "v1",
            "description": "The party-facing methods of yrd.exchange.v1 over HTTPS with JSON, \
                mapped by the google.api.http options of the protos, with the proto3 JSON \
                mapping of every message. Every request needs the client certificate the \
                party's CA issued for the calling system (mutual TLS, TLS 1.3): the identity, \
                authorization, limits, validation and audit trail are those of the gRPC \
                methods. Errors are google.rpc.Status with its details. Watch answers \
                newline-delimited JSON (application/x-ndjson), or server-sent events when the \
                request accepts text/event-stream (each event's id is its resume token; \
                Last-Event-ID resumes); a failure ends the stream with a line \
                {\"error\": Status}.",
        },
        "paths": paths,
        "components": { "schemas": components },
    })
}

fn operation(route: &Route, schemas: &mut Schemas) -> Value {
    let method = &route.method;
    let input = method.input();
    let mut parameters = Vec::new();
    let bound: BTreeSet<&str> = route.template.fields().collect();
    for (name, field) in route.template.openapi_path().1 {
        let pattern = route.template.pattern_of(&field).unwrap_or_default();
        parameters.push(json!({
            "name": name,
            "in": "path",
            "required": true,
            "description": format!("Part of the request field `{field}` (`{pattern}`)."),
            "schema": { "type": "string" },
        }));
    }
    if route.body == BodyTarget::None {
        for field in input.fields() {
            if bound.contains(field.name()) || field.is_map() {
                continue;
            }
            let schema = field_schema(&field, schemas);
            let mut p = Map::new();
            p.insert("name".into(), field.json_name().into());
            p.insert("in".into(), "query".into());
            if let Some(text) = comment(&field.parent_file(), field.path()) {
                p.insert("description".into(), text.into());
            }
            p.insert("schema".into(), schema);
            if field.is_list() {
                p.insert("explode".into(), true.into());
            }
            parameters.push(Value::Object(p));
        }
    }
    let mut op = Map::new();
    op.insert("operationId".into(), method.name().into());
    op.insert("tags".into(), json!([method.parent_service().name()]));
    let service_index = method.parent_service().index() as i32;
    let method_path = [6, service_index, 2, method.index() as i32];
    if let Some(text) = comment(&method.parent_file(), &method_path) {
        op.insert("description".into(), text.into());
    }
    op.insert(
        "x-grpc-method".into(),
        route.grpc_path.trim_start_matches('/').into(),
    );
    if !parameters.is_empty() {
        op.insert("parameters".into(), parameters.into());
    }
    match &route.body {
        BodyTarget::None => {}
        BodyTarget::Whole => {
            op.insert(
                "requestBody".into(),
                json!({
                    "required": true,
                    "content": { "application/json": { "schema": schemas.reference(&input) } },
                }),
            );
        }
        BodyTarget::Field(name) => {
            if let Some(field) = input.get_field_by_name(name) {
                op.insert(
                    "requestBody".into(),
                    json!({
                        "required": true,
                        "content": { "application/json": { "schema": field_schema(&field, schemas) } },
                    }),
                );
            }
        }
    }
    let output = schemas.reference(&method.output());
    let ok = if method.is_server_streaming() {
        json!({
            "description": "One message per line (application/x-ndjson), or one server-sent event each (text/event-stream), until the client closes the stream.",
            "content": {
                "application/x-ndjson": { "schema": output },
                "text/event-stream": { "schema": { "type": "string" } },
            },
        })
    } else {
        json!({
            "description": "OK",
            "content": { "application/json": { "schema": output } },
        })
    };
    op.insert(
        "responses".into(),
        json!({
            "200": ok,
            "default": {
                "description": "The call failed: google.rpc.Status, with the HTTP status Google's mapping gives its code.",
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/google.rpc.Status" } } },
            },
        }),
    );
    Value::Object(op)
}

/// Message schemas, each generated once, named by the message's full name.
#[derive(Default)]
struct Schemas {
    done: BTreeMap<String, Value>,
    pending: Vec<MessageDescriptor>,
}

impl Schemas {
    /// A `$ref` to `message`'s schema (or the inline schema of a well-known type).
    fn reference(&mut self, message: &MessageDescriptor) -> Value {
        if let Some(inline) = well_known(message) {
            return inline;
        }
        let name = message.full_name().to_string();
        if !self.done.contains_key(&name) {
            self.done.insert(name.clone(), Value::Null);
            self.pending.push(message.clone());
        }
        json!({ "$ref": format!("#/components/schemas/{name}") })
    }

    fn done(mut self) -> BTreeMap<String, Value> {
        while let Some(message) = self.pending.pop() {
            let schema = self.message_schema(&message);
            self.done.insert(message.full_name().to_string(), schema);
        }
        self.done
    }

    fn message_schema(&mut self, message: &MessageDescriptor) -> Value {
        let mut properties = Map::new();
        for field in message.fields() {
            let mut schema = field_schema(&field, self);
            if let (Some(text), Value::Object(map)) =
                (comment(&field.parent_file(), field.path()), &mut schema)
            {
                if map.contains_key("$ref") {
                    // A $ref takes no siblings in OpenAPI 3.0.
                    schema = json!({ "allOf": [schema], "description": text });
                } else {
                    map.insert("description".into(), text.into());
                }
            }
            properties.insert(field.json_name().to_string(), schema);
        }
        let mut out = Map::new();
        out.insert("type".into(), "object".into());
        if let Some(text) = comment(&message.parent_file(), message.path()) {
            out.insert("description".into(), text.into());
        }
        out.insert("properties".into(), properties.into());
        Value::Object(out)
    }
}

/// The schema of one field's value in proto3 JSON.
fn field_schema(field: &FieldDescriptor, schemas: &mut Schemas) -> Value {
    if field.is_map() {
        let entry = field.kind();
        let value = entry
            .as_message()
            .map(|m| m.map_entry_value_field())
            .map(|v| kind_schema(&v.kind(), schemas))
            .unwrap_or_else(|| json!({}));
        return json!({ "type": "object", "additionalProperties": value });
    }
    let one = kind_schema(&field.kind(), schemas);
    if field.is_list() {
        json!({ "type": "array", "items": one })
    } else {
        one
    }
}

fn kind_schema(kind: &Kind, schemas: &mut Schemas) -> Value {
    match kind {
        Kind::Bool => json!({ "type": "boolean" }),
        Kind::String => json!({ "type": "string" }),
        Kind::Bytes => json!({ "type": "string", "format": "byte" }),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({ "type": "integer", "format": "int32" })
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX })
        }
        // proto3 JSON writes 64-bit integers as strings.
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({ "type": "string", "format": "int64", "pattern": "^-?[0-9]{1,19}$" })
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({ "type": "string", "format": "uint64", "pattern": "^[0-9]{1,20}$" })
        }
        Kind::Float => json!({ "type": "number", "format": "float" }),
        Kind::Double => json!({ "type": "number", "format": "double" }),
        Kind::Enum(e) => json!({
            "type": "string",
            "enum": e.values().map(|v| v.name().to_string()).collect::<Vec<_>>(),
        }),
        Kind::Message(m) => schemas.reference(m),
    }
}

/// The inline schema of a well-known type with a special JSON form.
fn well_known(message: &MessageDescriptor) -> Option<Value> {
    Some(match message.full_name() {
        "google.protobuf.Timestamp" => json!({ "type": "string", "format": "date-time" }),
        "google.protobuf.Duration" => {
            json!({ "type": "string", "description": "Seconds with an `s` suffix, e.g. `1.5s`." })
        }
        "google.protobuf.FieldMask" => {
            json!({ "type": "string", "description": "Field paths in lowerCamelCase, comma-separated." })
        }
        "google.protobuf.Empty" => json!({ "type": "object" }),
        _ => return None,
    })
}

/// The comment written before the element at `path` of `file`, trimmed.
fn comment(file: &FileDescriptor, path: &[i32]) -> Option<String> {
    let info = file.file_descriptor_proto().source_code_info.as_ref()?;
    let location = info.location.iter().find(|l| l.path == path)?;
    let text = location.leading_comments.as_deref()?.trim();
    (!text.is_empty()).then(|| text.lines().map(str::trim).collect::<Vec<_>>().join(" "))
}

fn status_schema() -> Value {
    json!({
        "type": "object",
        "description": "google.rpc.Status: the gRPC code (a number), a message for people, and details: google.rpc.ErrorInfo (reason and domain `yrd-gateway`, metadata), google.rpc.BadRequest (fieldViolations: field path and description), google.rpc.RetryInfo (retryDelay).",
        "properties": {
            "code": { "type": "integer", "format": "int32", "description": "The gRPC status code, e.g. 3 for INVALID_ARGUMENT." },
            "message": { "type": "string" },
            "details": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": { "@type": { "type": "string" } },
                    "additionalProperties": true,
                },
            },
        },
    })
}
