//! Finding a key's current row: the [`CurrentIndex`], and the hasher of
//! the maps keyed by key hash.
//!
//! Key hashes are BLAKE3 output, already uniformly distributed, so the
//! maps keyed by them take the hash's low bits ([`PrehashedHasher`])
//! rather than hashing them again, a million times a merge.
//!
//! The current rows are indexed by hash tables of 4-byte row numbers into
//! [`Existing`], not a map of 16-byte key copies; the keys are sharded
//! over one table per thread by a bit of their high half, so the tables
//! are built at once, each by its own thread. A snapshot is often exported
//! in key order, and a table keeps most of its current rows in the order
//! they came, so [`CurrentIndex::get_near`] tries the row after the
//! previous match first: a source in the table's row order is matched by
//! sequential reads rather than random ones.

use std::collections::HashMap;

use super::existing::Existing;
use crate::hash::Hash128;
use crate::{Error, Result, key_hash_hex};

/// Hashes an already uniformly distributed BLAKE3-derived key by taking
/// its low bits: no second hash over a million keys.
#[derive(Default, Clone, Copy)]
pub(super) struct PrehashedHasher(u64);

impl std::hash::Hasher for PrehashedHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
    #[inline]
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
    #[inline]
    fn write_i64(&mut self, v: i64) {
        self.0 = v as u64;
    }
}

/// A hasher for maps keyed by key hashes (or surrogate keys).
pub(super) type Prehashed = std::hash::BuildHasherDefault<PrehashedHasher>;
/// A map keyed by key hash.
pub(super) type KeyMap<V> = HashMap<Hash128, V, Prehashed>;

/// The current row of each key: tables of bare row numbers into
/// [`Existing`], hashed by the key hash's low bits, so an entry takes 4
/// bytes rather than a copy of the 16-byte key (10 million keys: about
/// 90 MB instead of 550). The keys are sharded over one table per core by
/// a bit of their high half, so the tables are built at once.
pub(super) struct CurrentIndex {
    shards: Vec<hashbrown::HashTable<u32>>,
    /// The rows indexed: the first `n` of `ex`.
    n: usize,
}

impl CurrentIndex {
    /// Indexes the first `n` rows of `ex`; two current rows of one key
    /// break the SCD2 invariant.
    pub(super) fn of(ex: &Existing, n: usize) -> Result<Self> {
        let count = parallel::threads();
        let keys = &ex.key[..n];
        let shards = parallel::on_threads((0..count).collect(), |shard| {
            let mut table = hashbrown::HashTable::with_capacity(n / count + n / 64);
            for (i, &k) in keys.iter().enumerate().filter(|&(_, &k)| Self::shard_of(k, count) == shard) {
                match table.entry(k as u64, |&r: &u32| ex.key[r as usize] == k, |&r: &u32| ex.key[r as usize] as u64) {
                    hashbrown::hash_table::Entry::Occupied(_) => {
                        return Err(Error::Invariant {
                            key_hash: key_hash_hex(k),
                            reason: "two current rows in the table".into(),
                        });
                    }
                    hashbrown::hash_table::Entry::Vacant(v) => {
                        v.insert(i as u32);
                    }
                }
            }
            Ok(table)
        })?;
        Ok(Self { shards: shards.into_iter().collect::<Result<_>>()?, n })
    }

    /// The shard of key `k`: from bits the tables' hashing does not use.
    #[inline]
    fn shard_of(k: Hash128, count: usize) -> usize {
        ((k >> 64) as u64 % count as u64) as usize
    }

    /// The current row of key `k`, if it has one.
    #[inline]
    pub(super) fn get(&self, ex: &Existing, k: Hash128) -> Option<u32> {
        let shard = &self.shards[Self::shard_of(k, self.shards.len())];
        shard.find(k as u64, |&r| ex.key[r as usize] == k).copied()
    }

    /// As [`get`](Self::get), trying row `guess` (if indexed) first, so
    /// that a source in the table's row order is matched by sequential
    /// reads rather than the table's random ones.
    #[inline]
    pub(super) fn get_near(&self, ex: &Existing, k: Hash128, guess: usize) -> Option<u32> {
        if guess < self.n && ex.key[guess] == k {
            return Some(guess as u32);
        }
        self.get(ex, k)
    }
}
