use super::*;

#[test]
fn credit_codes_are_checked_per_gb_32100() {
    // Built from a made-up body: the check character is what the standard's formula gives.
    let body = "91330522MA2B3C4D5";
    let check = credit_code::check_character(body.as_bytes()).unwrap();
    let code = format!("{body}{check}");
    assert!(credit_code::validate(&code).is_ok(), "{code}");
    let wrong = if check == '0' { '1' } else { '0' };
    assert!(credit_code::validate(&format!("{body}{wrong}")).is_err());
    assert!(
        credit_code::validate("91330522MA2B3C4D5").is_err(),
        "17 characters"
    );
    assert!(
        credit_code::validate("91330522MA2B3C4DOX").is_err(),
        "letter O is not in the alphabet"
    );
    assert!(
        credit_code::validate("91ABCDEFMA2B3C4D5X").is_err(),
        "division code must be digits"
    );
}

#[test]
fn a_published_credit_code_passes() {
    // Huawei Technologies Co., Ltd., as printed on its business licence.
    assert!(credit_code::validate("914403001922038216").is_ok());
}

#[test]
fn decimals_are_exact_strings_not_floats() {
    for ok in ["0", "120", "120.5", "0.000001", "999999999999999"] {
        assert!(check_decimal(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "1e5",
        "1.5e3",
        "-1",
        "+1",
        " 1",
        "1.",
        ".5",
        "01",
        "NaN",
        "inf",
        "1,5",
        "0.0000001",
    ] {
        assert!(check_decimal(bad).is_err(), "{bad}");
    }
    assert!(decimal_is_positive("0.5"));
    assert!(!decimal_is_positive("0.000"));
}

#[test]
fn dates_are_real_calendar_days() {
    assert!(check_date("2028-02-29").is_ok());
    assert!(check_date("2027-02-29").is_err());
    assert!(check_date("2026-13-01").is_err());
    assert!(check_date("2026-1-01").is_err());
}

#[test]
fn stages_only_move_forward() {
    assert!(Stage::Lead.check_move(Stage::Signed).is_ok());
    assert!(Stage::Signed.check_move(Stage::Signed).is_ok());
    assert!(Stage::Signed.check_move(Stage::Lead).is_err());
    assert!(Stage::Started.check_move(Stage::Cancelled).is_ok());
    assert!(Stage::Cancelled.check_move(Stage::Lead).is_err());
    assert!(Stage::Lead.check_move(Stage::Referred).is_err());
}

#[test]
fn resource_names_round_trip() {
    let id = uuid::Uuid::now_v7();
    let name = ResourceName::new("anji", RecordKind::Project, id);
    assert_eq!(
        ResourceName::parse(&name.to_string(), RecordKind::Project).unwrap(),
        name
    );
    assert!(ResourceName::parse(&name.to_string(), RecordKind::Allocation).is_err());
    assert!(ResourceName::parse("parties/anji/projects/not-a-uuid", RecordKind::Project).is_err());
}

/// Etags stay what clients already hold: the same text as the first formula gave
/// (`"REVISION-HEX"`, HEX the first 8 bytes of SHA-256 of `NAME#REVISION`).
#[test]
fn etags_keep_their_form() {
    use sha2::{Digest, Sha256};
    let name = ResourceName::new("zone", RecordKind::Project, uuid::Uuid::nil());
    for revision in [1, 42, i64::MAX] {
        let digest = Sha256::digest(format!("{name}#{revision}").as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(etag(&name, revision), format!("\"{revision}-{hex}\""));
    }
}
