//! Apple Data Compression (ADC), the codec of `UDCO` DMG chunks: a byte stream of plain runs
//! and back-references into what was already decoded, with no header and no checksum.
//!
//! Each item starts with one byte `b`:
//!
//! | `b` | item | length | distance back (1 = the byte before) |
//! |---|---|---|---|
//! | `1xxxxxxx` | plain run of the next `len` bytes | `(b & 0x7f) + 1` (1–128) | — |
//! | `01xxxxxx` `hi` `lo` | 3-byte back-reference | `(b & 0x3f) + 4` (4–67) | `(hi << 8 \| lo) + 1` (1–65536) |
//! | `00xxxxyy` `lo` | 2-byte back-reference | `((b >> 2) & 0x0f) + 3` (3–18) | `(yy << 8 \| lo) + 1` (1–1024) |
//!
//! A reference may overlap what it writes (distance below length repeats the last bytes), so
//! it is copied byte by byte.

use std::fmt;

/// Why an ADC stream could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdcError {
    /// A back-reference reaches before the first decoded byte.
    BeforeStart {
        /// Offset of the item in the compressed stream.
        at: usize,
        /// How far back it points.
        distance: usize,
        /// How many bytes were decoded when it was met.
        decoded: usize,
    },
    /// The stream ends inside an item (a run or a reference missing its bytes).
    Truncated {
        /// Offset of the item in the compressed stream.
        at: usize,
    },
    /// The stream decodes to more bytes than allowed.
    TooLong {
        /// The allowed size.
        limit: usize,
    },
}

impl fmt::Display for AdcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdcError::BeforeStart {
                at,
                distance,
                decoded,
            } => write!(
                f,
                "ADC back-reference at byte {at} points {distance} bytes back, before the start \
                 (only {decoded} bytes decoded)"
            ),
            AdcError::Truncated { at } => {
                write!(f, "ADC stream ends inside the item at byte {at}")
            }
            AdcError::TooLong { limit } => {
                write!(f, "ADC stream decodes to more than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for AdcError {}

/// Decodes the whole ADC stream `src`, refusing to produce more than `limit` bytes. The
/// output is at most `limit` bytes whatever the input says, so a hostile stream costs no more
/// memory than its caller allowed.
pub fn decode(src: &[u8], limit: usize) -> Result<Vec<u8>, AdcError> {
    // Reserve what the caller expects (bounded by the caller), not what the stream claims.
    let mut out: Vec<u8> = Vec::with_capacity(limit.min(src.len().saturating_mul(67)));
    let mut i = 0usize;
    while i < src.len() {
        let at = i;
        let b = src[i];
        if b & 0x80 != 0 {
            let len = usize::from(b & 0x7f) + 1;
            let run = src
                .get(i + 1..i + 1 + len)
                .ok_or(AdcError::Truncated { at })?;
            if out.len() + len > limit {
                return Err(AdcError::TooLong { limit });
            }
            out.extend_from_slice(run);
            i += 1 + len;
            continue;
        }
        let (len, distance) = if b & 0x40 != 0 {
            let hi = *src.get(i + 1).ok_or(AdcError::Truncated { at })?;
            let lo = *src.get(i + 2).ok_or(AdcError::Truncated { at })?;
            i += 3;
            (
                usize::from(b & 0x3f) + 4,
                (usize::from(hi) << 8 | usize::from(lo)) + 1,
            )
        } else {
            let lo = *src.get(i + 1).ok_or(AdcError::Truncated { at })?;
            i += 2;
            (
                usize::from((b >> 2) & 0x0f) + 3,
                (usize::from(b & 0x03) << 8 | usize::from(lo)) + 1,
            )
        };
        if distance > out.len() {
            return Err(AdcError::BeforeStart {
                at,
                distance,
                decoded: out.len(),
            });
        }
        if out.len() + len > limit {
            return Err(AdcError::TooLong { limit });
        }
        let from = out.len() - distance;
        for k in 0..len {
            let byte = out[from + k];
            out.push(byte);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_and_both_references() {
        // "abc", then 2-byte ref (len 3, distance 3) -> "abc", then 3-byte ref (len 4,
        // distance 1) -> "cccc", then a run "Z".
        let s = [
            0x82, b'a', b'b', b'c', 0x00, 0x02, 0x40, 0x00, 0x00, 0x80, b'Z',
        ];
        assert_eq!(decode(&s, 100).unwrap(), b"abcabcccccZ");
    }

    #[test]
    fn overlapping_reference_repeats() {
        // "x" then 2-byte ref len 18 (0x3c), distance 1.
        let s = [0x80, b'x', 0x3c, 0x00];
        assert_eq!(decode(&s, 100).unwrap(), vec![b'x'; 19]);
    }

    #[test]
    fn reference_before_the_start_is_refused() {
        let e = decode(&[0x80, b'x', 0x00, 0x01], 100).unwrap_err();
        assert_eq!(
            e,
            AdcError::BeforeStart {
                at: 2,
                distance: 2,
                decoded: 1
            }
        );
        assert!(e.to_string().contains("before the start"), "{e}");
        assert!(decode(&[0x40, 0xff, 0xff], 100).is_err());
    }

    #[test]
    fn truncated_items_and_the_limit() {
        assert_eq!(
            decode(&[0x85, 1, 2], 100),
            Err(AdcError::Truncated { at: 0 })
        );
        assert_eq!(
            decode(&[0x80, 1, 0x40, 0], 100),
            Err(AdcError::Truncated { at: 2 })
        );
        assert_eq!(
            decode(&[0x80, 1, 0x00], 100),
            Err(AdcError::Truncated { at: 2 })
        );
        // 1 byte, then 10 references of 67 bytes each: 671 bytes, over a limit of 600.
        let mut s = vec![0x80, 7];
        for _ in 0..10 {
            s.extend_from_slice(&[0x7f, 0, 0]);
        }
        assert_eq!(decode(&s, 671).unwrap().len(), 671);
        assert_eq!(decode(&s, 600), Err(AdcError::TooLong { limit: 600 }));
    }
}
