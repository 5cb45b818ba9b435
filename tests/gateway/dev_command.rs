//! `yrd-gateway dev`: one command starts the four-party federation; each gateway answers its
//! own demo client; Ctrl-C/SIGTERM stops it cleanly.

use std::process::{Command, Stdio};
use std::time::Duration;

use yrd_gateway::identity::tls;
use yrd_gateway::wire::pb;
use yrd_gateway::wire::pb::directory_service_client::DirectoryServiceClient;

use crate::common::PARTIES;

/// Ten ports (five gRPC, five admin) for `dev` in this test process: below the usual
/// ephemeral range, so port-0 servers of parallel tests cannot collide; `slot` 0 to 4 keeps
/// the tests of this file apart when one process runs them all.
fn port_base(slot: u16) -> u16 {
    10_000 + (std::process::id() % 400) as u16 * 50 + slot * 10
}

#[tokio::test]
async fn dev_starts_four_gateways_and_stops_on_sigterm() {
    let data = tempfile::tempdir().unwrap();
    let base = port_base(0);
    let admin_base = base + 5;
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
            let config = tls::client_config_for(
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
        assert!(
            config.default_catalog,
            "{party} publishes the default catalog"
        );
        assert_eq!(config.federation, yrd_gateway::cli::default_federation());
    }
    // The fifth party of docker/compose.lingang.yaml: its config, and each of the four with
    // lingang's entries appended, list the same five parties.
    let lingang =
        yrd_gateway::config::Config::load(&dir.join("lingang.toml"), &Default::default()).unwrap();
    assert_eq!(lingang.peers.len(), 4);
    assert_eq!(lingang.federation.parties().len(), 5);
    let entries = std::fs::read_to_string(dir.join("lingang-entries.toml")).unwrap();
    let appended = tempfile::tempdir().unwrap();
    for party in PARTIES {
        let text = std::fs::read_to_string(dir.join(format!("{party}.toml"))).unwrap();
        let path = appended.path().join(format!("{party}.toml"));
        std::fs::write(&path, format!("{text}{entries}")).unwrap();
        let config = yrd_gateway::config::Config::load(&path, &Default::default())
            .unwrap_or_else(|e| panic!("{party} with lingang: {e}"));
        assert_eq!(config.federation, lingang.federation, "{party}");
        assert!(config.peers.iter().any(|p| p.party == "lingang"), "{party}");
    }
}

/// The developer guide's catalog and access-request walkthrough (docs/developer.md), command
/// for command, on `dev`.
#[tokio::test]
async fn the_readme_catalog_and_request_walkthrough_runs_on_dev() {
    let dev = Dev::start(1);

    // A Changxing project reaches Guangde without its contact phone: the default catalog makes
    // phones CONDITIONAL across the provincial border.
    let created = dev.client(
        "changxing",
        &[
            "project",
            "create",
            "--display-name",
            "长兴新能源电池项目",
            "--investor-name",
            "浙江某某电池有限公司",
            "--credit-code",
            "91330522MA2B3C4D57",
            "--industry",
            "new-energy-vehicles",
            "--contact-name",
            "张三",
            "--contact-phone",
            "+86 138-0000-0000",
        ],
    );
    let project = created.lines().next().unwrap().to_string();
    let before = dev.until("changxing's project at guangde", || {
        dev.try_client("guangde", &["project", "get", &project])
    });
    assert!(before.contains("contact: 张三 \n"), "{before}");

    let published = dev.client(
        "changxing",
        &[
            "catalog",
            "publish",
            "--code",
            "CX-PROJECT-001",
            "--name",
            "长兴县招商项目信息",
            "--kind",
            "project",
            "--class",
            "unconditional",
            "--item",
            "display_name",
            "--item",
            "investor.name",
            "--item",
            "contact.phone=conditional",
            "--item",
            "investor.credit_code=not-shared:《个人信息保护法》第十三条",
            "--conditions",
            "仅用于联合招商对接",
            "--update-cycle",
            "实时",
        ],
    );
    let entry = published.lines().next().unwrap().to_string();
    assert!(
        entry.starts_with("parties/changxing/catalogEntries/"),
        "{published}"
    );
    let listed = dev.until("changxing's entry at guangde", || {
        dev.try_client("guangde", &["catalog", "list", "--provider", "changxing"])
            .filter(|out| out.contains(&entry))
    });
    assert!(
        listed.contains("contact.phone: SHARING_CLASS_CONDITIONAL"),
        "{listed}"
    );

    let filed = dev.client(
        "guangde",
        &[
            "request",
            "file",
            &entry,
            "--item",
            "contact.phone",
            "--purpose",
            "联合招商对接",
            "--days",
            "30",
        ],
    );
    let request = filed.lines().next().unwrap().to_string();
    assert!(filed.contains("ACCESS_REQUEST_STATE_REQUESTED"), "{filed}");
    dev.until("the request at changxing", || {
        dev.try_client("changxing", &["request", "list"])
            .filter(|out| out.contains(&request))
    });
    let approved = dev.client(
        "changxing",
        &[
            "request", "approve", &request, "--days", "20", "--reason", "同意",
        ],
    );
    assert!(
        approved.contains("ACCESS_REQUEST_STATE_APPROVED"),
        "{approved}"
    );
    let at_guangde = dev.until("the approval at guangde", || {
        dev.try_client("guangde", &["request", "get", &request])
            .filter(|out| out.contains("ACCESS_REQUEST_STATE_APPROVED"))
    });
    assert!(
        at_guangde.contains("granted: contact.phone"),
        "{at_guangde}"
    );
    // The grant sends the project Guangde already held again, with its phone.
    dev.until("the phone at guangde", || {
        dev.try_client("guangde", &["project", "get", &project])
            .filter(|out| out.contains("contact: 张三 +86 138-0000-0000"))
    });

    // Changxing revokes: Guangde reads the phone empty again, and Changxing holds Guangde's
    // deletion receipt.
    let revoked = dev.client(
        "changxing",
        &["request", "revoke", &request, "--reason", "项目对接已结束"],
    );
    assert!(
        revoked.contains("ACCESS_REQUEST_STATE_REVOKED"),
        "{revoked}"
    );
    dev.until("the phone erased at guangde", || {
        dev.try_client("guangde", &["project", "get", &project])
            .filter(|out| out.contains("contact: 张三 \n"))
    });
    let receipt = dev.until("the deletion receipt at changxing", || {
        dev.try_client("changxing", &["request", "get", &request])
            .filter(|out| out.contains("deletion receipt (revoked"))
    });
    assert!(receipt.contains("contact.phone erased in"), "{receipt}");
    // The phone bytes are gone from guangde's store files (database and WAL).
    for file in std::fs::read_dir(dev.data.path().join("guangde")).unwrap() {
        let path = file.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let phone = "+86 138-0000-0000".as_bytes();
        assert!(
            !bytes.windows(phone.len()).any(|w| w == phone),
            "{} still holds the phone",
            path.display()
        );
    }

    // A refused request, escalated by its requester to the zone, which lists it; overdue
    // requests are listed (none here: nothing is past its deadline).
    let second = dev.client(
        "guangde",
        &[
            "request",
            "file",
            &entry,
            "--item",
            "contact.phone",
            "--purpose",
            "联合招商对接",
        ],
    );
    let second = second.lines().next().unwrap().to_string();
    dev.until("the second request at changxing", || {
        dev.try_client("changxing", &["request", "get", &second])
    });
    dev.client(
        "changxing",
        &["request", "refuse", &second, "--reason", "不符合共享条件"],
    );
    dev.until("the refusal at guangde", || {
        dev.try_client("guangde", &["request", "get", &second])
            .filter(|out| out.contains("ACCESS_REQUEST_STATE_REFUSED"))
    });
    let overdue = dev.client("guangde", &["request", "list", "--overdue"]);
    assert!(!overdue.contains(&second), "{overdue}");
    dev.client(
        "guangde",
        &["request", "escalate", &second, "--reason", "逾期未答复"],
    );
    dev.until("the escalation at the zone", || {
        dev.try_client("zone", &["request", "list", "--escalated"])
            .filter(|out| out.contains(&second))
    });

    drop(dev);
}

/// A child process that is stopped (SIGTERM, then waited for) when this is dropped.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

/// A `dev` federation in a temp folder, stopped when dropped, and its clients.
struct Dev {
    data: tempfile::TempDir,
    base: u16,
    _child: Stopped,
}

impl Dev {
    fn start(slot: u16) -> Dev {
        Self::start_with(slot, &[])
    }

    /// `dev` with `options` added to its command line.
    fn start_with(slot: u16, options: &[&str]) -> Dev {
        let data = tempfile::tempdir().unwrap();
        let base = port_base(slot);
        let child = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
            .args(["dev", "--grpc-port-base", &base.to_string()])
            .args(["--admin-port-base", &(base + 5).to_string()])
            .args(options)
            .arg("--data-dir")
            .arg(data.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let dev = Dev {
            data,
            base,
            _child: Stopped(child),
        };
        dev.until("every dev gateway answers", || {
            PARTIES
                .iter()
                .all(|p| dev.try_client(p, &["whoami"]).is_some())
                .then(String::new)
        });
        dev
    }

    /// `yrd-gateway client --party PARTY ARGS` against PARTY's gateway (a fifth party's
    /// gateway is the fifth port).
    fn command(&self, party: &str, args: &[&str]) -> Command {
        let order = PARTIES.iter().position(|p| *p == party).unwrap_or(4) as u16;
        let mut command = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"));
        command
            .args(["client", "--party", party, "--gateway"])
            .arg(format!("127.0.0.1:{}", self.base + order))
            .arg("--data-dir")
            .arg(self.data.path())
            .args(args);
        command
    }

    /// The command's output, or `None` when it failed.
    fn try_client(&self, party: &str, args: &[&str]) -> Option<String> {
        self.command(party, args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
    }

    /// The command's output; it must succeed.
    fn client(&self, party: &str, args: &[&str]) -> String {
        let out = self.command(party, args).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "client {args:?} as {party} failed: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    }

    /// Creates a project at `party` with `display_name` and returns its name.
    fn create_project(&self, party: &str, display_name: &str) -> String {
        let args = [
            "project",
            "create",
            "--display-name",
            display_name,
            "--industry",
            "other",
        ];
        let investor = [
            "--investor-name",
            "某投资方",
            "--credit-code",
            crate::common::CREDIT_CODE,
        ];
        let created = self.client(party, &[&args[..], &investor[..]].concat());
        created.lines().next().unwrap().to_string()
    }

    fn until(&self, what: &str, check: impl Fn() -> Option<String>) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The developer guide's tour, negotiation and referral (docs/developer.md), command for
/// command, on `dev`; and the operator guide's `certs init` for a fifth party.
#[tokio::test]
async fn the_developer_guide_tour_negotiation_and_referral_run_on_dev() {
    let dev = Dev::start(2);
    let me = dev.client("zone", &["whoami"]);
    assert!(me.contains("spiffe://yrd-huzhou/party/zone/client/demo"));
    assert!(me.contains("profile:    intl"), "{me}");
    let _project = tour_negotiation_and_referral(&dev);

    // A fifth party's certificates added to the development CA.
    let certs = dev.data.path().join("certs");
    let out = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
        .args(["certs", "init", "--dir"])
        .arg(&certs)
        .args(["--parties", "shanghai"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(certs.join("shanghai/gateway.crt").exists());
    assert!(certs.join("shanghai/client.crt").exists());
}

/// The same tour on `dev --profile gm`: every link and client call over RFC 8998, SM2
/// certificates, SM2-signed changes.
#[tokio::test]
async fn the_developer_guide_tour_runs_on_dev_in_the_gm_profile() {
    let dev = Dev::start_with(4, &["--profile", "gm"]);
    for party in PARTIES {
        let me = dev.client(party, &["whoami"]);
        assert!(me.contains("profile:    gm"), "{party}: {me}");
        assert!(
            me.contains("channel:    TLS_SM4_GCM_SM3 over curveSM2"),
            "{party}: {me}"
        );
    }
    let project = tour_negotiation_and_referral(&dev);
    // At anji, in Zhejiang like changxing, the phone is there.
    dev.until("the project with its phone at anji", || {
        dev.try_client("anji", &["project", "get", &project])
            .filter(|p| p.contains("contact: 张三 +86 138-0000-0000"))
    });

    // The gm folder's CA is SM2; `certs init` in the intl profile refuses to complete it.
    let out = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
        .args(["certs", "init", "--dir"])
        .arg(dev.data.path().join("certs"))
        .args(["--parties", "shanghai"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("is a CA of the gm profile, not intl"),
        "{said}"
    );
}

/// The developer guide's tour on `dev`: a project at changxing read at guangde without its
/// phone, a negotiation to AGREED at every party, a referral accepted.
/// Returns the name of the project created at changxing.
fn tour_negotiation_and_referral(dev: &Dev) -> String {
    let created = dev.client(
        "changxing",
        &[
            "project",
            "create",
            "--display-name",
            "年产10万套新能源汽车零部件项目",
            "--investor-name",
            "浙江某某汽车零部件有限公司",
            "--credit-code",
            "91330522MA2B3C4D57",
            "--industry",
            "new-energy-vehicles",
            "--investment-yuan",
            "1500000000",
            "--land-area-mu",
            "120.5",
            "--platform",
            "南华山",
            "--contact-name",
            "张三",
            "--contact-phone",
            "+86 138-0000-0000",
        ],
    );
    let project = created.lines().next().unwrap().to_string();
    assert!(
        dev.client("changxing", &["project", "list"])
            .contains(&project)
    );
    let signed = dev.client("changxing", &["project", "set-stage", &project, "signed"]);
    assert!(signed.contains("STAGE_SIGNED"), "{signed}");
    // At guangde without the phone, which does not cross the provincial border.
    let at_guangde = dev.until("the project at guangde", || {
        dev.try_client("guangde", &["project", "get", &project])
            .filter(|p| p.contains("STAGE_SIGNED"))
    });
    assert!(at_guangde.contains("contact: 张三 \n"), "{at_guangde}");

    // The negotiation: propose, counter, approve twice; AGREED at every gateway.
    let proposed = dev.client(
        "zone",
        &[
            "allocation",
            "propose",
            "--kind",
            "land-quota",
            "--quantity",
            "200",
            "--from",
            "guangde",
            "--to",
            "zone",
            "--share",
            "zone=6000",
            "--share",
            "guangde=4000",
            "--description",
            "land quota for a new-energy-vehicle project",
        ],
    );
    let allocation = proposed.lines().next().unwrap().to_string();
    assert!(
        proposed.contains("ALLOCATION_STATUS_PROPOSED"),
        "{proposed}"
    );
    dev.until("the proposal at guangde", || {
        dev.try_client("guangde", &["allocation", "get", &allocation])
    });
    dev.client(
        "guangde",
        &[
            "allocation",
            "decide",
            &allocation,
            "--round",
            "1",
            "counter",
            "--quantity",
            "150",
        ],
    );
    dev.until("the counter at the zone", || {
        dev.try_client("zone", &["allocation", "get", &allocation])
            .filter(|a| a.contains("round: 2"))
    });
    dev.client(
        "zone",
        &[
            "allocation",
            "decide",
            &allocation,
            "--round",
            "2",
            "approve",
        ],
    );
    dev.until("the zone's approval at guangde", || {
        dev.try_client("guangde", &["allocation", "get", &allocation])
            .filter(|a| a.contains("zone VERDICT_APPROVE"))
    });
    dev.client(
        "guangde",
        &[
            "allocation",
            "decide",
            &allocation,
            "--round",
            "2",
            "approve",
        ],
    );
    for party in PARTIES {
        let agreed = dev.until("AGREED everywhere", || {
            dev.try_client(party, &["allocation", "get", &allocation])
                .filter(|a| a.contains("ALLOCATION_STATUS_AGREED"))
        });
        assert!(agreed.contains("round: 2"), "{party}: {agreed}");
    }

    // The referral: changxing refers its project to anji, which accepts.
    let referred = dev.client(
        "changxing",
        &[
            "project",
            "refer",
            &project,
            "--to",
            "anji",
            "--reason",
            "CNC line fits Anji",
        ],
    );
    let referral = referred.lines().next().unwrap().to_string();
    assert!(
        referral.starts_with("parties/changxing/referrals/"),
        "{referred}"
    );
    dev.until("the referral at anji", || {
        dev.try_client("anji", &["project", "referrals"])
            .filter(|r| r.contains(&referral))
    });
    let answered = dev.client(
        "anji",
        &[
            "project",
            "respond",
            &referral,
            "--accept",
            "--comment",
            "welcome",
        ],
    );
    assert!(
        answered.contains("new project: parties/anji/projects/"),
        "{answered}"
    );
    dev.until("the original REFERRED at changxing", || {
        dev.try_client("changxing", &["project", "get", &project])
            .filter(|p| p.contains("STAGE_REFERRED"))
    });
    project
}

/// The README's "A fifth party, live": `dev add-party lingang` while `dev` runs, then
/// `serve --config` of lingang's new file. lingang pulls the others' history and they its
/// writes, and the `dev` process that runs the other four was never restarted.
#[tokio::test]
async fn a_fifth_party_joins_the_running_dev_federation_as_the_readme_shows() {
    let mut dev = Dev::start(3);
    let pid = dev._child.0.id();
    let earlier = dev.create_project("zone", "临港加入前的项目");

    let out = Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
        .args(["dev", "--grpc-port-base", &dev.base.to_string()])
        .args(["--admin-port-base", &(dev.base + 5).to_string()])
        .arg("--data-dir")
        .arg(dev.data.path())
        .args([
            "add-party",
            "lingang",
            "--display-name",
            "中国（上海）自由贸易试验区临港新片区 Lingang",
            "--province",
            "Shanghai",
        ])
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("yrd-gateway serve --config"), "{said}");
    let _lingang = Stopped(
        Command::new(env!("CARGO_BIN_EXE_yrd-gateway"))
            .args(["serve", "--config"])
            .arg(dev.data.path().join("lingang.toml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    dev.until("the zone's earlier project at lingang", || {
        dev.try_client("lingang", &["project", "get", &earlier])
    });
    let name = dev.create_project("lingang", "临港的项目");
    for party in PARTIES {
        dev.until(&format!("lingang's project at {party}"), || {
            dev.try_client(party, &["project", "get", &name])
        });
        let parties = dev.client(party, &["parties"]);
        assert!(parties.contains("lingang"), "{party}: {parties}");
    }
    assert!(
        dev._child.0.try_wait().unwrap().is_none(),
        "dev is still running"
    );
    assert_eq!(dev._child.0.id(), pid, "the same dev process throughout");
    drop(dev);
}
