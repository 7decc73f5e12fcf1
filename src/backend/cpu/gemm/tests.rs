//! Every micro-kernel this CPU can run (scalar, AVX2, AVX-512, each called
//! directly) against [`gemm_reference`], over shapes at the edges of the
//! micro-tile and of the cache blocks, operands of any strides (transposed,
//! sliced, broadcast), and with and without accumulation.
//!
//! Small block sizes stand in for the tuned ones so that small matrices cross
//! several KC, MC and NC blocks; a few cases use the tuned sizes themselves,
//! one element below, at and above a block edge.

use super::*;
use crate::backend::cpu::simd::Simd;
use crate::testing::proptest_config;
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn kernels() -> Vec<&'static Kernel> {
    Simd::available().into_iter().map(|s| kernel(s.isa())).collect()
}

/// A `rows × cols` operand stored transposed or not, with `gap` unused
/// elements after each stored row and `offset` before the first: its data
/// and its (row, column) strides.
fn operand(rng: &mut StdRng, rows: usize, cols: usize, transposed: bool, gap: usize, offset: usize) -> (Vec<f32>, (usize, usize)) {
    let (outer, inner) = if transposed { (cols, rows) } else { (rows, cols) };
    let ld = inner + gap;
    let data: Vec<f32> = (0..offset + outer * ld).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let strides = if transposed { (1, ld) } else { (ld, 1) };
    (data, strides)
}

/// Relative tolerance of an f32 dot product of length `k` against the
/// reference's (also f32, summed in another order): a few ulp per term,
/// scaled by the sum of the magnitudes.
fn close(x: f32, y: f32, magnitude: f32, k: usize) -> bool {
    (x - y).abs() <= 4.0 * f32::EPSILON * (k as f32 + 1.0) * (magnitude + 1.0)
}

#[derive(Clone, Copy, Debug)]
struct Case {
    m: usize,
    k: usize,
    n: usize,
    a_t: bool,
    b_t: bool,
    gap: usize,
    offset: usize,
    base: CaseBase,
}

/// What the case's product is added to ([`Base`]): nothing, C's initial
/// values, or a random bias row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CaseBase {
    Zero,
    Existing,
    Bias,
}

impl CaseBase {
    /// The three in turn, by `i`.
    fn nth(i: usize) -> CaseBase {
        [CaseBase::Zero, CaseBase::Existing, CaseBase::Bias][i % 3]
    }
}

/// Run `case` through `kernel` with `blocking` and compare with the reference.
fn check(kernel: &Kernel, blocking: Blocking, case: Case, seed: u64) -> std::result::Result<(), TestCaseError> {
    check_with(kernel, case, seed, |m, k, n, a, b, c, ldc, base| {
        // SAFETY: as for check_with's `run`.
        unsafe { gemm_with(kernel, blocking, m, k, n, a, b, c, ldc, base) }
    })
}

/// The arguments of `gemm_with` after the kernel and blocking.
type Run<'a> = dyn Fn(usize, usize, usize, MatRef, MatRef, *mut f32, usize, Base) + 'a;

/// Run `case` through `run` (a GEMM entry point with `kernel`) and compare
/// with the reference. `run` gets operands and a C that satisfy gemm_with's
/// contract for a supported ISA.
fn check_with(
    kernel: &Kernel,
    case: Case,
    seed: u64,
    run: impl Fn(usize, usize, usize, MatRef, MatRef, *mut f32, usize, Base),
) -> std::result::Result<(), TestCaseError> {
    let run: &Run = &run;
    let Case {
        m,
        k,
        n,
        a_t,
        b_t,
        gap,
        offset,
        base,
    } = case;
    let accumulate = base == CaseBase::Existing;
    let mut rng = StdRng::seed_from_u64(seed);
    let (a, sa) = operand(&mut rng, m, k, a_t, gap, offset);
    let (b, sb) = operand(&mut rng, k, n, b_t, gap + 1, offset / 2);
    // C has its own row gap and a guard row after its last, so a store that
    // runs past a row or past the matrix shows up as a changed guard value.
    let ldc = n + 3;
    let guard = 7.5f32;
    let initial: Vec<f32> = (0..(m + 1) * ldc)
        .map(|i| if i % ldc < n && i < m * ldc { rng.random_range(-1.0f32..1.0) } else { guard })
        .collect();
    let bias: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let mut want = initial.clone();
    gemm_reference(m, k, n, &a[offset..], sa, &b[offset / 2..], sb, &mut want, ldc, accumulate);
    if base == CaseBase::Bias {
        for row in want.chunks_mut(ldc).take(m) {
            for (x, &b) in row.iter_mut().zip(&bias) {
                *x += b;
            }
        }
    }
    let mut got = initial.clone();
    let (ra, rb) = (
        MatRef {
            ptr: a[offset..].as_ptr(),
            rs: sa.0,
            cs: sa.1,
        },
        MatRef {
            ptr: b[offset / 2..].as_ptr(),
            rs: sb.0,
            cs: sb.1,
        },
    );
    // The kernel comes from Simd::available (supported ISA); A and B address
    // only elements of `a` and `b`; C's m rows of n are inside `got`.
    let gemm_base = match base {
        CaseBase::Zero => Base::Zero,
        CaseBase::Existing => Base::Existing,
        CaseBase::Bias => Base::Bias(bias.as_ptr()),
    };
    run(m, k, n, ra, rb, got.as_mut_ptr(), ldc, gemm_base);
    for i in 0..=m {
        for j in 0..ldc {
            let (x, y) = (got[i * ldc + j], want[i * ldc + j]);
            if j >= n || i == m {
                prop_assert_eq!(x, guard, "{:?}: the guard after row {} changed", kernel, i);
                continue;
            }
            let magnitude: f32 = (0..k)
                .map(|p| (a[offset + i * sa.0 + p * sa.1] * b[offset / 2 + p * sb.0 + j * sb.1]).abs())
                .sum::<f32>()
                + match base {
                    CaseBase::Zero => 0.0,
                    CaseBase::Existing => initial[i * ldc + j].abs(),
                    CaseBase::Bias => bias[j].abs(),
                };
            prop_assert!(
                close(x, y, magnitude, k),
                "{:?} {:?}: C[{}, {}] = {} but the reference gives {}",
                kernel,
                case,
                i,
                j,
                x,
                y
            );
        }
    }
    Ok(())
}

fn small_blocking(kernel: &Kernel, kc: usize, mc_panels: usize, nc_panels: usize) -> Blocking {
    Blocking {
        kc,
        mc: kernel.mr * mc_panels,
        nc: kernel.nr * nc_panels,
    }
}

fn case_strategy(max_m: usize, max_k: usize, max_n: usize) -> impl Strategy<Value = Case> {
    (1..=max_m, 0..=max_k, 1..=max_n, any::<bool>(), any::<bool>(), 0..3usize, 0..4usize, 0..3usize).prop_map(|(m, k, n, a_t, b_t, gap, offset, base)| Case {
        m,
        k,
        n,
        a_t,
        b_t,
        gap,
        offset,
        base: CaseBase::nth(base),
    })
}

proptest! {
    #![proptest_config(proptest_config(48))]

    /// Small blocks, so a small product crosses every loop's block edges.
    #[test]
    fn every_kernel_matches_the_reference_across_small_blocks(
        case in case_strategy(70, 40, 100),
        kc in 1..12usize, mc_panels in 1..4usize, nc_panels in 1..4usize,
        seed in any::<u64>(),
    ) {
        for kernel in kernels() {
            check(kernel, small_blocking(kernel, kc, mc_panels, nc_panels), case, seed)?;
        }
    }

    /// The tuned blocks, on products up to a few micro-tiles.
    #[test]
    fn every_kernel_matches_the_reference_with_its_own_blocks(case in case_strategy(40, 300, 80), seed in any::<u64>()) {
        for kernel in kernels() {
            check(kernel, kernel.blocking, case, seed)?;
        }
    }
}

proptest! {
    #![proptest_config(proptest_config(12))]

    /// `gemm_threaded` on 2 and 3 threads, above its threshold: weight
    /// gradient shapes (the reduction split among the threads, partial
    /// products added) and tall ones (C's rows and columns shared), narrow
    /// N that the loops compute transposed included.
    #[test]
    fn threaded_gemm_matches_the_reference(
        long_reduction in any::<bool>(),
        rows in 0..200usize, cols in 0..60usize, extra in 0..300usize,
        a_t in any::<bool>(), b_t in any::<bool>(), base in 0..3usize,
        threads in 2..4usize, seed in any::<u64>(),
    ) {
        let (m, n) = if long_reduction { (1 + rows / 3, 1 + cols) } else { (300 + rows, 40 + cols) };
        let deep_enough = THREADED_MIN_WORK.div_ceil(m * n);
        let k = if long_reduction { deep_enough.max(2 * m.max(n)) + extra } else { deep_enough + extra % 50 };
        prop_assert_eq!(parallel::reduction_split_pays(m, k, n, threads), long_reduction && k >= threads * 256);
        let case = Case { m, k, n, a_t, b_t, gap: 1, offset: 3, base: CaseBase::nth(base) };
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        for kernel in kernels() {
            pool.install(|| {
                check_with(kernel, case, seed, |m, k, n, a, b, c, ldc, base| {
                    // SAFETY: as for check_with's `run`.
                    unsafe { gemm_threaded(kernel, m, k, n, a, b, c, ldc, base) }
                })
            })?;
        }
    }
}

/// The orientation the AVX-512 GEMM takes for the vocabulary heads measured
/// in `Orientation::choose`'s notes: gpt-tiny's forward as is (transposing
/// would pack all 2048 rows of X for a K of 128), gpt-small's forward and
/// both weight gradients (every operand packed either way) as Cᵀ.
#[test]
#[cfg(target_arch = "x86_64")]
fn vocabulary_heads_take_the_measured_orientation() {
    // The choice reads the kernel's lane count only: AVX-512's table serves
    // on any x86-64 CPU, as nothing of it runs here.
    let kernel = kernel(Isa::Avx512);
    let row_major = |cols: usize| MatRef {
        ptr: std::ptr::null(),
        rs: cols,
        cs: 1,
    };
    let col_major = |rows: usize| MatRef {
        ptr: std::ptr::null(),
        rs: 1,
        cs: rows,
    };
    // (m, k, n, A, B, transposed): forward X·Wᵀ, weight gradient Xᵀ·dY.
    for (m, k, n, a, b, want) in [
        (2048, 128, 65, row_major(128), col_major(128), false),
        (4096, 384, 65, row_major(384), col_major(384), true),
        (128, 1024, 65, col_major(1024), row_major(65), true),
        (384, 2048, 65, col_major(2048), row_major(65), true),
    ] {
        let transposed = Orientation::choose(kernel, m, k, n, a, b, std::ptr::null_mut(), n).c.cs != 1;
        assert_eq!(transposed, want, "{m}x{k}x{n}");
    }
}

/// The vocabulary head's shapes (N = 65: at 16 lanes the forward and weight
/// gradient computed as Cᵀ, the input gradient not) and their untransposed neighbour
/// (N = 64), on one thread and on two.
#[test]
fn narrow_heads_match_the_reference() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for kernel in kernels() {
        for (i, &(m, k, n, a_t, b_t)) in [
            (512, 400, 65, false, true),
            (96, 4200, 65, true, false),
            (512, 65, 96, false, false),
            (512, 96, 64, false, true),
        ]
        .iter()
        .enumerate()
        {
            // Strides as the case stores the operands (only strides matter).
            let strided = |rows: usize, cols: usize, t: bool| MatRef {
                ptr: std::ptr::null(),
                rs: if t { 1 } else { cols },
                cs: if t { rows } else { 1 },
            };
            let (a, b) = (strided(m, k, a_t), strided(k, n, b_t));
            let transposed = Orientation::choose(kernel, m, k, n, a, b, std::ptr::null_mut(), n).c.cs != 1;
            // 16 lanes: the first two computed as Cᵀ. 8 lanes waste less of
            // 65 columns (72 computed), and the first one's packing of its
            // 512 × 400 A for Cᵀ then outweighs the lanes saved.
            assert_eq!(
                transposed,
                i < 2 && n % kernel.lanes != 0 && (kernel.lanes == 16 || i == 1),
                "{kernel:?}: {m}x{k}x{n} transposed or not"
            );
            let case = Case {
                m,
                k,
                n,
                a_t,
                b_t,
                gap: 0,
                offset: 0,
                base: CaseBase::nth(i + 1),
            };
            check(kernel, kernel.blocking, case, i as u64).unwrap();
            pool.install(|| {
                check_with(kernel, case, i as u64, |m, k, n, a, b, c, ldc, base| {
                    // SAFETY: as for check_with's `run`.
                    unsafe { gemm_threaded(kernel, m, k, n, a, b, c, ldc, base) }
                })
            })
            .unwrap();
        }
    }
}

/// One below, at and above each micro-tile and block edge of the tuned sizes.
#[test]
fn tuned_block_edges_match_the_reference() {
    for kernel in kernels() {
        let Blocking { kc, mc, nc } = kernel.blocking;
        let (mr, nr) = (kernel.mr, kernel.nr);
        let shapes = [
            (mr - 1, 1, nr - 1),
            (mr, kc, nr),
            (mr + 1, kc + 1, nr + 1),
            (mc - 1, kc - 1, 2 * nr + 1),
            (mc + 1, 7, 3),
            (3, 5, nc + 1),
            (1, 2 * kc + 3, 1),
        ];
        for (i, &(m, k, n)) in shapes.iter().enumerate() {
            for (a_t, b_t) in [(false, false), (true, true), (false, true)] {
                let case = Case {
                    m,
                    k,
                    n,
                    a_t,
                    b_t,
                    gap: 1,
                    offset: 2,
                    base: CaseBase::nth(i),
                };
                check(kernel, kernel.blocking, case, i as u64).unwrap();
            }
        }
    }
}

/// Every edge tile (each count of rows up to MR by each count of columns up
/// to NR, after a full tile in both directions, so the edge kernels read
/// their panels at the right offsets) runs the kernel chosen for it and
/// matches the reference, overwriting and accumulating.
#[test]
fn edge_tiles_of_every_size_match_the_reference() {
    for kernel in kernels() {
        let (mr, nr) = (kernel.mr, kernel.nr);
        for rows in 1..=mr {
            for cols in 1..=nr {
                let case = Case {
                    m: mr + rows,
                    k: 13,
                    n: nr + cols,
                    a_t: rows % 2 == 0,
                    b_t: cols % 3 == 0,
                    gap: 1,
                    offset: 1,
                    base: CaseBase::nth(rows + cols),
                };
                check(kernel, kernel.blocking, case, (rows * 100 + cols) as u64).unwrap();
            }
        }
    }
}

/// Stride-0 rows and columns (a broadcast view) read the same element again.
#[test]
fn broadcast_operands_match_the_reference() {
    let (m, k, n) = (19, 23, 37);
    let mut rng = StdRng::seed_from_u64(5);
    let a_row: Vec<f32> = (0..k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let b_col: Vec<f32> = (0..k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    for kernel in kernels() {
        let mut want = vec![0.0f32; m * n];
        gemm_reference(m, k, n, &a_row, (0, 1), &b_col, (1, 0), &mut want, n, false);
        let mut got = vec![f32::NAN; m * n];
        let a = MatRef {
            ptr: a_row.as_ptr(),
            rs: 0,
            cs: 1,
        };
        let b = MatRef {
            ptr: b_col.as_ptr(),
            rs: 1,
            cs: 0,
        };
        // SAFETY: supported ISA; stride-0 reads stay inside the k-element vectors.
        unsafe { gemm_with(kernel, small_blocking(kernel, 5, 1, 1), m, k, n, a, b, got.as_mut_ptr(), n, Base::Zero) };
        for (x, y) in got.iter().zip(&want) {
            assert!(close(*x, *y, k as f32, k), "{kernel:?}: {x} vs {y}");
        }
    }
}

/// k = 0 writes zeros (the bias rows with a bias; leaves C as it was when
/// accumulating).
#[test]
fn an_empty_reduction_gives_zeros() {
    for kernel in kernels() {
        let mut c = vec![f32::NAN; 6];
        let empty = MatRef {
            ptr: [].as_ptr(),
            rs: 0,
            cs: 0,
        };
        // SAFETY: supported ISA; k = 0 reads nothing.
        unsafe { gemm(kernel, 2, 0, 3, empty, empty, c.as_mut_ptr(), 3, Base::Zero) };
        assert_eq!(c, vec![0.0; 6]);
        let mut c = vec![1.5f32; 6];
        // SAFETY: as above.
        unsafe { gemm(kernel, 2, 0, 3, empty, empty, c.as_mut_ptr(), 3, Base::Existing) };
        assert_eq!(c, vec![1.5; 6]);
        let bias = [1.0f32, -2.0, 3.0];
        // SAFETY: as above; the bias holds n = 3 values.
        unsafe { gemm(kernel, 2, 0, 3, empty, empty, c.as_mut_ptr(), 3, Base::Bias(bias.as_ptr())) };
        assert_eq!(c, vec![1.0, -2.0, 3.0, 1.0, -2.0, 3.0]);
    }
}

/// Packing puts `src(r, p)` at panel `r / w`, step `p`, lane `r % w`, and
/// zeros after the last row, for each source layout the packer special-cases
/// (rows adjacent, depth adjacent: with and without whole 4×4 blocks, a
/// panel width that is not a multiple of 4; any other strides).
#[test]
fn packing_lays_out_panels_depth_major_with_zero_padding() {
    let value = |r: usize, p: usize| (100 * r + p) as f32;
    // w = 12 and 32 (the AVX-512 kernel's MR and NR) take 512-bit copies where
    // the CPU has them.
    for (rows, depth, w) in [(5usize, 3usize, 4usize), (13, 7, 8), (11, 9, 6), (16, 8, 4), (25, 5, 12), (70, 4, 32)] {
        let panels = rows.div_ceil(w);
        for (rs, cs, len) in [(depth, 1, rows * depth), (1, rows, rows * depth), (2 * depth + 1, 2, 2 * (depth + 1) * rows)] {
            let mut src = vec![-1.0f32; len];
            for r in 0..rows {
                for p in 0..depth {
                    src[r * rs + p * cs] = value(r, p);
                }
            }
            let mut dst = vec![f32::NAN; panels * w * depth + 3];
            // SAFETY: every (r, p) is inside `src`, `dst` holds the panels.
            unsafe { pack::pack_panels(rows, depth, w, MatRef { ptr: src.as_ptr(), rs, cs }, &mut dst) };
            for r in 0..panels * w {
                for p in 0..depth {
                    let want = if r < rows { value(r, p) } else { 0.0 };
                    assert_eq!(
                        dst[(r / w) * w * depth + p * w + r % w],
                        want,
                        "{rows}x{depth} by {w}, strides ({rs}, {cs}), row {r}, step {p}"
                    );
                }
            }
            assert!(dst[panels * w * depth..].iter().all(|x| x.is_nan()), "packing wrote past its panels");
        }
    }
}

/// A row-major A is read in place unless its rows start off cache lines or
/// fall into a single L1 set (a multiple of 4 KiB apart); any other layout
/// is packed.
#[test]
fn a_is_read_in_place_only_when_its_rows_spread_over_the_l1_sets() {
    assert_eq!([64, 128, 32, 24, 8, 12, 1].map(l1_sets_spanned), [1, 1, 2, 8, 8, 16, 64]);
    let a = |rs: usize, cs: usize| MatRef { ptr: std::ptr::null(), rs, cs };
    // gpt-tiny's d = 128 and its MLP's 512, vit-cifar's 576: in place.
    for rs in [128, 512, 576, 1536] {
        assert!(read_a_in_place(a(rs, 1)), "row stride {rs}");
    }
    // 1024 floats = 4 KiB; 65 floats start rows mid-line; a transposed or
    // broadcast A.
    for (rs, cs) in [(1024, 1), (2048, 1), (65, 1), (1, 384), (0, 1)] {
        assert!(!read_a_in_place(a(rs, cs)), "strides ({rs}, {cs})");
    }
}

/// A bias follows C's columns whichever way the product is computed, also
/// when C has one column and no gap between rows (`ldc = n = 1`, where C and
/// Cᵀ are both contiguous and only the orientation says which the loops
/// compute), on one thread and on two. The bias vector is exactly `n` long,
/// so a kernel reading past it reads another allocation's values (and
/// under a sanitizer, faults).
#[test]
fn a_bias_follows_cs_columns_in_either_orientation() {
    let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
    for kernel in kernels() {
        for (i, &(m, k, n)) in [(8, 3, 1), (37, 5, 1), (8, 3, 2), (300, 40, 1), (700, 90, 3), (130, 7, 65), (5, 9, 40)]
            .iter()
            .enumerate()
        {
            let mut rng = StdRng::seed_from_u64(i as u64);
            let a: Vec<f32> = (0..m * k).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let b: Vec<f32> = (0..k * n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let bias: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let mut want = vec![0.0f32; m * n];
            gemm_reference(m, k, n, &a, (k, 1), &b, (n, 1), &mut want, n, false);
            for (j, x) in want.iter_mut().enumerate() {
                *x += bias[j % n];
            }
            for threaded in [false, true] {
                let mut got = vec![f32::NAN; m * n];
                let run = |c: &mut [f32]| {
                    let (ra, rb) = (MatRef { ptr: a.as_ptr(), rs: k, cs: 1 }, MatRef { ptr: b.as_ptr(), rs: n, cs: 1 });
                    // SAFETY: supported ISA; A, B and C are m×k, k×n and m×n
                    // row-major; the bias holds n values.
                    unsafe {
                        if threaded {
                            gemm_threaded(kernel, m, k, n, ra, rb, c.as_mut_ptr(), n, Base::Bias(bias.as_ptr()))
                        } else {
                            gemm(kernel, m, k, n, ra, rb, c.as_mut_ptr(), n, Base::Bias(bias.as_ptr()))
                        }
                    }
                };
                if threaded {
                    pool.install(|| run(&mut got));
                } else {
                    run(&mut got);
                }
                for (j, (x, y)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        close(*x, *y, k as f32 + 1.0, k),
                        "{kernel:?} {m}x{k}x{n} threaded {threaded}: C[{}, {}] = {x}, want {y}",
                        j / n,
                        j % n
                    );
                }
            }
        }
    }
}

/// Every micro-kernel that reads A's rows in place ([`ARows::RowMajor`]),
/// called directly for every row count and both column counts of vectors:
/// the AVX-512 and AVX2 kernels address the rows three to a pointer
/// (`row_groups`), so a row count that leaves a group partly or wholly unused
/// (1, 2, 4, 7, ...) must read exactly its own rows, step by step. A's rows
/// are 37 steps long inside a stride of 41 (values between them that a wrong
/// row or step would pick up), the tile's C has guard values around it.
#[test]
fn micro_kernels_reading_a_in_place_match_the_reference_for_every_row_count() {
    let (kc, a_stride) = (37, 41);
    for kernel in kernels() {
        let (mr, nr) = (kernel.mr, kernel.nr);
        let mut rng = StdRng::seed_from_u64(kernel.mr as u64);
        let a: Vec<f32> = (0..mr * a_stride).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let b: Vec<f32> = (0..kc * nr).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        for rows in 1..=mr {
            for cols in [1, kernel.lanes, kernel.lanes + 3, nr].map(|cols| cols.min(nr)) {
                let ldc = nr + 5;
                let guard = 7.5f32;
                let mut c = vec![guard; (mr + 1) * ldc];
                let tile = Tile {
                    c: c.as_mut_ptr(),
                    rs: ldc,
                    cs: 1,
                    rows,
                    cols,
                    accumulate: false,
                    bias: std::ptr::null(),
                    bias_by_row: false,
                };
                let micro = (kernel.micro)(rows, cols, false, ARows::RowMajor);
                // SAFETY: the kernel's ISA is supported (`kernels()`); A has
                // `mr` rows of `a_stride ≥ kc` values, B `kc` steps of NR; the
                // tile's rows × cols lie inside `c`.
                unsafe { micro(kc, a.as_ptr(), a_stride, b.as_ptr(), &tile) };
                for i in 0..=mr {
                    for j in 0..ldc {
                        let got = c[i * ldc + j];
                        if i < rows && j < cols {
                            let want: f32 = (0..kc).map(|p| a[i * a_stride + p] * b[p * nr + j]).sum();
                            assert!(
                                close(got, want, kc as f32, kc),
                                "{kernel:?} rows {rows} cols {cols}: C[{i}][{j}] = {got}, want {want}"
                            );
                        } else {
                            assert_eq!(got, guard, "{kernel:?} rows {rows} cols {cols}: C[{i}][{j}] outside the tile written");
                        }
                    }
                }
            }
        }
    }
}
