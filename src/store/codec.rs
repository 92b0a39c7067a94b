//! Encoding of event bodies and impressions in the store: bincode 2 (serde, standard config)
//! behind one pair of functions, so the stored format can change in one place. Every stored
//! blob starts with a one-byte format tag.

use crate::events::EventBody;
use serde::{Serialize, de::DeserializeOwned};

const TAG_V1: u8 = 1;

/// Encodes a value with the format tag.
///
/// # Errors
/// Only if serde fails to encode (not for the event types).
pub fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, String> {
    let mut out = vec![TAG_V1];
    let body = bincode::serde::encode_to_vec(v, bincode::config::standard()).map_err(|e| e.to_string())?;
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a value written by [`encode`].
///
/// # Errors
/// An unknown tag or bytes that do not decode.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    match bytes.split_first() {
        Some((&TAG_V1, rest)) => {
            bincode::serde::decode_from_slice(rest, bincode::config::standard().with_limit::<{ 256 << 20 }>())
                .map(|(v, _)| v)
                .map_err(|e| e.to_string())
        }
        Some((t, _)) => Err(format!("unknown blob format tag {t}")),
        None => Err("empty blob".into()),
    }
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
