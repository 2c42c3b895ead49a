//! Post-processing profiles on generated studies: the PET/CT total-tumour
//! profile run on the phantom's truth label map (as a perfect model would
//! predict it) must find every lesion the generator placed, with its SUVmax,
//! volume and position; the liver reference must come out near the liver's
//! uptake; predictions outside the body and specks under 0.1 ml must go; the
//! liver-threshold segmentation must catch every lesion; a lesion grown from a
//! seed point must cover the lesion it was placed in.

use edgeseg::export::nifti;
use edgeseg::gpu::Backend;
use edgeseg::ingest;
use edgeseg::post::pet::{self, PetRules, SeedThreshold};
use edgeseg::volume::Volume;

use crate::util::{phantom, truth};

fn study() -> (Volume<f32>, Volume<u8>, Volume<f32>, serde_json::Value) {
    let p = phantom(&["--size", "small", "--vendor", "siemens", "--nuclide", "cu64", "--seed", "11"]);
    let t = truth(&p);
    let index = ingest::index(&p.join("dicom/PT"));
    let pet = index.series[0].plan().and_then(|p| p.load()).expect("PET loads");
    assert!(matches!(pet.info.suv, ingest::SuvStatus::Available(_)));
    let classes = nifti::read_f32(&p.join("truth/labels_pet.nii.gz")).expect("labels");
    let lesions = nifti::read_f32(&p.join("truth/lesions_pet.nii.gz")).expect("lesions");
    let classes = Volume { geometry: classes.geometry, data: classes.data.iter().map(|&v| v as u8).collect() };
    (pet.volume, classes, lesions, t)
}

#[test]
fn total_tumour_profile_finds_the_generated_lesions() {
    let (suv, classes, truth_lesions, t) = study();
    let backend = Backend::Cpu;
    let rules = PetRules::default();
    let r = pet::total_tumour(&backend, &classes, &suv, &rules).expect("profile");
    let truth_list = t["lesions"].as_array().expect("lesions");
    let min_voxels = (rules.min_lesion_ml / suv.geometry.voxel_volume_ml()).ceil() as u64;
    let expected: Vec<&serde_json::Value> =
        truth_list.iter().filter(|l| l["voxels_pet"].as_u64().expect("voxels") >= min_voxels).collect();
    assert_eq!(r.table.len(), expected.len(), "lesions found vs placed (≥ 0.1 ml)");
    for l in &expected {
        let id = l["id"].as_u64().expect("id") as f32;
        let centre: Vec<f64> =
            l["centre_lps_mm"].as_array().expect("c").iter().map(|v| v.as_f64().expect("f")).collect();
        // The lesion whose centroid is nearest the placed centre.
        let (found, dist) = r
            .table
            .iter()
            .map(|f| (f, (0..3).map(|a| (f.centroid_lps_mm[a] - centre[a]).powi(2)).sum::<f64>().sqrt()))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("a lesion");
        let voxel = suv.geometry.spacing.iter().cloned().fold(0.0, f64::max);
        assert!(dist < voxel, "lesion {id}: centroid {dist:.1} mm from the placed centre");
        let truth_voxels = truth_lesions.data.iter().filter(|&&v| v == id).count() as u64;
        assert_eq!(found.voxels, truth_voxels, "lesion {id}: voxel count");
        let truth_max = truth_lesions
            .data
            .iter()
            .zip(&suv.data)
            .filter(|(v, _)| **v == id)
            .map(|(_, s)| *s)
            .fold(f32::MIN, f32::max);
        assert_eq!(found.suv_max, f64::from(truth_max), "lesion {id}: SUVmax");
        assert!(found.suv_peak <= found.suv_max && found.suv_peak > 0.0);
        assert!((found.tlg - found.suv_mean * found.volume_ml).abs() < 1e-9);
    }
    let p = &r.patient;
    let total: f64 = r.table.iter().map(|l| l.volume_ml).sum();
    assert!((p.total_tumour_volume_ml - total).abs() < 1e-9);
    let lowest = r.table.iter().map(|l| l.suv_mean).fold(f64::MAX, f64::min);
    assert_eq!(p.lowest_lesion_suv_mean, Some(lowest));
    let reference = p.reference.as_ref().expect("liver reference");
    let liver_suv = t["organs_suv"]["liver"].as_f64().expect("liver suv");
    assert!((reference.suv_mean - liver_suv).abs() < 0.15 * liver_suv, "liver SUVmean {}", reference.suv_mean);
    assert!((reference.threshold - (1.5 * reference.suv_mean + 2.0 * reference.suv_sd)).abs() < 1e-9);
    // Numbering is canonical: lesion 1 holds the first lesion voxel in raster order.
    let first = r.lesions.data.iter().position(|&l| l != 0).expect("a lesion voxel");
    assert_eq!(r.lesions.data[first], 1);
}

#[test]
fn predictions_outside_the_body_and_specks_are_removed() {
    let (suv, mut classes, _, _) = study();
    let g = suv.geometry.clone();
    // A false positive in the air at a corner, and a one-voxel speck inside the body.
    let corner = g.index(1, 1, g.dims[2] / 2);
    classes.data[corner] = 1;
    // The speck: a body voxel (SUV > 0.5) with no lesion within 2 voxels.
    let isolated = |x: usize, y: usize, z: usize| {
        (z - 2..=z + 2).all(|k| (y - 2..=y + 2).all(|j| (x - 2..=x + 2).all(|i| classes.data[g.index(i, j, k)] != 1)))
    };
    let (cx, cy, cz) = (3..g.dims[2] - 3)
        .flat_map(|z| (3..g.dims[1] - 3).flat_map(move |y| (3..g.dims[0] - 3).map(move |x| (x, y, z))))
        .find(|&(x, y, z)| suv.data[g.index(x, y, z)] > 0.5 && isolated(x, y, z))
        .expect("an isolated body voxel");
    let centre = g.index(cx, cy, cz);
    let was = classes.data[centre];
    classes.data[centre] = 1;
    let before = pet::total_tumour(&Backend::Cpu, &study().1, &suv, &PetRules::default()).expect("profile");
    let r = pet::total_tumour(&Backend::Cpu, &classes, &suv, &PetRules::default()).expect("profile");
    assert_eq!(r.classes.data[corner], 0, "outside the body");
    assert!(r.patient.removed_outside_body_voxels >= 1);
    if was != 1 {
        assert_eq!(r.classes.data[centre], 0, "a one-voxel speck is under 0.1 ml");
        assert!(r.patient.removed_small_components >= 1);
    }
    assert_eq!(r.table.len(), before.table.len());
    // The body holds every organ and lesion: nothing real was removed.
    assert_eq!(before.patient.removed_outside_body_voxels, 0);
}

#[test]
fn liver_threshold_segmentation_catches_every_lesion() {
    let (suv, classes, truth_lesions, _) = study();
    let rules = PetRules::default();
    let r = pet::total_tumour(&Backend::Cpu, &classes, &suv, &rules).expect("profile");
    let thr = r.patient.reference.as_ref().expect("reference").threshold;
    let seg = pet::threshold_segmentation(&Backend::Cpu, &suv, thr, &rules).expect("threshold");
    let n = truth_lesions.data.iter().cloned().fold(0f32, f32::max) as u32;
    for id in 1..=n {
        let hit = truth_lesions.data.iter().zip(&seg.data).any(|(&t, &s)| t == id as f32 && s != 0);
        assert!(hit, "lesion {id} missed by the liver-threshold segmentation (threshold {thr:.2})");
    }
    // Physiological uptake (spleen, kidneys, bladder) is also above it, as the
    // seed paper notes: the method needs a physician's correction.
    assert!(seg.count as usize >= r.table.len());
}

#[test]
fn seed_point_growth_outlines_the_lesion() {
    let (suv, classes, truth_lesions, _) = study();
    let g = &suv.geometry;
    let r = pet::total_tumour(&Backend::Cpu, &classes, &suv, &PetRules::default()).expect("profile");
    let biggest = r.table.iter().max_by_key(|l| l.voxels).expect("a lesion");
    let hot = biggest.max_lps_mm;
    // Seed at the hottest voxel, found back from its LPS position.
    let seed = (0..g.voxel_count())
        .map(|i| {
            (
                i,
                g.voxel_to_lps([
                    (i % g.dims[0]) as f64,
                    ((i / g.dims[0]) % g.dims[1]) as f64,
                    (i / (g.dims[0] * g.dims[1])) as f64,
                ]),
            )
        })
        .min_by(|a, b| {
            let da: f64 = (0..3).map(|k| (a.1[k] - hot[k]).powi(2)).sum();
            let db: f64 = (0..3).map(|k| (b.1[k] - hot[k]).powi(2)).sum();
            da.total_cmp(&db)
        })
        .map(|(i, _)| [i % g.dims[0], (i / g.dims[0]) % g.dims[1], i / (g.dims[0] * g.dims[1])])
        .expect("voxel");
    let id = truth_lesions.data[g.index(seed[0], seed[1], seed[2])];
    assert!(id > 0.0, "the hottest voxel lies in a truth lesion");
    for method in [SeedThreshold::FractionOfMax(0.4), SeedThreshold::Reference] {
        let (mask, thr) =
            pet::grow_from_seed(&Backend::Cpu, &suv, seed, method, r.patient.reference.as_ref(), 60.0).expect("grown");
        let grown = mask.iter().filter(|&&m| m != 0).count();
        let inside = mask.iter().zip(&truth_lesions.data).filter(|(m, t)| **m != 0 && **t == id).count();
        let truth_n = truth_lesions.data.iter().filter(|&&t| t == id).count();
        assert!(grown > 0 && thr > 0.0);
        // Most of the grown region is the lesion, and it covers most of it.
        assert!(inside as f64 >= 0.6 * grown as f64, "{method:?}: {inside}/{grown} inside the lesion");
        assert!(inside as f64 >= 0.5 * truth_n as f64, "{method:?}: covers {inside}/{truth_n}");
    }
    // A seed below the threshold is refused with the reason.
    let cold = [1, 1, g.dims[2] / 2];
    let e = pet::grow_from_seed(&Backend::Cpu, &suv, cold, SeedThreshold::Suv(2.0), None, 30.0).expect_err("refused");
    assert!(e.to_string().contains("below the threshold"));
}
