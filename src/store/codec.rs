//! Encoding of event bodies and impressions in the store: bincode 2 (serde, standard config)
//! behind one pair of functions, so the stored format can change in one place. Every stored
//! blob starts with a one-byte format tag:
//! - 1: feature vectors in bincode's plain form (9 bytes a coordinate); read, no longer written;
//! - 2: feature vectors in the compact form of [`crate::features::wire`] (about 3 bytes a
//!   coordinate), which cut the event log to about half (issue 5, BENCHMARKS.md). A binary
//!   from before this form refuses these blobs ("unknown blob format tag 2").

use crate::events::EventBody;
use crate::features::wire::{Layout, with_layout};
use serde::{Serialize, de::DeserializeOwned};

const TAG_V1: u8 = 1;
const TAG_V2: u8 = 2;

/// Encodes a value with the format tag.
///
/// # Errors
/// Only if serde fails to encode (not for the event types).
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    let mut out = vec![TAG_V2];
    with_layout(Layout::Compact, || bincode::serde::encode_into_std_write(v, &mut out, bincode::config::standard()))
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// Decodes a value written by [`encode`].
///
/// # Errors
/// An unknown tag or bytes that do not decode.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let (layout, rest) = match bytes.split_first() {
        Some((&TAG_V1, rest)) => (Layout::Plain, rest),
        Some((&TAG_V2, rest)) => (Layout::Compact, rest),
        Some((t, _)) => return Err(format!("unknown blob format tag {t}")),
        None => return Err("empty blob".into()),
    };
    with_layout(layout, || {
        bincode::serde::decode_from_slice(rest, bincode::config::standard().with_limit::<{ 256 << 20 }>())
    })
    .map(|(v, _)| v)
    .map_err(|e| e.to_string())
}

/// Encodes an event body.
///
/// # Errors
/// As [`encode`].
pub fn encode_event(b: &EventBody) -> Result<Vec<u8>, String> {
    encode(b)
}

/// Decodes an event body.
///
/// # Errors
/// As [`decode`].
pub fn decode_event(bytes: &[u8]) -> Result<EventBody, String> {
    decode(bytes)
}
