//! The HTTP routes of the gRPC methods, read from their `google.api.http` options: a verb and a
//! path template (`/v1/{name=parties/*/projects/*}:refer`) whose variables name request fields.

use prost_reflect::{DescriptorPool, MethodDescriptor, Value};

/// One piece of a path template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// This exact segment.
    Literal(String),
    /// Any one segment (`*`).
    One,
    /// The rest of the path, one segment or more (`**`, last only).
    Rest,
}

/// A variable of a template: the request field it fills and the pieces it spans.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Variable {
    field: String,
    start: usize,
    end: usize,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
    variables: Vec<Variable>,
    verb: Option<String>,
    text: String,
}

impl Template {
    /// Parses `/segment/{field=pattern}/...[:verb]`; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Template, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| format!("`{text}` does not start with /"))?;
        let (path, verb) = split_verb(rest);
        let mut pieces = Vec::new();
        let mut variables = Vec::new();
        for segment in split_top(path, '/') {
            if let Some(inner) = segment.strip_prefix('{') {
                let inner = inner
                    .strip_suffix('}')
                    .ok_or_else(|| format!("`{text}`: unclosed variable"))?;
                let (field, pattern) = inner.split_once('=').unwrap_or((inner, "*"));
                let start = pieces.len();
                for p in pattern.split('/') {
                    pieces.push(piece(p, text)?);
                }
                variables.push(Variable {
                    field: field.to_string(),
                    start,
                    end: pieces.len(),
                });
            } else {
                pieces.push(piece(segment, text)?);
            }
        }
        if let Some(at) = pieces.iter().position(|p| *p == Piece::Rest) {
            if at + 1 != pieces.len() {
                return Err(format!("`{text}`: ** is allowed only last"));
            }
        }
        Ok(Template {
            pieces,
            variables,
            verb: verb.map(str::to_string),
            text: text.to_string(),
        })
    }

    /// The template as written in the proto.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The request fields this template's variables fill, in order.
    pub fn fields(&self) -> impl Iterator<Item = &str> {
        self.variables.iter().map(|v| v.field.as_str())
    }

    /// The values of the variables when `path` (as received, percent-encoded) matches: each
    /// field with the segments it spans, percent-decoded and joined by `/`.
    pub fn matches(&self, path: &str) -> Option<Vec<(String, String)>> {
        let rest = path.strip_prefix('/')?;
        let rest = match &self.verb {
            Some(verb) => rest.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            // A last segment with a `:` carries a verb, which this template has not.
            None if rest
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':')) =>
            {
                return None;
            }
            None => rest,
        };
        let segments: Vec<&str> = rest.split('/').collect();
        // Where each piece's segments begin (the last piece may take the rest).
        let mut spans = Vec::with_capacity(self.pieces.len());
        for (i, piece) in self.pieces.iter().enumerate() {
            match piece {
                Piece::Rest => {
                    if segments.len() <= i {
                        return None;
                    }
                    spans.push((i, segments.len()));
                }
                Piece::One | Piece::Literal(_) => {
                    let segment = segments.get(i)?;
                    if segment.is_empty() {
                        return None;
                    }
                    if let Piece::Literal(l) = piece {
                        if l != segment {
                            return None;
                        }
                    }
                    spans.push((i, i + 1));
                }
            }
        }
        let used = spans.last().map_or(0, |s| s.1);
        if used != segments.len() {
            return None;
        }
        let mut values = Vec::with_capacity(self.variables.len());
        for v in &self.variables {
            let (from, to) = (spans[v.start].0, spans[v.end - 1].1);
            let value = segments[from..to]
                .iter()
                .map(|s| percent_decode(s, false))
                .collect::<Option<Vec<_>>>()?
                .join("/");
            values.push((v.field.clone(), value));
        }
        Some(values)
    }

    /// OpenAPI's form of the path, with each `*` of a variable as a path parameter of its own
    /// (`/v1/{name=parties/*/projects/*}` is `/v1/parties/{party}/projects/{id}`), and for
    /// each parameter the request field whose value it is part of.
    pub fn openapi_path(&self) -> (String, Vec<(String, String)>) {
        let mut out = String::new();
        let mut parameters = Vec::new();
        for (i, piece) in self.pieces.iter().enumerate() {
            out.push('/');
            let variable = self
                .variables
                .iter()
                .find(|v| (v.start..v.end).contains(&i));
            match (piece, variable) {
                (Piece::Literal(l), _) => out.push_str(l),
                (_, None) => out.push_str(if *piece == Piece::Rest { "**" } else { "*" }),
                (_, Some(v)) => {
                    let name = if i + 1 == v.end {
                        "id".to_string()
                    } else {
                        match i.checked_sub(1).map(|p| &self.pieces[p]) {
                            Some(Piece::Literal(l)) if l == "parties" => "party".to_string(),
                            Some(Piece::Literal(l)) => format!("{}_id", l.trim_end_matches('s')),
                            _ => format!("segment{i}"),
                        }
                    };
                    out.push('{');
                    out.push_str(&name);
                    out.push('}');
                    parameters.push((name, v.field.clone()));
                }
            }
        }
        if let Some(verb) = &self.verb {
            out.push(':');
            out.push_str(verb);
        }
        (out, parameters)
    }

    /// The pattern a variable's value must have (`parties/*/projects/*`).
    pub fn pattern_of(&self, field: &str) -> Option<String> {
        let v = self.variables.iter().find(|v| v.field == field)?;
        Some(
            self.pieces[v.start..v.end]
                .iter()
                .map(|p| match p {
                    Piece::Literal(l) => l.as_str(),
                    Piece::One => "*",
                    Piece::Rest => "**",
                })
                .collect::<Vec<_>>()
                .join("/"),
        )
    }
}

fn piece(segment: &str, text: &str) -> Result<Piece, String> {
    Ok(match segment {
        "*" => Piece::One,
        "**" => Piece::Rest,
        "" => return Err(format!("`{text}`: empty segment")),
        s if s.contains(['{', '}', '*', '=']) => {
            return Err(format!("`{text}`: bad segment `{s}`"));
        }
        s => Piece::Literal(s.to_string()),
    })
}

/// Splits off the verb: a `:` outside any variable, after the last segment.
fn split_verb(path: &str) -> (&str, Option<&str>) {
    let mut depth = 0;
    for (i, c) in path.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ':' if depth == 0 => return (&path[..i], Some(&path[i + 1..])),
            _ => {}
        }
    }
    (path, None)
}

/// Splits at `sep` outside variables.
fn split_top(path: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, c) in path.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            c if c == sep && depth == 0 => {
                out.push(&path[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&path[start..]);
    out
}

/// `%XX` sequences decoded (and `+` as a space when `plus` is set, as in query strings);
/// `None` for a bad escape or bytes that are not UTF-8.
pub fn percent_decode(s: &str, plus: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Which part of the request the HTTP body fills.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyTarget {
    /// No body: every field not in the path comes from the query string.
    None,
    /// The whole request message (`body: "*"`).
    Whole,
    /// One field of the request (`body: "project"`).
    Field(String),
}

/// One gRPC method reachable over HTTP.
#[derive(Debug, Clone)]
pub struct Route {
    pub verb: http::Method,
    pub template: Template,
    pub body: BodyTarget,
    pub method: MethodDescriptor,
    /// The gRPC path the call is made on: `/package.Service/Method`.
    pub grpc_path: String,
}

/// What a request's verb and path find.
#[derive(Debug)]
pub enum Found<'a> {
    Route(&'a Route, Vec<(String, String)>),
    /// The path exists with other verbs (listed).
    OtherVerbs(Vec<http::Method>),
    NotFound,
}

/// Every route of a descriptor pool, in the order the protos declare them.
#[derive(Debug, Clone)]
pub struct Routes {
    routes: Vec<Route>,
}

impl Routes {
    /// Reads every method's `google.api.http` option. An option that does not parse is an
    /// error naming the method (a build of the protos that cannot serve).
    pub fn from_pool(pool: &DescriptorPool) -> Result<Routes, String> {
        let http = pool
            .get_extension_by_name("google.api.http")
            .ok_or("the descriptor set lacks google.api.http (google/api/annotations.proto)")?;
        let mut routes = Vec::new();
        for service in pool.services() {
            for method in service.methods() {
                let options = method.options();
                if !options.has_extension(&http) {
                    continue;
                }
                let value = options.get_extension(&http);
                let Value::Message(rule) = value.as_ref() else {
                    continue;
                };
                let text = |name: &str| {
                    rule.get_field_by_name(name)
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default()
                };
                let (verb, path) = [
                    (http::Method::GET, "get"),
                    (http::Method::PUT, "put"),
                    (http::Method::POST, "post"),
                    (http::Method::DELETE, "delete"),
                    (http::Method::PATCH, "patch"),
                ]
                .into_iter()
                .find_map(|(verb, field)| {
                    rule.has_field_by_name(field).then(|| (verb, text(field)))
                })
                .ok_or_else(|| format!("{}: the http rule names no verb", method.full_name()))?;
                let template =
                    Template::parse(&path).map_err(|e| format!("{}: {e}", method.full_name()))?;
                let input = method.input();
                for field in template.fields() {
                    field_path(&input, field).ok_or_else(|| {
                        format!("{}: no request field `{field}`", method.full_name())
                    })?;
                }
                let body = match text("body").as_str() {
                    "" => BodyTarget::None,
                    "*" => BodyTarget::Whole,
                    field => {
                        input.get_field_by_name(field).ok_or_else(|| {
                            format!("{}: no body field `{field}`", method.full_name())
                        })?;
                        BodyTarget::Field(field.to_string())
                    }
                };
                routes.push(Route {
                    grpc_path: format!("/{}/{}", service.full_name(), method.name()),
                    verb,
                    template,
                    body,
                    method,
                });
            }
        }
        Ok(Routes { routes })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter()
    }

    /// The route `verb` and `path` reach, with its variables' values.
    pub fn find(&self, verb: &http::Method, path: &str) -> Found<'_> {
        let mut others = Vec::new();
        for route in &self.routes {
            if let Some(values) = route.template.matches(path) {
                if route.verb == *verb {
                    return Found::Route(route, values);
                }
                others.push(route.verb.clone());
            }
        }
        if others.is_empty() {
            Found::NotFound
        } else {
            Found::OtherVerbs(others)
        }
    }
}

/// The fields a dotted path (`project.name`) walks through, from `message`.
pub fn field_path(
    message: &prost_reflect::MessageDescriptor,
    path: &str,
) -> Option<Vec<prost_reflect::FieldDescriptor>> {
    let mut out = Vec::new();
    let mut current = message.clone();
    let mut names = path.split('.').peekable();
    while let Some(name) = names.next() {
        let field = current
            .get_field_by_name(name)
            .or_else(|| current.get_field_by_json_name(name))?;
        if names.peek().is_some() {
            current = field.kind().as_message()?.clone();
        }
        out.push(field);
    }
    Some(out)
}
