//! Writes an example LLB Definition to stdout: a busybox image, a RUN, and the result
//! copied onto scratch. Pipe it into `buildctl debug dump-llb`.
//!
//! Usage: `hello [IMAGE]` (default `docker.io/library/busybox:latest`).

use std::io::Write;

use llb::{CopyOptions, FileAction, MarshalOptions, OpOptions, image, scratch};
use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "busybox".to_string());
    let built = image(&base)
        .env("PATH", llb::DEFAULT_PATH)
        .run()
        .shell("echo hello from buildkit-rs > /hello")
        .options(OpOptions::new().custom_name("RUN echo hello"))
        .build()
        .root();
    let out = scratch().file(
        &FileAction::copy(&built, "/hello", "/hello", CopyOptions::default()),
        OpOptions::new().custom_name("COPY /hello"),
    );
    let def = out.marshal(&MarshalOptions::default())?;
    std::io::stdout().write_all(&def.encode_to_vec())?;
    Ok(())
}
