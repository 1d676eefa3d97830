//! Small fixed-size linear algebra. The controller needs only 3x3 rotations
//! and 6x6/7x7 solves, so a dependency on a full linear-algebra crate would
//! cost more build time than it saves. Matrices are row-major like MuJoCo's.

pub type Vec3 = [f64; 3];
pub type Mat3 = [f64; 9];

pub const IDENTITY: Mat3 = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0];

pub fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}
pub fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}
pub fn scale(a: Vec3, s: f64) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}
pub fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}
pub fn norm(a: Vec3) -> f64 {
    (a[0] * a[0] + a[1] * a[1] + a[2] * a[2]).sqrt()
}

pub fn matmul(a: &Mat3, b: &Mat3) -> Mat3 {
    let mut r = [0.0; 9];
    for i in 0..3 {
        for j in 0..3 {
            r[i * 3 + j] = (0..3).map(|k| a[i * 3 + k] * b[k * 3 + j]).sum();
        }
    }
    r
}
pub fn mat_vec(m: &Mat3, v: Vec3) -> Vec3 {
    [
        m[0] * v[0] + m[1] * v[1] + m[2] * v[2],
        m[3] * v[0] + m[4] * v[1] + m[5] * v[2],
        m[6] * v[0] + m[7] * v[1] + m[8] * v[2],
    ]
}
pub fn transpose(a: &Mat3) -> Mat3 {
    [a[0], a[3], a[6], a[1], a[4], a[7], a[2], a[5], a[8]]
}
pub fn col(a: &Mat3, j: usize) -> Vec3 {
    [a[j], a[3 + j], a[6 + j]]
}

/// Rotation about world z.
pub fn rot_z(yaw: f64) -> Mat3 {
    let (s, c) = yaw.sin_cos();
    [c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0]
}

/// Rodrigues: axis-angle vector (direction = axis, length = angle) to matrix.
pub fn axis_angle_to_mat(v: Vec3) -> Mat3 {
    let th = norm(v);
    if th < 1e-12 {
        return IDENTITY;
    }
    let k = scale(v, 1.0 / th);
    let (s, c) = th.sin_cos();
    let t = 1.0 - c;
    [
        c + k[0] * k[0] * t,
        k[0] * k[1] * t - k[2] * s,
        k[0] * k[2] * t + k[1] * s,
        k[1] * k[0] * t + k[2] * s,
        c + k[1] * k[1] * t,
        k[1] * k[2] * t - k[0] * s,
        k[2] * k[0] * t - k[1] * s,
        k[2] * k[1] * t + k[0] * s,
        c + k[2] * k[2] * t,
    ]
}

/// Quaternion (w, x, y, z) to matrix.
pub fn quat_to_mat(q: [f64; 4]) -> Mat3 {
    let [w, x, y, z] = q;
    [
        1.0 - 2.0 * (y * y + z * z),
        2.0 * (x * y - z * w),
        2.0 * (x * z + y * w),
        2.0 * (x * y + z * w),
        1.0 - 2.0 * (x * x + z * z),
        2.0 * (y * z - x * w),
        2.0 * (x * z - y * w),
        2.0 * (y * z + x * w),
        1.0 - 2.0 * (x * x + y * y),
    ]
}

/// Matrix to quaternion (w, x, y, z), w >= 0.
pub fn mat_to_quat(m: &Mat3) -> [f64; 4] {
    let tr = m[0] + m[4] + m[8];
    let q = if tr > 0.0 {
        let s = (tr + 1.0).sqrt() * 2.0;
        [
            0.25 * s,
            (m[7] - m[5]) / s,
            (m[2] - m[6]) / s,
            (m[3] - m[1]) / s,
        ]
    } else if m[0] > m[4] && m[0] > m[8] {
        let s = (1.0 + m[0] - m[4] - m[8]).sqrt() * 2.0;
        [
            (m[7] - m[5]) / s,
            0.25 * s,
            (m[1] + m[3]) / s,
            (m[2] + m[6]) / s,
        ]
    } else if m[4] > m[8] {
        let s = (1.0 + m[4] - m[0] - m[8]).sqrt() * 2.0;
        [
            (m[2] - m[6]) / s,
            (m[1] + m[3]) / s,
            0.25 * s,
            (m[5] + m[7]) / s,
        ]
    } else {
        let s = (1.0 + m[8] - m[0] - m[4]).sqrt() * 2.0;
        [
            (m[3] - m[1]) / s,
            (m[2] + m[6]) / s,
            (m[5] + m[7]) / s,
            0.25 * s,
        ]
    };
    let n = (q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3]).sqrt();
    let s = if q[0] < 0.0 { -1.0 / n } else { 1.0 / n };
    [q[0] * s, q[1] * s, q[2] * s, q[3] * s]
}

/// Matrix to axis-angle vector with angle in [0, pi].
pub fn mat_to_axis_angle(m: &Mat3) -> Vec3 {
    let q = mat_to_quat(m);
    let v = [q[1], q[2], q[3]];
    let s = norm(v);
    if s < 1e-12 {
        return [0.0; 3];
    }
    let angle = 2.0 * s.atan2(q[0]);
    scale(v, angle / s)
}

/// Orientation error used by operational-space control: half the sum of
/// column cross products, which equals sin(angle)*axis for small errors.
pub fn orientation_error(desired: &Mat3, current: &Mat3) -> Vec3 {
    let mut e = [0.0; 3];
    for j in 0..3 {
        e = add(e, cross(col(current, j), col(desired, j)));
    }
    scale(e, 0.5)
}

/// Yaw of a gripper frame: heading of its x axis projected onto the table.
pub fn yaw_of(m: &Mat3) -> f64 {
    m[3].atan2(m[0])
}

/// Wraps an angle to (-pi, pi].
pub fn wrap_pi(a: f64) -> f64 {
    let mut a = a % (2.0 * std::f64::consts::PI);
    if a > std::f64::consts::PI {
        a -= 2.0 * std::f64::consts::PI;
    } else if a <= -std::f64::consts::PI {
        a += 2.0 * std::f64::consts::PI;
    }
    a
}

/// Standard normal sample (Box-Muller), to avoid a distributions crate.
pub fn gaussian<R: rand::Rng>(rng: &mut R) -> f64 {
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random_range(0.0..1.0);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

/// Inverse of a dense n x n matrix (row-major) by Gauss-Jordan with partial
/// pivoting. Near-singular pivots are regularised instead of failing, which
/// mirrors the pseudo-inverse the reference controller uses at singularities.
pub fn inverse(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut inv = vec![0.0; n * n];
    for i in 0..n {
        inv[i * n + i] = 1.0;
    }
    for c in 0..n {
        let mut p = c;
        for r in c + 1..n {
            if m[r * n + c].abs() > m[p * n + c].abs() {
                p = r;
            }
        }
        if p != c {
            for k in 0..n {
                m.swap(c * n + k, p * n + k);
                inv.swap(c * n + k, p * n + k);
            }
        }
        let mut piv = m[c * n + c];
        if piv.abs() < 1e-9 {
            piv = if piv < 0.0 { -1e-9 } else { 1e-9 };
        }
        let ip = 1.0 / piv;
        for k in 0..n {
            m[c * n + k] *= ip;
            inv[c * n + k] *= ip;
        }
        for r in 0..n {
            if r != c {
                let f = m[r * n + c];
                if f != 0.0 {
                    for k in 0..n {
                        m[r * n + k] -= f * m[c * n + k];
                        inv[r * n + k] -= f * inv[c * n + k];
                    }
                }
            }
        }
    }
    inv
}

/// C = A (r x k) * B (k x c), all row-major.
pub fn mul(a: &[f64], b: &[f64], r: usize, k: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for t in 0..k {
            let av = a[i * k + t];
            if av != 0.0 {
                for j in 0..c {
                    out[i * c + j] += av * b[t * c + j];
                }
            }
        }
    }
    out
}

/// Transpose of an r x c matrix.
pub fn transpose_n(a: &[f64], r: usize, c: usize) -> Vec<f64> {
    let mut out = vec![0.0; r * c];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = a[i * c + j];
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_angle_round_trip() {
        let v = [0.3, -0.2, 0.5];
        let m = axis_angle_to_mat(v);
        let w = mat_to_axis_angle(&m);
        for i in 0..3 {
            assert!((v[i] - w[i]).abs() < 1e-9);
        }
        let q = mat_to_quat(&m);
        let m2 = quat_to_mat(q);
        for i in 0..9 {
            assert!((m[i] - m2[i]).abs() < 1e-9);
        }
    }

    #[test]
    fn inverse_works() {
        let a = [4.0, 1.0, 0.0, 1.0, 3.0, 1.0, 0.0, 1.0, 2.0];
        let inv = inverse(&a, 3);
        let id = mul(&a, &inv, 3, 3, 3);
        for i in 0..3 {
            for j in 0..3 {
                let e = if i == j { 1.0 } else { 0.0 };
                assert!((id[i * 3 + j] - e).abs() < 1e-9);
            }
        }
    }
}
