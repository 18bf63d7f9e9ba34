//! A drive file's hashes, taken while its bytes stream in and kept between
//! fragments: [`ContentHasher`] is a value the server stores with each committed
//! fragment (it serializes), so a restart resumes the hashes where the upload is,
//! and no byte is ever read back from disk to hash it.
//!
//! SHA-256 is sha2's compression function behind our own small buffer, since
//! sha2's hasher does not expose its state; QuickXorHash is
//! [`crate::quickxor::QuickXorHash`].
//!
//! ```
//! use upsession_core::drive::ContentHasher;
//!
//! let mut h = ContentHasher::default();
//! h.update(b"hello ");
//! // Stored with the fragment, read back after a restart…
//! let mut h: ContentHasher = serde_json::from_str(&serde_json::to_string(&h).unwrap()).unwrap();
//! h.update(b"world");
//! let hashes = h.finish();
//! assert_eq!(
//!     hashes.sha256_hash,
//!     "B94D27B9934D3E08A52E52D7DA7DABFAC484EFE37A5380EE9088F7ACE2EFCDE9"
//! );
//! ```

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::{Hashes, sha256_hex};
use crate::quickxor::QuickXorHash;

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// SHA-256 whose state is a plain value.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Sha256 {
    state: [u32; 8],
    /// Bytes of an unfinished 64-byte block.
    pending: Vec<u8>,
    len: u64,
}

impl Default for Sha256 {
    fn default() -> Self {
        Self {
            state: SHA256_IV,
            pending: Vec::with_capacity(64),
            len: 0,
        }
    }
}

impl Sha256 {
    fn compress(&mut self, blocks: &[u8]) {
        use sha2::digest::generic_array::GenericArray;
        debug_assert!(blocks.len().is_multiple_of(64));
        // sha2 takes its own block type: each block is viewed as one in place (a
        // copy into a batch of them cost a tenth of a client's CPU).
        for block in blocks.chunks_exact(64) {
            sha2::compress256(
                &mut self.state,
                std::slice::from_ref(GenericArray::from_slice(block)),
            );
        }
    }

    fn update(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.pending.is_empty() {
            let take = (64 - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() < 64 {
                return;
            }
            let block = std::mem::take(&mut self.pending);
            self.compress(&block);
            self.pending = block;
            self.pending.clear();
        }
        let whole = bytes.len() / 64 * 64;
        self.compress(&bytes[..whole]);
        self.pending.extend_from_slice(&bytes[whole..]);
    }

    fn finish(&self) -> [u8; 32] {
        let mut last = self.clone();
        let bits = self.len.wrapping_mul(8);
        let mut tail = std::mem::take(&mut last.pending);
        tail.push(0x80);
        while tail.len() % 64 != 56 {
            tail.push(0);
        }
        tail.extend_from_slice(&bits.to_be_bytes());
        last.compress(&tail);
        let mut out = [0u8; 32];
        for (o, word) in out.chunks_exact_mut(4).zip(last.state) {
            o.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
}

/// A file's QuickXorHash and SHA-256 (or its SHA-256 alone:
/// [`ContentHasher::sha256_only`]), taken piece by piece in order; see the
/// [module documentation](self).
#[derive(Clone, Debug)]
pub struct ContentHasher {
    quick_xor: Option<QuickXorHash>,
    sha256: Sha256,
}

impl Default for ContentHasher {
    /// Both hashes, as a drive file needs.
    fn default() -> Self {
        Self {
            quick_xor: Some(QuickXorHash::new()),
            sha256: Sha256::default(),
        }
    }
}

impl PartialEq for ContentHasher {
    fn eq(&self, other: &Self) -> bool {
        self.sha256 == other.sha256
            && self.quick_xor.as_ref().map(QuickXorHash::state)
                == other.quick_xor.as_ref().map(QuickXorHash::state)
    }
}

impl Eq for ContentHasher {}

impl ContentHasher {
    /// The SHA-256 alone (an attachment's, whose answer carries no QuickXorHash).
    #[must_use]
    pub fn sha256_only() -> Self {
        Self {
            quick_xor: None,
            sha256: Sha256::default(),
        }
    }

    /// A hasher of the same kind (both hashes, or the SHA-256 alone) with nothing
    /// taken in.
    #[must_use]
    pub fn fresh(&self) -> Self {
        if self.quick_xor.is_some() {
            Self::default()
        } else {
            Self::sha256_only()
        }
    }

    /// Takes in the next `bytes` of the file.
    pub fn update(&mut self, bytes: &[u8]) {
        if let Some(q) = &mut self.quick_xor {
            q.update(bytes);
        }
        self.sha256.update(bytes);
    }

    /// The SHA-256 of everything taken in, lowercase hex.
    #[must_use]
    pub fn sha256_lower_hex(&self) -> String {
        self.sha256
            .finish()
            .iter()
            .fold(String::with_capacity(64), |mut s, b| {
                use std::fmt::Write as _;
                let _ = write!(s, "{b:02x}");
                s
            })
    }

    /// The QuickXorHash of everything taken in (base64), unless
    /// [`ContentHasher::sha256_only`].
    #[must_use]
    pub fn quick_xor_base64(&self) -> Option<String> {
        self.quick_xor.as_ref().map(QuickXorHash::finish_base64)
    }

    /// Bytes taken in so far.
    #[must_use]
    pub fn len(&self) -> u64 {
        self.sha256.len
    }

    /// Whether nothing was taken in.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sha256.len == 0
    }

    /// The hashes of everything taken in, as a driveItem carries them (the
    /// QuickXorHash empty when [`ContentHasher::sha256_only`]).
    #[must_use]
    pub fn finish(&self) -> Hashes {
        Hashes {
            quick_xor_hash: self.quick_xor_base64().unwrap_or_default(),
            sha256_hash: sha256_hex(&self.sha256.finish()),
        }
    }
}

/// The stored form: small (about 300 bytes), and checked when read back.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Stored {
    len: u64,
    /// QuickXorHash's 160 lanes, base64 (absent: the SHA-256 alone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    quick_xor: Option<String>,
    /// SHA-256's eight words, then its unfinished block, base64.
    sha256: String,
}

impl Serialize for ContentHasher {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = self.sha256.len;
        let mut sha = Vec::with_capacity(32 + self.sha256.pending.len());
        for word in self.sha256.state {
            sha.extend_from_slice(&word.to_be_bytes());
        }
        sha.extend_from_slice(&self.sha256.pending);
        Stored {
            len,
            quick_xor: self.quick_xor.as_ref().map(|q| {
                let (lanes, xor_len) = q.state();
                debug_assert_eq!(xor_len, len);
                STANDARD.encode(lanes)
            }),
            sha256: STANDARD.encode(sha),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ContentHasher {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let stored = Stored::deserialize(deserializer)?;
        let quick_xor = match &stored.quick_xor {
            None => None,
            Some(lanes) => {
                let lanes = STANDARD.decode(lanes).map_err(D::Error::custom)?;
                Some(
                    QuickXorHash::from_state(&lanes, stored.len)
                        .ok_or_else(|| D::Error::custom("QuickXorHash state is not 160 lanes"))?,
                )
            }
        };
        let sha = STANDARD.decode(&stored.sha256).map_err(D::Error::custom)?;
        let pending_len = usize::try_from(stored.len % 64).unwrap_or(0);
        if sha.len() != 32 + pending_len {
            return Err(D::Error::custom(
                "SHA-256 state does not match the length hashed",
            ));
        }
        let mut state = [0u32; 8];
        for (s, word) in state.iter_mut().zip(sha.chunks_exact(4)) {
            *s = u32::from_be_bytes(word.try_into().unwrap_or_default());
        }
        Ok(Self {
            quick_xor,
            sha256: Sha256 {
                state,
                pending: sha[32..].to_vec(),
                len: stored.len,
            },
        })
    }
}

#[cfg(test)]
#[allow(clippy::pedantic)] // test code favours brevity over pedantry
mod tests {
    use super::*;
    use proptest::prelude::*;
    use sha2::Digest as _;

    #[test]
    fn published_sha256_vectors() {
        // FIPS 180-4's examples, and one a million bytes long.
        for (input, hex) in [
            (
                b"".to_vec(),
                "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
            ),
            (
                b"abc".to_vec(),
                "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD",
            ),
            (
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".to_vec(),
                "248D6A61D20638B8E5C026930C3E6039A33CE45964FF2167F6ECEDD419DB06C1",
            ),
            (
                vec![b'a'; 1_000_000],
                "CDC76E5C9914FB9281A1C7E284D73E67F1809A48A497200E046D39CCC7112CD0",
            ),
        ] {
            let mut h = ContentHasher::default();
            h.update(&input);
            assert_eq!(h.finish().sha256_hash, hex);
        }
    }

    proptest! {
        #[test]
        fn any_split_and_any_restart_give_the_hashes_of_the_whole(
            bytes in proptest::collection::vec(any::<u8>(), 0..3000),
            cuts in proptest::collection::vec(any::<usize>(), 0..6),
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (bytes.len() + 1)).collect();
            cuts.sort_unstable();
            let mut h = ContentHasher::default();
            let mut sha_only = ContentHasher::sha256_only();
            let mut from = 0;
            for cut in cuts.into_iter().chain([bytes.len()]) {
                h.update(&bytes[from..cut]);
                sha_only.update(&bytes[from..cut]);
                from = cut;
                // Stored and read back at every fragment boundary.
                for h in [&mut h, &mut sha_only] {
                    let json = serde_json::to_string(&*h).unwrap();
                    let back: ContentHasher = serde_json::from_str(&json).unwrap();
                    prop_assert_eq!(&back, &*h);
                    *h = back;
                }
            }
            prop_assert_eq!(sha_only.quick_xor_base64(), None);
            prop_assert_eq!(
                sha_only.sha256_lower_hex(),
                sha256_hex(&sha2::Sha256::digest(&bytes)).to_lowercase()
            );
            prop_assert_eq!(h.len(), bytes.len() as u64);
            let hashes = h.finish();
            // Against independent implementations: sha2's own hasher, the
            // quickxorhash crate.
            prop_assert_eq!(hashes.sha256_hash, sha256_hex(&sha2::Sha256::digest(&bytes)));
            let mut other = quickxorhash::QuickXorHash::new();
            other.update(&bytes);
            prop_assert_eq!(hashes.quick_xor_hash, STANDARD.encode(other.finalize()));
        }
    }

    #[test]
    fn a_damaged_state_is_refused() {
        let mut h = ContentHasher::default();
        h.update(b"abc");
        let mut json: serde_json::Value = serde_json::to_value(&h).unwrap();
        json["len"] = 4.into();
        assert!(serde_json::from_value::<ContentHasher>(json.clone()).is_err());
        json["len"] = 3.into();
        json["quickXor"] = "AAAA".into();
        assert!(serde_json::from_value::<ContentHasher>(json).is_err());
    }
}
