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

/// The same step for a fixed-size state on the stack: no allocation, for models stepped
/// millions of times (the twin's members).
pub fn rk4_step_fixed<const N: usize>(
    x: &mut [f64; N],
    dt: f64,
    f: impl Fn(&[f64; N], &mut [f64; N]),
) {
    let mut k1 = [0.0; N];
    let mut k2 = [0.0; N];
    let mut k3 = [0.0; N];
    let mut k4 = [0.0; N];
    let mut tmp = [0.0; N];
    f(x, &mut k1);
    for i in 0..N {
        tmp[i] = x[i] + 0.5 * dt * k1[i];
    }
    f(&tmp, &mut k2);
    for i in 0..N {
        tmp[i] = x[i] + 0.5 * dt * k2[i];
    }
    f(&tmp, &mut k3);
    for i in 0..N {
        tmp[i] = x[i] + dt * k3[i];
    }
    f(&tmp, &mut k4);
    for i in 0..N {
        x[i] += dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_and_slice_rk4_agree() {
        let f = |s: &[f64], o: &mut [f64]| {
            o[0] = s[1];
            o[1] = -s[0];
        };
        let mut a = vec![1.0, 0.0];
        let mut b = [1.0, 0.0];
        for _ in 0..100 {
            rk4_step(&mut a, 0.1, f);
            rk4_step_fixed(&mut b, 0.1, |s: &[f64; 2], o: &mut [f64; 2]| f(s, o));
        }
        assert_eq!(a, b.to_vec());
        // cos(10) after 100 steps of 0.1, to RK4 accuracy.
        assert!((b[0] - 10f64.cos()).abs() < 1e-5);
    }
}
