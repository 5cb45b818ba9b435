//! `yrd-gateway dev`: one command starts the four-party federation; each gateway answers its
//! own demo client; Ctrl-C/SIGTERM stops it cleanly.

use std::process::{Command, Stdio};
use std::time::Duration;

use yrd_gateway::identity::tls;
use yrd_gateway::wire::pb;
use yrd_gateway::wire::pb::directory_service_client::DirectoryServiceClient;

use crate::common::PARTIES;

#[tokio::test]
async fn dev_starts_four_gateways_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    // Below the usual ephemeral range, so port-0 servers of parallel tests cannot collide.
    let base = 10_000 + (std::process::id() % 2_500) as u16 * 8;
    let admin_base = base + 4;
    let mut child = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
        .args([
            "dev",
            "--grpc-port-base",
            &base.to_string(),
            "--admin-port-base",
            &admin_base.to_string(),
        ])
        .arg("--data-dir")
        .arg(data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let certs = data.path().join("certs");
    for (i, party) in PARTIES.iter().enumerate() {
        let addr = format!("127.0.0.1:{}", base + i as u16);
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let me = loop {
            // The certificates appear when dev has started; wait for them and for the port.
            let config = tls::client_config(
                &certs.join("ca.crt"),
                &certs.join(party).join("client.crt"),
                &certs.join(party).join("client.key"),
            );
            if let Ok(config) = config {
                let channel = tls::channel(&addr, "localhost", config).unwrap();
                if let Ok(r) = DirectoryServiceClient::new(channel)
                    .who_am_i(pb::WhoAmIRequest {})
                    .await
                {
                    break r.into_inner();
                }
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{party} did not answer on {addr}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!(me.gateway_party, *party);
        assert_eq!(
            me.spiffe_id,
            format!("spiffe://yrd-huzhou/party/{party}/client/demo")
        );
    }

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "dev did not stop within 15 s of SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "dev exited with {exit}");
}

/// The config files shipped for docker compose load, and describe the shipped federation.
#[test]
fn the_docker_configs_are_valid() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/config");
    for party in PARTIES {
        let config = yrd_gateway::config::Config::load(
            &dir.join(format!("{party}.toml")),
            &Default::default(),
        )
        .unwrap_or_else(|e| panic!("{party}: {e}"));
        assert_eq!(config.party, party);
        assert_eq!(config.peers.len(), 3);
        assert_eq!(config.share.len(), 3);
        for rule in &config.share {
            let crosses = (party == "guangde") != (rule.peer == "guangde");
            assert_eq!(
                rule.withhold.contains("project.contact.phone"),
                crosses,
                "{party} -> {}",
                rule.peer
            );
        }
        assert_eq!(config.federation, yrd_gateway::cli::default_federation());
    }
}
