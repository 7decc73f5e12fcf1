// attention.cu: fused scaled-dot-product attention (flash attention, f32),
// forward and backward, plus naive reference kernels that the parity tests
// compare the fused ones against.
//
// Shapes: every operand is contiguous and row-major, with the batch and head
// dims flattened into one leading dim BH (src/backend/cuda/nn/attention.rs makes
// copies where the views are strided):
//
//   q   [BH, Tq, D]     k  [BH, Tk, D]     v  [BH, Tk, Dv]
//   o   [BH, Tq, Dv]    lse [BH, Tq]       (forward outputs)
//   dout [BH, Tq, Dv]   delta [BH, Tq]     (backward inputs)
//   dq  [BH, Tq, D]     dk [BH, Tk, D]     dv [BH, Tk, Dv] (backward outputs)
//
// The maths, per head (scale usually 1/sqrt(D)):
//
//   s_ij = scale · q_i·k_j, or -inf where causal and j > i + diagonal
//          (torch.tril's diagonal: 0 for a top-left aligned mask, PyTorch's
//          is_causal; Tk - Tq for a bottom-right one, a KV cache's. The host
//          resolves tamer's AttnMask into (causal, diagonal).)
//   P = softmax_j(s)       O = P V        lse_i = log Σ_j exp(s_ij)
//
// A query row that sees no key (diagonal < 0, rows i < -diagonal) has O = 0
// and lse = -inf, and gets no gradient: PyTorch's and FlashAttention-2's
// convention, and the CPU composite path's, instead of softmax's 0/0 = NaN.
//
// The forward never materialises P ([Tq, Tk] per head): it walks the keys in
// tiles with an online softmax (running max m_i and running sum l_i, each
// partial output rescaled by exp(m_old - m_new) when the max grows) and saves
// only lse_i = m_i + log l_i, O(T) memory instead of O(T²). The backward
// recomputes P_ij = exp(s_ij - lse_i) from Q, K and lse (FlashAttention-2):
//
//   delta_i = Σ_c dO_ic O_ic            (= Σ_j P_ij dP_ij)
//   dV = Pᵀ dO       dP = dO Vᵀ       dS = P ⊙ (dP - delta)
//   dQ = dS K · scale                  dK = dSᵀ Q · scale
//
// Kernels (every one is `extern "C"`, its parameter list mirrored by
// src/backend/cuda/nn/attention.rs):
//   flash_attn_fwd_d{32,64,128}_f32   fused forward, head dims D, Dv <= DMAX
//   attn_bwd_delta_{f32,f64}          delta_i, one warp per query row
//   flash_attn_bwd_d{32,64,128}_f32   fused backward, one block per key tile
//   attn_fwd_ref_{f32,f64}            naive: one thread per query row
//   attn_bwd_ref_dq_{f32,f64}         naive: one thread per query row
//   attn_bwd_ref_dkdv_{f32,f64}       naive: one thread per key row
// All forward kernels share one parameter list, all backward kernels another.
#include "common.cuh"

// Keys per tile. Equal to the warp size on purpose: in the score phases lane
// j of a warp owns key j of the tile, so one warp computes a whole row of
// scores against the tile with one dot product per lane and no reduction.
#define ATTN_BC 32
// Both fused kernels run 4 warps (128 threads) per block.
#define ATTN_WARPS 4
#define ATTN_THREADS (ATTN_WARPS * 32)
#define FULL_MASK 0xffffffffu

// Whether query i (0-based among the Tq queries) may attend to key j.
__device__ __forceinline__ bool attn_visible(i64 i, i64 j, i64 tk, i64 diagonal, bool causal) {
    return j < tk && (!causal || j <= i + diagonal);
}

// ---------------------------------------------------------------------------
// Fused forward.
//
// A block owns BR = ATTN_WARPS·ROWS consecutive query rows of one head; warp w
// owns rows w·ROWS .. w·ROWS+ROWS-1 of them. The block walks the key tiles
// [k0, k0+32) (stopping after the last key any of its rows can see when
// causal). Per tile:
//   1. the block copies K[k0:k0+32, :D] and V[k0:k0+32, :Dv] into shared
//      memory (coalesced: a warp reads one contiguous row at a time); keys past
//      Tk are zeros.
//   2. scores: lane j computes s = q_r·k_j for each of its warp's ROWS rows.
//      q_r[c] is read from shared memory by all lanes at once (a broadcast),
//      k_j[c] at row stride DMAX+1, so the 32 lanes hit 32 different banks.
//   3. online softmax per row: warp max and warp sum by shuffles; the row's
//      accumulators are rescaled by alpha = exp(m_old - m_new).
//   4. O += P V: lane owns output columns c = lane + 32·cc (NC = DMAX/32 of
//      them) of every row of its warp; p_j is broadcast from lane j by a
//      shuffle, V[j][c] read from shared memory (consecutive lanes,
//      consecutive banks).
// Registers per thread: acc[ROWS][NC] (the unnormalised output rows), m, l
// and the scores s[ROWS]. At the end each row is divided by l and lane 0
// writes lse = m + log l.
//
// Shared memory (static, under the 48 KiB limit without opt-in):
//   DMAX=128, ROWS=4 (BR=16): Qs 8 KiB + Ks 16.1 KiB + Vs 16 KiB = 40.1 KiB
//   DMAX=64,  ROWS=8 (BR=32): Qs 8 KiB + Ks 8.1 KiB + Vs 8 KiB
//   DMAX=32,  ROWS=8 (BR=32): 12.1 KiB
// The block loops over (head, query tile) pairs grid-stride, so any grid size
// is correct; the host launches one block per pair.
template <int DMAX, int ROWS>
__device__ void flash_attn_fwd(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                               float* __restrict__ o, float* __restrict__ lse, i64 bh, i64 tq, i64 tk, i64 d, i64 dv,
                               float scale, bool causal, i64 diagonal) {
    constexpr int BR = ATTN_WARPS * ROWS;  // query rows per block
    constexpr int NC = DMAX / 32;          // output columns per lane
    __shared__ float Qs[BR][DMAX];
    __shared__ float Ks[ATTN_BC][DMAX + 1];  // +1: lane j reads row j, column c: conflict-free
    __shared__ float Vs[ATTN_BC][DMAX];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const i64 n_qtiles = (tq + BR - 1) / BR;
    const float neg_inf = t_neg_inf<float>();

    for (i64 tile = blockIdx.x; tile < bh * n_qtiles; tile += gridDim.x) {
        const i64 b = tile / n_qtiles;
        const i64 q0 = (tile - b * n_qtiles) * BR;
        const float* qb = q + b * tq * d;
        const float* kb = k + b * tk * d;
        const float* vb = v + b * tk * dv;

        __syncthreads();  // the previous tile's readers of Qs are done
        for (int r = warp; r < BR; r += ATTN_WARPS) {
            const bool in = q0 + r < tq;
            for (i64 c = lane; c < d; c += 32) Qs[r][c] = in ? qb[(q0 + r) * d + c] : 0.f;
        }

        float m[ROWS], l[ROWS], acc[ROWS][NC];
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            m[r] = neg_inf;
            l[r] = 0.f;
#pragma unroll
            for (int cc = 0; cc < NC; ++cc) acc[r][cc] = 0.f;
        }

        // One past the last key any row of this block can see.
        i64 k_end = tk;
        if (causal && q0 + BR + diagonal < tk) k_end = q0 + BR + diagonal;

        for (i64 k0 = 0; k0 < k_end; k0 += ATTN_BC) {
            __syncthreads();  // the previous key tile's readers are done (and Qs is written)
            for (int r = warp; r < ATTN_BC; r += ATTN_WARPS) {
                const bool in = k0 + r < tk;
                for (i64 c = lane; c < d; c += 32) Ks[r][c] = in ? kb[(k0 + r) * d + c] : 0.f;
                for (i64 c = lane; c < dv; c += 32) Vs[r][c] = in ? vb[(k0 + r) * dv + c] : 0.f;
            }
            __syncthreads();

            // 2. s[r] = q_r · k_lane
            float s[ROWS];
#pragma unroll
            for (int r = 0; r < ROWS; ++r) s[r] = 0.f;
            for (i64 c = 0; c < d; ++c) {
                const float kc = Ks[lane][c];
#pragma unroll
                for (int r = 0; r < ROWS; ++r) s[r] += Qs[warp * ROWS + r][c] * kc;
            }

            // 3. online softmax; s[r] becomes p_r,lane = exp(s - m_new)
            const i64 j = k0 + lane;
#pragma unroll
            for (int r = 0; r < ROWS; ++r) {
                const i64 i = q0 + warp * ROWS + r;
                const float sr = attn_visible(i, j, tk, diagonal, causal) ? s[r] * scale : neg_inf;
                const float m_new = fmaxf(m[r], warp_max(sr));
                // A row that has seen no visible key yet keeps m = -inf; then
                // exp(-inf - -inf) would be NaN, so p = 0 and alpha = 1.
                const float p = (m_new == neg_inf) ? 0.f : expf(sr - m_new);
                const float alpha = (m_new == neg_inf) ? 1.f : expf(m[r] - m_new);
                l[r] = l[r] * alpha + warp_sum(p);
                m[r] = m_new;
#pragma unroll
                for (int cc = 0; cc < NC; ++cc) acc[r][cc] *= alpha;
                s[r] = p;
            }

            // 4. acc[r][c] += Σ_j p_rj V[j][c]
            for (int jj = 0; jj < ATTN_BC; ++jj) {
                float vc[NC];
#pragma unroll
                for (int cc = 0; cc < NC; ++cc) {
                    const int c = lane + 32 * cc;
                    vc[cc] = (c < dv) ? Vs[jj][c] : 0.f;
                }
#pragma unroll
                for (int r = 0; r < ROWS; ++r) {
                    const float pj = __shfl_sync(FULL_MASK, s[r], jj);
#pragma unroll
                    for (int cc = 0; cc < NC; ++cc) acc[r][cc] += pj * vc[cc];
                }
            }
        }

#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            const i64 i = q0 + warp * ROWS + r;
            if (i >= tq) continue;
            const i64 row = b * tq + i;
            // l = 0: the row saw no key; its output is 0 (not 0 · 1/0 = NaN).
            const float inv = l[r] > 0.f ? 1.f / l[r] : 0.f;
#pragma unroll
            for (int cc = 0; cc < NC; ++cc) {
                const int c = lane + 32 * cc;
                if (c < dv) o[row * dv + c] = acc[r][cc] * inv;
            }
            if (lane == 0) lse[row] = m[r] + logf(l[r]);
        }
    }
}

#define FLASH_FWD(DMAX, ROWS)                                                                                        \
    extern "C" __global__ void __launch_bounds__(ATTN_THREADS) flash_attn_fwd_d##DMAX##_f32(                         \
        const float* q, const float* k, const float* v, float* o, float* lse, i64 bh, i64 tq, i64 tk, i64 d, i64 dv, \
        double scale, i64 causal, i64 diagonal) {                                                                    \
        flash_attn_fwd<DMAX, ROWS>(q, k, v, o, lse, bh, tq, tk, d, dv, (float)scale, causal != 0, diagonal);         \
    }
FLASH_FWD(32, 8)
FLASH_FWD(64, 8)
FLASH_FWD(128, 4)

// ---------------------------------------------------------------------------
// delta_i = Σ_c dO_ic · O_ic, the row term of the softmax backward. One warp
// per row (rows = BH·Tq), lanes striding over the Dv columns, a shuffle sum;
// warps loop grid-stride over the rows.
template <typename T>
__device__ void attn_bwd_delta(const T* __restrict__ dout, const T* __restrict__ out, T* __restrict__ delta, i64 rows, i64 dv) {
    const int lane = threadIdx.x & 31;
    const i64 nwarps = ((i64)gridDim.x * blockDim.x) >> 5;
    for (i64 r = ((i64)blockIdx.x * blockDim.x + threadIdx.x) >> 5; r < rows; r += nwarps) {
        T acc = 0;
        for (i64 c = lane; c < dv; c += 32) acc += dout[r * dv + c] * out[r * dv + c];
        acc = warp_sum(acc);
        if (lane == 0) delta[r] = acc;
    }
}

// ---------------------------------------------------------------------------
// Fused backward (FlashAttention-2's loop order).
//
// A block owns one key tile [k0, k0+32) of one head and keeps dK and dV for
// those 32 keys in registers for the whole kernel; it walks the query tiles
// [qt, qt+BQ) that can see any of its keys (from the first query that sees
// key k0 when causal). dK and dV are then written once, without atomics,
// since no other block touches these keys. dQ gets a contribution from every
// key tile, so blocks add theirs with atomicAdd into a zeroed dq (f32).
// (The alternative, a second kernel that owns query tiles and recomputes P
// once more, is deterministic but costs a second pass over K and V; with
// atomics the last bits of dQ may differ from run to run.)
//
// Per query tile, three phases separated by __syncthreads:
//   load   Q[qt:qt+BQ, :D], dO[qt:qt+BQ, :Dv], lse and delta into shared memory.
//   1. P and dS: lane j owns key j of the tile, warp w owns query rows
//      w·QPW .. w·QPW+QPW-1 (QPW = BQ/4). s = q_i·k_j and dp = dO_i·v_j are
//      dot products over shared rows (q_i, dO_i broadcast; k_j, v_j at row
//      stride DMAX+1, conflict-free), then p = exp(s·scale - lse_i),
//      ds = p·(dp - delta_i); both go to shared Ps / dSs [BQ][32].
//   2. dV += Pᵀ dO, dK += dSᵀ Q: thread owns keys w·8 .. w·8+7 and columns
//      c = lane + 32·cc: registers dK[8][NC] and dV[8][NC]. For each query
//      row i of the tile it reads P[i][key] and dS[i][key] (broadcasts) and
//      Q[i][c], dO[i][c] (consecutive lanes) and does 2·8·NC FMAs.
//   3. dQ[i] += dS[i, :] K · scale for the tile's rows: thread owns rows
//      w·QPW + u and columns c = lane + 32·cc, sums over the 32 keys
//      (dS broadcast, K[j][c] consecutive) and atomically adds once per element.
//
// Tiles and shared memory (static, under 48 KiB):
//   DMAX=128, BQ=8:  Ks, Vs 16.1 KiB each + Qs, dOs 4 KiB each + Ps, dSs 1 KiB each = 42.3 KiB
//   DMAX=64,  BQ=32: Ks, Vs 8.1 KiB each + Qs, dOs 8 KiB each + Ps, dSs 4 KiB each = 40.5 KiB
//   DMAX=32,  BQ=32: 24.6 KiB
// Blocks loop over (head, key tile) pairs grid-stride.
template <int DMAX, int BQ>
__device__ void flash_attn_bwd(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                               const float* __restrict__ dout, const float* __restrict__ lse,
                               const float* __restrict__ delta, float* __restrict__ dq, float* __restrict__ dk,
                               float* __restrict__ dv_out, i64 bh, i64 tq, i64 tk, i64 d, i64 dv, float scale,
                               bool causal, i64 diagonal) {
    constexpr int NC = DMAX / 32;               // columns per lane
    constexpr int KPW = ATTN_BC / ATTN_WARPS;   // keys per warp in phase 2 (8)
    constexpr int QPW = BQ / ATTN_WARPS;        // query rows per warp in phases 1 and 3
    static_assert(BQ % ATTN_WARPS == 0, "BQ must split over the warps");
    __shared__ float Ks[ATTN_BC][DMAX + 1];
    __shared__ float Vs[ATTN_BC][DMAX + 1];
    __shared__ float Qs[BQ][DMAX];
    __shared__ float dOs[BQ][DMAX];
    __shared__ float Ps[BQ][ATTN_BC];
    __shared__ float dSs[BQ][ATTN_BC];
    __shared__ float Ls[BQ];
    __shared__ float Ds[BQ];

    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const i64 n_ktiles = (tk + ATTN_BC - 1) / ATTN_BC;

    for (i64 tile = blockIdx.x; tile < bh * n_ktiles; tile += gridDim.x) {
        const i64 b = tile / n_ktiles;
        const i64 k0 = (tile - b * n_ktiles) * ATTN_BC;
        const float* qb = q + b * tq * d;
        const float* kb = k + b * tk * d;
        const float* vb = v + b * tk * dv;
        const float* dob = dout + b * tq * dv;

        __syncthreads();  // the previous tile's readers of Ks/Vs are done
        for (int r = warp; r < ATTN_BC; r += ATTN_WARPS) {
            const bool in = k0 + r < tk;
            for (i64 c = lane; c < d; c += 32) Ks[r][c] = in ? kb[(k0 + r) * d + c] : 0.f;
            for (i64 c = lane; c < dv; c += 32) Vs[r][c] = in ? vb[(k0 + r) * dv + c] : 0.f;
        }

        float dK[KPW][NC], dV[KPW][NC];
#pragma unroll
        for (int u = 0; u < KPW; ++u)
#pragma unroll
            for (int cc = 0; cc < NC; ++cc) dK[u][cc] = dV[u][cc] = 0.f;

        // The first query that sees key k0 is k0 - diagonal (causal); start at its tile.
        i64 q_start = 0;
        if (causal && k0 - diagonal > 0) q_start = ((k0 - diagonal) / BQ) * BQ;

        for (i64 qt = q_start; qt < tq; qt += BQ) {
            __syncthreads();  // the previous query tile's readers are done (and Ks/Vs are written)
            for (int r = warp; r < BQ; r += ATTN_WARPS) {
                const bool in = qt + r < tq;
                for (i64 c = lane; c < d; c += 32) Qs[r][c] = in ? qb[(qt + r) * d + c] : 0.f;
                for (i64 c = lane; c < dv; c += 32) dOs[r][c] = in ? dob[(qt + r) * dv + c] : 0.f;
            }
            if (threadIdx.x < BQ) {
                const bool in = qt + threadIdx.x < tq;
                Ls[threadIdx.x] = in ? lse[b * tq + qt + threadIdx.x] : 0.f;
                Ds[threadIdx.x] = in ? delta[b * tq + qt + threadIdx.x] : 0.f;
            }
            __syncthreads();

            // 1. P and dS for (row warp·QPW + u, key lane)
            {
                float s[QPW], dp[QPW];
#pragma unroll
                for (int u = 0; u < QPW; ++u) s[u] = dp[u] = 0.f;
                for (i64 c = 0; c < d; ++c) {
                    const float kc = Ks[lane][c];
#pragma unroll
                    for (int u = 0; u < QPW; ++u) s[u] += Qs[warp * QPW + u][c] * kc;
                }
                for (i64 c = 0; c < dv; ++c) {
                    const float vc = Vs[lane][c];
#pragma unroll
                    for (int u = 0; u < QPW; ++u) dp[u] += dOs[warp * QPW + u][c] * vc;
                }
                const i64 j = k0 + lane;
#pragma unroll
                for (int u = 0; u < QPW; ++u) {
                    const int ii = warp * QPW + u;
                    const i64 i = qt + ii;
                    const bool ok = i < tq && attn_visible(i, j, tk, diagonal, causal);
                    const float p = ok ? expf(s[u] * scale - Ls[ii]) : 0.f;
                    Ps[ii][lane] = p;
                    dSs[ii][lane] = ok ? p * (dp[u] - Ds[ii]) : 0.f;
                }
            }
            __syncthreads();

            // 2. dV[key] += P[i][key] dO[i], dK[key] += dS[i][key] Q[i]
            for (int ii = 0; ii < BQ; ++ii) {
                float qv[NC], dov[NC];
#pragma unroll
                for (int cc = 0; cc < NC; ++cc) {
                    const int c = lane + 32 * cc;
                    qv[cc] = (c < d) ? Qs[ii][c] : 0.f;
                    dov[cc] = (c < dv) ? dOs[ii][c] : 0.f;
                }
#pragma unroll
                for (int u = 0; u < KPW; ++u) {
                    const float p = Ps[ii][warp * KPW + u];
                    const float ds = dSs[ii][warp * KPW + u];
#pragma unroll
                    for (int cc = 0; cc < NC; ++cc) {
                        dV[u][cc] += p * dov[cc];
                        dK[u][cc] += ds * qv[cc];
                    }
                }
            }

            // 3. dQ[i] += scale · Σ_key dS[i][key] K[key]
#pragma unroll
            for (int u = 0; u < QPW; ++u) {
                const int ii = warp * QPW + u;
                const i64 i = qt + ii;
                float acc[NC];
#pragma unroll
                for (int cc = 0; cc < NC; ++cc) acc[cc] = 0.f;
                for (int jj = 0; jj < ATTN_BC; ++jj) {
                    const float ds = dSs[ii][jj];
#pragma unroll
                    for (int cc = 0; cc < NC; ++cc) {
                        const int c = lane + 32 * cc;
                        if (c < d) acc[cc] += ds * Ks[jj][c];
                    }
                }
                if (i < tq) {
#pragma unroll
                    for (int cc = 0; cc < NC; ++cc) {
                        const int c = lane + 32 * cc;
                        if (c < d) atomicAdd(&dq[(b * tq + i) * d + c], acc[cc] * scale);
                    }
                }
            }
        }

        // dK, dV for the tile's keys: this block's alone, plain stores.
#pragma unroll
        for (int u = 0; u < KPW; ++u) {
            const i64 j = k0 + warp * KPW + u;
            if (j >= tk) continue;
            const i64 row = b * tk + j;
#pragma unroll
            for (int cc = 0; cc < NC; ++cc) {
                const int c = lane + 32 * cc;
                if (c < d) dk[row * d + c] = dK[u][cc] * scale;
                if (c < dv) dv_out[row * dv + c] = dV[u][cc];
            }
        }
    }
}

#define FLASH_BWD(DMAX, BQ)                                                                                          \
    extern "C" __global__ void __launch_bounds__(ATTN_THREADS) flash_attn_bwd_d##DMAX##_f32(                         \
        const float* q, const float* k, const float* v, const float* dout, const float* lse, const float* delta,     \
        float* dq, float* dk, float* dv_out, i64 bh, i64 tq, i64 tk, i64 d, i64 dv, double scale, i64 causal,        \
        i64 diagonal) {                                                                                              \
        flash_attn_bwd<DMAX, BQ>(q, k, v, dout, lse, delta, dq, dk, dv_out, bh, tq, tk, d, dv, (float)scale,         \
                                 causal != 0, diagonal);                                                             \
    }
FLASH_BWD(32, 32)
FLASH_BWD(64, 32)
FLASH_BWD(128, 8)

// ---------------------------------------------------------------------------
// Reference kernels: the definition, written as plainly as possible, for the
// parity tests of the fused kernels (selected with
// tamer::backend::cuda::attention::with_attention_impl(AttentionImpl::Reference, ..)
// or TAMER_ATTENTION=reference). One thread computes a whole row; grid-stride
// over rows; no shared memory, no atomics, so they are deterministic.

// Forward: thread per query row r = (b, i). Pass 1 finds the row max over the
// visible keys; pass 2 accumulates l and the unnormalised output row in o.
template <typename T>
__device__ void attn_fwd_ref(const T* q, const T* k, const T* v, T* o, T* lse, i64 bh, i64 tq, i64 tk, i64 d, i64 dv,
                             T scale, bool causal, i64 diagonal) {
    GRID_STRIDE_LOOP(r, bh * tq) {
        const i64 b = r / tq, i = r - b * tq;
        const T* qi = q + r * d;
        const T* kb = k + b * tk * d;
        const T* vb = v + b * tk * dv;
        T* oi = o + r * dv;
        T m = t_neg_inf<T>();
        for (i64 j = 0; j < tk; ++j) {
            if (!attn_visible(i, j, tk, diagonal, causal)) continue;
            T s = 0;
            for (i64 c = 0; c < d; ++c) s += qi[c] * kb[j * d + c];
            m = t_max(m, s * scale);
        }
        for (i64 c = 0; c < dv; ++c) oi[c] = 0;
        T l = 0;
        for (i64 j = 0; j < tk; ++j) {
            if (!attn_visible(i, j, tk, diagonal, causal)) continue;
            T s = 0;
            for (i64 c = 0; c < d; ++c) s += qi[c] * kb[j * d + c];
            const T p = t_exp(s * scale - m);
            l += p;
            for (i64 c = 0; c < dv; ++c) oi[c] += p * vb[j * dv + c];
        }
        // l = 0: the row saw no key; its output stays 0 (and lse = -inf).
        if (l > 0)
            for (i64 c = 0; c < dv; ++c) oi[c] /= l;
        lse[r] = m + t_log(l);
    }
}

// dQ: thread per query row r = (b, i), over the keys it sees.
template <typename T>
__device__ void attn_bwd_ref_dq(const T* q, const T* k, const T* v, const T* dout, const T* lse, const T* delta, T* dq,
                                i64 bh, i64 tq, i64 tk, i64 d, i64 dv, T scale, bool causal, i64 diagonal) {
    GRID_STRIDE_LOOP(r, bh * tq) {
        const i64 b = r / tq, i = r - b * tq;
        const T* qi = q + r * d;
        const T* doi = dout + r * dv;
        const T* kb = k + b * tk * d;
        const T* vb = v + b * tk * dv;
        T* dqi = dq + r * d;
        for (i64 c = 0; c < d; ++c) dqi[c] = 0;
        for (i64 j = 0; j < tk; ++j) {
            if (!attn_visible(i, j, tk, diagonal, causal)) continue;
            T s = 0, dp = 0;
            for (i64 c = 0; c < d; ++c) s += qi[c] * kb[j * d + c];
            for (i64 c = 0; c < dv; ++c) dp += doi[c] * vb[j * dv + c];
            const T p = t_exp(s * scale - lse[r]);
            const T ds = p * (dp - delta[r]);
            for (i64 c = 0; c < d; ++c) dqi[c] += ds * scale * kb[j * d + c];
        }
    }
}

// dK and dV: thread per key row r = (b, j), over the queries that see it.
template <typename T>
__device__ void attn_bwd_ref_dkdv(const T* q, const T* k, const T* v, const T* dout, const T* lse, const T* delta,
                                  T* dk, T* dv_out, i64 bh, i64 tq, i64 tk, i64 d, i64 dv, T scale, bool causal,
                                  i64 diagonal) {
    GRID_STRIDE_LOOP(r, bh * tk) {
        const i64 b = r / tk, j = r - b * tk;
        const T* kj = k + r * d;
        const T* vj = v + r * dv;
        T* dkj = dk + r * d;
        T* dvj = dv_out + r * dv;
        for (i64 c = 0; c < d; ++c) dkj[c] = 0;
        for (i64 c = 0; c < dv; ++c) dvj[c] = 0;
        for (i64 i = 0; i < tq; ++i) {
            if (!attn_visible(i, j, tk, diagonal, causal)) continue;
            const i64 qr = b * tq + i;
            const T* qi = q + qr * d;
            const T* doi = dout + qr * dv;
            T s = 0, dp = 0;
            for (i64 c = 0; c < d; ++c) s += qi[c] * kj[c];
            for (i64 c = 0; c < dv; ++c) dp += doi[c] * vj[c];
            const T p = t_exp(s * scale - lse[qr]);
            const T ds = p * (dp - delta[qr]);
            for (i64 c = 0; c < dv; ++c) dvj[c] += p * doi[c];
            for (i64 c = 0; c < d; ++c) dkj[c] += ds * scale * qi[c];
        }
    }
}

#define ATTN_REF(SUFFIX, T)                                                                                          \
    extern "C" __global__ void attn_fwd_ref_##SUFFIX(const T* q, const T* k, const T* v, T* o, T* lse, i64 bh,       \
                                                     i64 tq, i64 tk, i64 d, i64 dv, double scale, i64 causal,        \
                                                     i64 diagonal) {                                                 \
        attn_fwd_ref<T>(q, k, v, o, lse, bh, tq, tk, d, dv, (T)scale, causal != 0, diagonal);                        \
    }                                                                                                                \
    extern "C" __global__ void attn_bwd_delta_##SUFFIX(const T* dout, const T* out, T* delta, i64 rows, i64 dv) {    \
        attn_bwd_delta<T>(dout, out, delta, rows, dv);                                                               \
    }                                                                                                                \
    extern "C" __global__ void attn_bwd_ref_dq_##SUFFIX(const T* q, const T* k, const T* v, const T* dout,           \
                                                        const T* lse, const T* delta, T* dq, T* dk, T* dv_out,       \
                                                        i64 bh, i64 tq, i64 tk, i64 d, i64 dv, double scale,         \
                                                        i64 causal, i64 diagonal) {                                  \
        attn_bwd_ref_dq<T>(q, k, v, dout, lse, delta, dq, bh, tq, tk, d, dv, (T)scale, causal != 0, diagonal);       \
    }                                                                                                                \
    extern "C" __global__ void attn_bwd_ref_dkdv_##SUFFIX(const T* q, const T* k, const T* v, const T* dout,         \
                                                          const T* lse, const T* delta, T* dq, T* dk, T* dv_out,     \
                                                          i64 bh, i64 tq, i64 tk, i64 d, i64 dv, double scale,       \
                                                          i64 causal, i64 diagonal) {                                \
        attn_bwd_ref_dkdv<T>(q, k, v, dout, lse, delta, dk, dv_out, bh, tq, tk, d, dv, (T)scale, causal != 0,        \
                             diagonal);                                                                              \
    }
ATTN_REF(f32, float)
ATTN_REF(f64, double)
