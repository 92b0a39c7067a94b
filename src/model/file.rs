//! The model file format. All (de)serialisation of model files lives here, so the encoding
//! can change in one place.
//!
//! Layout (integers little-endian):
//! ```text
//! magic "GRMODEL\0" (8) | format version u32 | extractor version u32 | body length u64
//! body: bincode 2 (standard config) of ModelBody | CRC-32 (IEEE) of everything before it, u32
//! ```
//! The header is plain bytes, so a file from another format or extractor is refused with a
//! precise error before the body is decoded. Loading never panics.

use super::{Hyper, Model};
use crate::features::EXTRACTOR_VERSION;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// The first eight bytes of every model file.
pub const MAGIC: &[u8; 8] = b"GRMODEL\0";
/// Version of this layout.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: usize = 8 + 4 + 4 + 8;
/// Bodies larger than this are refused (a full 2^28 space is ~3.2 GB; we cap at 4 GiB).
const MAX_BODY: u64 = 4 << 30;

#[derive(Serialize, Deserialize)]
struct ModelBody {
    version: String,
    hyper: Hyper,
    examples: u64,
    /// (index, z, n) of every touched coordinate.
    state: Vec<(u32, f32, f32)>,
}

/// Why a model file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("not a guardrank model file (bad magic bytes)")]
    BadMagic,
    #[error("model file format {found} is not supported (this build reads format {expected})")]
    UnsupportedFormat { found: u32, expected: u32 },
    #[error("model was built for feature extractor {found}, this build extracts version {expected}; retrain it")]
    ExtractorMismatch { found: u32, expected: u32 },
    #[error("model file is truncated")]
    Truncated,
    #[error("model file is corrupt: checksum mismatch")]
    Checksum,
    #[error("model file body is invalid: {0}")]
    Decode(String),
    #[error("model file body of {0} bytes is too large")]
    TooLarge(u64),
    #[error("model file I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes `model` in the model file format.
///
/// # Errors
/// Encoding or writing fails.
pub fn write_model(model: &Model, mut out: impl Write) -> Result<(), ModelFileError> {
    let body = ModelBody {
        version: model.version.clone(),
        hyper: model.hyper(),
        examples: model.examples,
        state: model.sparse_state(),
    };
    let body = bincode::serde::encode_to_vec(&body, bincode::config::standard())
        .map_err(|e| ModelFileError::Decode(e.to_string()))?;
    let mut buf = Vec::with_capacity(HEADER_LEN + body.len() + 4);
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    buf.extend_from_slice(&EXTRACTOR_VERSION.to_le_bytes());
    buf.extend_from_slice(&(body.len() as u64).to_le_bytes());
    buf.extend_from_slice(&body);
    let crc = crc32fast::hash(&buf);
    buf.extend_from_slice(&crc.to_le_bytes());
    out.write_all(&buf)?;
    out.flush()?;
    Ok(())
}

fn read_exact_or_truncated(r: &mut impl Read, buf: &mut [u8]) -> Result<(), ModelFileError> {
    r.read_exact(buf).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof { ModelFileError::Truncated } else { ModelFileError::Io(e) }
    })
}

/// Reads a model file, checking magic, versions, length and checksum.
///
/// # Errors
/// Every way the bytes can be wrong is a [`ModelFileError`]; none panics.
pub fn read_model(mut input: impl Read) -> Result<Model, ModelFileError> {
    let mut header = [0u8; HEADER_LEN];
    read_exact_or_truncated(&mut input, &mut header[..8])?;
    if &header[..8] != MAGIC {
        return Err(ModelFileError::BadMagic);
    }
    read_exact_or_truncated(&mut input, &mut header[8..])?;
    let u32_at = |o: usize| u32::from_le_bytes([header[o], header[o + 1], header[o + 2], header[o + 3]]);
    let format = u32_at(8);
    if format != FORMAT_VERSION {
        return Err(ModelFileError::UnsupportedFormat { found: format, expected: FORMAT_VERSION });
    }
    let extractor = u32_at(12);
    if extractor != EXTRACTOR_VERSION {
        return Err(ModelFileError::ExtractorMismatch { found: extractor, expected: EXTRACTOR_VERSION });
    }
    let mut len_bytes = [0u8; 8];
    len_bytes.copy_from_slice(&header[16..24]);
    let body_len = u64::from_le_bytes(len_bytes);
    if body_len > MAX_BODY {
        return Err(ModelFileError::TooLarge(body_len));
    }
    // Read through `take` so a lying length cannot make us allocate before data arrives.
    let mut rest = Vec::new();
    input.take(body_len + 4).read_to_end(&mut rest)?;
    if (rest.len() as u64) < body_len + 4 {
        return Err(ModelFileError::Truncated);
    }
    let (body, crc_bytes) = rest.split_at(body_len as usize);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header);
    hasher.update(body);
    let want = u32::from_le_bytes([crc_bytes[0], crc_bytes[1], crc_bytes[2], crc_bytes[3]]);
    if hasher.finalize() != want {
        return Err(ModelFileError::Checksum);
    }
    let (body, _): (ModelBody, usize) =
        bincode::serde::decode_from_slice(body, bincode::config::standard().with_limit::<{ 4 << 30 }>())
            .map_err(|e| ModelFileError::Decode(e.to_string()))?;
    let h = body.hyper;
    let sane = h.alpha.is_finite()
        && h.alpha > 0.0
        && h.beta.is_finite()
        && h.beta >= 0.0
        && h.l1.is_finite()
        && h.l1 >= 0.0
        && h.l2.is_finite()
        && h.l2 >= 0.0
        && (8..=28).contains(&h.bits);
    if !sane {
        return Err(ModelFileError::Decode("hyperparameters out of range".into()));
    }
    Model::from_sparse_state(h, body.version, body.examples, &body.state).map_err(ModelFileError::Decode)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::Features;

    fn trained() -> Model {
        let mut m = Model::new(Hyper { bits: 12, ..Hyper::default() }, "test-1");
        for k in 0..100u32 {
            let f = Features { idx: vec![k % 13, 100 + k % 5], val: vec![1.0, 0.5], offset: 0.0 };
            m.update(&f, k % 2 == 0, 1.0);
        }
        m
    }

    fn bytes(m: &Model) -> Vec<u8> {
        let mut v = Vec::new();
        write_model(m, &mut v).expect("write to a Vec");
        v
    }

    #[test]
    fn round_trips_exactly() {
        let m = trained();
        let back = read_model(&bytes(&m)[..]).expect("reads back");
        assert!(back == m);
    }

    #[test]
    fn every_truncation_is_a_typed_error() {
        let b = bytes(&trained());
        for cut in 0..b.len() {
            assert!(read_model(&b[..cut]).is_err(), "cut at {cut} loaded");
        }
    }

    #[test]
    fn corruption_and_mismatches_are_refused() {
        let b = bytes(&trained());
        let mut bad = b.clone();
        bad[0] = b'X';
        assert!(matches!(read_model(&bad[..]), Err(ModelFileError::BadMagic)));
        let mut bad = b.clone();
        bad[8] = 99;
        assert!(matches!(read_model(&bad[..]), Err(ModelFileError::UnsupportedFormat { found: 99, .. })));
        let mut bad = b.clone();
        bad[12] = bad[12].wrapping_add(1);
        assert!(matches!(read_model(&bad[..]), Err(ModelFileError::ExtractorMismatch { .. })));
        let mut bad = b.clone();
        let mid = HEADER_LEN + 10;
        bad[mid] ^= 0x55;
        assert!(matches!(read_model(&bad[..]), Err(ModelFileError::Checksum)));
        let mut bad = b;
        bad[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(read_model(&bad[..]), Err(ModelFileError::TooLarge(_))));
    }
}
