use super::*;

#[test]
fn method_labels_are_bounded_however_many_paths_callers_name() {
    let metrics = Metrics::default();
    for i in 0..1000 {
        metrics.call_started();
        metrics.call_finished(&format!("/v1/nothing-{i}"), Code::NotFound, 0.001);
    }
    let mut text = String::new();
    metrics.render_calls(&mut text);
    let series = text
        .lines()
        .filter(|l| l.starts_with("yrd_calls_total{"))
        .count();
    assert_eq!(series, MAX_METHOD_LABELS, "{series} series");
    assert!(text.contains("method=\"(other)\""));
    assert!(
        text.contains("method=\"/v1/nothing-0\""),
        "the first ones keep their name"
    );
}
