//! Every acknowledged write survives SIGKILL of the gateway process.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use yrd_gateway::identity::tls;
use yrd_gateway::wire::pb;
use yrd_gateway::wire::pb::project_service_client::ProjectServiceClient;

use crate::common::*;

fn client(
    pki: &Pki,
    addr: std::net::SocketAddr,
) -> ProjectServiceClient<tonic::transport::Channel> {
    let channel = tls::channel(
        &addr.to_string(),
        "localhost",
        pki.client_config("zone", "client"),
    )
    .unwrap();
    ProjectServiceClient::new(channel)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill_9() {
    let root = tempfile::tempdir().unwrap();
    let pki = Pki::new(root.path());
    let config = write_config(root.path(), "zone", "127.0.0.1:0", &[], &Options::default());
    let gateway = ChildGateway::spawn(&config);

    // Four writers keep creating projects; each remembers what the gateway acknowledged.
    let acked: Arc<Mutex<Vec<pb::Project>>> = Arc::default();
    let mut writers = Vec::new();
    for w in 0..4 {
        let mut c = client(&pki, gateway.addr);
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let request = create_request(sample_project(&format!("writer {w} project {i}")));
                match c.create_project(request).await {
                    Ok(r) => acked.lock().unwrap().push(r.into_inner().project.unwrap()),
                    Err(_) => return,
                }
            }
        }));
    }
    // Let writes flow, then kill the process in the middle of them.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while acked.lock().unwrap().len() < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "writes did not flow"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gateway.kill_9();
    for w in writers {
        w.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let restarted = ChildGateway::spawn(&config);
    let mut c = client(&pki, restarted.addr);
    let stored = all_projects(&mut c).await;
    for project in &acked {
        assert!(
            stored.contains(project),
            "acknowledged {} is missing or different after kill -9",
            project.name
        );
    }
    // At most the writes in flight at the kill (one per writer) may exist unacknowledged.
    assert!(
        stored.len() <= acked.len() + 4,
        "{} stored, {} acked",
        stored.len(),
        acked.len()
    );
    println!(
        "{} acknowledged writes, {} stored after kill -9",
        acked.len(),
        stored.len()
    );
}

#[test]
fn serve_refuses_a_bad_config_before_binding() {
    let root = tempfile::tempdir().unwrap();
    let _pki = Pki::new(root.path());
    // A port we hold: if serve got as far as binding it would fail differently.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let options = Options {
        extra_toml: "[limits]\nmax_message_bytes = 12\n".into(),
        ..Options::default()
    };
    let config = write_config(root.path(), "zone", &addr, &[], &options);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("limits.max_message_bytes"), "{stderr}");

    // A TLS file that does not exist is named too, also with exit code 64.
    let config = write_config(root.path(), "zone", &addr, &[], &Options::default());
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("gateway.key", "missing.key");
    std::fs::write(&config, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("missing.key"), "{stderr}");
}
