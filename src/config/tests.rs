use std::collections::HashMap;
use std::path::Path;

use super::*;

const GOOD: &str = r#"
party = "zone"
[listen]
grpc = "127.0.0.1:50051"
[tls]
ca = "certs/ca.crt"
cert = "certs/zone/gateway.crt"
key = "/abs/gateway.key"
[store]
backend = "sqlite"
path = "zone.db"
[[parties]]
id = "zone"
display_name = "Zone"
province = "Zhejiang"
[[parties]]
id = "guangde"
display_name = "Guangde"
province = "Anhui"
division_code = "341882"
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, Path::new("/etc/yrd/gateway.toml"), &HashMap::new())
}

fn key_of(err: ConfigError) -> String {
    match err {
        ConfigError::Invalid { key, .. } => key,
        other => panic!("expected an invalid key, got {other}"),
    }
}

#[test]
fn good_config_resolves_relative_paths_against_the_file() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.party, "zone");
    assert_eq!(c.trust_domain, DEFAULT_TRUST_DOMAIN);
    assert_eq!(c.tls.ca, Path::new("/etc/yrd/certs/ca.crt"));
    assert_eq!(c.tls.key, Path::new("/abs/gateway.key"));
    assert_eq!(c.federation.order_of("guangde"), Some(1));
    assert_eq!(c.log.format, LogFormat::Text);
}

#[test]
fn unknown_keys_are_refused_with_their_name() {
    let err = load(&GOOD.replace("[store]", "[store]\ncolour = \"blue\"")).unwrap_err();
    assert!(err.to_string().contains("colour"), "{err}");
    let err = load(&format!("mystery = 1\n{GOOD}")).unwrap_err();
    assert!(err.to_string().contains("mystery"), "{err}");
}

#[test]
fn each_bad_value_names_its_key() {
    assert_eq!(
        key_of(load(&GOOD.replace("party = \"zone\"", "party = \"anji\"")).unwrap_err()),
        "party"
    );
    assert_eq!(
        key_of(load(&GOOD.replace("127.0.0.1:50051", "nowhere")).unwrap_err()),
        "listen.grpc"
    );
    assert_eq!(
        key_of(load(&GOOD.replace("\"sqlite\"", "\"oracle\"")).unwrap_err()),
        "store.backend"
    );
    assert_eq!(
        key_of(load(&GOOD.replace("341882", "3418")).unwrap_err()),
        "parties[1].division_code"
    );
    assert_eq!(
        key_of(load(&GOOD.replace("id = \"guangde\"", "id = \"zone\"")).unwrap_err()),
        "parties[1].id"
    );
    assert_eq!(
        key_of(load(&format!("{GOOD}\n[log]\nformat = \"xml\"\n")).unwrap_err()),
        "log.format"
    );
    assert_eq!(
        key_of(
            load(&format!(
                "{GOOD}\n[access]\nread_only_systems = [\"Bad Name\"]\n"
            ))
            .unwrap_err()
        ),
        "access.read_only_systems[0]"
    );
}

#[test]
fn environment_overrides_come_from_the_map_passed_in() {
    let env = HashMap::from([
        ("YRD_LOG_FORMAT".to_string(), "json".to_string()),
        ("YRD_LISTEN_GRPC".to_string(), "0.0.0.0:6000".to_string()),
    ]);
    let c = Config::from_toml(GOOD, Path::new("gateway.toml"), &env).unwrap();
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.listen_grpc.port(), 6000);

    // A PostgreSQL store from the environment replaces the file's SQLite one.
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pw");
    std::fs::write(&secret, "from-file").unwrap();
    let env = HashMap::from([
        (
            "YRD_STORE_URL".to_string(),
            "postgres://yrd@postgres/yrd_zone".to_string(),
        ),
        (
            "YRD_STORE_PASSWORD_FILE".to_string(),
            secret.display().to_string(),
        ),
    ]);
    let c = Config::from_toml(GOOD, Path::new("gateway.toml"), &env).unwrap();
    let StoreConfig::Postgres(options) = c.store else {
        panic!("expected the environment's postgres store");
    };
    assert_eq!(options.connection.get_dbname(), Some("yrd_zone"));
    assert_eq!(options.connection.get_password(), Some(&b"from-file"[..]));
}

#[test]
fn peers_are_checked_and_share_blocks_refused_with_the_way_to_the_catalog() {
    let with = |extra: &str| load(&format!("{GOOD}\n{extra}"));
    let c = with("[[peers]]\nparty = \"guangde\"\naddress = \"guangde:50051\"\n").unwrap();
    assert_eq!(c.peers[0].server_name, "guangde");
    assert!(
        c.default_catalog,
        "the default catalog is on unless turned off"
    );
    let off = with("[sharing]\ndefault_catalog = false\n").unwrap();
    assert!(!off.default_catalog);
    assert_eq!(
        key_of(with("[[peers]]\nparty = \"zone\"\naddress = \"x:1\"\n").unwrap_err()),
        "peers[0].party"
    );
    assert_eq!(
        key_of(with("[[peers]]\nparty = \"guangde\"\naddress = \"guangde\"\n").unwrap_err()),
        "peers[0].address"
    );
    let old = with(
        "[[share]]\npeer = \"guangde\"\nkinds = [\"project\"]\nwithhold = [\"project.contact.phone\"]\n",
    )
    .unwrap_err();
    let message = old.to_string();
    assert_eq!(key_of(old), "share");
    assert!(message.contains("default_catalog"), "{message}");
    assert!(message.contains("conditional@"), "{message}");
}

#[test]
fn a_postgres_store_takes_a_url_a_password_file_and_a_pool_size() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("pg-password");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let postgres = |keys: &str| {
        GOOD.replace(
            "backend = \"sqlite\"\npath = \"zone.db\"",
            &format!("backend = \"postgres\"\n{keys}"),
        )
    };
    let c = load(&postgres(&format!(
        "url = \"postgres://yrd@db.internal:5432/yrd_zone\"\npassword_file = \"{}\"\npool_size = 24",
        secret.display()
    )))
    .unwrap();
    let StoreConfig::Postgres(options) = c.store else {
        panic!("expected a postgres store");
    };
    assert_eq!(options.pool_size, 24);
    assert_eq!(options.connection.get_dbname(), Some("yrd_zone"));
    assert_eq!(options.connection.get_user(), Some("yrd"));
    // The file's trailing newline is not part of the password.
    assert_eq!(options.connection.get_password(), Some(&b"s3cret"[..]));
    let c = load(&postgres(
        "url = \"host=db.internal dbname=yrd_zone user=yrd\"",
    ))
    .unwrap();
    let StoreConfig::Postgres(options) = c.store else {
        panic!("expected a postgres store");
    };
    assert_eq!(options.pool_size, DEFAULT_POOL_SIZE);

    for (keys, key) in [
        ("", "store.url"),
        ("url = \"postgres://db.internal\"", "store.url"),
        ("url = \"dbname=x port=notaport\"", "store.url"),
        (
            "url = \"postgres://db/x\"\npassword_file = \"/nonexistent/pw\"",
            "store.password_file",
        ),
        (
            "url = \"postgres://db/x\"\npool_size = 1",
            "store.pool_size",
        ),
        (
            "url = \"postgres://db/x\"\npath = \"zone.db\"",
            "store.path",
        ),
    ] {
        assert_eq!(key_of(load(&postgres(keys)).unwrap_err()), key, "{keys}");
    }
    assert_eq!(
        key_of(
            load(&GOOD.replace("path = \"zone.db\"", "path = \"zone.db\"\nurl = \"x\""))
                .unwrap_err()
        ),
        "store.url"
    );
}

#[test]
fn answer_deadlines_come_from_the_sharing_section_and_its_calendar_file() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.deadlines.answer_working_days, 10, "the default");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("holidays.toml"),
        "holidays = [\"2026-10-01..2026-10-07\"]\nworking_days = [\"2026-10-10\"]\n",
    )
    .unwrap();
    let text = format!(
        "{GOOD}\n[sharing]\nanswer_working_days = 15\nholiday_calendar = \"holidays.toml\"\n"
    );
    let c = Config::from_toml(&text, &dir.path().join("gateway.toml"), &HashMap::new()).unwrap();
    assert_eq!(c.deadlines.answer_working_days, 15);
    let oct = |d| time::Date::from_calendar_date(2026, time::Month::October, d).unwrap();
    assert!(!c.deadlines.calendar.is_working_day(oct(5)));
    assert!(c.deadlines.calendar.is_working_day(oct(10)));

    let zero = format!("{GOOD}\n[sharing]\nanswer_working_days = 0\n");
    assert_eq!(
        key_of(load(&zero).unwrap_err()),
        "sharing.answer_working_days"
    );
    let missing = format!("{GOOD}\n[sharing]\nholiday_calendar = \"nowhere.toml\"\n");
    assert_eq!(
        key_of(load(&missing).unwrap_err()),
        "sharing.holiday_calendar"
    );
    std::fs::write(dir.path().join("bad.toml"), "holidays = [\"2026-13-01\"]\n").unwrap();
    let bad = format!("{GOOD}\n[sharing]\nholiday_calendar = \"bad.toml\"\n");
    let err =
        Config::from_toml(&bad, &dir.path().join("gateway.toml"), &HashMap::new()).unwrap_err();
    assert!(err.to_string().contains("holidays[0]"), "{err}");
    assert_eq!(key_of(err), "sharing.holiday_calendar");
}

#[test]
fn the_coordinator_is_the_first_party_unless_the_sharing_section_names_another() {
    assert_eq!(load(GOOD).unwrap().coordinator, "zone");
    let named = format!("{GOOD}\n[sharing]\ncoordinator = \"guangde\"\n");
    assert_eq!(load(&named).unwrap().coordinator, "guangde");
    let stranger = format!("{GOOD}\n[sharing]\ncoordinator = \"shanghai\"\n");
    assert_eq!(key_of(load(&stranger).unwrap_err()), "sharing.coordinator");
}

#[test]
fn the_crypto_profile_is_intl_unless_the_crypto_section_names_gm() {
    use crate::crypto::Profile;
    assert_eq!(load(GOOD).unwrap().tls.profile, Profile::Intl);
    let gm = GOOD.replace("[store]", "[crypto]\nprofile = \"gm\"\n[store]");
    assert_eq!(load(&gm).unwrap().tls.profile, Profile::Gm);
    let sm = GOOD.replace("[store]", "[crypto]\nprofile = \"sm2\"\n[store]");
    let err = load(&sm).unwrap_err();
    assert!(err.to_string().contains("\"intl\" or \"gm\""), "{err}");
    assert_eq!(key_of(err), "crypto.profile");
    let env: HashMap<String, String> = [("YRD_CRYPTO_PROFILE".into(), "gm".into())].into();
    let overridden = Config::from_toml(GOOD, Path::new("/etc/yrd/gateway.toml"), &env).unwrap();
    assert_eq!(overridden.tls.profile, Profile::Gm);
}

#[test]
fn international_clients_are_a_choice_of_the_gm_profile_only() {
    let intl =
        "[tls.intl_clients]\nca = \"intl/ca.crt\"\ncert = \"intl/gw.crt\"\nkey = \"intl/gw.key\"\n";
    let err = load(&format!("{GOOD}{intl}")).unwrap_err();
    assert_eq!(key_of(err), "tls.intl_clients");
    let gm = GOOD.replace("[store]", "[crypto]\nprofile = \"gm\"\n[store]");
    let config = load(&format!("{gm}{intl}")).unwrap();
    let paths = config.tls.intl_clients.unwrap();
    assert_eq!(paths.ca, Path::new("/etc/yrd/intl/ca.crt"));
    assert_eq!(paths.crl, None);
    assert!(load(&gm).unwrap().tls.intl_clients.is_none());
}

#[test]
fn the_key_is_a_file_or_in_a_token_never_both_nor_neither() {
    let token = "[tls.pkcs11]\nmodule = \"/usr/lib/softhsm/libsofthsm2.so\"\ntoken = \"yrd-zone\"\nkey_label = \"gateway\"\npin_file = \"pin\"\n";
    let without_key = GOOD.replace("key = \"/abs/gateway.key\"\n", "");
    let config = load(&format!("{without_key}{token}")).unwrap();
    let spec = config.tls.pkcs11.unwrap();
    assert_eq!(spec.token, "yrd-zone");
    assert_eq!(spec.label, "gateway");
    assert_eq!(spec.pin_file, Path::new("/etc/yrd/pin"));
    assert_eq!(
        key_of(load(&format!("{GOOD}{token}")).unwrap_err()),
        "tls.pkcs11"
    );
    assert_eq!(key_of(load(&without_key).unwrap_err()), "tls.key");
    let gm = without_key.replace("[store]", "[crypto]\nprofile = \"gm\"\n[store]");
    assert_eq!(
        key_of(load(&format!("{gm}{token}")).unwrap_err()),
        "tls.pkcs11"
    );
}
