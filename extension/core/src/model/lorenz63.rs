//! Lorenz (1963) with the classical parameters sigma = 10, rho = 28, beta = 8/3.

use super::rk4_step;

#[derive(Debug, Clone, Copy)]
pub struct Lorenz63 {
    pub sigma: f64,
    pub rho: f64,
    pub beta: f64,
    pub dt: f64,
}

impl Default for Lorenz63 {
    fn default() -> Self {
        Lorenz63 {
            sigma: 10.0,
            rho: 28.0,
            beta: 8.0 / 3.0,
            dt: 0.01,
        }
    }
}

impl Lorenz63 {
    pub fn tendency(&self, x: &[f64], out: &mut [f64]) {
        out[0] = self.sigma * (x[1] - x[0]);
        out[1] = x[0] * (self.rho - x[2]) - x[1];
        out[2] = x[0] * x[1] - self.beta * x[2];
    }

    pub fn step(&self, x: &mut [f64]) {
        rk4_step(x, self.dt, |s, o| self.tendency(s, o));
    }
}
