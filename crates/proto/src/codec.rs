//! The one codec: big-endian integers, length-prefixed byte strings, every
//! length checked against its limit before anything is allocated.

use thiserror::Error;

/// Why a frame could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended in the middle of a field.
    #[error("frame is truncated")]
    Truncated,
    /// The frame type byte names no known frame.
    #[error("unknown frame type {0}")]
    UnknownFrame(u8),
    /// A length field exceeds the limit for that field.
    #[error("{field} is {len} long, the limit is {max}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// The length announced.
        len: usize,
        /// The limit for the field.
        max: usize,
    },
    /// Bytes were left over after the frame.
    #[error("frame has {0} trailing bytes")]
    TrailingBytes(usize),
    /// A field holds a value outside its domain.
    #[error("invalid {0}")]
    Invalid(&'static str),
}

/// Appends encoded fields to a buffer.
#[derive(Default)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub(crate) fn with_tag(tag: u8) -> Self {
        Self { buf: vec![tag] }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }

    pub(crate) fn u8(&mut self, value: u8) {
        self.buf.push(value);
    }

    pub(crate) fn u16(&mut self, value: u16) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn u32(&mut self, value: u32) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn u64(&mut self, value: u64) {
        self.buf.extend_from_slice(&value.to_be_bytes());
    }

    pub(crate) fn array(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// A byte string with a 32-bit length prefix. Callers keep lengths within
    /// the limits, which are far below `u32::MAX`.
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(bytes);
    }

    /// A list with a 32-bit count prefix.
    pub(crate) fn list<T>(&mut self, items: &[T], mut each: impl FnMut(&mut Self, &T)) {
        self.u32(u32::try_from(items.len()).unwrap_or(u32::MAX));
        for item in items {
            each(self, item);
        }
    }
}

/// Reads fields from a received frame.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn length(&mut self, field: &'static str, max: usize) -> Result<usize, DecodeError> {
        let len = self.u32()? as usize;
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        Ok(len)
    }

    pub(crate) fn bytes(&mut self, field: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        let len = self.length(field, max)?;
        Ok(self.take(len)?.to_vec())
    }

    pub(crate) fn string(&mut self, field: &'static str, max: usize) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes(field, max)?).map_err(|_| DecodeError::Invalid(field))
    }

    pub(crate) fn list<T>(
        &mut self,
        field: &'static str,
        max: usize,
        mut each: impl FnMut(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let count = self.length(field, max)?;
        // Each item takes at least one byte, so a count larger than the
        // remaining input is a lie; refuse it before allocating.
        if count > self.rest.len() {
            return Err(DecodeError::Truncated);
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(each(self)?);
        }
        Ok(items)
    }

    pub(crate) fn option<T>(
        &mut self,
        each: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        match self.u8()? {
            0 => Ok(None),
            1 => each(self).map(Some),
            _ => Err(DecodeError::Invalid("option flag")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn length_over_limit_is_refused_before_reading() {
        let mut writer = Writer::default();
        writer.u32(1_000_000);
        let bytes = writer.finish();
        let mut reader = Reader::new(&bytes);
        assert_eq!(
            reader.bytes("payload", 10),
            Err(DecodeError::TooLong { field: "payload", len: 1_000_000, max: 10 })
        );
    }

    #[test]
    fn list_count_larger_than_input_is_truncated() {
        let mut writer = Writer::default();
        writer.u32(500);
        let bytes = writer.finish();
        let result = Reader::new(&bytes).list("ids", 1000, |r| r.u64());
        assert_eq!(result, Err(DecodeError::Truncated));
    }
}
