//! One libFuzzer binary for every target of `yrd_gateway::fuzz`; `YRD_FUZZ_TARGET` names the
//! one to run (`tests/fuzz/run.sh` sets it).

#![no_main]

use std::sync::OnceLock;

use yrd_gateway::fuzz::Target;

fn target() -> Target {
    static TARGET: OnceLock<Target> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let name = std::env::var("YRD_FUZZ_TARGET").unwrap_or_default();
        match yrd_gateway::fuzz::TARGETS.iter().find(|(n, _)| *n == name) {
            Some((_, run)) => *run,
            None => {
                let names: Vec<_> = yrd_gateway::fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
                eprintln!("YRD_FUZZ_TARGET must be one of: {}", names.join(", "));
                std::process::exit(2);
            }
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| target()(data));
