//! Feeds arbitrary Dockerfiles through the whole frontend conversion (typed instructions,
//! ARG/ENV scoping, stages, LLB and image config) with every base image resolved to a
//! fixed config: it must give LLB that marshals, or an error naming `Dockerfile:` —
//! never panic.
#![no_main]

use std::collections::HashMap;

use dockerfile::convert::{ConvertOptions, Converter, ResolvedImage};
use libfuzzer_sys::fuzz_target;

const CONFIG: &str = r#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:d60534e533b172432269facac0e5c6c0e3042681765519fe92e15cdf5e53ff70"]},"config":{"Env":["PATH=/bin"],"OnBuild":["RUN true"]}}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else { return };
    let Ok(df) = dockerfile::parse(src) else { return };
    let platform = llb::Platform::new("linux", "amd64", "");
    let opts = ConvertOptions {
        target_platform: platform.clone(),
        build_platform: platform,
        ..ConvertOptions::default()
    };
    let conv = match Converter::new(&df, opts) {
        Ok(c) => c,
        Err(e) => {
            assert!(e.to_string().starts_with("Dockerfile"), "{e}");
            return;
        }
    };
    let resolved: HashMap<String, ResolvedImage> = conv
        .images()
        .into_iter()
        .map(|r| {
            (
                r.reference,
                ResolvedImage {
                    digest: "sha256:7632065f5f1a7788c92ec84bfcf9bbe7f0e2da14cdeb1f8f79290a120b87fe28".into(),
                    config: CONFIG.as_bytes().to_vec(),
                },
            )
        })
        .collect();
    match conv.convert(&resolved) {
        Ok(out) => {
            let def = out
                .state
                .marshal(&llb::MarshalOptions::default())
                .expect("converted LLB marshals");
            llb::LoadedDefinition::load(def).expect("converted LLB loads");
            let _ = out.image.to_json();
        }
        Err(e) => assert!(e.to_string().starts_with("Dockerfile"), "{e}"),
    }
});
