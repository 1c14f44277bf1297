//! Lorenz (1996): `dx_i/dt = (x_{i+1} - x_{i-2}) x_{i-1} - x_i + F` on a ring.

use super::rk4_step;

#[derive(Debug, Clone, Copy)]
pub struct Lorenz96 {
    pub forcing: f64,
    pub dt: f64,
}

impl Default for Lorenz96 {
    fn default() -> Self {
        Lorenz96 {
            forcing: 8.0,
            dt: 0.05,
        }
    }
}

impl Lorenz96 {
    pub fn tendency(&self, x: &[f64], out: &mut [f64]) {
        let n = x.len();
        for i in 0..n {
            let xp1 = x[(i + 1) % n];
            let xm1 = x[(i + n - 1) % n];
            let xm2 = x[(i + n - 2) % n];
            out[i] = (xp1 - xm2) * xm1 - x[i] + self.forcing;
        }
    }

    pub fn step(&self, x: &mut [f64]) {
        rk4_step(x, self.dt, |s, o| self.tendency(s, o));
    }
}
