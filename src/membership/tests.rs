use super::*;
use crate::domain::PartyInfo;

fn federation(ids: &[&str]) -> Federation {
    Federation::new(
        ids.iter()
            .map(|id| PartyInfo {
                id: id.to_string(),
                display_name: format!("{id} name"),
                province: "Zhejiang".into(),
                division_code: String::new(),
                suspended: false,
            })
            .collect(),
    )
    .unwrap()
}

#[test]
fn the_digest_is_sha256_of_the_canonical_text() {
    let f = federation(&["zone", "anji"]);
    let text = "yrd-membership/1\nzone\tzone name\tZhejiang\t\nanji\tanji name\tZhejiang\t\n";
    assert_eq!(
        digest(&f, Profile::Intl).to_vec(),
        Sha256::digest(text.as_bytes()).to_vec()
    );
}

#[test]
fn the_gm_profile_adds_its_line_and_intl_none() {
    let f = federation(&["zone", "anji"]);
    let text =
        "yrd-membership/1\ncrypto gm\nzone\tzone name\tZhejiang\t\nanji\tanji name\tZhejiang\t\n";
    assert_eq!(
        digest(&f, Profile::Gm).to_vec(),
        Sha256::digest(text.as_bytes()).to_vec()
    );
    assert_ne!(digest(&f, Profile::Gm), digest(&f, Profile::Intl));
}

#[test]
fn order_names_and_codes_change_the_digest() {
    let base = digest(&federation(&["zone", "anji"]), Profile::Intl);
    assert_ne!(base, digest(&federation(&["anji", "zone"]), Profile::Intl));
    assert_ne!(
        base,
        digest(&federation(&["zone", "anji", "lingang"]), Profile::Intl)
    );
    let mut parties = federation(&["zone", "anji"]).parties().to_vec();
    parties[1].division_code = "330523".into();
    let coded = digest(&Federation::new(parties.clone()).unwrap(), Profile::Intl);
    assert_ne!(base, coded);
    parties[1].suspended = true;
    assert_ne!(
        coded,
        digest(&Federation::new(parties).unwrap(), Profile::Intl)
    );
}

#[test]
fn a_peer_that_differs_is_named_until_it_agrees() {
    let ours = federation(&["zone", "anji", "guangde", "changxing"]);
    let (change, members) = Members::changeable(ours);
    let m = Membership::new(members, Profile::Intl);
    let theirs = digest(&federation(&["zone", "anji", "lingang"]), Profile::Intl);
    m.seen("anji", &theirs, 1);
    m.seen("guangde", &m.own(), 1);
    m.seen("changxing", b"", 1);
    assert_eq!(m.differing(), vec!["anji".to_string()]);
    assert_eq!(m.views().len(), 2, "an empty digest says nothing");
    m.seen("anji", &m.own(), 2);
    assert!(m.differing().is_empty());

    // Our own list changes while running: the peers' last digests now differ from it.
    let before = m.own();
    change
        .send(std::sync::Arc::new(federation(&[
            "zone",
            "anji",
            "guangde",
            "changxing",
            "lingang",
        ])))
        .unwrap();
    assert_ne!(m.own(), before);
    assert_eq!(
        m.differing(),
        vec!["anji".to_string(), "guangde".to_string()]
    );
}
