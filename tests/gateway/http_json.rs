//! The HTTP/JSON surface from outside, as a county system without gRPC uses it: plain HTTPS
//! (HTTP/1.1 and HTTP/2) with JSON bodies and the system's client certificate, against real
//! gateways. The same identity, rules, errors and audit trail as gRPC; Watch as JSON lines and
//! server-sent events, resumable.

use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use yrd_gateway::wire::pb;

use crate::common::*;

/// An HTTPS/1.1 connection to a gateway, one request per connection.
struct Http {
    addr: std::net::SocketAddr,
    tls: Arc<ClientConfig>,
}

type Conn = BufReader<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>;

/// A response: status, headers (lowercase names) and the body reader.
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    conn: Conn,
}

impl Http {
    fn new(fed: &TestFederation, gateway: &str, tls: Arc<ClientConfig>) -> Http {
        let mut tls = (*tls).clone();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Http {
            addr: fed.addr(gateway),
            tls: Arc::new(tls),
        }
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Response {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut tls = tokio_rustls::TlsConnector::from(self.tls.clone())
            .connect(name, tcp)
            .await
            .unwrap();
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        tls.write_all(head.as_bytes()).await.unwrap();
        tls.write_all(body).await.unwrap();
        // A write returns once TLS holds the bytes; what the socket did not take yet leaves
        // only with a flush (without it, a large body's end could wait forever).
        tls.flush().await.unwrap();
        let mut conn = BufReader::new(tls);
        let mut line = String::new();
        conn.read_line(&mut line).await.unwrap();
        let status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut headers = Vec::new();
        loop {
            line.clear();
            conn.read_line(&mut line).await.unwrap();
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
        }
        Response {
            status,
            headers,
            conn,
        }
    }

    /// Sends and reads the whole JSON answer.
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        let bytes = body
            .map(|b| serde_json::to_vec(b).unwrap())
            .unwrap_or_default();
        let mut response = self.send(method, path, &[], &bytes).await;
        let status = response.status;
        let text = response.body().await;
        let value = serde_json::from_slice(&text).unwrap_or_else(|e| {
            panic!(
                "{method} {path}: not JSON ({e}): {}",
                String::from_utf8_lossy(&text)
            )
        });
        (status, value)
    }
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn chunked(&self) -> bool {
        self.header("transfer-encoding") == Some("chunked")
    }

    async fn body(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.chunked() {
            while let Some(chunk) = self.chunk().await {
                out.extend(chunk);
            }
        } else if let Some(n) = self.header("content-length") {
            out.resize(n.parse().unwrap(), 0);
            self.conn.read_exact(&mut out).await.unwrap();
        } else {
            self.conn.read_to_end(&mut out).await.unwrap();
        }
        out
    }

    /// The next chunk of a chunked body (`None` at its end).
    async fn chunk(&mut self) -> Option<Vec<u8>> {
        let mut size = String::new();
        self.conn.read_line(&mut size).await.ok()?;
        let n = usize::from_str_radix(size.trim(), 16).ok()?;
        let mut data = vec![0; n + 2];
        self.conn.read_exact(&mut data).await.ok()?;
        data.truncate(n);
        (n > 0).then_some(data)
    }

    /// Reads a streamed body until `count` complete lines (or events) arrived, within 20 s.
    async fn lines(&mut self, count: usize, sep: &str) -> Vec<String> {
        let mut text = String::new();
        let read = async {
            while text.matches(sep).count() < count {
                let chunk = self.chunk().await.expect("the stream ended early");
                text.push_str(std::str::from_utf8(&chunk).unwrap());
            }
        };
        tokio::time::timeout(Duration::from_secs(20), read)
            .await
            .expect("stream lines in time");
        text.split(sep).take(count).map(str::to_string).collect()
    }
}

fn project_json(display_name: &str) -> Value {
    json!({
        "displayName": display_name,
        "investor": { "name": "浙江某某新能源汽车零部件有限公司", "creditCode": CREDIT_CODE },
        "industry": "INDUSTRY_NEW_ENERGY_VEHICLES",
        "totalInvestmentYuan": "1500000000",
        "contact": { "name": "张三", "phone": "+86 138-0000-0000" },
    })
}

fn create_body(display_name: &str) -> Value {
    json!({ "project": project_json(display_name), "requestId": uuid::Uuid::now_v7().to_string() })
}

fn reason(error: &Value) -> &str {
    error["details"]
        .as_array()
        .and_then(|d| {
            d.iter()
                .find(|d| d["@type"] == "type.googleapis.com/google.rpc.ErrorInfo")
        })
        .and_then(|d| d["reason"].as_str())
        .unwrap_or("")
}

fn violations(error: &Value) -> Vec<String> {
    error["details"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|d| d["@type"] == "type.googleapis.com/google.rpc.BadRequest")
        .flat_map(|d| d["fieldViolations"].as_array().cloned().unwrap_or_default())
        .map(|v| v["field"].as_str().unwrap_or("").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_system_without_grpc_creates_reads_updates_and_lists_projects_over_http_json() {
    let fed = TestFederation::start(&["zone", "guangde"]).await;
    let zone = Http::new(&fed, "zone", fed.pki.client_config("zone", "client"));

    // Create; a retry with the same request id answers the first result.
    let body = create_body("年产10万套新能源汽车零部件项目");
    let (status, created) = zone.call("POST", "/v1/projects", Some(&body)).await;
    assert_eq!(status, 200, "{created}");
    let project = &created["project"];
    let name = project["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("parties/zone/projects/"), "{name}");
    assert_eq!(project["stage"], "STAGE_LEAD", "enums by name");
    assert_eq!(
        project["totalInvestmentYuan"], "1500000000",
        "int64 as a string"
    );
    let (status, again) = zone.call("POST", "/v1/projects", Some(&body)).await;
    assert_eq!((status, &again["project"]["name"]), (200, &project["name"]));

    // The same record as gRPC reads it.
    let grpc = get_with(&mut fed.projects("zone", "zone"), &name).await;
    let (status, read) = zone.call("GET", &format!("/v1/{name}"), None).await;
    assert_eq!(status, 200);
    assert_eq!(read["project"]["etag"], grpc.etag.as_str());
    assert_eq!(read["project"]["contact"]["phone"], "+86 138-0000-0000");

    // Guangde (Anhui) reads its copy over HTTP: the phone is withheld across the border.
    let guangde = Http::new(&fed, "guangde", fed.pki.client_config("guangde", "client"));
    let path = format!("/v1/{name}");
    let copy = eventually(Duration::from_secs(20), "the copy at guangde", || async {
        let (status, body) = guangde.call("GET", &path, None).await;
        (status == 200).then_some(body)
    })
    .await;
    assert_eq!(copy["project"]["contact"]["name"], "张三");
    assert!(
        copy["project"]["contact"].get("phone").is_none(),
        "withheld: {copy}"
    );

    // Update with a stale etag is refused; with the current one it applies.
    let etag = read["project"]["etag"].as_str().unwrap();
    let update = |etag: &str| {
        json!({
            "project": { "stage": "STAGE_SIGNED", "etag": etag },
            "updateMask": "stage",
            "requestId": uuid::Uuid::now_v7().to_string(),
        })
    };
    let (status, stale) = zone
        .call(
            "PATCH",
            &format!("/v1/{name}"),
            Some(&update("\"0-stale\"")),
        )
        .await;
    assert_eq!(status, 400, "{stale}");
    assert_eq!(stale["code"], 9, "FAILED_PRECONDITION");
    assert_eq!(reason(&stale), "STALE_ETAG");
    let (status, updated) = zone
        .call("PATCH", &format!("/v1/{name}"), Some(&update(etag)))
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["project"]["stage"], "STAGE_SIGNED");
    assert_ne!(updated["project"]["etag"], read["project"]["etag"]);

    // List in pages of two.
    for i in 0..3 {
        let (status, _) = zone
            .call(
                "POST",
                "/v1/projects",
                Some(&create_body(&format!("项目 {i}"))),
            )
            .await;
        assert_eq!(status, 200);
    }
    let mut names = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let (status, page) = zone
            .call(
                "GET",
                &format!("/v1/projects?owner=zone&pageSize=2&pageToken={token}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        let projects = page["projects"].as_array().cloned().unwrap_or_default();
        assert!(projects.len() <= 2);
        names.extend(
            projects
                .iter()
                .map(|p| p["name"].as_str().unwrap().to_string()),
        );
        pages += 1;
        match page["nextPageToken"].as_str() {
            Some(t) if !t.is_empty() => token = t.to_string(),
            _ => break,
        }
    }
    assert_eq!((names.len(), pages), (4, 2), "{names:?}");
    let grpc_names: Vec<String> = all_projects(&mut fed.projects("zone", "zone"))
        .await
        .into_iter()
        .filter(|p| p.owner == "zone")
        .map(|p| p.name)
        .collect();
    assert_eq!(names, grpc_names, "the same list, the same order as gRPC");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_json_calls_are_refused_counted_and_audited_like_grpc_calls() {
    let fed = TestFederation::start_with(
        &["zone"],
        Options {
            extra_toml: "[access]\nread_only_systems = [\"dashboard\"]\n".into(),
            ..Options::default()
        },
    )
    .await;
    let zone = Http::new(&fed, "zone", fed.pki.client_config("zone", "client"));
    let count = || async {
        let (_, page) = zone.call("GET", "/v1/projects?pageSize=500", None).await;
        page["projects"].as_array().map_or(0, Vec::len)
    };

    // Validation: the handler's field violations, as for gRPC.
    let mut invalid = create_body("x");
    invalid["project"]["displayName"] = json!("");
    invalid["project"]["investor"]["creditCode"] = json!("91330522MA2B3C4D5X");
    let (status, error) = zone.call("POST", "/v1/projects", Some(&invalid)).await;
    assert_eq!((status, error["code"].as_i64()), (400, Some(3)), "{error}");
    let fields = violations(&error);
    assert!(
        fields.contains(&"project.display_name".to_string())
            && fields.contains(&"project.investor.credit_code".to_string()),
        "{fields:?}"
    );

    // JSON that does not fit the message: refused before the handler, the field named.
    for body in [
        &b"{\"project\": "[..],
        &br#"{"project": {"displayName": "x", "colour": "red"}}"#[..],
        &br#"{"project": {"stage": "STAGE_NOPE"}}"#[..],
    ] {
        let mut response = zone.send("POST", "/v1/projects", &[], body).await;
        let error: Value = serde_json::from_slice(&response.body().await).unwrap();
        assert_eq!(response.status, 400, "{error}");
        assert_eq!(reason(&error), "MALFORMED_REQUEST", "{error}");
    }
    let (status, error) = zone.call("GET", "/v1/projects?stage=LATE", None).await;
    assert_eq!((status, reason(&error)), (400, "MALFORMED_REQUEST"));
    assert_eq!(violations(&error), vec!["stage"]);
    assert_eq!(count().await, 0, "nothing refused was written");

    // No such route, or not with this verb.
    let (status, error) = zone.call("GET", "/v1/nothing", None).await;
    assert_eq!((status, error["code"].as_i64()), (404, Some(5)));
    let response = zone.send("DELETE", "/v1/projects", &[], b"").await;
    assert_eq!(response.status, 405);
    assert_eq!(response.header("allow"), Some("POST, GET"));

    // A body over the limit (four times limits.max_message_bytes of JSON).
    let huge = vec![b' '; 4 * 4 * 1024 * 1024 + 1];
    let mut response = zone.send("POST", "/v1/projects", &[], &huge).await;
    let error: Value = serde_json::from_slice(&response.body().await).unwrap();
    assert_eq!(
        (response.status, reason(&error)),
        (429, "MESSAGE_TOO_LARGE"),
        "{error}"
    );

    // Identities: a read-only system may read, not write; another party's system and a
    // gateway identity are refused as over gRPC.
    let dashboard = Http::new(
        &fed,
        "zone",
        fed.pki
            .client_config_for("dashboard", &fed.pki.issue_client("zone", "dashboard")),
    );
    let (status, _) = dashboard.call("GET", "/v1/projects", None).await;
    assert_eq!(status, 200);
    let (status, error) = dashboard
        .call("POST", "/v1/projects", Some(&create_body("x")))
        .await;
    assert_eq!((status, error["code"].as_i64()), (403, Some(7)), "{error}");
    for (party, stem) in [("guangde", "client"), ("zone", "gateway")] {
        let other = Http::new(&fed, "zone", fed.pki.client_config(party, stem));
        let (status, error) = other.call("GET", "/v1/projects", None).await;
        let grpc = pb::project_service_client::ProjectServiceClient::new(
            fed.channel_with("zone", fed.pki.client_config(party, stem)),
        )
        .list_projects(pb::ListProjectsRequest::default())
        .await
        .expect_err("refused over gRPC");
        assert_eq!(
            error["code"].as_i64(),
            Some(grpc.code() as i64),
            "{party}/{stem}: the same refusal as gRPC: {error}"
        );
        assert!(status == 401 || status == 403, "{party}/{stem}: {status}");
    }
    assert_eq!(count().await, 0);

    // Every one of those is in the audit trail under its gRPC method, with its outcome.
    let (status, audit) = zone
        .call(
            "GET",
            "/v1/auditEvents?pageSize=500&method=%2Fyrd.exchange.v1.ProjectService%2FCreateProject",
            None,
        )
        .await;
    assert_eq!(status, 200, "{audit}");
    let codes: Vec<&str> = audit["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        [
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT",
            "RESOURCE_EXHAUSTED",
            "PERMISSION_DENIED"
        ],
        "{audit}"
    );
    let (_, unknown) = zone
        .call("GET", "/v1/auditEvents?method=%2Fv1%2Fnothing", None)
        .await;
    assert_eq!(unknown["events"][0]["code"], "NOT_FOUND", "{unknown}");
    let (_, metrics) = http_get(fed.gateways["zone"].admin, "/metrics").await;
    assert!(
        metrics.lines().any(|l| l.starts_with("yrd_calls_total{")
            && l.contains("CreateProject")
            && l.contains("INVALID_ARGUMENT")),
        "counted per method and code"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_over_http_streams_json_lines_and_resumes_from_a_token() {
    let fed = TestFederation::start_with(
        &["zone"],
        Options {
            without_default_catalog: vec!["zone".into()],
            ..Options::default()
        },
    )
    .await;
    let zone = Http::new(&fed, "zone", fed.pki.client_config("zone", "client"));
    let first = create(&fed, "zone", "第一个").await;

    let mut stream = zone.send("GET", "/v1/watch", &[], b"").await;
    assert_eq!(stream.status, 200);
    assert_eq!(stream.header("content-type"), Some("application/x-ndjson"));
    let line: Value = serde_json::from_str(&stream.lines(1, "\n").await[0]).unwrap();
    assert_eq!(line["project"]["name"], first.name.as_str());
    let token = line["resumeToken"].as_str().unwrap().to_string();
    drop(stream);

    let second = create(&fed, "zone", "第二个").await;
    let mut resumed = zone
        .send("GET", &format!("/v1/watch?resumeToken={token}"), &[], b"")
        .await;
    let line: Value = serde_json::from_str(&resumed.lines(1, "\n").await[0]).unwrap();
    assert_eq!(
        line["project"]["name"],
        second.name.as_str(),
        "resumed after the first"
    );

    // Server-sent events: the id is the resume token; Last-Event-ID resumes; a change made
    // while the stream is open arrives on it.
    let mut events = zone
        .send(
            "GET",
            "/v1/watch",
            &[("Accept", "text/event-stream"), ("Last-Event-ID", &token)],
            b"",
        )
        .await;
    assert_eq!(events.header("content-type"), Some("text/event-stream"));
    let third = tokio::spawn({
        let channel = fed.client("zone", "zone");
        async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            create_with(
                &mut pb::project_service_client::ProjectServiceClient::new(channel),
                "第三个",
            )
            .await
        }
    });
    let got = events.lines(2, "\n\n").await;
    let third = third.await.unwrap();
    let parsed: Vec<(String, Value)> = got
        .iter()
        .map(|e| {
            let id = e
                .lines()
                .find_map(|l| l.strip_prefix("id: "))
                .unwrap()
                .to_string();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (id, serde_json::from_str(data).unwrap())
        })
        .collect();
    assert_eq!(parsed[0].1["project"]["name"], second.name.as_str());
    assert_eq!(parsed[0].0, parsed[0].1["resumeToken"].as_str().unwrap());
    assert_eq!(parsed[1].1["project"]["name"], third.name.as_str());

    // A bad token: the stream's refusal as JSON.
    let (status, error) = zone
        .call("GET", "/v1/watch?resumeToken=nonsense", None)
        .await;
    assert_eq!(
        (status, violations(&error)),
        (400, vec!["resume_token".to_string()])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_read_at_once_are_bounded_and_a_slow_upload_is_cut_at_the_call_timeout() {
    // max_concurrent_calls 4: one body may be read at a time (a quarter, as JSON may be four
    // times a message).
    let fed = TestFederation::start_with(
        &["zone"],
        Options {
            extra_toml: "[limits]\nmax_concurrent_calls = 4\ncall_timeout_ms = 1500\n".into(),
            ..Options::default()
        },
    )
    .await;
    let zone = Http::new(&fed, "zone", fed.pki.client_config("zone", "client"));
    // An upload that announces 1000 bytes and sends 10, then stalls.
    let tcp = tokio::net::TcpStream::connect(zone.addr).await.unwrap();
    let mut slow = tokio_rustls::TlsConnector::from(zone.tls.clone())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    slow.write_all(
        b"POST /v1/projects HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"project\"",
    )
    .await
    .unwrap();
    slow.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, error) = zone
        .call("POST", "/v1/projects", Some(&create_body("second")))
        .await;
    assert_eq!((status, reason(&error)), (429, "OVERLOADED"), "{error}");
    // A read has no body to wait for: it is served meanwhile.
    let (status, _) = zone.call("GET", "/v1/projects", None).await;
    assert_eq!(status, 200);
    // After the call timeout the stalled upload is answered and its slot freed.
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
    let (status, created) = zone
        .call("POST", "/v1/projects", Some(&create_body("third")))
        .await;
    assert_eq!(status, 200, "{created}");
}
