use super::*;
use crate::crypto::Digest;

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
    listing_by(Digest::Sha256, first_seq, changes)
}

/// A manifest listing `changes` by `algorithm`.
fn listing_by(algorithm: Digest, first_seq: u64, changes: &[pb::SignedChange]) -> OpenManifest {
    OpenManifest {
        signed: SignedManifest {
            digest: Vec::new(),
            manifest: Vec::new(),
            scheme: 0x0403,
            signature: Vec::new(),
        },
        first_seq,
        algorithm,
        hashes: changes.iter().map(|c| algorithm.of(&c.envelope)).collect(),
    }
}

#[test]
fn a_manifest_of_the_gm_profile_lists_by_sm3_and_nothing_else() {
    let five = change(5);
    let sm3 = listing_by(Digest::Sm3, 5, std::slice::from_ref(&five));
    assert_eq!(listed(&sm3, 0, &five).unwrap().1.seq, 5);
    // The SHA-256 of the same envelope in an SM3 listing is not the envelope.
    let mut confused = sm3;
    confused.hashes = vec![Digest::Sha256.of(&five.envelope)];
    assert!(listed(&confused, 0, &five).is_err());

    // A manifest lists by exactly one algorithm.
    let mut both = pb::ChangeManifest {
        envelope_sm3: vec![Digest::Sm3.of(&five.envelope)],
        ..Default::default()
    };
    let (algorithm, hashes) = crate::exchange::signing::listed_digests(&both).unwrap();
    assert_eq!((algorithm, hashes.len()), (Digest::Sm3, 1));
    both.envelope_sha256 = vec![Digest::Sha256.of(&five.envelope)];
    assert!(crate::exchange::signing::listed_digests(&both).is_err());
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
