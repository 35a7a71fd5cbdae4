//! Compiled modules as bytes: the sealed envelope around wasmtime's
//! serialized components, and the one place they are turned back into
//! runnable code.
//!
//! `Component::deserialize` trusts its input completely: the bytes hold
//! machine code that runs as is. So bytes are only deserialized after they
//! are proven to be the ones a compiler produced for this very module, by
//! an envelope written with them:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `WEIR-CW1` (format version 1) |
//! | 8 | 32 | SHA-256 of the WebAssembly module the code was compiled from |
//! | 40 | 8 | length of the serialized component, little-endian |
//! | 48 | 32 | SHA-256 of the serialized component |
//! | 80 | length | the serialized component (`Engine::precompile_component`) |
//!
//! The checksum catches what disks and power cuts do (zeroed pages, torn
//! or truncated files); the module digest catches an artifact of another
//! module (a misplaced file, a confused child process). It is not a MAC:
//! whoever can write the data directory can also replace the modules
//! themselves. Wasmtime's own header, checked by `deserialize`, then
//! refuses artifacts of another wasmtime version or configuration.

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

const MAGIC: [u8; 8] = *b"WEIR-CW1";
const HEADER_LEN: usize = 80;

/// The SHA-256 of a module's bytes.
pub(crate) type ModuleDigest = [u8; 32];

/// Why sealed bytes were not turned into code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ArtifactError {
    #[error("{0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Truncated(usize),
    #[error("no WEIR-CW1 header (not a Weir artifact, or of another format version)")]
    Magic,
    #[error("compiled from another module (SHA-256 {0})")]
    OtherModule(String),
    #[error("the header announces {announced} bytes of code but {actual} follow")]
    Length { announced: u64, actual: usize },
    #[error("the code does not match its SHA-256 (damaged)")]
    Checksum,
    #[error("wasmtime refused it: {0}")]
    Incompatible(String),
}

/// Wraps `serialized` (from `Engine::precompile_component` of the module
/// whose SHA-256 is `module`) in its envelope.
pub(crate) fn seal(module: &ModuleDigest, serialized: &[u8]) -> Vec<u8> {
    let mut sealed = Vec::with_capacity(HEADER_LEN + serialized.len());
    sealed.extend_from_slice(&MAGIC);
    sealed.extend_from_slice(module);
    sealed.extend_from_slice(&(serialized.len() as u64).to_le_bytes());
    sealed.extend_from_slice(&Sha256::digest(serialized));
    sealed.extend_from_slice(serialized);
    sealed
}

/// The serialized component inside `sealed`, once its envelope shows it is
/// whole and compiled from `module`.
pub(crate) fn open<'a>(sealed: &'a [u8], module: &ModuleDigest) -> Result<&'a [u8], ArtifactError> {
    let (header, payload) = sealed
        .split_at_checked(HEADER_LEN)
        .ok_or(ArtifactError::Truncated(sealed.len()))?;
    let (magic, rest) = header.split_at(8);
    let (digest, rest) = rest.split_at(32);
    let (length, checksum) = rest.split_at(8);
    if magic != MAGIC {
        return Err(ArtifactError::Magic);
    }
    if digest != module {
        return Err(ArtifactError::OtherModule(hex::encode(digest)));
    }
    let announced = u64::from_le_bytes(length.try_into().expect("an 8-byte field"));
    if announced != payload.len() as u64 {
        return Err(ArtifactError::Length {
            announced,
            actual: payload.len(),
        });
    }
    if Sha256::digest(payload).as_slice() != checksum {
        return Err(ArtifactError::Checksum);
    }
    Ok(payload)
}

/// Turns a sealed artifact of `module` back into a component of `engine`.
pub(crate) fn load(
    engine: &Engine,
    sealed: &[u8],
    module: &ModuleDigest,
) -> Result<Component, ArtifactError> {
    let serialized = open(sealed, module)?;
    // SAFETY: `open` has just proven these are, bit for bit, the bytes a
    // wasmtime compiler produced for this module (their SHA-256 is the one
    // sealed with them, and the compilers are our own: this process or
    // `weir __compile`, the same binary). Wasmtime checks the version and
    // configuration recorded in them and refuses a mismatch. They are in
    // memory, not mapped from a file, so nothing can change them from
    // under the running code.
    unsafe { Component::deserialize(engine, serialized) }
        .map_err(|e| ArtifactError::Incompatible(format!("{e:#}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MODULE: ModuleDigest = [7; 32];

    fn sealed() -> Vec<u8> {
        seal(&MODULE, &[0xab; 10_000])
    }

    #[test]
    fn a_sealed_artifact_opens_to_its_bytes() {
        assert_eq!(open(&sealed(), &MODULE), Ok(&[0xab; 10_000][..]));
    }

    #[test]
    fn zeroed_pages_are_refused_by_the_checksum() {
        let mut bytes = sealed();
        bytes[1000..1000 + 4096].fill(0);
        assert_eq!(open(&bytes, &MODULE), Err(ArtifactError::Checksum));
    }

    #[test]
    fn truncated_artifacts_are_refused() {
        let bytes = sealed();
        assert_eq!(
            open(&bytes[..3000], &MODULE),
            Err(ArtifactError::Length {
                announced: 10_000,
                actual: 3000 - HEADER_LEN
            })
        );
        assert_eq!(
            open(&bytes[..40], &MODULE),
            Err(ArtifactError::Truncated(40))
        );
        assert_eq!(open(&[], &MODULE), Err(ArtifactError::Truncated(0)));
    }

    #[test]
    fn an_artifact_of_another_module_is_refused() {
        assert!(matches!(
            open(&sealed(), &[8; 32]),
            Err(ArtifactError::OtherModule(_))
        ));
    }

    #[test]
    fn bytes_without_the_envelope_are_refused() {
        let mut bytes = sealed();
        bytes[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
        assert_eq!(open(&bytes, &MODULE), Err(ArtifactError::Magic));
    }

    #[test]
    fn a_sealed_component_loads_and_a_damaged_one_does_not() {
        let engine = Engine::default();
        let wasm = b"\0asm\x0d\0\x01\0";
        let digest: ModuleDigest = Sha256::digest(wasm).into();
        let serialized = engine.precompile_component(wasm).expect("compiles");
        let mut bytes = seal(&digest, &serialized);
        assert!(load(&engine, &bytes, &digest).is_ok());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(matches!(
            load(&engine, &bytes, &digest),
            Err(ArtifactError::Checksum)
        ));
    }
}
