//! Primitive encodings shared by every message, and the checked reader that decodes them.
//!
//! All integers are little-endian. Variable-length fields carry their length first:
//! `str8` (u8 length, UTF-8), `str16` (u16 length, UTF-8), `bytes32` (u32 length). An
//! optional u64 is a u8 (0 absent, 1 present) followed by the u64 when present.
//! Decoded strings and byte fields are slices of the frame's payload: no copies.

use bytes::{BufMut, Bytes, BytesMut};

/// UTF-8 text that shares the frame's buffer.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text(Bytes);

impl Text {
    /// Text from a static or owned string.
    pub fn new(s: impl Into<String>) -> Self {
        Text(Bytes::from(s.into()))
    }

    /// Checks `b` as UTF-8.
    pub fn from_utf8(b: Bytes) -> Result<Self, std::str::Utf8Error> {
        std::str::from_utf8(&b)?;
        Ok(Text(b))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Checked as UTF-8 when built.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Zero bytes long.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text(Bytes::from(s))
    }
}

/// Why a payload did not decode. Decoders return this; they never panic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {what} at byte {offset}: {detail}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// Offset in the payload.
    pub offset: usize,
    /// What was wrong.
    pub detail: String,
}

/// A checked reader over a payload.
pub struct Reader {
    bytes: Bytes,
    at: usize,
    what: &'static str,
}

impl Reader {
    /// Reads `bytes`, naming `what` in errors.
    pub fn new(bytes: Bytes, what: &'static str) -> Self {
        Reader { bytes, at: 0, what }
    }

    /// An error at the current offset.
    pub fn error(&self, detail: impl Into<String>) -> DecodeError {
        DecodeError {
            what: self.what,
            offset: self.at,
            detail: detail.into(),
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    /// The next `n` bytes, shared.
    pub fn take(&mut self, n: usize) -> Result<Bytes, DecodeError> {
        if self.remaining() < n {
            return Err(self.error(format!("needs {n} bytes, {} left", self.remaining())));
        }
        let b = self.bytes.slice(self.at..self.at + n);
        self.at += n;
        Ok(b)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let b = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&b);
        Ok(a)
    }

    /// A byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    /// A u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    /// A u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    /// A u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }

    /// 16 bytes (a UUID).
    pub fn uuid(&mut self) -> Result<[u8; 16], DecodeError> {
        self.array()
    }

    /// A boolean byte (0 or 1).
    pub fn bool(&mut self) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            b => Err(self.error(format!("boolean byte {b}"))),
        }
    }

    /// An optional u64.
    pub fn opt_u64(&mut self) -> Result<Option<u64>, DecodeError> {
        Ok(if self.bool()? {
            Some(self.u64()?)
        } else {
            None
        })
    }

    /// UTF-8 text of `n` bytes.
    pub fn text(&mut self, n: usize) -> Result<Text, DecodeError> {
        let b = self.take(n)?;
        Text::from_utf8(b).map_err(|_| self.error("text is not UTF-8"))
    }

    /// A `str8`.
    pub fn str8(&mut self) -> Result<Text, DecodeError> {
        let n = self.u8()? as usize;
        self.text(n)
    }

    /// A `str16`.
    pub fn str16(&mut self) -> Result<Text, DecodeError> {
        let n = self.u16()? as usize;
        self.text(n)
    }

    /// A `bytes32`.
    pub fn bytes32(&mut self) -> Result<Bytes, DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }

    /// A count of items that each take at least `min_bytes`: checked against what is left, so
    /// a forged count cannot make the decoder reserve memory it will never fill.
    pub fn count(&mut self, n: usize, min_bytes: usize) -> Result<usize, DecodeError> {
        if n.saturating_mul(min_bytes.max(1)) > self.remaining() {
            return Err(self.error(format!(
                "{n} items cannot fit in {} bytes",
                self.remaining()
            )));
        }
        Ok(n)
    }

    /// Fails unless every byte was read.
    pub fn finish(self) -> Result<(), DecodeError> {
        if self.remaining() != 0 {
            return Err(self.error(format!("{} trailing bytes", self.remaining())));
        }
        Ok(())
    }
}

/// Writes a `str8`; the caller has checked the length (names are at most 255 bytes).
pub fn put_str8(out: &mut BytesMut, s: &str) {
    let n = u8::try_from(s.len()).expect("str8 fields are at most 255 bytes");
    out.put_u8(n);
    out.put_slice(s.as_bytes());
}

/// Writes a `str16`, cutting text longer than 65,535 bytes at a character boundary.
pub fn put_str16(out: &mut BytesMut, s: &str) {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.put_u16_le(end as u16);
    out.put_slice(&s.as_bytes()[..end]);
}

/// Writes a `bytes32`.
pub fn put_bytes32(out: &mut BytesMut, b: &[u8]) {
    out.put_u32_le(u32::try_from(b.len()).expect("fields are below 4 GiB"));
    out.put_slice(b);
}

/// Writes an optional u64.
pub fn put_opt_u64(out: &mut BytesMut, v: Option<u64>) {
    match v {
        None => out.put_u8(0),
        Some(v) => {
            out.put_u8(1);
            out.put_u64_le(v);
        }
    }
}
