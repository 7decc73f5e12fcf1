//! tamer's own f32 GEMM: `C (=|+=) A·B` for strided A and B and a row-major C,
//! built the way BLIS and GotoBLAS build theirs.
//!
//! # The loops
//!
//! ```text
//! for jc in 0..n step NC            B's columns, a block that stays in L3
//!   for pc in 0..k step KC          the reduction, a block deep
//!     pack B[pc.., jc..] (KC×NC)    into panels of NR columns, k-major
//!     for ic in 0..m step MC        A's rows, a block that stays in L2
//!       pack A[ic.., pc..] (MC×KC)  into panels of MR rows, k-major (a
//!                                   row-major A is read in place instead)
//!       for jr in 0..NC step NR     one B panel, reused from L1/L2 by ...
//!         for ir in 0..MC step MR   ... every A panel of the block:
//!           micro-kernel            an MR×NR tile of C in registers, KC rank-1 updates
//! ```
//!
//! Packing copies each operand once per block into the exact order the
//! micro-kernel reads it (so its inner loop is two or three aligned vector
//! loads, MR broadcasts and MR·NR/lanes FMAs), whatever the operand's strides
//! were: a transposed operand (`Xᵀ·dY` in a linear layer's backward) costs no
//! copy beyond the packing every operand gets anyway. The exception is a
//! row-major A, whose rows the micro-kernel streams where they lie
//! (`read_a_in_place`). Panels are padded with
//! zeros to whole MR/NR, so no micro-kernel branches on edges while it
//! computes; a tile at C's edge runs a kernel instantiated for just its rows
//! and vectors, and its store is cut to the tile's real columns. A product
//! whose N would leave most of its last vectors empty is computed as
//! `Cᵀ = Bᵀ·Aᵀ` instead (`Orientation`).
//! The first KC block stores `base + product` ([`Base`]: nothing, so C may be
//! uninitialised; C's own values; or a bias row, added as the tiles are
//! stored), later blocks add to it.
//!
//! The packing buffers are thread-local and reused by every call on that
//! thread, so a GEMM allocates nothing in the steady state.
//!
//! # Kernels
//!
//! One micro-kernel per instruction set, chosen by [`Isa`] (the CPU backend's
//! `TAMER_SIMD` selection): `avx512.rs`, `avx2.rs` and the portable
//! `scalar.rs`. [`gemm_reference`] is the plain triple loop they are all
//! tested against (`tests.rs`). [`gemm`] runs on the calling thread;
//! [`gemm_threaded`] (`parallel.rs`) shares one product among the rayon
//! pool's threads.

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod pack;
mod parallel;
#[cfg(target_arch = "x86_64")]
mod row_groups;
mod scalar;
#[cfg(test)]
mod tests;

pub use parallel::{gemm_threaded, THREADED_MIN_WORK};

use super::simd::Isa;
use std::cell::RefCell;
use std::ops::Range;

/// A read-only strided matrix: element `(i, j)` is at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef {
    pub ptr: *const f32,
    pub rs: usize,
    pub cs: usize,
}

impl MatRef {
    /// The sub-matrix starting at `(i, j)`.
    ///
    /// # Safety
    /// `(i, j)` must address an element inside the allocation (or one past it).
    unsafe fn at(self, i: usize, j: usize) -> MatRef {
        MatRef {
            // SAFETY: the caller keeps (i, j) inside the matrix.
            ptr: unsafe { self.ptr.add(i * self.rs + j * self.cs) },
            ..self
        }
    }

    /// The transpose (same memory, strides swapped).
    fn t(self) -> MatRef {
        MatRef {
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// What the product is added to: `C = base + A·B`.
#[derive(Clone, Copy, Debug)]
pub enum Base {
    /// Nothing: C is overwritten and never read (it may be uninitialised).
    Zero,
    /// C's own values (`C += A·B`): C must be initialised.
    Existing,
    /// A row vector added to every row, `bias[j]` to column `j` (a linear
    /// layer's bias, added as the product is stored rather than in a pass of
    /// its own): the pointer addresses C's `n` columns' values; C may be
    /// uninitialised.
    Bias(*const f32),
}

// SAFETY: a bias is only read, by the GEMM call it is given to, whose
// caller keeps it alive and unchanged for the call (every GEMM's contract):
// its threads may share it.
unsafe impl Send for Base {}
unsafe impl Sync for Base {}

impl Base {
    /// [`Base::Existing`] when `accumulate`, else [`Base::Zero`].
    pub fn existing_if(accumulate: bool) -> Base {
        if accumulate {
            Base::Existing
        } else {
            Base::Zero
        }
    }

    /// The base of KC block `pc` of columns from `jc` of C as computed
    /// (`transposed`: Cᵀ, whose rows are C's columns): the caller's for the
    /// first block, with a bias moved to the block's first column (a bias
    /// by rows is indexed by absolute row), and what that block stored for
    /// the later ones.
    fn for_block(self, pc: usize, jc: usize, transposed: bool) -> Base {
        match self {
            _ if pc > 0 => Base::Existing,
            // SAFETY: jc < n, and the bias holds n values (Base's contract).
            Base::Bias(bias) if !transposed => Base::Bias(unsafe { bias.add(jc) }),
            base => base,
        }
    }
}

/// One MR×NR tile of C as the micro-kernel stores it: `rows ≤ MR` by
/// `cols ≤ NR` elements from `c`, element `(i, j)` at `c + i·rs + j·cs`.
/// `cs` is 1 unless the GEMM computes Cᵀ (see [`Orientation`]).
pub(crate) struct Tile {
    pub c: *mut f32,
    pub rs: usize,
    pub cs: usize,
    pub rows: usize,
    pub cols: usize,
    /// Add to C's elements rather than overwrite them.
    pub accumulate: bool,
    /// Null, or the bias of the tile's first column (`bias[j]` goes to
    /// column `j`) or, when `bias_by_row`, of its first row (`bias[i]` to
    /// row `i`), added as the tile is stored.
    pub bias: *const f32,
    /// The tile is one of Cᵀ, whose rows are C's columns: the bias is by row.
    pub bias_by_row: bool,
}

impl Tile {
    /// Store row `i`'s values `x[j]` for `j < min(x.len(), cols)` one element
    /// at a time through the strides, plus `bias[i]`: the store of a tile of
    /// Cᵀ, whose rows are C's columns. (A tile of C itself stores whole
    /// vectors; the scalar kernel stores its tiles of C here too, where
    /// `bias` is by column.)
    ///
    /// # Safety
    /// Row `i < rows` of the tile must be writable (and initialised when
    /// accumulating); a non-null `bias` addresses the tile's rows' (or
    /// columns') values.
    pub unsafe fn store_strided(&self, i: usize, x: &[f32]) {
        let bias = |j: usize| {
            if self.bias.is_null() {
                0.0
            } else {
                // SAFETY: the caller vouches for the bias of the tile's rows
                // (a tile of Cᵀ) or columns.
                unsafe { *self.bias.add(if self.bias_by_row { i } else { j }) }
            }
        };
        for (j, &x) in x.iter().enumerate().take(self.cols) {
            let x = x + bias(j);
            // SAFETY: (i, j) is inside the tile (caller's contract). Raw
            // pointer accesses: without `accumulate` C may be uninitialised.
            unsafe {
                let out = self.c.add(i * self.rs + j * self.cs);
                out.write(if self.accumulate { out.read() + x } else { x });
            }
        }
    }
}

/// How a micro-kernel finds the tile's rows of A: element `(i, p)` (row `i`
/// of the tile, step `p` of the reduction) is at `a + i + p·a_stride` when
/// [`ARows::DepthMajor`] (a packed panel, `a_stride` = MR, or an A whose rows
/// are adjacent in memory, read in place), at `a + i·a_stride + p` when
/// [`ARows::RowMajor`] (an A whose steps are adjacent, read in place).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ARows {
    DepthMajor,
    RowMajor,
}

/// `tile (=|+=) A_rows · B_panel` for `kc` steps: `a` the tile's rows of A
/// laid out as `a_rows` says (see [`ARows`]), `b` a packed panel of `kc`
/// groups of NR values.
///
/// # Safety
/// The ISA's CPU features must be present; A's elements `(i, p)` for the
/// kernel's rows `i` and `p < kc` must be readable; `b` must hold `kc·NR`
/// values; the tile's elements must be writable and (with `accumulate`)
/// initialised; a non-null `bias` addresses the tile's columns' values (its
/// rows' for a tile of Cᵀ).
type MicroKernel = unsafe fn(kc: usize, a: *const f32, a_stride: usize, b: *const f32, tile: &Tile);

/// The micro-kernel for a tile of `rows × cols` (`1..=MR` by `1..=NR`): the
/// full one, or at the edges of C one that computes only what is kept; one
/// that stores through both of the tile's strides when `strided` (a tile of
/// Cᵀ), else one that stores whole vectors (`cs == 1`); one that reads A's
/// rows as `a_rows` lays them out.
type SelectKernel = fn(rows: usize, cols: usize, strided: bool, a_rows: ARows) -> MicroKernel;

/// Block sizes of the loops above, in elements. `mc` is a multiple of the
/// kernel's MR and `nc` of its NR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocking {
    pub kc: usize,
    pub mc: usize,
    pub nc: usize,
}

/// One instruction set's micro-kernel, its tile and the block sizes tuned for it.
pub struct Kernel {
    pub isa: Isa,
    /// Rows of C per micro-tile.
    pub mr: usize,
    /// Columns of C per micro-tile.
    pub nr: usize,
    /// Columns of C per vector: the edge kernels compute a tile's columns
    /// in whole vectors (and its rows one by one).
    lanes: usize,
    pub blocking: Blocking,
    micro: SelectKernel,
}

impl std::fmt::Debug for Kernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "gemm::Kernel({}, {}x{}, {:?})", self.isa.name(), self.mr, self.nr, self.blocking)
    }
}

/// The kernel for `isa`. The caller vouches that the CPU supports it (an
/// [`Isa`] obtained from `simd::selected` or `Simd::available` does).
pub fn kernel(isa: Isa) -> &'static Kernel {
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => &avx512::KERNEL,
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => &avx2::KERNEL,
        _ => &scalar::KERNEL,
    }
}

/// Packed-panel storage aligned to a cache line (and to a 512-bit vector).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A growable, 64-byte-aligned f32 buffer.
#[derive(Default)]
struct PackBuffer(Vec<Line>);

impl PackBuffer {
    /// At least `len` floats, uninitialised contents (packing writes every one it reads).
    fn get(&mut self, len: usize) -> &mut [f32] {
        let lines = len.div_ceil(16);
        if self.0.len() < lines {
            self.0 = vec![Line([0.0; 16]); lines];
        }
        // SAFETY: `Line` is 16 f32s with no padding (`repr(C)`, size 64), so
        // `lines` of them are `16·lines ≥ len` initialised f32s.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast::<f32>(), len) }
    }
}

thread_local! {
    /// This thread's packed A block, kept across calls.
    static A_PACK: RefCell<PackBuffer> = RefCell::default();
    /// This thread's packed B block (shared with the workers of a threaded
    /// GEMM this thread runs), kept across calls.
    static B_PACK: RefCell<PackBuffer> = RefCell::default();
}

/// `f` with this thread's buffer `key`. A GEMM never re-enters itself on one
/// thread while it holds a buffer (it runs nothing that could start another),
/// but should that ever happen, the second caller gets a fresh buffer rather
/// than a panic.
fn with_buffer<R>(key: &'static std::thread::LocalKey<RefCell<PackBuffer>>, f: impl FnOnce(&mut PackBuffer) -> R) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buffer) => f(&mut buffer),
        Err(_) => f(&mut PackBuffer::default()),
    })
}

/// The loop bounds of one product: the block sizes rounded to the kernel's
/// tile, and KC evened out over the reduction.
#[derive(Clone, Copy, Debug)]
struct Blocks {
    mr: usize,
    nr: usize,
    kc: usize,
    mc: usize,
    nc: usize,
}

impl Blocks {
    fn new(kernel: &Kernel, blocking: Blocking, m: usize, k: usize, n: usize) -> Blocks {
        let (mr, nr) = (kernel.mr, kernel.nr);
        Blocks {
            mr,
            nr,
            // Equal KC blocks rather than full ones and a remainder: k = 1152
            // with KC = 512 runs 3 × 384, not 512 + 512 + 128, whose short last
            // block would pay a whole pass over C for little work.
            kc: k.div_ceil(k.div_ceil(blocking.kc.max(1))).max(1),
            // MC blocks evened out the same way (to whole MR panels): 65 rows
            // with MC = 48 run 36 + 29, not 48 + 17, whose tasks a threaded
            // GEMM would otherwise share out unevenly.
            mc: {
                let mc = blocking.mc.max(mr).next_multiple_of(mr);
                m.div_ceil(m.div_ceil(mc).max(1)).next_multiple_of(mr).min(mc)
            },
            nc: blocking.nc.max(nr).next_multiple_of(nr).min(n.next_multiple_of(nr)),
        }
    }

    /// Floats of a packed A block.
    fn a_len(&self) -> usize {
        self.mc * self.kc
    }

    /// Floats of a packed B block.
    fn b_len(&self) -> usize {
        self.nc * self.kc
    }
}

/// A writable strided matrix: C as the micro-kernels store it.
#[derive(Clone, Copy, Debug)]
struct MatMut {
    ptr: *mut f32,
    rs: usize,
    cs: usize,
    /// This is Cᵀ (see [`Orientation`]): its rows are C's columns, which a
    /// bias follows. (Not the same as `cs != 1`: with one column, C and Cᵀ
    /// are both contiguous.)
    transposed: bool,
}

impl MatMut {
    /// The sub-matrix starting at `(i, j)`.
    ///
    /// # Safety
    /// `(i, j)` must address an element inside the allocation (or one past it).
    unsafe fn at(self, i: usize, j: usize) -> MatMut {
        MatMut {
            // SAFETY: the caller keeps (i, j) inside the matrix.
            ptr: unsafe { self.ptr.add(i * self.rs + j * self.cs) },
            ..self
        }
    }
}

/// What packing one element costs [`Orientation::choose`], in multiply-adds
/// of one lane. A vector's copy moves 16 elements in about the cycle 32
/// lane multiply-adds take, which would make it 2; but the packed operands
/// come strided and from L2 or beyond, and 8 is what puts the two
/// vocabulary-head forwards measured there on their faster side (gpt-tiny's
/// is the close call: 1.1% apart at 8, transposed at 7).
const PACK_COST: usize = 8;

/// The product as the loops compute it: `C = A·B` itself, or `Cᵀ = Bᵀ·Aᵀ`
/// (the same memory, strides swapped) when C's columns fill the micro-tile's
/// vectors much worse than its rows would.
///
/// The edge kernels compute a tile's rows one by one but its columns in
/// whole vectors, so a narrow N wastes lanes: the vocabulary head's N = 65
/// computes 80 columns (5 vectors of 16) per row. Its transpose puts the 65
/// in M, where the last 5 rows run a 5-row kernel and nothing is wasted, and
/// the thousands of tokens in N. The price is a tile of Cᵀ stored one
/// element at a time through the strides, once per tile and KC block.
///
/// v1: gpt-small head, 1 thread, thread CPU clock: forward 4096 × 384 × 65
/// 72 -> 76% of peak, weight gradient 384 × 4096 × 65 68 -> 82%.
struct Orientation {
    m: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    c: MatMut,
}

impl Orientation {
    #[allow(clippy::too_many_arguments)]
    fn choose(kernel: &Kernel, m: usize, k: usize, n: usize, a: MatRef, b: MatRef, c: *mut f32, ldc: usize) -> Orientation {
        // The work either way, in multiply-adds of one lane: the elements
        // computed (whole vectors of columns) times the reduction's depth,
        // the element-wise stores of Cᵀ counted as 16 more steps, and every
        // element the loops pack (B always; A unless read in place) as
        // PACK_COST. v2 added the packing: gpt-tiny's head forward (2048 ×
        // 128 × 65) had gone transposed, which packs all of X (the 2048
        // rows) to save 15 lanes of 80 on a K of 128: untransposed, 1
        // thread, 44-48 -> 60-63% of peak (2 threads 50 -> 52-58%);
        // gpt-small's (K = 384) and the weight gradients' (K = 2048, both
        // operands packed either way) still go transposed.
        let computed = |rows: usize, cols: usize| rows * cols.next_multiple_of(kernel.lanes);
        let packed = |rows_a: usize, a: MatRef, cols_b: usize| (k * cols_b + if read_a_in_place(a) { 0 } else { rows_a * k }) * PACK_COST;
        let as_is = computed(m, n) * k + packed(m, a, n);
        let transposed = computed(n, m) * (k + 16) + packed(n, b.t(), m);
        if transposed < as_is {
            Orientation {
                m: n,
                n: m,
                a: b.t(),
                b: a.t(),
                c: MatMut {
                    ptr: c,
                    rs: 1,
                    cs: ldc,
                    transposed: true,
                },
            }
        } else {
            Orientation {
                m,
                n,
                a,
                b,
                c: MatMut {
                    ptr: c,
                    rs: ldc,
                    cs: 1,
                    transposed: false,
                },
            }
        }
    }
}

/// C's `m × n` as `base` alone when the reduction is empty (zeros, the bias
/// rows, or C unchanged). True when there is nothing else to do.
///
/// # Safety
/// C's `m` rows of `n` elements, `ldc` apart, must be writable.
unsafe fn trivial(m: usize, k: usize, n: usize, c: *mut f32, ldc: usize, base: Base) -> bool {
    if m == 0 || n == 0 {
        return true;
    }
    if k == 0 {
        for i in 0..m {
            // SAFETY: row i of C is n writable elements (caller's contract);
            // all-zero bytes are 0.0f32; a bias holds n values. No slice: C
            // may be uninitialised.
            unsafe {
                match base {
                    Base::Zero => std::ptr::write_bytes(c.add(i * ldc), 0, n),
                    Base::Bias(bias) => std::ptr::copy_nonoverlapping(bias, c.add(i * ldc), n),
                    Base::Existing => {}
                }
            }
        }
        return true;
    }
    false
}

/// The ic/jr/ir loops for one packed B block `kc` deep: C's rows `rows` and
/// the block's columns `cols` (`cols.start` a multiple of NR, relative to the
/// block, whose first column is `c`'s), packing A's rows an MC block at a
/// time into `a_buf`. `a` is A at (0, the block's first step); `base` is
/// this block's ([`Base::for_block`]).
///
/// # Safety
/// As for [`gemm_with`], for the rows and columns named; `b_pack` holds the
/// block's panels covering `cols`.
#[allow(clippy::too_many_arguments)]
unsafe fn multiply_packed_b(
    kernel: &Kernel,
    blocks: Blocks,
    a: MatRef,
    rows: Range<usize>,
    kc: usize,
    b_pack: &[f32],
    cols: Range<usize>,
    c: MatMut,
    base: Base,
    a_buf: &mut PackBuffer,
) {
    let strided = c.cs != 1;
    let bias_by_row = c.transposed;
    let Blocks { mr, nr, mc: mc_max, .. } = blocks;
    let direct = read_a_in_place(a);
    let a_pack = if direct { &mut [][..] } else { a_buf.get(blocks.a_len()) };
    for ic in rows.clone().step_by(mc_max) {
        let mc = mc_max.min(rows.end - ic);
        if !direct {
            // SAFETY: rows ic..ic + mc at depth kc are inside A; a_pack holds MC·KC.
            unsafe { pack::pack_panels(mc, kc, mr, a.at(ic, 0), a_pack) };
        }
        for jr in cols.clone().step_by(nr) {
            let b_panel = &b_pack[jr * kc..];
            for ir in (0..mc).step_by(mr) {
                let tile = Tile {
                    // SAFETY: (ic + ir, jr) is inside C.
                    c: unsafe { c.ptr.add((ic + ir) * c.rs + jr * c.cs) },
                    rs: c.rs,
                    cs: c.cs,
                    rows: mr.min(mc - ir),
                    cols: nr.min(cols.end - jr),
                    accumulate: matches!(base, Base::Existing),
                    bias: match base {
                        // SAFETY: the bias holds a value for each of C's
                        // columns: the computed matrix's rows when it is Cᵀ.
                        Base::Bias(bias) => unsafe { bias.add(if bias_by_row { ic + ir } else { jr }) },
                        _ => std::ptr::null(),
                    },
                    bias_by_row,
                };
                let (a_rows, a_ptr, a_stride) = if direct {
                    // SAFETY: row ic + ir < m of A, at this block's first step.
                    (ARows::RowMajor, unsafe { a.at(ic + ir, 0) }.ptr, a.rs)
                } else {
                    (ARows::DepthMajor, a_pack[ir * kc..].as_ptr(), mr)
                };
                let micro = (kernel.micro)(tile.rows, tile.cols, strided, a_rows);
                // SAFETY: the tile's rows of A are readable for kc steps (in
                // place, or packed kc·mr values); the B panel holds kc·nr
                // packed values; the tile lies inside C; the caller vouches
                // for the ISA.
                unsafe { micro(kc, a_ptr, a_stride, b_panel.as_ptr(), &tile) };
            }
        }
    }
}

/// Whether the micro-kernels read A where it lies rather than from packed
/// panels: when A's rows are runs of adjacent values (a row-major A: X in a
/// forward `X·Wᵀ`, dY in an input gradient `dY·W`), the kernel streams each
/// of its MR rows front to back, loads that packing's copy would have made,
/// without the copy and its second pass over A. Other layouts are packed.
///
/// v1 packed every A block: in gpt-tiny's training step (d = 128, so every
/// product has a side of 128 over which a packed value of A is reused)
/// packing took 16% of the step's time (perf, 1 and 2 threads), most of it
/// A's. v2 reads row-major A in place: gpt-tiny's input gradients 1.04 to
/// 1.15× as fast, attention's small products 1.14 to 1.38×; reading a
/// column-major A in place (a weight gradient's Xᵀ, each step's MR values
/// adjacent) was no faster, and 0.64× on fc2's (a 2 KiB stride between
/// steps, which maps them onto few L1 sets), so such an A is still packed
/// (`cargo bench --bench matmul -- --kernels --threads 1`, thread CPU
/// clock, best of two interleaved rounds). Whole training steps
/// (`cargo bench --bench train_step`, best of three interleaved): gpt-tiny
/// 146.1 -> 142.5 ms on 1 thread, 81.6 -> 78.8 on 2; vit-tiny 145.4 -> 136.2
/// and 81.3 -> 74.8 (Intel Xeon, AVX-512). v3 packs A again when its rows
/// start off cache lines or a multiple of 4 KiB apart
/// ([`l1_sets_spanned`]): sgemm 1024² on 2 threads had fallen from 305 to
/// 293 GFLOP/s read in place (`benches/compare_matmul.sh --size 1024`), and
/// the vocabulary head's input gradient (rows of 65 values) to 0.84× (1
/// thread).
fn read_a_in_place(a: MatRef) -> bool {
    // The row stride in bytes, and in 64-byte lines when rows start on lines.
    let bytes = a.rs * std::mem::size_of::<f32>();
    a.cs == 1 && bytes.is_multiple_of(64) && l1_sets_spanned(bytes / 64) >= 2
}

/// How many of a 64-set L1's sets (48 KiB, 12 ways on Golden Cove; 32 KiB,
/// 8 ways on Zen) the starts of rows `lines` cache lines apart fall into:
/// rows a multiple of 4 KiB apart all land in one set, and a micro-kernel
/// streaming 12 of them evicts its own lines.
fn l1_sets_spanned(lines: usize) -> usize {
    const SETS: usize = 64;
    let step = lines % SETS;
    let gcd = |mut x: usize, mut y: usize| {
        while y != 0 {
            (x, y) = (y, x % y);
        }
        x
    };
    SETS / gcd(step, SETS)
}

/// `C = base + A·B` for an `m×k` A, a `k×n` B and an `m×n` C with row stride
/// `ldc` and unit column stride, on the calling thread with `kernel` and
/// `blocking`. Unless `base` is [`Base::Existing`], C's prior contents are
/// never read (it may be uninitialised memory).
///
/// # Safety
/// `kernel`'s ISA must be supported by this CPU. Every element that A's and
/// B's strides address must be readable; C's `m` rows of `n` elements must be
/// writable (and initialised for [`Base::Existing`]), must not overlap A or B,
/// and no other thread may touch them during the call; a [`Base::Bias`]
/// addresses `n` readable values.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_with(kernel: &Kernel, blocking: Blocking, m: usize, k: usize, n: usize, a: MatRef, b: MatRef, c: *mut f32, ldc: usize, base: Base) {
    // SAFETY: the caller's contract covers C.
    if unsafe { trivial(m, k, n, c, ldc, base) } {
        return;
    }
    let Orientation { m, n, a, b, c } = Orientation::choose(kernel, m, k, n, a, b, c, ldc);
    let blocks = Blocks::new(kernel, blocking, m, k, n);
    with_buffer(&B_PACK, |b_buf| {
        with_buffer(&A_PACK, |a_buf| {
            let b_pack = b_buf.get(blocks.b_len());
            for jc in (0..n).step_by(blocks.nc) {
                let nc = blocks.nc.min(n - jc);
                for pc in (0..k).step_by(blocks.kc) {
                    let kc = blocks.kc.min(k - pc);
                    // SAFETY: (pc, jc) is inside B; B's columns jc.. are the
                    // rows of its transpose, packed nr at a time into b_pack,
                    // which holds NC·KC.
                    unsafe { pack::pack_panels(nc, kc, blocks.nr, b.at(pc, jc).t(), b_pack) };
                    // SAFETY: the caller's contract, for all of C's rows and
                    // this block's columns.
                    unsafe {
                        multiply_packed_b(
                            kernel,
                            blocks,
                            a.at(0, pc),
                            0..m,
                            kc,
                            b_pack,
                            0..nc,
                            c.at(0, jc),
                            base.for_block(pc, jc, c.transposed),
                            a_buf,
                        )
                    };
                }
            }
        })
    });
}

/// [`gemm_with`] with the kernel's own block sizes.
///
/// # Safety
/// As for [`gemm_with`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(kernel: &Kernel, m: usize, k: usize, n: usize, a: MatRef, b: MatRef, c: *mut f32, ldc: usize, base: Base) {
    // SAFETY: the caller's contract is gemm_with's.
    unsafe { gemm_with(kernel, kernel.blocking, m, k, n, a, b, c, ldc, base) }
}

/// The plain reference: `c[i·ldc + j] (=|+=) Σ_p a(i, p)·b(p, j)`, summed in
/// order, on slices (A and B addressed through their strides).
#[allow(clippy::too_many_arguments)]
pub fn gemm_reference(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    (rsa, csa): (usize, usize),
    b: &[f32],
    (rsb, csb): (usize, usize),
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0.0f32;
            for p in 0..k {
                acc += a[i * rsa + p * csa] * b[p * rsb + j * csb];
            }
            let out = &mut c[i * ldc + j];
            *out = if accumulate { *out + acc } else { acc };
        }
    }
}
