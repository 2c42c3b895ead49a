//! The CT screening profile (seed 002, S4C): component rule, voxel-count
//! verdict and arterial OR venous fusion, on label maps built voxel by voxel.

use edgeseg::gpu::Backend;
use edgeseg::post::screening::{ScreeningRules, fuse, screen_phase};
use edgeseg::volume::{Geometry, Volume};

fn empty(dims: [usize; 3]) -> Volume<u8> {
    Volume::filled(
        Geometry {
            dims,
            spacing: [0.8, 0.8, 1.0],
            origin: [0.0; 3],
            direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        },
        0,
    )
}

/// Fills a box [lo, hi) with a class.
fn fill(v: &mut Volume<u8>, lo: [usize; 3], hi: [usize; 3], class: u8) {
    for z in lo[2]..hi[2] {
        for y in lo[1]..hi[1] {
            for x in lo[0]..hi[0] {
                let i = v.geometry.index(x, y, z);
                v.data[i] = class;
            }
        }
    }
}

fn count(v: &Volume<u8>, class: u8) -> usize {
    v.data.iter().filter(|&&c| c == class).count()
}

#[test]
fn components_far_and_small_are_removed_near_or_large_kept() {
    let mut v = empty([120, 60, 40]);
    fill(&mut v, [10, 10, 10], [30, 30, 30], 1); // C_max: 8000 voxels of pancreas
    fill(&mut v, [15, 15, 15], [19, 19, 19], 2); // 64 tumour voxels inside it
    fill(&mut v, [45, 10, 10], [48, 13, 13], 2); // small tumour 27 voxels, 16 voxels away: kept
    fill(&mut v, [100, 10, 10], [103, 13, 13], 2); // small tumour far (> 27 voxels): removed
    fill(&mut v, [70, 40, 10], [85, 55, 20], 1); // 2250 voxels (> 20% of 8000), far: kept
    let r = screen_phase(&Backend::Cpu, &mut v, &ScreeningRules::default()).expect("screen");
    assert_eq!(r.components, 4);
    assert_eq!(r.components_removed, 1);
    assert_eq!(count(&v, 2), 64 + 27);
    assert_eq!(r.tumour_voxels, 91);
    assert!(r.abnormal);
    assert!(r.rule.as_deref().is_some_and(|s| s.contains("tumour 91")));
}

#[test]
fn thresholds_decide_the_phase() {
    // 39 tumour voxels: normal; 40: abnormal.
    for (n, abnormal) in [(39usize, false), (40, true)] {
        let mut v = empty([60, 20, 20]);
        fill(&mut v, [5, 5, 5], [25, 15, 15], 1);
        for i in 0..n {
            let idx = v.geometry.index(6 + i % 10, 6 + i / 10, 6);
            v.data[idx] = 2;
        }
        let r = screen_phase(&Backend::Cpu, &mut v, &ScreeningRules::default()).expect("screen");
        assert_eq!(r.abnormal, abnormal, "{n} tumour voxels");
    }
    // 500 dilated-duct voxels and no tumour: abnormal by the duct rule.
    let mut v = empty([60, 30, 20]);
    fill(&mut v, [5, 5, 5], [30, 25, 15], 1);
    fill(&mut v, [6, 6, 6], [16, 16, 11], 3);
    let r = screen_phase(&Backend::Cpu, &mut v, &ScreeningRules::default()).expect("screen");
    assert_eq!(r.duct_voxels, 500);
    assert!(r.abnormal && r.rule.as_deref().is_some_and(|s| s.contains("duct")));
}

#[test]
fn arterial_or_venous() {
    let mut normal = empty([40, 20, 20]);
    fill(&mut normal, [5, 5, 5], [20, 15, 15], 1);
    let mut abnormal = normal.clone();
    fill(&mut abnormal, [6, 6, 6], [11, 11, 8], 2);
    let n = screen_phase(&Backend::Cpu, &mut normal, &ScreeningRules::default()).expect("n");
    let a = screen_phase(&Backend::Cpu, &mut abnormal, &ScreeningRules::default()).expect("a");
    assert!(!fuse(Some(n.clone()), Some(n.clone())).abnormal);
    let v = fuse(Some(n.clone()), Some(a.clone()));
    assert!(v.abnormal);
    assert!(v.reason.as_deref().is_some_and(|r| r.starts_with("venous")));
    assert!(fuse(Some(a), None).abnormal);
    assert!(!fuse(None, Some(n)).abnormal);
}
