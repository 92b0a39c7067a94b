//! How a [`Features`] vector is serialized.
//!
//! Human-readable formats (JSON) and binary formats outside the store see the plain struct:
//! `idx`, `val` and `offset` as fields. The store's codec ([`crate::store::codec`]) asks, for
//! the blobs it writes, for the *compact* form, which is what most of the bytes of the event log
//! are: every impression carries the vectors of its candidates, and every feedback event and
//! review item a copy of one. In bincode's plain form a coordinate costs 9 bytes (a 22-bit index
//! takes bincode's 5-byte varint, a value a 4-byte float); the compact form takes about 3:
//! - the indices, sorted and unique, as LEB128 gaps from the previous one (a candidate's ~100
//!   coordinates in a 2^22 space are ~40,000 apart: 3 bytes, often 2);
//! - the values as a table of the distinct ones (a vector has few: 1 for binary features, one
//!   token weight, their sum) and, per coordinate, the table position in 1, 2, 4 or 8 bits;
//!   a vector with more than 256 distinct values stores them all as floats.
//!
//! The codec decodes blobs it wrote before this form existed (format tag 1) with the plain
//! layout, so a store keeps reading its old events.

use super::Features;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cell::Cell;

/// The layout binary serializers use on this thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Plain,
    Compact,
}

thread_local! {
    static LAYOUT: Cell<Layout> = const { Cell::new(Layout::Plain) };
}

/// Runs `f` with `layout` for binary (de)serialization of features on this thread.
pub fn with_layout<R>(layout: Layout, f: impl FnOnce() -> R) -> R {
    struct Restore(Layout);
    impl Drop for Restore {
        fn drop(&mut self) {
            LAYOUT.with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(LAYOUT.with(|l| l.replace(layout)));
    f()
}

fn compact(human_readable: bool) -> bool {
    !human_readable && LAYOUT.with(Cell::get) == Layout::Compact
}

#[derive(Serialize, Deserialize)]
#[serde(rename = "Features")]
struct Plain<I, V> {
    idx: I,
    val: V,
    offset: f32,
}

#[derive(Serialize, Deserialize)]
struct Packed<B> {
    bytes: B,
    offset: f32,
}

impl Serialize for Features {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if compact(s.is_human_readable()) {
            Packed { bytes: BytesRef(&pack(self)), offset: self.offset }.serialize(s)
        } else {
            Plain { idx: &self.idx, val: &self.val, offset: self.offset }.serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Features {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Features, D::Error> {
        if compact(d.is_human_readable()) {
            let p = Packed::<ByteBuf>::deserialize(d)?;
            unpack(&p.bytes.0, p.offset).map_err(D::Error::custom)
        } else {
            let p = Plain::<Vec<u32>, Vec<f32>>::deserialize(d)?;
            if p.idx.len() != p.val.len() {
                return Err(D::Error::custom(format!("{} indices but {} values", p.idx.len(), p.val.len())));
            }
            Ok(Features { idx: p.idx, val: p.val, offset: p.offset })
        }
    }
}

/// A feature vector as a store blob holds it, left undecoded: the compact bytes, or, from a blob
/// of the plain layout, the vector itself. Serialized in the compact layout, packed bytes are
/// written as they are, so copying a vector from one blob into another (an impression's into a
/// feedback event) neither unpacks nor packs it. The bytes are what [`pack`] wrote, and [`pack`]
/// writes one form for a vector, so the copy is the blob a decoded vector would give.
#[derive(Debug, Clone, PartialEq)]
pub enum Stored {
    Packed { bytes: Vec<u8>, offset: f32 },
    Decoded(Features),
}

impl Stored {
    /// Checks that the vector decodes, without building it.
    ///
    /// # Errors
    /// Packed bytes that do not decode: what is wrong.
    pub fn check(&self) -> Result<(), String> {
        match self {
            Stored::Packed { bytes, .. } => walk(bytes, &mut ()),
            Stored::Decoded(_) => Ok(()),
        }
    }

    /// The vector.
    ///
    /// # Errors
    /// Packed bytes that do not decode: what is wrong.
    #[cfg(test)]
    pub fn decode(&self) -> Result<Features, String> {
        match self {
            Stored::Packed { bytes, offset } => unpack(bytes, *offset),
            Stored::Decoded(f) => Ok(f.clone()),
        }
    }
}

impl Serialize for Stored {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Stored::Packed { bytes, offset } if compact(s.is_human_readable()) => {
                Packed { bytes: BytesRef(bytes), offset: *offset }.serialize(s)
            }
            Stored::Packed { bytes, offset } => unpack(bytes, *offset).map_err(serde::ser::Error::custom)?.serialize(s),
            Stored::Decoded(f) => f.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Stored, D::Error> {
        if compact(d.is_human_readable()) {
            let p = Packed::<ByteBuf>::deserialize(d)?;
            Ok(Stored::Packed { bytes: p.bytes.0, offset: p.offset })
        } else {
            Features::deserialize(d).map(Stored::Decoded)
        }
    }
}

/// Bytes serialized as one byte string (serde serializes `&[u8]` as a sequence otherwise).
struct BytesRef<'a>(&'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// An owned byte string.
struct ByteBuf(Vec<u8>);

impl<'de> Deserialize<'de> for ByteBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<ByteBuf, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = ByteBuf;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a byte string")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<ByteBuf, E> {
                Ok(ByteBuf(v))
            }
        }
        d.deserialize_byte_buf(Visit)
    }
}

/// Distinct values above this are stored as raw floats, one per coordinate.
const MAX_TABLE: usize = 256;

/// The compact bytes of `f`: `n`, `n` index gaps, the value table's length `m` (0: raw floats
/// follow), its `m` floats, then the codes (`n` floats if `m` is 0).
fn pack(f: &Features) -> Vec<u8> {
    let n = f.idx.len().min(f.val.len());
    let mut out = Vec::with_capacity(8 + 3 * n + n / 2);
    put_varint(&mut out, n as u64);
    let mut prev = 0u32;
    for (i, &x) in f.idx[..n].iter().enumerate() {
        // Sorted unique indices give positive gaps; a vector that is not (never built by the
        // extractor) still round-trips, its gaps taken modulo 2^32.
        let gap = if i == 0 { x } else { x.wrapping_sub(prev) };
        put_varint(&mut out, u64::from(gap));
        prev = x;
    }
    let mut table: Vec<u32> = Vec::new();
    let mut codes: Vec<u8> = Vec::with_capacity(n);
    for v in &f.val[..n] {
        let bits = v.to_bits();
        let code = match table.iter().position(|t| *t == bits) {
            Some(p) => p,
            None if table.len() < MAX_TABLE => {
                table.push(bits);
                table.len() - 1
            }
            None => {
                table.clear();
                break;
            }
        };
        codes.push(code as u8);
    }
    if table.is_empty() && n > 0 {
        put_varint(&mut out, 0);
        for v in &f.val[..n] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        return out;
    }
    put_varint(&mut out, table.len() as u64);
    for t in &table {
        out.extend_from_slice(&t.to_le_bytes());
    }
    let width = code_width(table.len());
    // Width 0 (one value) stores no codes.
    if let Some(per_byte) = 8usize.checked_div(width) {
        for chunk in codes.chunks(per_byte) {
            let mut b = 0u8;
            for (k, c) in chunk.iter().enumerate() {
                b |= c << (k * width);
            }
            out.push(b);
        }
    }
    out
}

/// Bits per value code for a table of `m` values: 0, 1, 2, 4 or 8.
fn code_width(m: usize) -> usize {
    match m {
        0 | 1 => 0,
        2 => 1,
        3 | 4 => 2,
        5..=16 => 4,
        _ => 8,
    }
}

fn unpack(bytes: &[u8], offset: f32) -> Result<Features, String> {
    let mut f = Features { idx: Vec::new(), val: Vec::new(), offset };
    walk(bytes, &mut f)?;
    Ok(f)
}

/// What [`walk`] hands the coordinates of a vector to.
trait Sink {
    /// The number of coordinates, before any of them.
    fn count(&mut self, n: usize);
    fn index(&mut self, x: u32);
    fn value(&mut self, v: f32);
}

impl Sink for Features {
    fn count(&mut self, n: usize) {
        self.idx.reserve_exact(n);
        self.val.reserve_exact(n);
    }
    fn index(&mut self, x: u32) {
        self.idx.push(x);
    }
    fn value(&mut self, v: f32) {
        self.val.push(v);
    }
}

/// Checks bytes without building the vector.
impl Sink for () {
    fn count(&mut self, _: usize) {}
    fn index(&mut self, _: u32) {}
    fn value(&mut self, _: f32) {}
}

/// Reads the compact bytes of a vector (see [`pack`]), handing its indices, then its values, to
/// `sink`.
fn walk(bytes: &[u8], sink: &mut impl Sink) -> Result<(), String> {
    let mut r = Reader { bytes, at: 0 };
    let n = usize::try_from(r.varint()?).map_err(|_| "coordinate count out of range".to_string())?;
    // Every coordinate takes at least one byte of gap: a count beyond the bytes is corrupt, and
    // is refused before anything is allocated for it.
    if n > bytes.len() {
        return Err(format!("{n} coordinates in {} bytes", bytes.len()));
    }
    sink.count(n);
    let mut prev = 0u32;
    for i in 0..n {
        let gap = u32::try_from(r.varint()?).map_err(|_| "index gap out of range".to_string())?;
        let x = if i == 0 { gap } else { prev.wrapping_add(gap) };
        sink.index(x);
        prev = x;
    }
    let m = usize::try_from(r.varint()?).map_err(|_| "value table out of range".to_string())?;
    if m == 0 {
        for _ in 0..n {
            sink.value(r.f32()?);
        }
    } else {
        if m > MAX_TABLE {
            return Err(format!("a value table of {m} entries"));
        }
        let mut table = [0f32; MAX_TABLE];
        for t in &mut table[..m] {
            *t = r.f32()?;
        }
        let width = code_width(m);
        if let Some(per_byte) = 8usize.checked_div(width) {
            let mask: u8 = if width == 8 { 0xff } else { (1u8 << width) - 1 };
            for k in 0..n.div_ceil(per_byte) {
                let b = r.byte()?;
                for j in 0..per_byte.min(n - k * per_byte) {
                    let code = usize::from((b >> (j * width)) & mask);
                    if code >= m {
                        return Err(format!("value code {code} beyond a table of {m}"));
                    }
                    sink.value(table[code]);
                }
            }
        } else {
            for _ in 0..n {
                sink.value(table[0]);
            }
        }
    }
    if r.at != bytes.len() {
        return Err(format!("{} bytes left over", bytes.len() - r.at));
    }
    Ok(())
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.bytes.get(self.at).ok_or("features end early")?;
        self.at += 1;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint longer than 64 bits".into())
    }

    fn f32(&mut self) -> Result<f32, String> {
        let end = self.at + 4;
        let b: [u8; 4] = self.bytes.get(self.at..end).and_then(|s| s.try_into().ok()).ok_or("features end early")?;
        self.at = end;
        Ok(f32::from_le_bytes(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(idx: &[u32], val: &[f32], offset: f32) -> Features {
        Features { idx: idx.to_vec(), val: val.to_vec(), offset }
    }

    #[test]
    fn round_trips_every_table_width_and_raw_floats() {
        let idx: Vec<u32> = (0..300).map(|i| i * 13_001 + 7).collect();
        for distinct in [1usize, 2, 3, 4, 5, 16, 17, 256, 257, 300] {
            let val: Vec<f32> = (0..300).map(|i| (i % distinct) as f32 * 0.25 + 1.0).collect();
            let f = v(&idx, &val, 1.5);
            let bytes = pack(&f);
            assert_eq!(unpack(&bytes, 1.5).expect("decodes"), f, "{distinct} distinct values");
        }
        assert_eq!(unpack(&pack(&Features::default()), 0.0).expect("decodes"), Features::default());
        let odd = v(&[5, 3, u32::MAX, 0], &[f32::NAN.copysign(-1.0), -0.0, f32::INFINITY, 1e-40], -2.0);
        let back = unpack(&pack(&odd), -2.0).expect("decodes");
        assert_eq!(back.idx, odd.idx);
        let bits = |f: &Features| f.val.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&odd), "values come back bit for bit");
    }

    #[test]
    fn a_realistic_vector_takes_about_a_third_of_the_plain_bytes() {
        let ex = crate::features::Extractor::default();
        let code = "def load(request):\n    q = \"SELECT * FROM users WHERE name = '\" + request.args['n'] + \"'\"\n    cur.execute(q)\n    return pickle.loads(request.data)\n";
        let lexed = crate::lexer::lex(code, Some(crate::lang::Language::Python));
        let f = ex.extract(&lexed, Some(crate::lang::Language::Python), []);
        assert!(f.len() > 40, "{} coordinates", f.len());
        let plain = bincode::serde::encode_to_vec(&f, bincode::config::standard()).expect("encodes");
        let compact = with_layout(Layout::Compact, || bincode::serde::encode_to_vec(&f, bincode::config::standard()))
            .expect("encodes");
        assert!(compact.len() * 2 < plain.len(), "compact {} bytes, plain {}", compact.len(), plain.len());
        let (back, _): (Features, usize) =
            with_layout(Layout::Compact, || bincode::serde::decode_from_slice(&compact, bincode::config::standard()))
                .expect("decodes");
        assert_eq!(back, f);
    }

    #[test]
    fn json_and_plain_binary_keep_the_field_form() {
        let f = v(&[1, 9], &[1.0, 0.5], 0.25);
        let json = with_layout(Layout::Compact, || serde_json::to_string(&f)).expect("json");
        assert_eq!(json, r#"{"idx":[1,9],"val":[1.0,0.5],"offset":0.25}"#);
        let plain = bincode::serde::encode_to_vec(&f, bincode::config::standard()).expect("encodes");
        // Two varint lengths and indices, two floats, the offset.
        assert_eq!(plain.len(), 1 + 2 + 1 + 8 + 4);
    }

    #[test]
    fn corrupt_bytes_are_refused_without_a_panic_or_a_huge_allocation() {
        let good = pack(&v(&[3, 70_000, 4_000_000], &[1.0, 0.5, 1.5], 0.0));
        // `Stored::check` walks the bytes without building the vector: it refuses the same.
        let check = |bytes: &[u8]| Stored::Packed { bytes: bytes.to_vec(), offset: 0.0 }.check();
        check(&good).expect("sound bytes pass");
        for cut in 0..good.len() {
            assert!(unpack(&good[..cut], 0.0).is_err(), "cut at {cut}");
            assert!(check(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert!(unpack(&long, 0.0).is_err(), "trailing byte");
        assert!(check(&long).is_err(), "trailing byte");
        // A count of 2^40 coordinates in a few bytes.
        let mut huge = Vec::new();
        put_varint(&mut huge, 1 << 40);
        assert!(unpack(&huge, 0.0).is_err());
        // A code beyond its table (3 entries, 2-bit codes: code 3 is out).
        let mut bad = Vec::new();
        put_varint(&mut bad, 1);
        put_varint(&mut bad, 10);
        put_varint(&mut bad, 3);
        for x in [1.0f32, 2.0, 3.0] {
            bad.extend_from_slice(&x.to_le_bytes());
        }
        bad.push(3);
        assert!(unpack(&bad, 0.0).unwrap_err().contains("beyond a table"));
        assert!(check(&bad).unwrap_err().contains("beyond a table"));
    }

    proptest! {
        #[test]
        fn any_vector_round_trips(
            idx in proptest::collection::btree_set(0u32..(1 << 22), 0..400),
            palette in proptest::collection::vec(-4.0f32..4.0, 1..300),
            offset in -10.0f32..10.0,
        ) {
            let idx: Vec<u32> = idx.into_iter().collect();
            let val: Vec<f32> = (0..idx.len()).map(|i| palette[i * 7 % palette.len()]).collect();
            let f = Features { idx, val, offset };
            prop_assert_eq!(unpack(&pack(&f), offset).expect("decodes"), f);
        }
    }
}
