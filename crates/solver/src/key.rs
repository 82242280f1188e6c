//! Cache keys.
//!
//! `key(v) = sha256("buildkit-rs.cachekey.v1" ‖ cachemap.digest ‖ for each input i:
//! dep_i)` where `dep_i` is `"def" ‖ key(input_i) ‖ output index ‖ selector` for a
//! definition-based input, or `"content" ‖ content_digest_i ‖ selector` for a
//! content-based one. Fields are length-prefixed, so no two inputs can encode alike.

use oci::{Digest, Sha256};
use sha2::Digest as _;

/// One input's contribution to a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputKey {
    Definition {
        key: Digest,
        output: usize,
        selector: Option<String>,
    },
    Content {
        digest: Digest,
        selector: Option<String>,
    },
}

fn field(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

/// The cache key of a vertex whose op has cache digest `op` and inputs `inputs`.
pub fn compute(op: &Digest, inputs: &[InputKey]) -> Digest {
    let mut h = Sha256::new();
    field(&mut h, b"buildkit-rs.cachekey.v1");
    field(&mut h, op.as_bytes());
    for i in inputs {
        match i {
            InputKey::Definition {
                key,
                output,
                selector,
            } => {
                field(&mut h, b"def");
                field(&mut h, key.as_bytes());
                field(&mut h, &(*output as u64).to_be_bytes());
                field(&mut h, selector.as_deref().unwrap_or("").as_bytes());
            }
            InputKey::Content { digest, selector } => {
                field(&mut h, b"content");
                field(&mut h, digest.as_bytes());
                field(&mut h, selector.as_deref().unwrap_or("").as_bytes());
            }
        }
    }
    Digest::from_bytes(h.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_part() {
        let op = Digest::of(b"op");
        let a = Digest::of(b"a");
        let base = compute(
            &op,
            &[InputKey::Definition {
                key: a,
                output: 0,
                selector: None,
            }],
        );
        let variants = [
            compute(
                &Digest::of(b"op2"),
                &[InputKey::Definition {
                    key: a,
                    output: 0,
                    selector: None,
                }],
            ),
            compute(
                &op,
                &[InputKey::Definition {
                    key: a,
                    output: 1,
                    selector: None,
                }],
            ),
            compute(
                &op,
                &[InputKey::Definition {
                    key: a,
                    output: 0,
                    selector: Some("/x".into()),
                }],
            ),
            compute(
                &op,
                &[InputKey::Content {
                    digest: a,
                    selector: None,
                }],
            ),
            compute(&op, &[]),
        ];
        for v in variants {
            assert_ne!(v, base);
        }
        assert_eq!(
            base,
            compute(
                &op,
                &[InputKey::Definition {
                    key: a,
                    output: 0,
                    selector: None
                }]
            )
        );
    }
}
