//! Context string values resolved before, found again by object.

use pyo3::prelude::*;
use pyo3::types::PyString;

use crate::value::Sym;

const SLOTS: usize = 256;

/// The symbols of `str` objects seen as context values.
///
/// Agents pass the same few string objects again and again (an intent, a
/// destination host: mostly literals in the caller's code, which Python
/// interns). Resolving one costs a UTF-8 view, a hash of its bytes and a probe
/// of the interner, about 180 instructions; a hit here is one pointer compare.
///
/// Direct-mapped by address. A slot holds a strong reference to its object, so
/// the address cannot be reused by another object while it is cached. Only
/// symbols of the engine's interner are kept: an engine's interner only grows,
/// so a text's symbol never changes, and a caller checks a hit is below its own
/// snapshot's interner (`Locals::from_snapshot`) before using it. A text not
/// in the interner is remembered as absent from its first `n` symbols, which
/// holds for every snapshot whose interner is no longer than that.
#[derive(Default)]
pub(crate) struct StrCache {
    slots: Vec<Option<(Py<PyString>, Seen)>>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    /// The text's symbol in the engine's interner.
    Sym(Sym),
    /// Not among the interner's first `n` symbols.
    AbsentBelow(u32),
}

impl StrCache {
    #[inline]
    fn slot(obj: &Bound<'_, PyString>) -> usize {
        // Objects are 16-byte aligned; two address ranges folded spread them.
        let a = obj.as_ptr() as usize;
        ((a >> 4) ^ (a >> 12)) & (SLOTS - 1)
    }

    #[inline]
    pub(crate) fn get(&self, obj: &Bound<'_, PyString>) -> Option<Seen> {
        match self.slots.get(Self::slot(obj))? {
            Some((o, seen)) if o.as_ptr() == obj.as_ptr() => Some(*seen),
            _ => None,
        }
    }

    /// Remember what `obj` resolved to, replacing (and releasing) whatever held its slot.
    pub(crate) fn put(&mut self, obj: &Bound<'_, PyString>, seen: Seen) {
        if self.slots.is_empty() {
            self.slots.resize_with(SLOTS, || None);
        }
        self.slots[Self::slot(obj)] = Some((obj.clone().unbind(), seen));
    }
}
