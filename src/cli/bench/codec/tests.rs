use super::*;

#[test]
fn both_paths_give_the_same_answers_and_every_step_is_timed() {
    let f = run(20, 2).unwrap();
    assert_eq!(f.records, 20);
    assert!(f.protobuf_bytes < f.json_bytes, "{f:?}");
    for ns in [
        f.json_decode_ns,
        f.convert_ns,
        f.protobuf_encode_ns,
        f.protobuf_decode_ns,
        f.copy_with_name_and_etag_ns,
    ] {
        assert!(ns > 0.0, "{f:?}");
    }
    let table = table(&f);
    assert!(table.contains("| today: the three above |"), "{table}");
}

#[test]
fn served_bytes_that_differ_are_caught() {
    let s = stored(3).unwrap();
    let mut a = Vec::new();
    let mut b = Vec::new();
    for (i, bytes) in s.protobuf.iter().enumerate() {
        let mut m = pb::Project::decode(bytes.as_slice()).unwrap();
        m.encode_length_delimited(&mut a).unwrap();
        if i == 1 {
            m.display_name.push('!');
        }
        m.encode_length_delimited(&mut b).unwrap();
    }
    assert!(same_answers(&a, &a).unwrap());
    assert!(!same_answers(&a, &b).unwrap());
}
