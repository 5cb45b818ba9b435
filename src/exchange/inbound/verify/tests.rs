use super::*;

fn change(seq: u64) -> pb::SignedChange {
    let envelope = pb::ChangeEnvelope {
        owner: "zone".into(),
        seq,
        recipient: "guangde".into(),
        ..Default::default()
    };
    pb::SignedChange {
        envelope: envelope.encode_to_vec(),
        ..Default::default()
    }
}

fn manifest_of(first_seq: u64, changes: &[pb::SignedChange]) -> OpenManifest {
    OpenManifest {
        signed: SignedManifest {
            digest: Vec::new(),
            manifest: Vec::new(),
            scheme: 0x0403,
            signature: Vec::new(),
        },
        first_seq,
        hashes: changes
            .iter()
            .map(|c| Sha256::digest(&c.envelope).to_vec())
            .collect(),
    }
}

#[test]
fn a_change_is_authentic_only_at_the_place_its_manifest_lists_it() {
    let (five, six) = (change(5), change(6));
    let manifest = manifest_of(5, &[five.clone(), six.clone()]);
    let (scheme, envelope) = listed(&manifest, 1, &six).unwrap();
    assert_eq!((scheme, envelope.seq), (0x0403, 6));

    let swapped = listed(&manifest, 0, &six).unwrap_err();
    assert!(
        swapped
            .to_string()
            .contains("not the one the signed manifest lists")
    );
    let beyond = listed(&manifest, 2, &five).unwrap_err();
    assert!(beyond.is_refusal());
    let mut altered = five.clone();
    altered.envelope.push(0);
    assert!(listed(&manifest, 0, &altered).is_err());

    // Listed at its place, but the manifest numbers that place differently.
    let misnumbered = manifest_of(4, std::slice::from_ref(&five));
    let err = listed(&misnumbered, 0, &five).unwrap_err();
    assert!(
        err.to_string().contains("its place in the manifest"),
        "{err}"
    );
}
