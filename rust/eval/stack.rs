//! Evaluation never overflows the caller's stack, whatever thread it runs on.
//!
//! `Evaluator::eval` recurses once per level of the expression tree, and the tree
//! height of every compiled policy is known at load (`CompiledSet::max_height`,
//! bounded by `lower::MAX_EXPR_DEPTH`). Before evaluating, `guarded` compares the
//! stack left on this thread with what that height can use at most, and runs the
//! evaluation on a fresh, large enough stack segment when it does not fit (only
//! deep policies on small thread stacks ever take that path).

/// Most stack one level of `Evaluator::eval` (with the value helpers it calls) may
/// use. Checked by `tests::frame_fits_budget`, which measures the real figure.
pub const FRAME_BYTES: usize = if cfg!(debug_assertions) {
    16 << 10
} else {
    4 << 10
};
/// Room for the caller's frames between the check and the first `eval`.
const BASE_BYTES: usize = 64 << 10;

/// Stack an evaluation of expressions up to `height` levels deep may need.
#[inline]
pub fn needed(height: usize) -> usize {
    BASE_BYTES + height * FRAME_BYTES
}

/// Run `f`, on a new stack segment if this thread's remaining stack is too small
/// for expressions `height` levels deep.
#[inline]
pub fn guarded<R>(height: usize, f: impl FnOnce() -> R) -> R {
    let need = needed(height);
    match stacker::remaining_stack() {
        Some(left) if left >= need => f(),
        _ => stacker::grow(need + BASE_BYTES, f),
    }
}

#[cfg(test)]
pub mod probe {
    //! Test-only: the lowest stack position reached by `eval`.
    use std::cell::Cell;

    thread_local! {
        pub static LOWEST: Cell<usize> = const { Cell::new(usize::MAX) };
    }

    #[inline]
    pub fn record() {
        if let Some(left) = stacker::remaining_stack() {
            LOWEST.with(|l| l.set(l.get().min(left)));
        }
    }
}
