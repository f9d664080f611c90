//! Face analysis in the character editor (reference spec §1.4): detect the faces of a character's photo off the
//! UI thread (cached per photo), take the largest by default as the reference does, list every face so the artist
//! can pick another, and let the artist place the box and the five keypoints by hand (the Face tool), the
//! identity then being computed by the recogniser at those keypoints.
//!
//! The models are insightface's buffalo_l (non-commercial research only), loaded once into a shared
//! [`FaceAnalyzer`] by the first background task that needs them. Nothing here blocks the UI thread: the tasks
//! come back as [`FaceTask`] through the app's inbox.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::app::StoryApp;
use super::background::TaskResult;
use crate::face::analysis::{find_face_models, AnalyzedFace, FaceAnalyzer, FaceModelPaths, PhotoFaces};
use crate::face::BUFFALO_L_LICENCE;
use crate::imaging::face_align::ARCFACE_TEMPLATE_112;
use crate::story::{Character, CharacterId, Edit, FaceBox, FaceSource};

/// A finished background face task.
pub(crate) enum FaceTask {
    /// Every face of one photo, or why there are none.
    Analyzed { photo: PathBuf, result: Result<Arc<PhotoFaces>, String> },
    /// The identity at keypoints placed by hand (or of a detected face past the embedded ones).
    Identity { character: CharacterId, kps: [[f32; 2]; 5], merge_key: Option<String>, result: Result<Vec<f32>, String> },
}

/// The models loaded by the first task that needed them, with the files they came from.
type SharedAnalyzer = Arc<Mutex<Option<(FaceModelPaths, Arc<FaceAnalyzer>)>>>;

/// Face-analysis state of the app (runtime only).
#[derive(Default)]
pub(crate) struct FaceState {
    /// Finished analyses by photo file (project photos are never modified, so the path is a stable key).
    done: HashMap<PathBuf, Arc<PhotoFaces>>,
    failed: HashMap<PathBuf, String>,
    pending: HashSet<PathBuf>,
    /// Characters that take the largest face when their photo's analysis arrives (if they still have none).
    apply_largest: HashSet<CharacterId>,
    identity_pending: HashSet<CharacterId>,
    /// The loaded models, shared by the background tasks; reloaded when the files change.
    models: SharedAnalyzer,
    /// Distinguishes the undo groups of successive hand placements.
    drags: u64,
}

impl FaceState {
    pub(crate) fn is_busy(&self) -> bool {
        !self.pending.is_empty() || !self.identity_pending.is_empty()
    }
}

/// The shared analyzer for `paths`, loading it when it is missing or was loaded from other files.
fn analyzer(slot: &SharedAnalyzer, paths: &FaceModelPaths) -> Result<Arc<FaceAnalyzer>, String> {
    // Loading holds the lock, so two tasks started together load the 166 MB recogniser once.
    let mut guard = slot.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((p, a)) = guard.as_ref() {
        if p == paths {
            return Ok(a.clone());
        }
    }
    let loaded = Arc::new(FaceAnalyzer::load(paths).map_err(|e| e.to_string())?);
    *guard = Some((paths.clone(), loaded.clone()));
    Ok(loaded)
}

fn load_rgb(photo: &std::path::Path) -> Result<image::RgbImage, String> {
    let decoded = crate::imaging::load_image_file(photo).map_err(|e| e.to_string())?;
    Ok(image::DynamicImage::ImageRgba8(decoded.rgba).to_rgb8())
}

/// Starts the analysis of a character's photo unless it is cached or running; `apply_largest`: give the
/// character the largest face when the result arrives, if it has no face by then.
pub(crate) fn request_analysis(app: &mut StoryApp, id: CharacterId, apply_largest: bool) {
    let Some(c) = app.doc.character(id) else { return };
    let photo = c.photo.join(&app.root);
    if apply_largest {
        app.faces.apply_largest.insert(id);
    }
    if let Some(done) = app.faces.done.get(&photo).cloned() {
        handle(app, FaceTask::Analyzed { photo, result: Ok(done) });
        return;
    }
    if !app.faces.pending.insert(photo.clone()) {
        return;
    }
    app.faces.failed.remove(&photo);
    let models_dir = app.models_dir();
    let slot = app.faces.models.clone();
    let task_photo = photo.clone();
    let started = app.inbox.spawn("faces", move || {
        let result = (|| {
            let paths = find_face_models(&models_dir).map_err(|e| e.to_string())?;
            let analyzer = analyzer(&slot, &paths)?;
            let img = load_rgb(&task_photo)?;
            analyzer.analyze(&img).map(Arc::new).map_err(|e| e.to_string())
        })();
        TaskResult::Faces(FaceTask::Analyzed { photo: task_photo, result })
    });
    if let Err(e) = started {
        app.faces.pending.remove(&photo);
        app.set_error(format!("Could not start face detection: {e}"));
    }
}

/// Computes the identity at the character's current keypoints off the UI thread. `merge_key`: the undo group
/// of the edit that placed the keypoints, so that the identity joins that step when nothing happened between.
pub(crate) fn request_identity(app: &mut StoryApp, id: CharacterId, merge_key: Option<String>) {
    let Some(c) = app.doc.character(id) else { return };
    let Some(kps) = c.face.as_ref().and_then(|f| f.keypoints) else { return };
    let photo = c.photo.join(&app.root);
    let models_dir = app.models_dir();
    if let Err(missing) = find_face_models(&models_dir) {
        app.set_error(format!("The keypoints are placed, but the identity needs the face recogniser: {missing}"));
        return;
    }
    let slot = app.faces.models.clone();
    app.faces.identity_pending.insert(id);
    let started = app.inbox.spawn("face-identity", move || {
        let result = (|| {
            let paths = find_face_models(&models_dir).map_err(|e| e.to_string())?;
            let analyzer = analyzer(&slot, &paths)?;
            let img = load_rgb(&photo)?;
            analyzer.embed_keypoints(&img, &kps).map_err(|e| e.to_string())
        })();
        TaskResult::Faces(FaceTask::Identity { character: id, kps, merge_key, result })
    });
    if let Err(e) = started {
        app.faces.identity_pending.remove(&id);
        app.set_error(format!("Could not start computing the face identity: {e}"));
    }
}

/// A finished task: cache it and update the characters waiting for it.
pub(crate) fn handle(app: &mut StoryApp, task: FaceTask) {
    match task {
        FaceTask::Analyzed { photo, result } => {
            app.faces.pending.remove(&photo);
            let faces = match result {
                Ok(f) => f,
                Err(e) => {
                    app.faces.failed.insert(photo, e.clone());
                    app.set_error(format!("Face detection failed: {e}"));
                    return;
                }
            };
            app.faces.done.insert(photo.clone(), faces.clone());
            let waiting: Vec<CharacterId> = app
                .doc
                .characters
                .iter()
                .filter(|c| app.faces.apply_largest.contains(&c.id) && c.photo.join(&app.root) == photo)
                .map(|c| c.id)
                .collect();
            for id in waiting {
                app.faces.apply_largest.remove(&id);
                let Some(c) = app.doc.character(id) else { continue };
                let name = c.name.clone();
                if c.face.is_some() {
                    continue; // the artist set a face meanwhile
                }
                match faces.largest() {
                    Some(i) => {
                        apply_detected(app, id, &faces.faces[i]);
                        let n = faces.faces.len();
                        let which = if n == 1 { "its face".to_string() } else { format!("the largest of {n} faces") };
                        app.set_status(format!("Face found for {name}: {which} (Ctrl+Z to undo)"));
                    }
                    None => app.set_status(format!(
                        "No face found in {name}'s photo: import face data, or place the face by hand (Face tool)"
                    )),
                }
            }
        }
        FaceTask::Identity { character, kps, merge_key, result } => {
            app.faces.identity_pending.remove(&character);
            let Some(before) = app.doc.character(character).cloned() else { return };
            // The keypoints moved again (or were undone) meanwhile: that newer placement has its own request.
            if before.face.as_ref().and_then(|f| f.keypoints) != Some(kps) {
                return;
            }
            match result {
                Ok(identity) => {
                    let mut after = before.clone();
                    if let Some(f) = after.face.as_mut() {
                        f.identity = Some(identity);
                    }
                    let name = after.name.clone();
                    app.edit_merging(
                        Edit::UpdateCharacter { before: Box::new(before), after: Box::new(after) },
                        merge_key,
                    );
                    app.set_status(format!("Face identity computed for {name}"));
                }
                Err(e) => app.set_error(format!("Could not compute the face identity: {e}")),
            }
        }
    }
}

/// The face box of a detected face.
fn detected_box(f: &AnalyzedFace) -> FaceBox {
    FaceBox {
        bbox: f.face.bbox,
        keypoints: Some(f.face.kps),
        score: Some(f.face.score),
        source: FaceSource::Detected,
        identity: f.identity.clone(),
    }
}

/// Gives the character a detected face (one undo step); its identity follows later when it was not computed.
fn apply_detected(app: &mut StoryApp, id: CharacterId, face: &AnalyzedFace) {
    let Some(before) = app.doc.character(id).cloned() else { return };
    let mut after = before.clone();
    after.face = Some(detected_box(face));
    app.faces.drags += 1;
    let key = format!("face:{}:{}", id.0, app.faces.drags);
    app.edit_merging(Edit::UpdateCharacter { before: Box::new(before), after: Box::new(after) }, Some(key.clone()));
    if face.identity.is_none() {
        request_identity(app, id, Some(key));
    }
}

/// What the face section asks for.
pub(crate) enum FaceAction {
    Detect,
    Pick(usize),
    Import,
}

/// The "Face" part of the character properties.
pub(crate) fn section(app: &mut StoryApp, ui: &mut egui::Ui, c: &Character) -> Option<FaceAction> {
    let mut action = None;
    let warn = ui.visuals().warn_fg_color;
    ui.strong("Face");
    match &c.face {
        Some(f) => {
            let how = match f.source {
                FaceSource::Detected => "detected",
                FaceSource::Manual => "placed by hand",
                FaceSource::Imported => "imported",
            };
            let kps = if f.keypoints.is_some() { "with 5 keypoints" } else { "without keypoints" };
            ui.label(format!("Face {how}, {kps}."));
            if f.identity.is_some() {
                ui.label("Face identity set (ArcFace, 512 values).");
            } else if app.faces.identity_pending.contains(&c.id) {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Computing the face identity…");
                });
            }
        }
        None => {
            ui.label("No face set.");
        }
    }
    let photo = c.photo.join(&app.root);
    match find_face_models(&app.models_dir()) {
        Err(missing) => {
            ui.colored_label(warn, format!("Automatic face detection is unavailable. {missing}"));
        }
        Ok(_) => {
            if c.face.is_none()
                && !app.faces.pending.contains(&photo)
                && !app.faces.done.contains_key(&photo)
                && !app.faces.failed.contains_key(&photo)
            {
                // First look at a character without a face: find it, as the reference does on import.
                action = Some(FaceAction::Detect);
            }
            if app.faces.pending.contains(&photo) {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Detecting faces…");
                });
            } else if let Some(e) = app.faces.failed.get(&photo) {
                ui.colored_label(ui.visuals().error_fg_color, format!("Face detection failed: {e}"));
                if ui.button("Try again").clicked() {
                    action = Some(FaceAction::Detect);
                }
            } else if let Some(found) = app.faces.done.get(&photo).cloned() {
                if found.faces.is_empty() {
                    ui.colored_label(warn, "No face was found in this photo.");
                } else {
                    let largest = found.largest();
                    ui.label(format!(
                        "{} face(s) in the photo; click one here or on the photo (Face tool) to use it:",
                        found.faces.len()
                    ));
                    egui::ScrollArea::vertical().id_salt("detected-faces").max_height(160.0).show(ui, |ui| {
                        for (i, f) in found.faces.iter().enumerate() {
                            let [x1, y1, x2, y2] = f.face.bbox;
                            let chosen = c
                                .face
                                .as_ref()
                                .is_some_and(|b| b.source == FaceSource::Detected && b.bbox == f.face.bbox);
                            let text = format!(
                                "Face {}: {:.0}×{:.0} px, score {:.2}{}",
                                i + 1,
                                x2 - x1,
                                y2 - y1,
                                f.face.score,
                                if Some(i) == largest { " (largest)" } else { "" }
                            );
                            if ui.selectable_label(chosen, text).clicked() && !chosen {
                                action = Some(FaceAction::Pick(i));
                            }
                        }
                    });
                }
            } else if ui
                .button("Detect faces")
                .on_hover_text("Find every face in the photo (insightface buffalo_l)")
                .clicked()
            {
                action = Some(FaceAction::Detect);
            }
            ui.small(BUFFALO_L_LICENCE);
        }
    }
    if c.face.as_ref().is_none_or(|f| f.identity.is_none() && !app.faces.identity_pending.contains(&c.id)) {
        ui.colored_label(
            warn,
            "Without a face identity this character cannot be used in panels: StoryMaker conditions each \
             character on its ArcFace identity and face keypoints, besides the CLIP image of its masked photo. \
             Import face data, or place the face box and the 5 keypoints by hand with the Face tool (F).",
        );
    }
    if ui
        .button("Import face data…")
        .on_hover_text("A .bin with {id: [1,512], kps: [5,2]} as made by insightface (StoryMaker's format)")
        .clicked()
    {
        action = Some(FaceAction::Import);
    }
    action
}

/// Carries out a [`FaceAction`] after the properties panel was drawn.
pub(crate) fn act(app: &mut StoryApp, id: CharacterId, action: FaceAction) {
    match action {
        FaceAction::Detect => request_analysis(app, id, true),
        FaceAction::Import => app.ask_face_data(id),
        FaceAction::Pick(i) => {
            let Some(c) = app.doc.character(id) else { return };
            let photo = c.photo.join(&app.root);
            let Some(face) = app.faces.done.get(&photo).and_then(|f| f.faces.get(i)).cloned() else { return };
            apply_detected(app, id, &face);
            app.set_status(format!("Face {} selected (Ctrl+Z to undo)", i + 1));
        }
    }
}

/// A click at `p` (photo pixels) with the Face tool: applies the detected face under it (one undo step) unless
/// it is already the character's face.
pub(crate) fn pick_at(app: &mut StoryApp, id: CharacterId, p: [f32; 2]) {
    let Some(c) = app.doc.character(id) else { return };
    let Some(i) = candidate_at(app, c, p) else { return };
    let photo = c.photo.join(&app.root);
    let bbox = app.faces.done.get(&photo).and_then(|f| f.faces.get(i)).map(|f| f.face.bbox);
    if bbox.is_some() && bbox != c.face.as_ref().map(|f| f.bbox) {
        act(app, id, FaceAction::Pick(i));
    }
}

/// The detected face whose box contains `p` (photo pixels): the smallest such box, so a face inside a larger
/// false detection can still be clicked. `None` before detection or outside every box.
fn candidate_at(app: &StoryApp, c: &Character, p: [f32; 2]) -> Option<usize> {
    let found = app.faces.done.get(&c.photo.join(&app.root))?;
    let area = |b: [f32; 4]| (b[2] - b[0]) * (b[3] - b[1]);
    found
        .faces
        .iter()
        .enumerate()
        .filter(|(_, f)| {
            let [x1, y1, x2, y2] = f.face.bbox;
            (x1..=x2).contains(&p[0]) && (y1..=y2).contains(&p[1])
        })
        .min_by(|(_, a), (_, b)| area(a.face.bbox).total_cmp(&area(b.face.bbox)))
        .map(|(i, _)| i)
}

/// Every detected face of the character's photo, drawn thin and numbered under the chosen one.
pub(crate) fn paint_candidates(
    app: &StoryApp,
    painter: &egui::Painter,
    c: &Character,
    to_screen: impl Fn([f32; 2]) -> egui::Pos2,
) {
    let Some(found) = app.faces.done.get(&c.photo.join(&app.root)) else { return };
    let colour = egui::Color32::from_rgb(240, 200, 60);
    for (i, f) in found.faces.iter().enumerate() {
        let [x1, y1, x2, y2] = f.face.bbox;
        let r = egui::Rect::from_min_max(to_screen([x1, y1]), to_screen([x2, y2]));
        painter.rect_stroke(r, 0.0, egui::Stroke::new(1.0, colour), egui::StrokeKind::Middle);
        painter.text(
            r.left_top(),
            egui::Align2::LEFT_BOTTOM,
            format!("{}", i + 1),
            egui::FontId::proportional(13.0),
            colour,
        );
    }
}

/// What a Face-tool drag holds: one keypoint, or a new box drawn from a corner.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum FaceGrab {
    Point(usize),
    NewBox([f32; 2]),
}

/// A press at `p` (photo pixels) grabs the nearest keypoint within `tolerance`, else starts a new box.
pub(crate) fn grab(face: Option<&FaceBox>, p: [f32; 2], tolerance: f32) -> FaceGrab {
    let kps = face.and_then(|f| f.keypoints);
    let nearest = kps
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, k)| (i, (k[0] - p[0]).hypot(k[1] - p[1])))
        .min_by(|a, b| a.1.total_cmp(&b.1));
    match nearest {
        Some((i, d)) if d <= tolerance => FaceGrab::Point(i),
        _ => FaceGrab::NewBox(p),
    }
}

/// The five keypoints at their ArcFace-template places inside a box (a starting point to adjust by hand).
pub(crate) fn template_keypoints(bbox: [f32; 4]) -> [[f32; 2]; 5] {
    let (w, h) = (bbox[2] - bbox[0], bbox[3] - bbox[1]);
    ARCFACE_TEMPLATE_112.map(|[x, y]| [bbox[0] + x / 112.0 * w, bbox[1] + y / 112.0 * h])
}

/// The face while a Face-tool drag is at `p`: a placed-by-hand face without identity (the recogniser computes it
/// when the drag ends). A box smaller than 4 px (a click) leaves the face as it was.
pub(crate) fn dragged_face(start: Option<&FaceBox>, grab: FaceGrab, p: [f32; 2], size: [u32; 2]) -> Option<FaceBox> {
    let clamp = |q: [f32; 2]| [q[0].clamp(0.0, size[0] as f32), q[1].clamp(0.0, size[1] as f32)];
    let p = clamp(p);
    let manual = |bbox: [f32; 4], keypoints: [[f32; 2]; 5]| FaceBox {
        bbox,
        keypoints: Some(keypoints),
        score: None,
        source: FaceSource::Manual,
        identity: None,
    };
    match grab {
        FaceGrab::Point(i) => {
            let f = start?;
            let mut kps = f.keypoints?;
            *kps.get_mut(i)? = p;
            Some(manual(f.bbox, kps))
        }
        FaceGrab::NewBox(a) => {
            let a = clamp(a);
            let bbox = [a[0].min(p[0]), a[1].min(p[1]), a[0].max(p[0]), a[1].max(p[1])];
            if bbox[2] - bbox[0] < 4.0 || bbox[3] - bbox[1] < 4.0 {
                return start.cloned();
            }
            Some(manual(bbox, template_keypoints(bbox)))
        }
    }
}

/// Ends a Face-tool drag: one undoable step from `start`, then the identity at the new keypoints (joining the
/// same step when it arrives before any other edit).
pub(crate) fn commit_manual(app: &mut StoryApp, id: CharacterId, start: Character) {
    let Some(index) = app.doc.character_index(id) else { return };
    let after = app.doc.characters[index].clone();
    if after.face == start.face {
        return;
    }
    app.doc.characters[index] = start.clone();
    app.faces.drags += 1;
    let key = format!("face:{}:{}", id.0, app.faces.drags);
    app.edit_merging(Edit::UpdateCharacter { before: Box::new(start), after: Box::new(after) }, Some(key.clone()));
    request_identity(app, id, Some(key));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn face() -> FaceBox {
        let bbox = [100.0, 100.0, 212.0, 212.0];
        FaceBox {
            bbox,
            keypoints: Some(template_keypoints(bbox)),
            score: Some(0.9),
            source: FaceSource::Detected,
            identity: Some(vec![1.0; 4]),
        }
    }

    #[test]
    fn grabbing_picks_the_nearest_keypoint_or_starts_a_box() {
        let f = face();
        let eye = f.keypoints.expect("kps")[1];
        assert_eq!(grab(Some(&f), [eye[0] + 3.0, eye[1]], 5.0), FaceGrab::Point(1));
        assert_eq!(grab(Some(&f), [10.0, 10.0], 5.0), FaceGrab::NewBox([10.0, 10.0]));
        assert_eq!(grab(None, [eye[0], eye[1]], 5.0), FaceGrab::NewBox(eye));
    }

    #[test]
    fn dragging_makes_a_manual_face_without_identity() {
        let f = face();
        let moved = dragged_face(Some(&f), FaceGrab::Point(2), [150.0, 170.0], [512, 512]).expect("face");
        assert_eq!(moved.keypoints.expect("kps")[2], [150.0, 170.0]);
        assert_eq!(moved.source, FaceSource::Manual);
        assert_eq!(moved.identity, None);
        assert_eq!(moved.bbox, f.bbox);
        // Outside the photo the point is clamped to it.
        let out = dragged_face(Some(&f), FaceGrab::Point(0), [-20.0, 900.0], [512, 512]).expect("face");
        assert_eq!(out.keypoints.expect("kps")[0], [0.0, 512.0]);
        let drawn = dragged_face(None, FaceGrab::NewBox([300.0, 80.0]), [188.0, 192.0], [512, 512]).expect("box");
        assert_eq!(drawn.bbox, [188.0, 80.0, 300.0, 192.0]);
        let kps = drawn.keypoints.expect("kps");
        assert!((kps[0][0] - (188.0 + 38.2946)).abs() < 1e-3 && (kps[0][1] - (80.0 + 51.6963)).abs() < 1e-3);
        // A click (no box) changes nothing.
        assert_eq!(dragged_face(Some(&f), FaceGrab::NewBox([50.0, 50.0]), [51.0, 52.0], [512, 512]), Some(f));
    }
}
