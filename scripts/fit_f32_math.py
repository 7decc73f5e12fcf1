#!/usr/bin/env python3
"""Fit the polynomial coefficients of tamer's f32 erf/GELU/tanh kernels
(src/backend/cpu/simd/math.rs) and print them as Rust constants.

Never needed to build or test tamer: the coefficients are checked into
math.rs, whose tests measure the accuracy they give against f64 references.
Rerun this only to change a degree or an interval (numpy and mpmath needed):

    python3 -m venv /tmp/fitvenv && /tmp/fitvenv/bin/pip install numpy mpmath
    /tmp/fitvenv/bin/python scripts/fit_f32_math.py

Method: a near-minimax fit of the relative error (Lawson's iteratively
reweighted least squares on Chebyshev nodes, references from mpmath at 40
digits), coefficients rounded to f32. Each printed error is measured by
evaluating the rounded coefficients with f32 fused multiply-adds as the
kernels do, in units of 2⁻²⁴ relative to the function's value (an upper
bound on ulps: one ulp is between 2⁻²⁴ and 2⁻²³ relative).
"""
import mpmath as mp
import numpy as np

mp.mp.dps = 40
f32 = np.float32


def cheb(a, b, n):
    k = np.arange(n)
    return (a + b) / 2 + (b - a) / 2 * np.cos(np.pi * (k + 0.5) / n)


def fit(xs, target, scale, powers, iters=300):
    """f32 coefficients c of sum_k c_k x^powers[k] ≈ target(x), minimising
    max |error| / |scale(x)| (Lawson's algorithm)."""
    y = np.array([float(target(x)) for x in xs])
    s = np.abs(np.array([float(scale(x)) for x in xs]))
    A = np.array([[float(x) ** p for p in powers] for x in xs]) / s[:, None]
    b = y / s
    w = np.full(len(xs), 1.0 / len(xs))
    best = (np.inf, None)
    for _ in range(iters):
        sw = np.sqrt(w)
        c, *_ = np.linalg.lstsq(A * sw[:, None], b * sw, rcond=None)
        e = np.abs(A @ c - b)
        if e.max() < best[0]:
            best = (e.max(), c)
        w = np.maximum(w * e, 1e-300)
        w /= w.sum()
    return [f32(c) for c in best[1]]


def fma32(a, b, c):
    return f32(np.float64(a) * np.float64(b) + np.float64(c))


def horner32(c32, t):
    acc = c32[-1]
    for ck in c32[-2::-1]:
        acc = fma32(acc, t, ck)
    return acc


def worst(xs, got, want):
    return max(float(abs(got(x) - want(x)) / abs(want(x))) for x in xs) / 2**-24


def rust(values):
    return ", ".join(repr(float(v)) for v in values)


# Φ(−u)·e^{u²/2} for u ≥ 0: 8 pieces of width 2, centred at 1, 3, .., 15, each
# of degree 10 in r = u − centre. Printed transposed: PHI_TAIL[j][piece] is the
# coefficient of r^j, so that a vector kernel looks up row j with one permute.
Q = lambda u: mp.ncdf(-u) * mp.exp(u * u / 2)
DEG, PIECES = 10, 8
pieces, err = [], 0.0
for k in range(PIECES):
    centre = 2 * k + 1
    c = fit(cheb(-1, 1, 240), lambda r: Q(centre + mp.mpf(r)), lambda r: Q(centre + mp.mpf(r)), range(DEG + 1))
    us = np.linspace(2 * k, 2 * k + 2, 2000, endpoint=False).astype(f32)
    err = max(err, worst(us, lambda u: float(horner32(c, f32(u - f32(centre)))), lambda u: Q(mp.mpf(float(u)))))
    pieces.append(c)
print(f"// Φ(−u)·e^(u²/2): worst error {err:.2f} × 2⁻²⁴")
print(f"const PHI_TAIL: [[f32; {PIECES}]; {DEG + 1}] = [")
for j in range(DEG + 1):
    print(f"    [{rust(p[j] for p in pieces)}],")
print("];")

# erf(z) = z + z·P(z²) for |z| < 0.5: the leading 1 stays exact.
erf_over_z = lambda z: mp.erf(mp.mpf(z)) / mp.mpf(z)
c = fit(cheb(1e-6, 0.5, 300), lambda z: erf_over_z(z) - 1, erf_over_z, [2 * j for j in range(6)])
zs = np.linspace(1e-6, 0.5, 5000).astype(f32)
err = worst(zs, lambda z: float(fma32(z, horner32(c, f32(z * z)), z)), lambda z: mp.erf(mp.mpf(float(z))))
print(f"// erf(z) = z + z·P(z²), |z| < 0.5: worst error {err:.2f} × 2⁻²⁴")
print(f"const ERF_SMALL: [f32; {len(c)}] = [{rust(c)}];")

# tanh(x) = x + x³·P(x²) for |x| < 0.625
cube_ratio = lambda x: (mp.tanh(mp.mpf(x)) - mp.mpf(x)) / mp.mpf(x) ** 3
c = fit(cheb(1e-4, 0.625, 300), cube_ratio, lambda x: mp.tanh(mp.mpf(x)) / mp.mpf(x) ** 3, [2 * j for j in range(6)])
xs = np.linspace(1e-4, 0.625, 5000).astype(f32)
err = worst(xs, lambda x: float(fma32(f32(x * f32(x * x)), horner32(c, f32(x * x)), x)), lambda x: mp.tanh(mp.mpf(float(x))))
print(f"// tanh(x) = x + x³·P(x²), |x| < 0.625: worst error {err:.2f} × 2⁻²⁴")
print(f"const TANH_SMALL: [f32; {len(c)}] = [{rust(c)}];")

# GELU below |x| = 2 (most activations), without the exponential: Φ(−u) and
# the derivative's s(u) = Φ(−u) − u·φ(u) on [0, 2) as two pieces of width 1,
# centred at 1/2 and 3/2. Φ(−u) to its own size; s, which crosses zero, to the
# size of its terms Φ(−u) + u·φ(u) (what the derivative's accuracy is
# measured against). Printed by power, then piece.
phi_minus = lambda u: mp.ncdf(-u)
slope = lambda u: mp.ncdf(-u) - u * mp.npdf(u)
slope_terms = lambda u: mp.ncdf(-u) + u * mp.npdf(u)
for name, f, scale, deg in [("PHI_BELOW_2", phi_minus, phi_minus, 9), ("GELU_SLOPE_BELOW_2", slope, slope_terms, 8)]:
    pieces, err = [], 0.0
    for centre in (0.5, 1.5):
        c = fit(cheb(-0.5, 0.5, 300), lambda r: f(centre + mp.mpf(r)), lambda r: scale(centre + mp.mpf(r)), range(deg + 1))
        us = np.linspace(centre - 0.5, centre + 0.5, 3000, endpoint=False).astype(f32)
        got = lambda u: float(horner32(c, f32(u - f32(centre))))
        err = max(err, max(float(abs(got(u) - f(mp.mpf(float(u)))) / abs(scale(mp.mpf(float(u))))) for u in us) / 2**-24)
        pieces.append(c)
    print(f"// {name}: worst error {err:.2f} × 2⁻²⁴")
    print(f"const {name}: [[f32; 2]; {deg + 1}] = [")
    for j in range(deg + 1):
        print(f"    [{rust(p[j] for p in pieces)}],")
    print("];")
