//! Forecast models. The chaotic Lorenz systems are the standard testbeds of data assimilation
//! (the twin experiments that check the filters against published RMSEs).

pub mod lorenz63;
pub mod lorenz96;
pub mod seirh;

/// One classical fourth-order Runge-Kutta step of `dx/dt = f(x)`, in place.
pub fn rk4_step(x: &mut [f64], dt: f64, f: impl Fn(&[f64], &mut [f64])) {
    let n = x.len();
    let mut k1 = vec![0.0; n];
    let mut k2 = vec![0.0; n];
    let mut k3 = vec![0.0; n];
    let mut k4 = vec![0.0; n];
    let mut tmp = vec![0.0; n];
    f(x, &mut k1);
    for i in 0..n {
        tmp[i] = x[i] + 0.5 * dt * k1[i];
    }
    f(&tmp, &mut k2);
    for i in 0..n {
        tmp[i] = x[i] + 0.5 * dt * k2[i];
    }
    f(&tmp, &mut k3);
    for i in 0..n {
        tmp[i] = x[i] + dt * k3[i];
    }
    f(&tmp, &mut k4);
    for i in 0..n {
        x[i] += dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
    }
}
