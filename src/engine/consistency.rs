//! The consistency score of a generated image (beyond the reference): how much the faces in it
//! look like the cast, as ArcFace cosines with the characters' identities.

use crate::face::analysis::PhotoFaces;

fn cosine(a: &[f32], b: &[f32]) -> Option<f32> {
    if a.len() != b.len() || a.is_empty() {
        return None;
    }
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    (na > 0.0 && nb > 0.0).then(|| dot / (na * nb))
}

/// For each cast identity, the best cosine among the image's faces (each face used by at most one
/// character, greedily best match first); the score is their mean. `None` without identities;
/// a character whose face is missing from the image counts as 0.
pub fn consistency_score(faces: &PhotoFaces, identities: &[&[f32]]) -> Option<f32> {
    if identities.is_empty() {
        return None;
    }
    let embedded: Vec<&[f32]> = faces.faces.iter().filter_map(|f| f.identity.as_deref()).collect();
    let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
    for (c, id) in identities.iter().enumerate() {
        for (f, e) in embedded.iter().enumerate() {
            if let Some(s) = cosine(id, e) {
                pairs.push((s, c, f));
            }
        }
    }
    pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best = vec![0f32; identities.len()];
    let (mut used_c, mut used_f) = (vec![false; identities.len()], vec![false; embedded.len()]);
    for (s, c, f) in pairs {
        if !used_c[c] && !used_f[f] {
            best[c] = s.max(0.0);
            used_c[c] = true;
            used_f[f] = true;
        }
    }
    Some(best.iter().sum::<f32>() / best.len() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::face::analysis::AnalyzedFace;
    use crate::face::detect::DetectedFace;

    fn face(identity: Vec<f32>) -> AnalyzedFace {
        AnalyzedFace {
            face: DetectedFace { bbox: [0.0, 0.0, 10.0, 10.0], kps: [[0.0; 2]; 5], score: 0.9 },
            identity: Some(identity),
        }
    }

    #[test]
    fn each_character_takes_its_best_face_once() {
        let photo = PhotoFaces { faces: vec![face(vec![1.0, 0.0]), face(vec![0.0, 1.0])] };
        let a: &[f32] = &[1.0, 0.0];
        let b: &[f32] = &[0.6, 0.8];
        // a matches face 0 (1.0); b then takes face 1 (0.8), not face 0 again.
        let s = consistency_score(&photo, &[a, b]).unwrap();
        assert!((s - 0.9).abs() < 1e-6, "{s}");
        assert_eq!(consistency_score(&PhotoFaces::default(), &[a]), Some(0.0), "no face: 0");
        assert_eq!(consistency_score(&photo, &[]), None);
    }
}
