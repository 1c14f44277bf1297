//! Distance-based localization: the Gaspari-Cohn taper and the distances it is applied to.

/// Gaspari and Cohn (1999), eq. 4.10: a compactly supported fifth-order piecewise rational
/// function, 1 at distance 0, 0 from distance `2c` on. `c = 0` keeps only distance 0.
pub fn gaspari_cohn(distance: f64, c: f64) -> f64 {
    let d = distance.abs();
    if c <= 0.0 {
        return if d == 0.0 { 1.0 } else { 0.0 };
    }
    let r = d / c;
    if r >= 2.0 {
        0.0
    } else if r <= 1.0 {
        // -r^5/4 + r^4/2 + 5r^3/8 - 5r^2/3 + 1, in Horner form
        ((((-0.25 * r + 0.5) * r + 0.625) * r - 5.0 / 3.0) * r * r) + 1.0
    } else {
        // r^5/12 - r^4/2 + 5r^3/8 + 5r^2/3 - 5r + 4 - 2/(3r)
        let w = ((((r / 12.0 - 0.5) * r + 0.625) * r + 5.0 / 3.0) * r - 5.0) * r + 4.0
            - 2.0 / (3.0 * r);
        // The polynomial is ~1e-17 negative just below r = 2 through rounding.
        w.max(0.0)
    }
}

/// Where state elements sit: element `i` (0-based) at position `i`, optionally on a ring of
/// `len` positions so that distances wrap.
#[derive(Debug, Clone, Copy)]
pub struct Domain {
    pub len: usize,
    pub periodic: bool,
}

impl Domain {
    pub fn distance(&self, a: usize, b: usize) -> f64 {
        let d = a.abs_diff(b);
        if self.periodic {
            d.min(self.len - d) as f64
        } else {
            d as f64
        }
    }
}

/// A taper over a domain; `radius = None` means no localization (weight 1 everywhere).
#[derive(Debug, Clone, Copy)]
pub struct Taper {
    pub domain: Domain,
    pub radius: Option<f64>,
}

impl Taper {
    pub fn weight(&self, a: usize, b: usize) -> f64 {
        match self.radius {
            None => 1.0,
            Some(c) => gaspari_cohn(self.domain.distance(a, b), c),
        }
    }

    /// The state elements within the taper's support around `center`, with their weights,
    /// without visiting the whole domain when the support is small.
    pub fn neighbours(&self, center: usize, out: &mut Vec<(usize, f64)>) {
        out.clear();
        let n = self.domain.len;
        let c = match self.radius {
            None => {
                out.extend((0..n).map(|i| (i, 1.0)));
                return;
            }
            Some(c) => c,
        };
        // Elements strictly inside distance 2c can carry weight.
        let reach = (2.0 * c).ceil() as usize;
        if 2 * reach + 1 >= n {
            out.extend((0..n).filter_map(|i| {
                let w = self.weight(center, i);
                (w > 0.0).then_some((i, w))
            }));
            return;
        }
        for off in 0..=2 * reach {
            let signed = off as isize - reach as isize;
            let pos = center as isize + signed;
            let idx = if self.domain.periodic {
                pos.rem_euclid(n as isize) as usize
            } else if pos < 0 || pos >= n as isize {
                continue;
            } else {
                pos as usize
            };
            let w = self.weight(center, idx);
            if w > 0.0 {
                out.push((idx, w));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaspari_cohn_known_values() {
        assert_eq!(gaspari_cohn(0.0, 3.0), 1.0);
        // r = 1: -1/4 + 1/2 + 5/8 - 5/3 + 1 = 5/24
        assert!((gaspari_cohn(3.0, 3.0) - 5.0 / 24.0).abs() < 1e-15);
        assert_eq!(gaspari_cohn(6.0, 3.0), 0.0);
        assert_eq!(gaspari_cohn(7.0, 3.0), 0.0);
        assert!(gaspari_cohn(5.999, 3.0) >= 0.0);
        // Continuous at r = 1 from the right branch too.
        let r: f64 = 1.0 + 1e-9;
        let right = (((r / 12.0 - 0.5) * r + 0.625) * r + 5.0 / 3.0) * r * r - 5.0 * r + 4.0
            - 2.0 / (3.0 * r);
        assert!((right - 5.0 / 24.0).abs() < 1e-7);
        assert_eq!(gaspari_cohn(0.0, 0.0), 1.0);
        assert_eq!(gaspari_cohn(1.0, 0.0), 0.0);
    }

    #[test]
    fn gaspari_cohn_is_monotone_and_bounded() {
        let mut prev = 1.0;
        for k in 0..=2000 {
            let w = gaspari_cohn(k as f64 * 0.001, 1.0);
            assert!((0.0..=1.0).contains(&w));
            assert!(w <= prev + 1e-15, "not monotone at {k}");
            prev = w;
        }
    }

    #[test]
    fn periodic_distance_wraps() {
        let d = Domain {
            len: 40,
            periodic: true,
        };
        assert_eq!(d.distance(0, 39), 1.0);
        assert_eq!(d.distance(5, 25), 20.0);
        let d = Domain {
            len: 40,
            periodic: false,
        };
        assert_eq!(d.distance(0, 39), 39.0);
    }

    #[test]
    fn neighbours_match_full_scan() {
        for periodic in [false, true] {
            for c in [0.0, 0.5, 1.0, 2.3, 7.28, 30.0] {
                let taper = Taper {
                    domain: Domain { len: 40, periodic },
                    radius: Some(c),
                };
                let mut got = Vec::new();
                for center in [0, 1, 17, 38, 39] {
                    taper.neighbours(center, &mut got);
                    let mut want: Vec<(usize, f64)> = (0..40)
                        .map(|i| (i, taper.weight(center, i)))
                        .filter(|(_, w)| *w > 0.0)
                        .collect();
                    got.sort_by_key(|p| p.0);
                    want.sort_by_key(|p| p.0);
                    assert_eq!(got, want, "periodic={periodic} c={c} center={center}");
                }
            }
        }
    }
}
