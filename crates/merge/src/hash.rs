//! The canonical, versioned encoding behind `key_hash`, `attr_hash` and the
//! surrogate keys.
//!
//! Every value is written as a one-byte type tag and a payload, so values
//! of different types never encode alike: NULL has its own tag (so NULL ≠
//! `""`), strings carry their length, timestamps are UTC microseconds
//! whatever their unit or zone, floats are normalised (`-0.0` = `0.0`, one
//! NaN) and decimals are reduced to their shortest scale (`1.50` = `1.5`).
//! Attribute hashes are keyed by column name, in name order, so column
//! order in a source never matters. Hashes are the first 16 bytes of BLAKE3.
//!
//! [`ENCODING_VERSION`] is recorded in each table's properties, and a table
//! keeps the version it was created with; a change to this encoding must
//! bump it, and keep the older versions readable ([`ENCODINGS`]).
//! - Version 1: an attribute hash is BLAKE3 of the version byte and, per
//!   column, the name's length and bytes and then the value, with lengths
//!   and integers at full width.
//! - Version 2 (new tables): the column names are hashed once per column
//!   set into a BLAKE3 key, and each row's hash is BLAKE3 keyed by it of
//!   the values alone, with lengths, integers and decimals as variable-length
//!   integers. A row of the harness's members takes two BLAKE3 blocks
//!   where version 1 took four. Key hashes and surrogate keys are the same
//!   under both versions.
//!
//! Type-1 values are never stored: a merge compares them by a fingerprint
//! (`Attrs::fingerprint`), the values' encoding itself when it fits in 15
//! bytes, so most of them never reach BLAKE3.

use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, BinaryArray, BooleanArray, Date32Array, Decimal128Array, Float32Array, Float64Array,
    Int8Array, Int16Array, Int32Array, Int64Array, LargeBinaryArray, LargeStringArray, StringArray, UInt8Array,
    UInt16Array, UInt32Array, UInt64Array,
};
use deltalake::arrow::buffer::{NullBuffer, ScalarBuffer};
use deltalake::arrow::datatypes::{DataType, TimeUnit};

use crate::{Error, Result};

/// Version of the canonical encoding written to new tables, stored as
/// table property `gold.scd2.encoding`.
pub const ENCODING_VERSION: u8 = 2;

/// Every version a table may record that this build merges into, in that
/// version's encoding.
pub const ENCODINGS: [u8; 2] = [1, 2];

/// The version byte that starts a key's encoding and a surrogate key's
/// input: unchanged since version 1, so that key hashes and surrogate keys
/// do not depend on the table's encoding.
const KEY_ENCODING: u8 = 1;

/// A 128-bit BLAKE3 digest.
pub type Hash128 = u128;

const TAG_NULL: u8 = 0;
const TAG_BOOL: u8 = 1;
const TAG_INT: u8 = 2;
const TAG_FLOAT: u8 = 3;
const TAG_DECIMAL: u8 = 4;
const TAG_STRING: u8 = 5;
const TAG_BYTES: u8 = 6;
const TAG_DATE: u8 = 7;
const TAG_TIMESTAMP: u8 = 8;

/// One column, downcast once, with its validity, so that encoding a row
/// is a bit test, a match and a copy.
#[derive(Debug)]
pub(crate) struct Col<'a> {
    values: Values<'a>,
    nulls: Option<&'a NullBuffer>,
}

#[derive(Debug)]
enum Values<'a> {
    Bool(&'a BooleanArray),
    I8(&'a Int8Array),
    I16(&'a Int16Array),
    I32(&'a Int32Array),
    I64(&'a Int64Array),
    U8(&'a UInt8Array),
    U16(&'a UInt16Array),
    U32(&'a UInt32Array),
    U64(&'a UInt64Array),
    F32(&'a Float32Array),
    F64(&'a Float64Array),
    Dec(&'a Decimal128Array, i8),
    Str(&'a StringArray),
    LStr(&'a LargeStringArray),
    Bin(&'a BinaryArray),
    LBin(&'a LargeBinaryArray),
    Date(&'a Date32Array),
    /// Timestamp values in any unit and the factor to microseconds
    /// (negative: divide).
    Ts(&'a ScalarBuffer<i64>, i64),
}

impl<'a> Col<'a> {
    pub(crate) fn new(name: &str, array: &'a ArrayRef) -> Result<Self> {
        use Values as V;
        use deltalake::arrow::datatypes as t;
        let values = match array.data_type() {
            DataType::Boolean => V::Bool(array.as_boolean()),
            DataType::Int8 => V::I8(array.as_primitive::<t::Int8Type>()),
            DataType::Int16 => V::I16(array.as_primitive::<t::Int16Type>()),
            DataType::Int32 => V::I32(array.as_primitive::<t::Int32Type>()),
            DataType::Int64 => V::I64(array.as_primitive::<t::Int64Type>()),
            DataType::UInt8 => V::U8(array.as_primitive::<t::UInt8Type>()),
            DataType::UInt16 => V::U16(array.as_primitive::<t::UInt16Type>()),
            DataType::UInt32 => V::U32(array.as_primitive::<t::UInt32Type>()),
            DataType::UInt64 => V::U64(array.as_primitive::<t::UInt64Type>()),
            DataType::Float32 => V::F32(array.as_primitive::<t::Float32Type>()),
            DataType::Float64 => V::F64(array.as_primitive::<t::Float64Type>()),
            DataType::Decimal128(_, scale) => V::Dec(array.as_primitive::<t::Decimal128Type>(), *scale),
            DataType::Utf8 => V::Str(array.as_string::<i32>()),
            DataType::LargeUtf8 => V::LStr(array.as_string::<i64>()),
            DataType::Binary => V::Bin(array.as_binary::<i32>()),
            DataType::LargeBinary => V::LBin(array.as_binary::<i64>()),
            DataType::Date32 => V::Date(array.as_primitive::<t::Date32Type>()),
            DataType::Timestamp(TimeUnit::Second, _) => {
                V::Ts(array.as_primitive::<t::TimestampSecondType>().values(), 1_000_000)
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => {
                V::Ts(array.as_primitive::<t::TimestampMillisecondType>().values(), 1_000)
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                V::Ts(array.as_primitive::<t::TimestampMicrosecondType>().values(), 1)
            }
            DataType::Timestamp(TimeUnit::Nanosecond, _) => {
                V::Ts(array.as_primitive::<t::TimestampNanosecondType>().values(), -1_000)
            }
            other => {
                return Err(Error::UnsupportedType { column: name.to_string(), data_type: other.to_string() });
            }
        };
        Ok(Col { values, nulls: array.nulls() })
    }

    pub(crate) fn is_null(&self, row: usize) -> bool {
        self.nulls.is_some_and(|n| n.is_null(row))
    }

    /// Appends the tagged encoding of `row` to `out`. `compact`: lengths,
    /// integers and decimals as variable-length integers (version 2's
    /// attributes), else at full width (keys, and version 1).
    pub(crate) fn encode(&self, row: usize, out: &mut Vec<u8>, compact: bool) {
        if self.is_null(row) {
            out.push(TAG_NULL);
            return;
        }
        let int = |out: &mut Vec<u8>, v: i128| {
            out.push(TAG_INT);
            if compact {
                varint(out, zigzag(v));
            } else {
                out.extend_from_slice(&v.to_le_bytes());
            }
        };
        let bytes = |out: &mut Vec<u8>, tag: u8, v: &[u8]| {
            out.push(tag);
            if compact {
                varint(out, v.len() as u128);
            } else {
                out.extend_from_slice(&(v.len() as u64).to_le_bytes());
            }
            out.extend_from_slice(v);
        };
        match &self.values {
            Values::Bool(a) => out.extend_from_slice(&[TAG_BOOL, u8::from(a.value(row))]),
            Values::I8(a) => int(out, a.value(row).into()),
            Values::I16(a) => int(out, a.value(row).into()),
            Values::I32(a) => int(out, a.value(row).into()),
            Values::I64(a) => int(out, a.value(row).into()),
            Values::U8(a) => int(out, a.value(row).into()),
            Values::U16(a) => int(out, a.value(row).into()),
            Values::U32(a) => int(out, a.value(row).into()),
            Values::U64(a) => int(out, a.value(row).into()),
            Values::F32(a) => float(out, a.value(row).into()),
            Values::F64(a) => float(out, a.value(row)),
            Values::Dec(a, scale) => {
                let (mut v, mut s) = (a.value(row), i32::from(*scale));
                while s > 0 && v % 10 == 0 {
                    v /= 10;
                    s -= 1;
                }
                out.push(TAG_DECIMAL);
                if compact {
                    varint(out, zigzag(v));
                    varint(out, zigzag(s.into()));
                } else {
                    out.extend_from_slice(&v.to_le_bytes());
                    out.extend_from_slice(&s.to_le_bytes());
                }
            }
            Values::Str(a) => bytes(out, TAG_STRING, a.value(row).as_bytes()),
            Values::LStr(a) => bytes(out, TAG_STRING, a.value(row).as_bytes()),
            Values::Bin(a) => bytes(out, TAG_BYTES, a.value(row)),
            Values::LBin(a) => bytes(out, TAG_BYTES, a.value(row)),
            Values::Date(a) => {
                out.push(TAG_DATE);
                out.extend_from_slice(&a.value(row).to_le_bytes());
            }
            Values::Ts(values, factor) => {
                let v = values[row];
                let micros = if *factor >= 1 { v.saturating_mul(*factor) } else { v.div_euclid(-*factor) };
                out.push(TAG_TIMESTAMP);
                out.extend_from_slice(&micros.to_le_bytes());
            }
        }
    }
}

fn float(out: &mut Vec<u8>, v: f64) {
    let v = if v == 0.0 {
        0.0
    } else if v.is_nan() {
        f64::NAN
    } else {
        v
    };
    out.push(TAG_FLOAT);
    out.extend_from_slice(&v.to_bits().to_le_bytes());
}

/// LEB128: seven bits a byte, low first, the high bit set on all but the
/// last. No encoding is a prefix of another, so values stay apart.
fn varint(out: &mut Vec<u8>, mut v: u128) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A signed integer as an unsigned one, small magnitudes small.
fn zigzag(v: i128) -> u128 {
    ((v << 1) ^ (v >> 127)) as u128
}

/// The first 16 bytes of a BLAKE3 digest.
fn first16(digest: blake3::Hash) -> Hash128 {
    let mut first = [0u8; 16];
    first.copy_from_slice(&digest.as_bytes()[..16]);
    u128::from_le_bytes(first)
}

/// The first 16 bytes of BLAKE3 of `bytes`.
pub fn hash128(bytes: &[u8]) -> Hash128 {
    first16(blake3::hash(bytes))
}

/// Encodes the business key of `row`: the version byte, then every key
/// column in declared order (positional, NULL tagged).
pub(crate) fn encode_key(cols: &[Col<'_>], row: usize, out: &mut Vec<u8>) {
    out.clear();
    out.push(KEY_ENCODING);
    for col in cols {
        col.encode(row, out, false);
    }
}

/// The attribute hash of rows over one set of columns, in name order
/// (callers sort them), under one encoding version.
pub(crate) struct Attrs<'a> {
    cols: Vec<(&'a str, Col<'a>)>,
    encoding: u8,
    /// Version 2: BLAKE3 of the version byte and the names, the key of
    /// every row's hash.
    names_key: [u8; 32],
}

impl<'a> Attrs<'a> {
    pub(crate) fn new(cols: Vec<(&'a str, Col<'a>)>, encoding: u8) -> Self {
        let mut names = blake3::Hasher::new();
        names.update(&[encoding]);
        names.update(&(cols.len() as u32).to_le_bytes());
        for (name, _) in &cols {
            names.update(&(name.len() as u32).to_le_bytes());
            names.update(name.as_bytes());
        }
        Attrs { cols, encoding, names_key: *names.finalize().as_bytes() }
    }

    pub(crate) fn len(&self) -> usize {
        self.cols.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.cols.is_empty()
    }

    /// The hash of `row`; `buf` is scratch space.
    pub(crate) fn hash(&self, row: usize, buf: &mut Vec<u8>) -> Hash128 {
        if self.encoding == 1 {
            buf.clear();
            buf.push(1);
            for (name, col) in &self.cols {
                buf.extend_from_slice(&(name.len() as u32).to_le_bytes());
                buf.extend_from_slice(name.as_bytes());
                col.encode(row, buf, false);
            }
            return hash128(buf);
        }
        self.encode_values(row, buf);
        first16(blake3::keyed_hash(&self.names_key, buf))
    }

    /// Version 2's encoding of `row`: the values alone, compact, into `buf`.
    fn encode_values(&self, row: usize, buf: &mut Vec<u8>) {
        buf.clear();
        for (_, col) in &self.cols {
            col.encode(row, buf, true);
        }
    }

    /// A value that two rows share exactly when their values in these
    /// columns are equal, for comparisons within one merge that are never
    /// stored (the type-1 columns). The compact encoding itself when it
    /// fits in 15 bytes (a timestamp takes 9), with its length in the top
    /// byte; else its BLAKE3 hash with the top bit set, so the two kinds
    /// never meet. Never 0, which stands for "not in the file".
    pub(crate) fn fingerprint(&self, row: usize, buf: &mut Vec<u8>) -> Hash128 {
        self.encode_values(row, buf);
        if buf.len() < 16 {
            let mut inline = [0u8; 16];
            inline[..buf.len()].copy_from_slice(buf);
            inline[15] = buf.len() as u8;
            return u128::from_le_bytes(inline);
        }
        first16(blake3::keyed_hash(&self.names_key, buf)) | 1 << 127
    }
}

/// A hash as stored in `key_hash` or `attr_hash` (16 bytes,
/// little-endian), read back.
pub fn from_stored(bytes: &[u8]) -> Hash128 {
    let mut b = [0u8; 16];
    let n = bytes.len().min(16);
    b[..n].copy_from_slice(&bytes[..n]);
    u128::from_le_bytes(b)
}

/// The surrogate key of the version of `key_hash` that starts at
/// `valid_from` (UTC microseconds): 63 bits of BLAKE3, so it is the same
/// whenever the same inputs are rebuilt, and never negative.
pub fn surrogate_key(key_hash: Hash128, valid_from: i64) -> i64 {
    let mut buf = [0u8; 1 + 16 + 8];
    buf[0] = KEY_ENCODING;
    buf[1..17].copy_from_slice(&key_hash.to_le_bytes());
    buf[17..].copy_from_slice(&valid_from.to_le_bytes());
    let digest = blake3::hash(&buf);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    (u64::from_le_bytes(first) >> 1) as i64
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use deltalake::arrow::array::{
        ArrayRef, Decimal128Array, Int64Array, StringArray, TimestampMillisecondArray, TimestampSecondArray,
    };

    use super::*;

    fn attr_hash(encoding: u8, name: &str, array: ArrayRef, row: usize) -> Hash128 {
        let col = Col::new(name, &array).expect("supported type");
        Attrs::new(vec![(name, col)], encoding).hash(row, &mut Vec::new())
    }

    #[test]
    fn the_encoding_tells_null_from_empty_and_types_apart_but_not_scales_or_units() {
        for v in ENCODINGS {
            let text: ArrayRef = Arc::new(StringArray::from(vec![None, Some(""), Some("1")]));
            assert_ne!(attr_hash(v, "c", Arc::clone(&text), 0), attr_hash(v, "c", Arc::clone(&text), 1), "NULL vs ''");
            let int: ArrayRef = Arc::new(Int64Array::from(vec![1]));
            assert_ne!(attr_hash(v, "c", int, 0), attr_hash(v, "c", text, 2), "1 vs '1'");
            let a: ArrayRef = Arc::new(Decimal128Array::from(vec![150]).with_precision_and_scale(18, 2).unwrap());
            let b: ArrayRef = Arc::new(Decimal128Array::from(vec![15]).with_precision_and_scale(18, 1).unwrap());
            assert_eq!(attr_hash(v, "c", a, 0), attr_hash(v, "c", b, 0), "1.50 = 1.5");
            let s: ArrayRef = Arc::new(TimestampSecondArray::from(vec![1_700_000_000]).with_timezone("UTC"));
            let ms: ArrayRef =
                Arc::new(TimestampMillisecondArray::from(vec![1_700_000_000_000]).with_timezone("+01:00"));
            assert_eq!(attr_hash(v, "c", s, 0), attr_hash(v, "c", ms, 0), "the same instant in other units and zones");
        }
        assert_ne!(surrogate_key(1, 0), surrogate_key(1, 1));
        assert!(surrogate_key(u128::MAX, i64::MAX) >= 0);
    }

    #[test]
    fn version_1_hashes_names_and_values_at_full_width_and_version_2_keys_values_by_the_names() {
        let name: ArrayRef = Arc::new(StringArray::from(vec![Some("Ann"), None]));
        let n: ArrayRef = Arc::new(Int64Array::from(vec![-3, 300]));
        let cols = || vec![("n", Col::new("n", &n).unwrap()), ("name", Col::new("name", &name).unwrap())];
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&1u32.to_le_bytes());
        v1.extend_from_slice(b"n");
        v1.push(TAG_INT);
        v1.extend_from_slice(&(-3i128).to_le_bytes());
        v1.extend_from_slice(&4u32.to_le_bytes());
        v1.extend_from_slice(b"name");
        v1.extend_from_slice(&[TAG_STRING, 3, 0, 0, 0, 0, 0, 0, 0]);
        v1.extend_from_slice(b"Ann");
        assert_eq!(Attrs::new(cols(), 1).hash(0, &mut Vec::new()), hash128(&v1));

        let mut names = vec![2u8];
        names.extend_from_slice(&2u32.to_le_bytes());
        names.extend_from_slice(&[1, 0, 0, 0, b'n', 4, 0, 0, 0, b'n', b'a', b'm', b'e']);
        let names_key = *blake3::hash(&names).as_bytes();
        // -3 zigzags to 5 and 300 to 600 (two bytes); "Ann" has length 3.
        let row0 = [TAG_INT, 5, TAG_STRING, 3, b'A', b'n', b'n'];
        let row1 = [TAG_INT, 0xd8, 0x04, TAG_NULL];
        let v2 = Attrs::new(cols(), 2);
        assert_eq!(v2.hash(0, &mut Vec::new()), first16(blake3::keyed_hash(&names_key, &row0)));
        assert_eq!(v2.hash(1, &mut Vec::new()), first16(blake3::keyed_hash(&names_key, &row1)));
        // The names are part of the hash: the same values under other names differ.
        let renamed = vec![("m", Col::new("m", &n).unwrap()), ("name", Col::new("name", &name).unwrap())];
        assert_ne!(Attrs::new(renamed, 2).hash(0, &mut Vec::new()), v2.hash(0, &mut Vec::new()));
    }

    #[test]
    fn a_fingerprint_is_the_short_encoding_itself_or_a_marked_hash_and_tells_values_apart() {
        let text: ArrayRef = Arc::new(StringArray::from(vec![
            None,
            Some(""),
            Some("a"),
            Some("a\0"),
            Some("a long value of many more than fifteen bytes"),
            Some("a long value of many more than fifteen bytes"),
            Some("a long value of many more than fifteen bytes!"),
        ]));
        let attrs = Attrs::new(vec![("c", Col::new("c", &text).unwrap())], ENCODING_VERSION);
        let prints: Vec<Hash128> = (0..text.len()).map(|r| attrs.fingerprint(r, &mut Vec::new())).collect();
        // "a": the string tag, its length 1 and the byte, then 3 in the top byte.
        let mut a = [0u8; 16];
        a[..3].copy_from_slice(&[TAG_STRING, 1, b'a']);
        a[15] = 3;
        assert_eq!(prints[2], u128::from_le_bytes(a));
        assert_eq!(prints[4], prints[5], "equal values, equal fingerprints");
        for (i, p) in prints.iter().enumerate() {
            assert_ne!(*p, 0, "row {i}");
            assert_eq!(*p >> 127 == 1, i >= 4, "row {i}: only long values are hashed");
            for (j, q) in prints.iter().enumerate().skip(i + 1) {
                assert!(p != q || (i, j) == (4, 5), "rows {i} and {j}");
            }
        }
        let ts: ArrayRef = Arc::new(TimestampSecondArray::from(vec![1_700_000_000]).with_timezone("UTC"));
        let ts = Attrs::new(vec![("t", Col::new("t", &ts).unwrap())], ENCODING_VERSION);
        assert_eq!(ts.fingerprint(0, &mut Vec::new()) >> 120, 9, "a timestamp is held inline, in 9 bytes");
    }
}
