//! Rigid transforms for MimicGen's object-centric pose arithmetic.
//!
//! MimicGen stores poses as 4x4 homogeneous matrices; a rotation plus a
//! translation is the same thing without the constant last row, and keeps
//! inversion exact (`[Rᵀ, −Rᵀt]`) instead of a general matrix inverse.
use crate::env::Pose;
use crate::math::{self, Mat3, Vec3};

/// A pose in the world frame, or a change of frame: `x_world = rot · x_local + pos`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Transform {
    pub rot: Mat3,
    pub pos: Vec3,
}

impl Transform {
    pub const IDENTITY: Transform = Transform {
        rot: math::IDENTITY,
        pos: [0.0; 3],
    };

    pub fn from_pose(p: &Pose) -> Self {
        Self {
            rot: p.mat(),
            pos: p.pos,
        }
    }

    pub fn to_pose(&self) -> Pose {
        Pose {
            pos: self.pos,
            quat: math::mat_to_quat(&self.rot),
        }
    }

    /// `self · other`: `other` expressed in `self`'s frame, mapped to the world.
    pub fn compose(&self, other: &Transform) -> Transform {
        Transform {
            rot: math::matmul(&self.rot, &other.rot),
            pos: math::add(math::mat_vec(&self.rot, other.pos), self.pos),
        }
    }

    pub fn inverse(&self) -> Transform {
        let rt = math::transpose(&self.rot);
        Transform {
            rot: rt,
            pos: math::scale(math::mat_vec(&rt, self.pos), -1.0),
        }
    }

    /// Row-major 4x4 homogeneous matrix (MimicGen's `datagen_info` layout).
    pub fn to_matrix4(&self) -> [[f64; 4]; 4] {
        let r = &self.rot;
        [
            [r[0], r[1], r[2], self.pos[0]],
            [r[3], r[4], r[5], self.pos[1]],
            [r[6], r[7], r[8], self.pos[2]],
            [0.0, 0.0, 0.0, 1.0],
        ]
    }
}

/// Geodesic angle between two rotations, in [0, pi].
pub fn rotation_angle(a: &Mat3, b: &Mat3) -> f64 {
    let r = math::matmul(a, &math::transpose(b));
    let c = ((r[0] + r[4] + r[8] - 1.0) / 2.0).clamp(-1.0, 1.0);
    c.acos()
}

/// MimicGen's segment transform: every pose keeps its placement relative to
/// the object, `T_new = T_obj_now · T_obj_src⁻¹ · T_src`.
pub fn transform_segment(
    poses: &[Transform],
    obj_src: &Transform,
    obj_now: &Transform,
) -> Vec<Transform> {
    let delta = obj_now.compose(&obj_src.inverse());
    poses.iter().map(|p| delta.compose(p)).collect()
}

/// `steps` intermediate poses strictly between `from` and `to`, then `to`
/// itself (MimicGen's `interpolate_poses` without its start pose). Position
/// moves linearly; the rotation turns about the fixed axis of `to · fromᵀ`.
pub fn interpolate(from: &Transform, to: &Transform, steps: usize) -> Vec<Transform> {
    let delta = math::mat_to_axis_angle(&math::matmul(&to.rot, &math::transpose(&from.rot)));
    let n = steps + 1;
    (1..=n)
        .map(|k| {
            if k == n {
                return *to;
            }
            let f = k as f64 / n as f64;
            Transform {
                rot: math::matmul(&math::axis_angle_to_mat(math::scale(delta, f)), &from.rot),
                pos: math::add(from.pos, math::scale(math::sub(to.pos, from.pos), f)),
            }
        })
        .collect()
}

/// The 24 proper rotations that map a cube onto itself (signed permutation
/// matrices with determinant +1).
fn cube_symmetries() -> impl Iterator<Item = Mat3> {
    const PERMS: [[usize; 3]; 6] = [[0, 1, 2], [0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]];
    PERMS.into_iter().flat_map(|p| {
        (0..8).filter_map(move |signs: u32| {
            let mut m = [0.0; 9];
            for (row, &c) in p.iter().enumerate() {
                m[row * 3 + c] = if signs & (1 << row) != 0 { -1.0 } else { 1.0 };
            }
            let det = m[0] * (m[4] * m[8] - m[5] * m[7]) - m[1] * (m[3] * m[8] - m[5] * m[6])
                + m[2] * (m[3] * m[7] - m[4] * m[6]);
            (det > 0.0).then_some(m)
        })
    })
}

/// Of the 24 frames that describe the same physical pose of a cube, the one
/// whose orientation is closest to `reference`.
///
/// MimicGen uses the object's body frame as it is; for a cube, a source demo
/// whose cube sat at yaw 80° would then turn the gripper by up to 180° to
/// reach a cube at yaw -95°, although a 5° turn grasps the same faces. Picking
/// the symmetric frame keeps transformed trajectories close to the source and
/// inside the wrist's joint range.
pub fn closest_cube_frame(pose: &Transform, reference: &Transform) -> Transform {
    cube_symmetries()
        .map(|s| Transform {
            rot: math::matmul(&pose.rot, &s),
            pos: pose.pos,
        })
        .min_by(|a, b| {
            rotation_angle(&a.rot, &reference.rot).total_cmp(&rotation_angle(&b.rot, &reference.rot))
        })
        .expect("the symmetry group is not empty")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &Transform, b: &Transform, tol: f64) -> bool {
        (0..9).all(|i| (a.rot[i] - b.rot[i]).abs() < tol) && (0..3).all(|i| (a.pos[i] - b.pos[i]).abs() < tol)
    }

    fn t(axis_angle: Vec3, pos: Vec3) -> Transform {
        Transform {
            rot: math::axis_angle_to_mat(axis_angle),
            pos,
        }
    }

    #[test]
    fn inverse_and_composition_round_trip() {
        let a = t([0.3, -1.2, 0.7], [0.1, -0.4, 0.9]);
        let b = t([-0.5, 0.2, 2.0], [0.6, 0.2, -0.3]);
        assert!(close(&a.compose(&a.inverse()), &Transform::IDENTITY, 1e-12));
        assert!(close(&a.inverse().compose(&a), &Transform::IDENTITY, 1e-12));
        // (ab)⁻¹ = b⁻¹a⁻¹, and composition is associative.
        assert!(close(&a.compose(&b).inverse(), &b.inverse().compose(&a.inverse()), 1e-12));
        let c = t([1.0, 0.0, 0.0], [0.0, 0.0, 1.0]);
        assert!(close(&a.compose(&b).compose(&c), &a.compose(&b.compose(&c)), 1e-12));
        // Pose <-> transform keeps the pose.
        assert!(close(&Transform::from_pose(&a.to_pose()), &a, 1e-12));
        // Matches the 4x4 matrix product.
        let (ma, mb, mab) = (a.to_matrix4(), b.to_matrix4(), a.compose(&b).to_matrix4());
        for i in 0..4 {
            for j in 0..4 {
                let v: f64 = (0..4).map(|k| ma[i][k] * mb[k][j]).sum();
                assert!((v - mab[i][j]).abs() < 1e-12);
            }
        }
    }

    #[test]
    fn segment_keeps_pose_relative_to_object() {
        let obj_src = t([0.0, 0.0, 0.4], [0.05, -0.02, 0.82]);
        let obj_now = t([0.0, 0.0, -1.9], [-0.15, 0.12, 0.82]);
        let eef = [t([3.1, 0.0, 0.0], [0.05, -0.02, 0.95]), t([3.0, 0.2, 0.1], [0.07, 0.0, 0.83])];
        let out = transform_segment(&eef, &obj_src, &obj_now);
        for (src, new) in eef.iter().zip(&out) {
            let rel_src = obj_src.inverse().compose(src);
            let rel_new = obj_now.inverse().compose(new);
            assert!(close(&rel_src, &rel_new, 1e-12));
        }
        // Same object pose: nothing moves.
        assert!(close(&transform_segment(&eef, &obj_src, &obj_src)[1], &eef[1], 1e-12));
    }

    #[test]
    fn interpolation_ends_at_goal_in_even_steps() {
        let a = t([3.0, 0.0, 0.0], [0.0, 0.0, 1.0]);
        let b = t([2.9, 0.3, 0.0], [0.1, -0.2, 0.9]);
        let w = interpolate(&a, &b, 5);
        assert_eq!(w.len(), 6);
        assert_eq!(w[5], b);
        let total = rotation_angle(&a.rot, &b.rot);
        let mut prev = a;
        for p in &w {
            let step = math::norm(math::sub(p.pos, prev.pos));
            assert!((step - math::norm(math::sub(b.pos, a.pos)) / 6.0).abs() < 1e-12);
            assert!((rotation_angle(&p.rot, &prev.rot) - total / 6.0).abs() < 1e-9);
            prev = *p;
        }
    }

    #[test]
    fn cube_frames_are_the_24_symmetries() {
        let all: Vec<Mat3> = cube_symmetries().collect();
        assert_eq!(all.len(), 24);
        let pose = t([0.0, 0.0, 1.4], [0.1, 0.0, 0.82]);
        // A cube turned by 90° + 5° about z is 5° away from the reference.
        let reference = t([0.0, 0.0, 1.4 - std::f64::consts::FRAC_PI_2 - 0.05], [0.0; 3]);
        let f = closest_cube_frame(&pose, &reference);
        assert!((rotation_angle(&f.rot, &reference.rot) - 0.05).abs() < 1e-9);
        assert_eq!(f.pos, pose.pos);
    }
}
