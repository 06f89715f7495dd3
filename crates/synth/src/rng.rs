//! Per-entity random streams. Every member, provider and file gets its own
//! ChaCha stream derived from (seed, domain, index), so an entity's history
//! never depends on the order in which other entities were generated. This
//! is what lets the generator stream with bounded memory and still be
//! byte-for-byte deterministic.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

pub(crate) type Stream = ChaCha8Rng;

#[derive(Clone, Copy)]
#[repr(u64)]
pub(crate) enum Domain {
    Member = 1,
    Provider = 2,
    Fraud = 3,
    DiagnosisRef = 4,
    Ring = 5,
    ProviderFile = 6,
}

pub(crate) fn stream(seed: u64, domain: Domain, index: u64) -> Stream {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    key[8..16].copy_from_slice(&(domain as u64).to_le_bytes());
    key[16..24].copy_from_slice(&index.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}
