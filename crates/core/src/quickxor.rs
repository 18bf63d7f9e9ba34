//! OneDrive's QuickXorHash, the hash a drive item's `file.hashes.quickXorHash`
//! carries: every byte XORed into a 160-bit ring at a position that moves 11 bits
//! per byte, then the length (64 bits, little-endian) XORed into its last 8 bytes,
//! the 20 bytes in base64.
//!
//! The position repeats every 160 bytes (11 and 160 are coprime), so bytes 160
//! apart land on the same bits: [`QuickXorHash::update`] only XORs each byte into
//! one of 160 lanes (a loop the compiler vectorises), and [`QuickXorHash::finish`]
//! spreads the lanes over the ring once. That keeps the hash cheap enough to take
//! while an upload streams in.
//!
//! ```
//! use upsession_core::quickxor::QuickXorHash;
//!
//! let mut h = QuickXorHash::new();
//! h.update(b"\xb5");
//! h.update(b"\xb4");
//! assert_eq!(h.finish_base64(), "taAFAAAAAAAAAAAAAgAAAAAAAAA=");
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Bits in the hash.
const WIDTH: usize = 160;
/// Bits the position moves per byte.
const SHIFT: usize = 11;
/// Bytes after which the positions repeat.
const PERIOD: usize = WIDTH;

/// A QuickXorHash being taken: [`QuickXorHash::update`] with each piece of the
/// bytes in order, then [`QuickXorHash::finish`].
#[derive(Clone)]
pub struct QuickXorHash {
    /// Byte `i` of the input is XORed into lane `i % 160`.
    lanes: [u8; PERIOD],
    /// Bytes seen so far.
    len: u64,
}

impl std::fmt::Debug for QuickXorHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuickXorHash({} bytes)", self.len)
    }
}

impl Default for QuickXorHash {
    fn default() -> Self {
        Self::new()
    }
}

impl QuickXorHash {
    /// The hash of nothing yet.
    #[must_use]
    pub fn new() -> Self {
        Self {
            lanes: [0; PERIOD],
            len: 0,
        }
    }

    /// Takes in the next `bytes`.
    pub fn update(&mut self, mut bytes: &[u8]) {
        // The lane the next byte goes to.
        let mut lane = usize::try_from(self.len % PERIOD as u64).unwrap_or(0);
        self.len += bytes.len() as u64;
        if lane != 0 {
            let head = (PERIOD - lane).min(bytes.len());
            for (l, b) in self.lanes[lane..lane + head].iter_mut().zip(&bytes[..head]) {
                *l ^= b;
            }
            bytes = &bytes[head..];
            lane = (lane + head) % PERIOD;
        }
        debug_assert!(bytes.is_empty() || lane == 0);
        let mut blocks = bytes.chunks_exact(PERIOD);
        for block in &mut blocks {
            for (l, b) in self.lanes.iter_mut().zip(block) {
                *l ^= b;
            }
        }
        for (l, b) in self.lanes.iter_mut().zip(blocks.remainder()) {
            *l ^= b;
        }
    }

    /// The hash's state, to store: its 160 lanes and the bytes taken in.
    #[must_use]
    pub fn state(&self) -> (&[u8; PERIOD], u64) {
        (&self.lanes, self.len)
    }

    /// A hash resumed from [`QuickXorHash::state`]; `None` unless `lanes` holds 160.
    #[must_use]
    pub fn from_state(lanes: &[u8], len: u64) -> Option<Self> {
        Some(Self {
            lanes: lanes.try_into().ok()?,
            len,
        })
    }

    /// Bytes taken in so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was taken in.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The 20 bytes of the hash.
    #[must_use]
    pub fn finish(&self) -> [u8; WIDTH / 8] {
        let mut ring = [0u8; WIDTH / 8];
        for (i, &lane) in self.lanes.iter().enumerate() {
            if lane == 0 {
                continue;
            }
            let bit = (i * SHIFT) % WIDTH;
            let (at, offset) = (bit / 8, bit % 8);
            // Spread over two bytes of the ring, the second wrapping to the start.
            let wide = u16::from(lane) << offset;
            ring[at] ^= wide.to_le_bytes()[0];
            ring[(at + 1) % ring.len()] ^= wide.to_le_bytes()[1];
        }
        for (r, l) in ring[WIDTH / 8 - 8..].iter_mut().zip(self.len.to_le_bytes()) {
            *r ^= l;
        }
        ring
    }

    /// The hash as OneDrive writes it: base64 of [`QuickXorHash::finish`].
    #[must_use]
    pub fn finish_base64(&self) -> String {
        STANDARD.encode(self.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Microsoft's description, byte by byte, for comparison.
    fn by_the_description(bytes: &[u8]) -> [u8; 20] {
        let mut ring = [0u8; 20];
        let mut bit = 0;
        for &b in bytes {
            for k in 0..8 {
                if b >> k & 1 == 1 {
                    let at = (bit + k) % WIDTH;
                    ring[at / 8] ^= 1 << (at % 8);
                }
            }
            bit = (bit + SHIFT) % WIDTH;
        }
        for (r, l) in ring[12..]
            .iter_mut()
            .zip((bytes.len() as u64).to_le_bytes())
        {
            *r ^= l;
        }
        ring
    }

    #[test]
    fn published_vectors() {
        // The vectors rclone's OneDrive backend tests against (input, hash; both
        // base64).
        for (input, hash) in [
            ("", "AAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            ("Sg==", "SgAAAAAAAAAAAAAAAQAAAAAAAAA="),
            ("tbQ=", "taAFAAAAAAAAAAAAAgAAAAAAAAA="),
            ("0pZP", "0rDEEwAAAAAAAAAAAwAAAAAAAAA="),
            ("jRRDVA==", "jaDAEKgAAAAAAAAABAAAAAAAAAA="),
            ("eAV52qE=", "eChAHrQRCgAAAAAABQAAAAAAAAA="),
            ("luBZlaT6", "lgBHFipBCn0AAAAABgAAAAAAAAA="),
            ("qaApEj66lw==", "qQBFCiTgA11cAgAABwAAAAAAAAA="),
            ("/aNzzCFPS/A=", "/RjFHJgRgicsAR4ACAAAAAAAAAA="),
        ] {
            let bytes = STANDARD.decode(input).unwrap();
            let mut h = QuickXorHash::new();
            h.update(&bytes);
            assert_eq!(h.finish_base64(), hash, "{input}");
            assert_eq!(STANDARD.encode(by_the_description(&bytes)), hash, "{input}");
        }
    }

    proptest! {
        #[test]
        fn any_split_gives_the_hash_of_the_description(
            bytes in proptest::collection::vec(any::<u8>(), 0..2000),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut h = QuickXorHash::new();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                h.update(&bytes[from..cut]);
                from = cut;
            }
            prop_assert_eq!(h.len(), bytes.len() as u64);
            prop_assert_eq!(h.finish(), by_the_description(&bytes));
            // And another implementation's (the quickxorhash crate).
            let mut other = quickxorhash::QuickXorHash::new();
            other.update(&bytes);
            prop_assert_eq!(h.finish(), other.finalize());
        }
    }
}
