//! ETKF, the symmetric square-root form of Hunt, Kostelich and Szunyogh (2007):
//! `xa = xbar + A w`, `Aa = A T` with `T = [(N-1) M^{-1}]^{1/2}` symmetric, which keeps the
//! analysis mean exactly the Kalman mean and the anomalies centred.
//!
//! Streamed, in place: the transform depends only on the observed elements, so it is computed
//! first, then applied to the state in blocks of columns small enough to stay in cache. Memory
//! beyond the ensemble itself is O(N^2 + m N), whatever the state size, and the ensemble is read
//! twice and written once.

use super::transform::{etkf_operator, AnomalyTransform, PARALLEL_MIN_FLOPS};
use super::{all_finite, overflowed, rotation, Observations, Options};
use crate::error::{EnkfError, Result};
use crate::linalg::dense::{dot, sum, view_mut};
use crate::workers::{Job, Workers};

/// Values of scratch per block: 256 KiB, a typical L2 cache.
const BLOCK_VALUES: usize = 32 * 1024;
/// Blocks handed to each thread between two interrupt checks.
const BLOCKS_PER_ROUND: usize = 8;

/// The analysis of the members-major ensemble `data` (members x n, column-major), in place.
/// Arguments other than the ensemble's values are already validated.
pub(crate) fn analyze_in_place(
    data: &mut [f64],
    members: usize,
    obs: &Observations,
    opts: &Options,
    interrupt: &dyn Fn(),
    workers: &dyn Workers,
) -> Result<()> {
    let n = data.len() / members;
    let mean = column_means(data, members)?;
    let infl = opts.inflation;
    let a = (members - 1) as f64;
    let (s, d) = whiten(data, members, &mean, infl, obs)?;
    interrupt();
    let (mut op, w) = etkf_operator(&s, &d, a, workers, interrupt);
    if opts.rotate {
        op = op.rotated(&rotation::mean_preserving_rotation(members, opts.seed));
    }
    let step = Step {
        members,
        op: &op,
        w: w.as_slice(),
        infl,
        rtps: opts.rtps,
    };
    let block = (BLOCK_VALUES / members).max(8);
    // Other threads only pay for themselves on a large product (handing work over and
    // waiting for it costs microseconds; the caller's workers may even start threads).
    let threads = if n * members * members >= PARALLEL_MIN_FLOPS {
        workers.threads().max(1)
    } else {
        1
    };
    let round = block * BLOCKS_PER_ROUND * threads;
    let mut finite = true;
    for (cols, mu) in data.chunks_mut(members * round).zip(mean.chunks(round)) {
        interrupt();
        let width = mu.len();
        let per_thread = width.div_ceil(threads).max(1);
        let mut flags = vec![true; width.div_ceil(per_thread)];
        let jobs: Vec<Job> = cols
            .chunks_mut(members * per_thread)
            .zip(mu.chunks(per_thread))
            .zip(flags.iter_mut())
            .map(|((c, m), ok)| {
                let step = &step;
                Box::new(move || *ok = step.run(c, m, block)) as Job
            })
            .collect();
        workers.run(jobs);
        finite &= flags.iter().all(|&ok| ok);
    }
    if !finite {
        return Err(overflowed(data, members));
    }
    Ok(())
}

/// Per-element means; a non-finite value anywhere makes its column's sum non-finite, so the
/// finiteness check rides on the same pass.
fn column_means(data: &[f64], members: usize) -> Result<Vec<f64>> {
    let mut mean = Vec::with_capacity(data.len() / members);
    for (l, col) in data.chunks_exact(members).enumerate() {
        let total = sum(col);
        if !total.is_finite() {
            return Err(match col.iter().position(|v| !v.is_finite()) {
                Some(j) => EnkfError::invalid(
                    "ensemble",
                    format!("ensemble element [{}][{}] is {}", l + 1, j + 1, col[j]),
                    "all ensemble values must be finite numbers",
                ),
                None => EnkfError::invalid(
                    "ensemble",
                    format!(
                        "the members of state element {} overflow when summed",
                        l + 1
                    ),
                    "rescale the state: values near 1e300 or beyond cannot be averaged",
                ),
            });
        }
        mean.push(total / members as f64);
    }
    Ok(mean)
}

/// `S^T = (R^{-1/2} H A)^T` (members x m, A the inflated anomalies: each observation's
/// members contiguous) and `d = R^{-1/2}(y - H xbar)`, straight from the ensemble.
fn whiten(
    data: &[f64],
    members: usize,
    mean: &[f64],
    infl: f64,
    obs: &Observations,
) -> Result<(nalgebra::DMatrix<f64>, nalgebra::DVector<f64>)> {
    let m = obs.len();
    let mut st = super::workspace::try_zeros(members, m, "observations")?;
    let mut d = nalgebra::DVector::zeros(m);
    for (k, out) in st.as_mut_slice().chunks_exact_mut(members).enumerate() {
        let scale = 1.0 / obs.variance[k].sqrt();
        let i = obs.index[k];
        let col = &data[i * members..(i + 1) * members];
        for (o, v) in out.iter_mut().zip(col) {
            *o = (v - mean[i]) * infl * scale;
        }
        d[k] = (obs.values[k] - mean[i]) * scale;
    }
    Ok((st, d))
}

/// What every block needs: the transform, the mean weights and the tuning.
struct Step<'a> {
    members: usize,
    op: &'a AnomalyTransform,
    w: &'a [f64],
    infl: f64,
    rtps: f64,
}

impl Step<'_> {
    /// Updates the columns `cols` (members x k) whose prior means are `mean`, `block` columns
    /// at a time. Returns whether every result is finite.
    fn run(&self, cols: &mut [f64], mean: &[f64], block: usize) -> bool {
        let n = self.members;
        let mut anomalies = Vec::with_capacity(n * block);
        let mut tmp = Vec::new();
        let mut shift = Vec::with_capacity(block);
        let mut finite = true;
        for (chunk, mu) in cols.chunks_mut(n * block).zip(mean.chunks(block)) {
            let k = mu.len();
            anomalies.clear();
            shift.clear();
            for (col, m) in chunk.chunks_exact(n).zip(mu) {
                let start = anomalies.len();
                anomalies.extend(col.iter().map(|v| (v - m) * self.infl));
                let a = &anomalies[start..];
                shift.push(m + dot(a, self.w));
            }
            self.op.apply(
                faer::MatRef::from_column_major_slice(&anomalies, n, k),
                view_mut(chunk, n, k),
                &mut tmp,
            );
            for ((col, prior), shift) in chunk
                .chunks_exact_mut(n)
                .zip(anomalies.chunks_exact(n))
                .zip(&shift)
            {
                if self.rtps > 0.0 {
                    relax(col, prior, self.rtps);
                }
                col.iter_mut().for_each(|v| *v += shift);
            }
            finite &= all_finite(chunk);
        }
        finite
    }
}

/// Relaxation to prior spread for one element: scales its analysis anomalies so that their
/// spread moves a fraction `rtps` of the way back to the prior's (nothing to scale at zero spread).
fn relax(post: &mut [f64], prior: &[f64], rtps: f64) {
    let sb = dot(prior, prior).sqrt();
    let sa = dot(post, post).sqrt();
    if sa > 0.0 {
        let f = 1.0 + rtps * (sb - sa) / sa;
        post.iter_mut().for_each(|v| *v *= f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nalgebra::DMatrix;

    #[test]
    fn blocks_do_not_change_the_answer() {
        // Every block size gives the transform applied to the whole matrix at once.
        let (members, n) = (6, 37);
        let data: Vec<f64> = (0..members * n)
            .map(|i| ((i * 37 % 101) as f64).sin())
            .collect();
        let idx = [0usize, 5, 36];
        let obs = Observations {
            values: &[0.3, -0.2, 0.9],
            variance: &[0.5, 0.5, 0.25],
            index: &idx,
        };
        let mean = column_means(&data, members).unwrap();
        let (s, d) = whiten(&data, members, &mean, 1.1, &obs).unwrap();
        let (op, w) = etkf_operator(
            &s,
            &d,
            (members - 1) as f64,
            &crate::workers::Sequential,
            &|| {},
        );
        let step = Step {
            members,
            op: &op,
            w: w.as_slice(),
            infl: 1.1,
            rtps: 0.3,
        };
        let mut whole = data.clone();
        assert!(step.run(&mut whole, &mean, n));
        for block in [1, 2, 5, 36] {
            let mut blocked = data.clone();
            assert!(step.run(&mut blocked, &mean, block));
            let diff = DMatrix::from_vec(members, n, blocked)
                - DMatrix::from_vec(members, n, whole.clone());
            assert!(diff.amax() < 1e-13, "block {block}");
        }
    }

    fn max_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn threads_and_blocks_agree_with_one_pass() {
        use crate::workers::{ScopedThreads, Sequential};
        // Enough columns for several rounds and uneven thread shares; m < N and m >= N; with
        // rotation and RTPS so that every branch of a block runs.
        let members = 9;
        // Above the threading threshold, and more than one round of blocks.
        let n = 2 * PARALLEL_MIN_FLOPS / (members * members) + 13;
        assert!(n > BLOCK_VALUES / members * BLOCKS_PER_ROUND * 3);
        let data: Vec<f64> = (0..members * n)
            .map(|i| ((i * 7919 % 10007) as f64 * 0.01).cos())
            .collect();
        for m in [4usize, 40] {
            let idx: Vec<usize> = (0..m).map(|k| k * n / m).collect();
            let y: Vec<f64> = (0..m).map(|k| (k as f64).sin()).collect();
            let r = vec![0.3; m];
            let obs = Observations {
                values: &y,
                variance: &r,
                index: &idx,
            };
            let opts = Options {
                inflation: 1.05,
                rtps: 0.5,
                rotate: true,
                seed: 3,
                ..Options::default()
            };
            let mut one = data.clone();
            let mean = column_means(&one, members).unwrap();
            let (s, d) = whiten(&one, members, &mean, opts.inflation, &obs).unwrap();
            let (op, w) = etkf_operator(&s, &d, (members - 1) as f64, &Sequential, &|| {});
            let op = op.rotated(&rotation::mean_preserving_rotation(members, opts.seed));
            let step = Step {
                members,
                op: &op,
                w: w.as_slice(),
                infl: opts.inflation,
                rtps: opts.rtps,
            };
            assert!(step.run(&mut one, &mean, n));
            for threads in [1, 2, 3] {
                let mut out = data.clone();
                analyze_in_place(
                    &mut out,
                    members,
                    &obs,
                    &opts,
                    &|| {},
                    &ScopedThreads(threads),
                )
                .unwrap();
                let diff = max_diff(&out, &one);
                assert!(diff < 1e-12, "m {m} threads {threads}: {diff}");
            }
            let mut seq = data.clone();
            analyze_in_place(&mut seq, members, &obs, &opts, &|| {}, &Sequential).unwrap();
            let diff = max_diff(&seq, &one);
            assert!(diff < 1e-12, "sequential m {m}: {diff}");
        }
    }

    #[test]
    fn interrupt_is_called_between_rounds() {
        let members = 4;
        let n = 4 * BLOCK_VALUES / members * BLOCKS_PER_ROUND;
        let mut data: Vec<f64> = (0..members * n).map(|i| (i % 5) as f64).collect();
        let obs = Observations {
            values: &[1.0],
            variance: &[1.0],
            index: &[0],
        };
        let calls = std::cell::Cell::new(0);
        analyze_in_place(
            &mut data,
            members,
            &obs,
            &Options::default(),
            &|| calls.set(calls.get() + 1),
            &crate::workers::Sequential,
        )
        .unwrap();
        assert!(calls.get() >= 4, "{} interrupt checks", calls.get());
    }
}
