//! Reading rows of A in place ([`ARows::RowMajor`](super::ARows)) without
//! rebuilding their addresses every step.
//!
//! A micro-kernel that reads R rows of A in place needs, every step, one
//! value from each row: R addresses `a + i·stride + p`. x86 addressing folds
//! `base + index·{1, 2, 4, 8}` into a load for free, so one pointer per three
//! rows, with the stride in bytes as the index, reaches rows `3g`, `3g + 1`
//! and `3g + 2` as `group[g] + stride·{0, 1, 2}`: R/3 pointer increments a
//! step, no other arithmetic.
//!
//! v1 kept a pointer per row and let LLVM be: its loop strength reduction
//! turned the pointers back into one index and rebuilt the 12 addresses of
//! the AVX-512 tile each step with a chain of a dozen dependent `add`/`lea`,
//! integer work that competes with the FMAs for ports (gpt-tiny's forward
//! products at 72–75% of the FMA peak on 1 thread, 75–79% with v2). v2 (this)
//! advances each group pointer with an `add` in inline assembly, which LLVM
//! cannot see through and so leaves as it is.

/// Rows of A three to a pointer: `G` group pointers for up to `3·G` rows.
pub(super) struct RowGroups<const G: usize> {
    groups: [*const f32; G],
    stride: usize,
}

impl<const G: usize> RowGroups<G> {
    /// The groups of `rows` rows of A, row `i` at `a + i·stride`. Groups past
    /// the last row point at the last row (they are never read).
    #[inline(always)]
    pub(super) fn new(a: *const f32, stride: usize, rows: usize) -> RowGroups<G> {
        RowGroups {
            // `wrapping_add` keeps the pointers plain values: only the rows
            // the caller reads need be in bounds.
            groups: std::array::from_fn(|g| a.wrapping_add((3 * g).min(rows.saturating_sub(1)) * stride)),
            stride,
        }
    }

    /// Row `i`'s value at the current step.
    ///
    /// # Safety
    /// Row `i` at the current step is readable.
    #[inline(always)]
    pub(super) unsafe fn get(&self, i: usize) -> f32 {
        // SAFETY: the caller's contract; group i / 3 points at row 3·(i / 3)
        // of the current step, and row i is i % 3 rows further.
        unsafe { *self.groups[i / 3].add((i % 3) * self.stride) }
    }

    /// Every row one step further.
    #[inline(always)]
    pub(super) fn advance(&mut self) {
        for group in &mut self.groups {
            let mut address = group.addr();
            // SAFETY: adds 4 (one f32's bytes) to a register; touches no memory.
            unsafe {
                std::arch::asm!("add {0}, 4", inout(reg) address, options(pure, nomem, nostack));
            }
            *group = group.with_addr(address);
        }
    }
}
