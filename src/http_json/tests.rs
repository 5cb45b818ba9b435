use prost::Message;

use super::routes::{Found, Template, percent_decode};
use super::*;
use crate::wire::pb;

fn routes() -> &'static Routes {
    &api().expect("the protos' http options parse").routes
}

#[test]
fn a_template_matches_its_paths_and_names_the_fields_it_fills() {
    let t = Template::parse("/v1/{name=parties/*/projects/*}:refer").unwrap();
    assert_eq!(
        t.matches("/v1/parties/zone/projects/0191d7a0:refer"),
        Some(vec![(
            "name".into(),
            "parties/zone/projects/0191d7a0".into()
        )])
    );
    assert_eq!(
        t.matches("/v1/parties/zone/projects/0191d7a0"),
        None,
        "verb missing"
    );
    assert_eq!(t.matches("/v1/parties/zone/allocations/x:refer"), None);
    assert_eq!(
        t.matches("/v1/parties/zone/projects/a/b:refer"),
        None,
        "one segment each"
    );
    assert_eq!(
        t.matches("/v1/parties//projects/a:refer"),
        None,
        "empty segment"
    );
    let t = Template::parse("/v1/{project.name=parties/*/projects/*}").unwrap();
    assert_eq!(
        t.matches("/v1/parties/zone/projects/%E9%A1%B9"),
        Some(vec![(
            "project.name".into(),
            "parties/zone/projects/项".into()
        )])
    );
    assert_eq!(t.openapi_path().0, "/v1/parties/{party}/projects/{id}");
    assert_eq!(
        t.matches("/v1/parties/zone/projects/p1:refer"),
        None,
        "a verb the template lacks (found by schemathesis: GET ...:answer reached the Get route)"
    );
    let t = Template::parse("/v1/files/{path=**}").unwrap();
    assert_eq!(
        t.matches("/v1/files/a/b/c"),
        Some(vec![("path".into(), "a/b/c".into())])
    );
    for bad in ["v1/x", "/v1/{x", "/v1/**/x", "/v1//x", "/v1/a*b"] {
        assert!(Template::parse(bad).is_err(), "{bad} should not parse");
    }
}

#[test]
fn percent_decoding_refuses_bad_escapes_and_non_utf8() {
    assert_eq!(percent_decode("a%20b+c", true).as_deref(), Some("a b c"));
    assert_eq!(percent_decode("a+b", false).as_deref(), Some("a+b"));
    assert_eq!(percent_decode("%zz", false), None);
    assert_eq!(percent_decode("%", false), None);
    assert_eq!(percent_decode("%ff", false), None);
}

#[test]
fn every_party_facing_method_has_a_route_and_gateway_methods_have_none() {
    let pool = &api().unwrap().pool;
    let routed: Vec<&str> = routes().iter().map(|r| r.grpc_path.as_str()).collect();
    for service in pool.services() {
        let party_facing = service.full_name().starts_with("yrd.exchange.v1.")
            && service.name() != "FederationService";
        for method in service.methods() {
            let path = format!("/{}/{}", service.full_name(), method.name());
            assert_eq!(
                routed.contains(&path.as_str()),
                party_facing,
                "{path}: party-facing methods (and only they) are reachable over HTTP"
            );
        }
    }
}

#[test]
fn a_verb_and_path_find_the_method_or_say_which_verbs_the_path_has() {
    let found = routes().find(&http::Method::GET, "/v1/parties/zone/projects/abc");
    let Found::Route(route, values) = found else {
        panic!("GetProject not found: {found:?}")
    };
    assert_eq!(
        route.grpc_path,
        "/yrd.exchange.v1.ProjectService/GetProject"
    );
    assert_eq!(
        values,
        vec![("name".to_string(), "parties/zone/projects/abc".to_string())]
    );
    match routes().find(&http::Method::DELETE, "/v1/projects") {
        Found::OtherVerbs(verbs) => {
            assert!(verbs.contains(&http::Method::GET) && verbs.contains(&http::Method::POST))
        }
        other => panic!("expected other verbs, got {other:?}"),
    }
    assert!(matches!(
        routes().find(&http::Method::GET, "/v1/nothing"),
        Found::NotFound
    ));
}

fn route(verb: http::Method, path: &str) -> (&'static routes::Route, Vec<(String, String)>) {
    match routes().find(&verb, path) {
        Found::Route(r, v) => (r, v),
        other => panic!("{verb} {path}: {other:?}"),
    }
}

#[test]
fn the_body_path_and_query_become_the_request_message() {
    let (r, v) = route(http::Method::PATCH, "/v1/parties/zone/projects/p1");
    let body =
        br#"{"project": {"displayName": "X", "stage": "STAGE_SIGNED", "totalInvestmentYuan": "12"},
                    "updateMask": "stage,displayName", "request_id": "r1"}"#;
    let bytes = transcode::request_message(r, &v, None, body).unwrap();
    let req = pb::UpdateProjectRequest::decode(bytes.as_slice()).unwrap();
    let project = req.project.unwrap();
    assert_eq!(
        project.name, "parties/zone/projects/p1",
        "the path fills project.name"
    );
    assert_eq!(project.stage, pb::Stage::Signed as i32);
    assert_eq!(project.total_investment_yuan, 12);
    assert_eq!(
        req.update_mask.unwrap().paths,
        vec!["stage", "display_name"]
    );
    assert_eq!(req.request_id, "r1", "proto field names are accepted too");

    let (r, v) = route(http::Method::GET, "/v1/accessRequests");
    let query = "pageSize=7&page_token=t%2B1&state=ACCESS_REQUEST_STATE_REQUESTED&overdueOnly=true";
    let bytes = transcode::request_message(r, &v, Some(query), b"").unwrap();
    let req = pb::ListAccessRequestsRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(req.page_size, 7);
    assert_eq!(req.page_token, "t+1");
    assert_eq!(req.state, pb::AccessRequestState::Requested as i32);
    assert!(req.overdue_only);

    let (r, v) = route(http::Method::GET, "/v1/auditEvents");
    let bytes =
        transcode::request_message(r, &v, Some("startTime=2026-12-01T00:00:00Z"), b"").unwrap();
    let req = pb::ListAuditEventsRequest::decode(bytes.as_slice()).unwrap();
    assert_eq!(req.start_time.unwrap().seconds, 1_796_083_200);
}

fn refusal(verb: http::Method, path: &str, query: Option<&str>, body: &[u8]) -> tonic::Status {
    let (r, v) = route(verb, path);
    transcode::request_message(r, &v, query, body).expect_err("should be refused")
}

#[test]
fn requests_that_do_not_map_are_refused_with_the_field_named() {
    use tonic_types::StatusExt;
    /// Verb, path, query, body, and the field the refusal names (if any).
    type Case<'a> = (
        http::Method,
        &'a str,
        Option<&'a str>,
        &'a [u8],
        Option<&'a str>,
    );
    let cases: &[Case] = &[
        (http::Method::POST, "/v1/projects", None, b"{not json", None),
        (http::Method::POST, "/v1/projects", None, b"[1]", None),
        (
            http::Method::POST,
            "/v1/projects",
            None,
            br#"{"project": {"bogus": 1}}"#,
            None,
        ),
        (
            http::Method::POST,
            "/v1/projects",
            None,
            br#"{"project": {"stage": "NOPE"}}"#,
            None,
        ),
        (
            http::Method::POST,
            "/v1/projects",
            Some("requestId=x"),
            b"{}",
            Some("requestId"),
        ),
        (http::Method::GET, "/v1/projects", None, b"{}", None),
        (
            http::Method::GET,
            "/v1/projects",
            Some("pageSize=x"),
            b"",
            Some("pageSize"),
        ),
        (
            http::Method::GET,
            "/v1/projects",
            Some("pageSize=99999999999"),
            b"",
            Some("pageSize"),
        ),
        (
            http::Method::GET,
            "/v1/projects",
            Some("nope=1"),
            b"",
            Some("nope"),
        ),
        (
            http::Method::GET,
            "/v1/projects",
            Some("owner=%ff"),
            b"",
            None,
        ),
        (
            http::Method::GET,
            "/v1/accessRequests",
            Some("overdueOnly=yes"),
            b"",
            Some("overdueOnly"),
        ),
    ];
    for (verb, path, query, body, field) in cases {
        let status = refusal(verb.clone(), path, *query, body);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{path} {query:?}"
        );
        let details = status.get_error_details();
        assert_eq!(
            details.error_info().map(|i| i.reason.as_str()),
            Some(crate::wire::MALFORMED_REQUEST)
        );
        let violations: Vec<String> = details
            .bad_request()
            .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
            .unwrap_or_default();
        match field {
            Some(f) => assert_eq!(violations, vec![f.to_string()], "{path} {query:?}"),
            None => assert!(violations.is_empty(), "{path} {query:?}: {violations:?}"),
        }
    }
}

#[test]
fn a_status_becomes_google_rpc_status_json_with_its_details_and_http_code() {
    let mut v = crate::records::Violations::new();
    v.add("project.display_name", "is required");
    let status = crate::api::error::bad_request(&v);
    assert_eq!(
        status::http_status(status.code()),
        http::StatusCode::BAD_REQUEST
    );
    let json = status::status_json(&status);
    assert_eq!(json["code"], 3);
    assert_eq!(
        json["details"][0]["@type"],
        "type.googleapis.com/google.rpc.ErrorInfo"
    );
    assert_eq!(
        json["details"][1]["fieldViolations"][0]["field"],
        "project.display_name"
    );
    for (code, http) in [
        (tonic::Code::NotFound, 404),
        (tonic::Code::PermissionDenied, 403),
        (tonic::Code::Unauthenticated, 401),
        (tonic::Code::FailedPrecondition, 400),
        (tonic::Code::AlreadyExists, 409),
        (tonic::Code::ResourceExhausted, 429),
        (tonic::Code::Unavailable, 503),
        (tonic::Code::DeadlineExceeded, 504),
    ] {
        assert_eq!(status::http_status(code).as_u16(), http, "{code:?}");
    }
}

#[test]
fn a_response_message_is_written_in_proto3_json() {
    let out = api()
        .unwrap()
        .pool
        .get_message_by_name("yrd.exchange.v1.GetProjectResponse")
        .unwrap();
    let response = pb::GetProjectResponse {
        project: Some(pb::Project {
            name: "parties/zone/projects/p".into(),
            total_investment_yuan: 5,
            stage: pb::Stage::Lead as i32,
            ..Default::default()
        }),
    };
    let mut buf = bytes::BytesMut::from(transcode::grpc_frame(&response.encode_to_vec()).as_ref());
    let message = transcode::next_message(&mut buf).unwrap().unwrap();
    let json: serde_json::Value =
        serde_json::from_slice(&transcode::message_json(&out, &message).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"project": {"name": "parties/zone/projects/p", "totalInvestmentYuan": "5", "stage": "STAGE_LEAD"}})
    );
    let mut partial = bytes::BytesMut::from(&[0u8, 0, 0, 0, 9, 1][..]);
    assert_eq!(
        transcode::next_message(&mut partial),
        Ok(None),
        "waits for the rest"
    );
    let mut compressed = bytes::BytesMut::from(&[1u8, 0, 0, 0, 0][..]);
    assert!(transcode::next_message(&mut compressed).is_err());
}

#[test]
fn the_openapi_document_in_the_repository_is_the_one_the_protos_give() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
    let kept = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        kept == openapi::document(),
        "docs/openapi.json is stale: run `cargo run -- openapi > docs/openapi.json`"
    );
    let doc: serde_json::Value = serde_json::from_str(&kept).unwrap();
    assert_eq!(
        doc["paths"]["/v1/parties/{party}/projects/{id}"]["get"]["operationId"],
        "GetProject"
    );
    // Every $ref points at a schema the document has.
    let text = kept.as_str();
    for piece in text.split("\"$ref\": \"#/components/schemas/").skip(1) {
        let name = &piece[..piece.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{name} is referenced but missing"
        );
    }
}
