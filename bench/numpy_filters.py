"""The usual alternative: the same filters written the way a numpy user writes them, with the
same conventions as pg_enkf (prior inflation, Gaspari-Cohn R-localization for the LETKF,
tapered regression for the serial EAKF), so that results can be compared number for number."""

import numpy as np


def gaspari_cohn(d, c):
    d = np.abs(np.asarray(d, dtype=float))
    if c <= 0:
        return (d == 0).astype(float)
    r = d / c
    w = np.zeros_like(r)
    a = r <= 1
    ra = r[a]
    w[a] = (((-0.25 * ra + 0.5) * ra + 0.625) * ra - 5 / 3) * ra**2 + 1
    b = (r > 1) & (r < 2)
    rb = r[b]
    w[b] = ((((rb / 12 - 0.5) * rb + 0.625) * rb + 5 / 3) * rb - 5) * rb + 4 - 2 / (3 * rb)
    return np.maximum(w, 0)


def _distance(i, j, n, periodic):
    d = np.abs(np.asarray(i) - np.asarray(j))
    return np.minimum(d, n - d) if periodic else d


def etkf(E, y, r, idx, infl=1.0):
    n, N = E.shape
    xb = E.mean(axis=1)
    A = (E - xb[:, None]) * infl
    s = 1 / np.sqrt(r)
    S = A[idx] * s[:, None]
    d = (y - xb[idx]) * s
    lam, Q = np.linalg.eigh((N - 1) * np.eye(N) + S.T @ S)
    T = (Q * np.sqrt((N - 1) / lam)) @ Q.T
    w = Q @ ((Q.T @ (S.T @ d)) / lam)
    return xb[:, None] + A @ (T + w[:, None])


def eakf(E, y, r, idx, infl=1.0, c=None, periodic=False):
    n, N = E.shape
    xb = E.mean(axis=1)
    A = (E - xb[:, None]) * infl
    for k in range(len(y)):
        i = idx[k]
        ya = A[i].copy()
        vb = ya @ ya / (N - 1)
        if vb <= 0:
            continue
        dm = vb / (vb + r[k]) * (y[k] - xb[i])
        shrink = np.sqrt(r[k] / (vb + r[k])) - 1
        if c is None:
            sel = slice(None)
            rho = 1.0
        else:
            reach = int(np.ceil(2 * c))
            if periodic:
                sel = np.arange(i - reach, i + reach + 1) % n
            else:
                sel = np.arange(max(0, i - reach), min(n, i + reach + 1))
            rho = gaspari_cohn(_distance(sel, i, n, periodic), c)
        g = rho * (A[sel] @ ya) / (N - 1) / vb
        xb[sel] += g * dm
        A[sel] += np.outer(g * shrink, ya)
    return xb[:, None] + A


def letkf(E, y, r, idx, infl=1.0, c=None, periodic=False):
    n, N = E.shape
    if c is None:
        return etkf(E, y, r, idx, infl)
    xb = E.mean(axis=1)
    A = (E - xb[:, None]) * infl
    Yb = A[idx]
    dy = y - xb[idx]
    out = np.empty_like(E)
    idx = np.asarray(idx)
    for l in range(n):
        rho = gaspari_cohn(_distance(idx, l, n, periodic), c)
        loc = rho > 0
        if not loc.any():
            out[l] = xb[l] + A[l]
            continue
        s = np.sqrt(rho[loc] / r[loc])
        S = Yb[loc] * s[:, None]
        d = dy[loc] * s
        lam, Q = np.linalg.eigh((N - 1) * np.eye(N) + S.T @ S)
        T = (Q * np.sqrt((N - 1) / lam)) @ Q.T
        w = Q @ ((Q.T @ (S.T @ d)) / lam)
        out[l] = xb[l] + A[l] @ (T + w[:, None])
    return out
