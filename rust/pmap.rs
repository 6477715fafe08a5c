//! A persistent hash map: hash-sharded, each shard behind its own `Arc`.
//!
//! Cloning is one refcount; a change copies only the shards it touches (copy on
//! write), so a snapshot that differs from the last by a few entries costs
//! O(shards + touched shard sizes), about O(sqrt n), instead of O(n). A lookup is
//! one hash, one shard index and one probe of a small table: as fast as a flat
//! map, unlike a trie (HAMT) whose lookups hop through several nodes. The shards
//! are `hashbrown::HashTable`s so that the one hash picks the shard and probes
//! it (with a map per shard, a key was hashed twice: ~20 instructions more for a
//! uid's text, three of which every request by strings looks up).

use std::borrow::Borrow;
use std::hash::{BuildHasher, Hash};
use std::sync::Arc;

use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;

/// Shards hold about this many entries at most before the map is resharded.
const MIN_BITS: u32 = 4;

/// One shard: a table of entries, shared between snapshots until one writes to it.
type Shard<K, V> = Arc<HashTable<(K, V)>>;

pub struct PMap<K, V> {
    shards: Arc<Vec<Shard<K, V>>>,
    bits: u32,
    len: usize,
}

impl<K, V> Clone for PMap<K, V> {
    fn clone(&self) -> Self {
        PMap {
            shards: self.shards.clone(),
            bits: self.bits,
            len: self.len,
        }
    }
}

impl<K: Hash + Eq + Clone, V: Clone> Default for PMap<K, V> {
    fn default() -> Self {
        Self::with_bits(MIN_BITS)
    }
}

impl<K: std::fmt::Debug, V> std::fmt::Debug for PMap<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PMap(len={}, shards={})", self.len, self.shards.len())
    }
}

#[inline]
fn hash_of<Q: Hash + ?Sized>(k: &Q) -> u64 {
    FxBuildHasher.hash_one(k)
}

/// Shard bits for `n` entries: about sqrt(n) shards of about sqrt(n) entries.
fn bits_for(n: usize) -> u32 {
    let log2 = usize::BITS - n.max(1).leading_zeros();
    log2.div_ceil(2).max(MIN_BITS)
}

impl<K: Hash + Eq + Clone, V: Clone> PMap<K, V> {
    fn with_bits(bits: u32) -> Self {
        PMap {
            shards: Arc::new((0..1usize << bits).map(|_| Arc::default()).collect()),
            bits,
            len: 0,
        }
    }

    /// The shard of a key hashed to `h`: the hash re-mixed, so a shard's keys do
    /// not all share the top hash bits the shard's own table uses for its control bytes.
    #[inline]
    fn shard_of(&self, h: u64) -> usize {
        (h.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    #[inline]
    pub fn get<Q>(&self, k: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let h = hash_of(k);
        self.shards[self.shard_of(h)]
            .find(h, |(x, _)| x.borrow() == k)
            .map(|(_, v)| v)
    }

    #[inline]
    pub fn contains_key<Q>(&self, k: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get(k).is_some()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn shard_mut(&mut self, i: usize) -> &mut HashTable<(K, V)> {
        Arc::make_mut(&mut Arc::make_mut(&mut self.shards)[i])
    }

    pub fn insert(&mut self, k: K, v: V) -> Option<V> {
        let h = hash_of(&k);
        let i = self.shard_of(h);
        match self
            .shard_mut(i)
            .entry(h, |(x, _)| *x == k, |(x, _)| hash_of(x))
        {
            hashbrown::hash_table::Entry::Occupied(mut e) => {
                return Some(std::mem::replace(&mut e.get_mut().1, v));
            }
            hashbrown::hash_table::Entry::Vacant(e) => {
                e.insert((k, v));
            }
        }
        self.len += 1;
        if bits_for(self.len) > self.bits + 1 {
            self.reshard(bits_for(self.len));
        }
        None
    }

    pub fn remove<Q>(&mut self, k: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let h = hash_of(k);
        let i = self.shard_of(h);
        // Look before writing: a miss must not copy the shard.
        self.shards[i].find(h, |(x, _)| x.borrow() == k)?;
        let entry = self
            .shard_mut(i)
            .find_entry(h, |(x, _)| x.borrow() == k)
            .ok()?;
        let ((_, old), _) = entry.remove();
        self.len -= 1;
        Some(old)
    }

    /// Mutable access to an entry, copying its shard if another snapshot shares it.
    pub fn get_mut<Q>(&mut self, k: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let h = hash_of(k);
        let i = self.shard_of(h);
        self.shards[i].find(h, |(x, _)| x.borrow() == k)?;
        self.shard_mut(i)
            .find_mut(h, |(x, _)| x.borrow() == k)
            .map(|(_, v)| v)
    }

    /// Make room for `more` entries (resharding once, not at every 4x of growth).
    pub fn reserve(&mut self, more: usize) {
        let bits = bits_for(self.len + more);
        if bits > self.bits {
            self.reshard(bits);
        }
    }

    /// Rebuild with `bits` shard bits (after growth: amortised O(1) an insert).
    fn reshard(&mut self, bits: u32) {
        let mut next = Self::with_bits(bits);
        let per = self.len >> bits;
        {
            let shards = Arc::make_mut(&mut next.shards);
            for s in shards.iter_mut() {
                Arc::make_mut(s).reserve(per + per / 4, |(k, _)| hash_of(k));
            }
        }
        for (k, v) in self.iter() {
            let h = hash_of(k);
            let i = next.shard_of(h);
            next.shard_mut(i)
                .insert_unique(h, (k.clone(), v.clone()), |(x, _)| hash_of(x));
        }
        next.len = self.len;
        *self = next;
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards
            .iter()
            .flat_map(|s| s.iter().map(|(k, v)| (k, v)))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }
}

impl<K: Hash + Eq + Clone, V: Clone> FromIterator<(K, V)> for PMap<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(it: I) -> Self {
        let items: Vec<(K, V)> = it.into_iter().collect();
        let mut m = Self::with_bits(bits_for(items.len()));
        for (k, v) in items {
            m.insert(k, v);
        }
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustc_hash::FxHashMap;

    #[test]
    fn clone_is_isolated_from_later_writes() {
        let mut a: PMap<u32, u32> = (0..1000).map(|i| (i, i)).collect();
        let b = a.clone();
        a.insert(5, 50);
        a.remove(&6);
        a.insert(5000, 1);
        assert_eq!(b.get(&5), Some(&5));
        assert_eq!(b.get(&6), Some(&6));
        assert_eq!(b.get(&5000), None);
        assert_eq!(a.get(&5), Some(&50));
        assert_eq!(a.get(&6), None);
        assert_eq!((a.len(), b.len()), (1000, 1000));
    }

    #[test]
    fn a_write_copies_only_one_shard() {
        let mut a: PMap<u32, u32> = (0..10_000).map(|i| (i, i)).collect();
        let b = a.clone();
        a.insert(3, 4);
        let shared = a
            .shards
            .iter()
            .zip(b.shards.iter())
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert_eq!(shared, a.shards.len() - 1);
    }

    #[test]
    fn grows_and_matches_a_flat_map() {
        let mut m: PMap<u64, u64> = PMap::default();
        let mut flat = FxHashMap::default();
        for i in 0..50_000u64 {
            let k = i.wrapping_mul(7919) % 20_011;
            if i % 3 == 0 {
                assert_eq!(m.remove(&k), flat.remove(&k));
            } else {
                assert_eq!(m.insert(k, i), flat.insert(k, i));
            }
        }
        assert_eq!(m.len(), flat.len());
        for (k, v) in &flat {
            assert_eq!(m.get(k), Some(v));
        }
        assert_eq!(m.iter().count(), flat.len());
        assert!(m.shards.len() > 1 << MIN_BITS);
    }
}
