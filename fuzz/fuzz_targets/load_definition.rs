//! Feeds arbitrary bytes to the Definition loader: it must return Ok or a LoadError, never
//! panic, loop or allocate without bound. Whatever loads must also re-encode to the bytes
//! it was digested from.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(def) = llb::LoadedDefinition::from_bytes(data) {
        for op in def.ops.values() {
            assert_eq!(op.digest, llb::digest_of(&op.bytes));
        }
    }
});
