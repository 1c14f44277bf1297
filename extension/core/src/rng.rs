//! Seeded random numbers. ChaCha is portable, so a seed gives the same draws on every machine.

use rand::{Rng as _, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

pub type Rng = ChaCha8Rng;

pub fn seeded(seed: u64) -> Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// A standard normal draw.
pub fn normal(rng: &mut Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// A uniform draw in [0, 1).
pub fn uniform(rng: &mut Rng) -> f64 {
    rng.gen::<f64>()
}

/// A uniform index in 0..n (n > 0).
pub fn index(rng: &mut Rng, n: usize) -> usize {
    rng.gen_range(0..n)
}
